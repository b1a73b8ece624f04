"""The sample clinic's contract-v2 substance-use fields: documented true effects, recovered; the rest unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analytics.outcomes.cohort import build_cohort
from analytics.sample import DEFAULT_SEED, DEFAULT_UPLOAD, TRUE_EFFECTS, generate_clinic, write_clinic
from schemas.frames import ValidatedExports

ROOT = Path(__file__).resolve().parents[1]
SU = TRUE_EFFECTS.substance_use


@pytest.fixture(scope="module")
def clinic() -> dict[str, pd.DataFrame]:
    return generate_clinic(4000, seed=DEFAULT_SEED, with_truth=True)


@pytest.fixture(scope="module")
def cohort(clinic):
    return build_cohort(ValidatedExports.from_frames(clinic["sessions"], clinic["followups"], clinic["patients"],
                                                     clinic["daily_use"]))


def test_every_column_of_the_committed_sample_is_generated_byte_identical(tmp_path):
    """New fields come from their own random stream: the columns the committed sample_data has are unchanged."""
    paths = write_clinic(tmp_path, 1500, DEFAULT_SEED)
    for name in ("sessions", "followups", "patients"):
        committed = pd.read_csv(ROOT / "sample_data" / f"{name}.csv", dtype=str, keep_default_na=False)
        now = pd.read_csv(paths[name], dtype=str, keep_default_na=False)
        assert list(now.columns[:len(committed.columns)]) == list(committed.columns)
        pd.testing.assert_frame_equal(now[committed.columns], committed)


def test_generated_substance_fields_pass_validation_with_the_daily_log(tmp_path):
    from schemas.validate import load_exports

    p = write_clinic(tmp_path, 600, DEFAULT_SEED)
    data = load_exports(p["sessions"], p["followups"], p["patients"], daily_use=p["daily_use"],
                        upload_date=DEFAULT_UPLOAD)
    assert len(data.issues) == 0 and data.files["daily_use"].rows == len(data.daily_use) > 1000
    assert data.followups["urine_substances"].notna().any() and data.patients["prescribed"].notna().any()


def _ci99(k: int, n: int) -> tuple[float, float]:
    return stats.binomtest(k, n).proportion_ci(confidence_level=0.99)


def test_cannabis_co_use_on_positive_tests_is_recovered_by_program(clinic, cohort):
    fu = cohort.followups.merge(cohort.patients[["patient_id", "program", "primary_substance"]], on="patient_id")
    positive = fu[fu["urine_tox"].eq("positive").fillna(False) & fu["primary_substance"].ne("cannabis").fillna(False)]
    for program, truth in SU.cannabis_couse_by_program.items():
        sub = positive[positive["program"] == program]
        k = int(sub["urine_substances"].str.contains("cannabis").sum())
        lo, hi = _ci99(k, len(sub))
        assert lo <= truth <= hi, (program, k, len(sub))


def test_prescribed_medicines_are_found_but_never_a_return_to_use(clinic, cohort):
    p = cohort.patients.set_index("patient_id")
    rx = clinic["patients"].set_index("patient_id")["prescribed"].dropna()
    assert 0.35 < (rx.isin(["buprenorphine", "methadone"]).sum() / (p["primary_substance"] == "opioids").sum()) < 0.65
    fu = cohort.followups[cohort.followups["patient_id"].isin(rx.index) & cohort.followups["urine_tox"].isin(
        ["positive", "negative"])]
    assert (fu["urine_substances"].str.contains("buprenorphine|methadone|benzodiazepines")).all()
    only_rx = fu["urine_tox"].eq("negative")
    assert not fu.loc[only_rx, "urine_use"].any() and fu.loc[~only_rx, "urine_use"].all()
    # the urine lists change no return to use (prescribed and in-treatment ketamine left out), log patients aside
    plain = build_cohort(ValidatedExports.from_frames(clinic["sessions"],
                                                      clinic["followups"].drop(columns="urine_substances"),
                                                      clinic["patients"]))
    both = p.join(plain.patients.set_index("patient_id")[["relapsed", "days_to_event"]].add_suffix("_plain"))
    both = both[~both["has_daily_log"] & both["has_followup"]]
    assert (both["relapsed"] == both["relapsed_plain"]).all()
    assert np.allclose(both["days_to_event"], both["days_to_event_plain"])
    excluded = cohort.followups["urine_excluded"].str.contains("ketamine").fillna(False)
    assert excluded.sum() > 20  # in-treatment ketamine found and left out


def test_daily_log_first_use_is_the_true_relapse_day(clinic, cohort):
    truth = clinic["truth"].set_index("patient_id")
    p = cohort.patients.set_index("patient_id")
    log = p[p["has_daily_log"]]
    alcohol = (p["primary_substance"] == "alcohol") & truth["started"].reindex(p.index)
    assert 0.33 < len(log) / alcohol.sum() < 0.47
    last_logged = cohort.daily_use.groupby("patient_id")["days"].max()
    r = truth.loc[log.index, "relapse_day"]
    seen = r <= last_logged.reindex(log.index)
    assert (log.loc[seen, "event_dated_by"] == "daily_log").all()
    assert (log.loc[seen, "days_to_event"] == r[seen]).all()
    assert (~log.loc[~seen & ~log["relapsed"], "relapsed"]).all()


def test_audit_c_and_bam_courses_are_recovered(clinic, cohort):
    fu = cohort.followups.merge(cohort.patients[["patient_id", "program"]], on="patient_id")
    a = fu.dropna(subset=["audit_c", "pda"])
    slope, intercept = np.polyfit(1 - a["pda"], a["audit_c"], 1)
    assert abs(slope - SU.audit_c[1]) < 0.5 and abs(intercept - SU.audit_c[0]) < 0.3
    b = fu.dropna(subset=["bam_risk"])
    x = np.column_stack([np.ones(len(b)), np.minimum(b["days"], 180) / 180, b["program"] == "ketamine + therapy"])
    coef, *_ = np.linalg.lstsq(x.astype(float), b["bam_risk"].to_numpy(float), rcond=None)
    assert np.allclose(coef, SU.bam_risk[:3], atol=0.6), coef
