"""Benchmark: the sample-clinic generator (`kap-outcomes sample`) at 1,500 and 50,000 patients.

Each size runs in a fresh process so that peak memory (ru_maxrss) belongs to that size alone; the
process's resident memory after imports is reported too, so the generator's own share is visible.
Times are the best of ``--repeat`` runs of :func:`analytics.sample.generate_clinic` (in memory) and one
:func:`analytics.sample.write_clinic` (generate + CSV writing). Writes perf/results/sample.json.

    uv run --frozen python perf/bench_sample.py [--sizes 1500 50000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET_SECONDS_50K = 60.0  # "well under a minute"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(n: int, repeat: int) -> None:
    import pandas  # noqa: F401  (imports count as the baseline, not as the generator's memory)

    from analytics.sample import DEFAULT_SEED, generate_clinic, write_clinic

    base_mb = _rss_mb()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        frames = generate_clinic(n, seed=DEFAULT_SEED)
        times.append(time.perf_counter() - t0)
    rows = {k: len(v) for k, v in frames.items()}
    del frames
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        paths = write_clinic(tmp, n, DEFAULT_SEED)
        write_s = time.perf_counter() - t0
        sizes = {k: p.stat().st_size for k, p in paths.items()}
    print(json.dumps({"patients": n, "generate_seconds": min(times), "write_seconds": write_s, "rows": rows,
                      "csv_bytes": sizes, "peak_rss_mb": _rss_mb(), "rss_after_imports_mb": base_mb}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1500, 50_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.repeat)
        return

    runs = []
    for n in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--child", str(n), "--repeat", str(args.repeat)],
                             capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout))

    print(f"{'patients':>9s} {'generate s':>11s} {'gen+write s':>12s} {'session rows':>13s} "
          f"{'follow-up rows':>15s} {'CSV MB':>8s} {'peak RSS MB':>12s} {'(imports) MB':>13s}")
    for r in runs:
        print(f"{r['patients']:>9,d} {r['generate_seconds']:>11.2f} {r['write_seconds']:>12.2f} "
              f"{r['rows']['sessions']:>13,d} {r['rows']['followups']:>15,d} "
              f"{sum(r['csv_bytes'].values()) / 1e6:>8.1f} {r['peak_rss_mb']:>12.0f} "
              f"{r['rss_after_imports_mb']:>13.0f}")
    result = {
        "runs": [{**r, "generate_seconds": round(r["generate_seconds"], 3),
                  "write_seconds": round(r["write_seconds"], 3), "peak_rss_mb": round(r["peak_rss_mb"]),
                  "rss_after_imports_mb": round(r["rss_after_imports_mb"])} for r in runs],
        "targets": {"generate_seconds_50000": TARGET_SECONDS_50K},
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "notes": ["generate = in-memory frames (best of repeats); gen+write = write_clinic, one run",
                  "peak RSS is the whole fresh process (interpreter, pandas, numpy included)"],
    }
    out_dir = ROOT / "perf" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "sample.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
