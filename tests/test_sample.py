"""The sample clinic: its true effects are recovered by simple estimators, and it obeys the contract.

One 5,000-patient clinic (default seed) is generated once per module; with it the estimators below have
standard errors small enough that a wrong generator fails (e.g. a therapy HR of 0.75 instead of 0.60 lies
far outside the 99% interval), while a correct one passes for any seed with probability ≈ 99% per check.
Tolerances are stated in each test.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats
from statsmodels.duration.hazard_regression import PHReg

from analytics.errors import InsufficientData, OutcomesError
from analytics.outcomes.cohort import build_cohort
from analytics.sample import (
    AE_ORDER,
    DEFAULT_SEED,
    DEFAULT_UPLOAD,
    FOLLOWUP_COLUMNS,
    PATIENT_COLUMNS,
    ROUTES,
    SESSION_COLUMNS,
    SITES,
    SUBSTANCES,
    THERAPY,
    TRUE_EFFECTS,
    generate_clinic,
    true_effects_markdown,
    write_clinic,
)
from schemas.frames import ValidatedExports

ROOT = Path(__file__).resolve().parents[1]
N = 5000
Z99 = stats.norm.ppf(0.995)
fx = TRUE_EFFECTS


@pytest.fixture(scope="module")
def clinic() -> dict[str, pd.DataFrame]:
    return generate_clinic(N, seed=DEFAULT_SEED, with_truth=True)


@pytest.fixture(scope="module")
def cohort(clinic):
    data = ValidatedExports.from_frames(clinic["sessions"], clinic["followups"], clinic["patients"])
    return build_cohort(data)


def _ci99(k: int, n: int) -> tuple[float, float]:
    return stats.binomtest(k, n).proportion_ci(confidence_level=0.99)


def _cox(cohort) -> tuple[pd.Series, pd.Series]:
    """Cox model adjusted for the true covariates; returns (log HR, SE) by term."""
    p = cohort.survival_patients
    x = pd.DataFrame({
        "therapy": (p["program"] == THERAPY).astype(float),
        "female": (p["sex"] == "female").astype(float),
        "age_per_10y": (p["age"].astype(float) - 40) / 10,
        "prior_treatments": p["prior_treatments"].astype(float) - 1,
    })
    for s in SUBSTANCES[1:]:
        x[s] = (p["primary_substance"] == s).astype(float)
    fit = PHReg(p["days_to_event"].to_numpy(), x.to_numpy(), status=p["relapsed"].astype(float).to_numpy(),
                ties="efron").fit()
    return pd.Series(fit.params, index=x.columns), pd.Series(fit.bse, index=x.columns)


# --- reproducibility and arguments -------------------------------------------------------------------------

def test_same_seed_gives_identical_exports_and_another_seed_does_not():
    a, b = generate_clinic(300, seed=11), generate_clinic(300, seed=11)
    for name in ("sessions", "followups", "patients"):
        pd.testing.assert_frame_equal(a[name], b[name])
    c = generate_clinic(300, seed=12)
    assert not a["followups"].equals(c["followups"])


def test_zero_patients_and_reversed_dates_are_refused_with_a_sentence():
    with pytest.raises(InsufficientData, match="got 0"):
        generate_clinic(0)
    with pytest.raises(OutcomesError, match="2023-01-01"):
        generate_clinic(10, start=DEFAULT_UPLOAD, end=pd.Timestamp("2023-01-01").date())


def test_committed_sample_data_is_what_the_generator_writes(tmp_path):
    paths = write_clinic(tmp_path, 1500, DEFAULT_SEED)
    for name, path in paths.items():
        committed = ROOT / "sample_data" / f"{name}.csv"
        assert committed.read_bytes() == path.read_bytes(), (
            f"sample_data/{name}.csv is out of date; regenerate it with `make sample`")
        assert committed.stat().st_size < 3_000_000


def test_readme_lists_every_true_parameter():
    readme = (ROOT / "sample_data" / "README.md").read_text(encoding="utf-8")
    assert true_effects_markdown() in readme


# --- the exports obey the contract

def test_exports_have_the_canonical_columns_and_clinic_csv_values(clinic):
    s, f, p = clinic["sessions"], clinic["followups"], clinic["patients"]
    assert tuple(s.columns) == SESSION_COLUMNS
    assert tuple(f.columns) == FOLLOWUP_COLUMNS
    assert tuple(p.columns) == PATIENT_COLUMNS
    assert p["patient_id"].is_unique and p["patient_id"].str.fullmatch(r"\d{6}").all()
    assert p["patient_id"].str.startswith("0").any()  # leading zeros that must stay text
    iso = re.compile(r"\d{4}-\d{2}-\d{2}")
    for col in (s["session_date"], f["assessment_date"], f["relapse_date"].dropna()):
        assert col.str.fullmatch(iso).all()
        assert (col <= DEFAULT_UPLOAD.isoformat()).all()
    assert set(f["any_use"].dropna()) == {"yes", "no"}
    assert set(f["urine_tox"]) == {"positive", "negative", "not_done"}
    assert set(f["status"].dropna()) <= {"active", "completed", "lost_to_follow_up", "withdrew", "deceased"}
    assert set(s["session_type"]) == {"ketamine", "psychotherapy", "integration", "assessment"}
    tokens = set(s["adverse_events"].dropna().str.split(";").explode())
    assert tokens <= set(AE_ORDER) and len(tokens) == len(AE_ORDER)
    for frame in (s, f, p):
        text = frame.select_dtypes(include=["str", "string", "object"])
        assert not text.apply(lambda c: c.str.contains(r'[,"\n]', regex=True).any()).any()


def test_values_stay_in_the_contract_ranges(clinic):
    s, f, p = clinic["sessions"], clinic["followups"], clinic["patients"]
    ranges = [
        (s, "dose_mg", 1, 1000), (s, "weight_kg", 30, 300), (s, "phq9", 0, 27), (s, "gad7", 0, 21),
        (s, "craving", 0, 10), (s, "bp_systolic_max", 60, 260), (s, "bp_diastolic_max", 30, 160),
        (s, "heart_rate_max", 30, 220), (f, "window_days", 1, 365), (f, "phq9", 0, 27), (f, "gad7", 0, 21),
        (f, "craving", 0, 10), (p, "age", 18, 80), (p, "prior_treatments", 0, 50),
    ]
    for frame, col, lo, hi in ranges:
        v = frame[col].dropna().astype(float)
        assert len(v) and v.between(lo, hi).all(), col
    ket = s["session_type"] == "ketamine"
    assert s.loc[ket, "route"].notna().all() and s.loc[~ket, "route"].isna().all()
    assert s.loc[~ket, ["dose_mg", "adverse_events", "bp_systolic_max"]].isna().all().all()
    abst = f["days_abstinent"].astype(float)
    assert (abst.dropna() <= f.loc[abst.notna(), "window_days"]).all()
    heavy_ok = (f["heavy_days"].isna() | abst.isna()
                | (f["heavy_days"] <= f["window_days"] - f["days_abstinent"]))
    assert heavy_ok.all()
    assert not s.duplicated(["patient_id", "session_date", "session_type"]).any()
    assert not f.duplicated(["patient_id", "assessment_date"]).any()


def test_followups_come_after_the_first_ketamine_session_and_relapse_dates_lie_between(clinic):
    s, f = clinic["sessions"], clinic["followups"]
    first = s[s["session_type"] == "ketamine"].groupby("patient_id")["session_date"].min()
    idx = f["patient_id"].map(first)
    assert idx.notna().all()
    assert (f["assessment_date"] > idx).all()
    r = f.dropna(subset=["relapse_date"])
    assert len(r) > 500
    assert (r["relapse_date"] >= r["patient_id"].map(first)).all()
    assert (r["relapse_date"] <= r["assessment_date"]).all()


def test_committed_sample_passes_validation_without_a_quarantined_row():
    from schemas.validate import load_exports

    d = ROOT / "sample_data"
    data = load_exports(d / "sessions.csv", d / "followups.csv", d / "patients.csv",
                        upload_date=DEFAULT_UPLOAD)
    assert len(data.issues) == 0
    assert {k: r.quarantined for k, r in data.files.items()} == {"sessions": 0, "followups": 0, "patients": 0}
    assert data.files["sessions"].rows > 20_000


def test_derived_return_to_use_is_the_true_relapse_day_or_the_next_assessment(clinic, cohort):
    """The contract's derivation finds each true relapse at the first follow-up on or after it."""
    truth = clinic["truth"].set_index("patient_id")
    fu = cohort.followups
    fu = fu.assign(relapse_day=fu["patient_id"].map(truth["relapse_day"]))
    after = fu[fu["days"] >= fu["relapse_day"]].groupby("patient_id").head(1).set_index("patient_id")
    pts = cohort.survival_patients.set_index("patient_id")
    seen = pts.index.isin(after.index)
    assert pts.loc[seen, "relapsed"].all()
    assert not pts.loc[~seen, "relapsed"].any()
    assert (pts.loc[~seen, "days_to_event"] < pts.loc[~seen].index.map(truth["relapse_day"])).all()
    rel = pts.loc[seen].join(after[["days", "relapse_date"]])
    with_date = rel["relapse_date"].notna()
    true_day = rel.index.map(truth["relapse_day"]).to_numpy()
    assert (rel.loc[with_date, "days_to_event"].to_numpy() == true_day[with_date.to_numpy()]).all()
    assert (rel.loc[~with_date, "days_to_event"] == rel.loc[~with_date, "days"]).all()
    share = with_date.mean()
    lo, hi = _ci99(int(with_date.sum()), len(with_date))
    assert lo <= fx.relapse_date_recorded <= hi, share


def test_final_status_agrees_with_how_the_patient_left_follow_up(clinic):
    truth = clinic["truth"].set_index("patient_id")
    last = clinic["followups"].groupby("patient_id").tail(1).set_index("patient_id")
    for status in ("lost_to_follow_up", "withdrew", "deceased"):
        who = last.index[last["status"] == status]
        assert len(who) > 0 and (truth.loc[who, "leave_reason"] == status).all(), status
        assert (truth.loc[who, "leave_day"] < truth.loc[who, "admin_day"]).all()


# --- recovery of the true effects

def test_relapse_hazard_ratio_is_recovered_from_sample_clinic(cohort):
    """Adjusted Cox (Efron ties) on the derived cohort: the true log HR lies in the 99% CI."""
    coef, se = _cox(cohort)
    truth = {"therapy": fx.hr_therapy, "female": fx.hr_female, "age_per_10y": fx.hr_age_per_10y,
             "prior_treatments": fx.hr_per_prior_treatment}
    for term, hr in truth.items():
        assert abs(coef[term] - math.log(hr)) <= Z99 * se[term], (term, math.exp(coef[term]))
    assert se["therapy"] < 0.05  # precise enough that HR 0.75 (log distance 0.22) would fail
    assert abs(math.exp(coef["therapy"]) - fx.hr_therapy) < 0.08


def test_substance_relapse_rates_follow_their_true_order(cohort):
    coef, se = _cox(cohort)
    true_log = pd.Series({s: math.log(fx.relapse_hazard_ratio(s)) for s in SUBSTANCES[1:]})
    est = coef[true_log.index]
    assert ((est - true_log).abs() <= Z99 * se[true_log.index]).all(), np.exp(est).round(2).to_dict()
    assert list(est.sort_values().index) == list(true_log.sort_values().index)
    crude = cohort.survival_patients.groupby("primary_substance")["relapsed"].mean()
    assert crude.idxmax() == "methamphetamine" and crude.idxmin() == "cannabis"


def _phq9_frame(cohort) -> pd.DataFrame:
    m = cohort.measures[cohort.measures["measure"] == "phq9"]
    therapy = m["patient_id"].map(cohort.patients.set_index("patient_id")["program"]).eq(THERAPY)
    knot = fx.phq9.knot_weeks
    return m.assign(therapy=therapy.astype(float), weeks=m["weeks"].astype(float),
                    weeks_after_4=np.maximum(m["weeks"].astype(float) - knot, 0.0))


def test_phq9_piecewise_mean_trajectory_is_recovered_by_ols_with_patient_clustered_errors(cohort):
    """OLS of the piecewise mean model (knot at week 4); every true coefficient lies in its 99% CI."""
    assert fx.phq9.knot_weeks == 4
    d = _phq9_frame(cohort)
    fit = smf.ols("value ~ (weeks + weeks_after_4) * therapy", d).fit(
        cov_type="cluster", cov_kwds={"groups": pd.factorize(d["patient_id"])[0]})
    for term, value in fx.phq9.fixed_effects().items():
        assert abs(fit.params[term] - value) <= Z99 * fit.bse[term], (term, fit.params[term])
    assert fit.bse["weeks:therapy"] < 0.05  # an early therapy effect of 0 (distance 0.4) would fail
    # about 3% of scores sit at 0 (patients in remission near week 4); the estimates above still hold
    assert ((d["value"] == 0) | (d["value"] == 27)).mean() < 0.05


def test_phq9_response_and_remission_at_4_weeks_look_like_ketamine_studies(cohort):
    """The demo's 4-week rates sit in a realistic range (McInnes 2022: 53.6% response 14–31 days after
    induction), therapy ahead of ketamine only."""
    from analytics.outcomes.trajectories import response_remission

    t = response_remission(cohort, weeks=(4,)).table.set_index("outcome")
    assert 0.35 <= t.loc["response", "estimate"] <= 0.55, t.loc["response", "estimate"]
    assert 0.12 <= t.loc["remission", "estimate"] <= 0.25, t.loc["remission", "estimate"]
    g = response_remission(cohort, weeks=(4,), by="program").table
    r = g[g["outcome"] == "response"].set_index("group")["estimate"]
    assert r[THERAPY] > r["ketamine only"] + 0.1


def test_phq9_variance_components_are_recovered_by_the_piecewise_mixed_model(cohort):
    """fit_trajectory(time='piecewise') on the whole test clinic: fixed effects in their 99% CIs, variance
    components within 10% (sd_residual against sqrt(sd² + 1/12): rounding to integers adds 1/12)."""
    from analytics.outcomes.trajectories import fit_trajectory

    fit = fit_trajectory(cohort, measure="phq9", by="program", time="piecewise", knot_weeks=4,
                         reference="ketamine only", conf_level=0.99)
    assert fit.converged and fit.random_slope
    est = fit.fixed.set_index("term")
    for term, value in fx.phq9.fixed_effects().items():
        name = term.replace("therapy", f"program[T.{THERAPY}]")
        assert est.loc[name, "ci_low"] <= value <= est.loc[name, "ci_high"], (name, est.loc[name, "estimate"])
    t = fx.phq9
    assert fit.random["sd_intercept"] == pytest.approx(t.sd_intercept, rel=0.10)
    assert fit.random["sd_slope"] == pytest.approx(t.sd_slope, rel=0.10)
    assert fit.random["sd_residual"] == pytest.approx(math.hypot(t.sd_residual, 12 ** -0.5), rel=0.04)
    assert fit.random["corr"] == pytest.approx(t.corr, abs=0.15)


@pytest.mark.parametrize("event", AE_ORDER)
def test_adverse_event_rates_per_session_match_their_route(clinic, event):
    """Exact binomial CI per (event, route), Bonferroni over the 44 pairs (family-wise 99%)."""
    s = clinic["sessions"]
    k = s[s["session_type"] == "ketamine"]
    has = k["adverse_events"].fillna("").str.split(";").apply(lambda xs: event in xs)
    level = 1 - 0.01 / (len(AE_ORDER) * len(ROUTES))
    for route in ROUTES:
        sel = has[k["route"] == route]
        ci = stats.binomtest(int(sel.sum()), len(sel)).proportion_ci(confidence_level=level)
        assert ci.low <= fx.ae_rate(event, route) <= ci.high, (route, sel.mean())
        assert ci.high - ci.low < 0.06  # narrow enough to tell the routes apart


def test_raised_blood_pressure_and_heart_rate_shares_match_their_route(clinic):
    s = clinic["sessions"]
    k = s[(s["session_type"] == "ketamine") & s["bp_systolic_max"].notna()]
    raised = (k["bp_systolic_max"] >= 165) | (k["bp_diastolic_max"] >= 100)
    fast = k["heart_rate_max"] >= 120
    for i, route in enumerate(ROUTES):
        for flag, truth in ((raised, fx.raised_bp_rate[i]), (fast, fx.tachycardia_rate[i])):
            sel = flag[k["route"] == route]
            lo, hi = _ci99(int(sel.sum()), len(sel))
            assert lo <= truth <= hi, (route, sel.mean())


def test_missed_followups_match_the_site_rates(clinic):
    truth = clinic["truth"].set_index("patient_id")
    attended = clinic["followups"].groupby("patient_id").size().reindex(truth.index, fill_value=0)
    due = truth["followups_due"]
    assert (attended <= due).all()
    site = clinic["patients"].set_index("patient_id")["site"]
    for s in SITES:
        who = site.index[site == s]
        lo, hi = _ci99(int((due[who] - attended[who]).sum()), int(due[who].sum()))
        assert lo <= fx.missed_by_site[s] <= hi, s
    overall = 1 - attended.sum() / due.sum()
    assert 0.15 <= overall <= 0.25 and abs(overall - fx.missed_followup_share) < 0.015


def test_induction_program_and_route_shares_match_their_truth(clinic, cohort):
    k = cohort.sessions[cohort.sessions["session_type"] == "ketamine"]
    truth = clinic["truth"].set_index("patient_id")
    stayed = truth.index[truth["started"] & (truth["leave_day"] >= 28)]  # still followed after 4 weeks
    reach4 = (k[k["days"] < 28].groupby("patient_id").size() >= 4).reindex(stayed, fill_value=False)
    lo, hi = _ci99(int(reach4.sum()), len(reach4))
    assert lo <= fx.induction_reach_4 <= hi, reach4.mean()
    started = clinic["truth"]["started"]
    lo, hi = _ci99(int((~started).sum()), len(started))
    assert lo <= fx.never_started_share <= hi
    program = clinic["patients"]["program"].eq(THERAPY)
    lo, hi = _ci99(int(program.sum()), len(program))
    assert lo <= fx.therapy_share <= hi
    route = cohort.patients["index_route"]
    for r in ROUTES:
        lo, hi = _ci99(int((route == r).sum()), len(route))
        assert lo <= fx.route_share[r] <= hi, r
