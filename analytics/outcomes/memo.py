"""Tables derived once per cohort and reused by every analysis that needs them (issue 21: pages at 50,000 patients).

A :class:`~analytics.outcomes.cohort.Cohort` is immutable, so anything computed from it alone (the ketamine-session
table with routes and adverse events as integer codes, each patient's induction protocol, a KPI's per-patient frame)
can be kept with it. :func:`once` keeps such values **on the cohort object itself**: a filtered cohort
(:func:`~analytics.outcomes.filters.apply_filters`) is a new object and computes its own; nothing is shared between
cohorts or between the sessions of the dashboard, and everything goes when the cohort goes.

Rules for a value kept here: it depends only on the cohort and on the key (put every option into the key); callers
never change it in place (return copies of tables a caller may modify); and computing it twice gives the same value
(a second thread asking for a key being computed waits for that result).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import threading
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

_T = TypeVar("_T")
_SLOT = "_derived_once"  # an instance attribute of the cohort (as functools.cached_property stores its values)
_LOCKS = "_derived_once_locks"  # one lock per key being computed
_GUARD = threading.Lock()  # makes the creation of a key's lock atomic


def once(cohort: Any, key: Hashable, compute: Callable[[], _T]) -> _T:
    """``compute()`` the first time ``key`` is asked of this very cohort object; its stored value afterwards.

    While one thread computes a key (the background warm-up of :mod:`analytics.outcomes.warmup`, or a page), a second
    thread asking for the same key waits for that result instead of computing it again; different keys never wait
    for each other. An exception is not stored: the next caller computes again (and meets it itself).

    Parameters
    ----------
    cohort:
        The cohort the value is derived from (any object with a ``__dict__``; frozen dataclasses included).
    key:
        What is computed, with every option it depends on, e.g. ``("kpi frame", kpi, options, as_of)``.
    compute:
        Computes the value from ``cohort`` alone.
    """
    store: dict[Hashable, Any] | None = cohort.__dict__.get(_SLOT)
    if store is None:
        store = cohort.__dict__.setdefault(_SLOT, {})
    try:
        return store[key]
    except KeyError:
        pass
    locks: dict[Hashable, threading.Lock] = cohort.__dict__.setdefault(_LOCKS, {})
    with _GUARD:
        lock = locks.setdefault(key, threading.Lock())
    if not lock.acquire(blocking=False):
        _wait_for(lock)
    try:
        try:
            return store[key]
        except KeyError:
            return store.setdefault(key, compute())
    finally:
        lock.release()


_waiting = 0  # threads waiting for a key another thread computes


def _wait_for(lock: threading.Lock) -> None:
    global _waiting
    with _GUARD:
        _waiting += 1
    try:
        lock.acquire()
    finally:
        with _GUARD:
            _waiting -= 1


def someone_waits() -> bool:
    """True while a thread waits for a key another thread is computing: the background warm-up, which otherwise
    gives way to a page being drawn, must then go on (the page waits for its result)."""
    return _waiting > 0


def per_cohort(function: Callable[..., _T]) -> Callable[..., _T]:
    """Decorator: ``function(cohort, **options)`` computed once per cohort object and options (:func:`once`).

    For analyses whose result callers only read (frozen dataclasses of tables nobody changes in place). A call with
    an option that is not hashable (a list of milestones, a frame) is computed every time, not kept. The pages, the
    background warm-up and the report then share one computation per cohort.
    """

    signature = inspect.signature(function)

    @functools.wraps(function)
    def wrapper(cohort: Any, *args: Any, **options: Any) -> _T:
        bound = signature.bind(cohort, *args, **options)
        bound.apply_defaults()  # f(c) and f(c, by=None) are one computation
        key = (function.__module__, function.__qualname__, tuple(bound.arguments.items())[1:])
        try:
            hash(key)
        except TypeError:  # an option that cannot be a key (a list, a frame): computed, not kept
            return function(cohort, *args, **options)
        return once(cohort, key, lambda: function(cohort, *args, **options))

    return wrapper


def kept_figure(draw: Callable[..., _T], result: Any, /, **options: Any) -> _T:
    """``draw(result, **options)``, built once per result object and options and kept with the result (:func:`once`).

    A result is an analysis's frozen dataclass, itself kept per cohort (:func:`per_cohort`), so its figure goes with
    it. The pages draw through here (``pages/_shared.py``, ``chart``), and so does the background warm-up
    (:mod:`analytics.outcomes.warmup`), which builds a page's default figures before the page is opened. Results that
    are not dataclasses, and options that cannot be a key (frames), build the figure every time.
    """
    key = ("figure", draw.__module__, draw.__qualname__, tuple(sorted(options.items())))
    try:
        hash(key)
        kept = dataclasses.is_dataclass(result) and not isinstance(result, type)
    except TypeError:
        kept = False
    return once(result, key, lambda: draw(result, **options)) if kept else draw(result, **options)


def release(cohort: Any, key: Hashable) -> None:
    """Drop the value kept for ``key`` (if any): for a caller that knows nothing will ask for it again (the command
    line's ``analyze``, which computes each section once). A later request computes it afresh."""
    store = cohort.__dict__.get(_SLOT)
    if store is not None:
        store.pop(key, None)


def forget(cohort: Any) -> None:
    """Drop every value kept for ``cohort`` (tests; a caller that changed the cohort's tables in place)."""
    cohort.__dict__.pop(_SLOT, None)
    cohort.__dict__.pop(_LOCKS, None)


__all__ = ["forget", "kept_figure", "once", "per_cohort", "release", "someone_waits"]
