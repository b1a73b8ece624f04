"""What every page shares: session-state keys, the loaded data, settings, the cohort and empty states.

Patient data lives in ``st.session_state`` only (one browser session); it is never put in a cache shared
across users.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from analytics.errors import OutcomesError
from analytics.formatting import escape_markdown
from analytics.outcomes import memo, warmup
from analytics.outcomes.cohort import Cohort, build_cohort
from analytics.outcomes.settings import DropoutRule, Settings
from analytics.privacy.safe_export import screen_table
from analytics.privacy.suppression import render_note
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
    WARMUP = "warmup_pending"    # a new cohort whose first views are not computed yet (start_pending_warmup)
    WARMUP_STOP = "warmup_stop"  # (cohort, thread, stop event) of the session's warm-up: a newer view stops it
    VIEWS = "filtered_views"     # the last few filtered cohorts of the session's cohort (pages._sidebar.view_cohort)
    VIEW_SHOWN = "view_shown"    # the (filtered) cohort the last analysis page showed



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
    first views start in the background once this run's page is drawn (analytics.outcomes.warmup)."""
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
    st.session_state[Key.WARMUP] = cohort


def start_pending_warmup() -> None:
    """After a page has been drawn (dashboard.py calls it last): start computing the first views of a cohort built
    or filtered during this run, so that the work never competes with drawing the page that made it (the load
    report, a filter change); the session's older warm-up stops at its next analysis."""
    cohort = st.session_state.pop(Key.WARMUP, None)
    if not isinstance(cohort, Cohort):
        return
    running = st.session_state.get(Key.WARMUP_STOP)
    if running is not None:
        if running[0] is cohort and running[1].is_alive():
            return  # already warming this cohort
        running[2].set()
    st.session_state[Key.WARMUP_STOP] = (cohort, *warmup.start(cohort, st.session_state.get(Key.EXPORTS)))


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


def chart(draw: Callable[..., Any], result: Any, /, *, where: Any = None, **options: Any) -> None:
    """``st.plotly_chart(draw(result, **options))`` in ``where`` (a column or tab; default the page).

    The figure is built once per result and options and kept with the result (:func:`memo.kept_figure`), so a rerun
    that changes nothing the chart shows (a widget elsewhere, a view filter widened back) redraws the kept figure, and
    a default figure the background warm-up built is only drawn. Streamlit only reads a figure.
    """
    (where if where is not None else st).plotly_chart(memo.kept_figure(draw, result, **options), width="stretch")


def show_table(data: pd.DataFrame, *, where: Any = None, **kwargs: Any) -> Any:
    """``st.dataframe(screen_table(data), **kwargs)``, in ``where`` (a column, tab or container; default the page).

    Every table of the app goes through here, so the toolbar's "Download as CSV" is as safe as the app's own
    downloads (which use :func:`analytics.privacy.safe_export.to_safe_csv`).
    """
    return (where if where is not None else st).dataframe(screen_table(data), **kwargs)
