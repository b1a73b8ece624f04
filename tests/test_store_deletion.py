"""Deleted means gone (issue 20): after a deletion no byte of the deleted rows is left in any file of the data
folder, a rewrite killed midway leaves a complete database, and the data folder is private.

Real files, real DuckDB, real processes (tests/store_worker.py ``delete``); no mocks but one ``os.chmod``.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from store_worker import make_upload

from analytics.errors import OutcomesError
from analytics.store import StoreBusy, open_store

GONE = "ZQX-DELETE-ME-7731"
WORKER = str(Path(__file__).with_name("store_worker.py"))
REPO = Path(__file__).resolve().parents[1]


def _files_holding(folder: Path, needle: str) -> list[str]:
    """Every file under ``folder`` (recursively) whose raw bytes hold ``needle`` in ASCII or UTF-16-LE."""
    forms = (needle.encode("ascii"), needle.encode("utf-16-le"))
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and any(f in p.read_bytes() for f in forms))


def _upload_naming(tag: str, victim: str, *, seed: int = 0):
    """An upload whose patient ``<tag>-003`` is ``victim`` in sessions, follow-ups and patients, with set-aside
    rows about the victim (its ``patient_id`` issue and another on that line, one whose value quotes the id,
    a warning on one of the victim's accepted rows) and two about others."""
    files, accepted, report = make_upload(tag, seed=seed)
    for frame in accepted.values():
        frame["patient_id"] = frame["patient_id"].replace(f"{tag}-003", victim)
    files = {k: v.to_csv(index=False).encode() for k, v in accepted.items()}
    report["issues"] = pd.DataFrame({
        "file": ["sessions.csv", "sessions.csv", "followups.csv", "sessions.csv", "followups.csv", "sessions.csv"],
        "line": [90, 90, 91, 5, 92, 93],  # line 5: the victim's first accepted session
        "column": ["patient_id", "phq9", "assessment_date", "dose_mg", "patient_id", "phq9"],
        "value": [victim, "35", f"{victim} 2025-13-01", "250", f"{tag}-orphan", "41"],
        "reason": ["no ketamine session for this patient", "PHQ-9 must be 0–27", "not a date",
                   "dose looks high", "no ketamine session for this patient", "PHQ-9 must be 0–27"],
    })
    return files, accepted, report


def _save(store, upload):
    files, accepted, report = upload
    return store.save_upload(files, accepted=accepted, report=report)


def _assert_gone(folder: Path) -> None:
    assert _files_holding(folder, GONE) == [], "deleted patient id still in the raw bytes"


# ------------------------------------------------------------------------------------------------
# no byte left
# ------------------------------------------------------------------------------------------------

def test_a_deleted_upload_leaves_no_byte_of_its_patients_in_any_file(tmp_path):
    folder = tmp_path / "data"
    store = open_store(folder)
    files, accepted, report = _upload_naming("a", GONE)
    doomed = store.save_upload(files, accepted=accepted, report=report)
    kept = _save(store, _upload_naming("b", "b-victim", seed=1))
    assert _files_holding(folder, GONE)  # the scan sees the id while it is stored

    store.delete_upload(doomed.upload_id, "admin")

    _assert_gone(folder)
    assert [u.upload_id for u in store.list_uploads()] == [kept.upload_id]
    assert "b-victim" in set(store.load_upload(kept.upload_id)["sessions"]["patient_id"])


def test_a_deleted_patient_leaves_no_byte_in_any_file_and_the_others_stay_readable(tmp_path):
    folder = tmp_path / "data"
    store = open_store(folder)
    files, accepted, report = _upload_naming("a", GONE)
    rec = store.save_upload(files, accepted=accepted, report=report)
    other = _save(store, make_upload("b", seed=1))
    before = store.load_upload(rec.upload_id)
    assert _files_holding(folder, GONE)

    n = store.delete_patient(GONE, "admin")

    _assert_gone(folder)
    back = store.load_upload(rec.upload_id)
    for kind, frame in before.items():  # everyone else's rows, unchanged and in order
        want = frame[frame["patient_id"] != GONE].reset_index(drop=True)
        pd.testing.assert_frame_equal(back[kind], want)
    assert n == sum(int((f["patient_id"] == GONE).sum()) for f in before.values()) + 4  # + 4 set-aside rows
    assert store.get_upload(rec.upload_id).n_patients == 11
    assert len(store.load_upload(other.upload_id)["sessions"]) == 40
    # the store still takes writes and deletions afterwards, and nothing is left beside it
    again = _save(store, make_upload("c", seed=2))
    store.delete_patient("c-001", "admin")
    assert "c-001" not in set(store.load_upload(again.upload_id)["sessions"]["patient_id"])
    assert _files_holding(folder, "c-001") == []
    assert sorted(p.name for p in folder.iterdir() if "rewrite" in p.name) == []


def test_deleting_a_patient_deletes_the_set_aside_rows_that_name_them_or_share_their_line(tmp_path):
    store = open_store(tmp_path / "data")
    files, accepted, report = _upload_naming("a", GONE)
    report["issues"].loc[len(report["issues"])] = ["patients.csv", 95, "program", f"{GONE}0", "unknown program"]
    rec = store.save_upload(files, accepted=accepted, report=report)

    store.delete_patient(GONE, "admin")

    left = store.load_report(rec.upload_id)["issues"]
    # line 90 (named by its patient_id issue) and the value quoting the id are gone; another id that merely
    # starts with it, and the other patients' rows, stay
    assert left[["file", "line", "value"]].values.tolist() == [
        ["followups.csv", 92, "a-orphan"], ["sessions.csv", 93, "41"], ["patients.csv", 95, f"{GONE}0"]]
    assert store.get_upload(rec.upload_id).n_issues == 3


def test_the_audit_of_a_deletion_names_the_patient_by_reference_only(tmp_path):
    store = open_store(tmp_path / "data")
    _save(store, _upload_naming("a", GONE))
    store.delete_patient(GONE, "admin")
    detail = store.audit_log().iloc[0]["detail"]
    assert GONE not in detail and store.patient_ref(GONE) in detail


# ------------------------------------------------------------------------------------------------
# a rewrite killed midway
# ------------------------------------------------------------------------------------------------

def _wait_for(proc: subprocess.Popen, phase: str, timeout: float = 60) -> None:
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline().strip()
        if line:
            seen.append(line)
        if line == phase:
            return
        if proc.poll() is not None and not line:
            break
    proc.kill()
    raise AssertionError(f"worker never reached {phase!r}: {seen}; stderr: {proc.stderr.read()[-2000:]}")


@pytest.mark.parametrize("phase", ["deleted", "rewrite-copying", "rewrite-copied"])
def test_a_deletion_killed_mid_rewrite_leaves_a_complete_store_and_is_finished_at_next_open(tmp_path, phase):
    folder = tmp_path / "data"
    store = open_store(folder)
    files, accepted, report = _upload_naming("a", GONE)
    rec = store.save_upload(files, accepted=accepted, report=report)
    other = _save(store, make_upload("b", seed=1))
    before = store.load_upload(other.upload_id)

    proc = subprocess.Popen([sys.executable, WORKER, "delete", str(store.path), GONE, phase], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(proc, phase)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)

    # whatever the moment, the file on disk is a complete database: the old one or the new one
    con = duckdb.connect(str(store.path), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM uploads").fetchone()[0] == 2
    finally:
        con.close()
    reopened = open_store(folder)
    _assert_gone(folder)
    assert [p.name for p in folder.iterdir() if "rewrite" in p.name] == []
    assert GONE not in set(reopened.load_upload(rec.upload_id)["sessions"]["patient_id"])
    pd.testing.assert_frame_equal(reopened.load_upload(other.upload_id)["sessions"], before["sessions"])
    assert reopened.audit_log().iloc[0]["action"] == "delete patient"


def test_while_another_process_rewrites_the_store_this_one_waits_and_then_says_busy(tmp_path):
    folder = tmp_path / "data"
    store = open_store(folder)
    _save(store, _upload_naming("a", GONE))
    proc = subprocess.Popen([sys.executable, WORKER, "delete", str(store.path), GONE, "rewrite-copied"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(proc, "rewrite-copied")  # the old file is closed, the new one not yet in its place
        with pytest.raises(StoreBusy, match="busy"):
            dataclasses.replace(store, lock_timeout=0.3).list_uploads()
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert len(store.list_uploads()) == 1
    _assert_gone(folder)


def test_a_rewrite_that_fails_says_so_and_is_finished_on_the_next_use(tmp_path, monkeypatch):
    folder = tmp_path / "data"
    store = open_store(folder)
    rec = _save(store, _upload_naming("a", GONE))

    def full(src, dst):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(os, "replace", full)
        with pytest.raises(OutcomesError, match="deleted, but .* could not be rewritten .*free space"):
            store.delete_patient(GONE, "admin")
    assert GONE not in set(store.load_upload(rec.upload_id)["sessions"]["patient_id"])
    _assert_gone(folder)
    assert [p.name for p in folder.iterdir() if "rewrite" in p.name] == []


def test_a_half_written_rewrite_left_beside_the_store_is_ignored_and_removed(tmp_path):
    folder = tmp_path / "data"
    store = open_store(folder)
    rec = _save(store, make_upload("a"))
    leftovers = [store.path.with_name(store.path.name + suffix) for suffix in (".rewrite", ".rewrite.wal")]
    for p in leftovers:
        p.write_bytes(b"DUCK" + os.urandom(5000) + b"a-003")

    reopened = open_store(folder)

    assert len(reopened.load_upload(rec.upload_id)["sessions"]) == 40
    assert not any(p.exists() for p in leftovers)


# ------------------------------------------------------------------------------------------------
# a private folder
# ------------------------------------------------------------------------------------------------

@pytest.mark.skipif(sys.platform.startswith("win"), reason="POSIX permissions")
def test_an_existing_data_folder_open_to_others_is_made_private_on_open(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    store = open_store(folder)
    assert oct(os.stat(folder).st_mode & 0o777) == "0o700"
    _save(store, make_upload("a"))
    store.delete_patient("a-001", "admin")
    assert oct(os.stat(store.path).st_mode & 0o777) == "0o600"  # the rewritten file too


@pytest.mark.skipif(sys.platform.startswith("win"), reason="POSIX permissions")
def test_a_data_folder_that_cannot_be_made_private_is_refused_with_what_to_do(tmp_path, monkeypatch):
    folder = tmp_path / "data"
    folder.mkdir()
    os.chmod(folder, 0o775)

    def denied(path, mode, *args, **kwargs):
        raise PermissionError(1, "Operation not permitted", str(path))

    monkeypatch.setattr(os, "chmod", denied)
    with pytest.raises(OutcomesError, match=r"open to other users .*0o775.*chmod 700"):
        open_store(folder)
    assert not (folder / "store.duckdb").exists()
