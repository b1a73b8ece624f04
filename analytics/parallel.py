"""Independent pieces of work in forked processes, for the command line.

A forked worker shares the parent's cohort copy-on-write, so nothing large is pickled; only each task's result
comes back. Used by ``kap-outcomes report`` (one task per section) and ``kap-outcomes analyze`` (the clinic
benchmark figures in parts). The app never forks (a Streamlit server is threaded): it calls with ``workers=1``,
which runs the same tasks one after the other in this process. Where fork is not available, or a worker dies
(e.g. out of memory), the tasks run here, one at a time.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any

_TASKS: Sequence[Callable[[], Any]] = ()  # what a forked worker runs; set just before the workers start


def _run(i: int) -> Any:
    return _TASKS[i]()


def default_workers() -> int:
    """Processes for the command line: the CPUs this process may use, at most 4."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(4, n))


def run_all(tasks: Sequence[Callable[[], Any]], *, workers: int = 1,
            on_done: Callable[[int], None] | None = None) -> list[Any]:
    """Results of ``tasks`` in their order. Tasks are started in the order given (put the longest first)."""
    global _TASKS
    if workers > 1 and len(tasks) > 1 and "fork" in multiprocessing.get_all_start_methods():
        _TASKS = tasks
        try:
            out: list[Any] = [None] * len(tasks)
            ctx = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx) as pool:
                futures = {pool.submit(_run, i): i for i in range(len(tasks))}
                for f in as_completed(futures):
                    out[futures[f]] = f.result()
                    if on_done:
                        on_done(futures[f])
            return out
        except BrokenProcessPool:
            pass
        finally:
            _TASKS = ()
    results = []
    for i, task in enumerate(tasks):
        results.append(task())
        if on_done:
            on_done(i)
    return results
