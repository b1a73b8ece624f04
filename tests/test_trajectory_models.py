"""Issue #19: the one PHQ-9 model (time shape chosen on the data), singular random-slope fits handled by likelihood
(against lme4's boundary fits), and one response / remission / loss-of-response rule everywhere.

Boundary reference numbers: section 7 of ``tests/reference/trajectories/make_reference.R`` (lme4, bobyqa with
``rhoend = 1e-12``), frozen in ``boundary.json`` beside the ``boundary_*.csv`` data sets.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analytics.engines import lmm
from analytics.outcomes import response as rsp
from analytics.outcomes import trajectories
from analytics.outcomes.cohort import Cohort, build_cohort
from analytics.outcomes.settings import Settings
from schemas.frames import ValidatedExports

REF_DIR = Path(__file__).parent / "reference" / "trajectories"
BOUNDARY = json.loads((REF_DIR / "boundary.json").read_text())
COEF_TOL, VC_TOL = 1e-6, 1e-4


def _long(kind: str) -> pd.DataFrame:
    return pd.read_csv(REF_DIR / f"boundary_{kind}.csv")


def _cohort(d: pd.DataFrame) -> Cohort:
    measures = pd.DataFrame({"patient_id": d["id"].astype(str), "date": pd.NaT, "days": d["weeks"] * 7.0,
                             "weeks": d["weeks"].astype(float), "measure": "phq9", "value": d["y"].astype(float),
                             "source": "followup"})
    patients = pd.DataFrame({"patient_id": d["id"].astype(str).unique()})
    return Cohort(patients=patients, measures=measures, followups=pd.DataFrame(), sessions=pd.DataFrame(),
                  settings=Settings())


def _blocks(d: pd.DataFrame, slope: bool = True) -> lmm.Blocks:
    codes, _ = pd.factorize(d["id"])
    X = np.column_stack([np.ones(len(d)), d["weeks"]])
    return lmm.build_blocks(d["y"].to_numpy(float), X, codes, d["weeks"].to_numpy(float) if slope else None)


def _rel(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


def _check(res: lmm.LMMResult, ref: dict) -> None:
    """Fixed effects and their SEs to 1e-6 relative, variance components to 1e-4, criterion and AIC to 1e-6."""
    assert res.converged
    assert _rel(res.beta, list(ref["fixed"].values())) < COEF_TOL
    assert _rel(res.se, list(ref["se"].values())) < COEF_TOL
    vc = res.variance_components()
    assert vc["sd_residual"] == pytest.approx(ref["sd_residual"], rel=VC_TOL)
    if ref["sd_slope"] is not None:
        assert vc["sd_slope"] == pytest.approx(ref["sd_slope"], rel=VC_TOL)
    if ref["sd_intercept"] is not None:
        assert vc["sd_intercept"] == pytest.approx(ref["sd_intercept"], rel=VC_TOL, abs=VC_TOL)
    if ref["corr"] is not None:
        assert vc["corr"] == pytest.approx(ref["corr"], abs=VC_TOL)
    assert res.deviance == pytest.approx(ref["criterion"], abs=1e-6)
    assert res.aic == pytest.approx(ref["aic"], abs=1e-6)
    assert res.n_params == ref["df"]


# ------------------------------------------------------------------------------------------ engine vs lme4
@pytest.mark.parametrize("kind", ["corr", "slope"])
@pytest.mark.parametrize("method", ["reml", "ml"])
@pytest.mark.parametrize("structure", ["correlated", "uncorrelated", "slope"])
def test_every_random_slope_structure_equals_lme4_on_boundary_data(kind, method, structure):
    ref = BOUNDARY[f"boundary_{kind}"][method][structure]
    res = lmm.fit_structure(_blocks(_long(kind)), structure, reml=method == "reml")
    _check(res, ref)
    assert res.singular == ref["singular"]


@pytest.mark.parametrize("kind", ["corr", "slope"])
def test_boundary_fit_with_correlation_of_plus_or_minus_one_equals_lme4(kind):
    ref = BOUNDARY[f"boundary_{kind}"]["reml"]["correlated"]
    assert ref["singular"] and abs(ref["corr"]) == 1.0
    d = _long(kind)
    res = lmm.fit_lmm(d["y"], np.column_stack([np.ones(len(d)), d["weeks"]]), d["id"], d["weeks"])
    _check(res, ref)
    assert res.singular and res.theta[2] < lmm.SINGULAR_TOL
    assert res.theta[:2] == pytest.approx(ref["theta"][:2], rel=VC_TOL)


def test_random_intercept_fit_equals_lme4_on_boundary_data():
    for kind in ("corr", "slope"):
        ref = BOUNDARY[f"boundary_{kind}"]["reml"]["intercept"]
        _check(lmm.fit_blocks(_blocks(_long(kind), slope=False)), ref)


# ------------------------------------------------------------------------------------------ the choice
def test_a_boundary_fit_the_data_clearly_support_is_kept_not_replaced_by_a_random_intercept():
    ref = BOUNDARY["boundary_corr"]["reml"]
    fit = trajectories.fit_trajectory(_cohort(_long("corr")))
    assert fit.random_structure == "correlated" and fit.random_slope and fit.singular
    assert fit.formula == "phq9 ~ weeks + (1 + weeks | patient_id)"
    assert fit.deviance == pytest.approx(ref["correlated"]["criterion"], abs=1e-6)
    assert fit.random["corr"] == pytest.approx(-1.0, abs=VC_TOL)
    se = fit.fixed.set_index("term").loc["weeks", "se"]
    assert se == pytest.approx(ref["correlated"]["se"]["weeks"], rel=COEF_TOL)
    # the random-intercept model would understate the SE of weeks by about a third and is ~56 criterion units worse
    assert ref["intercept"]["se"]["weeks"] < 0.7 * se
    assert ref["intercept"]["criterion"] - ref["correlated"]["criterion"] > 50
    note = next(n for n in fit.notes if "singular" in n)
    assert "It is kept, as lme4 does" in note and "−1" in note
    table = fit.structures.set_index("structure")
    assert table.loc["correlated", "chosen"] and table["chosen"].sum() == 1
    assert table.loc["intercept", "criterion"] == pytest.approx(ref["intercept"]["criterion"], abs=1e-6)


def test_a_singular_fit_without_starting_level_differences_reports_the_slope_only_structure():
    ref = BOUNDARY["boundary_slope"]["reml"]
    fit = trajectories.fit_trajectory(_cohort(_long("slope")))
    assert fit.random_structure == "slope" and fit.random_slope
    assert fit.formula == "phq9 ~ weeks + (0 + weeks | patient_id)"
    assert fit.fixed["estimate"].to_numpy() == pytest.approx(list(ref["slope"]["fixed"].values()), rel=COEF_TOL)
    assert fit.fixed["se"].to_numpy() == pytest.approx(list(ref["slope"]["se"].values()), rel=COEF_TOL)
    assert fit.random["sd_slope"] == pytest.approx(ref["slope"]["sd_slope"], rel=VC_TOL)
    assert fit.random["sd_intercept"] == 0.0 and fit.random["corr"] is None
    assert fit.aic == pytest.approx(ref["slope"]["aic"], abs=1e-6)  # AIC counts one covariance parameter
    assert any("(0 + weeks | patient_id) is reported instead" in n for n in fit.notes)


def test_a_singular_fit_with_no_slope_variance_still_reports_the_random_intercept():
    d = pd.read_csv(REF_DIR / "singular.csv")
    fit = trajectories.fit_trajectory(_cohort(d))
    assert fit.random_structure == "intercept" and not fit.random_slope
    gap = fit.structures.set_index("structure")["criterion"]
    assert abs(gap["intercept"] - gap["correlated"]) < 0.01  # the same fit: a slope SD of 0


def test_never_a_random_intercept_whose_criterion_is_far_worse():
    for kind in ("corr", "slope"):
        fit = trajectories.fit_trajectory(_cohort(_long(kind)))
        t = fit.structures.set_index("structure")
        best = t["aic"].min()
        assert t.loc[fit.random_structure, "aic"] == best
        assert fit.random_structure != "intercept"


def test_ml_comparison_of_time_shapes_uses_one_random_structure_for_all():
    cmp = trajectories.compare_time_shapes(_cohort(_long("corr")))
    assert cmp.table["formula"].str.endswith("(1 + weeks | patient_id)").all()


# ------------------------------------------------------------------------------------------ time shape
def _bent(n: int = 200, seed: int = 3) -> Cohort:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        w = np.r_[0.0, np.sort(rng.uniform(0.3, 20, rng.integers(3, 8)))]
        mu = 18 + rng.normal(0, 3) - 2.0 * np.minimum(w, 4) + (rng.normal(0, 0.1)) * w
        rows.append(pd.DataFrame({"id": f"p{i:03d}", "weeks": w, "y": mu + rng.normal(0, 2, len(w))}))
    return _cohort(pd.concat(rows, ignore_index=True))


def test_auto_time_compares_by_ml_and_reports_the_chosen_shape_refitted_by_reml():
    cohort = _bent()
    fit = trajectories.phq9_model(cohort)
    assert fit.time == "piecewise" and fit.method == "REML"
    assert fit.formula == "phq9 ~ weeks + weeks_after_4 + (1 + weeks | patient_id)"
    cmp = fit.time_comparison
    assert cmp is not None and cmp.best == "piecewise"
    t = cmp.table.set_index("time")
    assert t["aic"].idxmin() == "piecewise"
    direct = trajectories.fit_trajectory(cohort, time="piecewise")
    assert fit.fixed["estimate"].to_numpy() == pytest.approx(direct.fixed["estimate"].to_numpy(), rel=1e-9)
    assert fit.deviance == pytest.approx(direct.deviance, abs=1e-9)
    ml = trajectories.fit_trajectory(cohort, time="piecewise", reml=False)
    assert t.loc["piecewise", "loglik"] == pytest.approx(ml.loglik, abs=1e-9)
    assert any(n.startswith("Time shape chosen on the data: piecewise") for n in fit.notes)


def test_analyze_json_states_the_chosen_formula_and_an_explicit_shape_wins():
    cohort = _bent()
    auto = trajectories.trajectories_json(cohort)["phq9"]
    assert auto["formula"] == "phq9 ~ weeks + weeks_after_4 + (1 + weeks | patient_id)"
    assert [f["term"] for f in auto["fixed"]] == ["Intercept", "weeks", "weeks_after_4"]
    linear = trajectories.trajectories_json(cohort, time="linear")["phq9"]
    assert linear["formula"] == "phq9 ~ weeks + (1 + weeks | patient_id)"
    fit = trajectories.phq9_model(cohort)
    assert auto["fixed"][1]["estimate"] == fit.fixed["estimate"].iloc[1]


def test_observed_means_count_each_patient_once_per_bin_with_t_intervals():
    d = pd.DataFrame({"id": ["a", "a", "b", "c"], "weeks": [0.5, 0.7, 0.6, 5.0], "y": [10.0, 12.0, 14.0, 9.0]})
    obs = trajectories.observed_means(_cohort(d)).table.set_index("bin")
    row = obs.loc["0–1"]
    assert row["n_patients"] == 2 and row["n_scores"] == 3
    assert row["estimate"] == pytest.approx(12.5)  # mean of a's 11 and b's 14
    from scipy import stats

    half = stats.t.ppf(0.975, 1) * np.std([11.0, 14.0], ddof=1) / np.sqrt(2)
    assert row["ci_low"] == pytest.approx(12.5 - half) and row["ci_high"] == pytest.approx(12.5 + half)
    assert np.isnan(obs.loc["4–6", "ci_low"])  # one patient: no interval


def test_chart_draws_observed_means_beside_the_model_line_and_hides_small_bins():
    from analytics.report.plots import trajectories as tplots

    cohort = _bent()
    fit = trajectories.phq9_model(cohort)
    obs = trajectories.observed_means(cohort)
    fig = tplots.mean_trajectory(trajectories.predicted_means(fit), observed=obs, min_cell=11)
    points = [tr for tr in fig.data if tr.mode == "markers"]
    assert len(points) == 1 and "observed mean" in points[0].name
    shown = obs.table[obs.table["n_patients"] >= 11]
    assert len(points[0].x) == len(shown)
    assert points[0].marker.color == fig.data[1].line.color  # the colour of the group's model line


# ------------------------------------------------------------------------------------------ response rules
DAY0 = date(2025, 3, 3)


def clinic(scores: dict[str, dict[int, float]], *, baseline: dict[str, float],
           settings: Settings | None = None) -> Cohort:
    """Every patient starts ketamine on DAY0 with baseline PHQ-9 at day −2 and ``scores`` = {id: {day: PHQ-9}}."""
    def d(day: int) -> str:
        return (DAY0 + timedelta(days=day)).isoformat()

    sessions, followups = [], []
    for pid, by_day in scores.items():
        sessions.append({"patient_id": pid, "session_date": d(-2), "session_type": "assessment",
                         "phq9": baseline[pid]})
        sessions.append({"patient_id": pid, "session_date": d(0), "session_type": "ketamine", "route": "iv"})
        for day, value in by_day.items():
            followups.append({"patient_id": pid, "assessment_date": d(day), "phq9": value, "window_days": 30})
    data = ValidatedExports.from_frames(pd.DataFrame(sessions), pd.DataFrame(followups), None)
    return build_cohort(data, settings or Settings())


def test_response_needs_a_positive_baseline_and_remission_is_below_5():
    score = pd.Series([0.0, 5.0, 5.0, 4.0, np.nan])
    base = pd.Series([0.0, 10.0, 9.0, np.nan, 12.0])
    assert rsp.is_response(score, base).tolist() == [False, True, False, False, False]
    assert rsp.is_remission(score).tolist() == [True, False, False, True, False]
    assert rsp.assessable(pd.Series([0.0, 9.0, 10.0, np.nan]), 10).tolist() == [False, False, True, False]
    assert rsp.assessable(pd.Series([0.0, 3.0]), 0).tolist() == [False, True]  # a baseline of 0 never counts


def _episodes(days_scores: dict[str, tuple[float, dict[int, float]]], **kw) -> pd.DataFrame:
    rows = [{"patient_id": pid, "days": day, "value": v, "baseline_phq9": base}
            for pid, (base, scores) in days_scores.items() for day, v in scores.items()]
    return rsp.response_episodes(pd.DataFrame(rows), **kw).set_index("patient_id")


def test_loss_of_response_needs_two_consecutive_scores_above_half_or_a_rise_of_five():
    e = _episodes({
        "one_blip": (20, {14: 8, 28: 11, 42: 9, 56: 8}),        # one score above 10, then back: no loss
        "two_in_a_row": (20, {14: 9, 28: 11, 42: 12, 56: 6}),   # 11, 12 above half: loss dated day 28
        "rise": (20, {14: 2, 28: 7, 42: 6}),                    # 2 → 7: a rise of 5, still ≤ 10: loss day 28
        "small_rise": (20, {14: 2, 28: 6}),                     # 2 → 6: 4 points, no loss
        "last_above": (20, {14: 9, 28: 11}),                    # one score above half at the end: censored
        "never": (20, {14: 15, 28: 12}),                        # never responds: no row
    })
    assert "never" not in e.index
    assert not e.loc["one_blip", "lost_response"] and e.loc["one_blip", "days_in_response"] == 42
    assert e.loc["two_in_a_row", "lost_response"] and e.loc["two_in_a_row", "loss_day"] == 28
    assert e.loc["two_in_a_row", "days_in_response"] == 14
    assert e.loc["rise", "lost_response"] and e.loc["rise", "loss_day"] == 28
    assert not e.loc["small_rise", "lost_response"]
    assert not e.loc["last_above", "lost_response"] and e.loc["last_above", "days_in_response"] == 14
    strict = _episodes({"small_rise": (20, {14: 2, 28: 6})}, rise_points=4)
    assert strict.loc["small_rise", "lost_response"]  # the rise is a setting


def test_every_output_uses_the_same_baseline_rule():
    from analytics.outcomes import benchmarks, qi

    # baseline 0 (a later 0 is no response), 8 (below 10), 10 and 20 (assessable); all score 0 or 4 at day 28
    c = clinic({"z0": {28: 0}, "b8": {28: 4}, "b10": {28: 4}, "b20": {28: 4}},
               baseline={"z0": 0, "b8": 8, "b10": 10, "b20": 20})
    rr = trajectories.response_remission(c, weeks=(4,)).table.set_index("outcome")
    assert rr.loc["response", ["n", "n_event"]].tolist() == [2, 2]
    assert rr.loc["remission", ["n", "n_event"]].tolist() == [2, 2]
    kpi = qi.patient_kpi_frame(c, "phq9_response_4w", as_of="2030-01-01").set_index("patient_id")
    assert kpi["counted"].to_dict() == {"z0": False, "b8": False, "b10": True, "b20": True}
    assert kpi["success"].sum() == 2
    base = pd.Series([0.0, 8.0, 10.0, 20.0])
    assert benchmarks._meets(pd.Series([0.0, 4.0, 4.0, 4.0]), base, "response").tolist() == [False, True, True, True]
    pats = pd.DataFrame({"patient_id": ["z0", "b8", "b10", "b20"], "baseline_phq9": base})
    assert benchmarks._depressed(pats, 10)[0]["patient_id"].tolist() == ["b10", "b20"]
    assert benchmarks._depressed(pats, 0)[0]["patient_id"].tolist() == ["b8", "b10", "b20"]
    # the setting moves the trajectories and the key indicator together
    c8 = clinic({"b8": {28: 4}, "b10": {28: 4}}, baseline={"b8": 8, "b10": 10},
                settings=Settings(phq9_min_baseline=5.0))
    assert trajectories.response_remission(c8, weeks=(4,)).table["n"].iloc[0] == 2
    k8 = qi.patient_kpi_frame(c8, "phq9_response_4w", as_of="2030-01-01")
    assert k8["counted"].sum() == 2


def test_durability_uses_the_loss_rule_and_the_baseline_setting():
    scores, base = {}, {}
    for i in range(12):
        pid = f"r{i:02d}"
        base[pid] = 20
        # responders on day 14 (score 8); even ids: one blip above 10 then back (no loss); odd: two in a row
        scores[pid] = {14: 8, 28: 11, 42: 9, 56: 7} if i % 2 == 0 else {14: 8, 28: 11, 42: 12, 56: 7}
    scores["low"], base["low"] = {14: 2, 28: 3}, 6        # baseline below 10: not a responder by default
    res = trajectories.response_durability(clinic(scores, baseline=base))
    r = res.responders.set_index("patient_id")
    assert "low" not in r.index and len(r) == 12
    assert r["lost_response"].tolist() == [i % 2 == 1 for i in range(12)]
    assert r.loc["r01", "days_in_response"] == 14 and r.loc["r00", "days_in_response"] == 42
    assert any("two consecutive later scores above half" in n for n in res.notes)
