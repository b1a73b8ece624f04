"""Benchmark (issue 6): the whole ``kap-outcomes analyze`` on 20,000 patients against R's ``lmer`` alone.

The CLI run is what a user waits for: a fresh process that starts Python, reads and validates the three CSV files,
builds the cohort, fits the survival, trajectory and benchmark sections and writes the JSON, in one process (forking
workers for the benchmark figures was tried and measured no faster at 20,000 or 50,000 patients). ``lmer`` gets only
the model fit of the default trajectory model ``phq9 ~ weeks + (1 + weeks | patient_id)`` by REML on exactly the
PHQ-9 rows our model uses (reading the CSV into R is not timed). Both best of three, in the same run. The fixed
effects of the two are compared as a check that the same model was fitted. Writes perf/results/analyze.json.

    uv run --frozen python perf/bench_analyze.py [--patients 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

R_SCRIPT = r"""
suppressPackageStartupMessages({library(lme4); library(jsonlite)})
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[2], colClasses = c("character", "numeric", "numeric"))
d$patient_id <- factor(d$patient_id)
times <- c()
for (i in 1:3) times <- c(times, system.time(m <- lmer(phq9 ~ weeks + (1 + weeks | patient_id), d))[["elapsed"]])
writeLines(toJSON(list(seconds = min(times), all = times, fixed = unname(fixef(m)), n_obs = nrow(d),
                       lme4 = as.character(packageVersion("lme4"))), auto_unbox = TRUE, digits = I(15)), args[1])
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=20_000)
    args = parser.parse_args()

    import cli_run

    from analytics.outcomes.cohort import build_cohort
    from analytics.outcomes.settings import Settings
    from analytics.outcomes.trajectories import measure_frame
    from analytics.sample import write_clinic
    from schemas.validate import load_exports

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        write_clinic(tmp, n_patients=args.patients, seed=7)
        cmd = ["analyze", "--sessions", str(d / "sessions.csv"), "--followups", str(d / "followups.csv"),
               "--patients", str(d / "patients.csv"), "--json", str(d / "a.json")]
        timed = [cli_run.run(cmd, tree=False) for _ in range(3)]  # analyze does not fork
        runs = [t for t, _ in timed]
        ours = json.loads((d / "a.json").read_text())["trajectories"]["phq9"]

        cohort = build_cohort(load_exports(d / "sessions.csv", d / "followups.csv", d / "patients.csv"), Settings())
        scores = measure_frame(cohort, "phq9").rename(columns={"value": "phq9"})
        scores[["patient_id", "weeks", "phq9"]].to_csv(d / "phq9.csv", index=False)
        result = {
            "patients": args.patients, "phq9_scores": int(len(scores)),
            "scores_per_patient": round(len(scores) / scores["patient_id"].nunique(), 2),
            "cli_analyze_seconds": round(min(runs), 2), "cli_analyze_all_runs": [round(r, 2) for r in runs],
            "cli_peak_memory_mb": round(max(m for _, m in timed)),
            "lmer_seconds": None, "lmer_over_cli_analyze": None, "notes": [],
        }
        rscript = shutil.which("Rscript")
        if rscript is None:
            result["notes"].append("Rscript not found: lmer not timed.")
        else:
            (d / "bench.R").write_text(R_SCRIPT)
            subprocess.run([rscript, str(d / "bench.R"), str(d / "r.json"), str(d / "phq9.csv")], check=True,
                           capture_output=True)
            r = json.loads((d / "r.json").read_text())
            ours_fixed = [t["estimate"] for t in ours["fixed"]]
            result.update({
                "lmer_seconds": round(r["seconds"], 2), "lmer_all_runs": r["all"], "lme4_version": r["lme4"],
                "lmer_over_cli_analyze": round(r["seconds"] / min(runs), 2),
                "max_rel_diff_fixed_vs_lmer": max(abs(a - b) / abs(b) for a, b in zip(ours_fixed, r["fixed"])),
                "same_n_obs": int(r["n_obs"]) == int(ours["n_obs"]),
            })
    result["load_average_at_end"] = os.getloadavg()
    result["target"] = "cli_analyze_seconds < lmer_seconds"
    cli_run.write("analyze", result)


if __name__ == "__main__":
    main()
