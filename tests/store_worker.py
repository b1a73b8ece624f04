"""A separate process that writes to the store, for the kill and concurrency tests of tests/test_store.py.

    python tests/store_worker.py many DB TAG N GO_FILE   save N distinct uploads and one shared upload, after
                                                         GO_FILE exists; print one JSON line of results
    python tests/store_worker.py big DB ROWS pause|run   save one large upload; print the transaction's phases
                                                         ("begin", "before-commit") as they happen; with "pause",
                                                         stop before COMMIT until killed
    python tests/store_worker.py delete DB PATIENT_ID PHASE
                                                         delete a patient; print the phases ("deleted",
                                                         "rewrite-copying", "rewrite-copied") as they happen
                                                         and stop at PHASE until killed

Also imported by the tests for :func:`make_upload`.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analytics.store import open_store


def make_upload(tag: str, n_sessions: int = 40, n_patients: int = 12, *, shared_ids: int = 0,
                seed: int = 0, csv_files: bool = True) -> tuple[dict[str, bytes], dict[str, pd.DataFrame], dict]:
    """Files (bytes), accepted canonical frames and a report for a synthetic upload named by ``tag``.

    Patient ids are ``<tag>-<n>``, except the first ``shared_ids`` which are ``shared-<n>`` in every upload.
    ``csv_files=False`` gives short stand-in bytes (only their hash matters to the store) to save time.
    """
    rng = np.random.default_rng(seed)
    pids = [f"shared-{i:03d}" if i < shared_ids else f"{tag}-{i:03d}" for i in range(n_patients)]
    who = np.arange(n_sessions) % n_patients
    sessions = pd.DataFrame({
        "patient_id": [pids[i] for i in who],
        "session_date": pd.Timestamp("2025-01-06") + pd.to_timedelta(np.arange(n_sessions) // n_patients * 7,
                                                                       unit="D"),
        "session_type": np.where(np.arange(n_sessions) < n_patients, "ketamine",
                                 rng.choice(["ketamine", "psychotherapy", "integration"], n_sessions)),
        "route": "iv",
        "dose_mg": rng.uniform(20, 80, n_sessions).round(1),
        "phq9": rng.integers(0, 28, n_sessions).astype(float),
        "adverse_events": rng.choice(["", "nausea", "dizziness;headache"], n_sessions),
        "line": np.arange(2, n_sessions + 2),
    })
    sessions["adverse_events"] = sessions["adverse_events"].replace("", pd.NA)
    followups = pd.DataFrame({
        "patient_id": pids,
        "assessment_date": pd.Timestamp("2025-03-03"),
        "window_days": 30.0,
        "days_abstinent": rng.integers(0, 31, n_patients).astype(float),
        "any_use": pd.array(rng.choice([True, False, None], n_patients), dtype="boolean"),
        "status": "active",
        "line": np.arange(2, n_patients + 2),
    })
    patients = pd.DataFrame({"patient_id": pids, "program": rng.choice(["ketamine only", "ketamine + therapy"],
                                                                       n_patients),
                             "age": rng.integers(18, 80, n_patients).astype(float)})
    if csv_files:
        files = {k: v.to_csv(index=False).encode() for k, v in
                 (("sessions", sessions), ("followups", followups), ("patients", patients))}
    else:
        files = {k: f"{tag} {k} {seed} {n_sessions}".encode() for k in ("sessions", "followups", "patients")}
    issues = pd.DataFrame({"file": ["sessions.csv", "followups.csv"], "line": [n_sessions + 2, n_patients + 2],
                           "column": ["phq9", "patient_id"], "value": ["35", f"{tag}-orphan"],
                           "reason": ["PHQ-9 must be 0–27", "no ketamine session for this patient"]})
    report = {"files": {k: {"rows": len(v) + 1, "accepted": len(v), "quarantined": 1}
                        for k, v in (("sessions", sessions), ("followups", followups))},
              "patients": n_patients, "issues": issues}
    return files, {"sessions": sessions, "followups": followups, "patients": patients}, report


def _many(db: str, tag: str, n: int, go_file: str) -> None:
    store = open_store(db, lock_timeout=120)
    while not Path(go_file).exists():
        time.sleep(0.01)
    out = []
    for i in range(n):
        files, accepted, report = make_upload(f"{tag}{i}", seed=i)
        rec = store.save_upload(files, accepted=accepted, report=report, user=tag)
        out.append([rec.upload_id, rec.is_new])
    files, accepted, report = make_upload("both", seed=99)
    rec = store.save_upload(files, accepted=accepted, report=report, user=tag)
    out.append([rec.upload_id, rec.is_new])
    print(json.dumps(out), flush=True)


def _big(db: str, rows: int, mode: str) -> None:
    files, accepted, report = make_upload("big", n_sessions=rows, n_patients=max(rows // 20, 12), seed=5,
                                          csv_files=False)

    def hook(phase: str) -> None:
        print(phase, flush=True)
        if mode == "pause" and phase == "before-commit":
            time.sleep(120)

    store = dataclasses.replace(open_store(db, lock_timeout=60), _hook=hook)
    store.save_upload(files, accepted=accepted, report=report, user="big")
    print("saved", flush=True)


def _delete(db: str, patient_id: str, stop_at: str) -> None:
    def hook(phase: str) -> None:
        print(phase, flush=True)
        if phase == stop_at:
            time.sleep(120)

    store = dataclasses.replace(open_store(db, lock_timeout=60), _hook=hook)
    store.delete_patient(patient_id, "worker")
    print("done", flush=True)


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "many":
        _many(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    elif cmd == "big":
        _big(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    elif cmd == "delete":
        _delete(sys.argv[2], sys.argv[3], sys.argv[4])
    else:  # pragma: no cover
        raise SystemExit(__doc__)
