"""The "Map columns" part of the Data page: open before any load, kept open while the user works, previewing the
effect of the mapping on every row before loading. Layout only (schemas.mapping, analytics.outcomes.pipeline)."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from analytics.formatting import escape_markdown
from analytics.outcomes.pipeline import mapping_effect
from analytics.privacy.suppression import render_note
from pages._mapping import mapping_step
from pages._shared import show_table
from schemas.presets import Preset, combine_presets

OPEN = "map_open"  # session-state key of the toggle: the step stays open across reruns until the user closes it


def mapping_section(uploads: dict, layout: str | Preset, dates: str, timezone: str | None,
                    load: Callable[[Preset], None], *, disabled: bool) -> None:
    """Map the columns and values of the uploaded files, preview the effect, then load with the mapping."""
    if not st.toggle("Map columns and values (when no preset matches your export)", key=OPEN):
        return
    kinds = st.multiselect("Map the columns of", list(uploads), key="map_kinds")
    overrides = {}
    for kind in kinds:
        with st.container(border=True):
            mapped = mapping_step(kind, uploads[kind].getvalue(), uploads[kind].name, base=layout, dates=dates)
        if mapped is not None:
            overrides[kind] = mapped
    if not kinds or len(overrides) != len(kinds):
        return
    combined = combine_presets(layout, overrides, name="clinic-mapping")
    st.download_button("Download the mapping for all files (TOML)", data=combined.to_toml,
                       file_name="kap-outcomes-mapping.toml", mime="application/toml", key="dl_all_mapping")
    if st.button("Preview the effect on every row", key="map_effect"):
        files = {k: f.getvalue() for k, f in uploads.items()}
        table, why = mapping_effect(files, combined, dates=dates, names={k: f.name for k, f in uploads.items()},
                                    timezone=timezone)
        if table is not None:
            st.caption("Rows that would be accepted and set aside with this mapping (nothing is loaded yet):")
            show_table(table, hide_index=True, key="map_effect_table")
        if why is not None:
            st.warning(escape_markdown(render_note(why, enabled=False)))
    if st.button("Check and load with this mapping", type="primary", key="load_mapped", disabled=disabled):
        load(combined)
