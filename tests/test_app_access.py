"""AppTest: privacy hardening (issue #20). Local mode serves this computer only, a signed-out session keeps no
uploads, a director neither adds to the shared store nor reopens others' uploads nor sees rows, and download
files do not outlive sign-in.

Sign-in is faked as in tests/signed_in.py (``[auth]`` secrets and ``AppTest.user``). Where a behaviour spans runs
(files uploaded to a session, download files), the test gives every run of its AppTest the same Streamlit file
managers, as one server process has, so what one run left behind is visible to the next.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from signed_in import dashboard_as, upload_on_data_page
from streamlit import config
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.runtime.media_file_storage import MediaFileStorageError
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.runtime.memory_uploaded_file_manager import MemoryUploadedFileManager
from streamlit.testing.v1 import AppTest

from analytics.privacy.access import serves_this_computer_only
from analytics.store import open_store
from schemas.validate import load_exports

ROOT = Path(__file__).resolve().parents[1]
SESSION = "test session id"  # AppTest's session id, the same in every run
S = (b"patient_id,session_date,session_type,route,phq9\n"
     b"00123,2025-01-01,assessment,,20\n00123,2025-01-03,ketamine,iv,\n00124,2025-01-04,ketamine,,18\n")
F = b"patient_id,assessment_date,days_abstinent\n00123,2025-02-03,30\n00124,2025-02-04,30\n"
ROLES = {"dana@clinic.org": "director", "cleo@clinic.org": "clinician", "ada@clinic.org": "admin"}


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "kap-data"  # tests/conftest.py points KAP_OUTCOMES_DATA_DIR here


@pytest.fixture
def server_address() -> Iterator[Any]:
    """Set ``server.address`` as ``--server.address`` would, for the test only."""
    before = config.get_option("server.address")

    def _set(address: str | None) -> None:
        config.set_option("server.address", address)

    yield _set
    config.set_option("server.address", before)


@pytest.fixture
def shared_uploads(monkeypatch: pytest.MonkeyPatch) -> MemoryUploadedFileManager:
    """One uploaded-file manager for every run (a server keeps a session's uploads until the session ends)."""
    manager = MemoryUploadedFileManager("/mock/upload")
    monkeypatch.setattr("streamlit.testing.v1.local_script_runner.MemoryUploadedFileManager", lambda _: manager)
    return manager


@pytest.fixture
def shared_media(monkeypatch: pytest.MonkeyPatch) -> MediaFileManager:
    """One media-file manager for every run: what the server's ``/media/…`` route serves from."""
    manager = MediaFileManager(MemoryMediaFileStorage("/mock/media"))
    monkeypatch.setattr("streamlit.testing.v1.app_test.MediaFileManager", lambda _: manager)
    return manager


def _run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _sign_out(at: AppTest) -> AppTest:
    """What the session's next run sees after "Log out" (st.logout empties st.user of the running session)."""
    at.user = {"is_logged_in": False}
    return _run(at)


def _served(media: MediaFileManager, url: str) -> bool:
    """Would ``GET url`` be answered? (the ``/media`` route looks the file up exactly so)."""
    return media.read_file(url.rsplit("/", 1)[-1]) is not None


def _download_buttons(at: AppTest) -> list[Any]:
    return [e.proto for e in at.get("download_button")]


def _texts(at: AppTest) -> str:
    parts = [*at.markdown, *at.caption, *at.error, *at.info, *at.warning, *at.subheader, *at.header]
    return " ".join(str(p.value) for p in parts)


def _seed(store_dir: Path, user: str) -> str:
    data = load_exports(S, F, None, preset="canonical", dates="iso")
    return open_store(store_dir).save_validated({"sessions": S, "followups": F}, data, user=user).upload_id


# ------------------------------------------------------------------ 1. local mode serves this computer only

@pytest.mark.parametrize(("address", "local"), [
    ("127.0.0.1", True), ("127.0.1.1", True), ("localhost", True), ("::1", True), ("[::1]", True),
    ("0.0.0.0", False), ("::", False), ("", False), (None, False), ("192.168.1.20", False),
    ("clinic.example.org", False), ("unix:///run/kap.sock", False)])
def test_only_loopback_addresses_count_as_this_computer_only(address, local):
    assert serves_this_computer_only(address) is local


def test_without_sign_in_a_network_address_gets_only_a_refusal_saying_how_to_configure_sign_in(server_address):
    server_address("0.0.0.0")
    at = _run(dashboard_as(None, ROLES))
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "refuses to serve on 0.0.0.0 without sign-in" in errors[0]
    assert "[auth]" in errors[0] and "secrets.toml" in errors[0]
    assert "exports" not in at.session_state  # no data was loaded, not even the sample
    assert not at.sidebar.caption and not at.file_uploader and not at.button
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        at.switch_page("pages/data.py")  # the app's pages are not in the navigation


def test_a_page_run_on_its_own_on_a_network_address_without_sign_in_is_refused(server_address):
    server_address("0.0.0.0")
    at = _run(AppTest.from_file(str(ROOT / "pages" / "data.py"), default_timeout=240))
    assert any("refuses to serve" in e.value for e in at.error)
    assert not at.file_uploader and "Data" not in [h.value for h in at.header]


def test_local_mode_sidebar_says_it_is_served_to_this_computer_only(server_address):
    server_address("127.0.0.1")
    at = _run(dashboard_as(None, ROLES))
    (caption,) = [c.value for c in at.sidebar.caption if "Local mode" in c.value]
    assert "served to this computer only (127.0.0.1)" in caption and "local, admin role" in caption
    assert not at.error


def test_with_sign_in_a_network_address_is_served_to_signed_in_users(server_address):
    server_address("0.0.0.0")
    at = _run(dashboard_as("ada@clinic.org", ROLES))
    assert not at.error
    assert any("Signed in as **ada\\@clinic.org** (admin)" in c.value for c in at.sidebar.caption)


def test_make_run_binds_this_computer_only_and_refuses_a_network_address_without_sign_in(tmp_path):
    shown = subprocess.run(["make", "-n", "run"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "--server.address '127.0.0.1'" in shown
    check = [sys.executable, "-c", "import sys; from pages._gate import check_serving_address as c; c(sys.argv[1])"]
    refused = subprocess.run([*check, "0.0.0.0"], check=False, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "refuses to serve on 0.0.0.0 without sign-in" in refused.stderr
    assert subprocess.run([*check, "127.0.0.1"], check=False, cwd=ROOT, capture_output=True, timeout=60).returncode == 0
    settings = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text(encoding="utf-8"))["server"]
    assert settings["address"] == "127.0.0.1"  # a bare `streamlit run dashboard.py` too


def _listening_on(port: int) -> set[str]:
    """The local addresses (hex, as /proc/net/tcp* writes them) of sockets listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads the listening sockets from Linux's /proc")
def test_a_plain_streamlit_run_of_the_dashboard_listens_on_this_computer_only(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (tmp_path / "secrets.toml").write_text("", encoding="utf-8")
    cmd = [sys.executable, "-m", "streamlit", "run", "dashboard.py", "--server.port", str(port),  # no address
           "--server.headless", "true", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
           "--secrets.files", str(tmp_path / "secrets.toml")]
    env = dict(os.environ, KAP_OUTCOMES_DATA_DIR=str(tmp_path / "data"))
    server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None and time.monotonic() < deadline, "streamlit did not start"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.2)
        assert _listening_on(port) == {"0100007F"}, "not on 127.0.0.1 only (0100007F is 127.0.0.1)"
    finally:
        server.terminate()
        server.wait(timeout=20)


# ------------------------------------------------------------------ 2. no uploads without sign-in; a size limit

def test_a_session_that_signs_out_loses_its_uploads_and_data_and_shows_no_uploader(store_dir, shared_uploads):
    at = _run(dashboard_as("cleo@clinic.org", ROLES))
    upload_on_data_page(at, S, F)
    assert shared_uploads.file_storage.get(SESSION), "the uploads did not reach the session's file manager"
    assert at.file_uploader
    _sign_out(at)
    assert [b.label for b in at.button] == ["Log in"] and not at.file_uploader
    assert not shared_uploads.file_storage.get(SESSION), "a signed-out session still holds its uploaded files"
    assert not any(k in at.session_state for k in ("exports", "source", "up_sessions", "up_followups"))


def test_the_upload_limit_is_200_mb_per_file_and_the_data_page_says_so():
    settings = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text(encoding="utf-8"))["server"]
    assert settings["maxUploadSize"] == 200
    at = _run(dashboard_as(None, ROLES))
    at.switch_page("pages/data.py").run()
    assert "up to 200 MB per file" in _texts(at)


# ------------------------------------------------------------------ 3. the director sees aggregates only

def test_a_directors_upload_stays_in_the_session_without_rows_mapping_or_store(store_dir):
    at = _run(dashboard_as("dana@clinic.org", ROLES))
    upload_on_data_page(at, S, F)
    assert open_store(store_dir).list_uploads() == [], "a director's upload was added to the shared store"
    assert "not added to the upload history" in _texts(at)
    assert not [e for e in at.expander if e.label.startswith("Map columns")]  # the mapping step shows rows
    assert not [e for e in at.expander if e.label == "Preview of accepted rows"]
    assert all("value" not in d.value.columns and "line" not in d.value.columns for d in at.dataframe)
    assert "problems" in _texts(at)  # the issues are there, as counts

    clinician = _run(dashboard_as("cleo@clinic.org", ROLES))
    upload_on_data_page(clinician, S, F)
    assert [u.user for u in open_store(store_dir).list_uploads()] == ["cleo@clinic.org"]


def test_a_director_cannot_reopen_others_uploads_only_their_own(store_dir):
    _seed(store_dir, "cleo@clinic.org")
    at = _run(dashboard_as("dana@clinic.org", ROLES))
    at.switch_page("pages/history.py").run()
    assert not at.exception
    assert len(at.dataframe[0].value) == 1  # the listing is still shown
    assert not [b for b in at.button if b.key == "hist_reopen"] and not [s for s in at.selectbox
                                                                         if s.key == "hist_open"]
    assert "only uploads you made yourself" in _texts(at)

    s2 = S + b"00125,2025-03-01,ketamine,iv,15\n"
    own = open_store(store_dir).save_validated({"sessions": s2, "followups": F},
                                               load_exports(s2, F, None, preset="canonical", dates="iso"),
                                               user="dana@clinic.org").upload_id
    at.run()
    assert len(at.dataframe[0].value) == 2
    options = at.selectbox(key="hist_open").options
    assert len(options) == 1 and options[0].endswith(own)
    at.button(key="hist_reopen").click().run()
    assert at.session_state["source"] == "stored" and at.session_state["hist_opened"] == own
    assert len(at.session_state["exports"].sessions) == 3  # the director's own upload (S has 2 accepted rows)


# ------------------------------------------------------------------ 4. downloads end with the signed-in session

def test_download_files_are_made_on_the_click_only_and_not_served_after_sign_out(store_dir, shared_media):
    _seed(store_dir, "seed")
    at = _run(dashboard_as("ada@clinic.org", ROLES))
    at.switch_page("pages/history.py").run()
    (audit,) = [b for b in _download_buttons(at) if "audit log" in b.label]
    assert audit.deferred_file_id and not audit.url, "the audit log is put on the server before anyone asks for it"
    url = shared_media.execute_deferred(audit.deferred_file_id)  # what the click does
    assert _served(shared_media, url) and b"upload" in shared_media.read_file(url.rsplit("/", 1)[-1]).content

    at.switch_page("pages/attention.py").run()  # the patient list (CSV): made on the click only too
    (listed,) = [b for b in _download_buttons(at) if "follow-up" in b.label]
    assert listed.deferred_file_id and not listed.url, "the patient list is put on the server before anyone asks"
    eager = [shared_media.execute_deferred(listed.deferred_file_id)]
    assert all(_served(shared_media, u) for u in eager)

    # Streamlit itself drops a session's references at the start of each run and collects unused files at the end
    # (a download file on the second pass that finds it unused; AppTest makes two passes per run). Switch the
    # start-of-run drop off, so what is checked is what the sign-out does by itself, within its own run.
    drop = shared_media.clear_session_refs
    shared_media.clear_session_refs = lambda session_id=None: None if session_id is None else drop(session_id)
    _sign_out(at)
    assert not _served(shared_media, url), "the audit log is still served after sign-out"
    assert not any(_served(shared_media, u) for u in eager), "a page's download is still served after sign-out"
    with pytest.raises(MediaFileStorageError):
        shared_media.execute_deferred(audit.deferred_file_id)  # the click cannot make it again either
