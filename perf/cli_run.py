"""Time one ``kap-outcomes`` command in a fresh process, with the peak memory of its whole process tree.

The command line forks worker processes (analytics/report/parallel.py), so the peak resident memory of the parent alone
would understate what the machine needs. A sampler reads the proportional set size (PSS: shared copy-on-write
pages split between the processes that share them) of the command and all its descendants every 50 ms from
/proc and keeps the largest sum.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "perf" / "results"


def _children(pid: int) -> list[int]:
    """Child processes (from every thread's children list; no scan of all of /proc)."""
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_pss_mb(root: int) -> float:
    todo, total = [root], 0
    while todo:
        pid = todo.pop()
        total += _pss_kb(pid)
        todo.extend(_children(pid))
    return total / 1024


def run(args: list[str], env: dict[str, str] | None = None, *, tree: bool = True) -> tuple[float, float]:
    """(wall seconds, peak MB) of ``kap-outcomes <args>``: of the process tree (PSS, sampled), or with
    ``tree=False`` for a command that does not fork, the command's own peak resident memory (no sampler taking
    CPU time from the command on a small machine)."""
    exe = Path(sys.executable).with_name("kap-outcomes")
    peak = [0.0]
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(exe), *args], stdout=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    if not tree:
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        if os.waitstatus_to_exitcode(status):
            raise SystemExit(f"kap-outcomes {args[0]} exited with {os.waitstatus_to_exitcode(status)}")
        proc.returncode = os.waitstatus_to_exitcode(status)
        return wall, usage.ru_maxrss / 1024

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_pss_mb(proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = proc.wait()
    wall = time.perf_counter() - t0
    sampler.join()
    if code:
        raise SystemExit(f"kap-outcomes {args[0]} exited with {code}")
    return wall, peak[0]


def write(name: str, result: dict) -> None:
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
