"""Run every benchmark in perf/ (each writes perf/results/<name>.json and prints its table).

    make bench            # or: uv run --frozen python perf/run_all.py

Every ``bench_*.py`` runs once with its defaults (``bench_pages.py``: every page in a real browser at 50,000
patients; it needs chromium), then the extra runs below: benchmarks that back a decision with a second mode.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# (script, arguments): kept so that the numbers behind a decision can be measured again.
EXTRA = [
    # issue 21: the hand-written t / χ² quantiles of analytics/engines/intervals.py against SciPy's, at 50,000 patients
    ("bench_analyze.py", ["--intervals", "50000"]),
]

runs = [(script, []) for script in sorted(HERE.glob("bench_*.py"))] + [(HERE / s, a) for s, a in EXTRA]
for script, args in runs:
    print(f"\n=== {' '.join([script.name, *args])}", flush=True)
    result = subprocess.run([sys.executable, str(script), *args], check=False)
    if result.returncode:
        print(f"!!! {script.name} exited with {result.returncode}", flush=True)
