"""Contract v2 substance-use columns: urine_substances, prescribed, AUDIT-C, BAM and daily_use.csv."""

from __future__ import annotations

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
