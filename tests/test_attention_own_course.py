"""Needing attention (issue 22): the patient's own course (BLUPs) matches lme4, predicts better than the program
mean and is calibrated; only active patients are listed; misuse signals follow their definitions; the flagged share
stays small on the sample clinic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analytics.outcomes import attention
from analytics.outcomes.cohort import build_cohort
from analytics.sample import generate_clinic
from schemas.frames import ValidatedExports

REF = Path(__file__).resolve().parent / "reference" / "attention"


def test_conditional_modes_and_variances_match_lme4_on_sleepstudy():
    d = pd.read_csv(REF / "sleepstudy.csv", dtype={"Subject": str})
    p = pd.read_csv(REF / "params_R.csv").iloc[0]
    ref = pd.read_csv(REF / "ranef_R.csv", dtype={"Subject": str}).set_index("Subject")
    codes, ids = pd.factorize(d["Subject"])
    resid = d["Reaction"].to_numpy() - p["intercept"] - p["slope"] * d["Days"].to_numpy()
    kw = {"sd_intercept": p["sd_intercept"], "sd_slope": p["sd_slope"], "corr": p["corr"], "sd_residual": p["sd_residual"]}
    b = attention.conditional_modes(resid, d["Days"].to_numpy(float), codes, len(ids), **kw)
    ref = ref.loc[list(ids)]
    np.testing.assert_allclose(b[:, 0], ref["intercept"], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(b[:, 1], ref["slope"], rtol=1e-6, atol=1e-8)
    v = attention.conditional_variance(d["Days"].to_numpy(float), codes, len(ids), **kw)
    np.testing.assert_allclose(v[:, 0, 0], ref["var_intercept"], rtol=1e-6)
    np.testing.assert_allclose(v[:, 0, 1], ref["cov"], rtol=1e-6)
    np.testing.assert_allclose(v[:, 1, 1], ref["var_slope"], rtol=1e-6)


@pytest.fixture(scope="module")
def cohort():
    c = generate_clinic(1500)
    return build_cohort(ValidatedExports.from_frames(c["sessions"], c["followups"], c["patients"]))


def test_own_course_predicts_the_latest_score_better_than_the_program_mean_and_is_calibrated(cohort):
    own, note = attention.own_expected_phq9(cohort)
    assert "BLUPs" in note
    m = cohort.measures[cohort.measures["measure"] == "phq9"]
    latest = m.sort_values("days").groupby("patient_id").tail(1).set_index("patient_id")["value"]
    o = own.set_index("patient_id")
    y = latest.reindex(o.index)
    own_err, mean_err = y - o["expected_phq9"], y - o["group_mean"]
    assert np.sqrt((own_err ** 2).mean()) < 0.8 * np.sqrt((mean_err ** 2).mean())
    assert abs(own_err.mean()) < 0.3
    z = own_err / o["prediction_sd"]
    assert 0.9 < z.std() < 1.15  # the 95% prediction interval is about right (scores are rounded and clipped)


def test_only_active_patients_are_listed_ranked_with_reasons_in_words(cohort):
    r = attention.needing_attention(cohort)
    end = cohort.data_end_date()
    last = pd.concat([cohort.sessions.groupby("patient_id")["session_date"].max(),
                      cohort.followups.groupby("patient_id")["assessment_date"].max()], axis=1).max(axis=1)
    listed = last.reindex(r.by_patient["patient_id"])
    assert (listed >= end - pd.Timedelta(days=90)).all()
    assert r.n_active == int((last >= end - pd.Timedelta(days=90)).sum())
    assert r.by_patient["rank"].tolist() == list(range(1, len(r.by_patient) + 1))
    assert r.by_patient["priority"].is_monotonic_decreasing
    phq = r.table[r.table["reason"] == "phq9_above_expected"]["detail"]
    assert len(phq) and phq.str.fullmatch(r"PHQ-9 \d+ on \d{4}-\d\d-\d\d: \d+ points above their own expected "
                                          r"course \(\d+; program average \d+\)").all()
    shorter = attention.needing_attention(cohort, active_days=30)
    assert shorter.n_active < r.n_active


def test_flagged_share_stays_below_ten_percent_on_the_sample_clinic(cohort):
    r = attention.needing_attention(cohort)
    assert 0.02 < r.flagged_share < 0.10, (r.n_flagged, r.n_active)


def _urine_cohort():
    s = pd.DataFrame({"patient_id": ["a", "a", "b", "c"], "session_date": ["2025-01-01", "2025-03-01", "2025-01-01",
                                                                           "2025-01-01"],
                      "session_type": "ketamine", "route": "sublingual",
                      "take_home_issue": [None, "lost", "no_issue", "early_refill"],
                      "urinary_symptoms": [None, "yes", "no", None]})
    f = pd.DataFrame({"patient_id": ["a", "a", "b"], "assessment_date": ["2025-03-04", "2025-04-01", "2025-02-01"],
                      "urine_substances": ["ketamine", "cocaine;ketamine", "cocaine"]})
    return build_cohort(ValidatedExports.from_frames(s, f))


def test_misuse_signals_follow_their_definitions():
    sig = attention.misuse_signals(_urine_cohort())
    got = sorted(zip(sig["patient_id"], sig["reason"], sig["date"].dt.strftime("%Y-%m-%d")))
    assert got == [("a", "ketamine_urine", "2025-04-01"),  # 3 days after a session is in-treatment ketamine
                   ("a", "take_home_issue", "2025-03-01"), ("a", "urinary_symptoms", "2025-03-01"),
                   ("c", "take_home_issue", "2025-01-01")]


def test_misuse_counts_say_not_recorded_without_the_columns_and_hide_small_counts():
    c = _urine_cohort()
    counts = attention.misuse_counts(c).set_index("signal")["patients"]
    assert (counts == "<11").all()
    s = pd.DataFrame({"patient_id": ["a"], "session_date": ["2025-01-01"], "session_type": "ketamine", "route": "iv"})
    f = pd.DataFrame({"patient_id": ["a"], "assessment_date": ["2025-02-01"]})
    bare = build_cohort(ValidatedExports.from_frames(s, f))
    assert (attention.misuse_counts(bare)["patients"] == "not recorded in this export").all()


def test_nobody_active_gives_an_empty_typed_list_not_an_error():
    s = pd.DataFrame({"patient_id": ["a", "b"], "session_date": ["2024-01-01", "2025-01-01"],
                      "session_type": "ketamine", "route": "iv"})
    f = pd.DataFrame({"patient_id": ["a"], "assessment_date": ["2024-02-01"]})
    r = attention.needing_attention(build_cohort(ValidatedExports.from_frames(s, f)), active_days=30)
    assert r.n_active == 1 and r.by_patient.empty
    assert r.by_patient["latest"].dtype.kind == "M"
