"""Benchmark (issue 21): what each default chart of the dashboard costs the browser to draw, at 50,000 patients.

A rerun of a page redraws its charts in the browser, on the same two cores as the server; without its three charts
the Overview's rerun after a filter change took 0.5–0.7 s in chromium instead of 1.0–1.3 s. This benchmark builds
every figure the background warm-up builds for the pages' default views (``analytics/outcomes/warmup.py``) on the
generated clinic (:func:`analytics.sample.write_clinic`, seed 7), given the load as the dashboard gives it, and times
``Plotly.newPlot`` of each in headless chromium (the plotly.js that the plotly package ships, which is what the
HTML report uses; Streamlit bundles its own copy), until the next animation frame: the median of three draws after
a first one. A figure's size (its JSON) is given too. Writes perf/results/charts.json.

    uv run --frozen python perf/bench_charts.py [--patients 50000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

import cli_run

DRAWS = 3
_DRAW_JS = """async (spec) => {
    const figure = JSON.parse(spec); const box = document.getElementById('chart'); Plotly.purge(box);
    const t0 = performance.now(); await Plotly.newPlot(box, figure.data, figure.layout, {responsive: true});
    await new Promise(done => requestAnimationFrame(() => setTimeout(done, 0))); return performance.now() - t0; }"""


def _figures(n_patients: int) -> tuple[list[tuple[str, str]], dict[str, float]]:
    """(name, figure JSON) of every default figure, and the seconds of each preparation step."""
    from analytics.outcomes import memo, warmup
    from analytics.outcomes.cohort import build_cohort
    from analytics.outcomes.settings import Settings
    from analytics.sample import write_clinic
    from schemas.validate import load_exports

    steps: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="kap-bench-charts-") as tmp:
        files = write_clinic(tmp, n_patients=n_patients, seed=7)
        t0 = time.perf_counter()
        data = load_exports(files["sessions"], files["followups"], files["patients"])
    steps["load_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    cohort = build_cohort(data, Settings())
    steps["cohort_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    warmup.run(cohort, exports=data)  # every page's default analyses, then its default figures (kept with results)
    steps["warmup_seconds"] = time.perf_counter() - t0
    figures: list[tuple[str, Any]] = []
    seen: set[int] = set()

    def collect(owner: Any) -> None:  # the figures kept with each result (memo.kept_figure), result by result
        for key, value in list(getattr(owner, "__dict__", {}).get(memo._SLOT, {}).items()):
            if isinstance(key, tuple) and key and key[0] == "figure":
                options = ", ".join(f"{k}={v}" for k, v in key[3] if k != "min_cell")
                figures.append((f"{key[1].rsplit('.', 1)[-1]}.{key[2]}" + (f" ({options})" if options else ""), value))
            elif id(value) not in seen:
                seen.add(id(value))
                collect(value)

    collect(cohort)
    return [(name, fig.to_json()) for name, fig in figures], steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=50_000)
    args = parser.parse_args()
    import e2e_harness as h
    from playwright.sync_api import sync_playwright

    executable = h.find_chromium()
    if executable is None:
        raise SystemExit("no chromium (/usr/bin/chromium or `chromium` on PATH)")
    import plotly

    plotly_js = (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_text()
    figures, steps = _figures(args.patients)
    rows = []
    with sync_playwright() as playwright:
        browser = h.launch_browser(playwright, executable)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_content("<html><body><div id='chart' style='width:1100px;height:560px'></div></body></html>")
            page.add_script_tag(content=plotly_js)
            version = page.evaluate("() => Plotly.version")
            for name, spec in figures:
                times = [page.evaluate(_DRAW_JS, spec) for _ in range(DRAWS + 1)][1:]
                rows.append({"figure": name, "draw_ms": round(statistics.median(times), 1),
                             "draws_ms": [round(t, 1) for t in times], "json_kb": round(len(spec) / 1e3, 1)})
                print(rows[-1], flush=True)
        finally:
            browser.close()
    rows.sort(key=lambda r: -r["draw_ms"])
    cli_run.write("charts", {
        "patients": args.patients, "plotly_js": version, "figures": rows,
        "total_draw_ms": round(sum(r["draw_ms"] for r in rows), 1),
        "preparation_seconds": {k: round(v, 2) for k, v in steps.items()},
        "notes": [("Plotly.newPlot of each figure in headless chromium until the next animation frame; median of "
                   f"{DRAWS} draws after a first one."),
                  "Figures: every default figure the warm-up builds (given the load, as in the dashboard)."]})


if __name__ == "__main__":
    main()
