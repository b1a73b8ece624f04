"""Benchmark: peak memory of `validate` against the size of the file (issue #20: at most 6×).

Two exports, both from ``analytics.sample.write_clinic``:

(a) a full clinic whose sessions.csv is about 200 MB, 3.2 M rows (``--patients``, default 210,000);
(b) 3 M short rows: the first 3 M sessions of (a), four columns (patient_id, session_date, session_type, route),
    about 97 MB, with the follow-ups of (a).

Each is validated twice in fresh processes: by the command line (``kap-outcomes validate``; its peak resident memory,
``ru_maxrss``, as ``/usr/bin/time -v`` reports it) and by ``schemas.validate.load_exports`` in a bare Python process
(peak, and the resident memory after imports, so the growth due to the data is known too). Ratios are to the size of
sessions.csv (the issue's measure) and to all the files read. Writes perf/results/memory.json.

    uv run --frozen python perf/bench_memory.py [--patients 210000] [--short-rows 3000000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "perf" / "results"

TARGET = 6.0

_CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from schemas.validate import load_exports
def rss_mb(field="VmRSS"):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024
before = rss_mb()
t0 = time.perf_counter()
data = load_exports(sys.argv[2], sys.argv[3])
seconds = time.perf_counter() - t0
print(json.dumps({"after_imports_mb": before, "peak_mb": rss_mb("VmHWM"),
                  "seconds": seconds, "rows": data.files["sessions"].rows, "issues": len(data.issues)}))
"""


def _short_rows(full: Path, out: Path, rows: int) -> None:
    """The first ``rows`` sessions of ``full`` with four columns, and the same follow-ups."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    cols = ["patient_id", "session_date", "session_type", "route"]
    table = pacsv.read_csv(full / "sessions.csv", convert_options=pacsv.ConvertOptions(
        include_columns=cols, column_types={c: pa.string() for c in cols})).slice(0, rows)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "sessions.csv", "wb") as fh:
        fh.write((",".join(cols) + "\n").encode())
        pacsv.write_csv(table, fh, write_options=pacsv.WriteOptions(include_header=False, quoting_style="none"))
    (out / "followups.csv").write_bytes((full / "followups.csv").read_bytes())


def _cli(args: list[str]) -> tuple[float, float]:
    """(wall seconds, peak MB) of ``kap-outcomes <args>`` in a fresh process: its own ``ru_maxrss`` (validate does not
    fork). Exit code 1 (rows set aside) is a result, not a failure."""
    exe = Path(sys.executable).with_name("kap-outcomes")
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(exe), *args], stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        raise SystemExit(f"kap-outcomes {args[0]} exited with {code}")
    return wall, usage.ru_maxrss / 1024


def _measure(folder: Path) -> dict:
    sessions, followups = folder / "sessions.csv", folder / "followups.csv"
    mb = sessions.stat().st_size / 2**20
    read_mb = mb + followups.stat().st_size / 2**20
    wall, cli_peak = _cli(["validate", "--sessions", str(sessions), "--followups", str(followups)])
    child = json.loads(subprocess.run([sys.executable, "-c", _CHILD, str(ROOT), str(sessions), str(followups)],
                                      capture_output=True, text=True, check=True).stdout)
    growth = child["peak_mb"] - child["after_imports_mb"]
    return {
        "sessions_mb": round(mb, 1), "files_read_mb": round(read_mb, 1), "rows": child["rows"],
        "issues": child["issues"],
        "cli": {"seconds": round(wall, 2), "peak_mb": round(cli_peak), "peak_per_sessions_mb": round(cli_peak / mb, 2),
                "peak_per_file_mb": round(cli_peak / read_mb, 2)},
        "load_exports": {"seconds": round(child["seconds"], 2), "after_imports_mb": round(child["after_imports_mb"]),
                         "peak_mb": round(child["peak_mb"]), "peak_per_sessions_mb": round(child["peak_mb"] / mb, 2),
                         "growth_per_sessions_mb": round(growth / mb, 2)},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=210_000)
    parser.add_argument("--short-rows", type=int, default=3_000_000)
    parser.add_argument("--generate", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        from analytics.sample import write_clinic

        write_clinic(Path(args.generate) / "full", n_patients=args.patients, seed=7)
        _short_rows(Path(args.generate) / "full", Path(args.generate) / "short", args.short_rows)
        return

    with tempfile.TemporaryDirectory() as tmp:
        full, short = Path(tmp) / "full", Path(tmp) / "short"
        t0 = time.perf_counter()
        # in a child process: a process started from this one would report this one's peak as its own (fork)
        subprocess.run([sys.executable, __file__, "--generate", tmp, "--patients", str(args.patients),
                        "--short-rows", str(args.short_rows)], check=True)
        gen_s = time.perf_counter() - t0
        files = {"full": _measure(full), "short_rows": _measure(short)}

    result = {
        "patients": args.patients, "generate_seconds": round(gen_s, 1), "files": files,
        "target_peak_per_file": TARGET,
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "method": ("peak resident memory (ru_maxrss) of `kap-outcomes validate --sessions S --followups F` and of "
                   "load_exports in a bare process; ratios to the size of sessions.csv (peak_per_sessions_mb) and of "
                   "both files read (peak_per_file_mb); growth = peak minus resident memory after imports."),
    }
    print(f"{'file':12s}{'MB':>8s}{'rows':>10s}{'CLI peak':>10s}{'× size':>8s}{'seconds':>9s}")
    for name, r in files.items():
        print(f"{name:12s}{r['sessions_mb']:>8.0f}{r['rows']:>10,d}{r['cli']['peak_mb']:>10d}"
              f"{r['cli']['peak_per_sessions_mb']:>8.2f}{r['cli']['seconds']:>9.1f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "memory.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
