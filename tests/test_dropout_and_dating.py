"""Issue #19: early dropout, the two dropout rules, event dating (visit vs relapse_date, midpoint rule), quarterly
control charts and the --reference option, on generated clinics with known truth."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analytics.errors import UnusableExport
from analytics.outcomes import qi, survival
from analytics.outcomes.cohort import DropoutRule, build_cohort, dropout_outcomes, early_dropouts
from analytics.outcomes.settings import Settings
from analytics.report.plots import qi as qplots
from analytics.sample import (
    SIMPLE_CLINIC_START,
    SIMPLE_DROPOUT_HAZARD,
    SIMPLE_RELAPSE_HAZARD,
    generate_clinic,
)
from analytics.sample import informative_dropout_clinic as simple_dropout_clinic
from schemas.frames import ValidatedExports

ROOT = Path(__file__).resolve().parents[1]
START = SIMPLE_CLINIC_START
LAMBDA = SIMPLE_RELAPSE_HAZARD  # hazard of return to use per day
MU = SIMPLE_DROPOUT_HAZARD  # hazard of dropping out per day


def informative_dropout_clinic(n: int = 1500, seed: int = 19, *, relapse_dates: bool = True):
    """The generator's simple clinic with informative dropout (:func:`analytics.sample.informative_dropout_clinic`)
    as validated exports, and its truth."""
    sessions, followups, truth = simple_dropout_clinic(n, seed, relapse_dates=relapse_dates)
    return ValidatedExports.from_frames(sessions, followups), truth


@pytest.fixture(scope="module")
def clinic():
    data, truth = informative_dropout_clinic()
    return build_cohort(data, Settings(suppress=False)), truth


def test_early_dropouts_are_patients_without_follow_up_once_the_first_window_has_closed(clinic):
    cohort, truth = clinic
    early = early_dropouts(cohort).to_numpy()
    assert early.sum() == truth["early"].sum() > 50
    assert (early == truth["early"].to_numpy()).all()
    # a later data end date does not change them; an earlier one (before day 44 of anyone) leaves none
    assert early_dropouts(cohort, as_of=START + pd.Timedelta(days=40)).sum() == 0
    assert early_dropouts(cohort, DropoutRule(first_followup_day=30, grace_days=14)).sum() == early.sum()


def test_both_dropout_rules_are_recovered_patient_by_patient(clinic):
    cohort, truth = clinic
    censored = dropout_outcomes(cohort, as_event=False)
    assert (censored["included"].to_numpy() == ~truth["early"].to_numpy()).all()
    inc = censored["included"].to_numpy()
    assert np.array_equal(censored["days_to_event"].to_numpy()[inc], truth["censored_time"].to_numpy()[inc])
    assert np.array_equal(censored["relapsed"].to_numpy()[inc], truth["censored_event"].to_numpy()[inc])
    as_event = dropout_outcomes(cohort, as_event=True)
    assert as_event["included"].all()
    assert np.array_equal(as_event["days_to_event"].to_numpy(), truth["event_time"].to_numpy())
    assert np.array_equal(as_event["relapsed"].to_numpy(), truth["event_event"].to_numpy())


def test_censored_rule_recovers_the_hazard_of_observed_events_and_the_as_event_rule_bounds_the_truth(clinic):
    cohort, truth = clinic
    sens = survival.dropout_sensitivity(cohort)
    t = sens.table.set_index("rule")
    n_early = int(truth["early"].sum())
    assert t.at[survival.DROPOUT_CENSORED, "n"] == len(truth) - n_early
    assert t.at[survival.DROPOUT_EVENT, "n"] == len(truth)
    assert t.at[survival.DROPOUT_EVENT, "n_early_dropout"] == n_early == sens.n_early_dropout
    ms = sens.milestones.set_index(["rule", "day"])
    for day in (90, 180):
        a = ms.loc[(survival.DROPOUT_CENSORED, day)]
        b = ms.loc[(survival.DROPOUT_EVENT, day)]
        true = float((truth["true_time"] > day).mean())
        # the censored rule estimates exp(-λt), the hazard of the returns to use that are observed
        assert abs(a["estimate"] - math.exp(-LAMBDA * day)) < 3 * a["se"], (day, a["estimate"])
        # dropout here is informative (dropouts return to use): the censored rule is optimistic, the as-event
        # rule a pessimistic bound, and the truth lies between
        assert b["estimate"] <= true + 1e-12 < a["estimate"]
        assert b["ci_high"] < a["ci_low"]
    # the as-event rule censors nobody before day 360: its curve is the share without use-or-dropout
    assert ms.loc[(survival.DROPOUT_EVENT, 180), "estimate"] == pytest.approx(
        float((truth.loc[:, "event_time"] > 180).mean()))


def test_patient_flow_counts_early_dropouts_apart_from_no_follow_up_yet(clinic):
    cohort, truth = clinic
    # two more patients who started 10 days before the data end: their first window is still open
    end = cohort.data_end_date()
    data, _ = informative_dropout_clinic(n=200, seed=3)
    extra = pd.DataFrame([{"patient_id": f"new{i}", "session_date": (end - pd.Timedelta(days=10)).strftime("%Y-%m-%d"),
                           "session_type": "ketamine", "route": "iv"} for i in range(2)])
    c = build_cohort(ValidatedExports.from_frames(pd.concat([data.sessions.astype(str), extra]),
                                                  data.followups), Settings(suppress=False))
    flow = qi.patient_flow(c, as_of=end)
    lost = flow.losses[flow.losses["step"] == "analysed_survival"].set_index("reason")["n"]
    early_reason = [r for r in lost.index if r.startswith("early dropout")]
    assert len(early_reason) == 1 and "day 44" in early_reason[0]
    assert lost[early_reason[0]] == early_dropouts(c, as_of=end).sum() > 0
    assert lost["no follow-up assessment yet (first window still open)"] == 2


# ---------------------------------------------------------------------------------------------------------------
# Event dating


def _hand_built():
    sessions = [{"patient_id": p, "session_date": "2025-01-01", "session_type": "ketamine", "route": "iv"}
                for p in ("a", "b", "c", "d")]
    followups = [
        {"patient_id": "a", "assessment_date": "2025-01-31", "any_use": "no", "days_abstinent": 30},   # day 30
        {"patient_id": "a", "assessment_date": "2025-01-31", "any_use": "no", "days_abstinent": 30},   # same day
        {"patient_id": "a", "assessment_date": "2025-03-02", "any_use": "yes"},                      # day 60, visit
        {"patient_id": "b", "assessment_date": "2025-01-31", "any_use": "yes", "relapse_date": "2025-01-21"},
        {"patient_id": "c", "assessment_date": "2025-02-10", "any_use": "yes"},                      # day 40, visit
        {"patient_id": "d", "assessment_date": "2025-04-01", "any_use": "no", "days_abstinent": 30},   # censored
    ]
    return ValidatedExports.from_frames(pd.DataFrame(sessions), pd.DataFrame(followups))


def test_events_without_relapse_date_are_dated_by_visit_with_their_interval():
    cohort = build_cohort(_hand_built(), Settings(suppress=False))
    p = cohort.patients.set_index("patient_id")
    assert p.loc[["a", "b", "c"], "event_dated_by"].tolist() == ["visit", "relapse_date", "visit"]
    assert pd.isna(p.at["d", "event_dated_by"])
    assert p.loc[["a", "c"], "event_interval_start_days"].tolist() == [30.0, 0.0]  # previous distinct date; day 0
    assert p.loc[["b", "d"], "event_interval_start_days"].isna().all()
    dating = survival.event_dating(cohort)
    assert dating.counts == {"n_event": 3, "by_relapse_date": 1, "by_visit": 2, "by_dropout": 0}
    assert dating.mostly_by_visit
    med = dating.medians.set_index("rule")["estimate"]
    # as recorded: events on days 20, 40, 60 (d censored at 90): S = 0.5 from day 40 to 60, median (40 + 60)/2 (R's
    # rule); midpoint: days 20, 20, 45: S = 0.5 from day 20 to 45, median 32.5
    assert med[survival.DATED_AS_RECORDED] == 50.0 and med[survival.DATED_MIDPOINT] == 32.5
    assert any("Most returns to use" in n for n in survival.relapse_curves(cohort).notes)


def test_a_dropout_status_event_is_dated_as_a_dropout_not_by_visit():
    data = _hand_built()
    fus = data.followups.copy()
    fus.loc[fus["patient_id"] == "d", "status"] = "withdrew"
    data = ValidatedExports.from_frames(data.sessions, fus)
    p = build_cohort(data, Settings(dropout_as_relapse=True)).patients.set_index("patient_id")
    assert p.at["d", "event_dated_by"] == "dropout" and pd.isna(p.at["d", "event_interval_start_days"])


def _area(table: pd.DataFrame, group: str, tau: float) -> float:
    """Area under a Kaplan–Meier step curve from day 0 to ``tau`` (restricted mean time without return to use)."""
    t = table[table["group"] == group]
    days = np.r_[0.0, t["day"].to_numpy(float)]
    surv = np.r_[1.0, t["estimate"].to_numpy(float)]
    keep = days < tau
    edges = np.r_[days[keep], tau]
    return float(np.sum(surv[keep] * np.diff(edges)))


def test_midpoint_rule_moves_the_curve_back_towards_the_truth_when_events_are_dated_by_visit():
    data, truth = informative_dropout_clinic(n=1500, seed=7, relapse_dates=False)
    cohort = build_cohort(data, Settings(suppress=False))
    dating = survival.event_dating(cohort)
    assert dating.counts["by_relapse_date"] == 0 and dating.counts["by_visit"] == dating.counts["n_event"] > 0
    # the same patients with every event at its relapse_date: the truth the visit dating blurs
    exact = survival.relapse_curves(build_cohort(informative_dropout_clinic(n=1500, seed=7)[0],
                                                 Settings(suppress=False)))
    true_area = _area(exact.table, "all", 300)
    recorded = _area(dating.curves.table, survival.DATED_AS_RECORDED, 300)
    midpoint = _area(dating.curves.table, survival.DATED_MIDPOINT, 300)
    assert recorded > true_area + 5  # dated at the visit: about half an interval late
    assert abs(midpoint - true_area) < abs(recorded - true_area) / 3
    # the as-recorded median sits on a visit day (or halfway between two)
    assert dating.medians.set_index("rule").at[survival.DATED_AS_RECORDED, "estimate"] % 15 == 0
    assert any("Most returns to use" in n for n in survival.relapse_curves(cohort).notes)
    assert not any("Most returns to use" in n for n in exact.notes)


# ---------------------------------------------------------------------------------------------------------------
# Control charts by quarter


def _induction_clinic(per_month: int) -> list[dict]:
    rows = []
    for m in range(12):
        for k in range(per_month):
            start = pd.Timestamp("2024-01-03") + pd.DateOffset(months=m) + pd.Timedelta(days=k % 5)
            pid = f"m{m:02d}k{k:03d}"
            days = (0, 7, 14, 21) if k % 3 else (0, 7)
            rows += [{"patient_id": pid, "session_date": (start + pd.Timedelta(days=d)).strftime("%Y-%m-%d"),
                      "session_type": "ketamine", "route": "iv"} for d in days]
    return rows


@pytest.mark.parametrize("per_month, suppress, interval", [(4, True, "quarter"), (4, False, "month"),
                                                          (25, True, "month")])
def test_control_chart_goes_quarterly_only_when_most_months_would_be_suppressed(per_month, suppress, interval):
    data = ValidatedExports.from_frames(pd.DataFrame(_induction_clinic(per_month)), pd.DataFrame(
        columns=["patient_id", "assessment_date"]))
    cohort = build_cohort(data, Settings(suppress=suppress))
    chart = qi.control_chart(cohort, kpi="induction_completion", as_of="2025-06-30")
    assert chart.interval == interval
    if interval == "quarter":
        assert chart.table["label"].tolist()[:2] == ["2024 Q1", "2024 Q2"]
        assert (chart.table["denominator"] >= 11).sum() >= 3
        assert any(n.startswith("Aggregated by quarter") for n in chart.notes)
        fig = qplots.control_chart(chart, min_cell=11)
        assert "by quarter" in fig.layout.title.text and fig.layout.xaxis.title.text.startswith("Quarter")
    else:
        assert chart.table["label"].iloc[0] == "2024-01"
    # monthly_rate stays monthly unless asked
    assert qi.monthly_rate(cohort, kpi="induction_completion", as_of="2025-06-30").interval == "month"


# ---------------------------------------------------------------------------------------------------------------
# Fallbacks: the comparison fails, the curves stay; --reference


def test_survival_section_keeps_the_curves_when_the_comparison_fails_and_says_why():
    frames = generate_clinic(80, seed=5)
    patients = frames["patients"].copy()
    patients["program"] = "ketamine only"
    patients.loc[patients.index[:3], "program"] = "pilot"
    cohort = build_cohort(ValidatedExports.from_frames(frames["sessions"], frames["followups"], patients),
                          Settings(suppress=False))
    out, why = survival.survival_section(cohort, by="program")
    assert [g["group"] for g in out["groups"]] == ["ketamine only", "pilot"]
    assert all(g["km"] for g in out["groups"])
    assert out["logrank"] is None and out["cox"] is None
    assert any("logrank and cox are null" in w and "at least 2 groups" in w for w in why)
    with pytest.raises(UnusableExport, match="names no program group.*'ketamine only', 'pilot'"):
        survival.check_reference(cohort, by="program", reference="therapy")
    with pytest.raises(UnusableExport, match="is a program group, but.*cannot be the reference"):
        survival.check_reference(cohort, by="program", reference="pilot")
    assert survival.check_reference(cohort, by="program", reference=" Ketamine ONLY") == "ketamine only"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analytics.cli", *args], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)


def test_reference_that_names_no_group_exits_2_with_the_list_of_groups(tmp_path):
    frames = generate_clinic(120, seed=11)
    frames["patients"].loc[frames["patients"].index[:3], "program"] = "pilot"
    paths = {}
    for k in ("sessions", "followups", "patients"):
        paths[k] = tmp_path / f"{k}.csv"
        frames[k].to_csv(paths[k], index=False)
    inputs = [f"--{k}={v}" for k, v in paths.items()]
    out = _run("analyze", *inputs, "--by", "program", "--reference", "no such program")
    assert out.returncode == 2 and "Traceback" not in out.stderr and out.stdout == ""
    assert "names no program group" in out.stderr
    assert "'ketamine + therapy'" in out.stderr and "'ketamine only'" in out.stderr and "'pilot'" in out.stderr
    small = _run("analyze", *inputs, "--by", "program", "--reference", "pilot")
    assert small.returncode == 2 and "'pilot' is a program group, but" in small.stderr
    assert "cannot be the reference" in small.stderr
    ok = _run("analyze", *inputs, "--by", "program", "--reference", "ketamine only")
    assert ok.returncode in (0, 1), ok.stderr
    result = json.loads(ok.stdout)
    assert result["survival"]["cox"]["reference"] == "ketamine only"
    assert "Left out of the comparison" in ok.stderr and "pilot" in ok.stderr  # why 'pilot' has no term
