"""The value step of the mapping: what each distinct value of a category column means.

Layout only: the values, counts and suggestions come from :mod:`schemas.value_map`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping as AbcMapping
from typing import Any

import pandas as pd
import streamlit as st

from analytics.formatting import escape_markdown
from schemas.mapping import MappingSuggestions
from schemas.value_map import describe_target, mapped_text, target_options, value_table, values_section

SHOWN = 40  # values with a choice per column (the most frequent); the rest keep the suggestion


def value_step(kind: str, frame: pd.DataFrame, columns: AbcMapping[str, str],
               saved: AbcMapping[str, AbcMapping[str, Any]] | None, key: str) -> dict[str, dict[str, Any]]:
    """List every distinct value of the mapped category columns with its count and a choice of its meaning.

    Returns the mapping's ``values`` section (canonical column → {value: target}).
    """
    table = value_table(mapped_text(frame, columns), kind, saved)
    if table.empty:
        return {}
    st.markdown("**Values**: what each value of the category columns means (counts are rows; adverse events are "
                "counted item by item). A value with no meaning chosen is kept as written; in a column with fixed "
                "values (visit type, route, status, urine result, sex) its rows are then set aside.")
    chosen = table.copy()
    for column, part in table.groupby("column", sort=False):
        open_values = part[part["status"] != "canonical"]
        done = part[part["status"] == "canonical"]
        with st.container(border=True):
            st.markdown(f"`{column}`: {len(part)} distinct value(s), {len(done)} already as the contract writes them")
            if len(done):
                st.caption("As the contract writes them: " + escape_markdown(
                    ", ".join(f"{v} ({n:,})" for v, n in zip(done["value"], done["count"]))))
            grid = st.columns(2)
            for i, row in enumerate(open_values.head(SHOWN).itertuples()):
                options = target_options(kind, column, row.target or None)
                if row.target and row.target not in options:
                    options.insert(0, row.target)
                labels = [describe_target(o) for o in options]
                digest = hashlib.sha1(row.value.encode("utf-8")).hexdigest()[:8]
                flag = {"suggested": " (suggested)", "saved": " (saved)", "unknown": " (no suggestion)",
                        "kept": " (kept as written)"}[row.status]
                pick = grid[i % 2].selectbox(f"{escape_markdown(row.value)} · {row.count:,}{flag}", labels,
                                             index=options.index(row.target) if row.target in options else
                                             len(options) - 1, key=f"{key}_v_{column}_{digest}")
                target = options[labels.index(pick)]
                if target != row.target:
                    chosen.at[row.Index, "target"] = target
                    chosen.at[row.Index, "status"] = "saved" if target else "kept"
                elif row.status == "unknown" and not target:
                    chosen.at[row.Index, "status"] = "unknown"
            if len(open_values) > SHOWN:
                st.caption(f"{len(open_values) - SHOWN} rarer value(s) keep their suggestion; edit the saved "
                           "mapping file to change them.")
    return values_section(chosen)


def units_step(kind: str, sugg: MappingSuggestions, choices: dict[str, str | None], section: dict,
           key: str) -> tuple[dict[str, float], int | None, dict[str, tuple[str, ...]]]:
    """Unit conversions offered by the suggestions (pounds → kg, a 0-100 scale → 0-10), questionnaire items summed
    into totals, and the recall window."""
    scale = dict(section.get("scale", {}))
    items = {m: tuple(h) for m, h in section.get("items", {}).items()}
    for m, headers in sugg.items.items():
        if st.checkbox(f"Sum the {m} items {escape_markdown(', '.join(headers[:2]))} … {escape_markdown(headers[-1])} "
                       "into the total (one missing item: prorated, sum x n/(n-1), rounded; more: no total)",
                       value=True, key=f"{key}_items_{m}"):
            items[m] = headers
        else:
            items.pop(m, None)
    for f, (header, factor, why) in sugg.conversions.items():
        if choices.get(f) in (None, header) and st.checkbox(f"{escape_markdown(why)}", value=f in scale,
                                                            key=f"{key}_conv_{f}"):
            choices[f], scale[f] = header, factor
        elif choices.get(f) == header:
            scale.pop(f, None)
    window = None
    if kind == "followups":
        window = int(st.number_input(
            "Days the use questions cover (recall window), for rows without window_days", min_value=1,
            max_value=365, value=int(section.get("window_days", 30)), key=f"{key}_window",
            help="e.g. 28 for a 28-day timeline follow-back; days_abstinent equal to it is never a return to use."))
    return scale, (window if window != 30 or "window_days" in section else None), items
