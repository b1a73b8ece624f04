"""Run every benchmark in perf/ (each writes perf/results/<name>.json and prints its table).

    make bench            # or: uv run --frozen python perf/run_all.py

Every ``bench_*.py`` runs once with its defaults (``bench_pages.py``: every page in a real browser at 50,000
patients; it needs chromium), then the extra runs below: benchmarks that back a decision with a second mode.
``bench_network.py`` (a million patients: minutes and GBs of generated data) is run by hand, see its docstring.
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

# run by hand (minutes and GBs of generated data at 1,000,000 patients; see its docstring)
BY_HAND = {"bench_network.py"}

runs = [(script, []) for script in sorted(HERE.glob("bench_*.py")) if script.name not in BY_HAND] + \
    [(HERE / s, a) for s, a in EXTRA]
for script, args in runs:
    print(f"\n=== {' '.join([script.name, *args])}", flush=True)
    result = subprocess.run([sys.executable, str(script), *args], check=False)
    if result.returncode:
        print(f"!!! {script.name} exited with {result.returncode}", flush=True)
