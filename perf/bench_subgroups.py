"""Benchmark: the "who benefits" analysis and the trajectory models on the sample clinic at 5k, 20k, 50k patients.

For each size the sample clinic (:func:`analytics.sample.write_clinic`, seed 7) is written as CSV, loaded and
validated, and turned into a cohort (none of that is timed). Then, data in memory:

* ``who_benefits`` with its defaults (six subgrouping variables: per level a Cox model plus a likelihood-ratio
  interaction test, and one arm × level mixed model of PHQ-9 per variable), as the meeting report calls it; also
  its relapse part and its PHQ-9 part alone;
* at the largest size, the two slow parts of the trajectories page: ``response_durability`` (Kaplan–Meier and the
  time-varying Cox model of maintenance) and ``phq9_model`` (three ML fits to choose the time shape, then REML);
* at the largest size, ``fit_trajectory`` for the default model ``phq9 ~ weeks + (1 + weeks | patient_id)`` and
  with group × time and covariates (``by="program", adjust=("age", "sex")``), linear and piecewise (issue 6's
  targets: under 1 s and under 3 s at 50,000 patients).

Each run starts from the cohort with nothing derived from it kept (``memo.forget``: the results, and the inputs
they share such as the prepared PHQ-9 scores, are kept per cohort, so a second call would only look them up), as a
new view's cohort. Each timing is the best of ``--repeat`` runs, wall clock, with the process CPU time of that run
beside it; the 1-minute load average at start and end is recorded, since other work on the machine (2 cores) slows
every run. Prints a table and writes
``perf/results/subgroups.json``.

    uv run --frozen python perf/bench_subgroups.py [--sizes 5000 20000 50000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "perf" / "results" / "subgroups.json"
TARGETS = {"who_benefits_50k_seconds": 2.0, "trajectory_default_50k_seconds": 1.0,
           "trajectory_group_covariates_50k_seconds": 3.0}


def best_of(fn: Callable[[], object], repeat: int, cohort: object) -> tuple[float, float, object]:
    """Best wall time of ``repeat`` runs, each from ``cohort`` with nothing kept, the CPU time of that run, and the
    last result."""
    from analytics.outcomes.memo import forget

    best, cpu, out = float("inf"), float("nan"), None
    for _ in range(repeat):
        forget(cohort)
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall, used = time.perf_counter() - w0, time.process_time() - c0
        if wall < best:
            best, cpu = wall, used
    return best, cpu, out


def cohort_of_size(n: int):
    from analytics.outcomes.cohort import build_cohort
    from analytics.outcomes.settings import Settings
    from analytics.sample import write_clinic
    from schemas.validate import load_exports

    with tempfile.TemporaryDirectory() as tmp:
        write_clinic(tmp, n_patients=n, seed=7)
        d = Path(tmp)
        data = load_exports(d / "sessions.csv", d / "followups.csv", d / "patients.csv")
    return build_cohort(data, Settings())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[5_000, 20_000, 50_000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from analytics.outcomes import trajectories
    from analytics.outcomes.subgroups import who_benefits

    result: dict = {"machine": {"python": platform.python_version(), "platform": platform.platform(),
                                "cpus": os.cpu_count(), "load_average_at_start": list(os.getloadavg()),
                                "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS")},
                    "sizes": {}, "targets": TARGETS}
    rows = []
    for n in args.sizes:
        cohort = cohort_of_size(n)
        phq = cohort.measures[cohort.measures["measure"] == "phq9"]
        who_benefits(cohort)  # warm-up (imports, first-call caches)
        entry: dict = {"patients": len(cohort.patients), "phq9_scores": len(phq)}
        for label, outcomes in (("who_benefits", ("relapse_hr", "phq9_slope_difference")),
                                ("relapse_part", ("relapse_hr",)), ("phq9_slope_part", ("phq9_slope_difference",))):
            wall, cpu, out = best_of(lambda o=outcomes, c=cohort: who_benefits(c, outcomes=o), args.repeat, cohort)
            entry[label] = {"seconds": round(wall, 3), "cpu_seconds": round(cpu, 3)}
            if label == "who_benefits":
                entry[label]["rows"] = len(out.table)  # type: ignore[attr-defined]
            rows.append((n, label, wall, cpu))
        if n == max(args.sizes):
            for label, fn in (("response_durability", trajectories.response_durability),
                              ("phq9_model", trajectories.phq9_model)):
                wall, cpu, _ = best_of(lambda f=fn, c=cohort: f(c), args.repeat, cohort)
                entry[label] = {"seconds": round(wall, 3), "cpu_seconds": round(cpu, 3)}
                rows.append((n, label, wall, cpu))
            for label, kwargs in (("trajectory_default", {}),
                                  ("trajectory_group_covariates", {"by": "program", "adjust": ("age", "sex")}),
                                  ("trajectory_group_covariates_piecewise",
                                   {"by": "program", "adjust": ("age", "sex"), "time": "piecewise"})):
                wall, cpu, fit = best_of(lambda kw=kwargs, c=cohort: trajectories.fit_trajectory(c, **kw),
                                         args.repeat, cohort)
                entry[label] = {"seconds": round(wall, 3), "cpu_seconds": round(cpu, 3),
                                "converged": bool(fit.converged),  # type: ignore[attr-defined]
                                "random_slope": bool(fit.random_slope),  # type: ignore[attr-defined]
                                "n_fixed_effects": len(fit.fixed)}  # type: ignore[attr-defined]
                rows.append((n, label, wall, cpu))
        result["sizes"][str(n)] = entry
    result["machine"]["load_average_at_end"] = list(os.getloadavg())
    big = result["sizes"][str(max(args.sizes))]
    if max(args.sizes) == 50_000:
        result["at_50k_vs_targets"] = {
            "who_benefits_50k_seconds": big["who_benefits"]["seconds"],
            "trajectory_default_50k_seconds": big["trajectory_default"]["seconds"],
            "trajectory_group_covariates_50k_seconds": big["trajectory_group_covariates"]["seconds"]}

    print(f"{'patients':>9}  {'what':<40} {'wall s':>8} {'cpu s':>8}")
    for n, label, wall, cpu in rows:
        print(f"{n:>9}  {label:<40} {wall:>8.3f} {cpu:>8.3f}")
    print("load average start/end:", result["machine"]["load_average_at_start"][0],
          result["machine"]["load_average_at_end"][0])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
