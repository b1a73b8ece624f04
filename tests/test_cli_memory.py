"""Memory settings (analytics/__init__.py, reuse_freed_memory; the command's analytics/cli.py batch_memory, the
server's pages/_preload.py): freed memory is kept for reuse, not faulted in again; the command makes them only in
its own process, and a setting of whoever runs us is kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# a 20 MiB array made, freed and made again: the page faults of the second one tell whether the first one's memory
# was kept (a few) or handed back to the system and faulted in again (5,120 pages of 4 KiB)
CODE = """
import json, os, resource, sys
from analytics.cli import batch_memory
if sys.argv[1] == "set":
    batch_memory()
elif sys.argv[1] == "validate":
    batch_memory(arrow=False)
import numpy, pyarrow
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
a = numpy.ones(20 << 17); del a
before = faults(); b = numpy.ones(20 << 17); second = faults() - before
print(json.dumps({"pool": pyarrow.default_memory_pool().backend_name, "second_faults": second,
                  "hugepage": os.environ.get("NUMPY_MADVISE_HUGEPAGE")}))
"""

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the settings are made on Linux only")


def _run(mode: str, **env_extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("ARROW_DEFAULT_MEMORY_POOL", "NUMPY_MADVISE_HUGEPAGE", "MALLOC_MMAP_THRESHOLD_",
                        "MALLOC_TRIM_THRESHOLD_")}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", CODE, mode], capture_output=True, text=True, check=True, cwd=ROOT,
                         env=env)
    return json.loads(out.stdout)


@linux_only
def test_the_command_keeps_freed_memory_for_reuse():
    tuned = _run("set")
    assert tuned["pool"] == "jemalloc" and tuned["hugepage"] == "0"
    assert tuned["second_faults"] < 500           # the freed 20 MiB came back from malloc's heap
    plain = _run("plain", NUMPY_MADVISE_HUGEPAGE="0")  # small pages, as above, without malloc's settings
    assert plain["second_faults"] > 2_000         # fresh pages again (5,120 of 4 KiB expected)
    assert plain["pool"] != "jemalloc"            # Arrow's own default (mimalloc)


@linux_only
def test_validate_keeps_arrows_returning_pool():
    mine = _run("validate")
    assert mine["pool"] != "jemalloc" and mine["hugepage"] == "0" and mine["second_faults"] < 500


@linux_only
def test_a_setting_of_whoever_runs_us_is_kept():
    mine = _run("set", ARROW_DEFAULT_MEMORY_POOL="system", NUMPY_MADVISE_HUGEPAGE="1")
    assert mine["pool"] == "system" and mine["hugepage"] == "1"


def test_main_called_from_python_leaves_the_allocators_alone(monkeypatch):
    from analytics import cli

    called = []
    monkeypatch.setattr(cli, "batch_memory", lambda *args, **kwargs: called.append(True))
    assert cli.main(["sample", "--patients", "0", "--out", "/nonexistent/x"]) == 2
    assert not called


SERVER = """
import json, resource
import numpy  # Streamlit loads NumPy before the dashboard's modules
from analytics import reuse_freed_memory
made = reuse_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
a = numpy.ones(20 << 17); del a
before = faults(); b = numpy.ones(20 << 17); second = faults() - before
was_on = numpy._core.multiarray._set_madvise_hugepage(False)  # returns the setting it replaces
print(json.dumps({"made": made, "second_faults": second, "hugepage_was_on": was_on}))
"""


@linux_only
def test_the_server_keeps_freed_memory_for_reuse_with_numpy_already_loaded():
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMPY_MADVISE_HUGEPAGE", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")}
    out = json.loads(subprocess.run([sys.executable, "-c", SERVER], capture_output=True, text=True, check=True,
                                    cwd=ROOT, env=env).stdout)
    assert out["made"] is True
    assert out["hugepage_was_on"] is False        # told directly: NumPy had read its setting on import
    assert out["second_faults"] < 500
