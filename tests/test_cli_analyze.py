"""`kap-outcomes analyze` and `report` on the sample clinic: the documented JSON keys, suppression, the HTML file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INPUTS = ["--sessions", str(ROOT / "sample_data/sessions.csv"), "--followups", str(ROOT / "sample_data/followups.csv"),
          "--patients", str(ROOT / "sample_data/patients.csv")]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analytics.cli", *args], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)


@pytest.fixture(scope="module")
def analysis() -> dict:
    out = run("analyze", *INPUTS, "--by", "program", "--json", "-")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_analyze_json_has_exactly_the_documented_sections_and_keys(analysis):
    assert set(analysis) == {"cohort", "survival", "trajectories", "benchmarks"}
    assert set(analysis["cohort"]) == {"patients", "with_followup", "events", "censored"}
    s = analysis["survival"]
    assert set(s) == {"groups", "logrank", "cox"}
    g = s["groups"][0]
    assert set(g) == {"group", "n", "events", "median_days", "median_lower", "median_upper", "km"}
    assert set(g["km"][0]) == {"time", "survival", "lower", "upper", "at_risk"}
    assert set(s["logrank"]) == {"chisq", "df", "p"}
    assert set(s["cox"]) == {"reference", "ties", "terms", "ph_test"} and s["cox"]["ties"] == "efron"
    assert set(s["cox"]["terms"][0]) == {"term", "level", "coef", "se", "hr", "hr_lower", "hr_upper", "p"}
    t = analysis["trajectories"]["phq9"]
    # --time auto (default) chooses the shape on the data: the sample clinic is simulated with a bend at week 4
    assert t["formula"] == "phq9 ~ weeks + weeks_after_4 + (1 + weeks | patient_id)" and t["method"] == "REML"
    assert [f["term"] for f in t["fixed"]] == ["Intercept", "weeks", "weeks_after_4"]
    assert set(t["random"]) == {"sd_intercept", "sd_slope", "corr", "sd_residual"}
    assert {"id", "metric", "clinic", "published", "source"} == set(analysis["benchmarks"][0])


def test_analyze_recovers_the_sample_therapy_hazard_ratio(analysis):
    cox = analysis["survival"]["cox"]
    assert cox["reference"] == "ketamine + therapy"  # the largest group
    term = cox["terms"][0]
    # true HR therapy vs only = 0.60, so 'ketamine only' vs therapy = 1/0.60 ≈ 1.67
    assert term["hr_lower"] < 1 / 0.60 < term["hr_upper"] * 1.15
    assert term["hr"] > 1.2


def test_suppressed_km_has_no_at_risk_count_from_1_to_10(analysis):
    for g in analysis["survival"]["groups"]:
        assert all(p["at_risk"] is None or p["at_risk"] == 0 or p["at_risk"] >= 11 for p in g["km"])


def test_report_writes_one_self_contained_html_file(tmp_path):
    out = tmp_path / "pack.html"
    result = run("report", *INPUTS, "--out", str(out))
    assert result.returncode == 0, result.stderr
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and "Time to return to use" in text
    assert 'src="http' not in text


def test_unknown_by_column_exits_2_with_a_sentence():
    out = run("analyze", *INPUTS, "--by", "shoe_size")
    assert out.returncode == 2 and "Traceback" not in out.stderr and "shoe_size" in out.stderr
