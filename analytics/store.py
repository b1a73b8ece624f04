"""The persistent store: accepted uploads, their quarantine reports and the audit log, in one DuckDB file.

Where
    ``$KAP_OUTCOMES_DATA_DIR/store.duckdb``; without the variable, the user's data folder
    (``~/.local/share/kap-outcomes`` on Linux, ``~/Library/Application Support/kap-outcomes`` on macOS,
    ``%LOCALAPPDATA%\\kap-outcomes`` on Windows). A folder inside the source repository is refused, so patient
    data cannot end up in a commit. The folder is created private to the user (0700), the file 0600; an
    existing folder open to other users is made private on open (or refused, saying what to do).

What is stored
    Per upload: an id, the SHA-256 of every file and of the whole set (the identity used for idempotency),
    time (UTC), user, reading options, accepted row counts, the quarantine report (``issues``: file, line,
    column, value, reason) and the accepted rows of each export, **canonical columns only** (schemas/columns.py,
    plus ``line``). Any other column handed in (extra columns, anything that looks like an identifier) is
    dropped before writing and named in the record's notes; the raw files are never stored.

Transactions and concurrency
    Every write is one transaction on a short-lived connection (BEGIN … COMMIT); a crash or ``kill -9``
    mid-write leaves the last committed state (DuckDB's write-ahead log). DuckDB lets one process at a time
    open a file for writing, so each call opens, works and closes; a call that finds the file locked by
    another process retries with exponential backoff and jitter for up to ``lock_timeout`` seconds (then
    :class:`StoreBusy`). Within one process (Streamlit sessions are threads) calls on the same file take turns
    on a lock; a write-write conflict is retried like a lock. Two sessions uploading at once therefore both
    land, one after the other.

Deletion: deleted means gone
    DuckDB does not overwrite the blocks that deleted rows leave free, so a ``DELETE`` alone would leave the
    rows' bytes in the file. :meth:`Store.delete_upload` and :meth:`Store.delete_patient` therefore delete in
    one transaction and then rewrite the whole database into a fresh file beside it (``store.duckdb.rewrite``,
    ``COPY FROM DATABASE``), which replaces the old one atomically (``os.replace``) once it is complete and on
    disk. Before the transaction a marker ``store.duckdb.rewrite-pending`` is written, and it is removed only
    after the replacement: a crash or ``kill -9`` at any moment leaves either the old or the new complete file,
    and the next call of any process that finds the marker redoes the rewrite (a half-written rewrite is
    deleted first). The rewrite needs free disk space about the size of the store and takes a few seconds
    for a large store.

Locking
    Besides DuckDB's own lock on the file, every call holds an exclusive lock on ``store.duckdb.lock`` (empty,
    never deleted) for as long as it works, so no process can open the old file while it is being replaced.

Audit
    ``audit`` rows: ``audit_id``, ``at`` (UTC), ``user``, ``action`` (``upload``, ``re-upload``,
    ``delete upload``, ``delete patient``, ``export``), ``upload_id``, ``detail``. Audit text never holds
    patient values: uploads are described by ids and counts; a deleted patient is recorded by a *reference*,
    ``HMAC-SHA256(store secret, patient_id)`` cut to 16 hex digits (:meth:`Store.patient_ref`). The secret is
    random per store and kept in the store, so the audit log alone (e.g. printed or exported) does not reveal
    the id, while an admin with the store can check whether a given patient was deleted. A plain hash would
    not do: clinic ids are short and a plain hash of them is reversed by trying them all.
    Nothing is logged with patient values either (logging names ids and counts only).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import random
import re
import secrets
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, is_dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import duckdb
import numpy as np
import pandas as pd

from analytics.errors import OutcomesError
from schemas.columns import COLUMNS, PATIENT_COLUMNS_ON_SESSIONS, PATIENTS
from schemas.frames import coerce_canonical

if TYPE_CHECKING:  # pragma: no cover
    from schemas.frames import ValidatedExports

log = logging.getLogger(__name__)

DATA_DIR_ENV = "KAP_OUTCOMES_DATA_DIR"
STORE_FILE = "store.duckdb"
APP_DIR = "kap-outcomes"
SCHEMA_VERSION = "1"
KINDS = ("sessions", "followups", "patients")
ISSUE_COLUMNS = ("file", "line", "column", "value", "reason")
_SQL_TYPES = {"text": "VARCHAR", "category": "VARCHAR", "list": "VARCHAR", "substances": "VARCHAR", "date": "DATE",
              "number": "DOUBLE", "integer": "DOUBLE", "boolean": "BOOLEAN"}

__all__ = [
    "DATA_DIR_ENV", "FileDigest", "Store", "StoreBusy", "UnknownUpload", "UploadComparison", "UploadRecord",
    "compare_periods", "compare_uploads", "content_hash", "data_dir", "open_store", "stored_columns",
]


class StoreBusy(OutcomesError):
    """The store stayed locked by another process for longer than the lock timeout."""


class UnknownUpload(OutcomesError):
    """No stored upload has the given id."""


# --------------------------------------------------------------------------------------------------
# where
# --------------------------------------------------------------------------------------------------

def _default_data_dir() -> Path:
    home = Path.home()
    if sys.platform.startswith("win"):
        base = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    return base / APP_DIR


def _repo_root() -> Path | None:
    root = Path(__file__).resolve().parents[1]
    return root if (root / ".git").exists() or (root / "pyproject.toml").exists() else None


def data_dir() -> Path:
    """The data folder: ``$KAP_OUTCOMES_DATA_DIR`` or the user's data folder (never the source repository).

    Raises
    ------
    OutcomesError
        When the folder is inside the source repository.
    """
    raw = os.environ.get(DATA_DIR_ENV, "").strip()
    path = Path(raw).expanduser() if raw else _default_data_dir()
    _refuse_repo(path)
    return path


def _refuse_repo(path: Path) -> None:
    root = _repo_root()
    if root is None:
        return
    resolved = path.expanduser().resolve()
    if resolved == root or root in resolved.parents:
        raise OutcomesError(
            f"The data folder {str(resolved)!r} is inside the program's source folder {str(root)!r}, where patient "
            f"data could be committed by mistake. Set {DATA_DIR_ENV} to a folder outside it.")


# --------------------------------------------------------------------------------------------------
# records
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FileDigest:
    """One uploaded file: its role (``sessions``…), SHA-256 of its bytes and size."""

    name: str
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class UploadRecord:
    """A stored upload.

    Attributes
    ----------
    upload_id:
        ``yyyymmdd-hhmmss-<8 hex>`` (UTC time of the first upload + start of the content hash).
    content_hash:
        SHA-256 over the files (role, bytes) and reading options: identical uploads share it.
    created_at:
        UTC, timezone-aware.
    user:
        Who uploaded it (the logged-in user or ``"local"``).
    files:
        One :class:`FileDigest` per file.
    options:
        Reading options that were part of the identity (preset, date order…).
    row_counts:
        Accepted rows stored per export (after any patient deletion).
    n_patients, n_issues:
        Distinct patients in the stored rows; rows of the quarantine report.
    is_new:
        False when :meth:`Store.save_upload` found the same content already stored and wrote nothing new.
    notes:
        E.g. columns that were not stored (names only).
    """

    upload_id: str
    content_hash: str
    created_at: datetime
    user: str
    files: tuple[FileDigest, ...]
    options: dict[str, str]
    row_counts: dict[str, int]
    n_patients: int
    n_issues: int
    is_new: bool = True
    notes: tuple[str, ...] = ()

    def summary(self) -> dict[str, object]:
        """One flat row for a table of uploads (Data page, CLI)."""
        return {"upload_id": self.upload_id, "created_at": self.created_at, "user": self.user,
                "files": ", ".join(f.name for f in self.files), "patients": self.n_patients,
                **{f"{k}_rows": v for k, v in self.row_counts.items()}, "issues": self.n_issues}


def stored_columns(kind: str) -> tuple[str, ...]:
    """The only columns of export ``kind`` that are ever written: ``line`` plus the canonical columns."""
    cols = ["line", *COLUMNS[kind]]
    if kind == "sessions":
        cols += [c for c in PATIENT_COLUMNS_ON_SESSIONS if c not in cols]
    return tuple(cols)


def _column_kind(kind: str, col: str) -> str:
    if col == "line":
        return "integer"
    return COLUMNS[kind].get(col) or PATIENTS[col]


def content_hash(files: Mapping[str, bytes], options: Mapping[str, object] | None = None) -> str:
    """SHA-256 identity of an upload: each file's role and bytes (order-free) plus the reading options."""
    h = hashlib.sha256(b"kap-outcomes upload v1\n")
    for name in sorted(files):
        h.update(f"{name}\0{hashlib.sha256(files[name]).hexdigest()}\n".encode())
    h.update(json.dumps({k: str(v) for k, v in (options or {}).items()}, sort_keys=True).encode())
    return h.hexdigest()


def _json_default(obj: object) -> object:
    if is_dataclass(obj) and not isinstance(obj, type):
        return asdict(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return None if math.isnan(obj) else float(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, (datetime, date, pd.Timestamp)):
        return obj.isoformat()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, pd.DataFrame):
        return obj.to_dict(orient="records")
    if obj is pd.NA or obj is pd.NaT:
        return None
    return str(obj)


def _finite(obj: object) -> object:
    """NaN and infinities become null (JSON has no NaN); containers are walked."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _dumps(obj: object) -> str:
    return json.dumps(_finite(json.loads(json.dumps(obj, default=_json_default, allow_nan=True))),
                      allow_nan=False, ensure_ascii=False)


def _issues_frame(issues: object) -> pd.DataFrame:
    if issues is None:
        frame = pd.DataFrame(columns=list(ISSUE_COLUMNS))
    elif isinstance(issues, pd.DataFrame):
        frame = issues.copy()
    else:
        frame = pd.DataFrame(list(issues))  # type: ignore[call-overload]
    for c in ISSUE_COLUMNS:
        if c not in frame.columns:
            frame[c] = pd.NA
    out = pd.DataFrame({
        "seq": np.arange(len(frame), dtype=np.int64),
        "file": frame["file"].astype("string"),
        "line": pd.to_numeric(frame["line"], errors="coerce").astype("Int64"),
        "column": frame["column"].astype("string"),
        "value": frame["value"].map(lambda v: None if v is None or (isinstance(v, float) and math.isnan(v))
                                    or v is pd.NA else str(v)).astype("string"),
        "reason": frame["reason"].astype("string"),
    })
    return out


def _prepare(kind: str, frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Canonical columns only, typed for the store; returns the frame and the names of dropped columns."""
    allowed = stored_columns(kind)
    dropped = [str(c) for c in frame.columns if c not in allowed]
    keep = frame[[c for c in frame.columns if c in allowed]].copy()
    typed = coerce_canonical(keep, kind)
    out = pd.DataFrame(index=typed.index)
    for col in allowed:
        if col not in typed.columns:
            if col == "line":
                continue
            values = pd.Series(pd.NA, index=typed.index)
        else:
            values = typed[col]
        ck = _column_kind(kind, col)
        if ck == "date":
            out[col] = pd.to_datetime(values, errors="coerce").astype("datetime64[ns]")
        elif ck in ("number", "integer"):
            out[col] = pd.to_numeric(values, errors="coerce").astype("float64")
        elif ck == "boolean":
            out[col] = values.astype("boolean")
        else:
            out[col] = values.astype("string")
    if "line" in out.columns:
        out["line"] = pd.to_numeric(out["line"], errors="coerce").astype("Int64")
    assert set(out.columns) <= set(allowed), "only canonical columns may be stored"
    return out.reset_index(drop=True), dropped


T = TypeVar("T")


def _is_lock_error(err: BaseException) -> bool:
    text = str(err).lower()
    return "lock" in text or "conflicting" in text


def _is_conflict(err: BaseException) -> bool:
    return isinstance(err, (duckdb.TransactionException, duckdb.ConstraintException)) or \
        "conflict" in str(err).lower()


# --------------------------------------------------------------------------------------------------
# the store
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Store:
    """A handle on the store file. Holds no connection: every call opens, works and closes.

    Create with :func:`open_store`. Safe to share between threads and to use from several processes.
    """

    path: Path
    lock_timeout: float = 30.0
    # test seam: called inside save_upload's transaction with "begin" (after BEGIN) and "before-commit"; by a
    # deletion with "deleted" (committed), "rewrite-copying" (fresh file attached) and "rewrite-copied" (old closed)
    _hook: Callable[[str], None] | None = field(default=None, repr=False, compare=False)

    # ---- connections and transactions ---------------------------------------------------------------

    @contextmanager
    def _connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        deadline = time.monotonic() + self.lock_timeout
        # one connection at a time per file in this process: DuckDB's Python client can lose its pandas scan
        # when threads open and close connections to the same file at once ("pandas_scan does not exist")
        with self._locked(deadline), self._connect_locked(deadline) as con:
            yield con

    @contextmanager
    def _locked(self, deadline: float) -> Iterator[None]:
        """Hold this file's thread lock and its lock file; the first (outermost) holder finishes a rewrite that
        a crashed process left pending. Re-entrant within a thread."""
        guard = _process_lock(self.path)
        if not guard.acquire(timeout=max(self.lock_timeout, 0.001)):
            raise StoreBusy(f"The store {str(self.path)!r} stayed busy in this program for {self.lock_timeout:g} "
                            f"seconds. Try again in a moment.")
        try:
            held = _HELD.setdefault(str(self.path), _HeldLockFile())
            if held.depth == 0:
                held.fd = self._lock_file(deadline)
            held.depth += 1
            try:
                if held.depth == 1:
                    self._recover(deadline)
                yield
            finally:
                held.depth -= 1
                if held.depth == 0 and held.fd is not None:
                    _unlock_file(held.fd)
                    os.close(held.fd)
                    held.fd = None
        finally:
            guard.release()

    def _lock_file(self, deadline: float) -> int:
        """Take the exclusive lock on ``<store>.lock`` shared with other processes, retrying until ``deadline``."""
        fd = os.open(self._sidecar(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        delay = 0.005
        while True:
            try:
                _try_lock_file(fd)
                return fd
            except OSError as err:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise self._busy() from err
                time.sleep(delay + random.uniform(0, delay))
                delay = min(delay * 2, 0.25)

    def _busy(self) -> StoreBusy:
        return StoreBusy(
            f"The store {str(self.path)!r} stayed busy (locked by another program or session) for "
            f"{self.lock_timeout:g} seconds. Try again in a moment; if it persists, close other "
            f"copies of the dashboard or command line that use this data folder.")

    def _sidecar(self, suffix: str) -> Path:
        return self.path.with_name(self.path.name + suffix)

    @contextmanager
    def _connect_locked(self, deadline: float) -> Iterator[duckdb.DuckDBPyConnection]:
        delay = 0.005
        while True:
            try:
                con = duckdb.connect(str(self.path))
                break
            except duckdb.Error as err:
                if not _is_lock_error(err):
                    raise
                if time.monotonic() >= deadline:
                    raise self._busy() from err
                time.sleep(delay + random.uniform(0, delay))
                delay = min(delay * 2, 0.25)
        try:
            yield con
        finally:
            con.close()

    def _write(self, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run ``work`` in one transaction; retry the whole transaction on a lock or write-write conflict."""
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.005
        constraint_retries = 3  # a duplicate written by another thread meanwhile; more would be a real error
        while True:
            with self._connect() as con:
                con.execute("BEGIN TRANSACTION")
                try:
                    result = work(con)
                    con.execute("COMMIT")
                    return result
                except BaseException as err:
                    try:
                        con.execute("ROLLBACK")
                    except duckdb.Error:
                        pass
                    if not (isinstance(err, duckdb.Error) and _is_conflict(err)) or time.monotonic() >= deadline:
                        raise
                    if isinstance(err, duckdb.ConstraintException):
                        constraint_retries -= 1
                        if constraint_retries < 0:
                            raise
            time.sleep(delay + random.uniform(0, delay))
            delay = min(delay * 2, 0.25)

    def _read(self, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        with self._connect() as con:
            return work(con)

    # ---- erasing: delete, then rewrite the database into a fresh file -----------------------------------

    def _erase(self, work: Callable[[duckdb.DuckDBPyConnection], int], *, always: bool) -> int:
        """Run the deletion ``work`` in one transaction, then rewrite the file so no byte of the deleted rows is
        left (when ``always`` or rows were deleted). The pending marker makes a crash in between recoverable."""
        deadline = time.monotonic() + self.lock_timeout
        marker = self._sidecar(".rewrite-pending")
        with self._locked(deadline):
            _touch(marker)
            try:
                n = self._write(work)
            except OutcomesError:  # raised by ``work`` before any change (e.g. an unknown upload)
                marker.unlink(missing_ok=True)
                raise
            if self._hook is not None:
                self._hook("deleted")
            if always or n:
                try:
                    self._rewrite(time.monotonic() + self.lock_timeout)
                except Exception as err:
                    raise OutcomesError(
                        f"The rows were deleted, but the store {str(self.path)!r} could not be rewritten to erase "
                        f"their bytes from the disk ({type(err).__name__}: {err}). Make sure the data folder has "
                        f"free space about the size of the store; the rewrite is retried on the next use of the "
                        f"store.") from err
            else:
                marker.unlink(missing_ok=True)
        return n

    def _recover(self, deadline: float) -> None:
        """Finish a rewrite left pending by a crash; delete a half-written one. Called with the locks held."""
        try:
            if self._sidecar(".rewrite-pending").exists():
                log.warning("store %s: finishing a rewrite left pending by an interrupted deletion", self.path)
                self._rewrite(deadline)
            else:
                _unlink(self._sidecar(".rewrite"), self._sidecar(".rewrite.wal"))
        except StoreBusy:
            raise
        except Exception as err:  # noqa: BLE001 - the store stays usable; the marker makes the next call retry
            log.warning("store %s: the pending rewrite failed (%s); it is retried on the next call", self.path,
                        type(err).__name__)

    def _rewrite(self, deadline: float) -> None:
        """Copy the database into a fresh file and put it in the old one's place (locks held, no connection open).

        The old file is closed (checkpointed: no WAL) before the fresh, complete and synced file replaces it, so
        the path always names one whole database; the marker is removed last.
        """
        tmp, tmp_wal = self._sidecar(".rewrite"), self._sidecar(".rewrite.wal")
        _unlink(tmp, tmp_wal)
        with self._connect_locked(deadline) as con:
            source = con.execute("SELECT current_database()").fetchone()[0]
            fresh = f"kap_rewrite_{secrets.token_hex(4)}"
            con.execute(f"ATTACH {_sql_text(str(tmp))} AS {fresh}")
            os.chmod(tmp, 0o600)
            if self._hook is not None:
                self._hook("rewrite-copying")
            con.execute(f"COPY FROM DATABASE {_sql_name(source)} TO {fresh}")
            con.execute(f"DETACH {fresh}")
            con.execute("CHECKPOINT")
        if self._hook is not None:
            self._hook("rewrite-copied")
        wal = self._sidecar(".wal")
        if tmp_wal.exists() or wal.exists():  # never pair a WAL with the other file
            raise OutcomesError(
                f"The store {str(self.path)!r} could not be rewritten: DuckDB left a write-ahead log beside it. "
                f"The deletion is recorded and its rewrite is retried on the next use of the store.")
        _fsync(tmp)
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)
        self._sidecar(".rewrite-pending").unlink(missing_ok=True)
        _fsync_dir(self.path.parent)

    def _init(self) -> None:
        def create(con: duckdb.DuckDBPyConnection) -> None:
            con.execute("CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)")
            con.execute("""CREATE TABLE IF NOT EXISTS uploads (
                upload_id VARCHAR PRIMARY KEY, content_hash VARCHAR NOT NULL UNIQUE, created_at TIMESTAMP NOT NULL,
                username VARCHAR NOT NULL, files VARCHAR NOT NULL, options VARCHAR NOT NULL,
                row_counts VARCHAR NOT NULL, n_patients BIGINT NOT NULL, n_issues BIGINT NOT NULL,
                report VARCHAR NOT NULL, notes VARCHAR NOT NULL)""")
            con.execute("""CREATE TABLE IF NOT EXISTS issues (upload_id VARCHAR NOT NULL, seq BIGINT, file VARCHAR,
                line BIGINT, "column" VARCHAR, value VARCHAR, reason VARCHAR)""")
            for kind in KINDS:
                cols = ", ".join(f'"{c}" {"BIGINT" if c == "line" else _SQL_TYPES[_column_kind(kind, c)]}'
                                 for c in stored_columns(kind))
                con.execute(f"CREATE TABLE IF NOT EXISTS {kind} (upload_id VARCHAR NOT NULL, row_seq BIGINT "
                            f"NOT NULL, {cols})")
            con.execute("CREATE SEQUENCE IF NOT EXISTS audit_seq")
            con.execute("""CREATE TABLE IF NOT EXISTS audit (audit_id BIGINT NOT NULL DEFAULT nextval('audit_seq'),
                "at" TIMESTAMP NOT NULL, username VARCHAR NOT NULL, action VARCHAR NOT NULL, upload_id VARCHAR,
                detail VARCHAR NOT NULL)""")
            have = dict(con.execute("SELECT key, value FROM meta").fetchall())
            if "schema_version" not in have:
                con.execute("INSERT INTO meta VALUES ('schema_version', ?), ('patient_ref_key', ?)",
                            [SCHEMA_VERSION, secrets.token_hex(32)])
            elif have["schema_version"] != SCHEMA_VERSION:
                raise OutcomesError(
                    f"The store {str(self.path)!r} was written by another version of KAP Outcomes (schema "
                    f"{have['schema_version']}, this version reads {SCHEMA_VERSION}). Use a matching version "
                    f"or a new data folder.")

        self._write(create)
        for p in (self.path, self.path.with_name(self.path.name + ".wal")):
            try:
                os.chmod(p, 0o600)
            except OSError:
                pass

    @staticmethod
    def _audit(con: duckdb.DuckDBPyConnection, user: str, action: str, upload_id: str | None,
               detail: str) -> None:
        con.execute('INSERT INTO audit ("at", username, action, upload_id, detail) VALUES (?, ?, ?, ?, ?)',
                    [_now(), user, action, upload_id, detail[:2000]])

    # ---- uploads ------------------------------------------------------------------------------------

    def save_upload(self, files: Mapping[str, bytes], *, accepted: Mapping[str, pd.DataFrame],
                    report: Mapping[str, Any], user: str = "local",
                    options: Mapping[str, object] | None = None) -> UploadRecord:
        """Store an accepted upload, or return the stored one when the same files were uploaded before.

        Parameters
        ----------
        files:
            Role (``sessions``, ``followups``, ``patients``) → the file's bytes as uploaded. Only hashes and
            sizes are kept.
        accepted:
            Export kind → accepted rows (canonical columns; other columns are dropped and named in the notes).
        report:
            The data-quality report (cli.md ``validate --json`` shape): ``issues`` (DataFrame or list of
            dicts with file, line, column, value, reason) goes to the issues table, the rest is kept as JSON.
        user:
            Who uploads (the logged-in user, else ``"local"``).
        options:
            Reading options (preset, date order…) that change what the same bytes mean; part of the identity.

        Returns
        -------
        UploadRecord
            ``is_new`` False (and only an audit entry ``re-upload`` written) when the content was stored before.
        """
        unknown = [k for k in accepted if k not in KINDS]
        if unknown:
            raise ValueError(f"Unknown export kind(s) {unknown}; expected some of {list(KINDS)}.")
        opts = {str(k): str(v) for k, v in (options or {}).items()}
        digest = content_hash(files, opts)
        if self._read(lambda con: con.execute("SELECT 1 FROM uploads WHERE content_hash = ?", [digest]).fetchone()):
            again = self._write(lambda con: self._re_upload(con, digest, user))
            if again is not None:  # (None: deleted meanwhile; store it afresh below)
                log.info("upload %s already stored", again.upload_id)
                return again
        digests = tuple(FileDigest(name, hashlib.sha256(data).hexdigest(), len(data))
                        for name, data in sorted(files.items()))
        frames: dict[str, pd.DataFrame] = {}
        notes: list[str] = []
        for kind, frame in accepted.items():
            prepared, dropped = _prepare(kind, frame)
            prepared.insert(0, "row_seq", np.arange(len(prepared), dtype=np.int64))
            frames[kind] = prepared
            if dropped:
                notes.append(f"Not stored from {kind}: {', '.join(dropped)} (only the contract's columns are "
                             f"kept).")
        issues = _issues_frame(report.get("issues"))
        report_rest = {k: v for k, v in report.items() if k != "issues"}
        row_counts = {k: len(v) for k, v in frames.items()}
        ids = pd.concat([f["patient_id"] for f in frames.values()], ignore_index=True) if frames else pd.Series()
        n_patients = int(ids.dropna().nunique())

        def work(con: duckdb.DuckDBPyConnection) -> UploadRecord:
            if self._hook is not None:
                self._hook("begin")
            again = self._re_upload(con, digest, user)
            if again is not None:
                return again
            created = _now()
            upload_id = f"{created:%Y%m%d-%H%M%S}-{digest[:8]}"
            con.execute("INSERT INTO uploads VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
                upload_id, digest, created, user, _dumps([asdict(d) for d in digests]), _dumps(opts),
                _dumps(row_counts), n_patients, len(issues), _dumps(report_rest), _dumps(notes)])
            if len(issues):
                con.register("incoming_issues", issues.assign(upload_id=upload_id))
                con.execute("INSERT INTO issues BY NAME SELECT * FROM incoming_issues")
                con.unregister("incoming_issues")
            for kind, frame in frames.items():
                if len(frame):
                    con.register("incoming", frame.assign(upload_id=upload_id))
                    con.execute(f"INSERT INTO {kind} BY NAME SELECT * FROM incoming")
                    con.unregister("incoming")
            total = sum(row_counts.values())
            self._audit(con, user, "upload", upload_id,
                        f"upload {upload_id}: {len(digests)} file(s), {total} accepted row(s) "
                        f"({', '.join(f'{k} {v}' for k, v in row_counts.items())}), {n_patients} patient(s), "
                        f"{len(issues)} issue(s)")
            if self._hook is not None:
                self._hook("before-commit")
            return UploadRecord(upload_id=upload_id, content_hash=digest, created_at=created.replace(
                tzinfo=UTC), user=user, files=digests, options=opts, row_counts=row_counts,
                n_patients=n_patients, n_issues=len(issues), is_new=True, notes=tuple(notes))

        record = self._write(work)
        log.info("upload %s %s (%d rows)", record.upload_id, "stored" if record.is_new else "already stored",
                 sum(record.row_counts.values()))
        return record

    def _re_upload(self, con: duckdb.DuckDBPyConnection, digest: str, user: str) -> UploadRecord | None:
        row = con.execute("SELECT upload_id FROM uploads WHERE content_hash = ?", [digest]).fetchone()
        if row is None:
            return None
        self._audit(con, user, "re-upload", row[0], f"same files as upload {row[0]}; nothing new stored")
        return _replace(self._record(con, row[0]), is_new=False)

    def save_validated(self, files: Mapping[str, bytes], validated: ValidatedExports, *, user: str = "local",
                       options: Mapping[str, object] | None = None) -> UploadRecord:
        """:meth:`save_upload` for a :class:`~schemas.frames.ValidatedExports` (accepted frames + report)."""
        accepted = {"sessions": validated.sessions, "followups": validated.followups,
                    "patients": validated.patients}
        report = {"files": {k: asdict(v) for k, v in validated.files.items()}, "patients": validated.n_patients,
                  "issues": validated.issues, "notes": list(validated.notes)}
        return self.save_upload(files, accepted=accepted, report=report, user=user, options=options)

    def _record(self, con: duckdb.DuckDBPyConnection, upload_id: str) -> UploadRecord:
        row = con.execute("""SELECT upload_id, content_hash, created_at, username, files, options, row_counts,
            n_patients, n_issues, notes FROM uploads WHERE upload_id = ?""", [upload_id]).fetchone()
        if row is None:
            raise UnknownUpload(f"There is no stored upload {upload_id!r} (it may have been deleted). Pick one "
                                f"from the list of stored uploads.")
        return _to_record(row)

    def list_uploads(self) -> list[UploadRecord]:
        """Every stored upload, oldest first."""
        rows = self._read(lambda con: con.execute("""SELECT upload_id, content_hash, created_at, username, files,
            options, row_counts, n_patients, n_issues, notes FROM uploads ORDER BY created_at, upload_id""")
                          .fetchall())
        return [_to_record(r) for r in rows]

    def get_upload(self, upload_id: str) -> UploadRecord:
        return self._read(lambda con: self._record(con, upload_id))

    def load_upload(self, upload_id: str) -> dict[str, pd.DataFrame]:
        """The accepted rows of an upload: export kind → frame with the canonical dtypes (schemas/frames.py),
        in the original row order; ``line`` is kept when it was stored."""
        def work(con: duckdb.DuckDBPyConnection) -> dict[str, pd.DataFrame]:
            record = self._record(con, upload_id)
            out = {}
            for kind in record.row_counts:
                cols = ", ".join(f'"{c}"' for c in stored_columns(kind))
                out[kind] = con.execute(f"SELECT {cols} FROM {kind} WHERE upload_id = ? ORDER BY row_seq",
                                        [upload_id]).df()
            return out

        raw = self._read(work)
        return {kind: _restore(kind, frame) for kind, frame in raw.items()}

    def load_report(self, upload_id: str) -> dict[str, Any]:
        """The stored data-quality report, with ``issues`` as a DataFrame (file, line, column, value, reason)."""
        def work(con: duckdb.DuckDBPyConnection) -> tuple[str, pd.DataFrame]:
            self._record(con, upload_id)
            (report,) = con.execute("SELECT report FROM uploads WHERE upload_id = ?", [upload_id]).fetchone()
            issues = con.execute("""SELECT file, line, "column", value, reason FROM issues WHERE upload_id = ?
                ORDER BY seq""", [upload_id]).df()
            return report, issues

        report, issues = self._read(work)
        out = json.loads(report)
        issues["line"] = issues["line"].astype("Int64")
        out["issues"] = issues
        return out

    def load_validated(self, upload_id: str) -> ValidatedExports:
        """Reopen an upload as :class:`~schemas.frames.ValidatedExports`, ready for ``build_cohort``."""
        from schemas.frames import FileReport, ValidatedExports

        frames = self.load_upload(upload_id)
        report = self.load_report(upload_id)
        base = ValidatedExports.from_frames(frames.get("sessions", pd.DataFrame(columns=["patient_id"])),
                                            frames.get("followups", pd.DataFrame(columns=["patient_id"])),
                                            frames.get("patients"))
        files = {}
        for name, fr in (report.get("files") or {}).items():
            try:
                fr = {k: (tuple(v) if isinstance(v, list) else v) for k, v in fr.items()}
                files[name] = FileReport(**fr)
            except TypeError:  # a report from another version: keep what we can show
                continue
        return ValidatedExports(sessions=base.sessions, followups=base.followups, patients=base.patients,
                                issues=report["issues"], files=files, notes=tuple(report.get("notes") or ()))

    # ---- deletion ------------------------------------------------------------------------------------

    def delete_upload(self, upload_id: str, user: str) -> int:
        """Delete an upload and everything derived from it (rows, issues). Returns the rows deleted.

        Raises :class:`UnknownUpload` when there is no such upload.
        """
        def work(con: duckdb.DuckDBPyConnection) -> int:
            self._record(con, upload_id)
            n = 0
            for table in (*KINDS, "issues"):
                n += con.execute(f"DELETE FROM {table} WHERE upload_id = ?", [upload_id]).fetchone()[0]
            con.execute("DELETE FROM uploads WHERE upload_id = ?", [upload_id])
            self._audit(con, user, "delete upload", upload_id, f"deleted upload {upload_id} ({n} stored rows)")
            return int(n)

        n = self._erase(work, always=True)
        log.info("upload %s deleted (%d rows)", upload_id, n)
        return n

    def patient_ref(self, patient_id: str) -> str:
        """The reference under which a patient's deletion is audited: HMAC-SHA256 with the store's secret."""
        key = self._read(lambda con: con.execute("SELECT value FROM meta WHERE key = 'patient_ref_key'")
                         .fetchone()[0])
        return _ref(key, patient_id)

    def delete_patient(self, patient_id: str, user: str) -> int:
        """Delete one patient's rows from every upload (and issues about them). Returns the rows deleted.

        Issues (set-aside rows) are deleted when their line is one of the patient's accepted rows, when another
        issue on the same line of the same file has the patient's id as its ``patient_id`` value, or when their
        ``value`` or ``reason`` names the id (as a whole word: ``a-003`` does not name ``a-0031``). Quarantined
        rows themselves are never stored. The file is then rewritten, so no byte of the deleted rows is left
        (module docstring). The audit entry names the patient by :meth:`patient_ref`, never by id. An unknown
        id deletes nothing and is still audited.
        """
        pid = str(patient_id).strip()

        def work(con: duckdb.DuckDBPyConnection) -> int:
            key = con.execute("SELECT value FROM meta WHERE key = 'patient_ref_key'").fetchone()[0]
            touched: set[str] = set()
            n = 0
            for kind in KINDS:
                hit = con.execute(f"SELECT DISTINCT upload_id FROM {kind} WHERE patient_id = ?", [pid]).fetchall()
                touched |= {h[0] for h in hit}
                n += con.execute(f"""DELETE FROM issues i USING {kind} k WHERE k.patient_id = ? AND
                    i.upload_id = k.upload_id AND i.line = k.line AND
                    (i.file = '{kind}' OR i.file LIKE '{kind}.%')""", [pid]).fetchone()[0]
                n += con.execute(f"DELETE FROM {kind} WHERE patient_id = ?", [pid]).fetchone()[0]
            named, with_issues = _delete_issues_naming(con, pid)
            n += named
            touched |= with_issues
            for upload_id in sorted(touched):
                counts = {}
                for kind in json.loads(con.execute("SELECT row_counts FROM uploads WHERE upload_id = ?",
                                                   [upload_id]).fetchone()[0]):
                    counts[kind] = con.execute(f"SELECT count(*) FROM {kind} WHERE upload_id = ?",
                                               [upload_id]).fetchone()[0]
                union = " UNION ".join(f"SELECT patient_id FROM {k} WHERE upload_id = ?" for k in counts)
                n_pat = con.execute(f"SELECT count(DISTINCT patient_id) FROM ({union})",
                                    [upload_id] * len(counts)).fetchone()[0] if counts else 0
                n_iss = con.execute("SELECT count(*) FROM issues WHERE upload_id = ?", [upload_id]).fetchone()[0]
                con.execute("UPDATE uploads SET row_counts = ?, n_patients = ?, n_issues = ? WHERE upload_id = ?",
                            [_dumps(counts), n_pat, n_iss, upload_id])
            self._audit(con, user, "delete patient", None,
                        f"deleted patient ref {_ref(key, pid)}: {n} stored row(s) in {len(touched)} upload(s)")
            return int(n)

        n = self._erase(work, always=False)
        log.info("patient deletion: %d rows removed", n)
        return n

    # ---- audit ---------------------------------------------------------------------------------------

    def log_export(self, user: str, what: str, *, upload_id: str | None = None) -> None:
        """Audit a report or table export. ``what`` describes the export (never patient values)."""
        self._write(lambda con: self._audit(con, user, "export", upload_id, what))

    def audit_log(self, *, limit: int | None = None) -> pd.DataFrame:
        """The audit log, newest first: ``audit_id``, ``at`` (UTC), ``user``, ``action``, ``upload_id``,
        ``detail``."""
        sql = ("SELECT audit_id, \"at\", username AS \"user\", action, upload_id, detail FROM audit "
               "ORDER BY audit_id DESC" + (f" LIMIT {int(limit)}" if limit is not None else ""))
        frame = self._read(lambda con: con.execute(sql).df())
        frame["at"] = pd.to_datetime(frame["at"]).dt.tz_localize("UTC")
        return frame


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------

_LOCKS: dict[str, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


def _process_lock(path: Path) -> threading.RLock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(str(path), threading.RLock())


@dataclass
class _HeldLockFile:
    """This process's hold on one store's lock file: its descriptor and how many nested calls hold it (only
    touched under the store's thread lock)."""

    fd: int | None = None
    depth: int = 0


_HELD: dict[str, _HeldLockFile] = {}

if sys.platform.startswith("win"):  # pragma: no cover
    import msvcrt

    def _try_lock_file(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]

    def _unlock_file(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined]
else:
    import fcntl

    def _try_lock_file(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock_file(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _touch(path: Path) -> None:
    """Create ``path`` (empty, 0600) and make its entry durable."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    _fsync_dir(path.parent)


def _unlink(*paths: Path) -> None:
    for p in paths:
        p.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":  # pragma: no cover - Windows cannot open a folder; its renames are journaled
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _sql_name(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def _delete_issues_naming(con: duckdb.DuckDBPyConnection, pid: str) -> tuple[int, set[str]]:
    """Delete the issues about patient ``pid`` that are found by their text: those whose ``value`` or
    ``reason`` names the id as a whole word, and every issue on a line whose ``patient_id`` issue is the id.

    Returns
    -------
    tuple
        Rows deleted, and the uploads they belonged to.
    """
    word = re.compile(rf"(?<![0-9A-Za-z]){re.escape(pid)}(?![0-9A-Za-z])")
    candidates = con.execute("SELECT rowid, upload_id, value, reason FROM issues WHERE contains(value, ?) OR "
                             "contains(reason, ?)", [pid, pid]).fetchall()
    hit = {r: u for r, u, value, reason in candidates if any(t and word.search(t) for t in (value, reason))}
    hit |= dict(con.execute("""SELECT DISTINCT i.rowid, i.upload_id FROM issues i JOIN issues j
        ON i.upload_id = j.upload_id AND i.file = j.file AND i.line = j.line
        WHERE j."column" = 'patient_id' AND trim(j.value) = ?""", [pid]).fetchall())
    if hit:
        con.execute("DELETE FROM issues WHERE list_contains(?, rowid)", [sorted(hit)])
    return len(hit), set(hit.values())


def _make_private(folder: Path) -> None:
    """Make an existing data folder private to its owner (0700), or refuse it saying what to do."""
    if os.name != "posix":  # pragma: no cover - Windows folders under %LOCALAPPDATA% are the user's own
        return
    mode = stat.S_IMODE(os.stat(folder).st_mode)
    if not mode & 0o077:
        return
    try:
        os.chmod(folder, 0o700)
    except OSError as err:
        raise OutcomesError(
            f"The data folder {str(folder)!r} is open to other users (permissions {oct(mode)}) and could not be "
            f"made private ({err.strerror}). Run `chmod 700 {folder}` as its owner, or set {DATA_DIR_ENV} to a "
            f"folder of your own.") from err
    log.info("data folder %s made private (was %s)", folder, oct(mode))


def _now() -> datetime:
    """UTC now without tzinfo (DuckDB TIMESTAMP), microsecond resolution."""
    return datetime.now(UTC).replace(tzinfo=None)


def _ref(key: str, patient_id: str) -> str:
    return hmac.new(bytes.fromhex(key), str(patient_id).strip().encode(), hashlib.sha256).hexdigest()[:16]


def _replace(record: UploadRecord, **changes: object) -> UploadRecord:
    from dataclasses import replace

    return replace(record, **changes)  # type: ignore[arg-type]


def _to_record(row: tuple) -> UploadRecord:
    upload_id, digest, created, user, files, options, counts, n_pat, n_iss, notes = row
    return UploadRecord(
        upload_id=upload_id, content_hash=digest, created_at=pd.Timestamp(created).to_pydatetime().replace(
            tzinfo=UTC), user=user, files=tuple(FileDigest(**f) for f in json.loads(files)),
        options=json.loads(options), row_counts={k: int(v) for k, v in json.loads(counts).items()},
        n_patients=int(n_pat), n_issues=int(n_iss), is_new=True, notes=tuple(json.loads(notes)))


def _restore(kind: str, frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    if "line" in frame.columns:
        if frame["line"].isna().all():
            frame = frame.drop(columns="line")
        else:
            frame["line"] = frame["line"].astype("Int64" if frame["line"].isna().any() else "int64")
    typed = coerce_canonical(frame, kind)
    for col in [c for c in typed.columns if c not in COLUMNS[kind] and c != "line"]:
        ck = _column_kind(kind, col)
        if ck in ("number", "integer"):
            typed[col] = pd.to_numeric(typed[col], errors="coerce").astype("float64")
        elif ck in ("category", "list"):
            typed[col] = typed[col].astype("string").str.strip().str.lower()
        else:
            typed[col] = typed[col].astype("string")
    if kind == "sessions":  # patient columns that never arrived on sessions rows are not invented
        empty = [c for c in PATIENT_COLUMNS_ON_SESSIONS if c in typed.columns and c not in COLUMNS[kind]
                 and typed[c].isna().all()]
        typed = typed.drop(columns=empty)
    return typed


def open_store(path: str | Path | None = None, *, lock_timeout: float = 30.0) -> Store:
    """Open (creating if needed) the store.

    Parameters
    ----------
    path:
        The DuckDB file, or a folder to hold ``store.duckdb``; default :func:`data_dir` / ``store.duckdb``.
    lock_timeout:
        Seconds to keep retrying while another process holds the file.
    """
    if path is None:
        folder = data_dir()
        file = folder / STORE_FILE
    else:
        p = Path(path).expanduser()
        file = p / STORE_FILE if p.is_dir() or not p.suffix else p
        folder = file.parent
        _refuse_repo(folder)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    _make_private(folder)
    store = Store(path=file.resolve(), lock_timeout=lock_timeout)
    store._init()
    return store


# --------------------------------------------------------------------------------------------------
# comparing two uploads (two periods)
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class UploadComparison:
    """Two uploads side by side.

    Attributes
    ----------
    table:
        ``metric``, ``a``, ``b``, ``change`` (b − a): patients, sessions, ketamine sessions, follow-ups,
        patients in both uploads, only in a, only in b. Counts: pass through
        :func:`analytics.privacy.suppression.suppress_counts` (``count_columns=["a", "b"]``) before showing.
    periods:
        Upload id → (first, last) session date, as ``pd.Timestamp`` (NaT when empty).
    a, b:
        The two records. Reopen the data with :meth:`Store.load_validated` to run analyses on each period.
    """

    table: pd.DataFrame
    periods: dict[str, tuple[pd.Timestamp, pd.Timestamp]]
    a: UploadRecord
    b: UploadRecord
    notes: tuple[str, ...] = ()


def compare_uploads(store: Store, upload_a: str, upload_b: str) -> UploadComparison:
    """Descriptive counts of two stored uploads (e.g. two periods) and their overlap of patients."""
    rec = {u: store.get_upload(u) for u in (upload_a, upload_b)}
    data = {u: store.load_upload(u) for u in (upload_a, upload_b)}

    def ids(u: str) -> set[str]:
        out: set[str] = set()
        for f in data[u].values():
            out |= set(f["patient_id"].dropna().astype(str))
        return out

    def n(u: str, kind: str, ketamine: bool = False) -> int:
        f = data[u].get(kind)
        if f is None:
            return 0
        if ketamine:
            return int((f["session_type"] == "ketamine").fillna(False).sum())
        return len(f)

    ia, ib = ids(upload_a), ids(upload_b)
    rows = [("patients", len(ia), len(ib)), ("sessions", n(upload_a, "sessions"), n(upload_b, "sessions")),
            ("ketamine sessions", n(upload_a, "sessions", True), n(upload_b, "sessions", True)),
            ("follow-ups", n(upload_a, "followups"), n(upload_b, "followups")),
            ("patients in both", len(ia & ib), len(ia & ib)),
            ("patients only in this upload", len(ia - ib), len(ib - ia))]
    table = pd.DataFrame(rows, columns=["metric", "a", "b"])
    table["change"] = table["b"] - table["a"]
    periods = {}
    for u in (upload_a, upload_b):
        s = data[u].get("sessions")
        dates = s["session_date"] if s is not None else pd.Series([], dtype="datetime64[ns]")
        periods[u] = (dates.min(), dates.max())
    notes = ("Counts are not suppressed here; apply analytics.privacy.suppression.suppress_counts before showing them.",)
    return UploadComparison(table=table, periods=periods, a=rec[upload_a], b=rec[upload_b], notes=notes)


compare_periods = compare_uploads  # the name used in issue 8
