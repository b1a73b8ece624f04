"""Run every benchmark in perf/ (each writes perf/results/<name>.json and prints its table).

    make bench            # or: uv run --frozen python perf/run_all.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

for script in sorted(HERE.glob("bench_*.py")):
    print(f"\n=== {script.name}", flush=True)
    result = subprocess.run([sys.executable, str(script)], check=False)
    if result.returncode:
        print(f"!!! {script.name} exited with {result.returncode}", flush=True)
