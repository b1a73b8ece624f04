"""The column-mapping step of the Data page: say which column of a file means which canonical field.

Layout only: suggestions, checks, preview and the saved file come from :mod:`schemas.mapping`.
"""

from __future__ import annotations

import dataclasses
import hashlib

import pandas as pd
import streamlit as st

from analytics.errors import OutcomesError
from analytics.formatting import escape_markdown
from pages._shared import show_table
from pages._value_map import units_step, value_step
from schemas.columns import REQUIRED
from schemas.frames import HIDDEN_VALUE
from schemas.headers import looks_like_identifier
from schemas.mapping import (
    Mapping,
    MappingSuggestions,
    field_description,
    fields_of,
    mapping_suggestions,
    preview,
)
from schemas.presets import ITEM_TARGETS, Preset, load_preset
from schemas.reader import read_table

NOT_IN_FILE = "— not in this file —"
SET_ASIDE = "— not used (its rows are set aside) —"
LAYOUTS = {"wide": "one row per assessment", "long": "one row per questionnaire (code and score columns)"}


def _key(kind: str, file_name: str, headers: tuple[str, ...]) -> str:
    """Widget keys tied to the file's name and headers (never to its values)."""
    digest = hashlib.sha1("\x1f".join((kind, file_name, *headers)).encode("utf-8")).hexdigest()[:10]
    return f"map_{kind}_{digest}"


def mapping_step(kind: str, file_bytes: bytes, file_name: str, *, base: str | Preset | None = None,
                 dates: str = "iso") -> Preset | None:
    """Let the user map ``file_name``'s columns onto ``kind``'s fields; return the mapping when it is complete.

    Shows a selectbox per field with the suggested header preselected, warnings for ambiguous headers,
    the first rows as the contract sees them with their issues, and a download button for the mapping
    file. ``base`` (a preset) contributes exact header matches, value maps and instrument codes.
    Returns ``None`` until every required field has a column and the file can be read with the mapping.
    """
    try:
        table = read_table(file_bytes, name=file_name)
        base_preset = base if isinstance(base, Preset) else load_preset(base)
    except OutcomesError as err:
        st.error(escape_markdown(str(err)))
        return None
    headers = table.headers
    key = _key(kind, file_name, headers)
    st.markdown(f"**Map the columns of {escape_markdown(file_name)}** ({kind})")
    detected = mapping_suggestions(headers, kind, base=base_preset)
    layout = detected.layout
    code_col: str | None = None
    value_cols: list[str] = []
    if kind == "followups":
        layout = st.radio("This file has", options=list(LAYOUTS), format_func=LAYOUTS.get, horizontal=True,
                          index=list(LAYOUTS).index(detected.layout), key=f"{key}_layout")
        if layout == "long":
            c1, c2 = st.columns(2)
            code_options = [h for h in headers if not looks_like_identifier(h)]  # their values are listed below
            if not code_options:
                st.warning(escape_markdown(f"Every column of {file_name} looks like a direct identifier; none can "
                                           "hold the codes."))
                return None
            code_default = detected.code_column if detected.code_column in code_options else code_options[0]
            code_col = c1.selectbox("Column with the instrument code", code_options,
                                    index=code_options.index(code_default), key=f"{key}_code")
            value_options = [h for h in code_options if h != code_col]
            value_cols = c2.multiselect("Column(s) with the score (the first non-empty is used)", value_options,
                                        default=[v for v in detected.value_columns if v in value_options],
                                        key=f"{key}_value")
    codes_in_file: list[str] = []
    if layout == "long" and code_col:
        codes_in_file = [str(c) for c in table.frame[code_col].dropna().str.strip().value_counts().index[:60]]
    samples = {h: table.frame[h].dropna().unique()[:50].tolist() for h in headers if "status" in h.lower()}
    sugg = mapping_suggestions(headers, kind, base=base_preset, layout=layout, codes_in_file=codes_in_file,
                               samples=samples)
    if layout == "long":
        sugg = _with_columns(sugg, code_col, value_cols)
    for ambiguity in sugg.ambiguous:
        st.warning("Ambiguous: " + escape_markdown(ambiguity.message))

    fields = [f for f in fields_of(kind) if layout == "wide" or f in ("patient_id", "assessment_date")]
    options = [NOT_IN_FILE] + [h for h in headers if h != code_col and h not in value_cols]
    choices: dict[str, str | None] = {}
    grid = st.columns(3)
    for i, f in enumerate(fields):
        suggested = sugg.chosen.get(f)
        index = options.index(suggested[0]) if suggested and suggested[0] in options else 0
        required = f in (("patient_id", "assessment_date") if layout == "long" else REQUIRED[kind])
        choice = grid[i % 3].selectbox(f + (" (required)" if required else ""), options, index=index,
                                       key=f"{key}_f_{f}", help=field_description(kind, f))
        choices[f] = None if choice == NOT_IN_FILE else choice

    keep: list[str] = []
    for f, h in choices.items():
        if h and looks_like_identifier(h) and st.checkbox(
                f"'{escape_markdown(h)}' looks like a direct identifier. Use it as {f} anyway (it is then kept in this session's "
                "memory and in the mapping file)", key=f"{key}_keep_{h}"):
            keep.append(h)

    codes: dict[str, str | None] = {}
    if layout == "long" and codes_in_file:
        st.markdown("**Instrument codes in this file**: which measure each one fills")
        measures = [f for f in fields_of(kind) if f not in ("patient_id", "assessment_date")]
        code_grid = st.columns(3)
        for i, code in enumerate(codes_in_file):
            measure, _score = sugg.codes.get(code, (None, 0.0))
            code_options = [SET_ASIDE, *measures, *ITEM_TARGETS]
            picked = code_grid[i % 3].selectbox(f"code {escape_markdown(code)}", code_options,
                                                index=code_options.index(measure) if measure else 0,
                                                key=f"{key}_code_{i}")
            codes[code] = None if picked == SET_ASIDE else picked

    section = base_preset.data.get(kind, {})
    scale, window, items = units_step(kind, sugg, choices, section, key)
    try:
        mapping = Mapping.from_choices(kind, choices, headers, keep_identifiers=keep,
                                       code_column=code_col if layout == "long" else None,
                                       value_columns=value_cols if layout == "long" else (),
                                       codes=codes, values=section.get("values"), name=f"{kind}-mapping",
                                       description=f"Column mapping for {kind} exports like {file_name}",
                                       window_days=window, scale=scale, dates=dates,
                                       strip_prefix=base_preset.strip_prefix.get(kind, ()), items=items)
        values = value_step(kind, table.frame, mapping.columns, section.get("values"), key)
        mapping = dataclasses.replace(mapping, values={**mapping.values, **values})
        shown = preview(file_bytes, kind, mapping, n=10, dates=dates, name=file_name)
    except OutcomesError as err:
        st.info(escape_markdown(str(err)))
        return None
    hidden = {f for f, h in choices.items() if h and looks_like_identifier(h)}
    st.caption(f"First rows as the dashboard reads them ({shown.rows:,} rows in the file):")
    show_table(_hide_values(shown.table, hidden), hide_index=True, key=f"{key}_preview")
    if len(shown.issues):
        st.warning(f"{len(shown.issues)} problem(s) in these rows; they would be set aside:")
        issues = shown.issues.copy()
        issues.loc[issues["column"].isin(hidden) & issues["value"].astype(str).ne(""), "value"] = HIDDEN_VALUE
        show_table(issues, hide_index=True, key=f"{key}_issues")
    else:
        st.success("These rows pass every check of this file.")
    for note in shown.notes:
        st.caption(escape_markdown(note))
    st.download_button("Download this mapping (TOML), to reuse next month", data=mapping.to_toml,  # on the click
                       file_name=f"kap-outcomes-{kind}-mapping.toml", mime="application/toml",
                       key=f"{key}_download")
    return mapping.to_preset()


def _hide_values(table: pd.DataFrame, columns: set[str]) -> pd.DataFrame:
    """The preview without the values of columns filled from a header that looks like a direct identifier (kept
    on purpose: they are read, but never shown)."""
    out = table.copy()
    for col in columns & set(out.columns):
        out[col] = pd.Series(HIDDEN_VALUE, index=out.index, dtype="string").where(out[col].notna().to_numpy(), "")
    return out


def _with_columns(sugg: MappingSuggestions, code_col: str | None, value_cols: list[str]) -> MappingSuggestions:
    """Suggestions must not offer the chosen code/value columns as fields."""
    taken = {code_col, *value_cols}
    return dataclasses.replace(sugg, chosen={f: hv for f, hv in sugg.chosen.items() if hv[0] not in taken})
