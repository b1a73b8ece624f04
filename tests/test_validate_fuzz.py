"""Property: random corruptions of a valid export never crash and keep accepted + quarantined = rows read."""

from __future__ import annotations

from datetime import date

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics.errors import UnusableExport
from schemas.validate import load_exports

SESSIONS = """patient_id,session_date,session_type,route,dose_mg,phq9,gad7,craving,adverse_events,site
001,2025-01-01,assessment,,,20,12,7,,A
001,2025-01-03,ketamine,iv,50,,,,nausea;dizziness,A
001,2025-01-10,ketamine,iv,55,15,9,5,,A
002,2025-02-01,ketamine,im,60,18,11,8,dissociation,B
002,2025-02-08,psychotherapy,,,,,,,B
003,2025-03-01,ketamine,sublingual,200,9,5,3,,B
"""
FOLLOWUPS = """patient_id,assessment_date,window_days,days_abstinent,heavy_days,any_use,relapse_date,phq9,urine_tox,status
001,2025-02-03,30,30,0,no,,10,negative,active
001,2025-04-03,30,22,2,yes,2025-03-20,12,positive,active
002,2025-03-05,30,30,0,no,,7,not_done,active
003,2025-04-01,30,30,0,no,,4,negative,completed
"""
JUNK = st.sampled_from(["", "NA", "-1", "999999", "abc", "2025-13-45", "31/12/2025", "yes", "\"", ";", ",",
                        "ketamine", "IV", "1e308", "nan", "0", "=cmd()", "é", "\t", "2099-01-01", " ", "001"])


def _corrupt(text: str, edits: list[tuple[int, int, str]], drop_line: int | None) -> str:
    lines = text.strip("\n").split("\n")
    rows = [line.split(",") for line in lines]
    for r, c, value in edits:
        row = rows[1 + r % (len(rows) - 1)]
        row[c % len(row)] = value
    out = [",".join(r) for r in rows]
    if drop_line is not None and len(out) > 2:
        del out[1 + drop_line % (len(out) - 1)]
    return "\n".join(out) + "\n"


EDITS = st.lists(st.tuples(st.integers(0, 50), st.integers(0, 20), JUNK), max_size=8)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(s_edits=EDITS, f_edits=EDITS, drop=st.one_of(st.none(), st.integers(0, 10)),
       dates=st.sampled_from(["iso", "dayfirst", "monthfirst"]))
def test_corrupted_exports_never_crash_and_every_row_is_accounted_for(s_edits, f_edits, drop, dates):
    s = _corrupt(SESSIONS, s_edits, drop).encode()
    f = _corrupt(FOLLOWUPS, f_edits, None).encode()
    try:
        data = load_exports(s, f, dates=dates, upload_date=date(2026, 11, 25))
    except UnusableExport as err:
        assert str(err)  # a sentence, never a crash
        return
    for name, report in data.files.items():
        assert report.accepted + report.quarantined == report.rows, name
    assert len(data.sessions) == data.files["sessions"].accepted
    assert len(data.followups) == data.files["followups"].accepted
    quarantined_lines = data.issues.groupby("file")["line"].nunique().to_dict()
    assert quarantined_lines.get("sessions.csv", 0) == data.files["sessions"].quarantined
    assert quarantined_lines.get("followups.csv", 0) == data.files["followups"].quarantined


@settings(max_examples=80, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_give_a_sentence_or_a_balanced_report(blob):
    try:
        data = load_exports(blob, FOLLOWUPS.encode(), upload_date=date(2026, 11, 25))
    except UnusableExport as err:
        assert "sessions.csv" in str(err)
        return
    report = data.files["sessions"]
    assert report.accepted + report.quarantined == report.rows
