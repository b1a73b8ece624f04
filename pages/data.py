"""Data page: upload the exports (or use the sample) and read the data-quality report."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from analytics.errors import OutcomesError
from analytics.formatting import escape_markdown
from analytics.outcomes import pipeline
from analytics.outcomes.pipeline import empty_load_reason, prefix_offer, timezone_options, upload_problem
from analytics.privacy.access import ROW_LEVEL_ROLES, STORE_ROLES
from analytics.privacy.safe_export import to_safe_csv
from analytics.privacy.suppression import file_count_cells, issue_counts, render_note
from analytics.store import StoreBusy, open_store
from pages._auth import audit_export, current_user
from pages._map_section import OPEN as MAP_OPEN
from pages._map_section import mapping_section
from pages._shared import Key, exports, set_exports, show_notes, show_table, shown_markdown
from pages._sidebar import sidebar_settings
from schemas.presets import Preset, available_presets, loads_mapping
from schemas.validate import load_exports

user, role = current_user()  # a signed-out visitor never gets past this (pages._auth): no uploader for them
sidebar_settings()
row_level = role in ROW_LEVEL_ROLES  # sees the rows themselves, so exact counts; a director sees aggregates
st.header("Data")
st.write(f"Upload the clinic's exports (up to {st.get_option('server.maxUploadSize'):,} MB per file). Each row is "
         "checked against the data contract; rows with a problem are set aside with the line, column, value and "
         "what to fix. Nothing is silently dropped or changed, and columns that look like direct identifiers "
         "(names, emails, phone numbers, dates of birth, MRNs) are dropped on reading and never stored.")
if role not in STORE_ROLES:
    st.caption(f"As {role} you see aggregates only: an upload is checked and shown in this session but not added "
               "to the upload history, and the column-mapping step (it shows rows) is for clinicians, analysts and "
               "admins: use a preset or a saved mapping file.")

with st.form("upload"):
    c1, c2, c3, c4 = st.columns(4)
    several = "Several files of one kind (one per year or site, CSV or Parquet) are read as one export."
    sessions = c1.file_uploader("sessions.csv (required)", type=pipeline.UPLOAD_TYPES, key="up_sessions",
                                accept_multiple_files=True, help=several)
    followups = c2.file_uploader("followups.csv (required without a daily log)", type=pipeline.UPLOAD_TYPES,
                                 key="up_followups", accept_multiple_files=True, help=several)
    patients = c3.file_uploader("patients.csv (optional)", type=pipeline.UPLOAD_TYPES, key="up_patients",
                                accept_multiple_files=True, help=several)
    daily = c4.file_uploader("daily_use.csv (optional daily use log)", type=pipeline.UPLOAD_TYPES, key="up_daily",
                             accept_multiple_files=True, help=several)
    presets = available_presets()
    p1, p2, p3 = st.columns(3)
    preset = p1.selectbox("Export layout (preset)", options=list(presets), format_func=lambda k: f"{k}: {presets[k]}")
    saved = p3.file_uploader("Saved column mapping (.toml, optional)", type=["toml"], key="up_mapping",
                             help="A mapping saved from the mapping step below; it replaces the preset.")
    dates = p2.radio("Date format in the files", options=["iso", "dayfirst", "monthfirst"], horizontal=True,
                     format_func={"iso": "2026-11-25 (ISO)", "dayfirst": "25/11/2026 (day first)",
                                  "monthfirst": "11/25/2026 (month first)"}.get,
                     help="Ambiguous dates are never guessed: choose how your system writes them.")
    timezone = st.selectbox("Clinic timezone", options=timezone_options(), key="up_timezone",
                            format_func=lambda z: z or "As written in the file",
                            help="Date-times written in UTC (ending Z or +00:00) take their date in this zone. "
                                 "Type to search, e.g. 'New_York'. Default: each date as written.")
    b1, b2 = st.columns(2)
    submitted = b1.form_submit_button("Check and load", type="primary")
    if b2.form_submit_button("Map columns first", help="Open the mapping step for these files without loading"):
        st.session_state[MAP_OPEN] = True


def _load(layout: str | Preset, prefixes: str = "suggest") -> None:
    chosen, names, stored = pipeline.upload_sources({"sessions": sessions, "followups": followups, "patients": patients,
                                                     "daily_use": daily})
    with st.spinner("Checking every row…"):
        try:
            data = load_exports(chosen["sessions"], chosen.get("followups"), chosen.get("patients"),
                                preset=layout, dates=dates, names=names, timezone=timezone or None,
                                prefixes=prefixes, daily_use=chosen.get("daily_use"))  # type: ignore
        except OutcomesError as err:
            st.error(escape_markdown(f"{err} If your columns match no preset, map them below."))
            return
    if (why := empty_load_reason(data)) is not None:  # never "Loaded", never stored, the old data stays
        st.error(escape_markdown(render_note(why, enabled=not row_level)))
        show_notes(data.notes)
        if len(data.issues):
            show_table(issue_counts(data.issues, enabled=not row_level), hide_index=True, width="stretch",
                       key="refused_issues")
        return
    set_exports(data, "upload")
    st.session_state[Key.JUST_LOADED] = True
    st.session_state[Key.LOAD_LAYOUT] = layout
    if role not in STORE_ROLES:
        st.rerun()  # a director's upload stays in this session: never added to the shared store
    options = {"preset": layout if isinstance(layout, str) else layout.to_toml(), "dates": dates,
               "timezone": timezone, "prefixes": prefixes}
    try:  # the upload history (pages/history.py); the session keeps the data either way
        open_store().save_validated(stored, data, user=user, options=options)
        if "daily_use" in chosen:
            st.session_state[Key.STORE_NOTE] = pipeline.HISTORY_WITHOUT_LOG
    except StoreBusy:
        st.session_state[Key.STORE_NOTE] = ("Loaded, but not saved to the upload history: the store is busy with "
                                          "another upload. Load the same files again in a minute to save them.")
    except OutcomesError as err:
        st.session_state[Key.STORE_NOTE] = f"Loaded, but not saved to the upload history: {err}"
    st.rerun()  # redraw from the top so the sample-data banner goes away


mapping_error: str | None = None  # an unusable saved mapping file stops the load (never the preset instead)
try:
    layout = loads_mapping(saved.getvalue().decode("utf-8", "replace"), source=saved.name) if saved else preset
except OutcomesError as err:
    mapping_error = f"{err} Nothing is loaded until the mapping file is fixed or removed (then the preset is used)."
    st.error(escape_markdown(mapping_error))
    layout = preset
if isinstance(layout, Preset) and layout.dates:  # a saved mapping keeps its date format
    dates = layout.dates
if submitted and mapping_error is None:
    if (why := upload_problem(sessions, followups, daily)) is not None:
        st.error(why)
    else:
        _load(layout)

uploads = {k: f[0] for k, f in (("sessions", sessions), ("followups", followups), ("patients", patients)) if f}
if uploads and row_level:  # the mapping step previews the file's rows
    mapping_section(uploads, layout, dates, timezone or None, _load,
                    disabled=upload_problem(sessions, followups, daily) is not None or mapping_error is not None)

if st.button("Use the sample clinic instead", disabled=st.session_state.get(Key.SOURCE) == "sample"):
    from pages._shared import load_sample

    sample = load_sample()
    if sample is not None:
        set_exports(sample, "sample")
        st.rerun()

data = exports()
if data is None:
    st.info("No data loaded yet: upload sessions.csv and followups.csv above.")
    st.stop()

source = st.session_state.get(Key.SOURCE)
if st.session_state.pop(Key.JUST_LOADED, False):
    st.success("Loaded. Every page now shows these exports.")
if note := st.session_state.pop(Key.STORE_NOTE, None):
    st.warning(escape_markdown(note))
load_notes = data.notes
if source == "upload" and (prefix := prefix_offer(data.notes)) is not None:
    offer = next(n for n in data.notes if prefix_offer([n]) == prefix)
    load_notes = tuple(n for n in data.notes if n != offer)
    st.warning(shown_markdown(offer))
    if st.button(f"Remove the '{prefix}' prefix", key="apply_prefix",
                 disabled=upload_problem(sessions, followups, daily) is not None,
                 help="Loads the same files again with the prefix removed from the patient ids that carry it."):
        _load(st.session_state.get(Key.LOAD_LAYOUT, layout), prefixes="apply")
st.subheader("Data-quality report" + (" (sample clinic)" if source == "sample" else ""))
shown = file_count_cells(data.files, data.n_patients, enabled=not row_level)
cols = st.columns(len(data.files) + 1)
for col, (kind, report) in zip(cols, data.files.items()):
    col.metric(f"{kind}.csv rows read", shown.text(("rows", kind)))
    col.write(f"**{shown.text(('accepted', kind))}** accepted · **{shown.text(('aside', kind))}** set aside")
    if report.dropped_columns:
        col.caption("Identifier columns dropped: " + escape_markdown(", ".join(report.dropped_columns)))
    if report.long_format:
        col.caption(f"One row per questionnaire: {shown.text(('out', kind))} follow-ups from "
                    f"{shown.text(('accepted', kind))} accepted rows ({shown.text(('merged', kind))} merged into a "
                    "follow-up of the same patient and day)")
    if report.extra_columns:
        col.caption("Kept for display, not analysed: " + escape_markdown(", ".join(report.extra_columns)))
cols[-1].metric("Patients with accepted sessions", shown.text(("patients",)))
show_notes(load_notes + (() if row_level else shown.notes))

if len(data.issues) and not row_level:
    aggregate = issue_counts(data.issues)
    st.markdown(f"**{aggregate['problems'].iloc[-1]} problems** in {data.issues['file'].nunique()} file(s), by "
                "file, column and reason. Row values and line numbers are for clinicians, analysts and admins: ask "
                "one of them for the list to send to whoever can fix the export.")
    show_table(aggregate, hide_index=True, width="stretch", key="dq_aggregate")
elif len(data.issues):
    st.markdown(f"**{len(data.issues):,} problems** in {data.issues['file'].nunique()} file(s). "
                "Send this list to whoever can fix the export at the source.")
    summary = (data.issues.groupby(["file", "column"]).size().rename("problems").reset_index()
               .sort_values("problems", ascending=False))
    show_table(summary, hide_index=True, width="stretch")
    show_table(data.issues, hide_index=True, width="stretch", height=320,
                 column_config={"line": st.column_config.NumberColumn("line", format="%d")})
    issues = data.issues  # the file is made on the click only (nothing waits on the server before it)
    st.download_button("Download the issue list (CSV)", data=lambda: to_safe_csv(issues),
                       file_name="kap-outcomes-issues.csv", mime="text/csv",
                       on_click=audit_export, args=("data-quality issue list (CSV)",))
else:
    st.success("Every row was accepted.")

if not row_level:
    st.stop()  # directors see aggregates only
with st.expander("Preview of accepted rows"):
    tab_s, tab_f, tab_p = st.tabs(["sessions", "followups", "patients"])
    show_table(data.sessions.head(50), where=tab_s, hide_index=True)
    show_table(data.followups.head(50), where=tab_f, hide_index=True)
    show_table(pd.DataFrame(data.patients).head(50), where=tab_p, hide_index=True)
