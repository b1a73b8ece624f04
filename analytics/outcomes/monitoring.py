"""Session monitoring: blood pressure before dosing, at about 40 minutes and at discharge, minutes until ready to
leave, sedation and dissociation scores, event severity and action taken, serious events per 1,000 sessions.

Every figure is computed from the optional sessions columns of the issue-22 contract proposal
(``bp_systolic_pre`` … ``urinary_symptoms``, :mod:`schemas.sessions`); where the export has none of a group's
columns the result says "not recorded in this export" for it, never 0.

Definitions (each threshold is a field of :class:`MonitoringThresholds`):

* Unit of analysis: the attended **ketamine session** (the cohort's sessions; day ≥ 0).
* **Systolic rise**: systolic at ~40 min minus systolic before dosing, in sessions with both readings; flagged at
  ≥ ``rise_mmhg`` (default 40 mmHg).
* **Very high reading at ~40 min**: systolic > ``severe_systolic_mmhg`` (default 180) or diastolic
  > ``severe_diastolic_mmhg`` (default 110). 180 mmHg systolic is the persistent-elevation exclusion of the
  emergency-department ketamine trial for alcohol use disorder (published-benchmarks-2.md, BP-EDAUD); 110 mmHg
  diastolic is our own pairing, a setting.
* **Still raised at discharge**: systolic ≥ ``discharge_systolic_mmhg`` (default 165) or diastolic
  ≥ ``discharge_diastolic_mmhg`` (default 100), the treatment-emergent hypertension threshold of Rodrigues 2020
  (published-benchmarks-2.md, BP-ROD).
* **Minutes to discharge**: median and interquartile range (25th–75th percentile, linear interpolation).
* **Sedation**: MOAA/S 0–5 (5 = responds readily to name in a normal tone; 0 = no response to a painful stimulus);
  "moderate or deeper" = 3 or less.
* **Dissociation**: CADSS-6, six items scored 0–4, total 0–24 (median and IQR).
* **Serious event**: ``event_severity = serious`` (needed hospital care, was life-threatening or disabling), per
  1,000 sessions with ``event_severity`` recorded, with the exact Clopper–Pearson interval and the exact one-sided
  upper bound (rule of three when there were none): :func:`analytics.outcomes.safety.event_bound`.

Shares have Wilson intervals. Counts of 1 to ``min_cell - 1`` are hidden together with whatever would give them away
(the parts of a shown total, the complement of a shown share): every table carries a ``shown`` column.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analytics.engines.intervals import wilson_ci
from analytics.errors import InsufficientData
from analytics.outcomes.cohort import Cohort
from analytics.outcomes.memo import per_cohort
from analytics.outcomes.safety import EventBound, event_bound
from analytics.privacy.counts import note_n

NOT_RECORDED = "not recorded in this export"
ALL = "all routes"
SEVERITIES = ("no_event", "mild", "moderate", "severe", "serious")
ACTIONS = ("no_action", "observation", "medication", "stopped_dosing", "transfer")
BP_COLUMNS = ("bp_systolic_pre", "bp_diastolic_pre", "bp_systolic_40min", "bp_diastolic_40min")
DISCHARGE_COLUMNS = ("bp_systolic_discharge", "bp_diastolic_discharge")


@dataclass(frozen=True)
class MonitoringThresholds:
    """Blood-pressure thresholds of the session monitoring panel (mmHg); see the module docstring for sources."""

    rise_mmhg: float = 40.0
    severe_systolic_mmhg: float = 180.0
    severe_diastolic_mmhg: float = 110.0
    discharge_systolic_mmhg: float = 165.0
    discharge_diastolic_mmhg: float = 100.0

    def describe(self) -> str:
        return (f"Systolic rise ≥ {self.rise_mmhg:.0f} mmHg from before dosing to ~40 min; very high at ~40 min: "
                f"systolic > {self.severe_systolic_mmhg:.0f} or diastolic > {self.severe_diastolic_mmhg:.0f} mmHg; "
                f"still raised at discharge: ≥ {self.discharge_systolic_mmhg:.0f}/"
                f"{self.discharge_diastolic_mmhg:.0f} mmHg.")


@dataclass(frozen=True)
class SessionMonitoring:
    """Session monitoring of ketamine sessions, by route.

    Attributes
    ----------
    recorded:
        Part (``bp``, ``discharge``, ``minutes``, ``sedation``, ``dissociation``, ``severity``, ``action``) → has
        the export any value of it?
    blood_pressure:
        ``measure`` (``rise``, ``very_high_40min``, ``raised_discharge``), ``route``, ``numerator``,
        ``denominator`` (sessions with the readings), ``estimate``, ``ci_low``, ``ci_high`` (share, Wilson),
        ``shown``.
    minutes, dissociation:
        ``route``, ``n``, ``median``, ``q1``, ``q3``, ``shown``.
    sedation:
        ``score`` (MOAA/S 5 … 0), ``n``, ``share``, ``shown`` (all routes).
    severity, action:
        ``level`` (event severity, or action taken), ``n``, ``share``, ``shown``.
    serious:
        Serious events per 1,000 sessions with ``event_severity`` recorded (None when it is not recorded).
    n_sessions:
        Ketamine sessions analysed.
    """

    recorded: Mapping[str, bool]
    blood_pressure: pd.DataFrame
    minutes: pd.DataFrame
    sedation: pd.DataFrame
    dissociation: pd.DataFrame
    severity: pd.DataFrame
    action: pd.DataFrame
    serious: EventBound | None
    n_sessions: int
    thresholds: MonitoringThresholds
    conf_level: float = 0.95
    notes: tuple[str, ...] = ()

    @property
    def serious_shown(self) -> bool:
        """May the serious-event rate be shown? Not when its count or the sessions are 1 to ``min_cell - 1``
        (a count of 0 is shown: the upper bound is the point)."""
        return self._serious_shown

    _serious_shown: bool = field(default=True, repr=False)


def _ketamine(cohort: Cohort) -> pd.DataFrame:
    s = cohort.sessions
    keep = s["session_type"].eq("ketamine").fillna(False).to_numpy(bool)
    if "days" in s:
        keep &= (s["days"] >= 0).fillna(False).to_numpy(bool)
    return s[keep]


def _num(ket: pd.DataFrame, col: str) -> pd.Series:
    if col not in ket.columns:
        return pd.Series(np.nan, index=ket.index, dtype=float)
    return pd.to_numeric(ket[col], errors="coerce").astype(float)


def _has(ket: pd.DataFrame, cols: Sequence[str]) -> bool:
    return all(c in ket.columns for c in cols) and all(ket[c].notna().any() for c in cols)


def _routes(ket: pd.DataFrame) -> pd.Series:
    return ket["route"].astype("string").fillna("unknown") if "route" in ket else pd.Series("unknown", index=ket.index)


def _small(n: float, min_cell: int) -> bool:
    return 0 < n < min_cell


def _protected(nums: Mapping[str, int], dens: Mapping[str, int], totals: Mapping[str, int], *, min_cell: int,
               enabled: bool) -> dict[str, bool]:
    """Per route (and :data:`ALL`, the sum): may numerator/denominator be shown? Routes are parts of the total, and
    the sessions with readings are part of the route's ketamine sessions (known to a reader): the sessions without
    readings are a derived count, protected when it is 1–10."""
    from analytics.privacy.suppression import suppress_cells

    routes = [r for r in nums if r != ALL]
    values: dict[object, float | None] = {}
    for r in nums:
        values[("num", r)], values[("den", r)] = float(nums[r]), float(dens[r])
        values[("total", r)] = float(totals[r])
    sums = [([("num", r) for r in routes], ("num", ALL)), ([("den", r) for r in routes], ("den", ALL))]
    # a small group is hidden whole (no relation to its total); with one, the total of all would give it away
    known = [("total", r) for r in nums if not (0 < totals[r] < min_cell)]
    if len(known) < len(nums):
        known = [k for k in known if k[1] != ALL]
    sums += [([("den", k[1])], k) for k in known]
    cells = suppress_cells(values, sums=sums, rates=[(("num", r), ("den", r)) for r in nums], known=known,
                           pooled=True, min_cell=min_cell, enabled=enabled)
    return {r: cells.shown(("num", r)) and cells.shown(("den", r)) for r in nums}


def _share_rows(measure: str, flag: pd.Series, known: pd.Series, route: pd.Series, conf_level: float, *,
                min_cell: int, enabled: bool) -> list[dict[str, object]]:
    nums: dict[str, int] = {}
    dens: dict[str, int] = {}
    totals: dict[str, int] = {}
    for r in sorted(route[known].unique()):
        sel = known & route.eq(r)
        nums[r], dens[r], totals[r] = int((flag & sel).sum()), int(sel.sum()), int(route.eq(r).sum())
    nums[ALL], dens[ALL], totals[ALL] = int((flag & known).sum()), int(known.sum()), len(route)
    shown = _protected(nums, dens, totals, min_cell=min_cell, enabled=enabled)
    lo, hi = wilson_ci(np.array(list(nums.values())), np.array(list(dens.values())), conf_level)
    return [{"measure": measure, "route": r, "numerator": nums[r], "denominator": dens[r],
             "estimate": nums[r] / dens[r] if dens[r] else np.nan, "ci_low": float(lo[i]), "ci_high": float(hi[i]),
             "shown": shown[r]} for i, r in enumerate(nums)]


def _quantile_rows(values: pd.Series, route: pd.Series, *, min_cell: int, enabled: bool) -> pd.DataFrame:
    rows = []
    known = values.notna()
    for r in [*sorted(route[known].unique()), ALL]:
        v = values[known & (route.eq(r) if r != ALL else True)].to_numpy(float)
        q1, med, q3 = np.quantile(v, [0.25, 0.5, 0.75]) if len(v) else (np.nan,) * 3
        total = int(len(route) if r == ALL else route.eq(r).sum())  # sessions without a value: derived, protected
        rows.append({"route": r, "n": len(v), "median": float(med), "q1": float(q1), "q3": float(q3),
                     "shown": not (enabled and (_small(len(v), min_cell) or _small(total - len(v), min_cell)))})
    return pd.DataFrame(rows, columns=["route", "n", "median", "q1", "q3", "shown"])


def _distribution(values: pd.Series, levels: Sequence[object], *, min_cell: int, enabled: bool,
                  column: str = "level") -> pd.DataFrame:
    from analytics.privacy.suppression import suppress_cells

    known = values.dropna()
    counts = {lv: int(known.eq(lv).sum()) for lv in levels}
    total = len(known)
    cells = suppress_cells({**{("n", lv): float(n) for lv, n in counts.items()}, "total": float(total)},
                           sums=[([("n", lv) for lv in levels], "total")],
                           rates=[(("n", lv), "total") for lv in levels], known=["total"] if total >= min_cell else [],
                           min_cell=min_cell, enabled=enabled)
    return pd.DataFrame({column: list(levels), "n": list(counts.values()),
                         "share": [n / total if total else np.nan for n in counts.values()],
                         "shown": [cells.shown(("n", lv)) and cells.shown("total") for lv in levels]})


@per_cohort
def session_monitoring(cohort: Cohort, *, thresholds: MonitoringThresholds | None = None,
                       conf_level: float = 0.95) -> SessionMonitoring:
    """Session monitoring figures of the cohort's ketamine sessions (see the module docstring for definitions).

    Raises
    ------
    InsufficientData
        When the cohort has no ketamine session.
    """
    th = thresholds or MonitoringThresholds()
    ket = _ketamine(cohort)
    if ket.empty:
        raise InsufficientData("Session monitoring needs ketamine sessions; the current view has none. Widen the "
                               "date range or the filters.")
    min_cell, enabled = cohort.settings.min_cell, cohort.settings.suppress
    route = _routes(ket)
    recorded = {"bp": _has(ket, ("bp_systolic_pre", "bp_systolic_40min")),
                "discharge": _has(ket, ("bp_systolic_discharge",)),
                "minutes": _has(ket, ("minutes_to_discharge",)), "sedation": _has(ket, ("sedation_score",)),
                "dissociation": _has(ket, ("dissociation_score",)), "severity": _has(ket, ("event_severity",)),
                "action": _has(ket, ("action_taken",))}
    notes = [f"Unit: the attended ketamine session ({note_n(len(ket))} sessions in view). {th.describe()}"]
    bp_rows: list[dict[str, object]] = []
    if recorded["bp"]:
        pre, at40 = _num(ket, "bp_systolic_pre"), _num(ket, "bp_systolic_40min")
        both = pre.notna() & at40.notna()
        bp_rows += _share_rows("rise", (at40 - pre >= th.rise_mmhg) & both, both, route, conf_level,
                               min_cell=min_cell, enabled=enabled)
        d40 = _num(ket, "bp_diastolic_40min")
        seen = at40.notna() | d40.notna()
        high = (at40 > th.severe_systolic_mmhg).fillna(False) | (d40 > th.severe_diastolic_mmhg).fillna(False)
        bp_rows += _share_rows("very_high_40min", high & seen, seen, route, conf_level, min_cell=min_cell,
                               enabled=enabled)
    if recorded["discharge"]:
        s_d, d_d = _num(ket, "bp_systolic_discharge"), _num(ket, "bp_diastolic_discharge")
        seen = s_d.notna() | d_d.notna()
        raised = (s_d >= th.discharge_systolic_mmhg).fillna(False) | (d_d >= th.discharge_diastolic_mmhg).fillna(False)
        bp_rows += _share_rows("raised_discharge", raised & seen, seen, route, conf_level, min_cell=min_cell,
                               enabled=enabled)
    bp = pd.DataFrame(bp_rows, columns=["measure", "route", "numerator", "denominator", "estimate", "ci_low",
                                        "ci_high", "shown"])
    empty_q = pd.DataFrame(columns=["route", "n", "median", "q1", "q3", "shown"])
    minutes = (_quantile_rows(_num(ket, "minutes_to_discharge"), route, min_cell=min_cell, enabled=enabled)
               if recorded["minutes"] else empty_q)
    dissociation = (_quantile_rows(_num(ket, "dissociation_score"), route, min_cell=min_cell, enabled=enabled)
                    if recorded["dissociation"] else empty_q)
    sedation = (_distribution(_num(ket, "sedation_score"), [5.0, 4.0, 3.0, 2.0, 1.0, 0.0], min_cell=min_cell,
                              enabled=enabled, column="score") if recorded["sedation"]
                else pd.DataFrame(columns=["score", "n", "share", "shown"]))
    if recorded["sedation"]:
        sedation["score"] = sedation["score"].astype(int)
    empty_d = pd.DataFrame(columns=["level", "n", "share", "shown"])
    severity = (_distribution(ket["event_severity"].astype("string"), SEVERITIES, min_cell=min_cell,
                              enabled=enabled) if recorded["severity"] else empty_d)
    action = (_distribution(ket["action_taken"].astype("string"), ACTIONS, min_cell=min_cell, enabled=enabled)
              if recorded["action"] else empty_d)
    serious: EventBound | None = None
    serious_shown = True
    if recorded["severity"]:
        sev = ket["event_severity"].astype("string")
        n_rec = int(sev.notna().sum())
        k = int(sev.eq("serious").fillna(False).sum())
        serious = event_bound(k, n_rec, conf_level=conf_level)
        serious_shown = not (enabled and (_small(k, min_cell) or _small(n_rec, min_cell)))
        notes.append(f"Serious events: event_severity 'serious' in {note_n(k)} of {note_n(n_rec)} ketamine sessions "
                     "with a severity recorded; exact Clopper–Pearson interval, exact one-sided upper bound "
                     "(rule of three, 3/n, when there were none).")
    missing = [part for part, ok in recorded.items() if not ok]
    if missing:
        notes.append("Not recorded in this export: " + ", ".join(_PART_WORDS[p] for p in missing) + ".")
    return SessionMonitoring(recorded=recorded, blood_pressure=bp, minutes=minutes, sedation=sedation,
                             dissociation=dissociation, severity=severity, action=action, serious=serious,
                             n_sessions=len(ket), thresholds=th, conf_level=conf_level, notes=tuple(notes),
                             _serious_shown=serious_shown)


_PART_WORDS = {"bp": "blood pressure before dosing and at ~40 min", "discharge": "blood pressure at discharge",
               "minutes": "minutes to discharge", "sedation": "sedation score (MOAA/S)",
               "dissociation": "dissociation score (CADSS-6)", "severity": "event severity",
               "action": "action taken"}
MEASURE_WORDS = {"rise": "systolic rise ≥ threshold at ~40 min", "very_high_40min": "very high reading at ~40 min",
                 "raised_discharge": "still raised at discharge"}


__all__ = ["ALL", "MEASURE_WORDS", "NOT_RECORDED", "MonitoringThresholds", "SessionMonitoring", "session_monitoring"]
