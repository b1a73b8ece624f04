"""Compute the slow analyses of the first views in the background, right after a cohort is built (issue 21).

A page's first view at 50,000 patients used to wait for its models (the PHQ-9 mixed models with the automatic time
shape, response durability, the abstinence GEE, the subgroup models). :func:`start` computes them in one daemon
thread for the cohort the session has just built, in the order a visitor usually opens the pages, while the visitor
reads the load report or the Overview. Every result is kept on that cohort object (:func:`analytics.outcomes.memo.once`
via the analyses' ``@per_cohort``): the same values a page would compute, shared with nothing else, gone with the
cohort. A page that asks for a result being computed waits for it (never computes it twice); a result that fails
is not kept, so the page meets the error itself and says why.

The warm-up gives way to the pages: while any page of the server is being drawn (:func:`foreground`, around every
script run in dashboard.py) it starts no new analysis, and the analysis under way holds still at its next Python
function call (a profile hook in the warm-up thread only), so the page does not share the interpreter lock with it.
It goes on regardless when a page waits for the very result it is computing (:func:`memo.someone_waits`), while it
is inside an import (a page may need that module's lock), and after ``PAUSE_LIMIT_S`` per pause (any other lock a
page might need from it). A newer cohort of the same session (other settings, another view filter) stops the older
warm-up (:func:`start` returns the event that stops it): it starts no further analysis, and the one under way holds
still in the same way while any warm-up that is not stopped works, finishing only when they are done or wait for
it. Its result is kept (returning to the older view, or widening a filter again, finds it), but it no longer halves
the interpreter's time with the newer view's warm-up: at 50,000 patients the Who benefits models of an unfiltered
cohort took 10–15 s beside a filtered view's warm-up instead of 6.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from analytics.outcomes import (
    attention,
    benchmarks,
    memo,
    monitoring,
    qi,
    retention,
    safety,
    subgroups,
    substance_use,
    survival,
    trajectories,
)
from analytics.outcomes.cohort import Cohort

if TYPE_CHECKING:
    from schemas.frames import ValidatedExports


def first_views(cohort: Cohort, exports: ValidatedExports | None = None) -> list[Callable[[], object]]:
    """The analyses of each page's default view, in navigation order (the same calls the pages make), then each
    page's default figures in the same order (the same figures, :func:`memo.kept_figure`). ``exports``: the load the
    cohort came from (the Overview's patient flow counts its rows; without it that flow is left to the page).

    Figures come second: an analysis a page has to compute itself keeps it waiting for seconds at 50,000 patients, a
    figure for 0.1–0.4 s, so a visitor who moves on quickly should find the analyses done first."""
    pages = [_overview(cohort, exports), _survival(cohort), _trajectories(cohort), _substance_use(cohort),
             _benchmarks(cohort), _safety(cohort), _retention(cohort), _subgroups(cohort), _attention(cohort)]
    return [step for analyses, _ in pages for step in analyses] + [step for _, figures in pages for step in figures]


Steps = tuple[list[Callable[[], object]], list[Callable[[], object]]]  # a page's analyses, its figures


def _overview(cohort: Cohort, exports: ValidatedExports | None) -> Steps:
    (a, b) = qi.default_periods(cohort)

    def control() -> object:
        return qi.control_chart(cohort, kpi=next(iter(qi.SPC_KPIS)))

    def funnel() -> object:
        return qi.funnel(cohort, unit="clinician", kpi=next(iter(qi.PATIENT_KPIS)))

    def flow() -> object:
        return qi.load_flow(cohort, exports)

    charts: list[tuple[str, Callable[[], Any], bool, Options]] = [
        ("control_chart", control, True, {}), ("funnel_plot", funnel, True, {})]
    steps = [lambda: qi.kpis(cohort, period_a=a, period_b=b),
             lambda: survival.dropout_sensitivity(cohort),
             lambda: qi.patient_flow(cohort),  # the small-cell rule's flow under the sensitivity table's counts
             control, funnel]
    if exports is not None:  # the page's flow counts the load's rows
        steps.append(flow)
        charts.insert(0, ("flow_diagram", flow, True, {}))
    return steps, [_figures(cohort, "qi", charts)]


def _survival(cohort: Cohort) -> Steps:
    by = survival.default_grouping(cohort)

    def curves() -> object:
        return survival.relapse_curves(cohort, by=by)

    def comparison() -> object:
        if by is None:
            return None
        return survival.compare_groups(cohort, by=by, reference=survival.largest_group(curves()), adjust=())

    figures = _figures(cohort, "survival", [
        ("km_figure", curves, False, {}),
        ("forest_figure", comparison, False, lambda comp: {} if comp.hazard_ratios is not None else None)])
    return [curves, lambda: survival.event_dating(cohort), comparison], [figures]


def _trajectories(cohort: Cohort) -> Steps:
    steps = [lambda: trajectories.phq9_model(cohort, time="auto", by=None),
             lambda: trajectories.response_remission(cohort, by=None),
             lambda: trajectories.band_transitions(cohort),
             lambda: trajectories.response_durability(cohort),
             lambda: trajectories.abstinence_gee(cohort, by=None)]
    figures = _figures(cohort, "trajectories", [
        ("response_remission_bars", steps[1], True, {}), ("band_transition_heatmap", steps[2], True, {}),
        ("durability_curves", steps[3], True, {}), ("abstinence_over_time", steps[4], False, {})])
    return steps, [figures]


def _substance_use(cohort: Cohort) -> Steps:
    by = next(iter(substance_use.GROUPINGS))
    steps = [lambda: substance_use.use_course(cohort, measure="pda", by=by),
             lambda: substance_use.use_course(cohort, measure="heavy", by=by),
             lambda: substance_use.continuous_abstinence(cohort, by=by),
             lambda: substance_use.urine_results(cohort, by=by),
             lambda: substance_use.courses(cohort, by=by)]
    figures = _figures(cohort, "substance_use", [
        ("use_course_chart", steps[0], True, {}), ("use_course_chart", steps[1], True, {}),
        ("abstinence_chart", steps[2], True, {}),
        ("urine_chart", steps[3], True, lambda ur: {"group": ur.groups[0]} if ur.groups else None),
        ("course_chart", steps[4], True, lambda cs: {"measure": cs.recorded[0]} if cs.recorded else None)])
    return steps, [figures]


def _benchmarks(cohort: Cohort) -> Steps:
    def comparison() -> object:
        return benchmarks.compare(cohort, substance=None, min_share=benchmarks.MIN_COVERAGE_SHARE)

    return [comparison], [_figures(cohort, "benchmarks", [
        ("forest", comparison, True, {"domain": "efficacy", "only_with_clinic": True})])]


def _safety(cohort: Cohort) -> Steps:
    thresholds = safety.VitalThresholds()  # the page's inputs start at these
    unit = {"unit_of_analysis": "session"}  # the page's radio starts there
    steps = [lambda: safety.safety_categories(cohort),
             lambda: safety.adverse_event_rates(cohort),
             lambda: safety.vital_sign_elevations(cohort, thresholds=thresholds),
             lambda: safety.safety_trend(cohort, thresholds=thresholds),
             lambda: safety.published_comparison(cohort, thresholds=thresholds),
             lambda: monitoring.session_monitoring(cohort)]
    return steps, [
        _figures(cohort, "safety", [
            ("safety_categories_chart", steps[0], True, unit), ("adverse_events_chart", steps[1], True, unit),
            ("vital_signs_trend", steps[3], True, {}), ("published_comparison_chart", steps[4], True, {})]),
        _figures(cohort, "monitoring", [("blood_pressure_chart", steps[5], False, {})])]


def _retention(cohort: Cohort) -> Steps:
    def summary() -> retention.RetentionSummary:
        return retention.retention_summary(cohort, by=retention.default_by(cohort),
                                           gap_days=cohort.settings.dropout_gap_days)

    return [summary], [_figures(cohort, "retention", [
        ("cascade_chart", lambda: summary().cascade, False, {}), ("dropout_figure", lambda: summary().dropout, False, {}),
        ("booster_figure", lambda: summary().boosters.curves, False, {})])]


def _subgroups(cohort: Cohort) -> Steps:
    def forest() -> object:
        _, treated, control = subgroups.page_arms(cohort)
        return subgroups.who_benefits(cohort, treated=treated, control=control)

    return [forest], [_figures(cohort, "subgroups", [
        ("subgroup_forest", forest, True, {"outcome": outcome}) for outcome in ("relapse_hr", "phq9_slope_difference")])]


def _attention(cohort: Cohort) -> Steps:
    return [lambda: attention.needing_attention(cohort, phq9_margin=5,
                                                active_days=cohort.settings.attention_active_days)], []


Options = dict[str, object] | Callable[[Any], dict[str, object] | None]


def _figures(cohort: Cohort, module: str,
             charts: list[tuple[str, Callable[[], Any], bool, Options]]) -> Callable[[], None]:
    """One step that builds a page's default figures, as its ``chart`` calls do: ``(function of
    analytics.report.plots.<module>, its result, whether the page passes min_cell, other options)``; the options may
    be worked out from the result, as the page's default choice is (None: the page draws no such chart). A figure that
    cannot be built is skipped (its page meets the error and says why); the plotting modules (plotly) load only here,
    not when the dashboard starts."""

    def build() -> None:
        import importlib

        plots = importlib.import_module(f"analytics.report.plots.{module}")
        s = cohort.settings
        min_cell = s.min_cell if s.suppress else None
        for name, result, with_min_cell, options in charts:
            try:
                value = result()
                chosen = options(value) if callable(options) and value is not None else options
                if value is not None and chosen is not None:  # e.g. no booster curves: the page draws no chart
                    memo.kept_figure(getattr(plots, name), value,
                                     **({"min_cell": min_cell} if with_min_cell else {}), **chosen)
            except Exception:  # noqa: BLE001, S112 - the page meets it again and shows the error
                continue

    return build


_QUIET = threading.Condition()
_drawing = 0  # script runs (pages being drawn) under way in this server


@contextmanager
def foreground() -> Iterator[None]:
    """Around a page's script run: while any is under way, no warm-up starts a new analysis."""
    global _drawing
    with _QUIET:
        _drawing += 1
    try:
        yield
    finally:
        with _QUIET:
            _drawing -= 1
            _QUIET.notify_all()


PAUSE_LIMIT_S = 3.0  # longest hold of an analysis under way, per pause


def _wait_for_quiet(stop: threading.Event) -> None:
    with _QUIET:
        while _drawing and not stop.is_set():
            _QUIET.wait(timeout=0.5)


def _in_import(frame: object) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):  # type: ignore[attr-defined]
            return True
        frame = frame.f_back  # type: ignore[attr-defined]
    return False


_current: set[threading.Event] = set()  # the stop events of the warm-ups under way that are not stopped


def _others_work(stop: threading.Event) -> bool:
    """For a stopped warm-up: whether a warm-up that is not stopped is under way (it then holds still)."""
    return stop.is_set() and any(not other.is_set() for other in tuple(_current))


def _give_way_hook(stop: threading.Event) -> Callable[[object, str, object], None]:
    """Profile hook of a warm-up thread: at a Python call while a page is drawn, or, once stopped, while a newer
    warm-up works, hold still (see the module)."""

    def give_way(frame: object, event: str, _arg: object) -> None:
        if event != "call" or not (_drawing or _others_work(stop)) or memo.someone_waits() or _in_import(frame):
            return
        deadline = time.monotonic() + PAUSE_LIMIT_S
        with _QUIET:
            while ((_drawing or _others_work(stop)) and not memo.someone_waits()
                   and time.monotonic() < deadline):
                _QUIET.wait(timeout=0.02)

    return give_way


def run(cohort: Cohort, stop: threading.Event | None = None, exports: ValidatedExports | None = None) -> None:
    """Compute :func:`first_views` one after another, each once no page is being drawn, until ``stop`` is set; an
    analysis that fails is skipped (its page says why)."""
    stop = stop or threading.Event()
    try:
        views = first_views(cohort, exports)
    except Exception:  # noqa: BLE001 - a cohort whose defaults cannot be worked out: its pages say why
        return
    background = threading.current_thread() is not threading.main_thread()
    if background:
        _current.add(stop)
        sys.setprofile(_give_way_hook(stop))  # this thread only
    try:
        for compute in views:
            _wait_for_quiet(stop)
            if stop.is_set():
                return
            try:
                compute()
            except Exception:  # noqa: BLE001, S112 - not kept: the page that needs it computes it again, shows the error
                continue
    finally:
        if background:
            sys.setprofile(None)
            _current.discard(stop)


def start(cohort: Cohort, exports: ValidatedExports | None = None) -> tuple[threading.Thread, threading.Event]:
    """:func:`run` in a daemon thread; returns it (tests join it) and the event that stops it."""
    stop = threading.Event()
    thread = threading.Thread(target=run, args=(cohort, stop, exports), name="kap-warmup", daemon=True)
    thread.start()
    return thread, stop


__all__ = ["first_views", "foreground", "run", "start"]
