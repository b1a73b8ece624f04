"""AppTest: a load is "Loaded" only when sessions were accepted, and every analysis page says a sentence (never a
traceback) for clinics that lack a baseline PHQ-9, a program column or an adverse_events column (issue #18)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from schemas.frames import ValidatedExports

ROOT = Path(__file__).resolve().parents[1]
ANALYSIS_PAGES = sorted(p.name for p in (ROOT / "pages").glob("*.py")
                        if not p.name.startswith("_") and p.name not in ("data.py", "history.py"))

F = b"patient_id,assessment_date,days_abstinent\n00123,2025-02-03,30\n00124,2025-02-04,30\n"


def _data_page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=240)
    at.run()
    at.switch_page("pages/data.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _upload(at: AppTest, sessions: bytes, followups: bytes = F) -> None:
    at.file_uploader(key="up_sessions").set_value(("sessions.csv", sessions, "text/csv"))
    at.file_uploader(key="up_followups").set_value(("followups.csv", followups, "text/csv"))
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]


def test_load_whose_every_session_row_is_set_aside_says_why_and_keeps_the_previous_data():
    at = _data_page()
    before = at.session_state["exports"]
    assert at.session_state["source"] == "sample"
    bad = (b"patient_id,session_date,session_type,route\n00123,2025-13-01,ketamine,iv\n"
           b"00124,2025-14-02,ketamine,iv\n00125,2025-01-04,ketamine,\n")
    _upload(at, bad)
    errors = " ".join(e.value for e in at.error).replace("\\", "")  # Markdown escapes removed
    assert "every one of the 3 session rows" in errors
    assert "session_date (2 rows)" in errors  # the most common problem, with its count
    assert not any("Loaded" in s.value for s in at.success)
    assert at.session_state["source"] == "sample"
    assert at.session_state["exports"] is before


def test_utc_note_and_patient_prefix_offer_then_removing_it_reloads():
    at = _data_page()
    s = b"patient_id,session_date,session_type,route\nPatient/00123,2025-01-01T23:30:00Z,ketamine,iv\n"
    f = b"patient_id,assessment_date,days_abstinent\n00123,2025-02-03,30\n"
    at.selectbox(key="up_timezone").set_value("America/New_York")
    _upload(at, s, f)
    assert any("Loaded" in x.value for x in at.success)
    captions = " ".join(c.value for c in at.caption).replace("\\", "")
    assert "converted to the clinic timezone America/New_York" in captions
    assert any("Patient/" in w.value for w in at.warning)
    assert len(at.session_state["exports"].followups) == 0
    at.button(key="apply_prefix").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.session_state["exports"].followups) == 1
    assert "prefix 'Patient/' was removed" in " ".join(at.session_state["exports"].notes)
    assert not any("would match once" in w.value for w in at.warning)


def _clinic(n: int = 36, seed: int = 18) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """A small clinic by hand: an assessment and four ketamine sessions each, follow-ups at 30, 90 and 180 days."""
    rng = np.random.default_rng(seed)
    sessions, followups, patients = [], [], []
    start = pd.Timestamp("2024-01-01")
    for i in range(n):
        pid = f"{i:05d}"
        day0 = start + pd.Timedelta(days=int(rng.integers(0, 200)))
        phq = int(rng.integers(10, 25))
        sessions.append({"patient_id": pid, "session_date": day0 - pd.Timedelta(days=3), "session_type": "assessment",
                         "phq9": phq, "site": ("Harbor", "Northside")[i % 2], "clinician": f"C0{i % 3}"})
        for k in range(4):
            sessions.append({"patient_id": pid, "session_date": day0 + pd.Timedelta(days=3 * k),
                             "session_type": "ketamine", "route": "iv", "dose_mg": 40.0, "weight_kg": 80.0,
                             "bp_systolic_max": int(rng.integers(120, 170)), "heart_rate_max": 90,
                             "adverse_events": ("nausea", "", "dissociation", "")[(i + k) % 4] or pd.NA,
                             "site": ("Harbor", "Northside")[i % 2], "clinician": f"C0{i % 3}"})
        relapse_at = int(rng.integers(20, 400))
        for w, days in ((30, 30), (60, 90), (90, 180)):
            used = relapse_at <= days
            followups.append({"patient_id": pid, "assessment_date": day0 + pd.Timedelta(days=days), "window_days": w,
                              "days_abstinent": w - 5 if used else w, "any_use": used,
                              "phq9": max(0, phq - days // 30 - int(rng.integers(0, 4))),
                              "status": "active" if days < 180 else "completed"})
        patients.append({"patient_id": pid, "primary_substance": ("alcohol", "opioids", "cocaine")[i % 3],
                         "program": ("ketamine only", "ketamine + therapy")[i % 2], "sex": ("female", "male")[i % 2],
                         "age": int(rng.integers(20, 65)), "site": ("Harbor", "Northside")[i % 2]})
    return pd.DataFrame(sessions), pd.DataFrame(followups), pd.DataFrame(patients)


def _without(column: str) -> ValidatedExports:
    s, f, p = _clinic()
    if column == "baseline phq9":
        s = s.drop(columns="phq9")
        f = f.drop(columns="phq9")  # no PHQ-9 anywhere, so no baseline either
    elif column == "program":
        p = p.drop(columns="program")
    else:
        s = s.drop(columns=column)
    return ValidatedExports.from_frames(s, f, p)


# where a page cannot show its result for such a clinic, the sentence it shows instead
SENTENCES = {("trajectories.py", "baseline phq9"): "No PHQ-9 scores to analyse",
             ("subgroups.py", "program"): "needs two programs to compare"}


@pytest.fixture(scope="module")
def session_without(module_app_env):
    """One app session per kind of clinic, shared by the pages' tests on a worker (a user moves between the pages of
    one session too): the load and the Overview once per clinic, not once per page."""
    made: dict[str, AppTest] = {}

    def get(missing: str) -> AppTest:
        if missing not in made:
            at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=240)
            at.session_state["exports"] = _without(missing)
            at.session_state["source"] = "upload"
            at.run()
            assert not at.exception, [e.value for e in at.exception]
            made[missing] = at
        return made[missing]

    return get


@pytest.mark.parametrize("page", ANALYSIS_PAGES)
@pytest.mark.parametrize("missing", ["baseline phq9", "program", "adverse_events"])
def test_analysis_page_says_a_sentence_not_a_traceback_for_a_clinic_without(page, missing, session_without):
    at = session_without(missing)
    at.switch_page(f"pages/{page}").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.header, f"{page} has no header"
    if (page, missing) in SENTENCES:
        said = " ".join(m.value for m in [*at.warning, *at.info]).replace("\\", "")
        assert SENTENCES[page, missing] in said
