"""AppTest and note checks for the issue #20 follow-ups: text from the data is shown literally on the Data page, an
unusable mapping file stops the load, the upload history gives no small count away by difference or by relation,
and the survival comparison's size bound follows the small-cell rule."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from signed_in import dashboard_as
from streamlit.testing.v1 import AppTest
from test_survival import make_cohort, two_programs

from analytics.formatting import escape_markdown
from analytics.outcomes import survival as sv
from analytics.privacy.suppression import render_notes
from analytics.store import DATA_DIR_ENV, open_store
from schemas.validate import load_exports

ROOT = Path(__file__).resolve().parents[1]
HOSTILE = "**x**_[a](https://evil.example/p.png)"
S = (b"patient_id,session_date,session_type,route,phq9,site,Email,Note **x**\n"
     b"00123,2025-01-01,assessment,,20,=HYPERLINK(\"https://evil.example\"),a@b.c,\n"
     b"00123,2025-01-03,ketamine,iv,,=HYPERLINK(\"https://evil.example\"),,\n"
     b"00124,2025-01-04,ketamine,im,18,Harbor,,\n")
F = b"patient_id,assessment_date,days_abstinent\n00123,2025-02-03,30\n00124,2025-02-04,30\n"
ROLES = {"dana@clinic.org": "director", "admin": ["ada@clinic.org"]}


def _data_page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=240)
    at.run()
    at.switch_page("pages/data.py").run()
    assert not at.exception
    return at


def _submit(at: AppTest, sessions: tuple[str, bytes], followups: tuple[str, bytes]) -> AppTest:
    at.file_uploader(key="up_sessions").set_value((*sessions, "text/csv"))
    at.file_uploader(key="up_followups").set_value((*followups, "text/csv"))
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


# ---- Data page: text from the data is shown literally ---------------------------------------------------------

def test_a_hostile_file_name_in_an_error_sentence_is_shown_literally():
    at = _submit(_data_page(), (f"{HOSTILE}.csv", b""), ("followups.csv", F))
    (error,) = [e.value for e in at.error]
    assert escape_markdown(f"{HOSTILE}.csv is empty") in error
    assert HOSTILE not in error  # no link, image or bold made of the name


def test_hostile_column_names_and_site_names_on_the_data_page_are_shown_literally():
    at = _submit(_data_page(), ("sessions.csv", S), ("followups.csv", F))
    assert at.session_state["source"] == "upload"
    (dropped,) = [c.value for c in at.caption if c.value.startswith("Identifier columns dropped")]
    assert dropped == "Identifier columns dropped: " + escape_markdown("Email, Note **x**")
    sites = [v for d in at.dataframe if "site" in d.value.columns for v in d.value["site"].dropna()]
    assert sites and all(not str(v).startswith("=") for v in sites)  # the preview tables' CSV runs no formula
    assert any(str(v).startswith("'=HYPERLINK") for v in sites)


def test_an_unusable_mapping_file_stops_the_load_with_a_sentence():
    at = _data_page()
    at.file_uploader(key="up_mapping").set_value(("mapping.toml", b"[sessions\ncolumns = 1", "application/toml"))
    _submit(at, ("sessions.csv", S), ("followups.csv", F))
    assert at.session_state["source"] == "sample"  # nothing loaded with the preset instead
    (error,) = [e.value for e in at.error]
    assert "mapping.toml is not valid TOML" in error and "Nothing is loaded" in error
    assert not [s for s in at.success if s.value.startswith("Loaded")]


# ---- Upload history --------------------------------------------------------------------------------------------

@pytest.fixture
def store_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "data"))
    return tmp_path / "data"


def _exports(n_patients: int, *, set_aside: int = 0) -> tuple[bytes, bytes]:
    """``n_patients`` patients with a ketamine session and a follow-up; ``set_aside`` more sessions without a route."""
    s = ["patient_id,session_date,session_type,route,phq9"]
    s += [f"{i:05d},2025-01-03,ketamine,iv,15" for i in range(n_patients)]
    s += [f"{90000 + i:05d},2025-01-03,ketamine,,15" for i in range(set_aside)]
    f = ["patient_id,assessment_date,days_abstinent"] + [f"{i:05d},2025-02-03,30" for i in range(n_patients)]
    return ("\n".join(s) + "\n").encode(), ("\n".join(f) + "\n").encode()


def _seed(store_dir: Path, *uploads: tuple[bytes, bytes]) -> None:
    store = open_store(store_dir)
    for s, f in uploads:
        data = load_exports(s, f, None, preset="canonical", dates="iso")
        store.save_validated({"sessions": s, "followups": f}, data, user="seed")


def _listing(email: str | None) -> object:
    at = dashboard_as(email, ROLES)
    at.run()
    at.switch_page("pages/history.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at.dataframe[0].value


def test_the_history_listing_never_shows_two_patient_counts_that_differ_by_1_to_10(store_dir):
    _seed(store_dir, _exports(52), _exports(55), _exports(70), _exports(78))
    listing = _listing(None)
    assert len(listing) == 4
    for column in ("patients", "patients_rows"):
        shown = [int(v.replace(",", "")) for v in listing[column] if v not in ("<11", "*")]
        assert shown, column
        assert not [(a, b) for a, b in itertools.combinations(shown, 2) if 1 <= abs(a - b) <= 10], column
    assert "*" in set(listing["patients"])


def test_a_directors_history_listing_hides_the_stored_rows_the_data_page_hides(store_dir):
    # 15 sessions accepted, 5 set aside: "5 set aside" is hidden, so "15 accepted" (20 read) must be too
    _seed(store_dir, _exports(15, set_aside=5))
    listing = _listing("dana@clinic.org")
    assert listing["sessions_rows"].iloc[0] in ("<11", "*")


# ---- Survival: the size bound of a left-out group ----------------------------------------------------------------

def test_the_left_out_group_sentence_says_fewer_than_11_when_suppression_is_on():
    days, rel, prog = two_programs(20)
    prog[:3] = ["pilot"] * 3
    cmp = sv.compare_groups(make_cohort(days, rel, program=prog), by="program")
    (note,) = [n for n in render_notes(cmp.notes) if "pilot" in n]
    assert "fewer than 11 patients each" in note
    (raw,) = [n for n in render_notes(cmp.notes, enabled=False) if "pilot" in n]
    assert f"fewer than {sv.MIN_GROUP_PATIENTS} patients each" in raw
    assert np.all([("\u27e6" not in n) for n in render_notes(cmp.notes)])
