"""The CLI as other tools use it: JSON keys, exit codes, one-sentence errors (../shared/cli.md)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

S = ("patient_id,session_date,session_type,route,phq9,email\n"
     "00123,2025-01-01,assessment,,20,a@b.c\n00123,2025-01-03,ketamine,iv,,\n00124,2025-01-04,ketamine,im,18,\n")
F = ("patient_id,assessment_date,window_days,days_abstinent,any_use\n"
     "00123,2025-02-03,30,30,no\n00124,2025-02-04,30,20,yes\n")


def run(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("kap-outcomes", path=str(Path(sys.executable).parent))
    cmd = [exe] if exe else [sys.executable, "-m", "analytics.cli"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    s, f = tmp_path / "sessions.csv", tmp_path / "followups.csv"
    s.write_text(S)
    f.write_text(F)
    return s, f


def test_validate_json_has_the_documented_keys_and_exit_0(files):
    s, f = files
    out = run("validate", "--sessions", str(s), "--followups", str(f), "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert set(doc) == {"files", "patients", "issues"}
    assert doc["files"]["sessions"] == {"rows": 3, "accepted": 3, "quarantined": 0, "dropped_columns": ["email"]}
    assert set(doc["files"]) == {"sessions", "followups"}
    assert doc["patients"] == 2 and doc["issues"] == []


def test_validate_exit_1_lists_issues_with_editor_line_numbers(files, tmp_path):
    s, f = files
    f.write_text(F + "00999,2025-02-04,30,20,yes\n00123,2025-02-05,30,31,no\n")
    out = run("validate", "--sessions", str(s), "--followups", str(f), "--json")
    assert out.returncode == 1
    doc = json.loads(out.stdout)
    assert doc["files"]["followups"]["quarantined"] == 2
    assert [(i["line"], i["column"]) for i in doc["issues"]] == [(4, "patient_id"), (5, "days_abstinent")]
    assert set(doc["issues"][0]) == {"file", "line", "column", "value", "reason"}
    text = run("validate", "--sessions", str(s), "--followups", str(f))
    assert text.returncode == 1 and "followups.csv line 4" in text.stdout


@pytest.mark.parametrize("change, phrase", [
    ("missing", "was not found"),
    ("empty", "is empty"),
    ("no_column", "no 'session_type' column"),
])
def test_unusable_input_exits_2_with_one_sentence_and_no_traceback(files, change, phrase):
    s, f = files
    if change == "missing":
        s = s.parent / "nope.csv"
    elif change == "empty":
        s.write_text("")
    else:
        s.write_text("patient_id,session_date\n1,2025-01-01\n")
    out = run("validate", "--sessions", str(s), "--followups", str(f))
    assert out.returncode == 2
    assert phrase in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_bad_option_exits_2_with_a_sentence(files):
    s, f = files
    out = run("validate", "--sessions", str(s), "--followups", str(f), "--dates", "yesterday")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
