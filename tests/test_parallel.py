"""analytics.report.parallel: forked workers give the serial results, in order; a dead worker falls back to serial."""

from __future__ import annotations

import os

from analytics.report import parallel


def test_results_come_back_in_task_order_from_other_processes():
    parent = os.getpid()
    tasks = [lambda i=i: (i * i, os.getpid()) for i in range(7)]
    out = parallel.run_all(tasks, workers=2)
    assert [v for v, _ in out] == [i * i for i in range(7)]
    assert all(pid != parent for _, pid in out)  # really forked
    assert [v for v, _ in parallel.run_all(tasks, workers=1)] == [i * i for i in range(7)]


def test_a_worker_that_dies_leaves_the_work_to_the_parent():
    parent = os.getpid()

    def fragile() -> int:
        if os.getpid() != parent:
            os._exit(3)  # e.g. killed for memory
        return 42

    done: list[int] = []
    assert parallel.run_all([fragile, lambda: 1], workers=2, on_done=done.append) == [42, 1]
    assert sorted(done) == [0, 1]


def test_workers_setting(monkeypatch):
    monkeypatch.setenv(parallel.WORKERS_ENV, "1")
    assert parallel.default_workers() == 1
    monkeypatch.setenv(parallel.WORKERS_ENV, "3")
    assert parallel.default_workers() == 3
    cpus = min(4, len(os.sched_getaffinity(0)))
    monkeypatch.setenv(parallel.WORKERS_ENV, "lots")  # not a number: ignored
    assert parallel.default_workers() == cpus
    monkeypatch.setenv(parallel.WORKERS_ENV, "0")  # not a process count: ignored
    assert parallel.default_workers() == cpus
    monkeypatch.delenv(parallel.WORKERS_ENV)
    assert parallel.default_workers() == cpus
