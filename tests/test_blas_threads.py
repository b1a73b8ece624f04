"""One BLAS thread per process (analytics/__init__.py): set for BLAS loaded before and after us; a value set kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# numpy first (as Streamlit imports it before the dashboard), then analytics, then SciPy's own OpenBLAS
CODE = """
import json, numpy
import analytics
import scipy.linalg
from threadpoolctl import threadpool_info
print(json.dumps(sorted((i["filepath"], i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas")))
"""


def _blas_threads(env_value: str | None) -> list[tuple[str, int]]:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if env_value is not None:
        env["OPENBLAS_NUM_THREADS"] = env_value
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True, cwd=ROOT, env=env)
    return [tuple(x) for x in json.loads(out.stdout)]


def test_every_blas_library_runs_one_thread_unless_told_otherwise():
    libraries = _blas_threads(None)
    assert len(libraries) == 2  # numpy's and SciPy's OpenBLAS, one loaded before analytics and one after
    assert [n for _path, n in libraries] == [1, 1]
    assert [n for _path, n in _blas_threads("2")] == [2, 2]
