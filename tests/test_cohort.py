"""Cohort derivation on hand-built exports with known answers."""

import numpy as np
import pandas as pd
import pytest

from analytics.outcomes.cohort import build_cohort
from analytics.outcomes.settings import Settings
from schemas.frames import ValidatedExports


def _exports(followups: list[dict], sessions: list[dict] | None = None) -> ValidatedExports:
    sessions = sessions or [
        {"patient_id": "p1", "session_date": "2025-01-01", "session_type": "assessment", "phq9": 20},
        {"patient_id": "p1", "session_date": "2025-01-03", "session_type": "ketamine", "route": "iv"},
        {"patient_id": "p1", "session_date": "2025-01-05", "session_type": "ketamine", "route": "iv", "phq9": 15},
    ]
    return ValidatedExports.from_frames(pd.DataFrame(sessions), pd.DataFrame(followups))


def test_index_date_is_first_ketamine_session_and_baseline_is_last_score_before_it():
    cohort = build_cohort(_exports([{"patient_id": "p1", "assessment_date": "2025-02-02", "days_abstinent": 30}]))
    row = cohort.patients.iloc[0]
    assert row["index_date"] == pd.Timestamp("2025-01-03")
    assert row["baseline_phq9"] == 20.0
    assert row["index_route"] == "iv"


def test_route_clinician_and_site_are_each_patients_first_ketamine_value_that_is_given():
    """Each is the first non-missing value among the patient's ketamine sessions by date (not the first session's
    value when that one is empty), whatever the order of the rows; missing when no ketamine session gives one."""
    k = {"session_type": "ketamine"}
    sessions = [
        {"patient_id": "p2", "session_date": "2025-01-09", **k, "route": "im", "clinician": "C9", "site": "South"},
        {"patient_id": "p1", "session_date": "2025-01-05", **k, "route": "iv", "clinician": "C2", "site": "North"},
        {"patient_id": "p1", "session_date": "2025-01-03", **k, "route": "im"},
        {"patient_id": "p1", "session_date": "2025-01-01", "session_type": "psychotherapy", "clinician": "T1",
         "site": "East"},
        {"patient_id": "p2", "session_date": "2025-01-02", **k, "route": "iv"},
        {"patient_id": "p3", "session_date": "2025-01-04", **k, "route": "oral"},
        {"patient_id": "p1", "session_date": "2025-01-07", **k, "route": "iv", "clinician": "C3", "site": "West"},
    ]
    fus = [{"patient_id": p, "assessment_date": "2025-02-02", "days_abstinent": 30} for p in ("p1", "p2", "p3")]
    patients = build_cohort(_exports(fus, sessions)).patients.set_index("patient_id")
    assert patients["index_route"].to_dict() == {"p1": "im", "p2": "iv", "p3": "oral"}
    assert patients.loc[["p1", "p2"], "clinician"].tolist() == ["C2", "C9"]
    assert patients.loc[["p1", "p2"], "site"].tolist() == ["North", "South"]
    assert patients.loc["p3", ["clinician", "site"]].isna().all()


def test_patient_without_use_is_censored_at_last_assessment():
    fus = [{"patient_id": "p1", "assessment_date": d, "days_abstinent": 30, "window_days": 30}
           for d in ("2025-02-02", "2025-03-04")]
    row = build_cohort(_exports(fus)).patients.iloc[0]
    assert not row["relapsed"]
    assert row["days_to_event"] == 60.0


def test_relapse_date_is_used_when_given_else_assessment_date():
    fus = [{"patient_id": "p1", "assessment_date": "2025-02-02", "any_use": "yes", "relapse_date": "2025-01-20"}]
    assert build_cohort(_exports(fus)).patients.iloc[0]["days_to_event"] == 17.0
    fus = [{"patient_id": "p1", "assessment_date": "2025-02-02", "any_use": "yes"}]
    assert build_cohort(_exports(fus)).patients.iloc[0]["days_to_event"] == 30.0


def test_short_abstinence_counts_only_when_window_lies_after_index():
    # day 20 assessment with a 30-day window reaches back before day 0: says nothing certain
    fus = [{"patient_id": "p1", "assessment_date": "2025-01-23", "days_abstinent": 25, "window_days": 30},
           {"patient_id": "p1", "assessment_date": "2025-03-04", "days_abstinent": 28, "window_days": 30}]
    row = build_cohort(_exports(fus)).patients.iloc[0]
    assert row["relapsed"] and row["days_to_event"] == 60.0


@pytest.mark.parametrize("dropout_as_relapse, relapsed, day", [(False, False, 30.0), (True, True, 30.0)])
def test_dropout_is_censored_by_default_and_an_event_when_asked(dropout_as_relapse, relapsed, day):
    fus = [{"patient_id": "p1", "assessment_date": "2025-02-02", "days_abstinent": 30, "status": "lost_to_follow_up"}]
    row = build_cohort(_exports(fus), Settings(dropout_as_relapse=dropout_as_relapse)).patients.iloc[0]
    assert row["relapsed"] == relapsed and row["days_to_event"] == day


def test_heavy_definition_ignores_light_use():
    fus = [{"patient_id": "p1", "assessment_date": "2025-02-02", "days_abstinent": 25, "heavy_days": 0,
            "any_use": "yes"},
           {"patient_id": "p1", "assessment_date": "2025-03-04", "days_abstinent": 20, "heavy_days": 2}]
    assert build_cohort(_exports(fus)).patients.iloc[0]["days_to_event"] == 30.0
    assert build_cohort(_exports(fus), Settings(relapse="heavy")).patients.iloc[0]["days_to_event"] == 60.0


def test_heavy_definition_counts_a_positive_urine_or_a_relapse_date_as_the_contract_and_its_text_say():
    light = {"patient_id": "p1", "assessment_date": "2025-02-02", "days_abstinent": 25, "heavy_days": 0,
             "any_use": "yes"}
    later = {"patient_id": "p1", "assessment_date": "2025-04-03", "days_abstinent": 20, "heavy_days": 2}
    heavy = Settings(relapse="heavy")
    urine = [light, {"patient_id": "p1", "assessment_date": "2025-03-04", "days_abstinent": 30, "heavy_days": 0,
                     "urine_tox": "positive"}, later]
    assert build_cohort(_exports(urine), heavy).patients.iloc[0]["days_to_event"] == 60.0
    dated = [dict(light, relapse_date="2025-01-25"), later]
    assert build_cohort(_exports(dated), heavy).patients.iloc[0]["days_to_event"] == 22.0  # dated by relapse_date
    text = heavy.describe()
    assert "heavy-use day" in text and "positive urine test" in text and "relapse date" in text
    assert "4+ standard drinks for women, 5+ for men" in text and "no standard definition" in text


def test_patient_without_followup_is_excluded_from_survival_and_counted():
    cohort = build_cohort(_exports([]))
    assert not cohort.patients.iloc[0]["has_followup"]
    assert cohort.survival_patients.empty
    assert sum(cohort.exclusions.values()) == 1


def test_long_table_averages_same_day_scores_keeps_order_and_drops_scores_before_the_baseline_window():
    sessions = [
        {"patient_id": "p2", "session_date": "2024-11-01", "session_type": "assessment", "phq9": 9},  # day -63
        {"patient_id": "p2", "session_date": "2025-01-02", "session_type": "assessment", "phq9": 18},
        {"patient_id": "p2", "session_date": "2025-01-03", "session_type": "ketamine", "route": "im", "phq9": 16},
        {"patient_id": "p10", "session_date": "2025-01-03", "session_type": "ketamine", "route": "iv", "gad7": 12},
    ]
    fus = [{"patient_id": "p2", "assessment_date": "2025-01-03", "phq9": 13, "days_abstinent": 15, "window_days": 30},
           {"patient_id": "p2", "assessment_date": "2025-02-02", "phq9": 8, "days_abstinent": 30, "window_days": 30}]
    m = build_cohort(_exports(fus, sessions)).measures
    assert m["patient_id"].tolist() == ["p10", "p2", "p2", "p2", "p2", "p2"]  # text order, then measure, then date
    assert m["measure"].tolist() == ["gad7", "pda", "pda", "phq9", "phq9", "phq9"]
    phq = m[(m["patient_id"] == "p2") & (m["measure"] == "phq9")]
    assert phq["days"].tolist() == [-1, 0, 30]  # the day -63 score is outside the 30-day baseline window
    assert phq["value"].tolist() == [18.0, 14.5, 8.0]  # day 0: session 16 and follow-up 13 averaged
    assert phq["source"].tolist() == ["session", "followup", "followup"]  # a same-day pair: the follow-up's
    assert phq["weeks"].tolist() == [-1 / 7, 0.0, 30 / 7]


@pytest.mark.parametrize("with_times", [False, True])
def test_measure_rows_are_ordered_as_the_three_key_sort_whatever_the_dates(with_times):
    """The one-integer sort of calendar days equals ``np.lexsort``; date-times take the three-key sort itself."""
    from analytics.outcomes.cohort import _order

    rng = np.random.default_rng(3)
    n = 4000
    patient, measure = rng.integers(0, 200, n), rng.integers(0, 4, n)
    date = np.datetime64("2024-01-01", "ns") + rng.integers(0, 400, n).astype("timedelta64[D]")
    if with_times:
        date = date + rng.integers(0, 24, n).astype("timedelta64[h]")
    assert np.array_equal(_order(patient, measure, date, 4), np.lexsort((date, measure, patient)))
    assert len(_order(patient[:0], measure[:0], date[:0], 4)) == 0


def test_follow_ups_and_sessions_of_patients_without_a_ketamine_session_are_counted_out():
    sessions = [
        {"patient_id": "p1", "session_date": "2025-01-01", "session_type": "assessment", "phq9": 20},
        {"patient_id": "p1", "session_date": "2025-01-03", "session_type": "ketamine", "route": "iv"},
        {"patient_id": "p1", "session_date": "2025-01-05", "session_type": "ketamine", "route": "iv"},
        {"patient_id": "p2", "session_date": "2025-01-04", "session_type": "assessment", "phq9": 12},
    ]
    fus = [{"patient_id": pid, "assessment_date": d, "days_abstinent": 30}
           for pid, d in (("p2", "2025-02-01"), ("p1", "2025-03-04"), ("p9", "2025-02-02"), ("p1", "2025-02-02"))]
    cohort = build_cohort(_exports(fus, sessions))
    assert cohort.exclusions == {"patients with sessions but no ketamine session": 1,
                                 "follow-ups of patients without a ketamine session": 2}
    row = cohort.patients.iloc[0]
    assert (row["patient_id"], row["n_sessions"], row["n_ketamine_sessions"], row["n_followups"]) == ("p1", 3, 2, 2)
    assert cohort.followups["days"].tolist() == [30, 60] and set(cohort.sessions["patient_id"]) == {"p1"}


def test_bands_equal_pandas_cut_on_every_edge_and_missing_value():
    """PHQ-9 and age bands are taken by code from the thresholds; they equal pd.cut (right-closed intervals, missing
    outside them) cast to text, value for value."""
    from analytics.outcomes.cohort import AGE_BANDS, PHQ9_BANDS, age_band, phq9_band

    values = [-1, -0.5, -0.49, 0, 4, 4.5, 4.51, 5, 9.5, 10, 14.5, 15, 19.5, 20, 27, 27.5, 27.51, 30, np.nan, np.inf,
              17.5, 17.6, 29.5, 44.5, 59.5, 60, 199, 200, 201]
    for s in (pd.Series(values, name="score"), pd.Series(values, dtype="Float64", index=range(3, 3 + len(values)))):
        cut = pd.cut(s.astype(float), bins=[-0.5, 4.5, 9.5, 14.5, 19.5, 27.5], labels=[b[2] for b in PHQ9_BANDS])
        pd.testing.assert_series_equal(phq9_band(s), cut.astype("string"), check_exact=True)
        cut = pd.cut(s.astype(float), bins=[17.5, 29.5, 44.5, 59.5, 200], labels=[b[2] for b in AGE_BANDS])
        pd.testing.assert_series_equal(age_band(s), cut.astype("string"), check_exact=True)
    assert phq9_band(pd.Series([4.5, 5.0, 27.0]))[[0, 1, 2]].tolist() == ["0–4 minimal", "5–9 mild", "20–27 severe"]
