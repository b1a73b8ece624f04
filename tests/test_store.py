"""The DuckDB store (analytics/store.py), on real files in tmp_path: no mocks.

Kill and concurrency tests run real writer processes (tests/store_worker.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from store_worker import make_upload

from analytics.errors import OutcomesError
from analytics.store import (
    DATA_DIR_ENV,
    UnknownUpload,
    compare_uploads,
    content_hash,
    data_dir,
    open_store,
    stored_columns,
)
from schemas.frames import ValidatedExports, coerce_canonical

WORKER = str(Path(__file__).with_name("store_worker.py"))
ROWS = 100_000  # sessions rows of the upload that is killed mid-write
REPO = Path(__file__).resolve().parents[1]


def _table_counts(db: Path) -> dict[str, int]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("uploads", "sessions", "followups", "patients", "issues", "audit")}
    finally:
        con.close()


def _assert_consistent(store) -> None:
    """Every stored row belongs to a listed upload and every upload's counts match its rows."""
    uploads = {u.upload_id: u for u in store.list_uploads()}
    con = duckdb.connect(str(store.path), read_only=True)
    try:
        for kind in ("sessions", "followups", "patients", "issues"):
            orphans = con.execute(f"SELECT count(*) FROM {kind} WHERE upload_id NOT IN "
                                  f"(SELECT upload_id FROM uploads)").fetchone()[0]
            assert orphans == 0, kind
        for uid, rec in uploads.items():
            for kind, n in rec.row_counts.items():
                assert con.execute(f"SELECT count(*) FROM {kind} WHERE upload_id = ?", [uid]).fetchone()[0] == n
            assert con.execute("SELECT count(*) FROM issues WHERE upload_id = ?", [uid]).fetchone()[0] == rec.n_issues
    finally:
        con.close()


def _expected(accepted: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    return {k: coerce_canonical(v, k)[[c for c in stored_columns(k) if c in coerce_canonical(v, k).columns]]
            for k, v in accepted.items()}


# ------------------------------------------------------------------------------------------------
# saving, reopening, idempotency
# ------------------------------------------------------------------------------------------------

def test_upload_round_trips_with_canonical_types_and_its_report(tmp_path):
    store = open_store(tmp_path)
    files, accepted, report = make_upload("a")
    for frame in accepted.values():  # text ids keep their leading zeros
        frame["patient_id"] = frame["patient_id"].replace("a-000", "00123")
    rec = store.save_upload(files, accepted=accepted, report=report, user="dr.a")
    assert rec.is_new and rec.user == "dr.a"
    assert rec.row_counts == {"sessions": 40, "followups": 12, "patients": 12}
    assert rec.n_patients == 12 and rec.n_issues == 2
    assert rec.content_hash == content_hash(files)
    assert {f.name: f.size_bytes for f in rec.files} == {k: len(v) for k, v in files.items()}
    assert rec.created_at.tzinfo is not None

    back = store.load_upload(rec.upload_id)
    for kind, frame in _expected(accepted).items():
        got = back[kind][frame.columns]
        pd.testing.assert_frame_equal(got, frame.reset_index(drop=True), check_dtype=True)
    assert back["sessions"].loc[0, "patient_id"] == "00123"
    assert back["followups"]["any_use"].dtype == "boolean" and back["followups"]["any_use"].isna().any()

    rep = store.load_report(rec.upload_id)
    assert rep["patients"] == 12 and rep["files"]["sessions"]["accepted"] == 40
    assert rep["issues"][["column", "value"]].values.tolist() == [["phq9", "35"], ["patient_id", "a-orphan"]]

    v = store.load_validated(rec.upload_id)
    assert isinstance(v, ValidatedExports) and v.n_patients == 12 and len(v.issues) == 2


def test_identical_files_are_stored_once_and_the_re_upload_is_audited(tmp_path):
    store = open_store(tmp_path)
    files, accepted, report = make_upload("a")
    first = store.save_upload(files, accepted=accepted, report=report, user="u1")
    before = _table_counts(store.path)
    again = store.save_upload(files, accepted=accepted, report=report, user="u2")
    after = _table_counts(store.path)
    assert (again.upload_id, again.is_new, first.is_new) == (first.upload_id, False, True)
    assert after == {**before, "audit": before["audit"] + 1}  # nothing new but the audit entry
    log = store.audit_log()
    assert log["action"].tolist() == ["re-upload", "upload"]
    assert log.loc[0, "user"] == "u2" and log.loc[0, "upload_id"] == first.upload_id
    # other reading options make it a different upload
    third = store.save_upload(files, accepted=accepted, report=report, options={"dates": "dayfirst"})
    assert third.is_new and third.upload_id != first.upload_id
    assert len(store.list_uploads()) == 2


def test_direct_identifiers_and_extra_columns_never_reach_the_file(tmp_path):
    store = open_store(tmp_path)
    files, accepted, report = make_upload("a")
    accepted["sessions"]["patient_name"] = "Zebulon Quixotesmith"
    accepted["patients"]["email"] = "zebulon@example.org"
    accepted["followups"]["free_text_note"] = "called his sister Philippa Vantablack"
    rec = store.save_upload(files, accepted=accepted, report=report)
    assert any("patient_name" in n for n in rec.notes) and any("email" in n for n in rec.notes)
    for kind, frame in store.load_upload(rec.upload_id).items():
        assert set(frame.columns) <= set(stored_columns(kind))
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    for secret in (b"Quixotesmith", b"zebulon@example", b"Vantablack"):
        assert secret not in raw
    con = duckdb.connect(str(store.path), read_only=True)
    try:
        cols = {r[0] for r in con.execute("SELECT column_name FROM information_schema.columns").fetchall()}
    finally:
        con.close()
    assert not {"patient_name", "email", "free_text_note"} & cols


def test_audit_text_never_contains_patient_ids(tmp_path):
    store = open_store(tmp_path)
    files, accepted, report = make_upload("a")
    rec = store.save_upload(files, accepted=accepted, report=report)
    store.delete_patient("a-003", "admin")
    store.log_export("dr.a", "meeting pack (HTML)", upload_id=rec.upload_id)
    store.delete_upload(rec.upload_id, "admin")
    text = " ".join(store.audit_log()["detail"])
    ids = set(accepted["sessions"]["patient_id"]) | {"a-orphan"}
    assert not any(pid in text for pid in ids)
    assert store.patient_ref("a-003") in text


# ------------------------------------------------------------------------------------------------
# deletion
# ------------------------------------------------------------------------------------------------

def test_deleting_an_upload_removes_it_and_everything_derived_and_is_audited(tmp_path):
    store = open_store(tmp_path)
    a = _save(store, "a")
    b = _save(store, "b")
    n = store.delete_upload(a.upload_id, "admin")
    assert n == 40 + 12 + 12 + 2
    assert [u.upload_id for u in store.list_uploads()] == [b.upload_id]
    with pytest.raises(UnknownUpload, match="no stored upload"):
        store.load_upload(a.upload_id)
    with pytest.raises(OutcomesError):
        store.delete_upload(a.upload_id, "admin")
    _assert_consistent(store)
    assert _table_counts(store.path)["sessions"] == 40
    entry = store.audit_log().iloc[0]
    assert (entry["action"], entry["user"], entry["upload_id"]) == ("delete upload", "admin", a.upload_id)
    # the same files may be uploaded again afterwards
    again = _save(store, "a")
    assert again.is_new


def _args(tag: str, **kw):
    files, accepted, report = make_upload(tag, **kw)
    return files, accepted, report


def _save(store, tag: str, **kw):
    files, accepted, report = make_upload(tag, **kw)
    return store.save_upload(files, accepted=accepted, report=report)


def test_deleting_a_patient_removes_their_rows_from_every_upload(tmp_path):
    store = open_store(tmp_path)
    f1, acc1, rep1 = make_upload("a", shared_ids=2)
    f2, acc2, rep2 = make_upload("b", shared_ids=2, seed=1)
    rep2["issues"].loc[1, "value"] = "shared-000"  # an issue naming the patient
    u1 = store.save_upload(f1, accepted=acc1, report=rep1)
    u2 = store.save_upload(f2, accepted=acc2, report=rep2)
    rows = sum(int((acc[k]["patient_id"] == "shared-000").sum()) for acc in (acc1, acc2) for k in acc)
    n = store.delete_patient("shared-000", "admin")
    assert n == rows + 1  # + the issue
    for u in (u1, u2):
        for frame in store.load_upload(u.upload_id).values():
            assert "shared-000" not in set(frame["patient_id"])
    recs = {u.upload_id: u for u in store.list_uploads()}
    assert recs[u1.upload_id].n_patients == 11 and recs[u2.upload_id].n_issues == 1
    assert recs[u1.upload_id].row_counts["patients"] == 11
    _assert_consistent(store)
    entry = store.audit_log().iloc[0]
    assert entry["action"] == "delete patient" and "shared-000" not in entry["detail"]
    assert store.patient_ref("shared-000") in entry["detail"] and "2 upload(s)" in entry["detail"]
    assert store.patient_ref("shared-000") != store.patient_ref("shared-001")
    # unknown ids delete nothing but the request is still recorded
    assert store.delete_patient("nobody", "admin") == 0
    assert store.audit_log().iloc[0]["action"] == "delete patient"


def test_two_uploads_can_be_reopened_and_compared(tmp_path):
    store = open_store(tmp_path)
    a = _save(store, "a", shared_ids=4)
    b = _save(store, "b", n_sessions=60, n_patients=15, shared_ids=4, seed=3)
    cmp = compare_uploads(store, a.upload_id, b.upload_id)
    t = cmp.table.set_index("metric")
    assert t.loc["patients"].tolist() == [12, 15, 3]
    assert t.loc["sessions"].tolist() == [40, 60, 20]
    assert t.loc["patients in both", "a"] == 4
    assert t.loc["patients only in this upload"].tolist() == [8, 11, 3]
    assert cmp.periods[a.upload_id][0] == pd.Timestamp("2025-01-06")


def test_store_is_written_to_the_data_dir_and_never_into_the_repository(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "kapdata"))
    assert data_dir() == tmp_path / "kapdata"
    store = open_store()
    assert store.path == (tmp_path / "kapdata" / "store.duckdb").resolve()
    assert oct(os.stat(tmp_path / "kapdata").st_mode & 0o777) == "0o700"
    assert oct(os.stat(store.path).st_mode & 0o777) == "0o600"
    monkeypatch.delenv(DATA_DIR_ENV)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    if sys.platform.startswith("linux"):
        assert data_dir() == tmp_path / "home" / ".local" / "share" / "kap-outcomes"
    monkeypatch.setenv(DATA_DIR_ENV, str(REPO / "data"))
    with pytest.raises(OutcomesError, match="inside the program's source folder"):
        open_store()
    with pytest.raises(OutcomesError, match=DATA_DIR_ENV):
        open_store(REPO / "tests" / "store.duckdb")
    assert not (REPO / "data").exists()


# ------------------------------------------------------------------------------------------------
# crashes and concurrency, with real processes
# ------------------------------------------------------------------------------------------------

def _start_big(db: Path, rows: int, mode: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, WORKER, "big", str(db), str(rows), mode], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(proc: subprocess.Popen, phase: str, timeout: float = 60) -> list[str]:
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline().strip()
        if line:
            seen.append(line)
        if line == phase:
            return seen
        if proc.poll() is not None and not line:
            break
    proc.kill()
    raise AssertionError(f"worker never reached {phase!r}: {seen}; stderr: {proc.stderr.read()[-2000:]}")


@pytest.mark.parametrize("mode, delay", [("pause", 0.0), ("run", 0.1)])
def test_a_writer_killed_mid_upload_leaves_the_previous_state_intact(tmp_path, mode, delay):
    store = open_store(tmp_path)
    files, accepted, report = make_upload("seed")
    seed = store.save_upload(files, accepted=accepted, report=report)
    before = _table_counts(store.path)

    proc = _start_big(store.path, ROWS, mode)
    seen = _wait_for(proc, "before-commit" if mode == "pause" else "begin")
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    seen += proc.stdout.read().split()
    assert proc.returncode == -signal.SIGKILL

    reopened = open_store(tmp_path)
    _assert_consistent(reopened)
    uploads = reopened.list_uploads()
    if mode == "pause":  # killed with every row written but not committed: nothing of it survives
        assert "saved" not in seen
    if "before-commit" not in seen or mode == "pause":
        assert [u.upload_id for u in uploads] == [seed.upload_id]
        assert _table_counts(store.path) == before
    elif len(uploads) == 2:  # the kill came after COMMIT: then the whole upload is there
        assert uploads[1].row_counts["sessions"] == ROWS
        assert _table_counts(store.path)["sessions"] == before["sessions"] + ROWS
    else:  # killed between the last insert and COMMIT
        assert _table_counts(store.path) == before
    back = reopened.load_upload(seed.upload_id)
    for kind, frame in _expected(accepted).items():
        pd.testing.assert_frame_equal(back[kind][frame.columns], frame.reset_index(drop=True))
    # and the store still takes writes
    assert _save(reopened, "after").is_new


def test_two_writer_processes_at_once_lose_nothing(tmp_path):
    store = open_store(tmp_path)
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, WORKER, "many", str(store.path), tag, "6", str(go)], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for tag in ("p", "q")]
    time.sleep(0.5)
    go.touch()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    uploads = store.list_uploads()
    assert len(uploads) == 2 * 6 + 1
    assert sum(1 for r in results for _uid, new in r[:-1] if new) == 12
    shared = {r[-1][0] for r in results}
    assert len(shared) == 1 and sorted(r[-1][1] for r in results) == [False, True]  # one stored, one re-upload
    assert {u.user for u in uploads} == {"p", "q"}
    log = store.audit_log()
    assert (log["action"] == "upload").sum() == 13 and (log["action"] == "re-upload").sum() == 1
    _assert_consistent(store)


def test_threads_of_one_process_writing_at_once_lose_nothing(tmp_path):
    store = open_store(tmp_path)
    errors: list[Exception] = []
    args = [_args(f"t{i}", seed=i) for i in range(6)] + [_args("same")] * 2

    def save(a):
        try:
            store.save_upload(a[0], accepted=a[1], report=a[2])
        except Exception as err:  # noqa: BLE001  # pragma: no cover - any error fails the test below
            errors.append(err)

    threads = [threading.Thread(target=save, args=(a,)) for a in args]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.list_uploads()) == 7
    assert (store.audit_log()["action"] == "re-upload").sum() == 1
    _assert_consistent(store)


def test_a_locked_store_waits_then_says_busy(tmp_path):
    store = open_store(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True); time.sleep(60)"),
        str(store.path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        impatient = dataclasses.replace(store, lock_timeout=0.3)
        with pytest.raises(OutcomesError, match="busy"):
            impatient.list_uploads()
    finally:
        holder.kill()
        holder.wait()
    assert store.list_uploads() == []  # released with the process
