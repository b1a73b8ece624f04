"""Benchmark: linear mixed models at 1k, 5k, 20k, 50k patients — fast engine vs statsmodels MixedLM vs lme4.

One synthetic data set per size (~5.5 visits per patient, unbalanced, irregular times in weeks; three programs,
age and sex; true random intercept and slope) is written once as CSV and fitted, in the same run, with:

* ours: :mod:`analytics.engines.lmm` from arrays (design, per-patient blocks, REML fit, SEs and CIs), and the cohort API
  :func:`analytics.outcomes.trajectories.fit_trajectory` as the dashboard calls it (long table → fixed-effect table);
* statsmodels ``MixedLM`` (REML, lbfgs) on the same arrays, from the smallest size up while a fit takes less than
  ``--statsmodels-limit`` seconds (larger sizes are skipped with a note: its time grows faster than linearly);
* R ``lme4::lmer`` (REML, default optimiser) when Rscript is installed; only ``lmer()`` is timed, not reading.

Two models: ``default`` = ``y ~ weeks + (1 + weeks | id)`` (the CLI's model) and ``group`` =
``y ~ weeks * program + age + sex + (1 + weeks | id)``. Also the whole ``trajectories_json`` (the ``analyze``
section) on 20,000 patients × 7 visits, against ``lmer`` alone on the same data.

Each of our timings is the best of ``--repeat`` runs, data already in memory. Estimates are compared across
engines (largest relative difference of the fixed effects). Prints a table and writes
``perf/results/trajectories.json``.

    uv run --frozen python perf/bench_trajectories.py [--sizes 1000 5000 20000 50000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analytics.engines import lmm
from analytics.outcomes import trajectories
from analytics.outcomes.cohort import Cohort
from analytics.outcomes.settings import Settings

TARGETS = {"default": 1.0, "group": 3.0}  # seconds at 50,000 patients (issue 6)
PROGRAMS = np.array(["ketamine only", "ketamine + therapy", "ketamine + IOP"])


def simulate(n_patients: int, *, visits: tuple[int, int] = (2, 10), seed: int = 1,
             fixed_visits: int | None = None) -> pd.DataFrame:
    """Unbalanced PHQ-9-like data: 2–9 visits (mean 5.5) at irregular times over 0–26 weeks."""
    rng = np.random.default_rng(seed)
    k = np.full(n_patients, fixed_visits) if fixed_visits else rng.integers(visits[0], visits[1], n_patients)
    ids = np.repeat(np.arange(n_patients), k)
    n = len(ids)
    weeks = rng.uniform(0, 26, n)
    first = np.r_[0, np.cumsum(k)[:-1]]
    weeks[first] = 0.0
    prog = rng.integers(0, 3, n_patients)
    age = rng.integers(18, 75, n_patients)
    sex = rng.choice(np.array(["female", "male"]), n_patients)
    u0 = rng.normal(0, 3.5, n_patients)
    u1 = rng.normal(0, 0.12, n_patients) - 0.02 * u0 / 3.5
    slope = -0.25 - 0.08 * (prog == 1) - 0.04 * (prog == 2) + u1
    y = 16 + u0[ids] + slope[ids] * weeks + 0.02 * (age[ids] - 45) + rng.normal(0, 2.5, n)
    return pd.DataFrame({"id": ids, "weeks": weeks, "y": np.round(y, 3), "program": PROGRAMS[prog[ids]],
                         "age": age[ids], "sex": sex[ids]})


def design(d: pd.DataFrame, model: str) -> tuple[np.ndarray, list[str]]:
    w = d["weeks"].to_numpy()
    cols = [np.ones(len(d)), w]
    names = ["Intercept", "weeks"]
    if model == "group":
        p = d["program"].to_numpy()
        for lv in ("ketamine + IOP", "ketamine only"):  # reference: "ketamine + therapy" (R's alphabetical first)
            cols.append((p == lv).astype(float))
            names.append(f"program{lv}")
        for lv in ("ketamine + IOP", "ketamine only"):
            cols.append(w * (p == lv))
            names.append(f"weeks:program{lv}")
        cols.append(d["age"].to_numpy(float))
        names.append("age")
        cols.append((d["sex"].to_numpy() == "male").astype(float))
        names.append("sexmale")
    return np.column_stack(cols), names


def fast_from_arrays(d: pd.DataFrame, model: str) -> tuple[float, lmm.LMMResult]:
    t0 = time.perf_counter()
    X, names = design(d, model)
    res = lmm.fit_lmm(d["y"].to_numpy(), X, d["id"].to_numpy(), d["weeks"].to_numpy(), names=tuple(names))
    _ = res.beta - 1.96 * res.se  # CIs
    return time.perf_counter() - t0, res


def cohort_of(d: pd.DataFrame) -> Cohort:
    measures = pd.DataFrame({"patient_id": d["id"].astype(str), "date": pd.NaT, "days": d["weeks"] * 7,
                             "weeks": d["weeks"], "measure": "phq9", "value": d["y"].astype(float),
                             "source": "followup"})
    pts = d.drop_duplicates("id")[["id", "program", "age", "sex"]].rename(columns={"id": "patient_id"})
    pts["patient_id"] = pts["patient_id"].astype(str)
    return Cohort(patients=pts.reset_index(drop=True), measures=measures, followups=pd.DataFrame(),
                  sessions=pd.DataFrame(), settings=Settings())


def fast_cohort_api(cohort: Cohort, model: str) -> tuple[float, trajectories.TrajectoryFit]:
    t0 = time.perf_counter()
    if model == "default":
        fit = trajectories.fit_trajectory(cohort)
    else:
        fit = trajectories.fit_trajectory(cohort, by="program", adjust=("age", "sex"))
    return time.perf_counter() - t0, fit


def statsmodels_fit(d: pd.DataFrame, model: str) -> tuple[float, np.ndarray, bool]:
    from statsmodels.regression.mixed_linear_model import MixedLM

    X, _ = design(d, model)
    z = np.column_stack([np.ones(len(d)), d["weeks"].to_numpy()])
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = MixedLM(d["y"].to_numpy(), X, groups=d["id"].to_numpy(), exog_re=z).fit(reml=True, method=["lbfgs"])
    return time.perf_counter() - t0, np.asarray(res.fe_params), bool(res.converged)


R_SCRIPT = r"""
suppressPackageStartupMessages({library(lme4); library(jsonlite)})
args <- commandArgs(trailingOnly = TRUE)
out <- list()
for (f in args[-1]) {
  d <- read.csv(f); d$id <- factor(d$id)
  d$program <- factor(d$program, levels = c("ketamine + therapy", "ketamine + IOP", "ketamine only"))
  d$sex <- factor(d$sex, levels = c("female", "male"))
  key <- basename(f)
  t1 <- system.time(m1 <- lmer(y ~ weeks + (weeks | id), d))[["elapsed"]]
  res <- list(default = list(seconds = t1, fixed = unname(fixef(m1)), names = names(fixef(m1)),
                             reml_criterion = m1@devcomp$cmp[["REML"]], singular = isSingular(m1)))
  if (!grepl("json7", key)) {
    t2 <- system.time(m2 <- lmer(y ~ weeks * program + age + sex + (weeks | id), d))[["elapsed"]]
    res$group <- list(seconds = t2, fixed = unname(fixef(m2)), names = names(fixef(m2)),
                      reml_criterion = m2@devcomp$cmp[["REML"]])
  }
  out[[key]] <- res
}
writeLines(toJSON(out, auto_unbox = TRUE, digits = I(15)), args[1])
"""


def run_r(files: list[Path], tmp: Path) -> dict | None:
    rscript = shutil.which("Rscript")
    if rscript is None:
        return None
    script = tmp / "bench.R"
    script.write_text(R_SCRIPT)
    out = tmp / "r.json"
    proc = subprocess.run([rscript, str(script), str(out), *map(str, files)], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        print("R failed:", proc.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(out.read_text())


def rel_diff(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-8)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000, 50000])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--statsmodels-limit", type=float, default=60.0,
                    help="stop running statsmodels at larger sizes once one fit took longer than this (s)")
    ap.add_argument("--no-r", action="store_true")
    args = ap.parse_args()

    data = {n: simulate(n, seed=n) for n in args.sizes}
    json7 = simulate(20000, seed=7, fixed_visits=7)
    results: dict = {"machine": {"python": platform.python_version(), "platform": platform.platform(),
                                 "cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()},
                     "sizes": {}, "notes": []}
    with tempfile.TemporaryDirectory() as tmpname:
        tmp = Path(tmpname)
        files = []
        for n, d in data.items():
            f = tmp / f"lmm_{n}.csv"
            d.to_csv(f, index=False)
            files.append(f)
        f7 = tmp / "json7_20000.csv"
        json7.to_csv(f7, index=False)
        r = None if args.no_r else run_r([*files, f7], tmp)
        if r is None:
            results["notes"].append("R/lme4 not run (Rscript missing or --no-r).")

        sm_stop = False
        for n, d in data.items():
            row: dict = {"patients": n, "observations": len(d)}
            cohort = cohort_of(d)
            for model in ("default", "group"):
                t_arr = min(fast_from_arrays(d, model)[0] for _ in range(args.repeat))
                _, res = fast_from_arrays(d, model)
                t_api, fit = min((fast_cohort_api(cohort, model) for _ in range(args.repeat)), key=lambda x: x[0])
                m: dict = {"fast_seconds": t_arr, "fast_cohort_api_seconds": t_api, "fast_converged": res.converged,
                           "fast_evaluations": res.n_evaluations, "fast_random_slope": fit.random_slope}
                if r is not None:
                    rr = r[f"lmm_{n}.csv"][model]
                    m["lme4_seconds"] = float(rr["seconds"])
                    m["lme4_over_fast"] = m["lme4_seconds"] / t_arr
                    r_fixed = dict(zip(rr.get("names", res.names), rr["fixed"]))
                    r_fixed = {("Intercept" if k == "(Intercept)" else k): v for k, v in r_fixed.items()}
                    r_beta = np.array([r_fixed[k] for k in res.names])
                    m["max_rel_diff_fixed_vs_lme4"] = rel_diff(res.beta, r_beta)
                    m["max_diff_fixed_in_se_vs_lme4"] = float(np.max(np.abs(res.beta - r_beta) / res.se))
                    # REML criterion at the optimum: ours minus lme4's (≤ 0: ours at least as far down)
                    m["reml_criterion_ours_minus_lme4"] = res.deviance - float(rr["reml_criterion"])
                row[model] = m
            if not sm_stop:
                t_sm, beta_sm, conv = statsmodels_fit(d, "default")
                row["default"]["statsmodels_seconds"] = t_sm
                row["default"]["statsmodels_over_fast"] = t_sm / row["default"]["fast_seconds"]
                row["default"]["statsmodels_converged"] = conv
                row["default"]["max_rel_diff_fixed_vs_statsmodels"] = rel_diff(fast_from_arrays(d, "default")[1].beta,
                                                                               beta_sm)
                if t_sm > args.statsmodels_limit:
                    sm_stop = True
                    results["notes"].append(f"statsmodels MixedLM took {t_sm:.0f} s at {n} patients; larger sizes "
                                            "skipped (time grows faster than linearly).")
            else:
                row["default"]["statsmodels_seconds"] = None
            results["sizes"][str(n)] = row
            print(f"… {n} patients done", file=sys.stderr)

        c7 = cohort_of(json7)
        t_json = min(_timed(trajectories.trajectories_json, c7) for _ in range(args.repeat))
        results["trajectories_json_20k_x7"] = {"patients": 20000, "observations": len(json7),
                                               "ours_seconds": t_json}
        if r is not None:
            t_l = float(r["json7_20000.csv"]["default"]["seconds"])
            results["trajectories_json_20k_x7"].update({"lme4_lmer_seconds": t_l, "lme4_over_ours": t_l / t_json})

    results["machine"]["load_average_at_end"] = os.getloadavg()
    _print(results)
    out = ROOT / "perf" / "results" / "trajectories.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(ROOT)}")


def _timed(fn, *a) -> float:
    t0 = time.perf_counter()
    fn(*a)
    return time.perf_counter() - t0


def _fmt(x: float | None, unit: str = "s") -> str:
    return "—" if x is None else (f"{x:.3f} {unit}" if x < 10 else f"{x:.1f} {unit}")


def _print(res: dict) -> None:
    print(f"\n{'patients':>9} {'obs':>8} | {'model':7} | {'fast':>9} {'cohort API':>10} | {'statsmodels':>11} "
          f"{'ratio':>6} | {'lme4':>8} {'ratio':>6} | {'Δβ/SE vs lme4':>13} {'Δcrit':>8}")
    for n, row in res["sizes"].items():
        for model in ("default", "group"):
            m = row[model]
            sm = m.get("statsmodels_seconds")
            print(f"{n:>9} {row['observations']:>8} | {model:7} | {_fmt(m['fast_seconds']):>9} "
                  f"{_fmt(m['fast_cohort_api_seconds']):>10} | {_fmt(sm):>11} "
                  f"{(str(round(m['statsmodels_over_fast'])) + '×') if sm else '—':>6} | "
                  f"{_fmt(m.get('lme4_seconds')):>8} "
                  f"{(str(round(m['lme4_over_fast'], 1)) + '×') if m.get('lme4_seconds') else '—':>6} | "
                  f"{m.get('max_diff_fixed_in_se_vs_lme4', float('nan')):>13.1e} "
                  f"{m.get('reml_criterion_ours_minus_lme4', float('nan')):>8.1e}")
    j = res["trajectories_json_20k_x7"]
    print(f"\ntrajectories_json on 20,000 patients × 7 visits: {_fmt(j['ours_seconds'])}"
          + (f"; lme4 lmer alone {_fmt(j['lme4_lmer_seconds'])} ({j['lme4_over_ours']:.1f}× ours)"
             if "lme4_lmer_seconds" in j else ""))
    big = res["sizes"].get("50000")
    if big:
        for model, target in TARGETS.items():
            t = big[model]["fast_seconds"]
            print(f"target {model} at 50k < {target:g} s: {t:.3f} s {'OK' if t < target else 'MISSED'}")
    for note in res["notes"]:
        print("note:", note)
    print("load average (1, 5, 15 min) at start / end:", res["machine"]["load_average_at_start"], "/",
          res["machine"]["load_average_at_end"], f"on {res['machine']['cpus']} CPUs")


if __name__ == "__main__":
    main()
