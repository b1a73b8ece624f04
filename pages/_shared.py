"""What every page shares: session-state keys, the loaded data, settings, the cohort and empty states.

Patient data lives in ``st.session_state`` only (one browser session); it is never put in a cache shared
across users.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from analytics.errors import OutcomesError
from analytics.formatting import escape_markdown
from analytics.outcomes import warmup
from analytics.outcomes.cohort import Cohort, build_cohort
from analytics.outcomes.filters import Filters, apply_filters, filter_options
from analytics.outcomes.settings import DropoutRule, Settings
from analytics.privacy.access import UNSUPPRESS_ROLES
from analytics.privacy.safe_export import screen_table
from analytics.privacy.suppression import render_note
from pages._auth import has_role
from schemas.frames import ValidatedExports
from schemas.validate import load_exports

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample_data"


class Key(StrEnum):
    EXPORTS = "exports"
    SOURCE = "source"            # "sample" or "upload"
    UPLOAD_NAMES = "upload_names"
    COHORT = "cohort"
    COHORT_SETTINGS = "cohort_settings"
    RELAPSE = "relapse"
    DROPOUT = "dropout_as_relapse"
    DROPOUT_DAY = "dropout_first_followup_day"
    DROPOUT_GRACE = "dropout_grace_days"
    SUPPRESS = "suppress"
    FILTERS_READ = "view_filters"
    F_DATES = "f_dates"
    F_SITE = "f_site"
    F_PROGRAM = "f_program"
    F_SUBSTANCE = "f_substance"
    F_ROUTE = "f_route"
    F_CLINICIAN = "f_clinician"
    JUST_LOADED = "just_loaded"
    STORE_NOTE = "store_note"
    LOAD_LAYOUT = "load_layout"  # the preset or mapping of the session's last upload (for a re-load)


_FILTER_KEYS = {"site": Key.F_SITE, "program": Key.F_PROGRAM, "substance": Key.F_SUBSTANCE,
                "route": Key.F_ROUTE, "clinician": Key.F_CLINICIAN}


def load_sample() -> ValidatedExports | None:
    files = {k: SAMPLE_DIR / f"{k}.csv" for k in ("sessions", "followups", "patients", "daily_use")}
    if not files["sessions"].exists() or not files["followups"].exists():
        return None
    return load_exports(files["sessions"], files["followups"],
                        files["patients"] if files["patients"].exists() else None,
                        daily_use=files["daily_use"] if files["daily_use"].exists() else None)


def exports() -> ValidatedExports | None:
    """The session's accepted data; the bundled sample on first visit."""
    if Key.EXPORTS not in st.session_state:
        try:
            data = load_sample()
        except OutcomesError:
            data = None
        st.session_state[Key.EXPORTS] = data
        st.session_state[Key.SOURCE] = "sample" if data is not None else None
    return st.session_state[Key.EXPORTS]


def set_exports(data: ValidatedExports, source: str) -> None:
    """The session's data from now on; its cohort is built now (every page needs it) and the slow analyses of the
    first views start in the background (analytics.outcomes.warmup)."""
    st.session_state[Key.EXPORTS] = data
    st.session_state[Key.SOURCE] = source
    st.session_state.pop(Key.COHORT, None)
    st.session_state.pop(Key.COHORT_SETTINGS, None)
    if not data.sessions.empty:
        try:
            _build(data, settings())
        except OutcomesError:
            pass  # the first analysis page builds it again and says why it cannot


def settings() -> Settings:
    rule = DropoutRule(first_followup_day=int(st.session_state.get(Key.DROPOUT_DAY, DropoutRule.first_followup_day)),
                       grace_days=int(st.session_state.get(Key.DROPOUT_GRACE, DropoutRule.grace_days)))
    return Settings(relapse=st.session_state.get(Key.RELAPSE, "any"),
                    dropout_as_relapse=bool(st.session_state.get(Key.DROPOUT, False)),
                    suppress=bool(st.session_state.get(Key.SUPPRESS, True)), dropout_rule=rule)


def sidebar_settings() -> None:
    """Outcome definitions, visible on every page (they change every result); the sample-data banner."""
    exports()
    with st.sidebar:
        st.subheader("Outcome definitions")
        # The choices live under keys no widget owns (Streamlit forgets a widget's value when a page change
        # redraws it); the widgets are refilled from them on every run and write back on every run.
        can_unsuppress = has_role(*UNSUPPRESS_ROLES)
        if not can_unsuppress:
            st.session_state[Key.SUPPRESS] = True
            st.session_state["w_suppress"] = True
        pairs = (("w_relapse", Key.RELAPSE, "any"), ("w_dropout", Key.DROPOUT, False),
                 ("w_suppress", Key.SUPPRESS, True), ("w_dropout_day", Key.DROPOUT_DAY, DropoutRule.first_followup_day),
                 ("w_dropout_grace", Key.DROPOUT_GRACE, DropoutRule.grace_days))
        for widget, stored, default in pairs:
            st.session_state[widget] = st.session_state.get(stored, default)

        def _keep(widget: str, stored: str) -> None:  # runs before the rerun a widget change triggers
            st.session_state[stored] = st.session_state[widget]

        st.radio("Return to use", options=["any", "heavy"], key="w_relapse", horizontal=True,
                 on_change=_keep, args=("w_relapse", Key.RELAPSE),
                 format_func=lambda v: "any use" if v == "any" else "heavy use",
                 help="Any use: any use, fewer abstinent days than the window, or a positive urine test. "
                      "Heavy: first follow-up with a heavy-use day.")
        st.checkbox("Count dropout as return to use", key="w_dropout", on_change=_keep,
                    args=("w_dropout", Key.DROPOUT),
                    help="Lost to follow-up or withdrew counts as an event (the Dakwar 2019 'use or dropout' event). "
                         "Default: such patients are censored at their last assessment.")
        with st.expander("Early dropout window"):
            st.number_input("First follow-up due (day)", min_value=1, max_value=365, step=1, key="w_dropout_day",
                            on_change=_keep, args=("w_dropout_day", Key.DROPOUT_DAY))
            st.number_input("Grace (days)", min_value=0, max_value=180, step=1, key="w_dropout_grace",
                            on_change=_keep, args=("w_dropout_grace", Key.DROPOUT_GRACE),
                            help="A patient with no follow-up at all once this window has closed is an early dropout "
                                 "(flow, dropout sensitivity, key indicators), not 'no follow-up yet'.")
        st.toggle("Suppress counts 1–10", key="w_suppress", disabled=not can_unsuppress, on_change=_keep,
                  args=("w_suppress", Key.SUPPRESS),
                  help="Analyst setting. Turn off for internal use only: shared outputs must keep it on.")
        if not st.session_state.get(Key.SUPPRESS, True):
            st.warning("Suppression is OFF: small counts are visible. Internal use only.")
    if st.session_state.get(Key.SOURCE) == "sample":
        st.info("You are looking at the bundled **synthetic sample clinic** (no real patients). To see your own "
                "clinic, upload sessions.csv and followups.csv on the **Data** page.", icon="ℹ️")


def cohort_or_stop() -> Cohort:
    """The cohort under the current settings, or an empty state that says what data is needed."""
    data = exports()
    if data is None or data.sessions.empty:
        st.info("No data yet. Open the **Data** page and upload sessions.csv and followups.csv "
                "(or use the sample clinic).")
        st.stop()
    current = settings()
    if st.session_state.get(Key.COHORT_SETTINGS) != current or Key.COHORT not in st.session_state:
        try:
            _build(data, current)
        except OutcomesError as err:
            show_error(err)
            st.stop()
    return st.session_state[Key.COHORT]


def _build(data: ValidatedExports, current: Settings) -> None:
    cohort = build_cohort(data, current)
    st.session_state[Key.COHORT], st.session_state[Key.COHORT_SETTINGS] = cohort, current
    warmup.start(cohort)


def shown_text(text: str) -> str:
    """A sentence from the analytics as this session may see it: counts of 1–10 in it masked (privacy.note_n).

    Plain text, for a table cell or a chart. For ``st.markdown``/``st.caption``/``st.warning`` use
    :func:`shown_markdown`: the sentence may quote values from the data.
    """
    s = settings()
    return render_note(text, min_cell=s.min_cell, enabled=s.suppress)


def shown_markdown(text: str) -> str:
    """:func:`shown_text`, escaped so that Markdown shows it literally (values from the data quoted in it too).

    The analytics write notes and error messages as plain sentences (no Markdown of their own), so the whole
    sentence is escaped.
    """
    return escape_markdown(shown_text(text))


def show_notes(notes: tuple[str, ...] | list[str]) -> None:
    for note in notes:
        st.caption(shown_markdown(note))


def show_error(err: BaseException | str) -> None:
    """A domain error (``OutcomesError``) as the warning the page shows in place of its result."""
    st.warning(shown_markdown(str(err)))


def show_table(data: pd.DataFrame, *, where: Any = None, **kwargs: Any) -> Any:
    """``st.dataframe(screen_table(data), **kwargs)``, in ``where`` (a column, tab or container; default the page).

    Every table of the app goes through here, so the toolbar's "Download as CSV" is as safe as the app's own
    downloads (which use :func:`analytics.privacy.safe_export.to_safe_csv`).
    """
    return (where if where is not None else st).dataframe(screen_table(data), **kwargs)


def view_filters(cohort: Cohort) -> Filters:
    """Global filters in the sidebar, kept in the URL so a pasted link reproduces the view.

    The choice lives under a key no widget owns (Streamlit forgets a widget's value on pages that do not draw
    it, e.g. the Data page); the widgets are refilled from it on every run.
    """
    options = filter_options(cohort)
    lo, hi = cohort.patients["index_date"].min().date(), cohort.patients["index_date"].max().date()
    stored: Filters | None = st.session_state.get(Key.FILTERS_READ)
    if not isinstance(stored, Filters):
        allowed = {k: set(v) for k, v in options.items()}
        stored = Filters.from_query(st.query_params.to_dict(), allowed=allowed)
    if Key.F_DATES not in st.session_state:
        st.session_state[Key.F_DATES] = (max(stored.start or lo, lo), min(stored.end or hi, hi))
    for name, key in _FILTER_KEYS.items():
        if key not in st.session_state:
            st.session_state[key] = [v for v in getattr(stored, name) if v in options[name]]
    with st.sidebar:
        st.subheader("View")
        st.date_input("First ketamine session between", min_value=lo, max_value=hi, key=Key.F_DATES,
                      help="Patients whose treatment started in this range.")
        labels = {"site": "Site", "program": "Program", "substance": "Primary substance",
                  "route": "Route (first ketamine session)", "clinician": "Clinician"}
        for name, key in _FILTER_KEYS.items():
            if options[name]:
                st.multiselect(labels[name], options=options[name], key=key, placeholder="All")
    filters = Filters.from_view(st.session_state.get(Key.F_DATES), lo, hi,
                                **{name: st.session_state.get(key) for name, key in _FILTER_KEYS.items()})
    st.session_state[Key.FILTERS_READ] = filters
    query = filters.to_query()
    if st.query_params.to_dict() != query:
        st.query_params.from_dict(query)
    return filters


def view_cohort() -> tuple[Cohort, Filters]:
    """The cohort under the current settings and view filters (for every analysis page)."""
    cohort = cohort_or_stop()
    filters = view_filters(cohort)
    filtered = apply_filters(cohort, filters)
    if filtered.patients.empty:
        st.warning("No patients match the view filters. Widen the date range or clear a filter in the sidebar.")
        st.stop()
    return filtered, filters

