"""The background warm-up (issue 21): it computes exactly what the pages ask for, once, and a page asking while it
computes waits for that result instead of computing it again."""

from __future__ import annotations

import threading
import time

import pytest

from analytics.outcomes import memo, trajectories, warmup
from analytics.outcomes.cohort import build_cohort
from analytics.outcomes.settings import Settings
from analytics.sample import generate_clinic
from schemas.frames import ValidatedExports


@pytest.fixture(scope="module")
def cohort():
    frames = generate_clinic(600, seed=11)
    return build_cohort(ValidatedExports.from_frames(frames["sessions"], frames["followups"], frames["patients"]),
                        Settings())


def test_a_page_reads_what_the_warmup_computed(cohort):
    memo.forget(cohort)
    warmup.start(cohort)[0].join(timeout=120)
    calls = []
    original = trajectories.fit_trajectory
    try:
        trajectories.fit_trajectory = lambda *a, **k: calls.append(1) or original(*a, **k)
        # the trajectories page's default calls (pages/trajectories.py) find the warm results
        fit = trajectories.phq9_model(cohort, time="auto", by=None)
        assert trajectories.phq9_model(cohort) is fit  # defaults spelled out or not: one computation
        trajectories.response_durability(cohort)
    finally:
        trajectories.fit_trajectory = original
    assert calls == []
    # and they are the numbers a fresh computation gives
    memo.forget(cohort)
    again = trajectories.phq9_model(cohort)
    assert again is not fit
    assert again.fixed["estimate"].tolist() == pytest.approx(fit.fixed["estimate"].tolist(), rel=1e-12)


def test_a_second_thread_waits_for_the_first_instead_of_computing_again():
    class Box:
        pass

    box, runs = Box(), []

    def slow():
        runs.append(threading.current_thread().name)
        time.sleep(0.3)
        return 42

    threads = [threading.Thread(target=lambda: memo.once(box, "k", slow), name=f"t{i}") for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(runs) == 1 and memo.once(box, "k", slow) == 42


def test_a_failure_is_not_kept():
    class Box:
        pass

    box, tries = Box(), []

    def fails():
        tries.append(1)
        raise ValueError("no")

    for _ in range(2):
        with pytest.raises(ValueError):
            memo.once(box, "k", fails)
    assert len(tries) == 2


def test_the_warmup_survives_an_analysis_that_cannot_run(cohort, monkeypatch):
    monkeypatch.setattr(warmup, "first_views",
                        lambda c, _load=None: [lambda: 1 / 0, lambda: trajectories.band_transitions(c)])
    memo.forget(cohort)
    warmup.run(cohort)
    assert any("band_transitions" in str(k) for k in cohort.__dict__[memo._SLOT])


def test_the_warmup_starts_nothing_while_a_page_is_drawn(cohort, monkeypatch):
    ran = []
    monkeypatch.setattr(warmup, "first_views", lambda c, _load=None: [lambda: ran.append("a"), lambda: ran.append("b")])
    with warmup.foreground():
        thread, _ = warmup.start(cohort)
        time.sleep(0.4)
        assert ran == []  # waiting for the page
    thread.join(timeout=10)
    assert ran == ["a", "b"]


def test_a_newer_cohort_stops_the_older_warmup(cohort, monkeypatch):
    ran = []
    monkeypatch.setattr(warmup, "first_views", lambda c, _load=None: [lambda: ran.append("a"), lambda: ran.append("b")])
    with warmup.foreground():
        thread, stop = warmup.start(cohort)
        stop.set()
    thread.join(timeout=10)
    assert ran == [] and not thread.is_alive()


def test_a_stopped_warmup_holds_still_while_a_newer_one_works_then_finishes_its_analysis(cohort, monkeypatch):
    class Box:
        pass

    box, old, new, after = Box(), [], [], []

    def older():
        for _ in range(300):
            _step(old)
        return "old"

    def newer():
        for _ in range(150):
            _step(new)

    monkeypatch.setattr(warmup, "first_views",
                        lambda c, _load=None: [lambda: memo.once(box, "k", older), lambda: after.append(1)])
    thread, stop = warmup.start(cohort)
    while not old:
        time.sleep(0.005)
    stop.set()  # a newer view: this warm-up starts nothing more ...
    monkeypatch.setattr(warmup, "first_views", lambda c, _load=None: [newer])
    fresh, _ = warmup.start(cohort)
    while not new:
        time.sleep(0.005)
    held = len(old)
    fresh.join(timeout=10)
    assert len(old) - held <= 2  # ... and its analysis under way waited while the newer warm-up worked
    thread.join(timeout=10)
    assert not thread.is_alive() and len(old) == 300 and after == []  # then finished it, and started nothing else
    assert memo.once(box, "k", lambda: "again") == "old"  # its result is kept for a return to that view


def test_the_warmup_computes_the_overview_and_survival_defaults(cohort):
    from analytics.outcomes import qi, survival

    memo.forget(cohort)
    warmup.run(cohort)
    keys = {(k[0].rsplit(".", 1)[-1], k[1]) for k in cohort.__dict__[memo._SLOT]
            if isinstance(k, tuple) and len(k) == 3}
    for name in (("qi", "kpis"), ("survival", "dropout_sensitivity"), ("qi", "control_chart"), ("qi", "funnel"),
                 ("survival", "relapse_curves"), ("survival", "event_dating")):
        assert name in keys, name
    # the pages' own calls find them (same options, defaults spelled out or not)
    a, b = qi.default_periods(cohort)
    before = len(cohort.__dict__[memo._SLOT])
    qi.kpis(cohort, period_a=a, period_b=b)
    survival.relapse_curves(cohort, by=survival.default_grouping(cohort))
    assert len(cohort.__dict__[memo._SLOT]) == before
    # and the Overview's default control chart and funnel plot are drawn already (the page's chart() finds them)
    from analytics.report.plots import qi as qplots

    min_cell = cohort.settings.min_cell
    spc = qi.control_chart(cohort, kpi=next(iter(qi.SPC_KPIS)))
    funnel = qi.funnel(cohort, unit="clinician", kpi=next(iter(qi.PATIENT_KPIS)))
    for draw, result in ((qplots.control_chart, spc), (qplots.funnel_plot, funnel)):
        figures = [k for k in result.__dict__.get(memo._SLOT, {}) if k[0] == "figure" and k[2] == draw.__qualname__]
        assert figures == [("figure", draw.__module__, draw.__qualname__, (("min_cell", min_cell),))]
        kept = result.__dict__[memo._SLOT][figures[0]]
        assert memo.kept_figure(draw, result, min_cell=min_cell) is kept
        assert kept.to_json() == draw(result, min_cell=min_cell).to_json()


def test_given_the_load_the_warmup_draws_the_overviews_patient_flow_too():
    from analytics.outcomes import qi
    from analytics.report.plots import qi as qplots

    frames = generate_clinic(300, seed=5)
    data = ValidatedExports.from_frames(frames["sessions"], frames["followups"], frames["patients"])
    cohort = build_cohort(data, Settings())
    warmup.run(cohort, exports=data)
    rows = sum(r.rows for r in data.files.values())
    flow = cohort.__dict__[memo._SLOT][("patient flow of the load", rows)]
    assert flow.steps["n"].iloc[0] == rows  # the flow starts from the rows read, as the page's does
    assert qi.load_flow(cohort, data) is flow  # the page's call finds it
    kept = flow.__dict__[memo._SLOT][("figure", qplots.__name__, "flow_diagram", (("min_cell", 11),))]
    assert memo.kept_figure(qplots.flow_diagram, flow, min_cell=11) is kept
    assert kept.to_json() == qplots.flow_diagram(flow, min_cell=11).to_json()
    without = build_cohort(data, Settings())
    warmup.run(without)  # no load given: the flow of the load is left to the page
    assert not any(isinstance(k, tuple) and k[0] == "patient flow of the load" for k in without.__dict__[memo._SLOT])


def _step(progress: list[int]) -> None:
    progress.append(1)
    time.sleep(0.002)


def test_an_analysis_under_way_holds_still_while_a_page_is_drawn(cohort, monkeypatch):
    progress: list[int] = []

    def analysis():
        for _ in range(400):
            _step(progress)  # a Python call: where the warm-up gives way

    monkeypatch.setattr(warmup, "first_views", lambda c, _load=None: [analysis])
    thread, _ = warmup.start(cohort)
    while not progress:
        time.sleep(0.005)
    with warmup.foreground():
        time.sleep(0.05)
        held = len(progress)
        time.sleep(0.3)
        assert len(progress) - held <= 1  # no progress while the page is drawn (was ~150 steps in 0.3 s)
    thread.join(timeout=10)
    assert len(progress) == 400


def test_a_page_waiting_for_the_result_under_way_gets_it(cohort, monkeypatch):
    class Box:
        pass

    box, progress = Box(), []

    def slow():
        for _ in range(100):
            _step(progress)
        return 7

    monkeypatch.setattr(warmup, "first_views", lambda c, _load=None: [lambda: memo.once(box, "k", slow)])
    thread, _ = warmup.start(cohort)
    while not progress:
        time.sleep(0.005)
    with warmup.foreground():  # the warm-up holds still, but the page needs its result: it goes on
        t0 = time.perf_counter()
        assert memo.once(box, "k", lambda: 0) == 7
        assert time.perf_counter() - t0 < warmup.PAUSE_LIMIT_S
    thread.join(timeout=10)
