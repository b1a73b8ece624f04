"""Benchmark (issues 6 and 21): the whole ``kap-outcomes analyze`` against R's ``lmer`` alone, at 20,000 and 200,000
patients; and (``--intervals``) the same command with the hand-written quantiles of
``analytics/engines/intervals.py`` against SciPy's.

The CLI run is what a user waits for: a fresh process that starts Python, reads and validates the three CSV files,
builds the cohort, fits the survival, trajectory and benchmark sections and writes the JSON, in one process (forking
workers for the benchmark figures was tried and measured no faster at 20,000 or 50,000 patients). ``lmer`` gets only
the model fit of the trajectory model ``analyze`` fitted, by its formula in the JSON (e.g. the bend at week 4,
``phq9 ~ weeks + weeks_after_4 + (1 + weeks | patient_id)``), by REML on exactly the PHQ-9 rows our model uses
(reading the CSV into R is not timed). Both best of three, in the same run. The fixed
effects of the two are compared as a check that the same model was fitted. Targets: ``lmer`` ÷ ``analyze`` > 1 at
20,000 patients (issue 6), ≥ 5 at 200,000 (issue 21). Writes perf/results/analyze.json (one entry per size).

``--intervals N`` (issue 21) times ``analyze`` at N patients three ways, interleaved, best of three each: the module
as it is, and with its functions swapped (in the timed process only, before any caller imports them) for
``scipy.stats`` calls (``norm.ppf``, ``t.ppf``, ``norm.sf``, ``chi2.sf``, ``chi2.ppf``, with ``scipy.stats``
imported with the module) or for the ``scipy.special`` functions those call (``ndtri``, ``stdtrit``, ``ndtr``,
``chdtrc``, ``gammaincinv``). Writes perf/results/analyze_intervals.json.

    uv run --frozen python perf/bench_analyze.py [--patients 20000 200000]
    uv run --frozen python perf/bench_analyze.py --intervals 50000
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

R_SCRIPT = r"""
suppressPackageStartupMessages({library(lme4); library(jsonlite)})
args <- commandArgs(trailingOnly = TRUE)  # result file, scores file, formula, knot (weeks; NA: none)
d <- read.csv(args[2], colClasses = c("character", "numeric", "numeric"))
d$patient_id <- factor(d$patient_id)
knot <- as.numeric(args[4])
if (!is.na(knot)) d[[paste0("weeks_after_", args[4])]] <- pmax(d$weeks - knot, 0)
f <- as.formula(args[3])
times <- c()
for (i in 1:3) times <- c(times, system.time(m <- lmer(f, d))[["elapsed"]])
writeLines(toJSON(list(seconds = min(times), all = times, fixed = unname(fixef(m)), n_obs = nrow(d),
                       lme4 = as.character(packageVersion("lme4"))), auto_unbox = TRUE, digits = I(15)), args[1])
"""

# ``kap-outcomes <args>`` with the functions of analytics/engines/intervals.py swapped for SciPy's (argv[1] names the
# variant). The module is imported and patched first, so every ``from analytics.engines.intervals import ...`` of
# the analysis gets the swapped functions; the variant's SciPy module is imported with it, as a module-level import
# of a rewritten intervals.py would be.
SWAP = r"""
import math, sys
import numpy as np
variant = sys.argv.pop(1)
if variant != "hand-written":
    from analytics.engines import intervals as iv
    if variant == "scipy.stats":
        from scipy import stats

        def z_crit(conf_level):
            iv._check(conf_level)
            return float(stats.norm.ppf(0.5 + conf_level / 2))

        def t_crit(conf_level, df):
            iv._check(conf_level)
            return float(stats.t.ppf(0.5 + conf_level / 2, df)) if df > 0 else math.nan

        def norm_two_sided_p(z):
            values = np.asarray(z, dtype=float)
            out = 2 * stats.norm.sf(np.abs(values))
            return float(out) if values.ndim == 0 else out

        def chi2_sf(x, df):
            return float(stats.chi2.sf(x, df))

        def chi2_ppf(q, df):
            return stats.chi2.ppf(q, np.asarray(df, dtype=float))
    elif variant == "scipy.special":
        from scipy import special

        def z_crit(conf_level):
            iv._check(conf_level)
            return float(special.ndtri(0.5 + conf_level / 2))

        def t_crit(conf_level, df):
            iv._check(conf_level)
            return float(special.stdtrit(df, 0.5 + conf_level / 2)) if df > 0 else math.nan

        def norm_two_sided_p(z):
            values = np.asarray(z, dtype=float)
            out = 2 * special.ndtr(-np.abs(values))
            return float(out) if values.ndim == 0 else out

        def chi2_sf(x, df):
            return float(special.chdtrc(df, x))

        def chi2_ppf(q, df):
            return 2 * special.gammaincinv(np.asarray(df, dtype=float) / 2, q)
    else:
        raise SystemExit(f"unknown variant {variant!r}")
    for f in (z_crit, t_crit, norm_two_sided_p, chi2_sf, chi2_ppf):
        setattr(iv, f.__name__, f)
from analytics.cli import run
sys.argv[0] = "kap-outcomes"
run()
"""
VARIANTS = ("hand-written", "scipy.stats", "scipy.special")


def _size(n_patients: int, tmp: Path) -> dict:
    """``analyze`` and ``lmer`` at ``n_patients``, best of three each."""
    import cli_run

    from analytics.outcomes.cohort import build_cohort
    from analytics.outcomes.settings import Settings
    from analytics.outcomes.trajectories import measure_frame
    from analytics.sample import write_clinic
    from schemas.validate import load_exports

    d = tmp / str(n_patients)
    write_clinic(d, n_patients=n_patients, seed=7)
    cmd = ["analyze", "--sessions", str(d / "sessions.csv"), "--followups", str(d / "followups.csv"),
           "--patients", str(d / "patients.csv"), "--json", str(d / "a.json")]
    timed = [cli_run.run(cmd, tree=False) for _ in range(3)]  # analyze does not fork
    runs = [t for t, _ in timed]
    ours = json.loads((d / "a.json").read_text())["trajectories"]["phq9"]

    cohort = build_cohort(load_exports(d / "sessions.csv", d / "followups.csv", d / "patients.csv"), Settings())
    scores = measure_frame(cohort, "phq9").rename(columns={"value": "phq9"})
    scores[["patient_id", "weeks", "phq9"]].to_csv(d / "phq9.csv", index=False)
    del cohort
    result = {
        "patients": n_patients, "phq9_scores": len(scores),
        "scores_per_patient": round(len(scores) / scores["patient_id"].nunique(), 2),
        "cli_analyze_seconds": round(min(runs), 2), "cli_analyze_all_runs": [round(r, 2) for r in runs],
        "cli_peak_memory_mb": round(max(m for _, m in timed)),
        "lmer_seconds": None, "lmer_over_cli_analyze": None, "notes": [],
    }
    rscript = shutil.which("Rscript")
    if rscript is None:
        result["notes"].append("Rscript not found: lmer not timed.")
    elif "ns(" in ours["formula"]:
        result["notes"].append(f"analyze chose a natural spline ({ours['formula']}): its knots are not in the JSON, "
                               "so lmer was not timed.")
    else:
        # the model analyze fitted, by its formula (lme4 syntax): ``weeks`` or ``weeks + weeks_after_4`` (a bend)
        knot = re.search(r"weeks_after_([0-9.]+)", ours["formula"])
        (d / "bench.R").write_text(R_SCRIPT)
        subprocess.run([rscript, str(d / "bench.R"), str(d / "r.json"), str(d / "phq9.csv"), ours["formula"],
                        knot.group(1) if knot else "NA"], check=True, capture_output=True)
        r = json.loads((d / "r.json").read_text())
        ours_fixed = [t["estimate"] for t in ours["fixed"]]
        result.update({
            "formula": ours["formula"], "lmer_seconds": round(r["seconds"], 2), "lmer_all_runs": r["all"], "lme4_version": r["lme4"],
            "lmer_over_cli_analyze": round(r["seconds"] / min(runs), 2),
            "max_rel_diff_fixed_vs_lmer": max(abs(a - b) / abs(b) for a, b in zip(ours_fixed, r["fixed"])),
            "same_n_obs": int(r["n_obs"]) == int(ours["n_obs"]),
        })
    shutil.rmtree(d, ignore_errors=True)
    result["load_average_at_end"] = os.getloadavg()
    print(json.dumps(result), flush=True)
    return result


def sizes(patients: list[int]) -> None:
    import cli_run

    with tempfile.TemporaryDirectory() as tmp:
        runs = [_size(n, Path(tmp)) for n in patients]
    cli_run.write("analyze", {
        "runs": runs,
        "target": "lmer_seconds / cli_analyze_seconds > 1 at 20,000 patients (issue 6), >= 5 at 200,000 (issue 21)",
    })


def _differences(a: object, b: object, path: str = "") -> dict:
    """How two analysis JSONs differ: texts that differ, largest relative difference of the numbers."""
    out = {"texts": [], "max_rel_diff": 0.0}
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        parts = [_differences(a[k], b[k], f"{path}/{k}") for k in a]
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        parts = [_differences(x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b))]
    elif isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        scale = max(abs(a), abs(b))
        return {"texts": [], "max_rel_diff": abs(a - b) / scale if scale else 0.0}
    else:
        return {"texts": [] if a == b else [path], "max_rel_diff": 0.0}
    for part in parts:
        out["texts"] += part["texts"]
        out["max_rel_diff"] = max(out["max_rel_diff"], part["max_rel_diff"])
    return out


def intervals(n_patients: int) -> None:
    """``analyze`` at ``n_patients`` with the hand-written quantiles and with SciPy's, interleaved, best of 3."""
    import cli_run

    from analytics.sample import write_clinic

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        write_clinic(d, n_patients=n_patients, seed=7)
        times: dict[str, list[float]] = {v: [] for v in VARIANTS}
        outputs: dict[str, dict] = {}
        for _ in range(3):
            for variant in VARIANTS:
                out = d / f"{variant}.json"
                cmd = [sys.executable, "-c", SWAP, variant, "analyze", "--sessions", str(d / "sessions.csv"),
                       "--followups", str(d / "followups.csv"), "--patients", str(d / "patients.csv"),
                       "--json", str(out)]
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
                times[variant].append(round(time.perf_counter() - t0, 3))
                outputs[variant] = json.loads(out.read_text())
        imports = {}
        for variant, module in (("scipy.stats", "scipy.stats"), ("scipy.special", "scipy.special")):
            probe = subprocess.run([sys.executable, "-X", "importtime", "-c",
                                    f"import analytics.engines.intervals, {module}"], cwd=ROOT, check=True,
                                   capture_output=True, text=True)
            line = [x for x in probe.stderr.splitlines() if x.rstrip().endswith(f"| {module}")][-1]
            imports[variant] = round(int(line.split("|")[1]) / 1e6, 3)  # cumulative microseconds
    best = {v: min(t) for v, t in times.items()}
    cli_run.write("analyze_intervals", {
        "patients": n_patients, "best_seconds": best, "all_runs": times,
        "scipy_stats_minus_hand_written_seconds": round(best["scipy.stats"] - best["hand-written"], 3),
        "scipy_special_minus_hand_written_seconds": round(best["scipy.special"] - best["hand-written"], 3),
        "import_seconds_after_intervals": imports,
        "output_differences": {v: _differences(outputs["hand-written"], outputs[v]) for v in VARIANTS[1:]},
        "load_average_at_end": os.getloadavg(),
        "user_visible": "a difference of ~0.2 s or more (issue 21)",
    })


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--intervals", type=int, metavar="N", help="compare the quantiles at N patients instead")
    args = parser.parse_args()
    if args.intervals:
        intervals(args.intervals)
    else:
        sizes(args.patients)


if __name__ == "__main__":
    main()
