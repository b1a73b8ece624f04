"""AppTest: the Data page as a clinic user drives it (upload, report, issue list)."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
S = (b"patient_id,session_date,session_type,route,phq9,Email\n"
     b"00123,2025-01-01,assessment,,20,a@b.c\n00123,2025-01-03,ketamine,iv,,\n00124,2025-01-04,ketamine,,18,\n")
F = b"patient_id,assessment_date,days_abstinent\n00123,2025-02-03,30\n00124,2025-02-04,30\n"


def _app() -> AppTest:
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=240)
    at.run()
    at.switch_page("pages/data.py").run()
    assert not at.exception
    return at


def test_upload_shows_counts_issue_table_and_dropped_identifiers():
    at = _app()
    at.file_uploader(key="up_sessions").set_value(("sessions.csv", S, "text/csv"))
    at.file_uploader(key="up_followups").set_value(("followups.csv", F, "text/csv"))
    at.button[0].click().run()
    assert not at.exception
    assert at.session_state["source"] == "upload"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["sessions.csv rows read"] == "3"
    assert metrics["Patients with accepted sessions"] == "1"
    text = " ".join(str(m.value) for m in at.markdown) + " ".join(c.value for c in at.caption)
    assert "Email" in text  # dropped identifier reported
    issues = at.dataframe[1].value
    assert list(issues.columns) == ["file", "line", "column", "value", "reason"]
    assert set(issues["line"]) == {4, 3}  # the ketamine row without route, and the follow-up of its patient


def test_unusable_upload_shows_a_sentence_not_a_traceback():
    at = _app()
    at.file_uploader(key="up_sessions").set_value(("sessions.csv", b"", "text/csv"))
    at.file_uploader(key="up_followups").set_value(("followups.csv", F, "text/csv"))
    at.button[0].click().run()
    assert not at.exception
    assert any("sessions.csv is empty" in e.value for e in at.error)


def test_a_daily_use_log_loads_and_the_page_says_the_history_keeps_no_log():
    sessions = b"patient_id,session_date,session_type,route\nd1,2025-01-01,ketamine,iv\n"
    daily = (b"patient_id,date,substance,used,amount\nd1,2025-01-01,alcohol,no,0\nd1,2025-01-02,alcohol,no,0\n"
             b"d1,2025-01-03,alcohol,yes,6\n")
    at = _app()
    at.file_uploader(key="up_sessions").set_value(("sessions.csv", sessions, "text/csv"))
    at.file_uploader(key="up_daily").set_value(("daily_use.csv", daily, "text/csv"))
    at.button[0].click().run()
    assert not at.exception and at.session_state["source"] == "upload"
    assert len(at.session_state["exports"].daily_use) == 3
    assert any("without its daily use log" in w.value for w in at.warning)
