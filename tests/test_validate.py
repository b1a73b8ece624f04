"""Contract tests: each rule of data-contract.md with a passing and a failing row, and messy files."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from analytics.errors import UnusableExport
from schemas.reader import read_export
from schemas.validate import load_exports

UPLOAD = date(2026, 11, 25)
S_HEADER = "patient_id,session_date,session_type,route,dose_mg,phq9,adverse_events,program"
S_GOOD = ["00123,2025-01-01,assessment,,,20,,ketamine + therapy",
          "00123,2025-01-03,ketamine,iv,50,,nausea;dizziness,ketamine + therapy",
          "00124,2025-01-04,ketamine,im,60,18,,ketamine only"]
F_HEADER = "patient_id,assessment_date,window_days,days_abstinent,heavy_days,any_use,relapse_date,urine_tox,status"
F_GOOD = ["00123,2025-02-03,30,30,0,no,,negative,active",
          "00124,2025-02-04,30,20,3,yes,2025-01-20,positive,active"]


def _csv(header: str, rows: list[str]) -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode()


def _load(sessions: list[str] | None = None, followups: list[str] | None = None, **kw):
    return load_exports(_csv(S_HEADER, S_GOOD + (sessions or [])), _csv(F_HEADER, F_GOOD + (followups or [])),
                        upload_date=UPLOAD, **kw)


def _only_issue(data, file: str) -> pd.Series:
    issues = data.issues[data.issues["file"] == file]
    assert len(issues) == 1, issues.to_string()
    return issues.iloc[0]


def _balanced(data) -> None:
    for report in data.files.values():
        assert report.accepted + report.quarantined == report.rows


def test_clean_exports_are_all_accepted_and_ids_keep_leading_zeros():
    data = _load()
    assert data.issues.empty
    assert data.files["sessions"].accepted == 3 and data.files["followups"].accepted == 2
    assert set(data.sessions["patient_id"]) == {"00123", "00124"}
    assert data.patients.set_index("patient_id").loc["00124", "program"] == "ketamine only"


@pytest.mark.parametrize("row, column, value, reason_part", [
    ("00125,2025-01-05,ketamine,,50,,,ketamine only", "route", "", "empty on a ketamine session"),
    ("00125,2025-01-05,infusion,iv,50,,,ketamine only", "session_type", "infusion", "ketamine, psychotherapy"),
    ("00125,2025-01-05,ketamine,nasal,50,,,ketamine only", "route", "nasal", "iv, im, sublingual"),
    ("00125,2025-01-05,ketamine,iv,5000,,,ketamine only", "dose_mg", "5000", "at most 1000"),
    ("00125,2025-01-05,ketamine,iv,50,28,,ketamine only", "phq9", "28", "0–27"),
    ("00125,2025-01-05,ketamine,iv,50,12.5,,ketamine only", "phq9", "12.5", "whole number"),
    ("00125,2027-01-05,ketamine,iv,50,,,ketamine only", "session_date", "2027-01-05", "after the upload date"),
    ("00125,05/01/2025,ketamine,iv,50,,,ketamine only", "session_date", "05/01/2025", "day-first"),
    (",2025-01-05,ketamine,iv,50,,,ketamine only", "patient_id", "", "required"),
    ("00123,2025-01-03,ketamine,iv,50,,nausea;dizziness,ketamine + therapy", "patient_id", "00123", "duplicate of line 3"),
    ("00124,2025-01-06,ketamine,im,60,,,ketamine + therapy", "program", "ketamine + therapy", "differs"),
])
def test_bad_session_row_is_quarantined_with_its_line_column_value_and_reason(row, column, value, reason_part):
    data = _load(sessions=[row])
    issue = _only_issue(data, "sessions.csv")
    assert (issue["line"], issue["column"], issue["value"]) == (5, column, value)
    assert reason_part in issue["reason"]
    assert data.files["sessions"].quarantined == 1
    _balanced(data)


@pytest.mark.parametrize("row, column, reason_part", [
    ("00999,2025-02-03,30,30,0,no,,,active", "patient_id", "no ketamine session"),
    ("00123,2025-03-03,30,30,0,yes,2025-03-10,,active", "relapse_date", "after this assessment"),
    ("00123,2025-03-03,30,30,0,yes,2024-12-10,,active", "relapse_date", "before the patient's first ketamine"),
    ("00123,2025-03-03,30,31,0,no,,,active", "days_abstinent", "more than the days"),
    ("00123,2025-03-03,30,20,11,yes,,,active", "heavy_days", "window_days minus days_abstinent"),
    ("00123,2025-03-03,30,30,0,perhaps,,,active", "any_use", "yes/no"),
    ("00123,2025-03-03,30,30,0,no,,maybe,active", "urine_tox", "positive, negative"),
    ("00123,2025-03-03,30,30,0,no,,,dropped", "status", "lost_to_follow_up"),
    ("00123,2025-03-03,400,30,0,no,,,active", "window_days", "1–365"),
    ("00123,2025-02-03,30,30,0,no,,negative,active", "assessment_date", "same day"),
])
def test_bad_followup_row_is_quarantined_with_its_line_column_and_reason(row, column, reason_part):
    data = _load(followups=[row])
    issue = _only_issue(data, "followups.csv")
    assert issue["line"] == 4 and issue["column"] == column
    assert reason_part in issue["reason"]
    _balanced(data)


def test_an_assessment_long_before_the_first_ketamine_session_is_kept_as_a_pre_treatment_score():
    from analytics.outcomes.cohort import build_cohort

    # 00123's first ketamine session is 2025-01-03: 2024-12-01 is 33 days before (outside the 30-day baseline
    # window), 2024-12-20 is 14 days before; contract v2 keeps both as pre-treatment assessments, never errors
    header = F_HEADER + ",phq9"
    rows = [r + "," for r in F_GOOD] + ["00123,2024-12-01,30,10,0,yes,,,active,22",
                                        "00123,2024-12-20,30,30,0,no,,,active,"]
    data = load_exports(_csv(S_HEADER, S_GOOD), _csv(header, rows), upload_date=UPLOAD)
    assert data.issues.empty and data.files["followups"].accepted == 4
    note = next(n for n in data.notes if "pre-treatment assessments" in n)
    assert "2 assessment(s)" in note and "1 with a PHQ-9 or GAD-7 score, 1 more than 30 days before it" in note
    cohort = build_cohort(data)
    assert len(cohort.pretreatment) == 2 and not cohort.pretreatment["use_any"].any()
    patient = cohort.patients.set_index("patient_id").loc["00123"]
    assert not patient["relapsed"]  # the 'yes' of 2024-12-01 is use before treatment
    assert patient["baseline_phq9"] == 20  # the intake score of 2025-01-01, not the older pre-treatment 22


def test_followups_of_a_patient_whose_ketamine_rows_were_set_aside_say_so():
    data = _load(sessions=["00130,2025-01-05,ketamine,,50,,,ketamine only"],
                 followups=["00130,2025-02-03,30,30,0,no,,,active"])
    issue = _only_issue(data, "followups.csv")
    assert "set aside" in issue["reason"]


def test_patients_file_rules_duplicate_and_patient_without_sessions():
    patients = _csv("patient_id,primary_substance,sex,age",
                    ["00123,alcohol,female,40", "00124,cocaine,male,35", "00124,cocaine,male,35",
                     "00777,alcohol,male,50", "00123x,heroin,male,17"])
    data = load_exports(_csv(S_HEADER, S_GOOD), _csv(F_HEADER, F_GOOD), patients, upload_date=UPLOAD)
    issues = data.issues[data.issues["file"] == "patients.csv"]
    by_line = issues.groupby("line")["column"].apply(set).to_dict()
    assert by_line[4] == {"patient_id"}  # duplicate
    assert by_line[5] == {"patient_id"}  # no sessions
    assert by_line[6] >= {"primary_substance", "age", "patient_id"}
    assert data.files["patients"].accepted == 2
    _balanced(data)


def test_without_patients_csv_or_patient_columns_the_patients_are_those_of_the_sessions_in_sorted_order():
    """One row per patient of the sessions, in the order of Python's sorted() (code points), also for ids with
    accents and capitals (the table is sorted by Arrow, byte by byte: the same order for UTF-8 text)."""
    ids = ["b7", "Zoë", "00123", "Émile", "Zoe", "a10", "a9", "zoe"]
    rows = [f"{pid},2025-01-{n + 1:02d},ketamine,iv,50" for n, pid in enumerate(ids + ["a9"])]
    data = load_exports(_csv("patient_id,session_date,session_type,route,dose_mg", rows), _csv(F_HEADER, []),
                        upload_date=UPLOAD)
    assert data.patients["patient_id"].tolist() == sorted(set(ids))
    assert data.patients.drop(columns="patient_id").isna().all().all()


def test_dayfirst_and_monthfirst_dates_are_read_only_when_asked():
    s = _csv("patient_id,session_date,session_type,route", ["1,05/01/2025,ketamine,iv", "1,2025-01-20,ketamine,iv"])
    f = _csv("patient_id,assessment_date", ["1,04/02/2025"])
    day = load_exports(s, f, dates="dayfirst", upload_date=UPLOAD)
    assert day.issues.empty
    assert day.sessions["session_date"].min() == pd.Timestamp("2025-01-05")
    month = load_exports(s, f, dates="monthfirst", upload_date=UPLOAD)
    assert month.sessions["session_date"].min() == pd.Timestamp("2025-01-20")  # 05/01 → May 1: after the rest
    iso = load_exports(s, f, upload_date=UPLOAD)
    assert set(iso.issues["column"]) >= {"session_date"}


def test_bom_semicolons_cp1252_and_case_insensitive_headers_are_read():
    text = " Patient_ID ;Session Date;SESSION_TYPE;Route;Clinician\n007;2025-01-05;Ketamine; IV ;Dr Müller\n"
    for data in (b"\xef\xbb\xbf" + text.encode("utf-8"), text.encode("cp1252"), text.replace(";", "\t").encode()):
        raw = read_export(data, kind="sessions")
        assert raw.rows == 1
        row = raw.frame.iloc[0]
        assert row["patient_id"] == "007" and row["clinician"] == "Dr Müller"
    exports = load_exports(text.encode("cp1252"), b"patient_id,assessment_date\n007,2025-02-01\n", upload_date=UPLOAD)
    assert exports.sessions.iloc[0]["route"] == "iv" and exports.issues.empty


def test_identifier_columns_are_dropped_and_reported_but_extra_columns_kept():
    s = _csv("patient_id,First Name,Email,Phone Number,DOB,MRN,SSN,Home Address,session_date,session_type,route,note,"
             "referral", ["1,Ann,a@b.org,555,1970-01-01,M1,123,1 Road,2025-01-05,ketamine,iv,fine,self"])
    raw = read_export(s, kind="sessions")
    assert set(raw.dropped_columns) == {"First Name", "Email", "Phone Number", "DOB", "MRN", "SSN", "Home Address",
                                        "note"}  # free text holds names too (issue #20)
    assert raw.extra_columns == ("referral",)
    assert not any(v in raw.frame.to_numpy().ravel().tolist() for v in ("Ann", "a@b.org", "555"))


def test_missing_tokens_are_missing_values():
    s = _csv("patient_id,session_date,session_type,route,phq9", ["1,2025-01-05,ketamine,iv,NA",
                                                                 "1,2025-01-06,ketamine,iv,null",
                                                                 "1,2025-01-07,ketamine,iv,-"])
    data = load_exports(s, b"patient_id,assessment_date\n1,2025-02-01\n", upload_date=UPLOAD)
    assert data.issues.empty and data.sessions["phq9"].isna().all()


@pytest.mark.parametrize("values, edged", [
    (["North side", "a b", None, "x"], False),  # white space inside values only
    (["ok", None, " lead"], True), (["trail ", "ok"], True), (["ok", "tab\t"], True),
    (["Zoë", "ok"], True),  # a non-ASCII byte at an end counts (conservative)
    (["Émile"], True), (["naïve", "ok"], False),  # inside a value only: no end is touched
    ([None, None], False), (["", "x"], False),
])
def test_edge_space_finds_a_value_that_starts_or_ends_with_white_space_in_any_chunk(values, edged):
    """The reader cleans a text column only when some value may start or end with white space (or a non-ASCII
    byte); a column whose text holds no such byte at all is passed over in one contiguous pass."""
    import pyarrow as pa

    from schemas.reader import _edge_space

    arr = pa.array(values, type=pa.large_string())
    assert _edge_space(pa.chunked_array([arr])) is edged
    assert _edge_space(pa.chunked_array([pa.array(["clean"], type=pa.large_string()), arr])) is edged
    # a sliced chunk: its values start past the buffer's start, and the bytes before them are not looked at
    padded = pa.array([" before ", *values], type=pa.large_string()).slice(1)
    assert _edge_space(pa.chunked_array([padded])) is edged


def test_missing_tokens_in_any_spelling_quoted_or_padded_are_missing_on_both_read_paths():
    """Arrow's parser nulls the tokens of a file whose values have no white space at either end; a column with
    padded values is trimmed and cleaned afterwards; a multi-line record takes the csv-module path. Same result."""
    rows = ["1,2025-01-05,ketamine,iv,Na,x", '1,2025-01-06,ketamine,iv,"NULL",x', "1,2025-01-07,ketamine,iv,n/A,x",
            '1,2025-01-08,ketamine,iv,"None",x', "1,2025-01-09,ketamine,iv,,x", "1,2025-01-10,ketamine,iv,nan,x"]
    header = "patient_id,session_date,session_type,route,phq9,NA"
    padded = [r.replace(",Na,", ", NA ,").replace('"NULL"', '" null "') for r in rows]
    multi = rows + ['1,2025-01-11,ketamine,iv,-,"two\nlines"']
    for lines in (rows, padded, multi):
        raw = read_export(_csv(header, lines), kind="sessions")
        assert raw.frame["phq9"].isna().all() and raw.frame["session_type"].eq("ketamine").all()
        assert raw.extra_columns == ("NA",)  # a header cell that spells a token is still the header as written
        assert raw.frame["extra:NA"].iloc[0] == "x"
    assert read_export(_csv(header, padded), kind="sessions").frame["route"].eq("iv").all()


@pytest.mark.parametrize("content, phrase", [
    (b"", "empty"),
    (b"   \n\n", "empty"),
    (b"patient_id,session_date\n1,2025-01-01\n", "no 'session_type' column"),
    (b"PK\x03\x04rest", "compressed"),
    (b"\x00\x01\x02binary", "binary"),
    (b"a" * 200_001 + b"\n1\n", "characters"),
    ((",".join(f"c{i}" for i in range(1000)) + "\n").encode(), "columns"),
])
def test_unusable_files_raise_one_plain_sentence(content, phrase):
    with pytest.raises(UnusableExport) as err:
        read_export(content, kind="sessions", name="sessions.csv")
    assert phrase in str(err.value) and "sessions.csv" in str(err.value)


def test_header_only_file_gives_zero_rows_not_an_error():
    data = load_exports(_csv(S_HEADER, []), _csv(F_HEADER, []), upload_date=UPLOAD)
    assert data.files["sessions"].rows == 0 and data.files["followups"].rows == 0


def test_ragged_and_multiline_records_keep_editor_line_numbers():
    s = (b'patient_id,session_date,session_type,route,clinician\n'
         b'1,2025-01-05,ketamine,iv,"Dr A\nsecond line"\n'
         b'\n'
         b'1,2025-01-06,ketamine\n'
         b'1,2025-01-07,ketamine,iv,x,extra\n'
         b'1,2025-01-08,ketamine,iv,B\n')
    raw = read_export(s, kind="sessions")
    assert raw.rows == 4
    assert raw.frame["line"].tolist() == [2, 7]
    assert [i["line"] for i in raw.issues] == [5, 6]
    data = load_exports(s, b"patient_id,assessment_date\n1,2025-02-01\n", upload_date=UPLOAD)
    assert data.files["sessions"].accepted == 2 and data.files["sessions"].quarantined == 2


def test_preset_maps_other_export_layout_and_values():
    s = _csv("Patient Number,Encounter Date,Visit Type,Route of Administration,PHQ-9 Total Score,Patient Name",
             ["00042,2025-01-05,Ketamine Infusion,Intravenous,18,Jane Doe",
              "00042,2025-01-06,Therapy,,,Jane Doe"])
    f = _csv("Patient Number,Assessment Date,Days Abstinent,Any Use Since Last Visit,Urine Drug Screen,Episode Status",
             ["00042,2025-02-05,30,No,Not Detected,In Treatment"])
    data = load_exports(s, f, preset="ehr-encounters", upload_date=UPLOAD)
    assert data.issues.empty, data.issues.to_string()
    assert data.sessions["session_type"].tolist() == ["ketamine", "psychotherapy"]
    assert data.sessions["route"].iloc[0] == "iv"
    assert data.followups.iloc[0]["urine_tox"] == "negative" and data.followups.iloc[0]["status"] == "active"


@pytest.mark.parametrize("content, common", [
    ("patient_id,session_date,session_type,route\n007,2025-01-05,ketamine,iv\n", True),
    ("\ufeffpatient_id;session_date;session_type;route\n007;2025-01-05;Ketamine; IV \n\n", True),  # BOM, padded
    ("patient_id,session_date,session_type,route\r\n007,2025-01-05,ketamine,iv\r\n", False),  # CRLF
    ("patient_id,session_date,session_type,route\n007,2025-01-05,ketamine,iv\n\n008,2025-01-06,ketamine,iv\n",
     False),  # a blank line inside: line numbers need the general path
    ('patient_id,session_date,session_type,route,note\n007,2025-01-05,ketamine,iv,"two\nlines"\n', False),
    ("patient_id,session_date,session_type,route,clinician\n007,2025-01-05,ketamine,iv,Dr M\xfcller\n", False),
])
def test_the_common_case_reads_exactly_as_the_general_path(content, common, monkeypatch):
    """UTF-8 files with line feeds only skip Python's decoding and line scan; everything else takes the general
    path, and both give the same rows, lines and notes."""
    from schemas import reader

    data = content.encode("cp1252" if "\xfc" in content else "utf-8")
    assert (reader._common_case(data) is not None) == common
    fast = read_export(data, kind="sessions")
    monkeypatch.setattr(reader, "_common_case", lambda _data: None)
    general = read_export(data, kind="sessions")
    pd.testing.assert_frame_equal(fast.frame, general.frame)
    assert (fast.rows, fast.issues, fast.notes) == (general.rows, general.issues, general.notes)


def test_a_long_line_is_refused_by_the_general_path_even_when_the_common_case_could_parse_it():
    from schemas import reader

    data = b"patient_id,session_date,session_type,route\n" + b"1,2025-01-05,ketamine," + b"x" * 150_000 + b"\n"
    assert reader._common_case(data) is None
    with pytest.raises(UnusableExport, match="characters"):
        read_export(data, kind="sessions")


def test_columns_converted_in_threads_give_the_same_rows_and_issues(monkeypatch):
    """Large files convert their columns in threads; forcing threads on a small messy file changes nothing."""
    from schemas import arrow

    sessions = _csv(S_HEADER, S_GOOD + ["00123,2025-13-01,ketamine,iv,x,21.5,nausea;itch,ketamine only",
                                        "00124,2025-01-09,ketamine,,35,7,,ketamine only"])
    followups = _csv(F_HEADER, F_GOOD + ["00123,2025-02-30,30,31,0,maybe,,negative,active"])
    serial = load_exports(sessions, followups, upload_date=UPLOAD)
    monkeypatch.setattr(arrow, "THREADS_FROM_ROWS", 0)
    threaded = load_exports(sessions, followups, upload_date=UPLOAD)
    assert len(serial.issues) >= 6
    pd.testing.assert_frame_equal(serial.issues, threaded.issues)
    pd.testing.assert_frame_equal(serial.sessions, threaded.sessions)
    pd.testing.assert_frame_equal(serial.followups, threaded.followups)


def test_only_an_exact_repeat_of_a_session_is_a_duplicate():
    """Same patient and day: another session type, or the same type with another value, is kept; only the row
    equal on every column is set aside, naming the first copy's line."""
    data = _load(["00124,2025-01-04,integration,,,,,ketamine only",       # line 5: other type, same day
                  "00124,2025-01-04,ketamine,im,70,18,,ketamine only",     # line 6: same type, another dose
                  "00124,2025-01-04,ketamine,im,60,18,,ketamine only"])    # line 7: repeat of line 4
    issue = _only_issue(data, "sessions.csv")
    assert (issue["line"], issue["column"]) == (7, "patient_id")
    assert issue["reason"] == "exact duplicate of line 4; remove the repeated row"
    assert data.files["sessions"].accepted == 5
    _balanced(data)
