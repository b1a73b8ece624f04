"""Induction protocols: how many ketamine sessions within how many days complete induction, per program or route.

A patient's protocol is the **first** entry of the protocol table (``Settings.induction_protocols``) whose
``programs`` (when given) include the patient's program and whose ``route`` (when given) is the route of the
patient's first ketamine session. The table's last entry names neither and catches every other patient (unknown or
missing program, other routes). Program names and routes are compared after trimming and case-folding.

Induction is **completed** with at least ``sessions`` ketamine sessions on different dates on days
0 … ``window_days`` − 1 (day 0 = the first ketamine session; sessions of any route count). It can be judged once
day ``window_days`` − 1 has passed.

Default table (each entry cites where its schedule comes from):

* **KARE** (program ``kare``): 3 sessions in 21 days. KARE gave 3 weekly IV infusions of 0.8 mg/kg (days 0, 7,
  14; published-benchmarks.md KARE-1); the 21-day window (days 0–20) leaves the same 6 days of slippage after the
  last scheduled session as the default protocol.
* **IV depression, Oliver 2022** (programs ``iv depression``, ``depression``, ``trd``; first session IV):
  6 infusions within 21 days (published-benchmarks.md OLI22).
* **Spravato label** (first session intranasal): 8 sessions in 28 days, twice weekly in weeks 1–4 (the label's
  induction phase; published-benchmarks-2.md SPR-AE).
* **Default**: 4 sessions in 28 days (weekly on days 0, 7, 14, 21), the definition used before protocols existed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date
from typing import Any, Protocol

import numpy as np
import pandas as pd

from analytics.errors import OutcomesError
from analytics.outcomes.memo import once

DateLike = date | pd.Timestamp | str


class Cohort(Protocol):
    """What :func:`induction_completed` reads of an :class:`analytics.outcomes.cohort.Cohort` (named structurally:
    the settings module imports this one, and the cohort module imports the settings)."""

    @property
    def patients(self) -> pd.DataFrame: ...

    @property
    def sessions(self) -> pd.DataFrame: ...

    @property
    def settings(self) -> Any: ...

    def data_end_date(self) -> pd.Timestamp: ...


@dataclass(frozen=True)
class InductionProtocol:
    """One induction schedule and the patients it applies to.

    Attributes
    ----------
    name:
        Shown in tables and definitions, e.g. ``"Spravato label"``.
    sessions:
        Ketamine sessions on different dates needed to complete induction.
    window_days:
        They must fall on days 0 … ``window_days`` − 1 after the first ketamine session.
    programs:
        Program names (patients.csv ``program``) the protocol applies to; empty: any program.
    route:
        Route of the patient's first ketamine session the protocol applies to; None: any route.
    source:
        Where the schedule comes from, in one phrase.
    """

    name: str
    sessions: int
    window_days: int
    programs: tuple[str, ...] = ()
    route: str | None = None
    source: str = ""

    @property
    def is_default(self) -> bool:
        """True when the protocol names neither programs nor a route (it applies to everyone not matched before)."""
        return not self.programs and self.route is None

    def applies_to(self) -> str:
        """Who the protocol is for, in words."""
        if self.is_default:
            return "any other program or route"
        parts = []
        if self.programs:
            parts.append("program " + " or ".join(f"'{p}'" for p in self.programs))
        if self.route is not None:
            parts.append(f"first ketamine session {_route_word(self.route)}")
        return ", ".join(parts)

    def rule(self) -> str:
        """The completion rule, e.g. ``"≥ 8 ketamine sessions on different days in days 0–27"``."""
        return f"≥ {self.sessions} ketamine sessions on different days in days 0–{self.window_days - 1}"

    def describe(self) -> str:
        return f"{self.name} ({self.applies_to()}): {self.rule()}"


def _route_word(route: str) -> str:
    return route.upper() if len(route) <= 2 else route


DEFAULT_INDUCTION_PROTOCOLS: tuple[InductionProtocol, ...] = (
    InductionProtocol("KARE", 3, 21, programs=("kare",),
                      source="KARE (Grabski 2022): 3 weekly IV infusions of ketamine 0.8 mg/kg"),
    InductionProtocol("IV depression (Oliver 2022)", 6, 21, programs=("iv depression", "depression", "trd"),
                      route="iv", source="Oliver 2022: 6 IV infusions within 21 days"),
    InductionProtocol("Spravato label", 8, 28, route="intranasal",
                      source="SPRAVATO label: twice weekly in weeks 1–4"),
    InductionProtocol("default", 4, 28, source="weekly sessions on days 0, 7, 14 and 21"),
)


def check_protocols(protocols: Sequence[InductionProtocol]) -> tuple[InductionProtocol, ...]:
    """The table as a tuple, or :class:`~analytics.errors.OutcomesError` saying what to fix."""
    table = tuple(protocols)
    if not table or not table[-1].is_default:
        last = table[-1].describe() if table else "nothing"
        raise OutcomesError(f"The induction protocol table must end with a default entry that names no program and "
                            f"no route (it applies to every other patient); its last entry is {last}. Add a default, "
                            "e.g. 4 sessions in 28 days.")
    for p in table:
        if p.sessions < 1 or p.window_days < p.sessions:
            raise OutcomesError(f"Induction protocol '{p.name}' asks for {p.sessions} sessions on different days in "
                                f"{p.window_days} days, which cannot be met. Use at least 1 session and a window of at "
                                "least as many days as sessions.")
    return table


def with_default(protocols: Sequence[InductionProtocol], sessions: int,
                 window_days: int) -> tuple[InductionProtocol, ...]:
    """The table with its default entry's numbers replaced (e.g. by the Overview KPI's own options)."""
    table = check_protocols(protocols)
    last = table[-1]
    if (sessions, window_days) == (last.sessions, last.window_days):
        return table
    return check_protocols((*table[:-1], replace(last, sessions=sessions, window_days=window_days,
                                                 source="set in the KPI options")))


def describe_protocols(protocols: Sequence[InductionProtocol]) -> str:
    """One sentence naming every protocol, for KPI definitions and captions."""
    table = check_protocols(protocols)
    return ("Induction completed per program/route protocol (first match; day 0 = first ketamine session): "
            + "; ".join(p.describe() for p in table) + ".")


def _norm(values: pd.Series) -> pd.Series:
    return values.astype("string").str.strip().str.casefold()


def assign_protocols(patients: pd.DataFrame, protocols: Sequence[InductionProtocol]) -> np.ndarray:
    """Position in ``protocols`` of each patient's protocol (rows of ``patients``: ``program``, ``index_route``)."""
    table = check_protocols(protocols)
    n = len(patients)
    program = (_norm(patients["program"]) if "program" in patients else pd.Series(pd.NA, index=patients.index,
                                                                                   dtype="string"))
    route = (_norm(patients["index_route"]) if "index_route" in patients else pd.Series(pd.NA, index=patients.index,
                                                                                         dtype="string"))
    which = np.full(n, -1, dtype=int)
    for i, p in enumerate(table):
        hit = which < 0
        if p.programs:
            hit &= program.isin([x.strip().casefold() for x in p.programs]).fillna(False).to_numpy(bool)
        if p.route is not None:
            hit &= route.eq(p.route.strip().casefold()).fillna(False).to_numpy(bool)
        which[hit] = i
    return which


def _ketamine_dates(cohort: Cohort) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ketamine sessions on day ≥ 0 of patients of ``cohort.patients``, sorted by (patient, session date):
    ``(patient position, session date as int64, day)``. Kept once per cohort (:func:`analytics.outcomes.memo.once`)."""
    from schemas.arrow import text_codes

    s = cohort.sessions
    keep = (s["session_type"] == "ketamine").to_numpy(bool) & (s["days"] >= 0).to_numpy(bool)
    ket = s.loc[keep, ["patient_id", "session_date", "days"]]
    pos = text_codes(ket["patient_id"], cohort.patients["patient_id"])
    dates = ket["session_date"].to_numpy().view(np.int64)
    days = ket["days"].to_numpy(float)
    known = (pos >= 0) & ~np.isnat(ket["session_date"].to_numpy())  # sessions of patients not in the table are not counted (as before: a look-up by id)
    pos, dates, days = pos[known], dates[known], days[known]
    order = np.lexsort((dates, pos))
    return pos[order], dates[order], days[order]


def _distinct_dates_within(sessions: tuple[np.ndarray, np.ndarray, np.ndarray], window: np.ndarray) -> np.ndarray:
    """Per patient: ketamine sessions on distinct dates on days 0 … window − 1 (``window`` per patient)."""
    pos, dates, days = sessions
    inside = days < window[pos]
    pos, dates = pos[inside], dates[inside]
    first = np.r_[True, (pos[1:] != pos[:-1]) | (dates[1:] != dates[:-1])] if len(pos) else np.zeros(0, bool)
    return np.bincount(pos[first], minlength=len(window)).astype(int)


def induction_completed(cohort: Cohort, protocols: Sequence[InductionProtocol] | None = None, *,
                        as_of: DateLike | None = None) -> pd.DataFrame:
    """Per patient: the induction protocol that applies and whether it was completed.

    Parameters
    ----------
    cohort:
        The analysis cohort.
    protocols:
        The protocol table (first match wins; the last entry is the default). None: the cohort's
        ``settings.induction_protocols``.
    as_of:
        The data's end date (default: latest date in the exports), for ``window_closed``.

    Returns
    -------
    pandas.DataFrame
        One row per patient of ``cohort.patients`` (same order): ``patient_id``, ``program``, ``route`` (of the
        first ketamine session), ``protocol`` (name), ``required`` (sessions), ``window_days``, ``n_sessions``
        (ketamine sessions on different dates on days 0 … window_days − 1), ``completed`` (bool),
        ``window_closed`` (day window_days − 1 is on or before ``as_of``: completion can be judged).

    Notes
    -----
    A patient whose window has not closed can still complete induction; callers counting a completion rate should
    count only ``window_closed`` patients (the Overview KPI does).
    """
    table = check_protocols(protocols if protocols is not None else cohort.settings.induction_protocols)
    p = cohort.patients
    which = once(cohort, ("protocols", "assigned", table), lambda: assign_protocols(p, table))
    required = np.array([t.sessions for t in table], dtype=int)[which]
    window = np.array([t.window_days for t in table], dtype=int)[which]
    n_sessions = _distinct_dates_within(once(cohort, ("protocols", "ketamine dates"), lambda: _ketamine_dates(cohort)),
                                        window)
    names = [t.name for t in table]
    end = pd.Timestamp(as_of) if as_of is not None else cohort.data_end_date()  # type: ignore[arg-type]
    close = p["index_date"] + pd.to_timedelta(window - 1, unit="D")
    return pd.DataFrame({
        "patient_id": p["patient_id"].to_numpy(),
        "program": p["program"].to_numpy() if "program" in p else pd.NA,
        "route": p["index_route"].to_numpy() if "index_route" in p else pd.NA,
        "protocol": [names[i] for i in which],
        "required": required,
        "window_days": window,
        "n_sessions": n_sessions,
        "completed": n_sessions >= required,
        "window_closed": (close <= end).to_numpy(bool),
    })


__all__ = ["DEFAULT_INDUCTION_PROTOCOLS", "InductionProtocol", "assign_protocols", "check_protocols",
           "describe_protocols", "induction_completed", "with_default"]
