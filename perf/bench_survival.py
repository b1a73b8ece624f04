"""Benchmark: Kaplan–Meier + log-rank + Cox (Efron) + PH test on 500,000 patients, ours vs R vs lifelines.

One synthetic data set (3 programs, age and baseline PHQ-9; days with many ties; ~70% events) is written once
as CSV and timed, in the same run, with:

* ours: :mod:`analytics.outcomes.survival` array-level steps, and the whole survival section as the dashboard runs
  it (``relapse_curves`` + ``compare_groups`` with two adjustments) on a cohort of those patients;
* statsmodels (``SurvfuncRight``, ``survdiff``, ``PHReg``), the engines the brief named as defaults;
* R ``survival`` (``survfit``, ``survdiff``, ``coxph``, ``cox.zph``), when Rscript is installed;
* lifelines (``KaplanMeierFitter``, ``multivariate_logrank_test``, ``CoxPHFitter``,
  ``proportional_hazard_test``) in its own environment ``perf/.venv-lifelines`` (lifelines pins pandas < 3),
  created with ``uv venv`` + ``uv pip install lifelines`` when missing; never the project's environment.

Each timing is the best of ``--repeat`` runs, data already in memory (reading the CSV is not timed); the
1-minute load average at start and end is recorded, since other work on the machine slows every engine.
lifelines' ``proportional_hazard_test`` took 980 s at 500,000 patients here, so it is timed only up to 100,000
patients unless ``--lifelines-ph-test`` is given.
Prints a table with ratios and writes ``perf/results/survival.json``.

    uv run --frozen python perf/bench_survival.py [--patients 500000] [--repeat 3] [--no-lifelines]
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
LIFELINES_VENV = ROOT / "perf" / ".venv-lifelines"
RESULTS = ROOT / "perf" / "results" / "survival.json"
GROUPS = ("ketamine only", "ketamine + therapy", "ketamine + group")


def _best(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def make_data(n: int, path: Path, seed: int = 20261125) -> None:
    """3 programs (HR 1, 0.7, 0.85), age (HR 0.99/year), baseline PHQ-9 (HR 1.02/point); Weibull times."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    g = rng.choice(3, size=n, p=[0.45, 0.35, 0.20])
    age = np.floor(18 + 62 * rng.beta(2.2, 4.0, n))
    phq = np.clip(np.round(rng.normal(15, 5, n)), 0, 27)
    lp = np.log([1.0, 0.7, 0.85])[g] + np.log(0.99) * (age - 40) + np.log(1.02) * (phq - 15)
    t = np.ceil(200 * (rng.exponential(1, n) * np.exp(-lp)) ** (1 / 0.8))
    c = np.ceil(rng.uniform(30, 730, n))
    pd.DataFrame({"time": np.minimum(t, c), "event": (t <= c).astype(int), "program": np.asarray(GROUPS)[g],
                  "age": age, "baseline_phq9": phq}).to_csv(path, index=False)


def bench_ours(path: Path, repeat: int) -> dict:
    import numpy as np
    import pandas as pd
    from statsmodels.duration.hazard_regression import PHReg
    from statsmodels.duration.survfunc import SurvfuncRight, survdiff

    from analytics.outcomes import survival as sv
    from analytics.outcomes.cohort import Cohort
    from analytics.outcomes.settings import Settings

    d = pd.read_csv(path)
    t, e, g = d["time"].to_numpy(float), d["event"].to_numpy(bool), d["program"].to_numpy(str)
    design = pd.DataFrame({"program=ketamine + therapy": (g == GROUPS[1]).astype(float),
                           "program=ketamine + group": (g == GROUPS[2]).astype(float),
                           "age": d["age"].to_numpy(float), "baseline_phq9": d["baseline_phq9"].to_numpy(float)})
    terms = {"program": list(design.columns[:2]), "age": ["age"], "baseline_phq9": ["baseline_phq9"]}

    def km():
        return [sv.km_median(sv.kaplan_meier(t[g == k], e[g == k])) for k in GROUPS]

    out: dict[str, float] = {}
    out["km"], medians = _best(km, repeat)
    out["logrank"], lr = _best(lambda: sv.logrank(t, e, g), repeat)
    out["cox"], fit = _best(lambda: sv.cox_ph(t, e, design, terms=terms, ph_transform=None), repeat)
    out["cox+ph_test"], fit_ph = _best(lambda: sv.cox_ph(t, e, design, terms=terms), repeat)

    patients = pd.DataFrame({"patient_id": np.arange(len(d)).astype(str), "program": d["program"].astype("string"),
                             "age": d["age"], "baseline_phq9": d["baseline_phq9"], "has_followup": True,
                             "relapsed": e, "days_to_event": t})
    for col in sv.GROUPING_COLUMNS + ("primary_substance", "sex"):
        if col not in patients:
            patients[col] = pd.Series(pd.NA, index=patients.index, dtype="string")
    cohort = Cohort(patients=patients, measures=pd.DataFrame(), followups=pd.DataFrame(),
                    sessions=pd.DataFrame(), settings=Settings())

    def section():
        curves = sv.relapse_curves(cohort, by="program")
        return curves, sv.compare_groups(cohort, by="program", reference=GROUPS[0],
                                         adjust=("age", "baseline_phq9"))

    out["section"], (_curves, cmp) = _best(section, repeat)
    out["statsmodels_km"], _ = _best(lambda: [SurvfuncRight(t[g == k], e[g == k]) for k in GROUPS], repeat)
    out["statsmodels_logrank"], (sm_chisq, _) = _best(lambda: survdiff(t, e.astype(float), g), repeat)
    out["statsmodels_phreg"], sm = _best(lambda: PHReg(t, design.to_numpy(), status=e.astype(float),
                                                        ties="efron").fit(), 1)
    return {"seconds": out,
            "numbers": {"medians": {k: m[0] for k, m in zip(GROUPS, medians)}, "logrank_chisq": lr.chisq,
                        "coef": dict(zip(fit.table["column"], fit.table["coef"])),
                        "se": dict(zip(fit.table["column"], fit.table["se"])),
                        "ph_test": dict(zip(fit_ph.ph_test["term"], fit_ph.ph_test["chisq"])),
                        "statsmodels_logrank_chisq": float(sm_chisq),
                        "statsmodels_coef": dict(zip(fit.table["column"], map(float, sm.params)))},
            "section_hr": cmp.hazard_ratios["estimate"].tolist()}


R_SCRIPT = r"""
suppressPackageStartupMessages({library(survival); library(jsonlite)})
args <- commandArgs(TRUE); repeat_n <- as.integer(args[2])
d <- if (requireNamespace("data.table", quietly = TRUE)) as.data.frame(data.table::fread(args[1])) else read.csv(args[1])
d$program <- relevel(factor(d$program), "ketamine only")
best <- function(expr) { e <- substitute(expr); ts <- c(); for (i in seq_len(repeat_n)) {
  t0 <- proc.time()[["elapsed"]]; val <- eval(e, parent.frame()); ts <- c(ts, proc.time()[["elapsed"]] - t0) }
  list(t = min(ts), val = val) }
km <- best({f <- survfit(Surv(time, event) ~ program, data = d); summary(f)$table})
lr <- best(survdiff(Surv(time, event) ~ program, data = d))
cx <- best(coxph(Surv(time, event) ~ program + age + baseline_phq9, data = d, ties = "efron", x = TRUE))
zp <- best(cox.zph(cx$val))
cat(toJSON(list(seconds = list(km = km$t, logrank = lr$t, cox = cx$t, "cox+ph_test" = cx$t + zp$t),
  numbers = list(medians = as.list(setNames(km$val[, "median"], sub("^program=", "", rownames(km$val)))),
                 logrank_chisq = lr$val$chisq, coef = as.list(coef(cx$val)), se = as.list(sqrt(diag(vcov(cx$val)))),
                 ph_test = as.list(setNames(zp$val$table[, "chisq"], rownames(zp$val$table)))),
  version = as.character(packageVersion("survival"))), auto_unbox = TRUE, digits = NA))
"""

LIFELINES_SCRIPT = r"""
import json, sys, time
import numpy as np, pandas as pd, lifelines
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.statistics import multivariate_logrank_test, proportional_hazard_test
path, repeat = sys.argv[1], int(sys.argv[2])
d = pd.read_csv(path)
def best(fn, n=repeat):
    ts = []
    for _ in range(n):
        t0 = time.perf_counter(); out = fn(); ts.append(time.perf_counter() - t0)
    return min(ts), out
groups = sorted(d["program"].unique())
def km():
    res = {}
    for g in groups:
        s = d[d["program"] == g]
        res[g] = KaplanMeierFitter().fit(s["time"], s["event"]).median_survival_time_
    return res
t_km, med = best(km)
t_lr, lr = best(lambda: multivariate_logrank_test(d["time"], d["program"], d["event"]))
x = pd.DataFrame({"time": d["time"], "event": d["event"],
                  "program=ketamine + therapy": (d["program"] == "ketamine + therapy").astype(float),
                  "program=ketamine + group": (d["program"] == "ketamine + group").astype(float),
                  "age": d["age"], "baseline_phq9": d["baseline_phq9"]})
t_cox, cph = best(lambda: CoxPHFitter().fit(x, "time", "event"), 1)
run_ph = sys.argv[3] == "1"
t_ph, ph = best(lambda: proportional_hazard_test(cph, x, time_transform="km"), 1) if run_ph else (None, None)
print(json.dumps({"seconds": {"km": t_km, "logrank": t_lr, "cox": t_cox,
                              "cox+ph_test": t_cox + t_ph if run_ph else None},
                  "numbers": {"medians": {k: float(v) for k, v in med.items()},
                              "logrank_chisq": float(lr.test_statistic),
                              "coef": {k: float(v) for k, v in cph.params_.items()},
                              "se": {k: float(v) for k, v in cph.standard_errors_.items()}},
                  "version": lifelines.__version__}))
"""


def bench_r(path: Path, repeat: int) -> dict | None:
    if not shutil.which("Rscript"):
        return None
    script = path.with_name("bench_survival.R")
    script.write_text(R_SCRIPT)
    res = subprocess.run(["Rscript", str(script), str(path), str(repeat)], check=False, capture_output=True,
                         text=True)
    if res.returncode != 0:
        print("R failed:", res.stderr.strip()[-500:], file=sys.stderr)
        return None
    out = json.loads(res.stdout)
    rename = {"programketamine + therapy": "program=ketamine + therapy",
              "programketamine + group": "program=ketamine + group"}
    for key in ("coef", "se"):
        out["numbers"][key] = {rename.get(k, k): v for k, v in out["numbers"][key].items()}
    return out


def _lifelines_python() -> Path | None:
    py = LIFELINES_VENV / "bin" / "python"
    if py.exists():
        return py
    uv = shutil.which("uv")
    if not uv:
        return None
    try:
        subprocess.run([uv, "venv", "--quiet", str(LIFELINES_VENV)], check=True)
        subprocess.run([uv, "pip", "install", "--quiet", "--python", str(py), "lifelines"], check=True)
    except subprocess.CalledProcessError as err:
        print(f"could not set up lifelines in {LIFELINES_VENV}: {err}", file=sys.stderr)
        return None
    return py


def bench_lifelines(path: Path, repeat: int, ph_test: bool) -> dict | None:
    py = _lifelines_python()
    if py is None:
        return None
    script = path.with_name("bench_lifelines.py")
    script.write_text(LIFELINES_SCRIPT)
    res = subprocess.run([str(py), str(script), str(path), str(repeat), "1" if ph_test else "0"], check=False,
                         capture_output=True,
                         text=True)
    if res.returncode != 0:
        print("lifelines failed:", res.stderr.strip()[-800:], file=sys.stderr)
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])


def _total(x: dict | None) -> float | None:
    parts = [x["seconds"][key] for key in ("km", "logrank", "cox+ph_test")] if x else [None]
    return None if None in parts else sum(parts)


def _max_rel(a: dict, b: dict) -> float:
    keys = [k for k in a if k in b]
    return max(abs(a[k] - b[k]) / max(abs(b[k]), 1e-300) for k in keys) if keys else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-lifelines", action="store_true")
    parser.add_argument("--lifelines-ph-test", action="store_true",
                        help="also time lifelines' proportional_hazard_test (took 980 s at 500,000 patients here; "
                             "by default it runs only up to 100,000 patients)")
    args = parser.parse_args()

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "survival.csv"
        make_data(args.patients, path)
        ours = bench_ours(path, args.repeat)
        r = bench_r(path, args.repeat)
        ll_ph = args.lifelines_ph_test or args.patients <= 100_000
        ll = None if args.no_lifelines else bench_lifelines(path, args.repeat, ll_ph)

    s = ours["seconds"]
    rows = [("Kaplan–Meier + medians (3 groups)", "km"), ("log-rank", "logrank"), ("Cox, Efron (4 coef)", "cox"),
            ("Cox + PH test (Grambsch–Therneau)", "cox+ph_test")]
    fmt = "{:<36} {:>9} {:>9} {:>10} {:>8} {:>10}"
    print(f"\n{args.patients:,} patients, best of {args.repeat}; seconds\n")
    print(fmt.format("step", "ours", "R", "lifelines", "R/ours", "lifel/ours"))
    table = []
    for label, key in rows:
        rt = r["seconds"][key] if r else None
        lt = ll["seconds"][key] if ll else None
        table.append({"step": key, "ours": s[key], "r": rt, "lifelines": lt,
                      "r_over_ours": rt / s[key] if rt else None, "lifelines_over_ours": lt / s[key] if lt else None})
        print(fmt.format(label, f"{s[key]:.3f}", f"{rt:.3f}" if rt else "—", f"{lt:.3f}" if lt else "—",
                         f"{rt / s[key]:.1f}×" if rt else "—", f"{lt / s[key]:.1f}×" if lt else "—"))
    tot = {"ours": _total(ours), "r": _total(r), "lifelines": _total(ll)}
    print(fmt.format("KM + log-rank + Cox + PH test", f"{tot['ours']:.3f}", f"{tot['r']:.3f}" if tot["r"] else "—",
                     f"{tot['lifelines']:.3f}" if tot["lifelines"] else "—",
                     f"{tot['r'] / tot['ours']:.1f}×" if tot["r"] else "—",
                     f"{tot['lifelines'] / tot['ours']:.1f}×" if tot["lifelines"] else "—"))
    section_vs_r = r["seconds"]["cox"] / s["section"] if r else None
    print(f"\nwhole survival section (relapse_curves + compare_groups, 2 adjustments): {s['section']:.3f} s"
          + (f"; R coxph alone: {r['seconds']['cox']:.3f} s; R coxph / section = {section_vs_r:.2f} "
             "(target ≥ 1)" if r else ""))
    if ll and ll["seconds"]["cox+ph_test"] is None:
        print("lifelines proportional_hazard_test not timed above 100,000 patients (980 s at 500,000 on this "
              "machine); pass --lifelines-ph-test to time it.")
    print(f"statsmodels for comparison: SurvfuncRight {s['statsmodels_km']:.3f} s, survdiff "
          f"{s['statsmodels_logrank']:.3f} s, PHReg (construct + fit) {s['statsmodels_phreg']:.3f} s")

    agree = {"statsmodels_phreg_coef_max_rel": _max_rel(ours["numbers"]["statsmodels_coef"], ours["numbers"]["coef"]),
             "statsmodels_logrank_chisq_rel": abs(ours["numbers"]["statsmodels_logrank_chisq"]
                                                  - ours["numbers"]["logrank_chisq"]) / ours["numbers"]["logrank_chisq"]}
    for name, other in (("r", r), ("lifelines", ll)):
        if other:
            num = other["numbers"]
            agree[f"{name}_coef_max_rel"] = _max_rel(ours["numbers"]["coef"], num["coef"])
            agree[f"{name}_se_max_rel"] = _max_rel(ours["numbers"]["se"], num["se"])
            agree[f"{name}_logrank_chisq_rel"] = abs(ours["numbers"]["logrank_chisq"] - num["logrank_chisq"]) / abs(
                num["logrank_chisq"])
            agree[f"{name}_medians_equal"] = all(ours["numbers"]["medians"][k] == num["medians"].get(k) for k in GROUPS)
            if "ph_test" in num:
                agree[f"{name}_ph_test_chisq_max_rel"] = _max_rel(ours["numbers"]["ph_test"], num["ph_test"])
    print("\nagreement:", json.dumps({k: (f"{v:.1e}" if isinstance(v, float) else v) for k, v in agree.items()}))

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "patients": args.patients, "repeat": args.repeat, "machine": platform.platform(),
        "python": platform.python_version(), "cpus": os.cpu_count(),
        "load_average_1min": {"start": load_before[0], "end": os.getloadavg()[0]},
        "section_seconds": s["section"], "r_coxph_over_section": section_vs_r,
        "table": table, "totals": tot, "ours": s,
        "r_version": r.get("version") if r else None, "lifelines_version": ll.get("version") if ll else None,
        "agreement": agree}, indent=2))
    print(f"\nwrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
