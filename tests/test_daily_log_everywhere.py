"""The daily use log decides return to use for its patients in every analysis that recounts events (found when
the log, the dropout-window setting and the dropout sensitivity analysis met at merge: the sensitivity analysis
recounted events from follow-ups alone and gave log-only patients no time at all)."""

from __future__ import annotations

import numpy as np
import pytest

from analytics.outcomes.cohort import build_cohort, dropout_outcomes
from analytics.outcomes.settings import Settings
from analytics.outcomes.survival import dropout_sensitivity
from analytics.sample import generate_clinic
from schemas.frames import ValidatedExports


@pytest.fixture(scope="module")
def clinic():
    frames = generate_clinic(800, seed=23)
    assert len(frames["daily_use"]) > 0
    return ValidatedExports.from_frames(frames["sessions"], frames["followups"], frames["patients"],
                                        frames["daily_use"])


@pytest.mark.parametrize("as_event", [False, True])
def test_dropout_rules_use_the_log_as_the_cohort_does(clinic, as_event):
    cohort = build_cohort(clinic, Settings(dropout_as_relapse=as_event))
    p = cohort.patients
    out = dropout_outcomes(cohort, as_event=as_event)
    on_log = p["has_daily_log"].to_numpy(bool)
    assert on_log.sum() > 20
    mine = on_log & ~out["early_dropout"].to_numpy(bool)
    # the rule's own recount equals the cohort's events for every log patient
    np.testing.assert_array_equal(out["relapsed"].to_numpy(bool)[mine], p["relapsed"].to_numpy(bool)[mine])
    np.testing.assert_allclose(out["days_to_event"].to_numpy(float)[mine], p["days_to_event"].to_numpy(float)[mine])
    assert not np.isnan(out.loc[out["included"], "days_to_event"].to_numpy(float)).any()


def test_dropout_sensitivity_runs_on_a_clinic_with_a_log(clinic):
    sens = dropout_sensitivity(build_cohort(clinic, Settings()))
    assert set(sens.table["n"]) and (sens.table["n"] > 0).all()


def test_prescribed_and_in_treatment_ketamine_results_are_no_use_in_benchmarks_and_the_abstinence_gee():
    # one patient, day-0 ketamine, a follow-up with a full 30-day abstinent window whose urine is positive only for
    # the buprenorphine they are prescribed: abstinent in the abstinence frame and in the benchmarks' flags
    import pandas as pd

    from analytics.outcomes import benchmarks, trajectories

    sessions = pd.DataFrame([{"patient_id": f"p{i}", "session_date": "2025-01-01", "session_type": "ketamine",
                              "route": "iv"} for i in range(2)])
    followups = pd.DataFrame([{"patient_id": f"p{i}", "assessment_date": "2025-02-15", "window_days": 30,
                               "days_abstinent": 30, "any_use": False, "urine_tox": "positive",
                               "urine_substances": "buprenorphine" if i == 0 else "buprenorphine;cocaine"}
                              for i in range(2)])
    patients = pd.DataFrame([{"patient_id": f"p{i}", "primary_substance": "opioids", "prescribed": "buprenorphine"}
                             for i in range(2)])
    cohort = build_cohort(ValidatedExports.from_frames(sessions, followups, patients))
    frame = trajectories.abstinence_frame(cohort).set_index("patient_id")
    assert frame.loc["p0", "abstinent"] == 1 and frame.loc["p1", "abstinent"] == 0
    fu = cohort.followups.set_index("patient_id", drop=False)
    used, free = benchmarks._flags(fu.assign(days=45), "any")
    assert (used.tolist(), free.tolist()) == ([False, True], [True, False])
