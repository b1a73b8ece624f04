"""Contract v2 substance-use columns: urine_substances, prescribed, AUDIT-C, BAM and daily_use.csv."""

from __future__ import annotations

import pandas as pd

from schemas.validate import load_exports

SESSIONS = b"patient_id,session_date,session_type,route\n1,2025-01-01,ketamine,iv\n2,2025-01-01,ketamine,iv\n"


def _issue(v, file, column):
    rows = v.issues[(v.issues["file"] == file) & (v.issues["column"] == column)]
    return rows.iloc[0].to_dict() if len(rows) else None


def test_unknown_urine_substance_is_named_and_sets_the_row_aside_with_its_line():
    f = (b"patient_id,assessment_date,urine_substances,audit_c,bam_use,bam_risk,bam_protective\n"
         b"1,2025-02-01,Buprenorphine; EtG-free cocaine,5,3,10,12\n1,2025-03-01,Buprenorphine ; Cocaine,4,2,9,13\n"
         b"2,2025-02-01,,13,2,30,1\n")
    v = load_exports(SESSIONS, f)
    issue = _issue(v, "followups.csv", "urine_substances")
    assert issue["line"] == 2 and "'etg-free cocaine' is not a substance of the list" in issue["reason"]
    assert v.followups["urine_substances"].tolist() == ["buprenorphine;cocaine"]
    bad = v.issues[v.issues["line"] == 4].set_index("column")["reason"]
    assert set(bad.index) == {"audit_c", "bam_risk"} and "0–12" in bad["audit_c"] and "0–24" in bad["bam_risk"]
    assert v.files["followups"].accepted + v.files["followups"].quarantined == 3


def test_prescribed_list_is_read_and_an_unknown_medicine_sets_the_patient_row_aside():
    p = b"patient_id,prescribed\n1,Methadone;benzodiazepines\n2,heroin\n"
    v = load_exports(SESSIONS, b"patient_id,assessment_date\n1,2025-02-01\n", p)
    assert v.patients.set_index("patient_id").loc["1", "prescribed"] == "methadone;benzodiazepines"
    assert "'heroin' is not a substance" in _issue(v, "patients.csv", "prescribed")["reason"]


def test_daily_use_log_rows_are_checked_and_followups_become_optional():
    d = (b"patient_id,date,substance,used,amount\n1,2025-01-02,alcohol,no,0\n1,2025-01-02,alcohol,yes,3\n"
         b"3,2025-01-02,alcohol,yes,3\n2,2025-01-05,alcohol,no,2\n2,2025-01-06,Alcohol,yes,6\n2,2025-01-07,wine,yes,1\n")
    v = load_exports(SESSIONS, None, daily_use=d)
    reasons = v.issues.set_index("line")["reason"]
    assert "second row for this patient, day and substance (first on line 2)" in reasons[3]
    assert "has no ketamine session" in reasons[4]
    assert "above 0 on a day marked used = no" in reasons[5]
    assert "substance" in v.issues.set_index("line").loc[7, "column"]
    assert v.daily_use[["patient_id", "substance", "used", "amount"]].values.tolist() == [
        ["1", "alcohol", False, 0.0], ["2", "alcohol", True, 6.0]]
    assert set(v.files) == {"sessions", "daily_use"} and v.followups.empty
    assert v.files["daily_use"].rows == 6 and v.files["daily_use"].accepted == 2


# --- cohort derivation (analytics/outcomes/cohort.py) ---------------------------------------------------------------

from analytics.outcomes.cohort import build_cohort  # noqa: E402
from analytics.outcomes.settings import Settings  # noqa: E402

S3 = (b"patient_id,session_date,session_type,route,sex\n1,2025-01-01,ketamine,iv,female\n"
      b"1,2025-03-25,ketamine,iv,female\n2,2025-01-01,ketamine,iv,male\n3,2025-01-01,ketamine,iv,male\n"
      b"4,2025-01-01,ketamine,iv,female\n")
F3 = (b"patient_id,assessment_date,urine_substances,urine_tox,any_use,phq9\n"
      b"1,2025-01-31,buprenorphine,positive,no,\n1,2025-03-30,ketamine,positive,no,\n"
      b"1,2025-04-30,cocaine;buprenorphine,positive,no,\n2,2025-01-31,,positive,no,\n"
      b"2,2025-03-01,buprenorphine,positive,no,\n3,2025-03-15,,,no,7\n4,2025-01-20,ketamine,positive,no,\n")
P3 = b"patient_id,prescribed\n1,buprenorphine\n2,\n3,\n4,\n"
D3 = (b"patient_id,date,substance,used,amount\n3,2025-01-01,alcohol,yes,6\n3,2025-01-02,alcohol,no,0\n"
      b"3,2025-01-03,alcohol,yes,4\n3,2025-01-04,alcohol,yes,5\n3,2025-02-04,alcohol,no,0\n"
      b"4,2025-01-02,alcohol,yes,4\n")


def _cohort(**settings):
    return build_cohort(load_exports(S3, F3, P3, daily_use=D3), Settings(**settings))


def test_positive_urine_only_for_prescribed_or_in_treatment_ketamine_is_not_a_return_to_use():
    c = _cohort()
    fu = c.followups.set_index(["patient_id", "days"])
    assert not fu.loc[("1", 30), "urine_use"] and fu.loc[("1", 30), "urine_excluded"] == "buprenorphine"
    assert not fu.loc[("1", 88), "urine_use"]  # ketamine 4 days after the session of day 83
    assert fu.loc[("1", 119), "urine_use"]  # cocaine is not prescribed
    assert fu.loc[("2", 30), "urine_use"]  # no substance list: urine_tox counts
    assert fu.loc[("2", 59), "urine_use"]  # buprenorphine is not prescribed to patient 2
    p = c.patients.set_index("patient_id")
    assert p.loc["1", "days_to_event"] == 119 and p.loc["2", "days_to_event"] == 30
    assert all(p.loc[["1", "2"], "event_dated_by"] == "visit")
    assert "prescribed medicines" in c.settings.describe()


def test_ketamine_in_urine_more_than_7_days_after_a_session_counts_as_use():
    c = _cohort(ketamine_urine_days=3)
    assert c.followups.set_index(["patient_id", "days"]).loc[("1", 88), "urine_use"]  # 5 days > 3


def test_daily_log_gives_the_exact_first_use_day_and_wins_over_follow_ups():
    any_use, heavy = _cohort(), _cohort(relapse="heavy")
    p, h = any_use.patients.set_index("patient_id"), heavy.patients.set_index("patient_id")
    # patient 3 (male): day 0 is not after day 0; day 2 has 4 drinks (use, not heavy), day 3 has 5 (heavy)
    assert (p.loc["3", "days_to_event"], p.loc["3", "event_dated_by"]) == (2, "daily_log")
    assert h.loc["3", "days_to_event"] == 3
    # patient 4 (female): 4 drinks on day 1 is heavy; her follow-up's in-treatment ketamine urine is not use
    assert h.loc["4", "days_to_event"] == 1 and h.loc["4", "event_dated_by"] == "daily_log"
    assert heavy.settings.with_(heavy_drinks_women=5).heavy_drinks_women == 5
    h5 = _cohort(relapse="heavy", heavy_drinks_women=5).patients.set_index("patient_id")
    assert not h5.loc["4", "relapsed"] and h5.loc["4", "days_to_event"] == 19  # censored at her assessment


def test_daily_log_windows_and_it_is_never_a_follow_up_assessment():
    c = _cohort(relapse="heavy")
    w = c.log_windows.set_index(["patient_id", "window"])
    assert w.loc[("3", 1), ["days_recorded", "days_abstinent", "heavy_days"]].tolist() == [3, 1, 1]
    assert w.loc[("3", 2), ["start_day", "end_day", "days_recorded", "days_abstinent"]].tolist() == [31, 60, 1, 1]
    p = c.patients.set_index("patient_id")
    assert p.loc["3", "n_followups"] == 1 and p.loc["3", "has_daily_log"]
    assert set(c.measures["source"]) <= {"session", "followup"} and len(c.measures[c.measures["measure"] == "phq9"]) == 1


def test_log_only_patient_is_followed_without_any_follow_up_file():
    c = build_cohort(load_exports(S3, None, P3, daily_use=D3))
    p = c.patients.set_index("patient_id")
    assert p.loc["3", "has_followup"] and p.loc["3", "days_to_event"] == 2
    assert not p.loc["1", "has_followup"]


def test_cli_validate_takes_a_daily_log_instead_of_follow_ups(tmp_path):
    from analytics.cli import main

    (tmp_path / "s.csv").write_bytes(S3)
    (tmp_path / "d.csv").write_bytes(D3)
    assert main(["validate", "--sessions", str(tmp_path / "s.csv"), "--daily-use", str(tmp_path / "d.csv")]) == 0
    assert main(["validate", "--sessions", str(tmp_path / "s.csv")]) == 2


def test_a_day_with_several_substances_is_one_use_day_naming_them():
    d = (b"patient_id,date,substance,used,amount\n3,2025-01-05,cocaine,yes,\n3,2025-01-05,alcohol,yes,2\n"
         b"3,2025-01-06,alcohol,no,0\n3,2025-01-06,cannabis,no,\n")
    c = build_cohort(load_exports(S3, None, P3, daily_use=d))
    log = c.daily_use.set_index("days")
    assert log.loc[4, "substances"] == "alcohol;cocaine" and log.loc[4, "used"] and log.loc[4, "heavy"]
    assert not log.loc[5, "used"] and pd.isna(log.loc[5, "substances"])
    assert c.log_windows[["days_recorded", "days_abstinent", "heavy_days"]].values.tolist() == [[2, 1, 1]]


def test_a_mapping_maps_the_daily_log_columns_and_values():
    from schemas.presets import loads_mapping

    m = loads_mapping('name = "x"\n[daily_use.columns]\n"Client" = "patient_id"\n"Day" = "date"\n"Drug" = "substance"\n'
                      '"Used?" = "used"\n"Drinks" = "amount"\n[daily_use.values.substance]\n"Beer" = "alcohol"\n')
    v = load_exports(S3, None, daily_use=b"Client,Day,Drug,Used?,Drinks\n3,2025-01-02,Beer,yes,3\n", preset=m)
    assert v.issues.empty and v.daily_use[["substance", "amount"]].values.tolist() == [["alcohol", 3.0]]
