"""The pandera models' column checks, evaluated column by column on the values, give exactly pandera's issues."""

from __future__ import annotations

import functools
from datetime import date

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics.errors import UnusableExport
from schemas import validate
from schemas.validate import load_exports

UPLOAD = date(2026, 11, 25)
SESSIONS = (
    "patient_id,session_date,session_type,route,dose_mg,weight_kg,phq9,gad7,craving,bp_systolic_max,"
    "bp_diastolic_max,heart_rate_max,adverse_events,site,status,sedation_score,event_severity,urinary_symptoms,"
    "primary_substance,sex,age\n"
    "001,2025-01-01,assessment,,,70,20,12,7,,,,,A,,,,,alcohol,female,40\n"
    "001,2025-01-03,ketamine,iv,50,70,,,,140,90,95,nausea,A,,4,mild,no,alcohol,female,40\n"
    "002,2025-01-04,ketamine,iv,0,20,28,22,11,300,10,250,,B,,6,awful,maybe,heroin,robot,12\n"   # every range/list
    ",2025-01-05,ketamine,im,60,80,5,5,5,120,80,80,,B,,3,,yes,opioids,male,30\n"              # no patient id
    "003,,ketamine,im,60,80,5,5,5,120,80,80,,B,,3,,yes,opioids,male,30\n"                      # no date
    "004,2025-01-06,massage,sublingual,60,80,5,5,5,120,80,80,,B,,3,,,opioids,male,30\n"        # type not on the list
    "005,2025-01-07,ketamine,teleport,1001,301,-1,-1,-1,59,29,29,,B,gone,-1,,,cocaine,female,101\n"
    "006,2025-01-08,ketamine,oral,abc,80,5.5,5,5,120,80,80,,B,,3,,,cocaine,other,30\n"         # unparseable
    "006,2025-01-09,psychotherapy,,,,,,,,,,,B,no_show,,,,cocaine,other,30\n"
)
FOLLOWUPS = (
    "patient_id,assessment_date,window_days,days_abstinent,heavy_days,any_use,relapse_date,phq9,urine_tox,status,"
    "observation_status,audit_c\n"
    "001,2025-02-03,30,30,0,no,,10,negative,active,,3\n"
    "001,2025-03-03,0,400,-2,yes,,30,purple,asleep,draft,13\n"                                # every range/list
    ",2025-03-05,30,30,0,no,,7,not_done,active,,2\n"
    "002,,30,30,0,no,,7,not_done,active,,2\n"
    "003,2025-04-01,366,30,0,no,,4,negative,completed,final,12\n"
)
PATIENTS = ("patient_id,primary_substance,program,sex,age,prior_treatments\n"
            "001,alcohol,ketamine + therapy,female,40,1\n"
            "002,glue,ketamine only,robot,17,-1\n"
            ",opioids,ketamine only,male,30,0\n"
            "006,cocaine,ketamine only,other,101,2\n")


def _no_pandera(*_args, **_kw):
    raise AssertionError("pandera was asked: a column check is not covered")


def _both(monkeypatch, sessions: bytes, followups: bytes, patients: bytes | None = None, **kw):
    with monkeypatch.context() as m:
        m.setattr(validate, "_pandera_failures", _no_pandera)  # the models' checks are all covered
        fast = load_exports(sessions, followups, patients, upload_date=UPLOAD, **kw)
    with monkeypatch.context() as m:
        m.setattr(validate, "_pandera_issues", functools.partial(validate._pandera_issues, engine="pandera"))
        reference = load_exports(sessions, followups, patients, upload_date=UPLOAD, **kw)
    return fast, reference


def _same(fast, reference) -> None:
    pd.testing.assert_frame_equal(fast.issues, reference.issues)
    pd.testing.assert_frame_equal(fast.sessions, reference.sessions)
    pd.testing.assert_frame_equal(fast.followups, reference.followups)
    assert fast.files == reference.files
    assert fast.notes == reference.notes


def test_every_range_list_and_required_check_gives_pandera_s_rows_and_sentences(monkeypatch):
    fast, reference = _both(monkeypatch, SESSIONS.encode(), FOLLOWUPS.encode(), PATIENTS.encode())
    _same(fast, reference)
    issues = fast.issues
    # the checks did fire: each file has range, list and required-column issues with the model's sentence
    on = lambda file, col, line: issues[(issues["file"] == file) & (issues["column"] == col)  # noqa: E731
                                        & (issues["line"] == line)]["reason"].tolist()
    assert any(r.startswith("not allowed: Ketamine dose in mg") for r in on("sessions.csv", "dose_mg", 4))
    assert any(r.startswith("not allowed: PHQ-9 total") for r in on("sessions.csv", "phq9", 4))
    assert any(r.startswith("not allowed: Worst adverse event") for r in on("sessions.csv", "event_severity", 4))
    assert any(r.startswith("is empty; this column is required.") for r in on("sessions.csv", "patient_id", 5))
    assert any(r.startswith("is empty; this column is required.") for r in on("sessions.csv", "session_date", 6))
    assert any(r.startswith("not allowed: ketamine, psychotherapy") for r in on("sessions.csv", "session_type", 7))
    assert any(r.startswith("not allowed: Days the use questions") for r in on("followups.csv", "window_days", 3))
    assert any(r.startswith("not allowed: active, completed") for r in on("followups.csv", "status", 3))
    assert any(r.startswith("not allowed: alcohol, opioids") for r in on("patients.csv", "primary_substance", 3))
    assert on("sessions.csv", "dose_mg", 9) and not any(r.startswith("not allowed") for r in
                                                        on("sessions.csv", "dose_mg", 9))  # 'abc': parse issue only
    assert len(issues) >= 40


def test_an_all_missing_optional_column_and_clean_files_match_too(monkeypatch):
    clean = SESSIONS.split("\n")[:3]
    fast, reference = _both(monkeypatch, ("\n".join(clean) + "\n").encode(),
                            ("\n".join(FOLLOWUPS.split("\n")[:2]) + "\n").encode())
    _same(fast, reference)
    assert fast.issues.empty


EDIT = st.tuples(st.integers(0, 8), st.integers(0, 20),
                 st.sampled_from(["", "NA", "-1", "0", "999", "abc", "ketamine", "IV", "yes", "1e308", "2025-13-45",
                                  "2099-01-01", "nausea", "entered_in_error", " ", "001", "amended", "5.5"]))


def _edit(text: str, edits: list[tuple[int, int, str]]) -> bytes:
    rows = [line.split(",") for line in text.strip("\n").split("\n")]
    for r, c, value in edits:
        row = rows[1 + r % (len(rows) - 1)]
        row[c % len(row)] = value
    return ("\n".join(",".join(r) for r in rows) + "\n").encode()


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(s_edits=st.lists(EDIT, max_size=10), f_edits=st.lists(EDIT, max_size=6))
def test_random_corruptions_give_pandera_s_issues(monkeypatch, s_edits, f_edits):
    try:
        fast, reference = _both(monkeypatch, _edit(SESSIONS, s_edits), _edit(FOLLOWUPS, f_edits))
    except UnusableExport:
        return
    _same(fast, reference)


EVENT_LISTS = [None, "", "nausea", "Nausea; Dizziness", "itchy", "itchy;itchy", "drowsy, headache", " ; ",
               "nausea|other", "weird;nausea;weird", "HEADACHE", "sedation;itchy", "x", "dizziness; itchy ; x"]


def test_event_lists_read_once_per_distinct_list_equal_the_row_by_row_reading():
    import numpy as np

    rng = np.random.default_rng(21)
    kinds = set()
    for trial in range(150):
        pool = (EVENT_LISTS, [None, "nausea", "sedation;dizziness"], [None, "", "nausea", "itchy"])[trial % 3]
        values = pd.Series([pool[i] for i in rng.integers(0, len(pool), int(rng.integers(0, 120)))], dtype="str")
        fast, reference = validate._parse_events(values), validate._parse_event_lists(values)
        pd.testing.assert_series_equal(fast[0], reference[0])
        assert (fast[0] is values) == (reference[0] is values)  # a column already as written stays the file's own
        assert np.array_equal(fast[1], reference[1])
        assert list(fast[2]) == list(reference[2])  # the unknown items in the order the file first names them
        assert all(np.array_equal(fast[2][k], reference[2][k]) for k in fast[2])  # one position per occurrence
        kinds.add("as written" if fast[0] is values else "rewritten")
        kinds.update("repeated item" for k in fast[2] if len(np.unique(fast[2][k])) < len(fast[2][k]))
    assert kinds == {"as written", "rewritten", "repeated item"}
    out, _, dropped = validate._parse_events(pd.Series(["Nausea; itchy", None, "itchy;itchy", "nausea"] * 3,
                                                       dtype="str"))
    assert out.tolist()[:4] == ["nausea;other", out.tolist()[1], "other;other", "nausea"] and pd.isna(out[1])
    assert dropped["itchy"].tolist() == [0, 2, 2, 4, 6, 6, 8, 10, 10]
