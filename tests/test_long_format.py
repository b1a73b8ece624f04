"""Contract tests for long assessment files (one row per completed questionnaire) and two-column value maps."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from analytics.errors import UnusableExport
from schemas.presets import Preset
from schemas.reader import read_export
from schemas.validate import load_exports

UPLOAD = date(2026, 11, 25)
SESSIONS = (b"patient_id,session_date,session_type,route\n"
            b"001,2025-01-01,ketamine,iv\n002,2025-01-02,ketamine,im\n004,2025-01-02,psychotherapy,\n")
MIRAH = "identifiers,subjectId,effectiveDate,code,valueInt,valueFloat,valueString"


def _mirah(*rows: str) -> bytes:
    return ("\n".join([MIRAH, *rows]) + "\n").encode()


def _load(followups: bytes, preset: str | Preset = "mirah-observations", **kw):
    return load_exports(SESSIONS, followups, preset=preset, upload_date=UPLOAD, **kw)


def _issues_by_line(data) -> dict[int, pd.Series]:
    f = data.issues[data.issues["file"] == "followups.csv"]
    return {int(r.line): r for r in f.itertuples(index=False)}


def test_loinc_and_short_codes_of_one_day_become_one_followup():
    data = _load(_mirah("o1,001,2025-02-01T10:00:00Z,44261-6,12,,",
                        "o2,001,2025-02-01T10:04:00-05:00,70274-6,8,,",
                        "o3,001,2025-02-01,days_abstinent,30,,",
                        "o4,001,2025-03-01,phq9,9,,"))
    assert data.issues.empty, data.issues.to_string()
    f = data.followups.sort_values("assessment_date")
    assert f["assessment_date"].dt.strftime("%Y-%m-%d").tolist() == ["2025-02-01", "2025-03-01"]
    assert f["phq9"].tolist() == [12.0, 9.0]
    assert f["gad7"].iloc[0] == 8.0 and pd.isna(f["gad7"].iloc[1])
    assert f["days_abstinent"].iloc[0] == 30.0
    assert f["line"].tolist() == [2, 5]  # a follow-up's line is its first source line


def test_mixed_instruments_in_one_file_fill_their_own_columns_with_their_types():
    data = _load(_mirah("a,001,2025-02-01,any_use,,,yes",
                        "b,001,2025-02-01,relapse_date,,,2025-01-20",
                        "c,001,2025-02-01,craving,,6.5,",
                        "d,001,2025-02-01,urine_tox,,,Detected",
                        "e,001,2025-02-01,status,,,Active",
                        "f,001,2025-02-01,window_days,28,,",
                        "g,001,2025-02-01,heavy_days,3,,",
                        "h,001,2025-02-01,days_abstinent,20,,"))
    assert data.issues.empty, data.issues.to_string()
    row = data.followups.iloc[0]
    assert bool(row["any_use"]) is True
    assert row["relapse_date"] == pd.Timestamp("2025-01-20")
    assert row["craving"] == 6.5 and row["window_days"] == 28 and row["heavy_days"] == 3
    assert row["urine_tox"] == "positive" and row["status"] == "active"


def test_unknown_code_is_quarantined_at_its_line_and_the_rest_of_the_day_is_kept():
    data = _load(_mirah("a,001,2025-02-01,44261-6,12,,", "b,001,2025-02-01,PCL-5,4,,"))
    issue = _issues_by_line(data)[3]
    assert issue.column == "code" and issue.value == "PCL-5"
    assert "not an instrument code" in issue.reason and "44261-6" in issue.reason
    assert data.followups["phq9"].tolist() == [12.0]


def test_identical_duplicate_is_merged_once_and_conflicting_duplicates_are_all_set_aside():
    raw = read_export(_mirah("a,001,2025-02-01,44261-6,12,,",
                             "b,001,2025-02-01,phq9,,12.0,",          # same measure, same value: merged
                             "c,002,2025-02-03,phq9,14,,",
                             "d,002,2025-02-03,44261-6,15,,",         # same measure, other value: both set aside
                             "e,002,2025-02-03,gad7,5,,"), kind="followups", preset="mirah-observations")
    assert raw.identical_duplicates == 1
    assert raw.sources.set_index("line").loc[3, "duplicate"]
    issues = {i["line"]: i for i in raw.issues}
    assert set(issues) == {4, 5}
    assert "14 on line 4, 15 on line 5" in issues[4]["reason"] and issues[4]["column"] == "phq9"
    frame = raw.frame.set_index("patient_id")
    assert frame.loc["001", "phq9"] == "12" and pd.isna(frame.loc["002", "phq9"])
    assert frame.loc["002", "gad7"] == "5"
    assert any("merged" in n for n in raw.notes)


@pytest.mark.parametrize("row, column, reason_part", [
    ("x,001,2025-02-01,phq9,,,severe", "phq9", "not a number"),
    ("x,001,2025-02-01,phq9,30,,", "phq9", "0–27"),
    ("x,001,2025-02-01,phq9,,12.5,", "phq9", "whole number"),
    ("x,001,2025-02-01,any_use,,,maybe", "any_use", "yes/no"),
    ("x,001,2025-02-01,urine_tox,,,pending", "urine_tox", "not allowed"),
    ("x,001,2025-02-01,gad7,5,6,", "valueInt / valueFloat / valueString", "disagree"),
    ("x,001,2025-02-01,gad7,,,", "valueInt / valueFloat / valueString", "no value"),
    ("x,,2025-02-01,gad7,5,,", "patient_id", "required"),
    ("x,001,,gad7,5,,", "assessment_date", "required"),
    ("x,001,2025-02,gad7,5,,", "assessment_date", "not a valid date"),
    ("x,001,2025-02-01,,5,,", "code", "needs the code"),
])
def test_a_bad_source_row_is_quarantined_at_its_own_line_with_a_reason(row, column, reason_part):
    raw = read_export(_mirah("a,001,2025-02-01,44261-6,12,,", row), kind="followups",
                      preset="mirah-observations", dates="iso")
    assert [i["line"] for i in raw.issues] == [3]
    assert raw.issues[0]["column"] == column and reason_part in raw.issues[0]["reason"]
    assert raw.frame["phq9"].tolist() == ["12"]
    assert raw.sources["line"].tolist() == [2]


def test_rows_read_balance_in_source_rows_and_merged_is_reported_separately():
    data = _load(_mirah("a,001,2025-02-01,44261-6,12,,",
                        "b,001,2025-02-01,70274-6,8,,",
                        "c,001,2025-02-01,phq9,12,,",      # identical repeat
                        "d,001,2025-03-01,phq9,10,,",
                        "e,001,2025-03-01,XYZ,1,,",        # unknown code
                        "f,003,2025-03-01,phq9,10,,",      # patient without sessions
                        "g,003,2025-03-01,gad7,4,,"))
    report = data.files["followups"]
    assert (report.rows, report.accepted, report.quarantined, report.merged) == (7, 4, 3, 2)
    assert report.long_format and report.output_rows == len(data.followups) == 2
    assert report.accepted + report.quarantined == report.rows


def test_issue_on_a_pivoted_followup_points_at_its_source_lines():
    data = _load(_mirah("a,003,2025-03-01,phq9,10,,", "b,003,2025-03-01,gad7,4,,",
                        "c,001,2024-12-01,gad7,4,,"))
    issues = _issues_by_line(data)
    assert issues[2].column == "patient_id" and "also holds line 3" in issues[2].reason
    assert 4 not in issues  # 2024-12-01, before the first ketamine session: a pre-treatment assessment (contract v2)
    assert data.files["followups"].quarantined == 2


def test_rule_on_one_measure_moves_the_issue_to_the_line_that_gave_it():
    data = _load(_mirah("a,001,2025-02-01,44261-6,12,,", "b,001,2025-02-01,window_days,30,,",
                        "c,001,2025-02-01,days_abstinent,31,,"))
    issue = _issues_by_line(data)[4]
    assert issue.column == "days_abstinent" and "lines 2, 3" in issue.reason


def test_day_first_dates_of_a_long_file_are_grouped_by_day():
    data = _load(_mirah("a,001,03/02/2025,44261-6,12,,", "b,001,3/2/2025,70274-6,8,,"), dates="dayfirst")
    assert data.issues.empty, data.issues.to_string()
    assert data.followups["assessment_date"].tolist() == [pd.Timestamp("2025-02-03")]
    assert data.followups[["phq9", "gad7"]].iloc[0].tolist() == [12.0, 8.0]


def test_follow_up_attribute_column_must_agree_within_a_followup():
    preset = Preset.from_dict({"followups": {
        "columns": {"Client": "patient_id", "Date": "assessment_date", "Episode Status": "status"},
        "long": {"code": "Measure", "value": "Score"}, "codes": {"PHQ-9": "phq9", "GAD-7": "gad7"}}})
    raw = read_export(b"Client,Date,Measure,Score,Episode Status\n001,2025-02-01,PHQ-9,12,active\n"
                      b"001,2025-02-01,GAD-7,8,completed\n001,2025-03-01,PHQ-9,9,\n001,2025-03-01,GAD-7,7,completed\n",
                      kind="followups", preset=preset)
    assert [i["line"] for i in raw.issues] == [2, 3]
    assert "status differs" in raw.issues[0]["reason"]
    assert raw.frame[["phq9", "gad7", "status"]].iloc[0].tolist() == ["9", "7", "completed"]


def test_long_layout_without_its_code_column_is_unusable_with_a_sentence():
    with pytest.raises(UnusableExport, match="has no 'code' column .*mirah-observations.*instrument code"):
        read_export(b"subjectId,effectiveDate,phq9\n001,2025-02-01,12\n", kind="followups",
                    preset="mirah-observations")


def test_a_value_that_names_visit_type_and_route_sets_both_columns():
    s = ("Client ID,Appointment Date,Appointment Type,Route\n"
         "001,2025-01-01,Spravato,\n"                     # ketamine + intranasal
         "001,2025-01-03,KAP sublingual,SL\n"             # SL means sublingual: agrees
         "001,2025-01-05,Ketamine IV infusion,IM\n"       # disagrees: set aside, nothing overwritten
         "001,2025-01-06,Individual therapy,\n").encode("ascii")
    f = b"Client ID,Completed On,Measure,Score\n001,2025-02-01,PHQ-9,12\n"
    data = load_exports(s, f, preset="encounter-export", upload_date=UPLOAD)
    ok = data.sessions.sort_values("session_date")
    assert ok["session_type"].tolist() == ["ketamine", "ketamine", "psychotherapy"]
    assert ok["route"].tolist()[:2] == ["intranasal", "sublingual"]
    issue = data.issues.iloc[0]
    assert (issue["file"], issue["line"], issue["column"], issue["value"]) == ("sessions.csv", 4, "route", "IM")
    assert "means route iv" in issue["reason"]
    assert data.files["sessions"].rows == 4 and data.files["sessions"].quarantined == 1


def test_every_source_row_of_a_messy_long_file_is_accepted_or_named_in_an_issue():
    import random
    import re

    rng = random.Random(20261125)
    pick = {"pid": ["001", "001", "002", "003", "", " 002 "],
            "date": ["2025-02-01", "2025-02-01T09:00:00Z", "2025-2-1", "2025-03-01", "2025-03-01", "", "garbage",
                     "2024-12-31"],
            "code": ["44261-6", "phq9", "70274-6", "gad7", "any_use", "urine_tox", "window_days", "days_abstinent",
                     "", "xyz"],
            "value": ["", "1", "12", "12.0", "31", "-1", "yes", "Detected", "abc", "6,5", "30"]}
    good = {"44261-6": ["12", "12.0", "9"], "phq9": ["12", "9"], "70274-6": ["8"], "gad7": ["8", "5"],
            "any_use": ["yes", "no"], "urine_tox": ["Detected", "negative"], "window_days": ["30"],
            "days_abstinent": ["30", "20"]}
    totals = {"accepted": 0, "merged": 0, "quarantined": 0, "spread": 0}
    for _ in range(12):
        rows = []
        for _ in range(rng.randint(5, 30)):
            code = rng.choice(pick["code"])
            values = ["", "", ""]
            if rng.random() < 0.9:
                values[rng.randrange(3)] = rng.choice(good.get(code, pick["value"]) if rng.random() < 0.8
                                                      else pick["value"])
            else:
                values = [rng.choice(pick["value"]) for _ in range(3)]
            rows.append(",".join(["o", rng.choice(pick["pid"]), rng.choice(pick["date"]), code, *values]))
        data = _load(_mirah(*rows))
        report = data.files["followups"]
        assert report.accepted + report.quarantined == report.rows == len(rows)
        assert report.output_rows == len(data.followups)
        issues = data.issues[data.issues["file"] == "followups.csv"]
        named = set(issues["line"])
        for reason in issues["reason"]:
            also = re.search(r"also holds lines? ([0-9, ]+)(and \d+ more)?", reason)
            named |= {int(x) for x in re.findall(r"\d+", also.group(1))} if also else set()
            totals["spread"] += bool(also)
        if not issues["reason"].str.contains(r"\d+ more, set aside").any():  # long lists are cut in messages
            assert len(named) == report.quarantined
        for key in ("accepted", "merged", "quarantined"):
            totals[key] += getattr(report, key)
    assert min(totals.values()) > 0, totals  # the files exercised every path
