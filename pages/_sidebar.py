"""The sidebar of every analysis page: the outcome definitions (settings) and the view filters."""

from __future__ import annotations

import streamlit as st

from analytics.outcomes.cohort import Cohort
from analytics.outcomes.filters import Filters, apply_filters, filter_options
from analytics.outcomes.settings import DropoutRule
from analytics.privacy.access import UNSUPPRESS_ROLES
from pages._auth import has_role
from pages._shared import Key, cohort_or_stop, exports

_KEPT_VIEWS = 4  # filtered cohorts kept per session (each holds its own results; the unfiltered one is always kept)
_FILTER_KEYS = {"site": Key.F_SITE, "program": Key.F_PROGRAM, "substance": Key.F_SUBSTANCE,
                "route": Key.F_ROUTE, "clinician": Key.F_CLINICIAN}


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


def _filtered(cohort: Cohort, filters: Filters) -> Cohort:
    """:func:`apply_filters`, kept for the session's last few views of this cohort: a rerun under the same filters
    (any other widget) reuses the filtered cohort, and with it every result and chart computed on it. A view shown
    now that was not shown on the last run gets its first views computed in the background (as a newly built cohort
    does); returning to a view resumes its warm-up where the newer view stopped it."""
    kept = st.session_state.get(Key.VIEWS)
    if not isinstance(kept, tuple) or kept[0] is not cohort:
        kept = (cohort, {})
    views: dict[Filters, Cohort] = kept[1]
    filtered = views.pop(filters, None)
    if filtered is None:
        filtered = apply_filters(cohort, filters)
    if st.session_state.get(Key.VIEW_SHOWN) is not filtered:  # another view: its warm-up (finished parts are kept)
        st.session_state[Key.WARMUP] = st.session_state[Key.VIEW_SHOWN] = filtered
    views[filters] = filtered  # the most recent last
    while len(views) > _KEPT_VIEWS:
        views.pop(next(iter(views)))
    st.session_state[Key.VIEWS] = kept
    return filtered


def view_cohort() -> tuple[Cohort, Filters]:
    """The cohort under the current settings and view filters (for every analysis page)."""
    cohort = cohort_or_stop()
    filters = view_filters(cohort)
    filtered = _filtered(cohort, filters)
    if filtered.patients.empty:
        st.warning("No patients match the view filters. Widen the date range or clear a filter in the sidebar.")
        st.stop()
    return filtered, filters

