"""Safety of ketamine sessions: adverse events and raised blood pressure or heart rate.

Units of analysis (the key of ``published-benchmarks-2.md``; every table says which one it holds):

* **per session**: sessions with the event / ketamine sessions. A session either has a given event or not,
  so the share is a binomial proportion with a **Wilson** score interval. The count of *all* events per
  100 sessions (a session may list several) is a Poisson rate with an **exact (Garwood) Poisson** interval.
* **per patient**: patients with at least one session with the event / patients with at least one ketamine
  session (optionally only sessions in the first ``patient_window_days`` days, i.e. days 0 … window − 1 after the
  index date, and then only patients followed that long). Binomial, Wilson interval.

What the export can and cannot say:

* ``adverse_events`` is a ``;``-joined list. A session without an entry is counted as a session **without** an
  adverse event: the export cannot tell "none" from "not recorded".
* Blood pressure and heart rate are the **highest reading in the session**. Raised blood pressure uses absolute
  thresholds (default systolic ≥ 165 or diastolic ≥ 100 mmHg, the treatment-emergent hypertension definition of
  Rodrigues 2020). The label's *rise* rule (≥ 40 systolic / ≥ 25 diastolic over the pre-dose reading) needs a
  pre-dose reading that the contract does not have; see :class:`VitalThresholds`.
* Sessions without the readings needed to decide are left out of that measure's denominator and counted in
  ``n_missing``.

Categories of what was recorded (:func:`safety_categories`):

* **Expected acute effects**: the contract types ``dissociation``, ``sedation``, ``dizziness``, ``nausea`` and
  ``hypertension`` (a blood-pressure rise charted in the session). They are expected during a ketamine session;
  the export names the type only, so it cannot tell whether the effect resolved in the session.
* **Adverse events that needed action** (a clinical response: medication, extended monitoring, session stopped)
  and **serious adverse events**: the data contract has no column for either, so the export cannot tell them
  apart. They are reported as *not recorded*, never as zero; the other recorded types (``vomiting``,
  ``tachycardia``, ``hallucinations``, ``headache``, ``anxiety``, ``other``) are *not classifiable*.

The interval helpers :func:`wilson_ci` and :func:`poisson_exact_ci` live here because :mod:`analytics.outcomes.qi`
builds on this module.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from analytics.engines.intervals import poisson_exact_ci, wilson_ci
from analytics.errors import InsufficientData
from analytics.outcomes.cohort import Cohort
from analytics.outcomes.memo import once, per_cohort
from analytics.privacy.counts import note_n
from schemas.arrow import text_codes
from schemas.columns import ADVERSE_EVENTS

ALL = "all"
NOT_RECORDED = "not recorded"
DEFAULT_REGISTRY = Path(__file__).resolve().parent / "data" / "benchmarks.toml"
Period = tuple[date | pd.Timestamp | str, date | pd.Timestamp | str]


# ---------------------------------------------------------------------------------------------------------------
# Settings (intervals: analytics/engines/intervals.py, shared with benchmarks and the other analyses)


@dataclass(frozen=True)
class VitalThresholds:
    """When a session counts as having raised blood pressure or heart rate.

    Attributes
    ----------
    systolic_mmhg, diastolic_mmhg:
        ``rule="absolute"``: raised when the session's highest systolic ≥ ``systolic_mmhg`` **or** highest
        diastolic ≥ ``diastolic_mmhg`` (default 165/100: treatment-emergent hypertension in Rodrigues 2020).
    heart_rate_bpm:
        Raised heart rate when the session's highest heart rate ≥ this (default 100 bpm, the usual adult
        tachycardia cut-off; published-benchmarks-2 §1c has no ketamine-specific heart-rate threshold, only the
        > 130 bpm exclusion of an emergency-department trial).
    rule:
        ``"absolute"`` (default) or ``"rise"``: rise of ≥ ``rise_systolic_mmhg`` systolic or
        ≥ ``rise_diastolic_mmhg`` diastolic over the pre-dose reading (the esketamine label's definition). The rise
        rule needs pre-dose readings in columns ``bp_systolic_pre`` and ``bp_diastolic_pre``, which the data
        contract does not have (the export holds only the session maximum); asking for it without them raises
        :class:`~analytics.errors.InsufficientData`. No defensible proxy exists: the first session's maximum is
        itself a post-dose reading.
    """

    systolic_mmhg: float = 165
    diastolic_mmhg: float = 100
    heart_rate_bpm: float = 100
    rule: Literal["absolute", "rise"] = "absolute"
    rise_systolic_mmhg: float = 40
    rise_diastolic_mmhg: float = 25

    def describe(self) -> str:
        if self.rule == "rise":
            bp = (f"a rise of ≥ {self.rise_systolic_mmhg:g} mmHg systolic or ≥ {self.rise_diastolic_mmhg:g} mmHg "
                  "diastolic over the pre-dose reading")
        else:
            bp = (f"highest systolic ≥ {self.systolic_mmhg:g} mmHg or highest diastolic ≥ "
                  f"{self.diastolic_mmhg:g} mmHg in the session")
        return f"Raised blood pressure = {bp}; raised heart rate = highest heart rate ≥ {self.heart_rate_bpm:g} bpm."


# ---------------------------------------------------------------------------------------------------------------
# Session-level flags


def _timestamp(value: object) -> pd.Timestamp:
    return pd.Timestamp(value)  # type: ignore[arg-type]


def _ketamine_sessions(cohort: Cohort, period: Period | None = None) -> pd.DataFrame:
    ses = cohort.sessions
    ket = ses[ses["session_type"] == "ketamine"].copy()
    if period is not None:
        start, end = _timestamp(period[0]), _timestamp(period[1])
        ket = ket[(ket["session_date"] >= start) & (ket["session_date"] <= end)]
    ket["route"] = ket["route"].astype("string").fillna(NOT_RECORDED)
    return ket


def _parse_adverse_events(sessions: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """Session × type boolean matrix and the normalised ``;``-joined list per session (parsed once per distinct
    entry, so it stays fast on large exports)."""
    raw = sessions["adverse_events"] if "adverse_events" in sessions.columns else pd.Series(
        pd.NA, index=sessions.index, dtype="string")
    codes, uniques = pd.factorize(raw.astype("string").str.lower(), use_na_sentinel=True)
    parsed = [{t.strip() for t in str(u).split(";")} - {""} for u in uniques]
    extra = sorted(set().union(*parsed) - set(ADVERSE_EVENTS)) if parsed else []
    types = list(ADVERSE_EVENTS) + extra
    umat = np.array([[t in ts for t in types] for ts in parsed] + [[False] * len(types)], dtype=bool)
    text = np.array([";".join(t for t in types if t in ts) for ts in parsed] + [""], dtype=object)
    rows = np.where(codes < 0, len(uniques), codes)
    return pd.DataFrame(umat[rows], index=sessions.index, columns=types), text[rows]


def adverse_event_matrix(sessions: pd.DataFrame) -> pd.DataFrame:
    """One boolean column per adverse-event type, one row per session (same index as ``sessions``).

    Types are the contract's list (in its order) followed by any other type found; a type listed twice in one
    session counts once.
    """
    return _parse_adverse_events(sessions)[0]


@dataclass(frozen=True)
class _KetamineSessions:
    """The ketamine sessions of a cohort (optionally of one period) as arrays: what every safety figure counts.

    Built once per cohort (:func:`analytics.outcomes.memo.once`): routes and patients are integer codes and the
    adverse events a boolean matrix, so each figure is a few NumPy counts instead of text-column group-bys."""

    frame: pd.DataFrame  # the sessions' rows (route filled with NOT_RECORDED), with the index of cohort.sessions
    types: tuple[str, ...]  # adverse-event types: the contract's, then any other found
    matrix: np.ndarray  # session × type, bool
    text: np.ndarray  # normalised ``;``-joined types per session (object)
    routes: tuple[str, ...]  # distinct routes, sorted
    route: np.ndarray  # per session: position in ``routes``
    patient: np.ndarray  # per session: position in cohort.patients (patients not in it numbered after them)
    order: np.ndarray  # session positions sorted by (patient, route)
    days: np.ndarray  # per session: days since the index date

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def n_events(self) -> np.ndarray:
        return self.matrix.sum(axis=1).astype(int)

    def route_counts(self, mask: np.ndarray | None = None) -> np.ndarray:
        code = self.route if mask is None else self.route[mask]
        return np.bincount(code, minlength=len(self.routes))


def _ketamine_table(cohort: Cohort, frame: pd.DataFrame) -> _KetamineSessions:
    matrix, text = _parse_adverse_events(frame)
    codes, uniques = pd.factorize(frame["route"])
    labels = [str(u) for u in uniques]
    routes = sorted(labels)
    remap = np.array([routes.index(u) for u in labels], dtype=np.int64)
    route = remap[codes] if len(codes) else np.zeros(0, dtype=np.int64)
    patient = text_codes(frame["patient_id"], cohort.patients["patient_id"])
    outside = patient < 0
    if outside.any():  # not in cohort.patients: numbered after them, one code per patient
        patient[outside] = len(cohort.patients) + pd.factorize(frame["patient_id"][outside])[0]
    return _KetamineSessions(frame=frame, types=tuple(matrix.columns), matrix=matrix.to_numpy(dtype=bool),
                             text=text, routes=tuple(routes), route=route, patient=patient,
                             order=np.lexsort((route, patient)), days=frame["days"].to_numpy())


def _period_bounds(period: Period) -> tuple[pd.Timestamp, pd.Timestamp]:
    return _timestamp(period[0]), _timestamp(period[1])


def _ketamine_of_period(base: _KetamineSessions, start: pd.Timestamp, end: pd.Timestamp) -> _KetamineSessions:
    dates = base.frame["session_date"]
    keep = ((dates >= start) & (dates <= end)).to_numpy(bool)
    n_contract = len(ADVERSE_EVENTS)
    matrix = base.matrix[keep]
    # the types are the contract's and the others found in these sessions (as parsing them alone would give)
    cols = [j for j in range(len(base.types)) if j < n_contract or matrix[:, j].any()]
    route, patient = base.route[keep], base.patient[keep]
    return _KetamineSessions(frame=base.frame[keep], types=tuple(base.types[j] for j in cols),
                             matrix=matrix[:, cols], text=base.text[keep], routes=base.routes, route=route,
                             patient=patient, order=np.lexsort((route, patient)), days=base.days[keep])


def _ketamine(cohort: Cohort, period: Period | None = None) -> _KetamineSessions:
    """The cohort's ketamine sessions (of ``period`` when given), computed once per cohort and period."""
    base = once(cohort, ("safety", "ketamine sessions"),
                lambda: _ketamine_table(cohort, _ketamine_sessions(cohort)))
    if period is None:
        return base
    start, end = _period_bounds(period)
    return once(cohort, ("safety", "ketamine sessions", start, end), lambda: _ketamine_of_period(base, start, end))


def _vital_codes(ks: _KetamineSessions, thresholds: VitalThresholds) -> np.ndarray:
    """Session × :data:`VITAL_MEASURES`: 1 raised, 0 not raised, -1 cannot tell (readings missing)."""
    ket = ks.frame

    def num(col: str) -> np.ndarray:
        if col not in ket.columns:
            return np.full(len(ket), np.nan)
        return pd.to_numeric(ket[col], errors="coerce").to_numpy(dtype=float, na_value=np.nan)

    sys_, dia, hr = num("bp_systolic_max"), num("bp_diastolic_max"), num("heart_rate_max")
    if thresholds.rule == "rise":
        # the columns are in the contract now (issue 22), so an export without them has them all empty
        if not all(c in ket.columns and bool(ket[c].notna().any()) for c in ("bp_systolic_pre", "bp_diastolic_pre")):
            raise InsufficientData(
                f"The rise rule (≥ {thresholds.rise_systolic_mmhg:g} mmHg systolic or ≥ "
                f"{thresholds.rise_diastolic_mmhg:g} mmHg diastolic over the pre-dose reading) needs a "
                "pre-dose blood pressure for every session, but this sessions export has no pre-dose reading "
                "(bp_systolic_pre, bp_diastolic_pre), only the highest reading in the session (bp_systolic_max, "
                "bp_diastolic_max). Use the absolute thresholds "
                "(e.g. 165/100 mmHg), or add pre-dose readings to the export as bp_systolic_pre and "
                "bp_diastolic_pre.")
        sys_v, dia_v = sys_ - num("bp_systolic_pre"), dia - num("bp_diastolic_pre")
        s_cut, d_cut = thresholds.rise_systolic_mmhg, thresholds.rise_diastolic_mmhg
    else:
        sys_v, dia_v = sys_, dia
        s_cut, d_cut = thresholds.systolic_mmhg, thresholds.diastolic_mmhg
    with np.errstate(invalid="ignore"):
        bp_hi = (sys_v >= s_cut) | (dia_v >= d_cut)
        bp_lo = (sys_v < s_cut) & (dia_v < d_cut)
        hr_hi = hr >= thresholds.heart_rate_bpm
        hr_lo = hr < thresholds.heart_rate_bpm

    def tri(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        return np.where(hi, 1, np.where(lo, 0, -1)).astype(np.int8)

    return np.column_stack([tri(bp_hi, bp_lo), tri(hr_hi, hr_lo), tri(bp_hi | hr_hi, bp_lo & hr_lo)])


def _vitals(cohort: Cohort, ks: _KetamineSessions, thresholds: VitalThresholds,
            period: Period | None) -> np.ndarray:
    key = None if period is None else _period_bounds(period)
    return once(cohort, ("safety", "vital codes", thresholds, key), lambda: _vital_codes(ks, thresholds))


def _vital_flags(ket: pd.DataFrame, thresholds: VitalThresholds) -> pd.DataFrame:
    """``bp_raised``, ``hr_raised``, ``bp_or_hr_raised``: nullable booleans (NA = cannot tell)."""
    codes = _vital_codes(_KetamineSessions(frame=ket, types=(), matrix=np.zeros((len(ket), 0), bool),
                                           text=np.zeros(0, object), routes=(), route=np.zeros(0, np.int64),
                                           patient=np.zeros(0, np.int64), order=np.zeros(0, np.int64),
                                           days=np.zeros(0)), thresholds)
    return pd.DataFrame({m: _nullable(codes[:, j]) for j, m in enumerate(VITAL_MEASURES)}, index=ket.index)


def _nullable(codes: np.ndarray) -> pd.arrays.BooleanArray:
    return pd.arrays.BooleanArray(codes == 1, codes < 0)


def _flags_frame(ks: _KetamineSessions, codes: np.ndarray) -> pd.DataFrame:
    out = ks.frame[["patient_id", "session_date", "days", "route", "site", "clinician"]].copy()
    out["n_events"] = ks.n_events
    out["has_ae"] = out["n_events"] > 0
    out["events"] = ks.text
    for j, m in enumerate(VITAL_MEASURES):
        out[m] = _nullable(codes[:, j])
    return out.reset_index(drop=True)


def session_safety_flags(cohort: Cohort, *, thresholds: VitalThresholds | None = None,
                         period: Period | None = None) -> pd.DataFrame:
    """Per ketamine session: what the safety panel counts.

    Returns
    -------
    pandas.DataFrame
        ``patient_id``, ``session_date``, ``days``, ``route``, ``site``, ``clinician``, ``has_ae`` (bool),
        ``n_events`` (distinct event types listed), ``events`` (``;``-joined types), ``bp_raised``,
        ``hr_raised``, ``bp_or_hr_raised`` (nullable booleans: NA when the readings needed are missing).
        A new frame on every call (computed once per cohort, thresholds and period).
    """
    thresholds = thresholds or VitalThresholds()
    ks = _ketamine(cohort, period)
    key = None if period is None else _period_bounds(period)
    frame = once(cohort, ("safety", "flags", thresholds, key),
                 lambda: _flags_frame(ks, _vitals(cohort, ks, thresholds, period)))
    return frame.copy(deep=False)  # copy-on-write: the caller's changes never reach the kept frame


def _group_any(ks: _KetamineSessions, values: np.ndarray,
               mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per (patient, route) and per patient: is any of the (selected) sessions' ``values`` true?

    Returns ``(by_route, route_of_row, by_patient)``: a (patient, route) × column and a patient × column boolean
    matrix (only pairs and patients with a selected session), and each pair's route code."""
    order = ks.order if mask is None else ks.order[mask[ks.order]]
    width = values.shape[1]
    if not len(order):
        return np.zeros((0, width), bool), np.zeros(0, np.int64), np.zeros((0, width), bool)
    pk, rk, v = ks.patient[order], ks.route[order], values[order]
    new_patient = np.r_[True, pk[1:] != pk[:-1]]
    pair_starts = np.flatnonzero(new_patient | np.r_[True, rk[1:] != rk[:-1]])
    by_route = np.logical_or.reduceat(v, pair_starts, axis=0)
    by_patient = np.logical_or.reduceat(by_route, np.flatnonzero(new_patient[pair_starts]), axis=0)
    return by_route, rk[pair_starts], by_patient


def _counts_by_route(values: np.ndarray, route: np.ndarray, n_routes: int) -> np.ndarray:
    """Route × column sums (int64) of a boolean or integer row × column matrix; ``route`` codes its rows."""
    width = values.shape[1]
    rows, cols = np.nonzero(values)
    where = route[rows] * width + cols
    if values.dtype == bool:
        counts = np.bincount(where, minlength=n_routes * width)
    else:
        counts = np.bincount(where, weights=values[rows, cols].astype(float), minlength=n_routes * width)
    return np.rint(counts).astype(np.int64).reshape(n_routes, width)


# ---------------------------------------------------------------------------------------------------------------
# Adverse events


@dataclass(frozen=True)
class AdverseEventRates:
    """Adverse events of ketamine sessions, per session and per patient, by type and route.

    Attributes
    ----------
    table:
        One row per (``unit_of_analysis``, ``event_type``, ``route``): ``unit_of_analysis`` (``"session"`` or
        ``"patient"``), ``event_type`` (a contract type, or ``"any"``), ``route`` (a route or ``"all"``),
        ``numerator`` (sessions or patients with the event), ``denominator`` (sessions or patients),
        ``estimate`` (proportion 0–1), ``ci_low``, ``ci_high`` (Wilson).
    events:
        All events per session by route: ``route``, ``n_sessions``, ``n_events``, ``per_100_sessions``,
        ``ci_low``, ``ci_high`` (exact Poisson, per 100 sessions).
    """

    table: pd.DataFrame
    events: pd.DataFrame
    conf_level: float
    patient_window_days: int | None
    notes: tuple[str, ...] = ()


def _groups(counts: np.ndarray, dens: np.ndarray, labels: Sequence[str]) -> list[tuple[str, np.ndarray, int]]:
    """(label, per-column counts, denominator) of each group with a unit in it, in label order, then "all"."""
    present = [(labels[g], counts[g], int(dens[g])) for g in np.argsort(np.asarray(labels, dtype=object), kind="stable")
               if dens[g] > 0] if len(labels) else []
    return present + [(ALL, counts.sum(axis=0), int(dens.sum()))]


def _proportion_rows(counts: np.ndarray, dens: np.ndarray, labels: Sequence[str], columns: Sequence[str],
                     unit: str, conf_level: float) -> pd.DataFrame:
    """Rows of numerator/denominator per (column, group) + group "all" from group × column counts of units with
    the event (``dens``: units per group)."""
    index = pd.Index(list(columns))
    parts = [pd.DataFrame({"unit_of_analysis": unit, "event_type": index, "route": label,
                           "numerator": num.astype(int), "denominator": den})
             for label, num, den in _groups(counts, dens, labels)]
    table = pd.concat(parts, ignore_index=True)
    table["estimate"] = table["numerator"] / table["denominator"].where(table["denominator"] > 0)
    table["ci_low"], table["ci_high"] = wilson_ci(table["numerator"], table["denominator"], conf_level)
    return table


def _observed_patients(cohort: Cohort, window_days: int, as_of: pd.Timestamp) -> pd.Index:
    return pd.Index(cohort.patients.loc[cohort.window_closed(window_days, as_of=as_of), "patient_id"])


def _patient_sessions(ks: _KetamineSessions, cohort: Cohort, patient_window_days: int | None,
                      as_of: pd.Timestamp | None) -> tuple[np.ndarray | None, list[str]]:
    """Which sessions per-patient figures count (None: all) and the note saying so."""
    notes: list[str] = []
    if patient_window_days is None:
        return None, notes
    as_of = as_of if as_of is not None else cohort.data_end_date()
    closed = cohort.window_closed(patient_window_days, as_of=as_of).to_numpy(bool)
    followed = np.zeros(len(ks), dtype=bool)
    known = ks.patient < len(closed)
    followed[known] = closed[ks.patient[known]]
    mask = (ks.days < patient_window_days) & followed
    n_out = int(cohort.patients["patient_id"].nunique() - len(_observed_patients(cohort, patient_window_days, as_of)))
    notes.append(f"Per patient: sessions on days 0–{patient_window_days - 1} after the first ketamine session, "
                 f"among patients whose first {patient_window_days} days had passed by {as_of:%Y-%m-%d} "
                 f"({note_n(n_out)} more recent starters left out).")
    return mask, notes


@per_cohort
def adverse_event_rates(cohort: Cohort, *, patient_window_days: int | None = None, period: Period | None = None,
                        conf_level: float = 0.95, as_of: date | pd.Timestamp | None = None) -> AdverseEventRates:
    """Adverse events per ketamine session and per patient, by event type and route.

    Parameters
    ----------
    cohort:
        The analysis cohort.
    patient_window_days:
        Per-patient rates count sessions in the first ``patient_window_days`` days only (days 0 … window − 1;
        e.g. 28 for the esketamine label's 4-week induction), among patients followed that long. ``None``: the
        whole observed course.
    period:
        Only sessions dated within ``(start, end)`` (inclusive).
    conf_level:
        Confidence level of the intervals.
    as_of:
        The data's end date (default: latest date in the exports); used with ``patient_window_days``.

    Returns
    -------
    AdverseEventRates
        ``table``: ``unit_of_analysis``, ``event_type``, ``route``, ``numerator``, ``denominator``,
        ``estimate``, ``ci_low``, ``ci_high``; ``events``: ``route``, ``n_sessions``, ``n_events``,
        ``per_100_sessions``, ``ci_low``, ``ci_high``.

    Notes
    -----
    Per-session and per-patient shares: Wilson score intervals. All events per 100 sessions: exact Poisson
    (Garwood) interval. Sessions without an ``adverse_events`` entry count as sessions without an event.
    """
    return _ae_rates(_ketamine(cohort, period), cohort, patient_window_days, conf_level,
                     None if as_of is None else pd.Timestamp(as_of))


def _ae_rates(ks: _KetamineSessions, cohort: Cohort, patient_window_days: int | None,
              conf_level: float, as_of: pd.Timestamp | None) -> AdverseEventRates:
    if not len(ks):
        raise InsufficientData("Adverse-event rates need at least 1 ketamine session (got 0 in the chosen "
                               "period). Widen the date range.")
    n_routes = len(ks.routes)
    ind = np.column_stack([ks.matrix, ks.matrix.any(axis=1)])
    columns = [*ks.types, "any"]
    per_session = _proportion_rows(_counts_by_route(ind, ks.route, n_routes), ks.route_counts(), ks.routes,
                                   columns, "session", conf_level)

    mask, notes = _patient_sessions(ks, cohort, patient_window_days, as_of)
    by_route, route_of, by_pat = _group_any(ks, ind, mask)
    pr = _proportion_rows(_counts_by_route(by_route, route_of, n_routes), np.bincount(route_of, minlength=n_routes),
                          ks.routes, columns, "patient", conf_level)
    pr = pr[pr["route"] != ALL]
    pa = _proportion_rows(by_pat.sum(axis=0, dtype=np.int64)[None, :], np.array([len(by_pat)]), [ALL], columns,
                          "patient", conf_level)
    pa = pa.drop_duplicates(["event_type", "route"])
    table = pd.concat([per_session, pr, pa], ignore_index=True)

    n_events = ks.n_events
    n_sessions = ks.route_counts()
    events = np.bincount(ks.route, weights=n_events, minlength=n_routes)
    present = [g for g in np.argsort(np.asarray(ks.routes, dtype=object), kind="stable") if n_sessions[g] > 0]
    ev = pd.DataFrame({"n_sessions": n_sessions[present].astype(np.int64),
                       "n_events": np.rint(events[present]).astype(np.int64)},
                      index=pd.Index([ks.routes[g] for g in present], dtype=ks.frame["route"].dtype, name="route"))
    ev.loc[ALL] = [len(ks), int(n_events.sum())]
    ev = ev.reset_index()
    ev["per_100_sessions"] = 100 * ev["n_events"] / ev["n_sessions"]
    low, high = poisson_exact_ci(ev["n_events"], ev["n_sessions"], conf_level)
    ev["ci_low"], ev["ci_high"] = 100 * low, 100 * high

    notes = [
        ("Per session: share of ketamine sessions with the event (Wilson interval). Per patient: share of patients "
         "with at least one such session (Wilson interval). All events per 100 sessions: exact Poisson interval."),
        ("Sessions without an adverse_events entry are counted as sessions without an adverse event (the export "
         "cannot tell 'none' from 'not recorded')."),
        ("By route, per patient: patients with at least one session by that route, counting events on those "
         "sessions (a patient treated by two routes appears under both)."),
        *notes,
    ]
    return AdverseEventRates(table=table, events=ev, conf_level=conf_level,
                             patient_window_days=patient_window_days, notes=tuple(notes))


# ---------------------------------------------------------------------------------------------------------------
# Categories: expected acute effects, events that needed action, serious events


EXPECTED_ACUTE_EFFECTS = ("dissociation", "sedation", "dizziness", "nausea", "hypertension")
CATEGORIES = ("expected", "not_classifiable", "needed_action", "serious")
CATEGORY_LABELS = {
    "expected": "expected acute effects recorded",
    "not_classifiable": "other recorded events (not classifiable)",
    "needed_action": "adverse events that needed action",
    "serious": "serious adverse events",
}
NEEDED_ACTION_NOT_RECORDED = (
    "The sessions export has no column saying whether an event needed a clinical response (medication, extended "
    "monitoring, session stopped), so adverse events that needed action cannot be told apart from expected effects: "
    "not recorded, not zero.")
SERIOUS_NOT_RECORDED = (
    "The exports have no column marking an event as serious (hospital transfer, escalation of care, lasting harm), "
    "so serious adverse events cannot be counted: not recorded, not zero.")


@dataclass(frozen=True)
class SafetyCategories:
    """Recorded adverse events split into expected acute effects and the rest, with what the export cannot say.

    Attributes
    ----------
    table:
        One row per (``category``, ``unit_of_analysis``, ``route``): ``category`` (:data:`CATEGORIES`), ``label``,
        ``unit_of_analysis`` (``"session"``: events of the category per 100 ketamine sessions, each type once per
        session, exact Poisson interval; ``"patient"``: share 0–1 of patients with at least one, Wilson interval),
        ``route`` (a route or ``"all"``), ``recorded`` (False: the export cannot tell; counts and estimates are
        missing, never 0), ``numerator`` (events or patients; nullable), ``denominator`` (sessions or patients),
        ``estimate``, ``ci_low``, ``ci_high``, ``scale`` (``"per_100_sessions"`` or ``"proportion"``).
    serious:
        Serious events per 1,000 sessions by route: ``route``, ``n_sessions``, ``recorded``, ``n_sessions_with_event``
        (nullable), ``per_1000_sessions``, ``ci_low``, ``ci_high`` (exact Clopper–Pearson), ``upper_bound``
        (exact one-sided bound at ``conf_level``), and, for the case of zero events, ``upper_bound_if_none`` (the
        exact bound the clinic would have if its own records confirm none) and ``rule_of_three`` (3 / n × 1,000).
    """

    table: pd.DataFrame
    serious: pd.DataFrame
    expected_types: tuple[str, ...]
    conf_level: float
    patient_window_days: int | None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class EventBound:
    """Sessions with an event per 1,000 sessions, with exact (Clopper–Pearson) limits.

    ``upper_bound`` is one-sided at ``conf_level`` (with 0 events: 1 − (1 − conf_level)^(1/n), which the rule of
    three, 3/n, approximates for 95%); ``rule_of_three`` is 3000/n with 0 events, else None.
    """

    events: int
    sessions: int
    per_1000: float
    ci_low: float
    ci_high: float
    upper_bound: float
    rule_of_three: float | None
    conf_level: float


def event_bound(events: int, sessions: int, *, conf_level: float = 0.95) -> EventBound:
    """Sessions with an event per 1,000 sessions, two-sided exact interval and exact one-sided upper bound.

    Notes
    -----
    Clopper–Pearson (exact binomial) limits: a session has the event or not. With zero events the one-sided upper
    bound is 1 − α^(1/n) (α = 1 − conf_level); the *rule of three* (3/n) is its usual approximation for 95%
    (Hanley & Lippman-Hand 1983). This is how JPN-AUD (published-benchmarks-2.md) reported 0/1,985 sessions: upper
    bound 0.15% per session.
    """
    if sessions <= 0:
        raise InsufficientData(f"A rate per 1,000 sessions needs at least 1 session (got {sessions}). Widen the "
                               "date range.")
    if not 0 <= events <= sessions:
        raise ValueError(f"events must lie between 0 and the {sessions} sessions (got {events}).")
    from scipy.stats import beta  # imported when needed: the dashboard's start-up never needs scipy

    alpha = 1 - conf_level
    lo = 0.0 if events == 0 else float(beta.ppf(alpha / 2, events, sessions - events + 1))
    hi = 1.0 if events == sessions else float(beta.ppf(1 - alpha / 2, events + 1, sessions - events))
    one_sided = (1.0 - alpha ** (1 / sessions) if events == 0 else
                 1.0 if events == sessions else float(beta.ppf(conf_level, events + 1, sessions - events)))
    return EventBound(events=events, sessions=sessions, per_1000=1000 * events / sessions, ci_low=1000 * lo,
                      ci_high=1000 * hi, upper_bound=1000 * one_sided,
                      rule_of_three=3000 / sessions if events == 0 else None, conf_level=conf_level)


def _category_rows(counts: np.ndarray, dens: np.ndarray, labels: Sequence[str], unit: str) -> list[dict[str, object]]:
    """Rows per (category, route) from group × {expected, not_classifiable} numerators (events per session, or
    patients with one) and units per group."""
    parts: list[dict[str, object]] = []
    for label, num, den in _groups(counts, dens, labels):
        for j, cat in enumerate(("expected", "not_classifiable")):
            parts.append({"category": cat, "unit_of_analysis": unit, "route": label, "recorded": True,
                          "numerator": int(num[j]), "denominator": den})
        for cat in ("needed_action", "serious"):
            parts.append({"category": cat, "unit_of_analysis": unit, "route": label, "recorded": False,
                          "numerator": pd.NA, "denominator": den})
    return parts


@per_cohort
def safety_categories(cohort: Cohort, *, expected: Sequence[str] = EXPECTED_ACUTE_EFFECTS,
                      patient_window_days: int | None = None, period: Period | None = None,
                      conf_level: float = 0.95, as_of: date | pd.Timestamp | None = None) -> SafetyCategories:
    """Expected acute effects, other recorded events, events that needed action and serious events, by route.

    Parameters
    ----------
    cohort:
        The analysis cohort.
    expected:
        Adverse-event types counted as expected acute effects (default :data:`EXPECTED_ACUTE_EFFECTS`).
    patient_window_days, period, conf_level, as_of:
        As in :func:`adverse_event_rates`.

    Returns
    -------
    SafetyCategories
        ``table``: ``category``, ``label``, ``unit_of_analysis``, ``route``, ``recorded``, ``numerator``,
        ``denominator``, ``estimate``, ``ci_low``, ``ci_high``, ``scale``; ``serious``: ``route``,
        ``n_sessions``, ``recorded``, ``n_sessions_with_event``, ``per_1000_sessions``, ``ci_low``, ``ci_high``,
        ``upper_bound``, ``upper_bound_if_none``, ``rule_of_three``.

    Notes
    -----
    Per 100 sessions: events (each listed type once per session) / sessions, exact (Garwood) Poisson interval. Per
    patient: patients with at least one event of the category / patients, Wilson interval; by route, patients with
    a session by that route, counting events on those sessions. Serious events: exact Clopper–Pearson limits and
    one-sided upper bound (:func:`event_bound`).
    """
    unknown = sorted(set(expected) - set(ADVERSE_EVENTS))
    if unknown:
        raise ValueError(f"Expected acute effects must be adverse-event types of the data contract; got "
                         f"{', '.join(unknown)} (allowed: {', '.join(ADVERSE_EVENTS)}).")
    ks = _ketamine(cohort, period)
    if not len(ks):
        raise InsufficientData("Safety categories need at least 1 ketamine session (got 0 in the chosen period). "
                               "Widen the date range.")
    exp_idx = [j for j, t in enumerate(ks.types) if t in set(expected)]
    other_idx = [j for j, t in enumerate(ks.types) if t not in set(expected)]
    exp_cols, other_cols = [ks.types[j] for j in exp_idx], [ks.types[j] for j in other_idx]
    counts = np.column_stack([ks.matrix[:, exp_idx].sum(axis=1), ks.matrix[:, other_idx].sum(axis=1)]).astype(int)
    n_routes = len(ks.routes)
    per_session = _category_rows(_counts_by_route(counts, ks.route, n_routes), ks.route_counts(), ks.routes,
                                 "session")

    mask, window_notes = _patient_sessions(ks, cohort, patient_window_days,
                                           None if as_of is None else pd.Timestamp(as_of))
    by_route, route_of, by_pat = _group_any(ks, counts > 0, mask)
    pr = pd.DataFrame(_category_rows(_counts_by_route(by_route, route_of, n_routes),
                                     np.bincount(route_of, minlength=n_routes), ks.routes, "patient"))
    pr = pr[pr["route"] != ALL]
    pa = pd.DataFrame(_category_rows(by_pat.sum(axis=0, dtype=np.int64)[None, :], np.array([len(by_pat)]), [ALL],
                                     "patient"))
    pa = pa.drop_duplicates(["category", "route"])
    table = pd.concat([pd.DataFrame(per_session), pr, pa], ignore_index=True)
    table["numerator"] = table["numerator"].astype("Int64")
    num = table["numerator"].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
    den = table["denominator"].to_numpy(dtype=float)
    is_session = (table["unit_of_analysis"] == "session").to_numpy()
    ok = ~np.isnan(num) & (den > 0)
    est = np.where(ok, num / np.where(den > 0, den, 1), np.nan)
    plow, phigh = poisson_exact_ci(np.nan_to_num(num), den, conf_level)
    wlow, whigh = wilson_ci(np.nan_to_num(num), den, conf_level)
    table["estimate"] = np.where(is_session, 100 * est, est)
    table["ci_low"] = np.where(ok, np.where(is_session, 100 * plow, wlow), np.nan)
    table["ci_high"] = np.where(ok, np.where(is_session, 100 * phigh, whigh), np.nan)
    table["scale"] = np.where(is_session, "per_100_sessions", "proportion")
    table.insert(1, "label", table["category"].map(CATEGORY_LABELS))

    serious = _serious_table(ks, conf_level)
    notes = [
        (f"Expected acute effects = {', '.join(exp_cols) or 'none'} as listed on the session (type only: the export "
         "cannot tell whether an effect resolved in the session or needed a response). Other recorded types ("
         f"{', '.join(other_cols)}) are not classifiable."),
        NEEDED_ACTION_NOT_RECORDED,
        SERIOUS_NOT_RECORDED,
        ("Per 100 sessions: events (each type once per session) per 100 ketamine sessions, exact Poisson interval. "
         "Per patient: share with at least one, Wilson interval. Sessions without an adverse_events entry count as "
         "sessions without an event."),
        *window_notes,
    ]
    return SafetyCategories(table=table, serious=serious, expected_types=tuple(exp_cols), conf_level=conf_level,
                            patient_window_days=patient_window_days, notes=tuple(notes))


def _serious_table(ks: _KetamineSessions, conf_level: float) -> pd.DataFrame:
    """Serious events per 1,000 sessions by route: not recorded (no contract column), with the bound the clinic
    would have with none."""
    rows = []
    n_sessions = ks.route_counts()
    groups = [(label, n) for label, _, n in _groups(np.zeros((len(ks.routes), 0), dtype=np.int64), n_sessions,
                                                   ks.routes)]
    for route, n in groups:
        if_none = event_bound(0, n, conf_level=conf_level)
        rows.append({"route": route, "n_sessions": n, "recorded": False, "n_sessions_with_event": pd.NA,
                     "per_1000_sessions": np.nan, "ci_low": np.nan, "ci_high": np.nan, "upper_bound": np.nan,
                     "upper_bound_if_none": if_none.upper_bound, "rule_of_three": if_none.rule_of_three})
    out = pd.DataFrame(rows)
    out["n_sessions_with_event"] = out["n_sessions_with_event"].astype("Int64")
    return out


# ---------------------------------------------------------------------------------------------------------------
# Vital signs


@dataclass(frozen=True)
class VitalSignShares:
    """Share of sessions (and of patients) with raised blood pressure or heart rate.

    Attributes
    ----------
    table:
        ``unit_of_analysis`` (``"session"``/``"patient"``), ``measure`` (``bp_raised``, ``hr_raised``,
        ``bp_or_hr_raised``), ``route`` (a route or ``"all"``), ``numerator``, ``denominator`` (sessions or
        patients whose readings decide the measure), ``n_missing`` (left out: readings missing), ``estimate``,
        ``ci_low``, ``ci_high`` (Wilson).
    """

    table: pd.DataFrame
    thresholds: VitalThresholds
    conf_level: float
    notes: tuple[str, ...] = ()


VITAL_MEASURES = ("bp_raised", "hr_raised", "bp_or_hr_raised")


def _vital_rows(raised: np.ndarray, known: np.ndarray, units: np.ndarray, labels: Sequence[str], unit: str,
                conf_level: float) -> pd.DataFrame:
    """Rows per (measure, route) + route "all" from group × measure counts of raised and decided units, and the
    units per group."""
    rows = []
    per_group = np.column_stack([raised, known])
    n_measures = len(VITAL_MEASURES)
    for route, num, den in _groups(np.column_stack([per_group, units]), units, labels):
        for j, m in enumerate(VITAL_MEASURES):
            rows.append({"unit_of_analysis": unit, "measure": m, "route": route,
                         "numerator": int(num[j]), "denominator": int(num[n_measures + j]),
                         "n_missing": int(den - num[n_measures + j])})
    table = pd.DataFrame(rows)
    table["estimate"] = table["numerator"] / table["denominator"].where(table["denominator"] > 0)
    table["ci_low"], table["ci_high"] = wilson_ci(table["numerator"], table["denominator"], conf_level)
    return table


@per_cohort
def vital_sign_elevations(cohort: Cohort, *, thresholds: VitalThresholds | None = None,
                          patient_window_days: int | None = None, period: Period | None = None,
                          conf_level: float = 0.95, as_of: date | pd.Timestamp | None = None) -> VitalSignShares:
    """Share of ketamine sessions, and of patients, with raised blood pressure or heart rate, by route.

    A session counts as raised when any deciding reading is at or above its threshold, as not raised when every
    reading is recorded and below; otherwise it is left out (``n_missing``). A patient counts as raised with at
    least one raised session, as not raised when at least one session decides and none is raised.

    Returns
    -------
    VitalSignShares
        ``table``: ``unit_of_analysis``, ``measure``, ``route``, ``numerator``, ``denominator``,
        ``n_missing``, ``estimate``, ``ci_low``, ``ci_high``.

    Notes
    -----
    Wilson score intervals. Thresholds: :class:`VitalThresholds`.
    """
    thresholds = thresholds or VitalThresholds()
    ks = _ketamine(cohort, period)
    return _vital_shares(ks, _vitals(cohort, ks, thresholds, period), cohort, thresholds, patient_window_days,
                         conf_level, None if as_of is None else pd.Timestamp(as_of))


def _vital_shares(ks: _KetamineSessions, codes: np.ndarray, cohort: Cohort, thresholds: VitalThresholds,
                  patient_window_days: int | None, conf_level: float, as_of: pd.Timestamp | None) -> VitalSignShares:
    if not len(ks):
        raise InsufficientData("Blood-pressure and heart-rate shares need at least 1 ketamine session (got 0 in "
                               "the chosen period). Widen the date range.")
    n_routes = len(ks.routes)
    per_session = _vital_rows(_counts_by_route(codes == 1, ks.route, n_routes),
                              _counts_by_route(codes >= 0, ks.route, n_routes), ks.route_counts(), ks.routes,
                              "session", conf_level)
    mask, notes = _patient_sessions(ks, cohort, patient_window_days, as_of)
    # a patient is raised with any raised session, unknown only when no session decides
    by_route, route_of, by_pat = _group_any(ks, np.column_stack([codes == 1, codes >= 0]), mask)
    k = len(VITAL_MEASURES)
    pairs = _counts_by_route(by_route, route_of, n_routes)
    pr = _vital_rows(pairs[:, :k], pairs[:, k:], np.bincount(route_of, minlength=n_routes), ks.routes, "patient",
                     conf_level)
    pr = pr[pr["route"] != ALL]
    totals = by_pat.sum(axis=0, dtype=np.int64)[None, :]
    pa = _vital_rows(totals[:, :k], totals[:, k:], np.array([len(by_pat)]), [ALL], "patient",
                     conf_level).drop_duplicates(["measure", "route"])
    table = pd.concat([per_session, pr, pa], ignore_index=True)
    notes = [thresholds.describe(),
             ("Readings are the highest of the session; sessions missing the readings a measure needs are left out "
              "of its denominator (n_missing). Wilson intervals."), *notes]
    return VitalSignShares(table=table, thresholds=thresholds, conf_level=conf_level, notes=tuple(notes))


# ---------------------------------------------------------------------------------------------------------------
# Trend


@dataclass(frozen=True)
class SafetyTrend:
    """Monthly safety measures, per session.

    Attributes
    ----------
    table:
        ``month`` (first day, Timestamp), ``metric`` (``ae_sessions``: share of sessions with ≥ 1 adverse event;
        ``ae_per_session``: all events per session; ``bp_raised``; ``hr_raised``), ``numerator``,
        ``denominator``, ``estimate``, ``ci_low``, ``ci_high`` (Wilson for shares, exact Poisson for
        ``ae_per_session``; multiply by 100 for % of sessions or events per 100 sessions).
    """

    table: pd.DataFrame
    thresholds: VitalThresholds
    conf_level: float
    notes: tuple[str, ...] = ()


@per_cohort
def safety_trend(cohort: Cohort, *, thresholds: VitalThresholds | None = None, period: Period | None = None,
                 conf_level: float = 0.95) -> SafetyTrend:
    """Monthly share of sessions with an adverse event, events per session, raised BP and raised heart rate.

    Returns
    -------
    SafetyTrend
        ``table``: ``month``, ``metric``, ``numerator``, ``denominator``, ``estimate``, ``ci_low``, ``ci_high``.
    """
    thresholds = thresholds or VitalThresholds()
    ks = _ketamine(cohort, period)
    if not len(ks):
        raise InsufficientData("A safety trend needs at least 1 ketamine session (got 0 in the chosen period). "
                               "Widen the date range.")
    dates = ks.frame["session_date"]
    month = dates.to_numpy().astype("datetime64[M]").astype(np.int64)
    first, last = int(month.min()), int(month.max())
    ends = dates.iloc[[int(month.argmin()), int(month.argmax())]].dt.to_period("M").dt.to_timestamp()
    months = pd.date_range(ends.iloc[0], ends.iloc[1], freq="MS")
    at = month - first
    size = last - first + 1
    codes = _vitals(cohort, ks, thresholds, period)
    n_events = ks.n_events

    def per_month(values: np.ndarray | None = None) -> np.ndarray:
        sums = np.bincount(at, minlength=size) if values is None else np.bincount(at, weights=values, minlength=size)
        return np.rint(sums).astype(np.int64)

    g = {"n": per_month(), "has_ae": per_month((n_events > 0).astype(float)), "n_events": per_month(n_events),
         "bp_num": per_month((codes[:, 0] == 1).astype(float)), "bp_den": per_month((codes[:, 0] >= 0).astype(float)),
         "hr_num": per_month((codes[:, 1] == 1).astype(float)), "hr_den": per_month((codes[:, 1] >= 0).astype(float))}
    parts = []
    for metric, num, den in [("ae_sessions", "has_ae", "n"), ("ae_per_session", "n_events", "n"),
                             ("bp_raised", "bp_num", "bp_den"), ("hr_raised", "hr_num", "hr_den")]:
        parts.append(pd.DataFrame({"month": months, "metric": metric, "numerator": g[num].astype(int),
                                   "denominator": g[den].astype(int)}))
    table = pd.concat(parts, ignore_index=True)
    table["estimate"] = table["numerator"] / table["denominator"].where(table["denominator"] > 0)
    low, high = wilson_ci(table["numerator"], table["denominator"], conf_level)
    plow, phigh = poisson_exact_ci(table["numerator"], table["denominator"], conf_level)
    is_rate = (table["metric"] == "ae_per_session").to_numpy()
    table["ci_low"] = np.where(is_rate, plow, low)
    table["ci_high"] = np.where(is_rate, phigh, high)
    notes = (thresholds.describe(), ("Per session, by calendar month of the session. Shares: Wilson intervals; "
             "events per session: exact Poisson intervals. Months without sessions have no estimate."))
    return SafetyTrend(table=table, thresholds=thresholds, conf_level=conf_level, notes=notes)


# ---------------------------------------------------------------------------------------------------------------
# Published safety figures


@dataclass(frozen=True)
class SafetyBenchmark:
    """Which clinic safety metric matches which published figure (published-benchmarks-2.md §1).

    ``kind`` is ``"ae"`` (``item`` = an adverse-event type or ``"any"``) or ``"vital"`` (``item`` = a
    :data:`VITAL_MEASURES` name). ``route`` is the route the published figure is for: the clinic figure counts only
    sessions of that route, and a clinic without such sessions gets a reason instead of a comparison (its figure
    over all routes is kept as context). ``category`` is what the published events were: ``"recorded"`` (any
    charted event of the type) or ``"needed_action"`` (events that needed a clinical response; the export cannot
    identify them, so such a row is never compared). ``window_days`` restricts per-patient counting to the first
    days after the index date. ``registry_id`` is the figure's id in the benchmarks registry; ``terms`` are a
    fallback for registries without that id (the figure of row ``published_id`` whose text holds every term).
    ``thresholds`` must match the clinic's thresholds for a like-for-like figure.
    """

    metric: str
    published_id: str
    registry_id: str
    kind: Literal["ae", "vital"]
    item: str
    unit_of_analysis: Literal["session", "patient"]
    route: str | None
    window_days: int | None
    terms: tuple[str, ...]
    caution: str
    thresholds: tuple[float, float] | None = None
    category: Literal["recorded", "needed_action"] = "recorded"


_LABEL = ("Esketamine (intranasal) with an oral antidepressant in treatment-resistant depression, spontaneous AE "
          "reports over the 4-week induction: like-for-like only for esketamine clinics; context for racemic "
          "ketamine.")
_ROD = ("IV racemic ketamine, one community clinic, treatment-resistant depression, per patient over the infusion "
        "course; AE capture method may differ from the clinic's.")
_SPR_TYPES = (("dissociation", "dissociation", "dissociation"), ("dizziness", "dizziness", "dizziness"),
              ("nausea", "nausea", "nausea"), ("sedation", "sedation", "sedation"),
              ("headache", "headache", "headache"), ("anxiety", "anxiety", "anxiety"),
              ("vomiting", "vomiting", "vomiting"), ("tachycardia", "tachycardia", "tachycardia"),
              ("hypertension", "blood-pressure-increased", "blood pressure"))
SAFETY_BENCHMARKS: tuple[SafetyBenchmark, ...] = (
    *(SafetyBenchmark(f"patients with {t} in the first 4 weeks", "SPR-AE", f"SPR-AE/{rid}/esketamine", "ae", t,
                      "patient", "intranasal", 28, (term,),
                      _LABEL + (" The contract's 'hypertension' is matched to the label's 'blood pressure "
                                "increased'." if t == "hypertension" else ""))
      for t, rid, term in _SPR_TYPES),
    SafetyBenchmark("IV patients with BP ≥ 165/100 in any session", "ROD20", "ROD20/hypertension", "vital",
                    "bp_raised", "patient", "iv", None, ("165",), _ROD, thresholds=(165, 100)),
    *(SafetyBenchmark(f"IV patients with {t} in any session", "ROD20", f"ROD20/{rid}", "ae", t, "patient", "iv",
                      None, (rid,),
                      _ROD + (" 'Drowsiness' is matched to the contract's 'sedation'." if t == "sedation" else ""))
      for t, rid in (("sedation", "drowsiness"), ("dizziness", "dizziness"), ("dissociation", "dissociation"),
                     ("nausea", "nausea"))),
    SafetyBenchmark("IM sessions with any adverse event", "AHU22", "AHU22", "ae", "any", "session", "im", None, (),
                    "IM racemic ketamine, outpatient clinic network, adverse events as charted in the EHR; per "
                    "session (59 of 2,532 treatments; percentage computed from those counts). A rate this far "
                    "below that of expected effects such as dissociation means charted events that needed a "
                    "response, not every expected effect.", category="needed_action"),
    SafetyBenchmark("sublingual patients with any side effect", "SLL23", "SLL23", "ae", "any", "patient",
                    "sublingual", None, (),
                    "At-home low-dose sublingual lozenges, telehealth, depression/anxiety; preprint; 'minor side "
                    "effects resolving within 24 h' may be a narrower definition than any charted event."),
    SafetyBenchmark("sublingual patients with any side effect in the first 4 weeks", "HUL22",
                    "HUL22/any-adverse-effect", "ae", "any", "patient", "sublingual", 28, ("adverse",),
                    "At-home sublingual telehealth programme (4 sessions in 4 weeks), completers; the published "
                    "figure is a bound ('fewer than 5%') from news coverage (secondary)."),
)


@dataclass(frozen=True)
class SafetyComparison:
    """Clinic safety figures beside published ones, with the same unit of analysis.

    Attributes
    ----------
    table:
        ``metric``, ``published_id``, ``registry_id``, ``unit_of_analysis``, ``route`` (the route of the clinic
        figure: the published figure's route, or ``"all"`` for a context figure), ``published_route``,
        ``window_days``, ``numerator``, ``denominator``, ``estimate``, ``ci_low``, ``ci_high`` (clinic, Wilson),
        ``comparable`` (same route, unit of analysis and event category: the two may be drawn side by side),
        ``reason`` (why not, else empty), ``published`` (proportion 0–1, NaN when not available),
        ``published_qualifier`` (``"="``, ``"about"``, ``"<"``…; empty when not available), ``published_status``
        (``yes``/``secondary``), ``source``, ``caution``.
    """

    table: pd.DataFrame
    conf_level: float
    registry_found: bool
    notes: tuple[str, ...] = ()


def _default_registry() -> Path:
    """``analytics/outcomes/data/benchmarks.toml``, else a ``benchmarks.json`` beside it."""
    json_path = DEFAULT_REGISTRY.with_suffix(".json")
    return json_path if not DEFAULT_REGISTRY.exists() and json_path.exists() else DEFAULT_REGISTRY


def _registry_entries(path: Path) -> list[dict[str, object]] | None:
    """Figures of the registry (TOML ``[[figures]]`` or a JSON list), each with ``source`` filled in.

    Read once per version of the file (published figures, no patient data); callers only read the entries."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return _read_registry(str(path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=4)
def _read_registry(name: str, mtime_ns: int, size: int) -> list[dict[str, object]] | None:
    path = Path(name)
    if not path.exists():
        return None
    try:
        if path.suffix == ".toml":
            data: object = tomllib.loads(path.read_text(encoding="utf-8"))
        else:
            data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    studies = data.get("studies", {}) if isinstance(data, dict) else {}
    if isinstance(data, dict):
        for key in ("figures", "benchmarks", "entries", "rows", "items"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
        else:
            data = [dict(v, id=k) if isinstance(v, dict) and "id" not in v else v for k, v in data.items()]
    if not isinstance(data, list):
        return None
    out = []
    for e in data:
        if not isinstance(e, dict):
            continue
        study = studies.get(str(e.get("study", ""))) if isinstance(studies, dict) else None
        if "source" not in e:
            e = dict(e, source=(study or {}).get("short") or e.get("citation") or e.get("doi") or "")
        out.append(e)
    return out


def _as_proportion(entry: dict[str, object]) -> float | None:
    for key in ("value", "estimate", "published", "proportion", "value_pct", "percent"):
        v = entry.get(key)
        if isinstance(v, dict):  # e.g. {"esketamine": 0.41, "placebo": 0.09}
            arms = [k for k in v if "placebo" not in str(k).lower()]
            v = v[arms[0]] if len(arms) == 1 else None
        if isinstance(v, bool) or not isinstance(v, int | float) or math.isnan(float(v)):
            continue
        unit = " ".join(str(entry.get(k, "")) for k in ("unit", "scale", "units")).lower()
        value = float(v)
        if "%" in unit or "percent" in unit or key in ("value_pct", "percent") or value > 1:
            value /= 100
        return value
    return None


def _lookup(entries: list[dict[str, object]], bench: SafetyBenchmark) -> tuple[float | None, str, str, str]:
    """Published value, status, source and qualifier for one mapping; (None, reason, "", "") when not found."""
    exact = [e for e in entries if str(e.get("id", "")).lower() == bench.registry_id.lower()]
    if exact:
        picked = exact
    else:
        pid = bench.published_id.lower()

        def in_row(e: dict[str, object]) -> bool:
            eid = str(e.get("id", "")).lower()
            return (str(e.get("row", "")).lower() == pid or eid == pid
                    or any(eid.startswith(pid + sep) for sep in ("/", "-", "_")))

        def text(e: dict[str, object]) -> str:
            return " ".join(str(v) for v in e.values() if isinstance(v, str)).lower()

        def placebo(e: dict[str, object]) -> bool:
            return any("placebo" in str(e.get(k, "")).lower() for k in ("arm", "arms", "id"))

        cands = [e for e in entries if in_row(e)]
        if not cands:
            return None, f"{bench.published_id} is not in the registry", "", ""
        picked = [e for e in cands if all(t in text(e) for t in bench.terms) and not placebo(e)]
        if len(picked) > 1:
            picked = [e for e in picked if _as_proportion(e) is not None]
    if len(picked) != 1:
        return None, f"{bench.published_id}: the registry has no single figure for '{bench.item}'", "", ""
    entry = picked[0]
    status = str(entry.get("status", entry.get("verified", entry.get("verification", "")))).lower()
    status = "secondary" if "secondary" in status else ("yes" if status.startswith("yes") else status)
    if status not in ("yes", "secondary"):
        return None, f"{bench.published_id}: registry status '{status}' is not displayable", "", ""
    unit = str(entry.get("unit_of_analysis", "")).lower()
    if unit and bench.unit_of_analysis not in unit:
        return None, (f"{bench.published_id}: the registry figure is {unit}, the clinic figure per "
                      f"{bench.unit_of_analysis}"), "", ""
    value = _as_proportion(entry)
    if value is None:
        return None, f"{bench.published_id}: no numeric value for '{bench.item}' in the registry", "", ""
    source = str(entry.get("source") or entry.get("citation") or bench.published_id)
    return value, status, source, str(entry.get("qualifier", "="))


def _route_word(route: str) -> str:
    return route.upper() if len(route) <= 2 else route


def _clinic_scope(b: SafetyBenchmark, present: Sequence[str]) -> tuple[str, str]:
    """Route of the clinic figure for benchmark ``b`` and, when it cannot be compared, why."""
    reasons = []
    route = b.route or ALL
    if b.route is not None and b.route not in present:
        what = (f"{_route_word(b.route)} sessions" + (" (esketamine, Spravato)" if b.published_id.startswith("SPR")
                                                      else ""))
        reasons.append(f"{b.published_id} is for {what}; this clinic has no {_route_word(b.route)} ketamine "
                       f"sessions (routes recorded: {', '.join(present) or 'none'}), so it is not compared. The "
                       "clinic figure shown is over all routes, for context only.")
        route = ALL
    if b.category == "needed_action":
        reasons.append(f"{b.published_id} counts adverse events that needed a clinical response. "
                       + NEEDED_ACTION_NOT_RECORDED + " The clinic figure is every recorded event, for context only.")
    return route, " ".join(reasons)


@per_cohort
def published_comparison(cohort: Cohort, *, thresholds: VitalThresholds | None = None,
                         registry_path: Path | str | None = None, conf_level: float = 0.95,
                         as_of: date | pd.Timestamp | None = None,
                         benchmarks: Sequence[SafetyBenchmark] = SAFETY_BENCHMARKS) -> SafetyComparison:
    """The clinic's safety figures computed like the published ones, beside them.

    Published values are read, at run time, from the benchmarks registry (``analytics/outcomes/data/benchmarks.toml``,
    TOML ``[[figures]]``; or a JSON list; or ``registry_path``) when it exists and holds the figure with status
    yes/secondary and the same unit of analysis; otherwise the published column is NaN and a note says why. The
    clinic figure is always computed. The mapping clinic metric → published figure is :data:`SAFETY_BENCHMARKS`.

    A row is ``comparable`` only for the same route (Spravato label rows: intranasal sessions; ROD20: IV; AHU22:
    IM; HUL22/SLL23: sublingual), unit of analysis and kind of event (AHU22 counts events that needed action, which
    the export cannot identify). Otherwise ``reason`` says why, and the clinic figure (over all routes when the
    clinic has none of the published route) is context only: pages and charts do not draw it beside the
    published figure.

    Returns
    -------
    SafetyComparison
        ``table``: ``metric``, ``published_id``, ``registry_id``, ``unit_of_analysis``, ``route``,
        ``published_route``, ``window_days``, ``caution``, ``comparable``, ``reason``, ``numerator``,
        ``denominator``, ``estimate``, ``ci_low``, ``ci_high``, ``published``, ``published_qualifier``,
        ``published_status``, ``source``.
    """
    thresholds = thresholds or VitalThresholds()
    path = Path(registry_path) if registry_path is not None else _default_registry()
    entries = _registry_entries(path)
    as_ts = pd.Timestamp(as_of) if as_of is not None else cohort.data_end_date()
    ae_cache: dict[int | None, AdverseEventRates] = {}
    ks = _ketamine(cohort)
    vit = _vital_shares(ks, _vitals(cohort, ks, thresholds, None), cohort, thresholds, None, conf_level, as_ts)
    notes: list[str] = []
    if entries is None:
        notes.append(f"Published figures omitted: the benchmarks registry ({path.name}) was not found or could "
                     "not be read. Clinic figures are shown alone.")
    rows = []
    present = sorted(r for r, n in zip(ks.routes, ks.route_counts()) if n and r != NOT_RECORDED)
    for b in benchmarks:
        route, reason = _clinic_scope(b, present)
        if b.kind == "ae":
            if b.window_days not in ae_cache:
                ae_cache[b.window_days] = _ae_rates(ks, cohort, b.window_days, conf_level, as_ts)
            t = ae_cache[b.window_days].table
            hit = t[(t["unit_of_analysis"] == b.unit_of_analysis) & (t["event_type"] == b.item)
                    & (t["route"] == route)]
        else:
            t = vit.table
            hit = t[(t["unit_of_analysis"] == b.unit_of_analysis) & (t["measure"] == b.item) & (t["route"] == route)]
        row: dict[str, object] = {"metric": b.metric, "published_id": b.published_id,
                                  "registry_id": b.registry_id, "unit_of_analysis": b.unit_of_analysis,
                                  "route": route, "published_route": b.route or ALL,
                                  "window_days": b.window_days, "caution": b.caution,
                                  "comparable": not reason, "reason": reason}
        if len(hit):
            h = hit.iloc[0]
            row.update({k: h[k] for k in ("numerator", "denominator", "estimate", "ci_low", "ci_high")})
        else:
            row.update({"numerator": 0, "denominator": 0, "estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan})
        caution = b.caution
        if b.thresholds is not None and thresholds.rule == "absolute" and (
                thresholds.systolic_mmhg, thresholds.diastolic_mmhg) != b.thresholds:
            caution += (f" Not like-for-like: the clinic's thresholds are {thresholds.systolic_mmhg:g}/"
                        f"{thresholds.diastolic_mmhg:g} mmHg, the publication's {b.thresholds[0]:g}/"
                        f"{b.thresholds[1]:g}.")
        row["caution"] = caution
        value, status, source, qualifier = (None, "", "", "") if entries is None else _lookup(entries, b)
        if entries is not None and value is None:
            notes.append(f"Published figure omitted: {status}.")
            status = ""
        row.update({"published": np.nan if value is None else value, "published_qualifier": qualifier,
                    "published_status": status, "source": source or b.published_id})
        rows.append(row)
    table = pd.DataFrame(rows)
    table["window_days"] = table["window_days"].astype("Int64")
    if not table["comparable"].all():
        notes.append(f"{int((~table['comparable']).sum())} published figure(s) are not compared with the clinic: "
                     "a published figure is drawn beside the clinic's only for the same route, unit of analysis and "
                     "kind of event (the reason column says what differs).")
    notes.append("Per patient = share of patients with at least one session with the event (in the first "
                 "window_days days when given); clinic intervals are Wilson.")
    notes.append("Indication: the published figures come from depression (TRD) populations; the exports have no "
                 "diagnosis column, so the clinic's own patients are compared as they are (see each caution).")
    notes.append("The esketamine label's rise rule (≥ 40/25 mmHg over pre-dose, SPR-BP) and mean BP changes "
                 "(VAN21) need pre-dose readings the export does not have, so they are not compared.")
    return SafetyComparison(table=table, conf_level=conf_level, registry_found=entries is not None,
                            notes=tuple(dict.fromkeys(notes)))


__all__ = [
    "CATEGORIES",
    "CATEGORY_LABELS",
    "EXPECTED_ACUTE_EFFECTS",
    "SAFETY_BENCHMARKS",
    "AdverseEventRates",
    "EventBound",
    "SafetyBenchmark",
    "SafetyCategories",
    "SafetyComparison",
    "SafetyTrend",
    "VitalSignShares",
    "VitalThresholds",
    "adverse_event_matrix",
    "adverse_event_rates",
    "event_bound",
    "poisson_exact_ci",
    "published_comparison",
    "safety_categories",
    "safety_trend",
    "session_safety_flags",
    "vital_sign_elevations",
    "wilson_ci",
]
