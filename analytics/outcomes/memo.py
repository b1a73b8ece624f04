"""Tables derived once per cohort and reused by every analysis that needs them (issue 21: pages at 50,000 patients).

A :class:`~analytics.outcomes.cohort.Cohort` is immutable, so anything computed from it alone (the ketamine-session
table with routes and adverse events as integer codes, each patient's induction protocol, a KPI's per-patient frame)
can be kept with it. :func:`once` keeps such values **on the cohort object itself**: a filtered cohort
(:func:`~analytics.outcomes.filters.apply_filters`) is a new object and computes its own; nothing is shared between
cohorts or between the sessions of the dashboard, and everything goes when the cohort goes.

Rules for a value kept here: it depends only on the cohort and on the key (put every option into the key); callers
never change it in place (return copies of tables a caller may modify); and computing it twice gives the same value
(two threads asking at the same moment may both compute it; the first stored wins, dict operations are atomic).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, TypeVar

_T = TypeVar("_T")
_SLOT = "_derived_once"  # an instance attribute of the cohort (as functools.cached_property stores its values)


def once(cohort: Any, key: Hashable, compute: Callable[[], _T]) -> _T:
    """``compute()`` the first time ``key`` is asked of this very cohort object; its stored value afterwards.

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
    return store.setdefault(key, compute())


def forget(cohort: Any) -> None:
    """Drop every value kept for ``cohort`` (tests; a caller that changed the cohort's tables in place)."""
    cohort.__dict__.pop(_SLOT, None)


__all__ = ["forget", "once"]
