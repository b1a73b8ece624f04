"""Independent pieces of work in forked processes, for the command line.

A forked worker shares the parent's cohort copy-on-write, so nothing large is pickled; only each task's result
comes back. Used by ``kap-outcomes report`` (one task per section; ``analyze`` measured no faster with workers,
so it stays in one process). The app never forks (a Streamlit server is threaded): it calls with ``workers=1``,
which runs the same tasks one after the other in this process. Where fork is not available, or a worker dies
(e.g. out of memory), the tasks run here, one at a time.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any

_TASKS: Sequence[Callable[[], Any]] = ()  # what a forked worker runs; set just before the workers start


def _run(i: int) -> Any:
    return _TASKS[i]()


def _worker_start() -> None:
    """Ctrl-C is the parent's to handle: it stops the workers (a worker never prints a traceback)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


WORKERS_ENV = "KAP_OUTCOMES_WORKERS"


def default_workers() -> int:
    """Processes for the command line: ``KAP_OUTCOMES_WORKERS`` when set (1 = never fork), else the CPUs this
    process may use, at most 4."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    asked = os.environ.get(WORKERS_ENV, "").strip()
    if asked.isdigit() and int(asked) >= 1:
        return int(asked)
    return max(1, min(4, n))


def run_all(tasks: Sequence[Callable[[], Any]], *, workers: int = 1,
            on_done: Callable[[int], None] | None = None) -> list[Any]:
    """Results of ``tasks`` in their order. Tasks are started in the order given (put the longest first)."""
    global _TASKS
    out: list[Any] = [None] * len(tasks)
    done: set[int] = set()
    if workers > 1 and len(tasks) > 1 and "fork" in multiprocessing.get_all_start_methods():
        _TASKS = tasks
        try:
            ctx = multiprocessing.get_context("fork")
            pool = ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx,
                                       initializer=_worker_start)
            try:
                futures = {pool.submit(_run, i): i for i in range(len(tasks))}
                for f in as_completed(futures):
                    i = futures[f]
                    out[i] = f.result()
                    done.add(i)
                    if on_done:
                        on_done(i)
            except BaseException:  # Ctrl-C or an error in a task: stop the other workers now, not after their work
                for proc in list(getattr(pool, "_processes", {}).values()):
                    proc.terminate()
                pool.shutdown(wait=False, cancel_futures=True)
                raise
            pool.shutdown()
            return out
        except BrokenProcessPool:
            pass  # the tasks not finished yet run below
        finally:
            _TASKS = ()
    for i, task in enumerate(tasks):
        if i in done:
            continue
        out[i] = task()
        if on_done:
            on_done(i)
    return out
