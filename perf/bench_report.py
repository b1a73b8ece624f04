"""Benchmark: `analyze` + `report` end to end on a 50,000-patient export, and an Overview rerun after a filter change.

Targets (issue 11): analyze + report under 15 s total and 4 GB peak memory; a page rerun after a filter change
under 1 s. "End to end" is what a user runs: the two commands ``kap-outcomes analyze`` and ``kap-outcomes report``,
each a fresh process that starts Python, reads and validates the three CSV files, builds the cohort and writes its
output; ``report`` computes its sections in forked workers (analytics/report/parallel.py) and is also timed in one process
(KAP_OUTCOMES_WORKERS=1).
Each is timed (best of three) with the peak memory (PSS) of its process tree (perf/cli_run.py); an in-process run
breaks the report into its sections.
Writes perf/results/report.json.

    uv run --frozen python perf/bench_report.py [--patients 50000]
"""

from __future__ import annotations

import argparse
import os
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
    parser.add_argument("--no-app", action="store_true", help="skip the Overview rerun timing")
    args = parser.parse_args()

    import cli_run

    from analytics.outcomes.pipeline import analysis_json
    from analytics.outcomes.settings import Settings
    from analytics.report.pack import SECTIONS, build_report
    from analytics.report.parallel import default_workers
    from analytics.sample import write_clinic
    from schemas.validate import load_exports

    with tempfile.TemporaryDirectory() as tmp:
        write_clinic(tmp, n_patients=args.patients, seed=11)
        d = Path(tmp)
        inputs = ["--sessions", str(d / "sessions.csv"), "--followups", str(d / "followups.csv"),
                  "--patients", str(d / "patients.csv")]
        analyze = ["analyze", *inputs, "--by", "program", "--json", str(d / "a.json")]
        report = ["report", *inputs, "--by", "program", "--out", str(d / "r.html")]
        analyze_runs = [cli_run.run(analyze) for _ in range(3)]
        report_runs = [cli_run.run(report) for _ in range(3)]
        serial = {"KAP_OUTCOMES_WORKERS": "1"}
        analyze_serial = min(cli_run.run(["analyze", *inputs, "--by", "program", "--json", str(d / "a1.json")],
                                         env=serial) for _ in range(2))
        report_serial = min(cli_run.run(["report", *inputs, "--by", "program", "--out", str(d / "r1.html")],
                                        env=serial) for _ in range(2))
        report_mb = (d / "r.html").stat().st_size / 1e6

        t0 = time.perf_counter()
        data = load_exports(d / "sessions.csv", d / "followups.csv", d / "patients.csv")
        t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, problems = analysis_json(data, Settings(), by="program")
    t_analyze = time.perf_counter() - t0
    marks: list[tuple[float, str]] = []
    t0 = time.perf_counter()
    build_report(data, Settings(), progress=lambda _f, name: marks.append((time.perf_counter(), name)))
    t_report = time.perf_counter() - t0
    sections = {name: round(marks[i + 1][0] - t, 2) for i, (t, name) in enumerate(marks[:-1])}
    sections["cohort and filters (before the first section)"] = round(marks[0][0] - t0, 2)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    t_first, reruns = None, []
    if not args.no_app:
        from streamlit.testing.v1 import AppTest

        at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=600)
        at.session_state["exports"] = data
        at.session_state["source"] = "upload"
        t0 = time.perf_counter()
        at.run()
        t_first = time.perf_counter() - t0
        for site in at.multiselect(key="f_site").options[:3]:
            t0 = time.perf_counter()
            at.multiselect(key="f_site").set_value([site]).run()
            reruns.append(time.perf_counter() - t0)

    t_a, mem_a = min(analyze_runs)
    t_r, mem_r = min(report_runs)
    result = {
        "patients": args.patients, "session_rows": int(data.files["sessions"].rows),
        "cli_analyze_seconds": round(t_a, 2), "cli_report_seconds": round(t_r, 2),
        "cli_analyze_plus_report_seconds": round(t_a + t_r, 2),
        "cli_peak_memory_mb": round(max(mem_a, mem_r)),
        "cli_workers": default_workers(),
        "cli_one_process": {"analyze_seconds": round(analyze_serial[0], 2),
                            "report_seconds": round(report_serial[0], 2),
                            "peak_memory_mb": round(max(analyze_serial[1], report_serial[1]))},
        "memory_measure": "peak proportional set size (PSS) of the command and its forked workers, sampled every 50 ms",
        "report_megabytes": round(report_mb, 1),
        "in_process": {"load_validate_seconds": round(t_load, 2), "analyze_seconds": round(t_analyze, 2),
                       "report_seconds": round(t_report, 2), "report_sections_seconds": sections,
                       "peak_memory_mb": round(peak_mb)},
        "overview_first_run_seconds": None if t_first is None else round(t_first, 2),
        "overview_rerun_after_filter_seconds": [round(r, 2) for r in reruns],
        "notes": problems,
        "load_average_at_end": os.getloadavg(),
        "targets": {"cli_analyze_plus_report_seconds": 15, "cli_peak_memory_mb": 4096, "rerun_seconds": 1},
    }
    assert set(sections) >= set(SECTIONS[:-1]), sections
    cli_run.write("report", result)


if __name__ == "__main__":
    main()
