"""Turnbull NPMLE for interval-censored return-to-use dates (analytics/engines/turnbull.py).

Golden: tests/reference/survival_interval/make_reference.R (R 4.2, survival 3.x) on two generated clinics: the same
innermost intervals, masses and log-likelihood as a tightly converged self-consistency (EM) run in R, and R's
``survfit(Surv(left, right, type = "interval2") ~ 1)``. survfit stops its EM when the curve changes by < 5e-5 per
iteration, which leaves it 3e-4 (intervals.csv) and 5e-4 (intervals_visit.csv) from the NPMLE (its own converged
self-consistency estimate, R to R); it is compared at that size, the converged R estimate at 1e-8.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analytics.engines.survival import kaplan_meier
from analytics.engines.turnbull import TurnbullFit, turnbull
from analytics.errors import InsufficientData

REF_DIR = Path(__file__).parent / "reference" / "survival_interval"
REF = json.loads((REF_DIR / "reference.json").read_text())


def _r_fit(ref: dict) -> TurnbullFit:
    inn = pd.DataFrame(ref["innermost"])
    return TurnbullFit(lower=inn["lower"].to_numpy(float), upper=inn["upper"].fillna(np.inf).to_numpy(float),
                       mass=inn["mass"].to_numpy(float), loglik=ref["loglik"], n_iter=0, converged=True, n=0,
                       n_exact=0, n_interval=0, n_right=0)


@pytest.mark.parametrize("name", ["intervals", "intervals_visit"])
def test_turnbull_equals_r(name):
    ref = REF[name]
    d = pd.read_csv(REF_DIR / f"{name}.csv")
    fit = turnbull(d["left"], d["right"])
    r = _r_fit(ref)
    assert fit.converged
    assert np.array_equal(fit.lower, r.lower) and np.array_equal(fit.upper, r.upper)
    assert np.max(np.abs(fit.mass - r.mass)) < 1e-8
    assert fit.loglik == pytest.approx(ref["loglik"], abs=1e-8)
    sf = pd.DataFrame(ref["survfit"])
    ours = fit.survival(sf["time"])
    assert np.max(np.abs(ours - r.survival(sf["time"]))) < 1e-8
    # R's survfit: within the distance its own stopping rule leaves from the converged estimate
    gap = float(np.max(np.abs(r.survival(sf["time"]) - sf["surv"])))
    assert gap < 1e-3
    assert np.max(np.abs(ours - sf["surv"])) <= gap + 1e-8
    assert (fit.n_exact > 0) == (name == "intervals") and fit.n_interval > 0 and fit.n_right > 0


def test_without_interval_censoring_turnbull_is_kaplan_meier():
    rng = np.random.default_rng(4)
    t, c = np.ceil(rng.exponential(100, 400)), np.ceil(rng.exponential(150, 400))
    time, event = np.minimum(t, c), t <= c
    fit = turnbull(time, np.where(event, time, np.inf))
    km = kaplan_meier(time, event)
    assert np.max(np.abs(fit.survival(km["day"]) - km["estimate"])) < 1e-9


def test_true_survival_is_recovered_from_visit_dated_events():
    # return to use ~ Exp(mean 150 days), seen only at visits every 30 days (interval-censored), censored at day 360
    rng = np.random.default_rng(19)
    n = 3000
    t = rng.exponential(150, n)
    visit = np.ceil(t / 30) * 30
    seen = visit <= 360
    left = np.where(seen, visit - 30, 360.0)
    right = np.where(seen, visit, np.inf)
    fit = turnbull(left, right)
    for day in (90, 180):  # visit days: the NPMLE is determined there
        s = float(fit.survival([day])[0])
        se = np.sqrt(s * (1 - s) / n)
        assert abs(s - np.exp(-day / 150)) < 3 * se
    assert fit.median() == pytest.approx(105.0)  # the innermost interval (90, 120] holding the median: midpoint


def test_bad_intervals_are_refused_with_a_sentence():
    with pytest.raises(InsufficientData, match="left end"):
        turnbull([5.0, 3.0], [4.0, 6.0])
    with pytest.raises(InsufficientData, match="no observations"):
        turnbull([], [])


def test_survival_page_rows_give_the_turnbull_estimate_of_visit_dated_returns_to_use():
    from analytics.outcomes import survival
    from analytics.outcomes.cohort import build_cohort
    from analytics.outcomes.settings import Settings
    from analytics.sample import SIMPLE_RELAPSE_HAZARD, informative_dropout_clinic
    from schemas.frames import ValidatedExports

    # every return to use dated by visit (assessments every 30 days): known only between two visits
    sessions, followups, truth = informative_dropout_clinic(1500, 7, relapse_dates=False)
    cohort = build_cohort(ValidatedExports.from_frames(sessions, followups), Settings(suppress=False))
    dating = survival.event_dating(cohort)
    fit = dating.turnbull
    assert fit is not None and fit.converged and fit.n_interval == dating.counts["by_visit"] > 0
    assert fit.n_exact == 0 and fit.n == int(cohort.patients["has_followup"].sum())
    ms = dating.milestones.set_index(["rule", "day"])
    for day in (90, 180):  # visit days: the hazard of the observed returns to use is SIMPLE_RELAPSE_HAZARD
        tb = ms.loc[(survival.DATED_TURNBULL, day)]
        km = ms.loc[(survival.DATED_AS_RECORDED, day)]
        assert np.isnan(tb["ci_low"]) and tb["n_risk"] == km["n_risk"]
        assert abs(tb["estimate"] - np.exp(-SIMPLE_RELAPSE_HAZARD * day)) < 3 * km["se"]
    med = dating.medians.set_index("rule")
    true_median = np.log(2) / SIMPLE_RELAPSE_HAZARD  # 173 days: in the visit interval (150, 180]
    assert med.at[survival.DATED_TURNBULL, "estimate"] == 165.0  # its midpoint, as R's survfit draws it
    assert med.at[survival.DATED_TURNBULL, "n_event"] == med.at[survival.DATED_AS_RECORDED, "n_event"]
    assert 150 < true_median <= 180
    assert any("Turnbull" in n and "interval-censored" in n for n in dating.notes)
