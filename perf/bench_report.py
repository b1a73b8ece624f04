"""Benchmark: `analyze` + `report` end to end on a 50,000-patient export, and an Overview rerun after a filter change.

Targets (issue 11): analyze + report under 15 s total and 4 GB peak memory; a page rerun after a filter change
under 1 s. Writes perf/results/report.json.

    uv run --frozen python perf/bench_report.py [--patients 50000]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=50_000)
    args = parser.parse_args()

    from analytics.pipeline import analysis_json
    from analytics.report import build_report
    from analytics.sample import write_clinic
    from analytics.settings import Settings
    from schemas.validate import load_exports

    with tempfile.TemporaryDirectory() as tmp:
        write_clinic(tmp, n_patients=args.patients, seed=11)
        d = Path(tmp)
        t0 = time.perf_counter()
        data = load_exports(d / "sessions.csv", d / "followups.csv", d / "patients.csv")
        t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, problems = analysis_json(data, Settings(), by="program")
    t_analyze = time.perf_counter() - t0
    t0 = time.perf_counter()
    html = build_report(data, Settings())
    t_report = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=600)
    at.session_state["exports"] = data
    at.session_state["source"] = "upload"
    t0 = time.perf_counter()
    at.run()
    t_first = time.perf_counter() - t0
    sites = at.multiselect(key="f_site").options
    reruns = []
    for site in sites[:3]:
        t0 = time.perf_counter()
        at.multiselect(key="f_site").set_value([site]).run()
        reruns.append(time.perf_counter() - t0)
    result = {
        "patients": args.patients, "session_rows": int(data.files["sessions"].rows),
        "load_validate_seconds": round(t_load, 2), "analyze_seconds": round(t_analyze, 2),
        "report_seconds": round(t_report, 2), "analyze_plus_report_seconds": round(t_analyze + t_report, 2),
        "report_megabytes": round(len(html) / 1e6, 1), "peak_memory_mb": round(peak_mb),
        "overview_first_run_seconds": round(t_first, 2),
        "overview_rerun_after_filter_seconds": [round(r, 2) for r in reruns],
        "notes": problems,
        "targets": {"analyze_plus_report_seconds": 15, "peak_memory_mb": 4096, "rerun_seconds": 1},
    }
    print(json.dumps(result, indent=2))
    out = ROOT / "perf" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
