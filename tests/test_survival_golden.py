"""Golden tests: analytics.outcomes.survival against R's survival package (numbers frozen by R, no R needed).

The R script, its input data and the frozen numbers are in tests/reference/survival/ (make_reference.R says
what each number is). Tolerances: KM estimates and CIs 1e-4 absolute; medians exact; counts exact; log-rank
chi-square 1e-6 relative; Cox coefficients and SEs 1e-6 relative; PH-test (cox.zph) chi-square and p 1e-6
relative. The PH tolerance: R stops Newton–Raphson when the log-likelihood changes by < 1e-9 relative, so
its coefficients sit up to ~1e-8 (relative) from the exact maximum that we reach; cox.zph evaluates the
score test at R's coefficients and inherits an error of that order (measured here: at most 2e-8).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from statsmodels.duration.hazard_regression import PHReg
from statsmodels.duration.survfunc import SurvfuncRight, survdiff

from analytics.outcomes import survival as sv
from analytics.outcomes.cohort import build_cohort
from analytics.privacy.suppression import render_notes
from schemas.frames import ValidatedExports

HERE = Path(__file__).parent / "reference" / "survival"
REF = json.loads((HERE / "reference.json").read_text())
DATA = {name: pd.read_csv(HERE / f"{name}.csv") for name in ("lung", "veteran", "ovarian", "small")}
KM_CASES = [(case, level) for case, r in REF["km"].items() for level in r["km"]]


def _r(values) -> np.ndarray:
    """R's JSON (None for NA) as a float array; scalars become length-1 arrays."""
    return np.array([np.nan if v is None else v for v in np.atleast_1d(values)], dtype=float)


def _subset(case: str, level: str) -> tuple[np.ndarray, np.ndarray]:
    d = DATA[case.split("_")[0]]
    col = REF["km"][case]["group"]
    mask = np.ones(len(d), bool) if col is None else (d[col].astype(str) == level).to_numpy()
    return d["time"].to_numpy(float)[mask], d["event"].to_numpy(bool)[mask]


def test_reference_was_made_by_survival_3():
    assert REF["meta"]["survival"].startswith("3.")


@pytest.mark.parametrize("case, level", KM_CASES)
def test_kaplan_meier_table_equals_r_survfit(case, level):
    r = REF["km"][case]["km"][level]
    km = sv.kaplan_meier(*_subset(case, level))
    np.testing.assert_array_equal(km["day"], _r(r["time"]))
    for ours, theirs in (("n_risk", "n_risk"), ("n_event", "n_event"), ("n_censor", "n_censor")):
        np.testing.assert_array_equal(km[ours], _r(r[theirs]))
    for ours, theirs in (("estimate", "surv"), ("ci_low", "lower"), ("ci_high", "upper")):
        np.testing.assert_allclose(km[ours], _r(r[theirs]), rtol=0, atol=1e-4, equal_nan=True)
    std_err = km["std_err"].where(np.isfinite(km["std_err"]))  # R's Inf is null in the JSON
    np.testing.assert_allclose(std_err, _r(r["std_err"]), rtol=1e-8, equal_nan=True)


@pytest.mark.parametrize("case, level", KM_CASES)
def test_median_and_its_ci_equal_r_exactly(case, level):
    r = REF["km"][case]["median"][level]
    assert sv.km_median(sv.kaplan_meier(*_subset(case, level))) == (r["median"], r["lower"], r["upper"])


def test_median_is_the_midpoint_where_survival_is_one_half_over_an_interval():
    # group d: S = 0.5 from day 3 until the next event on day 5; R reports (3 + 5) / 2
    assert REF["km"]["small_group"]["median"]["d"]["median"] == 4
    assert sv.km_median(sv.kaplan_meier(*_subset("small_group", "d")))[0] == 4.0


@pytest.mark.parametrize("case, level", KM_CASES)
def test_milestones_equal_r_summary_at_times(case, level):
    r = REF["km"][case]["milestone"][level]
    ms = sv.km_at(sv.kaplan_meier(*_subset(case, level)), REF["km"][case]["milestones"])
    ms = ms[ms["estimate"].notna()]  # R leaves out days past the last follow-up
    np.testing.assert_array_equal(ms["day"], _r(r["time"]))
    np.testing.assert_array_equal(ms["n_risk"], _r(r["n_risk"]))
    for ours, theirs in (("estimate", "surv"), ("se", "std_err"), ("ci_low", "lower"), ("ci_high", "upper")):
        np.testing.assert_allclose(ms[ours], _r(r[theirs]), rtol=0, atol=1e-4, equal_nan=True)


@pytest.mark.parametrize("case, level", KM_CASES)
def test_rmst_equals_r_print_survfit_rmean(case, level):
    r = REF["km"][case]["rmst"][level]
    est, se = sv.rmst(sv.kaplan_meier(*_subset(case, level)), tau=REF["km"][case]["tau"])
    np.testing.assert_allclose([est, se], [r["rmean"], r["se"]], rtol=1e-8)


@pytest.mark.parametrize("case", [c for c, r in REF["km"].items() if r["group"]])
def test_logrank_equals_r_survdiff(case):
    r = REF["km"][case]["logrank"]
    d = DATA[case.split("_")[0]]
    lr = sv.logrank(d["time"], d["event"], d[REF["km"][case]["group"]].astype(str), groups=r["groups"])
    assert lr.df == r["df"]
    np.testing.assert_allclose(lr.chisq, r["chisq"], rtol=1e-6)
    np.testing.assert_allclose(lr.p, r["p"], rtol=1e-6)
    np.testing.assert_allclose(lr.table["observed"], r["observed"], rtol=1e-12)
    np.testing.assert_allclose(lr.table["expected"], r["expected"], rtol=1e-9)


@pytest.mark.parametrize("case", [c for c, r in REF["km"].items() if r["group"]])
def test_rmst_difference_equals_r_with_survrm2_formula(case):
    r = REF["km"][case]
    reference = r["reference"]
    kms = {lev: sv.kaplan_meier(*_subset(case, lev)) for lev in r["km"]}
    base = sv.rmst(kms[reference], tau=r["tau"])
    for lev, want in r["rmst_diff"].items():
        est, se = sv.rmst(kms[lev], tau=r["tau"])
        diff, diff_se = est - base[0], float(np.hypot(se, base[1]))
        low, high, p = sv.difference_ci(diff, diff_se)
        np.testing.assert_allclose([diff, diff_se, low, high, p],
                                   [want["estimate"], want["se"], want["lower"], want["upper"], want["p"]],
                                   rtol=1e-8)


def _cox_inputs(case: str) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, list[str]]]:
    """R's treatment-coded design (column names as R names its coefficients), complete cases."""
    r = REF["cox"][case]
    d = DATA[case.split("_")[0]]
    if case == "small":
        d = d[d["group"] != "c"]
    cols, terms = {}, {}
    for term, reference in r["terms"].items():
        if reference is None:
            cols[term] = d[term].astype(float)
            terms[term] = [term]
        else:
            levels = sorted(set(d[term].astype(str)) - {reference})
            terms[term] = [f"{term}{lev}" for lev in levels]
            for lev in levels:
                cols[f"{term}{lev}"] = (d[term].astype(str) == lev).astype(float)
    design = pd.DataFrame(cols)
    ok = design.notna().all(axis=1).to_numpy()
    return d[ok].reset_index(drop=True), design[ok].reset_index(drop=True), terms


@pytest.mark.parametrize("case", list(REF["cox"]))
def test_cox_efron_equals_r_coxph(case):
    r = REF["cox"][case]
    d, design, terms = _cox_inputs(case)
    fit = sv.cox_ph(d["time"], d["event"], design, terms=terms, ph_transform=r["transform"])
    tab = fit.table.set_index("column").loc[list(r["coef"])]
    assert (fit.n, fit.n_event) == (r["n"], r["n_event"])
    np.testing.assert_allclose(tab["coef"], list(r["coef"].values()), rtol=1e-6)
    np.testing.assert_allclose(tab["se"], list(r["se"].values()), rtol=1e-6)
    np.testing.assert_allclose(tab["p"], list(r["p"].values()), rtol=1e-5)
    np.testing.assert_allclose(tab["ci_low"], list(r["hr_lower"].values()), rtol=1e-6)
    np.testing.assert_allclose(tab["ci_high"], list(r["hr_upper"].values()), rtol=1e-6)
    np.testing.assert_allclose(fit.loglik, r["loglik"], rtol=1e-10)


@pytest.mark.parametrize("case", list(REF["cox"]))
def test_ph_test_equals_r_cox_zph(case):
    r = REF["cox"][case]
    d, design, terms = _cox_inputs(case)
    ph = sv.cox_ph(d["time"], d["event"], design, terms=terms, ph_transform=r["transform"]).ph_test
    assert list(ph["term"]) == r["zph"]["term"]
    np.testing.assert_array_equal(ph["df"], _r(r["zph"]["df"]))
    np.testing.assert_allclose(ph["chisq"], _r(r["zph"]["chisq"]), rtol=1e-6)
    np.testing.assert_allclose(ph["p"], _r(r["zph"]["p"]), rtol=1e-6)


def test_veteran_karnofsky_score_violates_proportional_hazards_as_r_says():
    ph = REF["cox"]["veteran"]["zph"]
    assert ph["p"][ph["term"].index("karno")] < 0.001  # the textbook example (Therneau & Grambsch 2000)


# ---- statsmodels cross-checks (the brief's default engines) ------------------------------------------

def test_cox_equals_statsmodels_phreg_efron():
    d, design, _ = _cox_inputs("veteran")
    ours = sv.cox_ph(d["time"], d["event"], design, ph_transform=None).table
    sm = PHReg(d["time"].to_numpy(float), design.to_numpy(float), status=d["event"].to_numpy(float),
               ties="efron").fit()
    np.testing.assert_allclose(ours["coef"], sm.params, rtol=1e-6)
    np.testing.assert_allclose(ours["se"], sm.bse, rtol=1e-6)


def test_logrank_chisq_equals_statsmodels_survdiff():
    d = DATA["veteran"]
    chisq, _ = survdiff(d["time"].to_numpy(float), d["event"].to_numpy(float), d["celltype"].to_numpy())
    ours = sv.logrank(d["time"], d["event"], d["celltype"])
    np.testing.assert_allclose(ours.chisq, chisq, rtol=1e-10)


def test_kaplan_meier_equals_statsmodels_survfuncright_at_event_days():
    d = DATA["lung"]
    sf = SurvfuncRight(d["time"].to_numpy(float), d["event"].to_numpy(float))
    km = sv.kaplan_meier(d["time"], d["event"]).set_index("day")
    np.testing.assert_allclose(km.loc[sf.surv_times, "estimate"], sf.surv_prob, rtol=1e-12)
    np.testing.assert_allclose(km.loc[sf.surv_times, "estimate"] * km.loc[sf.surv_times, "std_err"],
                               sf.surv_prob_se, rtol=1e-10)


# ---- the same numbers through the cohort pipeline -----------------------------------------------------

def _cohort_from(d: pd.DataFrame, *, patient_columns: dict[str, pd.Series], phq9: pd.Series | None = None):
    """One patient per row: a ketamine session on day 0 and one follow-up on day ``time`` (use = event)."""
    ids = [f"{i:04d}" for i in range(len(d))]
    day0 = pd.Timestamp("2020-01-01")
    sessions = pd.DataFrame({"patient_id": ids, "session_date": day0, "session_type": "ketamine", "route": "iv",
                             "phq9": phq9 if phq9 is not None else np.nan})
    followups = pd.DataFrame({"patient_id": ids,
                              "assessment_date": day0 + pd.to_timedelta(d["time"].to_numpy(), unit="D"),
                              "any_use": np.where(d["event"].to_numpy() == 1, "yes", "no")})
    patients = pd.DataFrame({"patient_id": ids, **{k: v.to_numpy() for k, v in patient_columns.items()}})
    return build_cohort(ValidatedExports.from_frames(sessions, followups, patients))


@pytest.fixture(scope="module")
def lung_cohort():
    # lung's sex → sex, age → age, ECOG score (0–3) → baseline PHQ-9, so R's `sex + age + ph.ecog` model
    # is the cohort's `by="sex", adjust=("age", "baseline_phq9")`
    d = DATA["lung"]
    return _cohort_from(d, patient_columns={"sex": d["sex"], "age": d["age"]}, phq9=d["ph.ecog"])


def test_adjusted_hazard_ratio_through_the_cohort_equals_r(lung_cohort):
    cmp = sv.compare_groups(lung_cohort, by="sex", reference="male", adjust=("age", "baseline_phq9"))
    r = REF["cox"]["lung"]
    assert (cmp.n_model, cmp.n_event_model) == (r["n"], r["n_event"])
    np.testing.assert_allclose(cmp.hazard_ratios["coef"], [r["coef"][k] for k in ("sexfemale", "age", "ph.ecog")],
                               rtol=1e-6)
    np.testing.assert_allclose(cmp.hazard_ratios["se"], [r["se"][k] for k in ("sexfemale", "age", "ph.ecog")],
                               rtol=1e-6)
    np.testing.assert_allclose(cmp.ph_test["chisq"], r["zph"]["chisq"], rtol=1e-6)
    notes = render_notes(cmp.notes, enabled=False)
    assert any("1 patient(s) without a value" in n for n in notes)  # lung's one missing ECOG


def test_survival_json_through_the_cohort_equals_r(lung_cohort):
    out = sv.survival_json(lung_cohort, by="sex", reference="male")
    json.dumps(out, allow_nan=False)
    r_km, r_cox = REF["km"]["lung_sex"], REF["cox"]["lung_sex"]
    np.testing.assert_allclose(out["logrank"]["chisq"], r_km["logrank"]["chisq"], rtol=1e-6)
    assert out["logrank"]["df"] == 1
    (term,) = out["cox"]["terms"]
    assert (term["term"], term["level"], out["cox"]["reference"]) == ("sex", "female", "male")
    np.testing.assert_allclose([term["coef"], term["se"], term["hr_lower"], term["hr_upper"]],
                               [r_cox["coef"]["sexfemale"], r_cox["se"]["sexfemale"],
                                r_cox["hr_lower"]["sexfemale"], r_cox["hr_upper"]["sexfemale"]], rtol=1e-6)
    np.testing.assert_allclose(out["cox"]["ph_test"]["p"], r_cox["zph"]["p"][-1], rtol=1e-6)
    for group in out["groups"]:
        med = r_km["median"][group["group"]]
        assert (group["median_days"], group["median_lower"], group["median_upper"]) == (
            med["median"], med["lower"], med["upper"])
        km = r_km["km"][group["group"]]
        np.testing.assert_allclose([row["survival"] for row in group["km"]], km["surv"], atol=1e-4)
        assert [row["at_risk"] for row in group["km"]] == km["n_risk"]


def test_non_proportional_hazards_are_flagged_like_r_on_veteran():
    d = DATA["veteran"]
    cohort = _cohort_from(d, patient_columns={"program": d["celltype"]})
    cmp = sv.compare_groups(cohort, by="program", reference="squamous")
    r = REF["cox"]["veteran_celltype"]
    np.testing.assert_allclose(cmp.hazard_ratios["coef"], list(r["coef"].values()), rtol=1e-6)
    np.testing.assert_allclose(cmp.ph_test["p"].iloc[-1], r["zph"]["p"][-1], rtol=1e-6)
    assert cmp.ph_holds is False
    assert "not proportional" in cmp.ph_verdict and "restricted mean" in cmp.ph_verdict
