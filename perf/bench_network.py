"""Benchmark (issue 21): a network's data on one machine. ``validate`` and ``analyze`` at 200,000 and 1,000,000
patients, from CSV and from Parquet, with wall seconds and peak memory, beside R's ``lmer`` alone on the same PHQ-9
scores.

Each command runs as ``python -m analytics.cli`` in a fresh process (this checkout's code); its peak resident memory is
the child's ``ru_maxrss`` from ``os.wait4`` (what ``/usr/bin/time -v`` calls "Maximum resident set size": the command
does not fork). The data are the bundled generator's (``kap-outcomes sample``, seed 20261125), written once into
``--data`` (default /tmp/kap-network-data, several GB at 1,000,000 patients: never inside the repository) and reused;
the Parquet files are the same tables written by pyarrow with typed columns (numbers, dates), as a database export
holds them. ``lmer`` gets only the model fit of the trajectory model ``analyze`` chose (by its formula in the JSON, by
REML, on exactly the PHQ-9 rows our model uses; reading the CSV into R is not timed), once per size. Targets (issue
21): ``validate`` + ``analyze`` at 1,000,000 patients < 90 s with peak memory < 8 GB. The machine's load average is
written with every run: on a shared 2-core machine timings are noisy, so compare ratios taken in the same run.

Not run by ``perf/run_all.py`` (it takes minutes and GBs of disk); run it by hand:

    uv run --frozen python perf/bench_network.py [--patients 200000 1000000] [--formats csv parquet] [--no-r] \
        [--repeat 3]

Writes perf/results/network.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
KINDS = ("sessions", "followups", "patients")

R_SCRIPT = r"""
suppressPackageStartupMessages({library(lme4); library(jsonlite)})
args <- commandArgs(trailingOnly = TRUE)  # result file, scores file, formula, knot (weeks; NA: none)
d <- read.csv(args[2], colClasses = c("character", "numeric", "numeric"))
d$patient_id <- factor(d$patient_id)
knot <- as.numeric(args[4])
if (!is.na(knot)) d[[paste0("weeks_after_", args[4])]] <- pmax(d$weeks - knot, 0)
seconds <- system.time(m <- lmer(as.formula(args[3]), d))[["elapsed"]]
writeLines(toJSON(list(seconds = seconds, fixed = unname(fixef(m)), n_obs = nrow(d),
                       lme4 = as.character(packageVersion("lme4"))), auto_unbox = TRUE, digits = I(15)), args[1])
"""

SCORES = r"""
import sys
from analytics.outcomes.cohort import build_cohort
from analytics.outcomes.settings import Settings
from analytics.outcomes.trajectories import measure_frame
from schemas.validate import load_exports
d = sys.argv[1]
cohort = build_cohort(load_exports(f"{d}/sessions.csv", f"{d}/followups.csv", f"{d}/patients.csv",
                                   max_bytes=sys.maxsize), Settings())
scores = measure_frame(cohort, "phq9").rename(columns={"value": "phq9"})
scores[["patient_id", "weeks", "phq9"]].to_csv(sys.argv[2], index=False)
"""


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def timed(args: list[str]) -> dict:
    """Wall seconds, peak resident memory (MB) and exit code of ``python -m analytics.cli <args>``."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "analytics.cli", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    err = proc.stderr.read().decode() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"seconds": round(seconds, 2), "peak_mb": round(usage.ru_maxrss / 1024), "exit": proc.returncode,
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2), "load_average": _load(),
            **({"stderr": err[-500:]} if proc.returncode not in (0, 1) else {})}


MAKE_DATA = r"""
import sys
from pathlib import Path
d, n, formats = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3].split(",")
kinds = ("sessions", "followups", "patients")
if not all((d / f"{k}.csv").exists() for k in kinds):
    from analytics.sample import write_clinic
    write_clinic(d, n_patients=n)
if "parquet" in formats and not all((d / f"{k}.parquet").exists() for k in kinds):
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
    for kind in kinds:
        table = pacsv.read_csv(d / f"{kind}.csv", convert_options=pacsv.ConvertOptions(
            column_types={"patient_id": pa.string()}))
        pq.write_table(table, d / f"{kind}.parquet")
        del table
"""


def ensure_data(root: Path, n: int, formats: list[str]) -> Path:
    """The generator's clinic of ``n`` patients under ``root`` (written once), as CSV and Parquet. Written by a
    child process: a child's ``ru_maxrss`` starts at its parent's resident memory (fork, then exec), so this process
    stays small for the commands it times (generating a million patients here once made every command's peak read
    13.8 GB)."""
    d = root / f"p{n}"
    subprocess.run([sys.executable, "-c", MAKE_DATA, str(d), str(n), ",".join(formats)], cwd=ROOT, check=True)
    return d


def warm_files(d: Path, ext: str) -> None:
    """Read the inputs once, untimed, so that the command finds them in the page cache (as ``hyperfine --warmup``
    does): the benchmark times our code, not the disk. On this virtual machine a cold read of the 1.3 GB sessions file
    of a million patients took 8.5 s instead of 1.0 s, and whether the files were still cached decided up to a tenth
    of a run."""
    for k in KINDS:
        with open(d / f"{k}.{ext}", "rb") as f:
            while f.read(1 << 24):
                pass


def median_of(runs: list[dict]) -> dict:
    """The run with the median seconds (the lower middle one of an even number), with every run's seconds beside it."""
    ordered = sorted(runs, key=lambda r: r["seconds"])
    mid = ordered[(len(ordered) - 1) // 2]
    return {**mid, "all_seconds": [r["seconds"] for r in runs]} if len(runs) > 1 else mid


def inputs(d: Path, ext: str) -> list[str]:
    return [x for k in KINDS for x in (f"--{k}", str(d / f"{k}.{ext}"))]


def lmer(d: Path, formula: str, rscript: str) -> dict:
    """``lmer`` alone on the PHQ-9 scores of ``analyze``'s model (scores written by a separate, untimed process)."""
    scores = d / "phq9_scores.csv"
    if not scores.exists():
        subprocess.run([sys.executable, "-c", SCORES, str(d), str(scores)], cwd=ROOT, check=True)
    knot = re.search(r"weeks_after_([0-9.]+)", formula)
    script = d / "lmer.R"
    script.write_text(R_SCRIPT)
    t0 = time.perf_counter()
    res = subprocess.run([rscript, str(script), str(d / "r.json"), str(scores), formula,
                          knot.group(1) if knot else "NA"], capture_output=True, text=True, check=False)
    if res.returncode:
        return {"error": res.stderr[-500:], "wall_seconds": round(time.perf_counter() - t0, 1)}
    r = json.loads((d / "r.json").read_text())
    return {"seconds": round(r["seconds"], 2), "fixed": r["fixed"], "n_obs": r["n_obs"], "lme4": r["lme4"],
            "load_average": _load()}


def one_size(root: Path, n: int, formats: list[str], with_r: bool, repeat: int = 1) -> dict:
    d = ensure_data(root, n, formats)
    out: dict = {"patients": n, "files_mb": {f"{k}.{ext}": round((d / f"{k}.{ext}").stat().st_size / 1e6, 1)
                                              for ext in formats for k in KINDS}}
    analysis = None
    for ext in formats:
        runs = []
        for _ in range(repeat):  # validate then analyze, as a user runs them; each on warm files
            warm_files(d, ext)
            v = timed(["validate", *inputs(d, ext), "--json"])
            warm_files(d, ext)
            a = timed(["analyze", *inputs(d, ext), "--json", str(d / f"analyze_{ext}.json")])
            runs.append({"validate": v, "analyze": a,
                         "validate_plus_analyze_seconds": round(v["seconds"] + a["seconds"], 2)})
            print(json.dumps({"patients": n, ext: runs[-1]}), flush=True)
        both = sorted(r["validate_plus_analyze_seconds"] for r in runs)
        out[ext] = {"validate": median_of([r["validate"] for r in runs]),
                    "analyze": median_of([r["analyze"] for r in runs]),
                    "validate_plus_analyze_seconds": round(statistics.median(both), 2),
                    "peak_mb": max(max(r["validate"]["peak_mb"], r["analyze"]["peak_mb"]) for r in runs)}
        if repeat > 1:
            out[ext]["validate_plus_analyze_range"] = [both[0], both[-1]]
        if a["exit"] in (0, 1):
            analysis = json.loads((d / f"analyze_{ext}.json").read_text())
    if len(formats) > 1 and all(out[e]["analyze"]["exit"] in (0, 1) for e in formats):
        same = [json.loads((d / f"analyze_{e}.json").read_text()) for e in formats]
        out["same_json_from_every_format"] = all(s == same[0] for s in same)
    rscript = shutil.which("Rscript")
    if with_r and rscript and analysis and analysis["trajectories"]["phq9"]:
        phq9 = analysis["trajectories"]["phq9"]
        if "ns(" in phq9["formula"]:
            out["lmer"] = {"note": f"analyze chose a natural spline ({phq9['formula']}); lmer not timed"}
        else:
            r = lmer(d, phq9["formula"], rscript)
            out["lmer"] = r
            if "seconds" in r:
                ours = [t["estimate"] for t in phq9["fixed"]]
                r["max_rel_diff_fixed_vs_ours"] = max(abs(a - b) / abs(b) for a, b in zip(ours, r["fixed"]))
                r["same_n_obs"] = int(r["n_obs"]) == int(phq9["n_obs"])
                for ext in formats:
                    r[f"lmer_over_analyze_{ext}"] = round(r["seconds"] / out[ext]["analyze"]["seconds"], 2)
        print(json.dumps({"patients": n, "lmer": out["lmer"]}), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--formats", nargs="+", choices=["csv", "parquet"], default=["csv", "parquet"])
    parser.add_argument("--data", type=Path, default=Path("/tmp/kap-network-data"))
    parser.add_argument("--no-r", action="store_true", help="skip lmer")
    parser.add_argument("--repeat", type=int, default=1,
                        help="validate + analyze this many times per size and format (medians reported)")
    args = parser.parse_args()
    runs = [one_size(args.data, n, args.formats, not args.no_r, max(1, args.repeat)) for n in args.patients]
    import cli_run

    cli_run.write("network", {
        "runs": runs, "cores": os.cpu_count(),
        "target": "validate + analyze at 1,000,000 patients < 90 s, peak memory < 8 GB (issue 21)",
        "method": "python -m analytics.cli in a fresh process per command, its input files read once just before "
                  "(untimed: in the page cache, as hyperfine's warm-up); with --repeat, median seconds of the runs "
                  "(every run's beside it); peak = ru_maxrss of the child (os.wait4), the largest of all runs",
    })


if __name__ == "__main__":
    main()
