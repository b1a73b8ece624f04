"""Golden tests: the fast mixed-model engine and the trajectory API against frozen R numbers.

Reference numbers come from lme4 1.1 (``lmer``) and geepack, made by
``tests/reference/trajectories/make_reference.R`` from the CSV files beside it (R is not needed to run these).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analytics.engines import lmm
from analytics.outcomes import trajectories
from analytics.outcomes.cohort import Cohort
from analytics.outcomes.settings import Settings

REF_DIR = Path(__file__).parent / "reference" / "trajectories"
REF = json.loads((REF_DIR / "reference.json").read_text())


def _csv(name: str) -> pd.DataFrame:
    return pd.read_csv(REF_DIR / f"{name}.csv")


def cohort_from_long(long: pd.DataFrame, *, id_col: str, time_col: str, value_col: str,
                     patient_cols: tuple[str, ...] = (), measure: str = "phq9") -> Cohort:
    """A Cohort whose ``measures`` are the given long table (time in weeks), for model tests."""
    measures = pd.DataFrame({
        "patient_id": long[id_col].astype(str), "date": pd.NaT, "days": long[time_col] * 7.0,
        "weeks": long[time_col].astype(float), "measure": measure, "value": long[value_col].astype(float),
        "source": "followup"})
    patients = long.drop_duplicates(id_col)[[id_col, *patient_cols]].rename(columns={id_col: "patient_id"})
    patients["patient_id"] = patients["patient_id"].astype(str)
    return Cohort(patients=patients.reset_index(drop=True), measures=measures, followups=pd.DataFrame(),
                  sessions=pd.DataFrame(), settings=Settings())


def _rel(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


def _check_fit(res: lmm.LMMResult, ref: dict, *, fixed_tol: float = 1e-6, se_tol: float = 1e-5,
               vc_tol: float = 1e-4) -> None:
    assert res.converged
    assert _rel(res.beta, list(ref["fixed"].values())) < fixed_tol
    assert _rel(res.se, list(ref["se"].values())) < se_tol
    vc = res.variance_components()
    for key in ("sd_intercept", "sd_slope", "sd_residual"):
        if ref.get(key) is not None:
            assert vc[key] == pytest.approx(ref[key], rel=vc_tol), key
    if ref.get("corr") is not None:
        assert vc["corr"] == pytest.approx(ref["corr"], abs=vc_tol)
    assert res.loglik == pytest.approx(ref["loglik"], abs=1e-6)
    assert res.aic == pytest.approx(ref["aic"], abs=1e-6)
    assert res.bic == pytest.approx(ref["bic"], abs=1e-6)


@pytest.fixture(scope="module")
def sleepstudy() -> pd.DataFrame:
    return _csv("sleepstudy")


@pytest.mark.parametrize("key, reml", [("sleepstudy_reml", True), ("sleepstudy_ml", False)])
def test_sleepstudy_random_slope_fit_equals_lme4(sleepstudy, key, reml):
    X = np.column_stack([np.ones(len(sleepstudy)), sleepstudy["Days"]])
    res = lmm.fit_lmm(sleepstudy["Reaction"], X, sleepstudy["Subject"], sleepstudy["Days"], reml=reml)
    _check_fit(res, REF[key])
    assert res.theta == pytest.approx(REF[key]["theta"], abs=1e-5)
    assert not res.singular


def test_sleepstudy_matches_the_published_lme4_values(sleepstudy):
    # Bates et al. 2015 (J Stat Softw 67(1)), fm1: fixed 251.405, 10.467; SDs 24.74, 5.92; corr 0.07; residual 25.59
    X = np.column_stack([np.ones(len(sleepstudy)), sleepstudy["Days"]])
    res = lmm.fit_lmm(sleepstudy["Reaction"], X, sleepstudy["Subject"], sleepstudy["Days"])
    vc = res.variance_components()
    assert round(res.beta[0], 3) == 251.405 and round(res.beta[1], 3) == 10.467
    assert round(vc["sd_intercept"], 2) == 24.74 and round(vc["sd_slope"], 2) == 5.92
    assert round(vc["corr"], 2) == 0.07 and round(vc["sd_residual"], 2) == 25.59


def test_sleepstudy_random_intercept_fit_equals_lme4(sleepstudy):
    X = np.column_stack([np.ones(len(sleepstudy)), sleepstudy["Days"]])
    res = lmm.fit_lmm(sleepstudy["Reaction"], X, sleepstudy["Subject"], None)
    _check_fit(res, REF["sleepstudy_intercept"])


def test_orthodont_sex_by_age_interaction_equals_lme4():
    d = _csv("orthodont")
    female = (d["Sex"] == "Female").to_numpy(float)
    X = np.column_stack([np.ones(len(d)), d["age"], female, d["age"] * female])
    res = lmm.fit_lmm(d["distance"], X, d["Subject"], d["age"])
    _check_fit(res, REF["orthodont_reml"])


def test_analytic_gradient_equals_finite_differences(sleepstudy):
    codes, _ = pd.factorize(sleepstudy["Subject"])
    X = np.column_stack([np.ones(len(sleepstudy)), sleepstudy["Days"]])
    for time, theta in ((sleepstudy["Days"].to_numpy(), np.array([0.8, 0.1, 0.3])), (None, np.array([0.7]))):
        blk = lmm.build_blocks(sleepstudy["Reaction"].to_numpy(), X, codes, time)
        for reml in (True, False):
            grad = lmm._deviance(theta, blk, reml, True).grad
            num = []
            for j in range(len(theta)):
                h = np.zeros_like(theta)
                h[j] = 1e-5
                num.append((lmm._deviance(theta + h, blk, reml, False).deviance
                            - lmm._deviance(theta - h, blk, reml, False).deviance) / 2e-5)
            assert grad == pytest.approx(num, rel=1e-5, abs=1e-5)


# ------------------------------------------------------------------------------- through the cohort API
@pytest.fixture(scope="module")
def simulated() -> Cohort:
    return cohort_from_long(_csv("simulated"), id_col="id", time_col="weeks", value_col="y",
                            patient_cols=("program", "age"))


R_NAMES = {"Intercept": "(Intercept)", "weeks": "weeks", "program[T.ketamine + therapy]": "programketamine + therapy",
           "weeks:program[T.ketamine + therapy]": "weeks:programketamine + therapy", "age": "age_c",
           "weeks_after_4": "after4"}


def _check_table(fit: trajectories.TrajectoryFit, ref: dict, *, fixed_tol: float = 1e-6,
                 se_tol: float = 1e-5, vc_tol: float = 1e-4) -> None:
    tab = fit.fixed.set_index("term")
    for term, r_name in R_NAMES.items():
        if term in tab.index:
            assert tab.loc[term, "estimate"] == pytest.approx(ref["fixed"][r_name], rel=fixed_tol), term
            assert tab.loc[term, "se"] == pytest.approx(ref["se"][r_name], rel=se_tol), term
            z = 1.959963984540054
            assert tab.loc[term, "ci_low"] == pytest.approx(ref["fixed"][r_name] - z * ref["se"][r_name], rel=1e-5)
    for key in ("sd_intercept", "sd_slope", "sd_residual"):
        assert fit.random[key] == pytest.approx(ref[key], rel=vc_tol), key
    assert fit.random["corr"] == pytest.approx(ref["corr"], abs=vc_tol)
    assert fit.loglik == pytest.approx(ref["loglik"], abs=1e-6)
    assert fit.n_obs == ref["n_obs"] and fit.n_patients == ref["n_groups"]


def test_group_by_time_with_covariate_equals_lme4_on_unbalanced_data(simulated):
    fit = trajectories.fit_trajectory(simulated, measure="phq9", by="program", adjust=("age",),
                                      reference="ketamine only")
    assert fit.converged and fit.random_slope and fit.method == "REML"
    assert fit.formula == "phq9 ~ weeks * program + age + (1 + weeks | patient_id)"
    _check_table(fit, REF["simulated_group_reml"])


def test_piecewise_time_equals_lme4_by_ml_and_reml(simulated):
    for key, reml in (("simulated_piecewise_ml", False), ("simulated_piecewise_reml", True)):
        fit = trajectories.fit_trajectory(simulated, time="piecewise", knot_weeks=4, reml=reml)
        assert fit.fixed["term"].tolist() == ["Intercept", "weeks", "weeks_after_4"]
        _check_table(fit, REF[key])
        assert fit.aic == pytest.approx(REF[key]["aic"], abs=1e-6)


def test_piecewise_predicted_means_equal_lme4(simulated):
    fit = trajectories.fit_trajectory(simulated, time="piecewise", reml=False)
    pred = trajectories.predicted_means(fit, weeks=REF["prediction_weeks"]).table
    assert pred["estimate"].to_numpy() == pytest.approx(REF["simulated_piecewise_ml"]["predicted"], rel=1e-6)


def test_natural_spline_spans_rs_ns_basis_same_likelihood_and_predictions(simulated):
    fit = trajectories.fit_trajectory(simulated, time="spline", spline_df=3, reml=False)
    ref = REF["simulated_spline_ml"]
    knots = fit.design.time.knots
    assert knots[1:-1] == pytest.approx(REF["spline_knots"]["interior"], rel=1e-12)
    assert (knots[0], knots[-1]) == pytest.approx(tuple(REF["spline_knots"]["boundary"]), rel=1e-12)
    assert fit.loglik == pytest.approx(ref["loglik"], abs=1e-6)
    assert fit.aic == pytest.approx(ref["aic"], abs=1e-6)
    for key in ("sd_intercept", "sd_slope", "sd_residual"):
        assert fit.random[key] == pytest.approx(ref[key], rel=1e-4)
    pred = trajectories.predicted_means(fit, weeks=REF["prediction_weeks"]).table
    assert pred["estimate"].to_numpy() == pytest.approx(ref["predicted"], rel=1e-6)
    assert pred["se"].to_numpy() == pytest.approx(ref["predicted_se"], rel=1e-5)


def test_time_shape_comparison_uses_ml_likelihoods_of_lme4(simulated):
    cmp = trajectories.compare_time_shapes(simulated)
    t = cmp.table.set_index("time")
    assert t.loc["linear", "loglik"] == pytest.approx(REF["simulated_linear_ml"]["loglik"], abs=1e-6)
    assert t.loc["piecewise", "loglik"] == pytest.approx(REF["simulated_piecewise_ml"]["loglik"], abs=1e-6)
    assert t.loc["spline", "loglik"] == pytest.approx(REF["simulated_spline_ml"]["loglik"], abs=1e-6)
    lr = 2 * (REF["simulated_piecewise_ml"]["loglik"] - REF["simulated_linear_ml"]["loglik"])
    assert t.loc["piecewise", "lr_chisq"] == pytest.approx(lr, abs=1e-5)
    assert t.loc["piecewise", "df"] == 1 and t.loc["spline", "df"] == 2
    assert cmp.best in ("piecewise", "spline")  # the data were simulated with a bend at 4 weeks


def test_singular_slope_fit_is_flagged_like_lme4_and_falls_back_to_lme4s_random_intercept():
    d = _csv("singular")
    X = np.column_stack([np.ones(len(d)), d["weeks"]])
    slope = lmm.fit_lmm(d["y"], X, d["id"], d["weeks"])
    assert REF["singular_slope"]["singular"] and slope.singular
    assert slope.deviance == pytest.approx(REF["singular_slope"]["deviance_criterion"], abs=1e-5)

    fit = trajectories.fit_trajectory(cohort_from_long(d, id_col="id", time_col="weeks", value_col="y"))
    ref = REF["singular_intercept"]
    assert not fit.random_slope and fit.converged
    assert fit.formula == "phq9 ~ weeks + (1 | patient_id)"
    assert any("random-intercept model is reported instead" in n for n in fit.notes)
    assert fit.random["sd_slope"] is None and fit.random["corr"] is None
    assert fit.random["sd_intercept"] == pytest.approx(ref["sd_intercept"], rel=1e-4)
    assert fit.random["sd_residual"] == pytest.approx(ref["sd_residual"], rel=1e-4)
    assert fit.fixed["estimate"].to_numpy() == pytest.approx(list(ref["fixed"].values()), rel=1e-6)
    assert fit.fixed["se"].to_numpy() == pytest.approx(list(ref["se"].values()), rel=1e-5)


def test_abstinence_gee_equals_geepack():
    d = _csv("gee")
    n = len(d)
    followups = pd.DataFrame({
        "patient_id": d["id"].astype(str), "days": d["weeks"] * 7.0, "window_days": 28.0,
        "days_abstinent": np.where(d["abstinent"] == 1, 28.0, 20.0), "any_use": pd.array([pd.NA] * n, "boolean"),
        "urine_tox": pd.array([pd.NA] * n, "string"), "window_after_index": True})
    patients = d.drop_duplicates("id")[["id", "group"]].rename(columns={"id": "patient_id"})
    patients["patient_id"] = patients["patient_id"].astype(str)
    cohort = Cohort(patients=patients, measures=pd.DataFrame(), followups=followups, sessions=pd.DataFrame(),
                    settings=Settings())
    res = trajectories.abstinence_gee(cohort, by="group", reference="a", interaction=False)
    ref = REF["gee"]
    tab = res.table.set_index("term")
    names = {"Intercept": "(Intercept)", "weeks": "weeks", "group[T.b]": "groupb"}
    for term, r_name in names.items():
        assert tab.loc[term, "estimate"] == pytest.approx(ref["estimate"][r_name], rel=2e-4), term
        assert tab.loc[term, "se"] == pytest.approx(ref["se"][r_name], rel=1e-4), term
        assert tab.loc[term, "odds_ratio"] == pytest.approx(np.exp(ref["estimate"][r_name]), rel=2e-4)
    assert res.working_correlation == pytest.approx(ref["alpha"], rel=1e-3)
    assert res.n_obs == len(d) and res.formula == "abstinent ~ weeks + group"
