"""Trajectories: response/remission, band transitions, durability, GEE, the JSON section, robustness.

Hand-built exports with answers worked out by hand; simulated data with known coefficients; equality of the
fast engine with statsmodels MixedLM; recovery of the sample generator's true PHQ-9 trajectory.
"""

from __future__ import annotations

import math
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.proportion import proportion_confint

from analytics.errors import InsufficientData, OutcomesError
from analytics.outcomes import trajectories
from analytics.outcomes.cohort import Cohort, build_cohort
from analytics.outcomes.settings import Settings
from schemas.frames import ValidatedExports

DAY0 = date(2025, 3, 3)


def _d(day: int) -> str:
    return (DAY0 + timedelta(days=day)).isoformat()


def clinic(scores: dict[str, dict[int, float]], *, baseline: dict[str, float] | None = None,
           ketamine_days: dict[str, list[int]] | None = None, patients: pd.DataFrame | None = None) -> Cohort:
    """Every patient starts ketamine on DAY0; ``baseline`` PHQ-9 at day −2; ``scores`` = {id: {day: PHQ-9}} on
    follow-ups; extra ketamine sessions on ``ketamine_days``."""
    baseline = baseline or {}
    ketamine_days = ketamine_days or {}
    sessions, followups = [], []
    for pid, by_day in scores.items():
        if pid in baseline:
            sessions.append({"patient_id": pid, "session_date": _d(-2), "session_type": "assessment",
                             "phq9": baseline[pid]})
        for day in [0, *ketamine_days.get(pid, [])]:
            sessions.append({"patient_id": pid, "session_date": _d(day), "session_type": "ketamine", "route": "iv"})
        for day, value in by_day.items():
            followups.append({"patient_id": pid, "assessment_date": _d(day), "phq9": value, "window_days": 30})
    data = ValidatedExports.from_frames(pd.DataFrame(sessions), pd.DataFrame(followups), patients)
    return build_cohort(data)


# ------------------------------------------------------------------------------------ response / remission
@pytest.fixture(scope="module")
def small_clinic() -> Cohort:
    return clinic(
        {"p1": {28: 8, 56: 4},            # week 4: response (8 ≤ 10); week 8: response and remission
         "p2": {30: 6, 60: 3},            # baseline 10: week 4 6 > 5 no response; week 8 (day 60) both
         "p3": {20: 7, 35: 12},           # week 4: day 35 is nearer day 28 than day 20 → 12, no response
         "p4": {28: 2},                   # no baseline: not in any denominator
         "p5": {50: 9}},                  # week 8: 9 = exactly half of 18 → response, not remission
        baseline={"p1": 20, "p2": 10, "p3": 15, "p5": 18})


def test_response_and_remission_use_nearest_score_in_window_with_wilson_intervals(small_clinic):
    rr = trajectories.response_remission(small_clinic, weeks=(4, 8), window_days=14)
    t = rr.table.set_index(["weeks", "outcome"])
    assert t.loc[(4.0, "response"), ["n", "n_event"]].tolist() == [3, 1]
    assert t.loc[(4.0, "remission"), ["n", "n_event"]].tolist() == [3, 0]
    assert t.loc[(8.0, "response"), ["n", "n_event"]].tolist() == [3, 3]
    assert t.loc[(8.0, "remission"), ["n", "n_event"]].tolist() == [3, 2]
    lo, hi = proportion_confint(1, 3, alpha=0.05, method="wilson")
    assert t.loc[(4.0, "response"), "estimate"] == pytest.approx(1 / 3)
    assert t.loc[(4.0, "response"), "ci_low"] == pytest.approx(lo, rel=1e-9)
    assert t.loc[(4.0, "response"), "ci_high"] == pytest.approx(hi, rel=1e-9)
    lo, hi = proportion_confint(3, 3, alpha=0.05, method="wilson")
    assert t.loc[(8.0, "response"), "ci_low"] == pytest.approx(lo, rel=1e-9) and hi == pytest.approx(1.0)


def test_a_score_outside_the_window_is_not_used(small_clinic):
    rr = trajectories.response_remission(small_clinic, weeks=(8,), window_days=3)
    # only p1 (day 56) lies within ±3 days of day 56
    assert rr.table.set_index("outcome").loc["response", "n"] == 1


def test_band_transitions_count_baseline_band_to_latest_band(small_clinic):
    bt = trajectories.band_transitions(small_clinic)
    m = bt.matrix()
    assert m.loc["20–27 severe", "0–4 minimal"] == 1           # p1: 20 → 4
    assert m.loc["10–14 moderate", "0–4 minimal"] == 1         # p2: 10 → 3
    assert m.loc["15–19 moderately severe", "10–14 moderate"] == 1  # p3: 15 → 12
    assert m.loc["15–19 moderately severe", "5–9 mild"] == 1   # p5: 18 → 9
    assert int(m.to_numpy().sum()) == 4                        # p4 has no baseline
    s = bt.summary.iloc[0]
    assert (s["improved"], s["unchanged"], s["worsened"], s["n"]) == (4, 0, 0, 4)


# ------------------------------------------------------------------------------------ durability
@pytest.fixture(scope="module")
def durability_clinic() -> Cohort:
    scores, base, ket = {}, {}, {}
    for i in range(12):
        pid = f"r{i:02d}"
        base[pid] = 20
        lose = i < 6
        scores[pid] = {14: 8, 42: 15 if lose else 7, 70: 6}  # response day 14; loss on day 42 or never
        if i in (0, 1, 6, 7, 8, 9):                           # maintenance: 2 of the losers, 4 of the others
            ket[pid] = [35]
        if i == 10:                                            # an induction session after response is not one
            ket[pid] = [21]
    scores["n01"], base["n01"] = {14: 15, 42: 14}, 20          # never responds
    return clinic(scores, baseline=base, ketamine_days=ket)


def test_durability_kaplan_meier_has_known_steps(durability_clinic):
    res = trajectories.response_durability(durability_clinic)
    r = res.responders.set_index("patient_id")
    assert len(r) == 12 and "n01" not in r.index
    assert r["response_day"].eq(14).all()
    assert r.loc["r00", "days_in_response"] == 28 and r.loc["r00", "lost_response"]
    # loss on day 42 is the first later score above half the baseline; the day-70 score (6) does not undo it
    assert r.loc["r06", "days_in_response"] == 56 and not r.loc["r06", "lost_response"]
    assert r.loc["r06", "maintenance"] and r.loc["r06", "first_maintenance_day"] == 21
    assert not r.loc["r10", "maintenance"]
    ms = res.milestones.set_index(["group", "weeks"])
    assert ms.loc[("all responders", 4.0), "estimate"] == pytest.approx(0.5)
    assert ms.loc[("all responders", 8.0), "estimate"] == pytest.approx(0.5)
    assert ms.loc[("maintenance sessions", 4.0), "estimate"] == pytest.approx(4 / 6)
    assert ms.loc[("no maintenance sessions", 4.0), "estimate"] == pytest.approx(2 / 6)
    # R survfit default (log) interval at S = 0.5 with n = 12, d = 6: Greenwood var of log S = 6 / (12·6)
    se = math.sqrt(6 / (12 * 6))
    assert ms.loc[("all responders", 4.0), "ci_low"] == pytest.approx(0.5 * math.exp(-1.959963984540054 * se))
    assert res.maintenance_hr is not None and res.maintenance_hr["hr"] < 1
    assert res.maintenance_hr["n_events"] == 6


def test_maintenance_hazard_ratio_equals_r_coxph_on_the_counting_process_rows(durability_clinic):
    # the project's Cox engine with entry times replaced statsmodels' PHReg (faster; and PHReg counts an interval
    # that starts on an event day as at risk that day, which R's (start, stop] does not). Frozen from R 4.2 /
    # survival 3.5.3 on the 18 rows (start, stop, event, maintenance) this clinic gives:
    #   coxph(Surv(start, stop, event) ~ m, ties = "efron", control = coxph.control(eps = 1e-14))
    h = trajectories.response_durability(durability_clinic).maintenance_hr
    assert h["hr"] == pytest.approx(0.404889618967943, rel=1e-10)
    assert math.log(h["ci_high"] / h["hr"]) / 1.959963984540054 == pytest.approx(0.868711960545024, rel=1e-10)
    assert h["p"] == pytest.approx(0.297976189185043, rel=1e-10)


def test_trajectories_page_refits_nothing_when_the_view_comes_back(monkeypatch):
    # the page keeps its results in the session, keyed by the data, settings, view filters and choices: a rerun (or
    # a filter removed again) shows the kept model, with its comparison of the three ML time shapes, and kept
    # durability; nothing is fitted twice
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    # counted where the work is done (the time-shape comparison inside the fit, the durability responders): the
    # page and the background warm-up (analytics.outcomes.warmup) both ask for them, and one of them computes them
    calls: list[str] = []
    for name in ("compare_time_shapes", "_responders"):
        real = getattr(trajectories, name)
        monkeypatch.setattr(trajectories, name,
                            lambda *a, _real=real, _name=name, **k: calls.append(
                                _name if k.get("measure", "phq9") == "phq9" else "other measure") or _real(*a, **k))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "dashboard.py"), default_timeout=240)
    at.switch_page("pages/trajectories.py").run()
    at.checkbox(key="traj_compare").check().run()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert calls.count("_responders") == 1
    assert calls.count("compare_time_shapes") == 1  # inside phq9_model: the fit carries the comparison it made


def test_durability_needs_ten_responders(small_clinic):
    with pytest.raises(InsufficientData, match=r"at least 10 PHQ-9 responders .*\(got ⟦4⟧\)"):
        trajectories.response_durability(small_clinic)


# ------------------------------------------------------------------------------------ GEE
def test_gee_recovers_a_known_logistic_time_trend():
    rng = np.random.default_rng(3)
    sessions, followups = [], []
    b0, b1 = 1.0, -0.05  # log-odds of an abstinent 30-day window: 1.0 at day 0, −0.05 per week
    for i in range(400):
        pid = f"g{i:03d}"
        sessions.append({"patient_id": pid, "session_date": _d(0), "session_type": "ketamine", "route": "im"})
        for day in (30, 90, 180, 270):
            p = 1 / (1 + math.exp(-(b0 + b1 * day / 7)))
            abst = rng.random() < p
            followups.append({"patient_id": pid, "assessment_date": _d(day), "window_days": 30,
                              "days_abstinent": 30 if abst else int(rng.integers(0, 30))})
    cohort = build_cohort(ValidatedExports.from_frames(pd.DataFrame(sessions), pd.DataFrame(followups)))
    res = trajectories.abstinence_gee(cohort)
    t = res.table.set_index("term")
    for term, true in (("Intercept", b0), ("weeks", b1)):
        est, se = t.loc[term, "estimate"], t.loc[term, "se"]
        assert abs(est - true) < 3 * se, term
    assert t.loc["weeks", "odds_ratio"] == pytest.approx(math.exp(t.loc["weeks", "estimate"]))
    assert res.n_obs == 1600 and res.n_patients == 400
    assert res.predicted["estimate"].between(0, 1).all()


def test_abstinence_window_reaching_before_day_0_with_short_count_is_unknown():
    fu = pd.DataFrame({"patient_id": ["a", "a", "a"], "days": [10.0, 40.0, 70.0], "window_days": [30.0] * 3,
                       "days_abstinent": [25.0, 30.0, 29.0], "any_use": pd.array([pd.NA] * 3, "boolean"),
                       "urine_tox": pd.array([pd.NA, pd.NA, pd.NA], "string"),
                       "window_after_index": [False, True, True]})
    cohort = Cohort(patients=pd.DataFrame({"patient_id": ["a"]}), measures=pd.DataFrame(), followups=fu,
                    sessions=pd.DataFrame(), settings=Settings())
    ab = trajectories.abstinence_frame(cohort)
    assert ab["days"].tolist() == [40.0, 70.0] and ab["abstinent"].tolist() == [1.0, 0.0]


# ------------------------------------------------------------------------------------ mixed models
def simulated_long(n: int = 300, seed: int = 5, slope_sd: float = 0.15) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        k = int(rng.integers(2, 9))
        w = np.sort(np.r_[0.0, rng.uniform(0.2, 26, k - 1)])
        grp = "b" if i % 3 == 0 else "a"
        u0, u1 = rng.normal(0, 3.5), rng.normal(0, slope_sd)
        y = 16 + u0 + (-0.3 - (0.1 if grp == "b" else 0) + u1) * w + rng.normal(0, 2.5, k)
        rows.append(pd.DataFrame({"id": f"s{i:03d}", "weeks": w, "y": y, "grp": grp, "age": 20 + i % 50}))
    return pd.concat(rows, ignore_index=True)


def long_cohort(d: pd.DataFrame, measure: str = "phq9") -> Cohort:
    """A Cohort whose ``measures`` are the simulated long table (``id``, ``weeks``, ``y``; ``grp``, ``age``)."""
    measures = pd.DataFrame({"patient_id": d["id"].astype(str), "date": pd.NaT, "days": d["weeks"] * 7.0,
                             "weeks": d["weeks"].astype(float), "measure": measure, "value": d["y"].astype(float),
                             "source": "followup"})
    patients = d.drop_duplicates("id")[["id", "grp", "age"]].rename(columns={"id": "patient_id"})
    return Cohort(patients=patients.reset_index(drop=True), measures=measures, followups=pd.DataFrame(),
                  sessions=pd.DataFrame(), settings=Settings())


def test_fast_engine_equals_statsmodels_mixedlm():
    cohort = long_cohort(simulated_long())
    fast = trajectories.fit_trajectory(cohort, by="grp", adjust=("age",))
    ref = trajectories.fit_trajectory(cohort, by="grp", adjust=("age",), engine="statsmodels")
    assert fast.converged and ref.converged and fast.random_slope and ref.random_slope
    assert fast.fixed["term"].tolist() == ref.fixed["term"].tolist()
    assert fast.fixed["estimate"].to_numpy() == pytest.approx(ref.fixed["estimate"].to_numpy(), rel=1e-6)
    for key in ("sd_intercept", "sd_slope", "sd_residual"):
        assert fast.random[key] == pytest.approx(ref.random[key], rel=1e-4)
    assert fast.random["corr"] == pytest.approx(ref.random["corr"], abs=1e-4)
    assert fast.loglik == pytest.approx(ref.loglik, abs=1e-6)  # same REML criterion, same maximum
    # statsmodels inverts the full observed information (fixed and variance parameters together); lme4 and the
    # fast engine use (X'V⁻¹X)⁻¹σ² (equal to lme4 to 1e-5, see the golden tests), so SEs differ slightly.
    assert fast.fixed["se"].to_numpy() == pytest.approx(ref.fixed["se"].to_numpy(), rel=3e-3)


def test_group_by_time_recovers_simulated_slopes_within_their_intervals():
    fit = trajectories.fit_trajectory(long_cohort(simulated_long(n=600, seed=8)), by="grp")
    t = fit.fixed.set_index("term")
    for term, true in (("Intercept", 16.0), ("weeks", -0.3), ("weeks:grp[T.b]", -0.1), ("grp[T.b]", 0.0)):
        assert t.loc[term, "ci_low"] < true < t.loc[term, "ci_high"], term
    assert fit.n_per_group == {"a": 400, "b": 200}
    assert fit.formula == "phq9 ~ weeks * grp + (1 + weeks | patient_id)"
    pm = trajectories.predicted_means(fit, weeks=[0, 10]).table.set_index(["group", "weeks"])
    assert pm.loc[("b", 10.0), "estimate"] == pytest.approx(
        t.loc["Intercept", "estimate"] + t.loc["grp[T.b]", "estimate"]
        + 10 * (t.loc["weeks", "estimate"] + t.loc["weeks:grp[T.b]", "estimate"]))
    assert (pm["ci_low"] < pm["estimate"]).all() and (pm["estimate"] < pm["ci_high"]).all()


def test_slope_variance_is_not_left_stuck_at_the_zero_saddle():
    # With a small slope SD, a plain bounded quasi-Newton run from lme4's start (Λ = I) overshoots onto
    # Λ[1,1] = 0, where the gradient in that direction is exactly zero, and stops 12 deviance units too high.
    from scipy import optimize

    from analytics.engines import lmm

    d = simulated_long(n=400, seed=0, slope_sd=0.05)
    d["weeks"] *= 2
    codes, _ = pd.factorize(d["id"])
    blk = lmm.build_blocks(d["y"].to_numpy(), np.column_stack([np.ones(len(d)), d["weeks"]]), codes,
                           d["weeks"].to_numpy())
    start = lmm._default_start(blk)

    def fun(th):
        ev = lmm._deviance(th, blk, True, True)
        return ev.deviance, ev.grad

    plain = optimize.minimize(fun, start, jac=True, method="L-BFGS-B", bounds=[(0, None), (None, None), (0, None)])
    assert plain.x[2] == 0.0
    ours = lmm.fit_blocks(blk, start=start)
    best = lmm.fit_blocks(blk)
    assert ours.converged and not ours.singular and ours.theta[2] > 0.01
    assert ours.deviance == pytest.approx(best.deviance, abs=1e-6)
    assert ours.deviance < plain.fun - 10


def test_likelihood_ratio_test_of_the_group_terms_needs_ml_fits():
    cohort = long_cohort(simulated_long(n=600, seed=8))
    small = trajectories.fit_trajectory(cohort, reml=False)
    big = trajectories.fit_trajectory(cohort, by="grp", reml=False)
    test = trajectories.lr_test(small, big)
    assert test["df"] == 2 and test["chisq"] == pytest.approx(2 * (big.loglik - small.loglik))
    assert test["p"] < 0.001  # the simulated group slopes differ by 0.1 per week
    with pytest.raises(ValueError, match="ML fits"):
        trajectories.lr_test(trajectories.fit_trajectory(cohort), big)


def test_no_slope_variance_falls_back_to_random_intercept_and_says_so():
    fit = trajectories.fit_trajectory(long_cohort(simulated_long(n=40, seed=2, slope_sd=0.0)))
    assert not fit.random_slope
    assert fit.formula.endswith("(1 | patient_id)")
    assert any("random-intercept model is reported instead" in n for n in fit.notes)


def test_too_few_patients_with_two_scores_is_a_plain_insufficient_data_error():
    d = simulated_long(n=12)
    d = d[d["id"].isin(sorted(d["id"].unique())[:9])]
    with pytest.raises(InsufficientData, match=r"at least 2 scores for 10 patients \(got ⟦9⟧\)"):
        trajectories.fit_trajectory(long_cohort(d))


def test_a_small_group_is_named_in_the_error():
    d = simulated_long(n=60)
    d["grp"] = np.where(d["id"].isin(sorted(d["id"].unique())[:4]), "tiny", "big")
    with pytest.raises(InsufficientData, match=r"per group \(got ⟦4⟧ in 'tiny'\)"):
        trajectories.fit_trajectory(long_cohort(d), by="grp")


def test_identical_scores_are_reported_not_fitted():
    d = simulated_long(n=20)
    d["y"] = 7.0
    with pytest.raises(OutcomesError, match="same"):
        trajectories.fit_trajectory(long_cohort(d))


def test_trajectories_json_has_exactly_the_cli_shape():
    out = trajectories.trajectories_json(long_cohort(simulated_long()))
    assert set(out) == {"phq9"}
    s = out["phq9"]
    assert set(s) == {"formula", "method", "converged", "n_patients", "n_obs", "fixed", "random"}
    assert s["formula"] == "phq9 ~ weeks + (1 + weeks | patient_id)" and s["method"] == "REML"
    assert s["converged"] is True and isinstance(s["n_patients"], int) and s["n_patients"] == 300
    assert [f["term"] for f in s["fixed"]] == ["Intercept", "weeks"]
    assert all(set(f) == {"term", "estimate", "se", "lower", "upper"} for f in s["fixed"])
    assert all(type(v) is float for f in s["fixed"] for k, v in f.items() if k != "term")
    assert set(s["random"]) == {"sd_intercept", "sd_slope", "corr", "sd_residual"}
    assert all(type(v) is float for v in s["random"].values())
    import json
    json.dumps(out, allow_nan=False)


def test_pda_is_modelled_in_percent():
    d = simulated_long()
    d["y"] = np.clip(0.8 + 0.01 * d["weeks"] + np.random.default_rng(1).normal(0, 0.1, len(d)), 0, 1)
    fit = trajectories.fit_trajectory(long_cohort(d, measure="pda"), measure="pda")
    assert fit.fixed.set_index("term").loc["Intercept", "estimate"] == pytest.approx(80, abs=3)


def test_patient_lines_hide_the_patient_id_and_respect_small_groups():
    d = simulated_long(n=40)
    d["grp"] = np.where(d["id"].isin(sorted(d["id"].unique())[:5]), "small", "large")
    lines = trajectories.patient_lines(long_cohort(d), by="grp", n=10)
    assert set(lines["group"]) == {"large"}            # 5 patients < 11: no lines
    assert lines["line"].nunique() == 10 and "patient_id" not in lines.columns


def test_figures_have_axis_titles_with_units_and_one_band_per_group(small_clinic, durability_clinic):
    from analytics.report.plots import trajectories as plots

    d = simulated_long(n=60)
    cohort = long_cohort(d)
    fit = trajectories.fit_trajectory(cohort, by="grp")
    fig = plots.mean_trajectory(trajectories.predicted_means(fit), lines=trajectories.patient_lines(cohort, n=5))
    assert fig.layout.xaxis.title.text == "Weeks since first ketamine session"
    assert fig.layout.yaxis.title.text == "PHQ-9 total (0–27)"
    assert sum(t.fill == "toself" for t in fig.data) == 2 and len(fig.data) == 5  # lines + 2 × (band, mean)
    bars = plots.response_remission_bars(trajectories.response_remission(small_clinic, weeks=(4, 8)))
    assert [t.name for t in bars.data] == ["Response", "Remission"] and bars.layout.yaxis.title.text == "Patients (%)"
    assert list(bars.data[0].y) == pytest.approx([100 / 3, 100.0])
    heat = plots.band_transition_heatmap(trajectories.band_transitions(small_clinic))
    assert int(np.sum(heat.data[0].z)) == 4
    km = plots.durability_curves(trajectories.response_durability(durability_clinic))
    assert km.layout.yaxis.title.text == "Still in response (%)"


# ------------------------------------------------------------------------------------ recovery from the sample
def test_sample_clinic_true_phq9_trajectory_is_recovered_within_intervals():
    sample = pytest.importorskip("analytics.sample")
    fx = sample.TRUE_EFFECTS.phq9
    frames = sample.generate_clinic(2500, seed=20261125)
    cohort = build_cohort(ValidatedExports.from_frames(frames["sessions"], frames["followups"], frames["patients"]))
    fit = trajectories.fit_trajectory(cohort, by="program", reference=sample.KETAMINE_ONLY, time="piecewise",
                                      knot_weeks=fx.knot_weeks)
    assert fit.converged and fit.random_slope
    assert fit.formula == ("phq9 ~ (weeks + weeks_after_4) * program + (1 + weeks | patient_id)")
    t = fit.fixed.set_index("term")
    for term, true in fx.fixed_effects().items():
        term = term.replace("therapy", f"program[T.{sample.THERAPY}]")
        assert t.loc[term, "ci_low"] < true < t.loc[term, "ci_high"], (term, true, t.loc[term].tolist())
    # variance components: within 15 % (scores are rounded to integers, which adds 1/12 to the residual variance)
    assert fit.random["sd_intercept"] == pytest.approx(fx.sd_intercept, rel=0.15)
    assert fit.random["sd_slope"] == pytest.approx(fx.sd_slope, rel=0.15)
    assert fit.random["sd_residual"] == pytest.approx(math.hypot(fx.sd_residual, 12 ** -0.5), rel=0.05)
    assert fit.random["corr"] == pytest.approx(fx.corr, abs=0.15)
