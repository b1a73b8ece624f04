"""AppTest: uploads land in a real store (tmp DuckDB file), the Upload history page lists, reopens, compares and
deletes them, and roles (faked ``st.user`` under an ``[auth]`` secrets section) limit what each user sees."""

from __future__ import annotations

from pathlib import Path

import pytest
from signed_in import AUTH, dashboard_as, upload_on_data_page
from streamlit.testing.v1 import AppTest

from analytics.store import DATA_DIR_ENV, open_store
from schemas.validate import load_exports

ROOT = Path(__file__).resolve().parents[1]
S = (b"patient_id,session_date,session_type,route,phq9\n"
     b"00123,2025-01-01,assessment,,20\n00123,2025-01-03,ketamine,iv,\n00124,2025-01-04,ketamine,im,18\n")
F = b"patient_id,assessment_date,days_abstinent\n00123,2025-02-03,30\n00124,2025-02-04,30\n"
S2 = S + b"00125,2025-03-01,ketamine,iv,15\n"
F2 = F + b"00125,2025-04-01,30\n"
ROLES = {"dana@clinic.org": "director", "sam@clinic.org": "analyst", "admin": ["ada@clinic.org"],
         "cleo@clinic.org": "clinician"}


@pytest.fixture
def store_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "data"))
    return tmp_path / "data"


def _app(email: str | None = None) -> AppTest:
    at = dashboard_as(email, ROLES)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _upload(at: AppTest, sessions: bytes = S, followups: bytes = F) -> None:
    upload_on_data_page(at, sessions, followups)


def _history(at: AppTest) -> AppTest:
    at.switch_page("pages/history.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _seed(store_dir: Path, *pairs: tuple[bytes, bytes]) -> list[str]:
    store = open_store(store_dir)
    ids = []
    for s, f in pairs:
        data = load_exports(s, f, None, preset="canonical", dates="iso")
        ids.append(store.save_validated({"sessions": s, "followups": f}, data, user="seed").upload_id)
    return ids


def _attention_headers(at: AppTest) -> list[str] | None:
    """Headers of the Needing attention page, or None when it is not in this user's navigation."""
    try:
        at.switch_page("pages/attention.py")
    except ValueError as err:
        assert "Could not find a navigation page" in str(err)
        return None
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return [h.value for h in at.header]


def _texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [h.value for h in at.subheader]
    return " ".join(str(p) for p in parts)


def test_accepted_upload_is_listed_with_user_counts_and_reopens_into_the_session(store_dir):
    at = _app()
    _upload(at)
    _history(at)
    listing = at.dataframe[0].value
    assert len(listing) == 1
    row = listing.iloc[0]
    assert row["user"] == "local"
    assert (row["sessions_rows"], row["followups_rows"], row["issues"]) == (3, 2, 0)
    assert row["patients"] == "<11"  # 2 patients: a small count, suppressed in the listing too
    at.button(key="hist_reopen").click().run()
    assert not at.exception
    assert at.session_state["source"] == "stored"
    assert at.session_state["exports"].n_patients == 2
    assert len(at.session_state["exports"].sessions) == 3


def test_uploading_the_same_files_again_stores_nothing_new_and_is_audited(store_dir):
    at = _app()
    _upload(at)
    _upload(at)
    store = open_store(store_dir)
    assert len(store.list_uploads()) == 1
    actions = list(store.audit_log()["action"])
    assert actions == ["re-upload", "upload"]
    _history(at)
    assert len(at.dataframe[0].value) == 1


def test_two_uploads_are_compared_with_small_cells_suppressed(store_dir):
    _seed(store_dir, (S, F), (S2, F2))
    at = _history(_app())
    compare = at.dataframe[1].value.set_index("metric")
    assert list(compare.columns) == ["a", "b", "change (b − a)"]
    assert compare.loc["patients", "a"] == "<11" and compare.loc["patients", "b"] == "<11"
    assert compare.loc["patients", "change (b − a)"] == "—"
    assert not any(v not in ("<11", "*", "0", "—") for v in compare[["a", "b"]].to_numpy().ravel())


def test_analyst_with_suppression_off_sees_the_comparison_numbers(store_dir):
    _seed(store_dir, (S, F), (S2, F2))
    at = _history(_app("sam@clinic.org"))
    at.toggle(key="w_suppress").set_value(False).run()
    assert any("Suppression is OFF" in w.value for w in at.sidebar.warning)
    compare = at.dataframe[1].value.set_index("metric")
    assert compare.loc["patients", "a"] == "2" and compare.loc["patients", "b"] == "3"
    assert compare.loc["sessions", "change (b − a)"] == "1"
    assert compare.loc["patients in both", "a"] == "2"


def test_deleting_an_upload_removes_it_and_writes_an_audit_entry(store_dir):
    at = _app()
    _upload(at)
    _history(at)
    assert at.button(key="hist_delete").disabled  # needs the confirmation first
    at.checkbox(key="hist_del_sure").check().run()
    at.button(key="hist_delete").click().run()
    assert not at.exception
    store = open_store(store_dir)
    assert store.list_uploads() == []
    log = store.audit_log()
    assert list(log["action"]) == ["delete upload", "upload"]
    assert log.iloc[0]["user"] == "local"
    assert any("No uploads stored yet" in i.value for i in at.info)


def test_deleting_a_patient_is_audited_by_reference_not_by_number(store_dir):
    _seed(store_dir, (S, F))
    at = _history(_app())
    at.text_input(key="hist_pid").input("00124").run()
    at.button(key="hist_delete_patient").click().run()
    assert not at.exception
    store = open_store(store_dir)
    (record,) = store.list_uploads()
    assert record.row_counts["sessions"] == 2 and record.n_patients == 1
    entry = store.audit_log().iloc[0]
    assert entry["action"] == "delete patient" and entry["user"] == "local"
    assert store.patient_ref("00124") in entry["detail"] and "00124" not in entry["detail"]
    audit_table = at.dataframe[-1].value
    assert audit_table.iloc[0]["action"] == "delete patient"


def test_local_mode_says_so_in_the_sidebar_and_gives_the_admin_tools(store_dir):
    _seed(store_dir, (S, F))
    at = _app()
    assert any("Local mode" in c.value for c in at.sidebar.caption)  # (AppTest drops it after switch_page)
    _history(at)
    assert "Delete (admin)" in _texts(at) and "Audit log (admin)" in _texts(at)


def test_signed_out_visitor_sees_only_the_login_button(store_dir):
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=240)
    at.secrets["auth"] = AUTH
    at.user = {"is_logged_in": False}
    at.run()
    assert not at.exception
    assert [b.label for b in at.button] == ["Log in"]
    assert "overview" not in " ".join(h.value for h in at.header).lower()


def test_director_sees_aggregates_only_and_cannot_lift_suppression(store_dir):
    _seed(store_dir, (S, F), (S2, F2))
    at = _app("dana@clinic.org")
    assert any("dana\\@clinic.org" in c.value and "director" in c.value for c in at.sidebar.caption)
    assert at.toggle(key="w_suppress").disabled and at.toggle(key="w_suppress").value is True
    _history(at)
    text = _texts(at)
    assert "Compare two uploads" in text
    assert "Delete (admin)" not in text and "Audit log (admin)" not in text
    headers = _attention_headers(at)
    assert headers is None or headers == ["Not available for your role"]
    _upload(at)
    assert not [e for e in at.expander if e.label == "Preview of accepted rows"]


@pytest.mark.parametrize(("email", "allowed"), [("cleo@clinic.org", True), ("sam@clinic.org", True),
                                                ("ada@clinic.org", True), ("someone@else.org", False)])
def test_needing_attention_page_is_for_clinicians_analysts_and_admins(store_dir, monkeypatch, email, allowed):
    at = _app(email)
    if allowed:
        assert "Patients needing attention" in _attention_headers(at)
        return
    assert _attention_headers(at) is None  # not in the navigation
    # and the page itself refuses, should it be reached another way
    monkeypatch.setattr("pages._auth.visible_pages", lambda pages: list(pages))
    at.run()
    assert _attention_headers(at) == ["Not available for your role"]


def test_analyst_may_lift_suppression_but_has_no_admin_tools(store_dir):
    _seed(store_dir, (S, F))
    at = _app("sam@clinic.org")
    assert not at.toggle(key="w_suppress").disabled
    _history(at)
    assert "Delete (admin)" not in _texts(at)
    assert open_store(store_dir).list_uploads()[0].user == "seed"


def test_upload_by_a_signed_in_user_is_stored_under_their_email(store_dir):
    at = _app("ada@clinic.org")
    _upload(at)
    (record,) = open_store(store_dir).list_uploads()
    assert record.user == "ada@clinic.org"
