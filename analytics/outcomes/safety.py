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
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from analytics.engines.intervals import poisson_exact_ci, wilson_ci
from analytics.errors import InsufficientData
from analytics.outcomes.cohort import Cohort, ids_in
from analytics.privacy.counts import note_n
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


def _vital_flags(ket: pd.DataFrame, thresholds: VitalThresholds) -> pd.DataFrame:
    """``bp_raised``, ``hr_raised``, ``bp_or_hr_raised``: nullable booleans (NA = cannot tell)."""
    def num(col: str) -> pd.Series:
        return pd.to_numeric(ket[col], errors="coerce") if col in ket.columns else pd.Series(
            np.nan, index=ket.index)

    sys_, dia, hr = num("bp_systolic_max"), num("bp_diastolic_max"), num("heart_rate_max")
    if thresholds.rule == "rise":
        if not {"bp_systolic_pre", "bp_diastolic_pre"} <= set(ket.columns):
            raise InsufficientData(
                f"The rise rule (≥ {thresholds.rise_systolic_mmhg:g} mmHg systolic or ≥ "
                f"{thresholds.rise_diastolic_mmhg:g} mmHg diastolic over the pre-dose reading) needs a "
                "pre-dose blood pressure for every session, but the sessions export holds only the highest "
                "reading in the session (bp_systolic_max, bp_diastolic_max). Use the absolute thresholds "
                "(e.g. 165/100 mmHg), or add pre-dose readings to the export as bp_systolic_pre and "
                "bp_diastolic_pre.")
        sys_v, dia_v = sys_ - num("bp_systolic_pre"), dia - num("bp_diastolic_pre")
        s_cut, d_cut = thresholds.rise_systolic_mmhg, thresholds.rise_diastolic_mmhg
    else:
        sys_v, dia_v = sys_, dia
        s_cut, d_cut = thresholds.systolic_mmhg, thresholds.diastolic_mmhg
    bp_hi = (sys_v >= s_cut) | (dia_v >= d_cut)
    bp_lo = (sys_v < s_cut) & (dia_v < d_cut)
    hr_hi = hr >= thresholds.heart_rate_bpm
    hr_lo = hr < thresholds.heart_rate_bpm

    def tri(hi: pd.Series, lo: pd.Series) -> pd.Series:
        out = pd.Series(pd.NA, index=ket.index, dtype="boolean")
        out[lo.to_numpy()] = False
        out[hi.to_numpy()] = True
        return out

    return pd.DataFrame({"bp_raised": tri(bp_hi, bp_lo), "hr_raised": tri(hr_hi, hr_lo),
                         "bp_or_hr_raised": tri(bp_hi | hr_hi, bp_lo & hr_lo)}, index=ket.index)


def _flags_and_matrix(cohort: Cohort, thresholds: VitalThresholds,
                      period: Period | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    ket = _ketamine_sessions(cohort, period)
    matrix, text = _parse_adverse_events(ket)
    out = ket[["patient_id", "session_date", "days", "route", "site", "clinician"]].copy()
    out["n_events"] = matrix.to_numpy().sum(axis=1).astype(int)
    out["has_ae"] = out["n_events"] > 0
    out["events"] = text
    out = out.join(_vital_flags(ket, thresholds))
    return out.reset_index(drop=True), matrix.reset_index(drop=True)


def session_safety_flags(cohort: Cohort, *, thresholds: VitalThresholds | None = None,
                         period: Period | None = None) -> pd.DataFrame:
    """Per ketamine session: what the safety panel counts.

    Returns
    -------
    pandas.DataFrame
        ``patient_id``, ``session_date``, ``days``, ``route``, ``site``, ``clinician``, ``has_ae`` (bool),
        ``n_events`` (distinct event types listed), ``events`` (``;``-joined types), ``bp_raised``,
        ``hr_raised``, ``bp_or_hr_raised`` (nullable booleans: NA when the readings needed are missing).
    """
    return _flags_and_matrix(cohort, thresholds or VitalThresholds(), period)[0]


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


def _proportion_rows(ind: pd.DataFrame, group: pd.Series, unit: str, conf_level: float) -> pd.DataFrame:
    """Rows of numerator/denominator per (type, group) + group "all" from a unit × type indicator frame."""
    ind = ind.copy()
    ind["any"] = ind.any(axis=1)
    parts = []
    for label, mask in [(g, (group == g).to_numpy()) for g in sorted(group.unique())] + [(ALL, None)]:
        sub = ind if mask is None else ind[mask]
        num = sub.sum(axis=0)
        parts.append(pd.DataFrame({"unit_of_analysis": unit, "event_type": num.index, "route": label,
                                   "numerator": num.to_numpy().astype(int), "denominator": len(sub)}))
    table = pd.concat(parts, ignore_index=True)
    table["estimate"] = table["numerator"] / table["denominator"].where(table["denominator"] > 0)
    table["ci_low"], table["ci_high"] = wilson_ci(table["numerator"], table["denominator"], conf_level)
    return table


def _observed_patients(cohort: Cohort, window_days: int, as_of: pd.Timestamp) -> pd.Index:
    return pd.Index(cohort.patients.loc[cohort.window_closed(window_days, as_of=as_of), "patient_id"])



def _patient_sessions(flags: pd.DataFrame, cohort: Cohort, patient_window_days: int | None,
                      as_of: pd.Timestamp | None) -> tuple[pd.DataFrame, list[str]]:
    notes: list[str] = []
    if patient_window_days is None:
        return flags, notes
    as_of = as_of if as_of is not None else cohort.data_end_date()
    keep = _observed_patients(cohort, patient_window_days, as_of)
    sub = flags[(flags["days"] < patient_window_days) & ids_in(flags["patient_id"], keep)]
    n_out = int(cohort.patients["patient_id"].nunique() - len(keep))
    notes.append(f"Per patient: sessions on days 0–{patient_window_days - 1} after the first ketamine session, "
                 f"among patients whose first {patient_window_days} days had passed by {as_of:%Y-%m-%d} "
                 f"({note_n(n_out)} more recent starters left out).")
    return sub, notes


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
    flags, matrix = _flags_and_matrix(cohort, VitalThresholds(), period)
    return _ae_rates(flags, matrix, cohort, patient_window_days, conf_level,
                     None if as_of is None else pd.Timestamp(as_of))


def _ae_rates(flags: pd.DataFrame, matrix: pd.DataFrame, cohort: Cohort, patient_window_days: int | None,
              conf_level: float, as_of: pd.Timestamp | None) -> AdverseEventRates:
    if flags.empty:
        raise InsufficientData("Adverse-event rates need at least 1 ketamine session (got 0 in the chosen "
                               "period). Widen the date range.")
    per_session = _proportion_rows(matrix, flags["route"], "session", conf_level)

    sub, notes = _patient_sessions(flags, cohort, patient_window_days, as_of)
    sub_matrix = matrix.loc[sub.index]
    keyed = sub_matrix.assign(patient_id=sub["patient_id"].to_numpy(), route=sub["route"].to_numpy())
    by_route = keyed.groupby(["patient_id", "route"], sort=True).any().reset_index()
    by_pat = keyed.drop(columns="route").groupby("patient_id", sort=True).any()
    pr = _proportion_rows(by_route.drop(columns=["patient_id", "route"]), by_route["route"], "patient", conf_level)
    pr = pr[pr["route"] != ALL]
    pa = _proportion_rows(by_pat.reset_index(drop=True), pd.Series(ALL, index=range(len(by_pat))), "patient",
                          conf_level)
    pa = pa.drop_duplicates(["event_type", "route"])
    table = pd.concat([per_session, pr, pa], ignore_index=True)

    ev = flags.groupby("route", sort=True).agg(n_sessions=("n_events", "size"), n_events=("n_events", "sum"))
    ev.loc[ALL] = [len(flags), int(flags["n_events"].sum())]
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


def _vital_rows(frame: pd.DataFrame, unit: str, conf_level: float) -> pd.DataFrame:
    rows = []
    groups = [(r, frame[frame["route"] == r]) for r in sorted(frame["route"].unique())] + [(ALL, frame)]
    for route, sub in groups:
        for m in VITAL_MEASURES:
            values = sub[m].astype("Float64")
            known = values.notna()
            rows.append({"unit_of_analysis": unit, "measure": m, "route": route,
                         "numerator": int((values[known] > 0).sum()), "denominator": int(known.sum()),
                         "n_missing": int((~known).sum())})
    table = pd.DataFrame(rows)
    table["estimate"] = table["numerator"] / table["denominator"].where(table["denominator"] > 0)
    table["ci_low"], table["ci_high"] = wilson_ci(table["numerator"], table["denominator"], conf_level)
    return table


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
    flags = session_safety_flags(cohort, thresholds=thresholds, period=period)
    return _vital_shares(flags, cohort, thresholds, patient_window_days, conf_level,
                         None if as_of is None else pd.Timestamp(as_of))


def _vital_shares(flags: pd.DataFrame, cohort: Cohort, thresholds: VitalThresholds, patient_window_days: int | None,
                  conf_level: float, as_of: pd.Timestamp | None) -> VitalSignShares:
    if flags.empty:
        raise InsufficientData("Blood-pressure and heart-rate shares need at least 1 ketamine session (got 0 in "
                               "the chosen period). Widen the date range.")
    per_session = _vital_rows(flags, "session", conf_level)
    sub, notes = _patient_sessions(flags, cohort, patient_window_days, as_of)
    as_float = sub[["patient_id", "route"]].assign(
        **{m: sub[m].astype("Float64").astype(float) for m in VITAL_MEASURES})
    # max skips NaN: a patient is raised with any raised session, unknown only when no session decides
    by_route = as_float.groupby(["patient_id", "route"], sort=True)[list(VITAL_MEASURES)].max().reset_index()
    by_pat = as_float.groupby("patient_id", sort=True)[list(VITAL_MEASURES)].max().reset_index()
    by_pat["route"] = ALL
    pr = _vital_rows(by_route, "patient", conf_level)
    pr = pr[pr["route"] != ALL]
    pa = _vital_rows(by_pat, "patient", conf_level).drop_duplicates(["measure", "route"])
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


def safety_trend(cohort: Cohort, *, thresholds: VitalThresholds | None = None, period: Period | None = None,
                 conf_level: float = 0.95) -> SafetyTrend:
    """Monthly share of sessions with an adverse event, events per session, raised BP and raised heart rate.

    Returns
    -------
    SafetyTrend
        ``table``: ``month``, ``metric``, ``numerator``, ``denominator``, ``estimate``, ``ci_low``, ``ci_high``.
    """
    thresholds = thresholds or VitalThresholds()
    flags = session_safety_flags(cohort, thresholds=thresholds, period=period)
    if flags.empty:
        raise InsufficientData("A safety trend needs at least 1 ketamine session (got 0 in the chosen period). "
                               "Widen the date range.")
    flags["month"] = flags["session_date"].dt.to_period("M").dt.to_timestamp()
    months = pd.date_range(flags["month"].min(), flags["month"].max(), freq="MS")
    bp = flags["bp_raised"].astype("Float64")
    hr = flags["hr_raised"].astype("Float64")
    g = pd.DataFrame({"month": flags["month"], "n": 1, "has_ae": flags["has_ae"].astype(int),
                      "n_events": flags["n_events"], "bp_num": (bp > 0).fillna(False).astype(int),
                      "bp_den": bp.notna().astype(int), "hr_num": (hr > 0).fillna(False).astype(int),
                      "hr_den": hr.notna().astype(int)}).groupby("month").sum().reindex(months, fill_value=0)
    parts = []
    for metric, num, den in [("ae_sessions", "has_ae", "n"), ("ae_per_session", "n_events", "n"),
                             ("bp_raised", "bp_num", "bp_den"), ("hr_raised", "hr_num", "hr_den")]:
        parts.append(pd.DataFrame({"month": months, "metric": metric, "numerator": g[num].to_numpy().astype(int),
                                   "denominator": g[den].to_numpy().astype(int)}))
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
    :data:`VITAL_MEASURES` name). ``route`` restricts the clinic's sessions (``None``: all routes).
    ``window_days`` restricts per-patient counting to the first days after the index date. ``registry_id`` is
    the figure's id in the benchmarks registry; ``terms`` are a fallback for registries without that id (the
    figure of row ``published_id`` whose text holds every term). ``thresholds`` must match the clinic's
    thresholds for a like-for-like figure.
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
                      "patient", None, 28, (term,),
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
                    "session (59 of 2,532 treatments; percentage computed from those counts)."),
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
        ``metric``, ``published_id``, ``registry_id``, ``unit_of_analysis``, ``route`` (``"all"`` or a route),
        ``window_days``, ``numerator``, ``denominator``, ``estimate``, ``ci_low``, ``ci_high`` (clinic, Wilson),
        ``published`` (proportion 0–1, NaN when not available), ``published_qualifier`` (``"="``, ``"about"``,
        ``"<"``…; empty when not available), ``published_status`` (``yes``/``secondary``), ``source``,
        ``caution``.
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
    """Figures of the registry (TOML ``[[figures]]`` or a JSON list), each with ``source`` filled in."""
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


def published_comparison(cohort: Cohort, *, thresholds: VitalThresholds | None = None,
                         registry_path: Path | str | None = None, conf_level: float = 0.95,
                         as_of: date | pd.Timestamp | None = None,
                         benchmarks: Sequence[SafetyBenchmark] = SAFETY_BENCHMARKS) -> SafetyComparison:
    """The clinic's safety figures computed like the published ones, beside them.

    Published values are read, at run time, from the benchmarks registry (``analytics/outcomes/data/benchmarks.toml``,
    TOML ``[[figures]]``; or a JSON list; or ``registry_path``) when it exists and holds the figure with status
    yes/secondary and the same unit of analysis; otherwise the published column is NaN and a note says why. The
    clinic figure is always computed. The mapping clinic metric → published figure is :data:`SAFETY_BENCHMARKS`.

    Returns
    -------
    SafetyComparison
        ``table``: ``metric``, ``published_id``, ``registry_id``, ``unit_of_analysis``, ``route``,
        ``window_days``, ``numerator``, ``denominator``, ``estimate``, ``ci_low``, ``ci_high``, ``published``,
        ``published_qualifier``, ``published_status``, ``source``, ``caution``.
    """
    thresholds = thresholds or VitalThresholds()
    path = Path(registry_path) if registry_path is not None else _default_registry()
    entries = _registry_entries(path)
    as_ts = pd.Timestamp(as_of) if as_of is not None else cohort.data_end_date()
    ae_cache: dict[int | None, AdverseEventRates] = {}
    flags, matrix = _flags_and_matrix(cohort, thresholds, None)
    vit = _vital_shares(flags, cohort, thresholds, None, conf_level, as_ts)
    notes: list[str] = []
    if entries is None:
        notes.append(f"Published figures omitted: the benchmarks registry ({path.name}) was not found or could "
                     "not be read. Clinic figures are shown alone.")
    rows = []
    for b in benchmarks:
        route = b.route or ALL
        if b.kind == "ae":
            if b.window_days not in ae_cache:
                ae_cache[b.window_days] = _ae_rates(flags, matrix, cohort, b.window_days, conf_level, as_ts)
            t = ae_cache[b.window_days].table
            hit = t[(t["unit_of_analysis"] == b.unit_of_analysis) & (t["event_type"] == b.item)
                    & (t["route"] == route)]
        else:
            t = vit.table
            hit = t[(t["unit_of_analysis"] == b.unit_of_analysis) & (t["measure"] == b.item) & (t["route"] == route)]
        row: dict[str, object] = {"metric": b.metric, "published_id": b.published_id,
                                  "registry_id": b.registry_id, "unit_of_analysis": b.unit_of_analysis,
                                  "route": route,
                                  "window_days": b.window_days, "caution": b.caution}
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
    notes.append("Per patient = share of patients with at least one session with the event (in the first "
                 "window_days days when given); clinic intervals are Wilson.")
    notes.append("The esketamine label's rise rule (≥ 40/25 mmHg over pre-dose, SPR-BP) and mean BP changes "
                 "(VAN21) need pre-dose readings the export does not have, so they are not compared.")
    return SafetyComparison(table=table, conf_level=conf_level, registry_found=entries is not None,
                            notes=tuple(dict.fromkeys(notes)))


__all__ = [
    "SAFETY_BENCHMARKS",
    "AdverseEventRates",
    "SafetyBenchmark",
    "SafetyComparison",
    "SafetyTrend",
    "VitalSignShares",
    "VitalThresholds",
    "adverse_event_matrix",
    "adverse_event_rates",
    "poisson_exact_ci",
    "published_comparison",
    "safety_trend",
    "session_safety_flags",
    "vital_sign_elevations",
    "wilson_ci",
]

