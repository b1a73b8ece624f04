"""Benchmark (issue 21): a filter change while the background warm-up is in the middle of a slow analysis.

The sample clinic (:func:`analytics.sample.write_clinic`, seed 7, 50,000 patients by default) is loaded and its
cohort built (not timed). A warm-up of the unfiltered cohort starts its slowest first view, Who benefits
(:func:`analytics.outcomes.subgroups.who_benefits`, 3–7 s); one second later the view is narrowed to the first site
(a new cohort, :func:`analytics.outcomes.filters.apply_filters`): the session stops the older warm-up and starts one
for the filtered view, as the dashboard does on a filter change (``pages/_shared.py``, ``start_pending_warmup``).
Timed from the filter change: when the filtered view's whole warm-up (every page's first view) is done, and when the
older warm-up's Who benefits is done.

Two policies, alternating, ``--repeat`` times each: ``hold`` (this project: a stopped warm-up's analysis under way
holds still while a warm-up that is not stopped works, :mod:`analytics.outcomes.warmup`) and ``share`` (before: both
threads ran side by side and shared the interpreter). Writes ``perf/results/warmup.json``.

    uv run --frozen python perf/bench_warmup.py [--patients 50000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "perf" / "results" / "warmup.json"
HEAD_START_S = 1.0  # the older warm-up's time on Who benefits before the filter change


def _cohort(n: int) -> Any:
    from analytics.outcomes.cohort import build_cohort
    from analytics.outcomes.settings import Settings
    from analytics.sample import write_clinic
    from schemas.validate import load_exports

    with tempfile.TemporaryDirectory(prefix="kap-bench-warmup-") as tmp:
        files = write_clinic(tmp, n_patients=n, seed=7)
        data = load_exports(files["sessions"], files["followups"], files["patients"])
    return build_cohort(data, Settings())


def one_run(full: Any, policy: str) -> dict[str, float]:
    """The scenario once, on fresh cohort objects (nothing computed is kept between runs)."""
    from analytics.outcomes import memo, subgroups, warmup
    from analytics.outcomes.filters import Filters, apply_filters

    memo.forget(full)
    site = sorted(full.patients["site"].dropna().unique())[0]
    filtered = apply_filters(full, Filters(site=(site,)))
    views = warmup.first_views
    _, treated, control = subgroups.page_arms(full)

    def slowest() -> object:  # the Who benefits page's default view
        return subgroups.who_benefits(full, treated=treated, control=control)

    holds = warmup._others_work
    if policy == "share":
        warmup._others_work = lambda stop: False  # type: ignore[assignment]
    warmup.first_views = lambda c: [slowest] if c is full else views(c)  # type: ignore[assignment]
    try:
        older, stop_older = warmup.start(full)
        time.sleep(HEAD_START_S)
        t0 = time.perf_counter()
        stop_older.set()
        newer, _ = warmup.start(filtered)
        newer.join()
        newer_done = time.perf_counter() - t0
        older.join()
        older_done = time.perf_counter() - t0
    finally:
        warmup.first_views, warmup._others_work = views, holds  # type: ignore[assignment]
    return {"filtered_view_warm_seconds": round(newer_done, 2), "older_who_benefits_done_seconds": round(older_done, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    from pages import _preload

    _preload.THREAD.join()  # the libraries imported, as in a running server
    full = _cohort(args.patients)
    result: dict[str, Any] = {"patients": args.patients, "head_start_seconds": HEAD_START_S,
                              "machine": {"cpus": os.cpu_count(), "load_average_at_start": list(os.getloadavg())},
                              "runs": {"hold": [], "share": []}}
    for _ in range(args.repeat):
        for policy in ("share", "hold"):
            run = one_run(full, policy)
            result["runs"][policy].append(run)
            print(policy, run, flush=True)
    result["median"] = {policy: {k: round(statistics.median(r[k] for r in runs), 2) for k in runs[0]}
                        for policy, runs in result["runs"].items()}
    result["machine"]["load_average_at_end"] = list(os.getloadavg())
    result["what"] = ("Seconds from a filter change made while the unfiltered cohort's warm-up computes Who benefits: "
                      "until the filtered view's warm-up is done, and until the older Who benefits is done. 'hold': a "
                      "stopped warm-up holds still while a newer one works (this project); 'share': both run side "
                      "by side (before).")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["median"], indent=2))


if __name__ == "__main__":
    main()
