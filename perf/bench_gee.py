"""Benchmark (issue 21): GEE for repeated abstinence at 50,000 patients — our engine vs statsmodels GEE.

The data are the sample clinic's abstinence outcome (:func:`analytics.sample.generate_clinic`, seed 7): one row per
follow-up whose abstinence is known (:func:`analytics.outcomes.trajectories.abstinence_frame`), modelled as the
Symptom trajectories page does with ``by="program"``: ``abstinent ~ weeks * program``, binomial, logit link,
exchangeable working correlation within patient, robust standard errors. The same arrays (design, response, patient
codes) go to both engines in the same run:

* ours: :func:`analytics.engines.gee.fit_gee` (best of ``--repeat`` runs);
* statsmodels ``GEE(..., family=Binomial(), cov_struct=Exchangeable()).fit()``, its default options (run once: it
  takes seconds at this size).

Also timed: the whole :func:`analytics.outcomes.trajectories.abstinence_gee` (frame, design, fit, tables), as the
page calls it. The two fits are compared (largest absolute difference of the estimates, robust SEs and the working
correlation). Prints a table and writes ``perf/results/gee.json``.

    uv run --frozen python perf/bench_gee.py [--patients 50000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analytics.engines import gee
from analytics.outcomes import trajectories
from analytics.outcomes.cohort import build_cohort
from analytics.sample import generate_clinic
from schemas.frames import ValidatedExports

TARGET_RATIO = 20.0  # statsmodels time over ours at 50,000 patients (issue 21)


def page_arrays(cohort, by: str = "program") -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Response, design, patient codes and term names exactly as :func:`trajectories.abstinence_gee` builds them."""
    d = trajectories.abstinence_frame(cohort)
    d["_group"] = d["patient_id"].map(trajectories._groups_of(cohort, by))
    d = d[d["_group"] != "(missing)"].sort_values(["patient_id", "days"]).reset_index(drop=True)
    ref, levels = trajectories._group_levels(d, None, by)
    design = trajectories.Design(measure="abstinent", time=trajectories.TimeBasis("linear"), by=by, reference=ref,
                                 levels=levels)
    X = design.matrix(d["weeks"].to_numpy(), d["_group"].to_numpy(), None)
    codes, _ = pd.factorize(d["patient_id"])
    return d["abstinent"].to_numpy(dtype=float), X, codes, list(design.names)


def best_of(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    load_start = os.getloadavg()[0]

    t0 = time.perf_counter()
    clinic = generate_clinic(args.patients, seed=7)
    cohort = build_cohort(ValidatedExports.from_frames(clinic["sessions"], clinic["followups"], clinic["patients"]))
    print(f"sample clinic of {args.patients:,} patients built in {time.perf_counter() - t0:.1f} s", flush=True)
    y, X, codes, names = page_arrays(cohort)
    n_obs, n_pat = len(y), int(codes.max()) + 1
    print(f"abstinence ~ {' + '.join(names[1:])}: {n_obs:,} assessments of {n_pat:,} patients", flush=True)

    ours_s, fit = best_of(lambda: gee.fit_gee(y, X, codes, names=tuple(names)), args.repeat)
    page_s, page = best_of(lambda: trajectories.abstinence_gee(cohort, by="program"), args.repeat)

    from statsmodels.genmod import families
    from statsmodels.genmod.cov_struct import Exchangeable
    from statsmodels.genmod.generalized_estimating_equations import GEE

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        model = GEE(y, X, groups=codes, family=families.Binomial(), cov_struct=Exchangeable())
        sm = model.fit()
        sm_s = time.perf_counter() - t0
    sm_alpha = float(np.atleast_1d(model.cov_struct.dep_params)[0])

    diff = {"estimate": float(np.max(np.abs(fit.beta - np.asarray(sm.params)))),
            "se": float(np.max(np.abs(fit.se - np.asarray(sm.bse)))),
            "alpha": abs(fit.alpha - sm_alpha),
            "page_estimate": float(np.max(np.abs(page.table["estimate"].to_numpy() - np.asarray(sm.params))))}
    ratio = sm_s / ours_s
    out = {
        "patients": args.patients, "n_obs": n_obs, "n_patients_in_model": n_pat, "terms": names,
        "repeat": args.repeat, "machine": platform.platform(), "python": platform.python_version(),
        "cpus": os.cpu_count(), "load_average_1min": {"start": load_start, "end": os.getloadavg()[0]},
        "ours_seconds": ours_s, "ours_iterations": fit.n_iterations, "statsmodels_seconds": sm_s,
        "statsmodels_over_ours": ratio, "target_ratio": TARGET_RATIO, "page_abstinence_gee_seconds": page_s,
        "statsmodels_over_page": sm_s / page_s, "max_abs_difference": diff, "alpha": fit.alpha,
    }
    print(f"{'step':<34}{'seconds':>10}")
    print(f"{'ours: fit_gee (arrays)':<34}{ours_s:>10.3f}")
    print(f"{'ours: abstinence_gee (whole page)':<34}{page_s:>10.3f}")
    print(f"{'statsmodels GEE (arrays)':<34}{sm_s:>10.3f}")
    print(f"statsmodels / ours = {ratio:.0f}× (target ≥ {TARGET_RATIO:.0f}×); statsmodels / whole page = "
          f"{sm_s / page_s:.0f}×")
    print("largest |ours − statsmodels|: " + ", ".join(f"{k} {v:.1e}" for k, v in diff.items()))
    (ROOT / "perf" / "results").mkdir(exist_ok=True)
    (ROOT / "perf" / "results" / "gee.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
