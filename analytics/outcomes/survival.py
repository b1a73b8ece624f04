"""Time to return to use: Kaplan–Meier, log-rank, Cox (Efron ties) with a PH check, RMST.

Definitions, stated once for the whole project:

* **Time** is ``days_to_event`` (days since the first ketamine session, day 0); the **event** is
  ``relapsed`` (True = return to use observed on that day; False = censored on that day, i.e. still
  without return to use at the last assessment). See :mod:`analytics.outcomes.cohort` and
  :meth:`analytics.outcomes.settings.Settings.describe` for how both are derived.
* **At risk on day t**: patients whose ``days_to_event`` is on or after day ``t`` -- still followed and
  without return to use before day ``t``. A patient censored on day ``t`` is at risk on day ``t``
  (censoring is taken to happen after the events of the same day, as in R and every KM convention).
* ``n_event`` / ``n_censor`` on day ``t``: returns to use / censorings recorded on day ``t``.

The array-level estimators (KM, log-rank, Cox, PH test, RMST) are in :mod:`analytics.engines.survival`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from analytics.engines.survival import (  # noqa: F401  (the estimators, also used through this module)
    CoxFit,
    LogRank,
    Transform,
    _logrank_codes,
    _z,
    cox_ph,
    difference_ci,
    kaplan_meier,
    km_at,
    km_median,
    logrank,
    rmst,
)
from analytics.engines.turnbull import TurnbullFit, turnbull
from analytics.errors import InsufficientData, ModelDidNotConverge, OutcomesError, UnusableExport
from analytics.formatting import p_value
from analytics.outcomes.memo import per_cohort
from analytics.privacy.counts import note_below, note_n

if TYPE_CHECKING:  # pragma: no cover
    from analytics.outcomes.cohort import Cohort, DropoutRule

DEFAULT_MILESTONES: tuple[int, ...] = (30, 90, 180, 365)
GROUPING_COLUMNS: tuple[str, ...] = ("program", "primary_substance", "index_route", "site", "baseline_band",
                                     "sex", "age_band", "clinician")
ADJUSTMENT_COLUMNS: tuple[str, ...] = ("age", "sex", "primary_substance", "baseline_phq9")
COLUMN_ALIASES: dict[str, str] = {"route": "index_route", "depression_band": "baseline_band"}
MIN_GROUP_PATIENTS = 5  # groups smaller than this are left out of comparisons (kept in the curves)
MIN_EVENTS_PER_PARAMETER = 10  # below this a note warns about biased hazard ratios (Peduzzi 1996)
PH_ALPHA = 0.05
TIME = "days_to_event"
EVENT = "relapsed"
ALL = "all"

KM_METHOD = ("Kaplan–Meier with Greenwood variance; {pct} CI on the log scale (R survfit default, "
             "conf.type = \"log\"); median by R's rule (midpoint where S(t) = 0.5 over an interval) with the CI "
             "where the pointwise limits reach 0.5.")
COX_METHOD = ("Cox proportional hazards, Efron ties (R coxph default), Wald {pct} CIs; proportional hazards "
              "checked by the Grambsch–Therneau score test on scaled Schoenfeld residuals (R cox.zph, "
              "survival ≥ 3.0), time transform {transform}.")
LOGRANK_METHOD = "Log-rank test (R survdiff), p from the chi-square distribution."
RMST_METHOD = ("Restricted mean time without return to use up to day {tau:g} (area under the KM curve, as R "
               "print(survfit, rmean = {tau:g})); differences with normal-approximation {pct} CIs as survRM2.")

_UNITS = {"age": "per year", "baseline_phq9": "per PHQ-9 point"}
_NUMERIC_ADJUSTMENTS = ("age", "baseline_phq9")


@dataclass(frozen=True)
class SurvivalCurves:
    """Kaplan–Meier time to first return to use, per group.

    Attributes
    ----------
    table:
        One row per (group, day) with an event or a censoring: ``group``, ``day``, ``estimate`` (proportion
        without return to use), ``ci_low``, ``ci_high`` (NaN where not estimable), ``n_risk``, ``n_event``,
        ``n_censor``.
    medians:
        One row per group: ``group``, ``n``, ``n_event``, ``n_censor``, ``estimate`` (median days),
        ``ci_low``, ``ci_high`` (NaN where not reached).
    milestones:
        ``group``, ``day``, ``estimate``, ``se``, ``ci_low``, ``ci_high``, ``n_risk`` (NaN estimate past the
        group's last follow-up).
    risk_table:
        Number at risk under the plot: ``group``, ``day``, ``n_risk``, ``n_event`` and ``n_censor``
        (both cumulative up to and including ``day``).
    by:
        Grouping column, or None (one group, ``"all"``).
    min_cell:
        Counts below this (and above 0) are to be suppressed in shared outputs; None when suppression is off.
    """

    table: pd.DataFrame
    medians: pd.DataFrame
    milestones: pd.DataFrame
    risk_table: pd.DataFrame
    by: str | None
    conf_level: float
    min_cell: int | None = None
    notes: tuple[str, ...] = ()

    @property
    def groups(self) -> list[str]:
        return list(self.medians["group"])

    @property
    def median_days(self) -> dict[str, float | None]:
        return {g: _num(m) for g, m in zip(self.medians["group"], self.medians["estimate"])}


@dataclass(frozen=True)
class GroupComparison:
    """Groups compared: log-rank, Cox hazard ratios with a PH check, RMST and milestone differences.

    Attributes
    ----------
    groups:
        ``group``, ``n``, ``n_event``, ``observed``, ``expected`` (log-rank).
    hazard_ratios:
        ``term``, ``level``, ``coef``, ``se``, ``estimate`` (hazard ratio vs the reference level, or per unit
        of a numeric covariate), ``ci_low``, ``ci_high``, ``p``. None when the Cox model cannot be estimated
        (the notes say why).
    ph_test:
        ``term``, ``chisq``, ``df``, ``p`` (last row ``GLOBAL``), or None.
    ph_holds:
        False when the global PH test has p < 0.05; None without a Cox model.
    ph_verdict:
        One plain sentence for the page.
    rmst:
        ``group``, ``estimate`` (mean days without return to use up to ``horizon_days``), ``se``, ``ci_low``,
        ``ci_high``.
    rmst_difference:
        ``group``, ``estimate`` (days, group minus reference), ``se``, ``ci_low``, ``ci_high``, ``p``.
    milestone_difference:
        ``group``, ``day``, ``estimate`` (difference in proportion without return to use, group minus
        reference), ``se``, ``ci_low``, ``ci_high``, ``p``.
    """

    by: str
    reference: str
    groups: pd.DataFrame
    logrank: LogRank
    hazard_ratios: pd.DataFrame | None
    ph_test: pd.DataFrame | None
    ph_holds: bool | None
    ph_verdict: str
    rmst: pd.DataFrame
    rmst_difference: pd.DataFrame
    milestone_difference: pd.DataFrame
    horizon_days: float | None
    adjusted_for: tuple[str, ...]
    n_model: int
    n_event_model: int
    conf_level: float
    notes: tuple[str, ...] = field(default=())


# ----------------------------------------------------------------------------------------------------
# Cohort-level
# ----------------------------------------------------------------------------------------------------

def _num(x: Any) -> float | None:
    """A plain float, or None for missing/NaN/inf (JSON and dict outputs)."""
    if x is None or x is pd.NA:
        return None
    v = float(x)
    return v if math.isfinite(v) else None


def _resolve_column(frame: pd.DataFrame, by: str, *, allowed: Sequence[str], what: str) -> str:
    col = COLUMN_ALIASES.get(by, by)
    if col not in frame.columns or col not in allowed:
        raise OutcomesError(f"Cannot {what} by {by!r}: it is not a patient column that can be used. "
                            f"Use one of: {', '.join(allowed)}.")
    return col


def _group_order(col: str, present: Sequence[str]) -> list[str]:
    from analytics.outcomes.cohort import AGE_BANDS, PHQ9_BANDS  # natural order of the band labels

    natural = {"baseline_band": [b[2] for b in PHQ9_BANDS], "age_band": [b[2] for b in AGE_BANDS]}.get(col)
    if natural:
        return [v for v in natural if v in present] + sorted(set(present) - set(natural))
    return sorted(set(present))


def _base_notes(cohort: Cohort) -> list[str]:
    notes = [cohort.settings.describe()]
    for reason, count in cohort.exclusions.items():
        notes.append(f"Excluded: {note_n(count)} {reason}.")
    return notes


@dataclass(frozen=True)
class _Grouped:
    """Patients with follow-up as arrays; ``code[i]`` indexes ``groups`` (integer codes keep 500k rows fast)."""

    time: np.ndarray
    event: np.ndarray
    code: np.ndarray
    groups: list[str]
    col: str | None
    extra: pd.DataFrame
    notes: list[str]

    def select(self, keep: np.ndarray) -> _Grouped:
        """Rows in ``keep``, with groups that are left empty dropped and codes renumbered."""
        present = np.flatnonzero(np.bincount(self.code[keep], minlength=len(self.groups)))
        recode = np.full(len(self.groups), -1)
        recode[present] = np.arange(present.size)
        return _Grouped(self.time[keep], self.event[keep], recode[self.code[keep]],
                        [self.groups[i] for i in present], self.col, self.extra[keep].reset_index(drop=True),
                        self.notes)


def _grouped(cohort: Cohort, by: str | None, *, what: str, extra: Sequence[str] = ()) -> _Grouped:
    """Patients with follow-up split by ``by``; missing or blank group values dropped and counted in notes."""
    patients = cohort.patients
    col = None if by is None else _resolve_column(patients, by, allowed=GROUPING_COLUMNS, what=what)
    wanted = [TIME, EVENT] + ([col] if col else []) + [c for c in extra if c != col]
    pts = patients.loc[patients["has_followup"].to_numpy(bool), wanted]  # as cohort.survival_patients
    notes = _base_notes(cohort)
    if pts.empty:
        raise InsufficientData("No patient has a follow-up assessment yet, so time to return to use cannot be "
                               "estimated (0 patients with follow-up). Upload the follow-ups export or widen "
                               "the date range.")
    time = pts[TIME].to_numpy(float)
    event = pts[EVENT].to_numpy(bool)
    extras = pts[list(extra)].reset_index(drop=True)
    if col is None:
        return _Grouped(time, event, np.zeros(time.size, dtype=np.intp), [ALL], None, extras, notes)
    codes, uniques = pd.factorize(pts[col])
    labels = [str(u) for u in uniques]
    order = _group_order(col, [lab for lab in labels if lab.strip()])
    position = {lab: i for i, lab in enumerate(order)}
    recode = np.array([position.get(lab, -1) for lab in labels] + [-1], dtype=np.intp)
    code = recode[codes]  # factorize marks missing as -1, which picks the trailing -1
    keep = code >= 0
    n_missing = int((~keep).sum())
    if n_missing == len(pts):
        raise InsufficientData(f"No patient with follow-up has a {col} value (all {note_n(n_missing)} are blank), "
                               f"so the curves cannot be split by {col}. Add {col} to the export or pick another "
                               "grouping.")
    if n_missing:
        notes.append(f"{note_n(n_missing)} patient(s) without a {col} value are left out of the curves by {col}.")
    return _Grouped(time, event, code, order, col, extras, notes).select(keep)


def _risk_breaks(max_day: float) -> np.ndarray:
    for step in (7, 14, 30, 60, 90, 180, 365, 730):
        if max_day / step <= 8:
            break
    return np.arange(0, max_day + 1e-9, step, dtype=float) if max_day > 0 else np.array([0.0])


def _risk_rows(group: str, km: pd.DataFrame, breaks: np.ndarray) -> pd.DataFrame:
    """Number at risk on each break day, and events and censorings up to and including it, from a KM table."""
    day = km["day"].to_numpy(float)
    nxt = np.searchsorted(day, breaks, side="left")
    upto = np.searchsorted(day, breaks, side="right")
    n_risk = np.where(nxt < day.size, km["n_risk"].to_numpy()[np.minimum(nxt, max(day.size - 1, 0))], 0)
    return pd.DataFrame({"group": group, "day": breaks, "n_risk": n_risk.astype(np.int64),
                         "n_event": np.r_[0, np.cumsum(km["n_event"].to_numpy())][upto].astype(np.int64),
                         "n_censor": np.r_[0, np.cumsum(km["n_censor"].to_numpy())][upto].astype(np.int64)})


def default_grouping(cohort: Cohort) -> str | None:
    """The grouping a page opens with: primary substance when at least two substances each have
    ``MIN_GROUP_PATIENTS`` or more patients with follow-up (return to use differs by substance, and one curve over
    a mix hides it), else program on the same rule, else None (one curve)."""
    pts = cohort.survival_patients
    for col in ("primary_substance", "program"):
        if col in pts.columns and (pts[col].value_counts() >= MIN_GROUP_PATIENTS).sum() >= 2:
            return col
    return None


@per_cohort
def relapse_curves(cohort: Cohort, *, by: str | None = None, conf_level: float = 0.95,
                   milestones: Sequence[float] = DEFAULT_MILESTONES) -> SurvivalCurves:
    """Kaplan–Meier curves of time to first return to use, overall or per group.

    Parameters
    ----------
    cohort:
        The analysis cohort; patients without follow-up are excluded (counted in the notes).
    by:
        Grouping column of ``cohort.patients`` (one of :data:`GROUPING_COLUMNS`; ``"route"`` means
        ``index_route``), or None for one curve (group ``"all"``). Patients without a value are left out and
        counted in the notes.
    conf_level:
        Level of the pointwise CIs.
    milestones:
        Days at which survival is reported.

    Returns
    -------
    SurvivalCurves
        ``table`` (group, day, estimate, ci_low, ci_high, n_risk, n_event, n_censor), ``medians``,
        ``milestones``, ``risk_table``; see :class:`SurvivalCurves`.

    Raises
    ------
    InsufficientData
        No patient has a follow-up, or no patient has a value of ``by``.

    Notes
    -----
    Kaplan–Meier with Greenwood variance and log-scale CI, matching R ``survfit`` defaults.
    """
    data = _grouped(cohort, by, what="draw curves")
    notes = data.notes
    dating = _dating_note(cohort.patients[cohort.patients["has_followup"].to_numpy(bool)])
    if dating:
        notes.append(dating)
    settings = cohort.settings
    return _curves(data, conf_level=conf_level, milestones=milestones,
                   min_cell=settings.min_cell if settings.suppress else None)


def _curves(data: _Grouped, *, conf_level: float, milestones: Sequence[float], min_cell: int | None
            ) -> SurvivalCurves:
    """Kaplan–Meier per group of ``data`` (the body of :func:`relapse_curves`, also used by the sensitivity
    analyses, whose "groups" are the rules compared)."""
    notes = list(data.notes)
    breaks = _risk_breaks(float(data.time.max()))
    tables, med_rows, ms_tables, risk = [], [], [], []
    for i, g in enumerate(data.groups):
        m = data.code == i
        t, e = data.time[m], data.event[m]
        km = kaplan_meier(t, e, conf_level=conf_level)
        tables.append(km.drop(columns="std_err").assign(group=g))
        med, lo, hi = km_median(km)
        med_rows.append({"group": g, "n": int(t.size), "n_event": int(e.sum()), "n_censor": int((~e).sum()),
                         "estimate": np.nan if med is None else med, "ci_low": np.nan if lo is None else lo,
                         "ci_high": np.nan if hi is None else hi})
        ms_tables.append(km_at(km, milestones).assign(group=g))
        risk.append(_risk_rows(g, km, breaks))
    table = pd.concat(tables, ignore_index=True)[["group", "day", "estimate", "ci_low", "ci_high", "n_risk",
                                                   "n_event", "n_censor"]]
    ms = pd.concat(ms_tables, ignore_index=True)[["group", "day", "estimate", "se", "ci_low", "ci_high", "n_risk"]]
    notes.insert(0, KM_METHOD.format(pct=f"{conf_level:.0%}"))
    past = ms[ms["estimate"].isna()]
    if len(past):
        notes.append("No estimate past a group's last follow-up: " + "; ".join(
            f"{g} (day {', '.join(f'{d:g}' for d in sub['day'])})" for g, sub in past.groupby("group", sort=False))
            + ".")
    return SurvivalCurves(table=table, medians=pd.DataFrame(med_rows), milestones=ms,
                          risk_table=pd.concat(risk, ignore_index=True), by=data.col, conf_level=conf_level,
                          min_cell=min_cell, notes=tuple(notes))


def _dating_note(pts: pd.DataFrame) -> str | None:
    """A note when most returns to use are dated by the assessment visit (no ``relapse_date``): the curve then steps
    down on visit days, and a milestone read off it depends on when the visits happened."""
    if "event_dated_by" not in pts.columns:
        return None
    by = pts.loc[pts[EVENT].to_numpy(bool), "event_dated_by"]
    n_event, n_visit = len(by), int((by == "visit").sum())
    if n_event == 0 or 2 * n_visit <= n_event:
        return None
    return (f"Most returns to use ({note_n(n_visit)} of {note_n(n_event)}) have no relapse date and are dated by the "
            "assessment at which they were reported: each happened somewhere between the previous assessment and "
            "that one. The curve steps down on visit days, so the medians and milestones are read off visit-day "
            "steps and lean late; the midpoint rule (see 'How events are dated') shows how much that matters.")


def _design(data: _Grouped, *, reference: int, adjust: Sequence[str]
            ) -> tuple[pd.DataFrame, np.ndarray, dict[str, list[str]], dict[str, tuple[str, str]], list[str]]:
    """Dummy-coded design: the grouping (reference level left out) plus adjustments, complete cases only.

    Returns the design, the rows of ``data`` it uses, term → columns, column → (term, level), and notes.
    """
    notes: list[str] = []
    keep = np.ones(data.time.size, dtype=bool)
    for a in adjust:
        keep &= data.extra[a].notna().to_numpy(bool)
    n_drop = int((~keep).sum())
    if n_drop:
        notes.append(f"{note_n(n_drop)} patient(s) without a value of {' or '.join(adjust)} are left out of the Cox "
                     "model (complete cases).")
    for a in adjust:
        if a in _NUMERIC_ADJUSTMENTS:
            continue
        codes, uniques = pd.factorize(data.extra[a])
        n = np.bincount(codes[keep], minlength=len(uniques))
        events = np.bincount(codes[keep], weights=data.event[keep], minlength=len(uniques))
        rare = [j for j in range(len(uniques)) if 0 < n[j] and (n[j] < MIN_GROUP_PATIENTS or events[j] == 0)]
        if rare:
            keep &= ~np.isin(codes, rare)
            notes.append(f"{note_n(n[rare].sum())} patient(s) with {a} {', '.join(str(uniques[j]) for j in rare)} are "
                         f"left out of the adjusted Cox model (fewer than {note_below(MIN_GROUP_PATIENTS)} patients "
                         "or no return to use, so that level's hazard ratio cannot be estimated).")
    rows = np.flatnonzero(keep)
    code = data.code[rows]
    by = str(data.col)
    cols: dict[str, np.ndarray] = {}
    terms: dict[str, list[str]] = {by: []}
    labels: dict[str, tuple[str, str]] = {}
    for i, g in enumerate(data.groups):
        if i == reference:
            continue
        name = f"{by}={g}"
        cols[name] = (code == i).astype(float)
        terms[by].append(name)
        labels[name] = (by, g)
    for a in adjust:
        values = data.extra[a].iloc[rows]
        if a in _NUMERIC_ADJUSTMENTS:
            v = pd.to_numeric(values, errors="coerce").to_numpy(float)
            if np.nanstd(v) == 0:
                notes.append(f"Not adjusted for {a}: every patient in the model has the same value.")
                continue
            cols[a], terms[a], labels[a] = v, [a], (a, _UNITS.get(a, "per unit"))
            continue
        codes, uniques = pd.factorize(values)
        counts = np.bincount(codes, minlength=len(uniques))
        if len(uniques) < 2:
            notes.append(f"Not adjusted for {a}: every patient in the model has the same value.")
            continue
        ref = int(np.argmax(counts))
        notes.append(f"Adjusted for {a} (reference: {uniques[ref]}, the most common).")
        terms[a] = []
        for j in sorted(range(len(uniques)), key=lambda k: str(uniques[k])):
            if j == ref:
                continue
            name = f"{a}={uniques[j]}"
            cols[name] = (codes == j).astype(float)
            terms[a].append(name)
            labels[name] = (a, str(uniques[j]))
    return pd.DataFrame(cols), rows, terms, labels, notes


def _ph_verdict(ph: pd.DataFrame | None, *, by: str, horizon: float | None) -> tuple[bool | None, str]:
    if ph is None:
        return None, "Proportional hazards not checked: no Cox model could be fitted."
    glob = ph.iloc[-1]
    if glob["p"] >= PH_ALPHA:
        return True, (f"No evidence against proportional hazards (Grambsch–Therneau global test, "
                      f"{p_value(float(glob['p']))}): one hazard ratio per group summarises the comparison. "
                      "In small samples this test has little power, so also look at the curves.")
    worst = ph.iloc[:-1].sort_values("p").iloc[0]
    where = f"; clearest for {worst['term']}" if len(ph) > 2 else ""
    instead = (f"the restricted mean time without return to use up to day {horizon:g} and the milestone "
               "differences" if horizon is not None else "the milestone differences")
    return False, (f"Hazards are not proportional (Grambsch–Therneau global test, {p_value(float(glob['p']))}"
                   f"{where}): the hazard ratio by {by} changes over follow-up, so one hazard ratio misleads. Read "
                   f"{instead} instead.")



def largest_group(curves: SurvivalCurves) -> str:
    """The group with the most patients: the default reference of the hazard ratios (the page's and the warm-up's)."""
    sizes = dict(zip(curves.medians["group"], curves.medians["n"]))
    return max(curves.groups, key=lambda g: sizes.get(g, 0))

@per_cohort
def compare_groups(cohort: Cohort, *, by: str, reference: str | None = None, adjust: Sequence[str] = (),
                   conf_level: float = 0.95, horizon_days: float | None = None,
                   milestones: Sequence[float] = DEFAULT_MILESTONES,
                   ph_transform: Transform = "km") -> GroupComparison:
    """Compare time to return to use between groups: log-rank, Cox HRs with a PH check, RMST, milestones.

    Parameters
    ----------
    cohort:
        The analysis cohort.
    by:
        Grouping column (see :data:`GROUPING_COLUMNS`).
    reference:
        Reference level of ``by`` for hazard ratios and differences; default: the largest group.
    adjust:
        Covariates for the Cox model, from :data:`ADJUSTMENT_COLUMNS` (``age``, ``sex``,
        ``primary_substance``, ``baseline_phq9``); complete cases only (the number left out is noted).
    conf_level:
        Level of every CI.
    horizon_days:
        RMST horizon; default: the shortest last follow-up among the groups (the survRM2 default), so that no
        curve is extrapolated.
    milestones:
        Days for the milestone differences.
    ph_transform:
        Time transform of the PH test (R ``cox.zph`` default ``"km"``).

    Returns
    -------
    GroupComparison
        See :class:`GroupComparison` for every table's columns.

    Raises
    ------
    InsufficientData
        Fewer than two groups with at least :data:`MIN_GROUP_PATIENTS` patients, or no return to use at all.
    OutcomesError
        ``by``, ``reference`` or an ``adjust`` name that cannot be used.

    Notes
    -----
    Groups smaller than :data:`MIN_GROUP_PATIENTS` are left out (noted). The Cox model is not fitted (noted,
    ``hazard_ratios`` None) when a group has no event -- its hazard ratio would be 0 or infinite -- or when
    there are fewer than 2 events per coefficient; below 10 events per coefficient a note warns that hazard
    ratios may be biased (Peduzzi 1996). The log-rank test, RMST and milestone differences are computed
    whatever the PH verdict; the verdict says which to read.
    """
    bad = [a for a in adjust if a not in ADJUSTMENT_COLUMNS or COLUMN_ALIASES.get(by, by) == a]
    if bad:
        raise OutcomesError(f"Cannot adjust for {', '.join(map(repr, bad))}. Adjust for any of "
                            f"{', '.join(a for a in ADJUSTMENT_COLUMNS if a != by)} (not the grouping column).")
    data = _grouped(cohort, by, what="compare groups", extra=adjust)
    notes = data.notes
    col = str(data.col)
    sizes = np.bincount(data.code, minlength=len(data.groups))
    tiny = [g for g, n in zip(data.groups, sizes) if n < MIN_GROUP_PATIENTS]
    if tiny:
        notes.append(f"Left out of the comparison (fewer than {note_below(MIN_GROUP_PATIENTS)} patients each): "
                     f"{', '.join(tiny)}. Merge them with other groups to include them.")
        data = data.select(sizes[data.code] >= MIN_GROUP_PATIENTS)
        sizes = np.bincount(data.code, minlength=len(data.groups))
    order = data.groups
    if len(order) < 2:
        raise InsufficientData(
            f"Comparing by {col} needs at least 2 groups of {MIN_GROUP_PATIENTS} or more patients with "
            f"follow-up (got {len(order)}{': ' + order[0] if order else ''}). Pick another grouping or widen "
            "the date range.")
    if not data.event.any():
        raise InsufficientData(
            f"No patient in the comparison by {col} has returned to use yet (0 events among {data.time.size} "
            "patients), so the groups cannot be compared. Wait for more follow-up or widen the date range.")
    chosen = reference is not None
    if reference is None:
        reference = order[int(np.argmax(sizes))]  # the largest group; the first in order on a tie
    elif reference not in order:
        raise OutcomesError(f"The reference level {reference!r} is not one of the {col} groups compared "
                            f"({', '.join(order)}). Pick one of them.")
    ref = order.index(reference)
    lr = _logrank_codes(data.time, data.event, data.code, order)
    notes.insert(0, LOGRANK_METHOD)
    hr, ph, n_model, n_event_model = _cox_part(data, ref=ref, adjust=adjust, conf_level=conf_level,
                                               ph_transform=ph_transform, notes=notes)
    if hr is not None:
        transform = '"km" (1 − pooled Kaplan–Meier, R\'s default)' if ph_transform == "km" else f'"{ph_transform}"'
        notes.insert(1, COX_METHOD.format(pct=f"{conf_level:.0%}", transform=transform)
                     + f" Reference: {reference} ({'as chosen' if chosen else 'the largest group'}).")
    kms = [kaplan_meier(data.time[data.code == i], data.event[data.code == i], conf_level=conf_level)
           for i in range(len(order))]
    horizon, rm_tab, rm_diff = _rmst_part(kms, order, ref=ref, horizon_days=horizon_days, conf_level=conf_level,
                                          notes=notes)
    ms_diff = _milestone_part(kms, order, ref=ref, milestones=milestones, conf_level=conf_level)
    holds, verdict = _ph_verdict(ph, by=col, horizon=horizon)
    groups = lr.table.assign(n_event=lambda t: t["observed"].astype(np.int64))[
        ["group", "n", "n_event", "observed", "expected"]]
    return GroupComparison(by=col, reference=reference, groups=groups, logrank=lr, hazard_ratios=hr, ph_test=ph,
                           ph_holds=holds, ph_verdict=verdict, rmst=rm_tab, rmst_difference=rm_diff,
                           milestone_difference=ms_diff, horizon_days=horizon, adjusted_for=tuple(adjust),
                           n_model=n_model, n_event_model=n_event_model, conf_level=conf_level, notes=tuple(notes))


def _cox_part(data: _Grouped, *, ref: int, adjust: Sequence[str], conf_level: float, ph_transform: Transform,
              notes: list[str]) -> tuple[pd.DataFrame | None, pd.DataFrame | None, int, int]:
    """Cox model with guard-rails; returns (hazard ratios, PH test, n, events), None where not estimable."""
    events = np.bincount(data.code, weights=data.event, minlength=len(data.groups))
    no_event = [g for g, n in zip(data.groups, events) if n == 0]
    if no_event:
        notes.append(f"No hazard ratio: nobody in {', '.join(no_event)} has returned to use, so its hazard ratio "
                     "would be 0 (not estimable). Read the RMST and milestone differences, or merge groups.")
        return None, None, 0, 0
    design, rows, terms, labels, dnotes = _design(data, reference=ref, adjust=adjust)
    notes.extend(dnotes)
    t, e = data.time[rows], data.event[rows]
    n_event = int(e.sum())
    epv = n_event / max(design.shape[1], 1)
    if epv < 2:
        notes.append(f"No hazard ratio: only {note_n(n_event)} events for {design.shape[1]} model coefficients (fewer "
                     "than 2 per coefficient). Drop adjustments or merge groups.")
        return None, None, int(t.size), n_event
    if epv < MIN_EVENTS_PER_PARAMETER:
        notes.append(f"Only {note_n(n_event)} events for {design.shape[1]} model coefficients (fewer than "
                     f"{MIN_EVENTS_PER_PARAMETER} per coefficient): hazard "
                     "ratios may be biased and their CIs too narrow. Drop adjustments or merge groups.")
    try:
        fit = cox_ph(t, e, design, terms=terms, levels=labels, conf_level=conf_level, ph_transform=ph_transform)
    except ModelDidNotConverge as err:
        notes.append(f"No hazard ratio: {err}")
        return None, None, int(t.size), n_event
    hr = fit.table[["term", "level", "coef", "se", "estimate", "ci_low", "ci_high", "p"]].reset_index(drop=True)
    return hr, fit.ph_test, int(t.size), n_event


def _rmst_part(kms: list[pd.DataFrame], order: list[str], *, ref: int, horizon_days: float | None,
               conf_level: float, notes: list[str]) -> tuple[float | None, pd.DataFrame, pd.DataFrame]:
    last = [float(km["day"].iloc[-1]) for km in kms]
    horizon = float(horizon_days) if horizon_days is not None else min(last)
    if horizon <= 0:
        notes.append("No RMST: the horizon is day 0.")
        return (None, pd.DataFrame(columns=["group", "estimate", "se", "ci_low", "ci_high"]),
                pd.DataFrame(columns=["group", "estimate", "se", "ci_low", "ci_high", "p"]))
    short = [g for g, t in zip(order, last) if t < horizon]
    if short:
        notes.append(f"The RMST horizon (day {horizon:g}) is past the last follow-up of {', '.join(short)}; their "
                     "curves are carried forward flat, as R does. Choose an earlier horizon.")
    zc = _z(conf_level)
    rm = [rmst(km, tau=horizon) for km in kms]
    tab = pd.DataFrame([{"group": g, "estimate": m, "se": s, "ci_low": m - zc * s, "ci_high": m + zc * s}
                        for g, (m, s) in zip(order, rm)])
    diff = pd.DataFrame([_diff_row(g, rm[i][0] - rm[ref][0], math.hypot(rm[i][1], rm[ref][1]), conf_level)
                         for i, g in enumerate(order) if i != ref])
    notes.append(RMST_METHOD.format(tau=horizon, pct=f"{conf_level:.0%}"))
    return horizon, tab, diff


def _milestone_part(kms: list[pd.DataFrame], order: list[str], *, ref: int, milestones: Sequence[float],
                    conf_level: float) -> pd.DataFrame:
    at = [km_at(km, milestones) for km in kms]
    rows = []
    for i, g in enumerate(order):
        if i == ref:
            continue
        for j, day in enumerate(milestones):
            a, b = at[i].iloc[j], at[ref].iloc[j]
            row = _diff_row(g, float(a["estimate"] - b["estimate"]), math.hypot(a["se"], b["se"]), conf_level)
            rows.append({"group": g, "day": float(day), **{k: v for k, v in row.items() if k != "group"}})
    return pd.DataFrame(rows, columns=["group", "day", "estimate", "se", "ci_low", "ci_high", "p"])


def _diff_row(group: str, estimate: float, se: float, conf_level: float) -> dict[str, Any]:
    low, high, p = difference_ci(estimate, se, conf_level=conf_level)
    return {"group": group, "estimate": estimate, "se": se, "ci_low": low, "ci_high": high, "p": p}


# ----------------------------------------------------------------------------------------------------
# Sensitivity analyses: the dropout rule and the dating of events
# ----------------------------------------------------------------------------------------------------

DROPOUT_CENSORED = "dropout censored"
DROPOUT_EVENT = "dropout = return to use"
DATED_AS_RECORDED = "as recorded"
DATED_MIDPOINT = "midpoint of the interval"
DATED_TURNBULL = "Turnbull (interval-censored)"
SENSITIVITY_METHOD = ("Sensitivity analysis: the same Kaplan–Meier estimate under two rules, each with its own "
                      "patients (n); the 'groups' of this table are the rules, not groups of patients.")


@dataclass(frozen=True)
class DropoutSensitivity:
    """Time to return to use under both dropout rules, side by side.

    Attributes
    ----------
    curves:
        :class:`SurvivalCurves` whose groups are the rules (:data:`DROPOUT_CENSORED`, :data:`DROPOUT_EVENT`).
    table:
        One row per rule: ``rule``, ``n`` (patients in the analysis), ``n_event``, ``n_censor``,
        ``n_early_dropout`` (early dropouts counted as return to use), ``n_dropout_event`` (all events that are a
        dropout: a lost-to-follow-up/withdrew status or an early dropout), ``estimate`` (median days), ``ci_low``,
        ``ci_high``.
    milestones:
        ``rule``, ``day``, ``estimate``, ``se``, ``ci_low``, ``ci_high``, ``n_risk``.
    n_early_dropout:
        Early dropouts in the cohort (:func:`analytics.outcomes.cohort.early_dropouts`).
    """

    curves: SurvivalCurves
    table: pd.DataFrame
    milestones: pd.DataFrame
    n_early_dropout: int
    rule: DropoutRule
    notes: tuple[str, ...] = ()


def _rule_curves(parts: list[tuple[str, np.ndarray, np.ndarray]], *, col: str, notes: list[str], conf_level: float,
                 milestones: Sequence[float], min_cell: int | None) -> SurvivalCurves:
    parts = [(g, t, e) for g, t, e in parts if t.size]
    if not parts:
        raise InsufficientData("No patient has a follow-up assessment or has dropped out early, so time to return "
                               "to use cannot be estimated under either rule. Upload the follow-ups export or widen "
                               "the date range.")
    time = np.concatenate([t for _, t, _ in parts])
    event = np.concatenate([e for _, _, e in parts])
    code = np.concatenate([np.full(t.size, i, dtype=np.intp) for i, (_, t, _) in enumerate(parts)])
    data = _Grouped(time, event, code, [g for g, _, _ in parts], col, pd.DataFrame(index=range(time.size)), notes)
    return _curves(data, conf_level=conf_level, milestones=milestones, min_cell=min_cell)


@per_cohort
def dropout_sensitivity(cohort: Cohort, *, rule: DropoutRule | None = None, conf_level: float = 0.95,
                        milestones: Sequence[float] = DEFAULT_MILESTONES) -> DropoutSensitivity:
    """Return to use with dropout censored and with dropout counted as return to use, each with its n.

    Parameters
    ----------
    cohort:
        The analysis cohort (its ``Settings.dropout_as_relapse`` is overridden by each rule).
    rule:
        When a patient without follow-up is an early dropout (:class:`analytics.outcomes.cohort.DropoutRule`).

    Returns
    -------
    DropoutSensitivity
        ``table`` (rule, n, n_event, n_censor, n_early_dropout, n_dropout_event, estimate, ci_low, ci_high),
        ``milestones`` and the two ``curves``.

    Notes
    -----
    Censored rule: a lost-to-follow-up/withdrew status is a censoring and patients without any follow-up are left
    out; it estimates the hazard of the return to use that is observed and is unbiased only when dropping out says
    nothing about use (non-informative censoring). As-event rule (Dakwar 2019, "use or dropout"): every such status
    and every early dropout is a return to use, early dropouts on the day of their expected first assessment (or of
    their last session, if later): a pessimistic bound when dropouts often return to use.
    """
    from analytics.outcomes.cohort import dropout_outcomes

    rule = rule or cohort.settings.dropout_rule
    rows, parts = [], []
    for label, as_event in ((DROPOUT_CENSORED, False), (DROPOUT_EVENT, True)):
        o = dropout_outcomes(cohort, as_event=as_event, rule=rule)
        o = o[o["included"].to_numpy(bool)]
        t, e = o["days_to_event"].to_numpy(float), o["relapsed"].to_numpy(bool)
        parts.append((label, t, e))
        rows.append({"rule": label, "n_early_dropout": int(o["early_dropout"].sum()) if as_event else 0,
                     "n_dropout_event": int((o["dropout_event"] & o["relapsed"]).sum())})
    n_early = int(rows[1]["n_early_dropout"])
    where = (f"early dropouts are counted as return to use on day {rule.first_followup_day} (their expected first "
             "assessment), or on the day of their last session when that is later")
    notes = [SENSITIVITY_METHOD, rule.describe(),
             f"'{DROPOUT_CENSORED}': a lost-to-follow-up or withdrew status is a censoring at that assessment and "
             "patients without any follow-up are left out; this estimates the hazard of the returns to use that are "
             "observed and is right only if patients who drop out do as well as those still followed.",
             f"'{DROPOUT_EVENT}': every lost-to-follow-up or withdrew status is a return to use at that assessment "
             f"(unless use was reported before) and {where}; a pessimistic bound. The truth usually lies between "
             "the two curves.",
             f"{note_n(n_early)} early dropout(s) in this view."]
    settings = cohort.settings
    curves = _rule_curves(parts, col="dropout rule", notes=notes, conf_level=conf_level, milestones=milestones,
                          min_cell=settings.min_cell if settings.suppress else None)
    med = curves.medians.rename(columns={"group": "rule"})
    table = med.merge(pd.DataFrame(rows), on="rule", how="left")[
        ["rule", "n", "n_event", "n_censor", "n_early_dropout", "n_dropout_event", "estimate", "ci_low", "ci_high"]]
    return DropoutSensitivity(curves=curves, table=table,
                              milestones=curves.milestones.rename(columns={"group": "rule"}),
                              n_early_dropout=n_early, rule=rule, notes=curves.notes)


@dataclass(frozen=True)
class EventDating:
    """How the returns to use of the main analysis are dated, and the midpoint rule as a sensitivity analysis.

    Attributes
    ----------
    counts:
        ``n_event`` (returns to use), ``by_relapse_date`` (dated by the follow-up's ``relapse_date``),
        ``by_visit`` (no relapse date: dated by the assessment at which use was reported; interval-censored
        between the previous assessment and that one), ``by_dropout`` (a dropout status counted as the event).
    medians:
        One row per rule (:data:`DATED_AS_RECORDED`, :data:`DATED_MIDPOINT`): ``rule``, ``n``, ``n_event``,
        ``estimate`` (median days), ``ci_low``, ``ci_high``.
    milestones:
        ``rule``, ``day``, ``estimate``, ``se``, ``ci_low``, ``ci_high``, ``n_risk``.
    mostly_by_visit:
        True when more than half of the events are dated by visit (the milestones then lean on visit days).
    turnbull:
        The Turnbull estimate (:func:`analytics.engines.turnbull.turnbull`) whose median and milestones are the
        :data:`DATED_TURNBULL` rows of ``medians`` and ``milestones`` (no CI: it would need a bootstrap); None when
        it could not be computed.
    """

    counts: dict[str, int]
    medians: pd.DataFrame
    milestones: pd.DataFrame
    curves: SurvivalCurves
    mostly_by_visit: bool
    notes: tuple[str, ...] = ()
    turnbull: TurnbullFit | None = None


@per_cohort
def event_dating(cohort: Cohort, *, conf_level: float = 0.95,
                 milestones: Sequence[float] = DEFAULT_MILESTONES) -> EventDating:
    """Count events dated by ``relapse_date`` and by visit; KM median and milestones as recorded and under the
    midpoint rule.

    Returns
    -------
    EventDating
        ``counts``, ``medians`` (rule, n, n_event, estimate, ci_low, ci_high), ``milestones``.

    Notes
    -----
    A return to use reported at an assessment without a ``relapse_date`` happened after the previous assessment
    (day 0 for the first) and on or before this one: it is interval-censored. The main analysis dates it at the
    interval's right end (the visit), which makes the curve step down on visit days and leans late. The midpoint
    rule dates it halfway (single midpoint imputation; Law & Brookmeyer 1992): a sensitivity analysis, not a
    correction -- its CIs are too narrow. The Turnbull estimate (:data:`DATED_TURNBULL`; Turnbull 1976) uses the
    intervals as they are: the nonparametric maximum-likelihood estimate for interval-censored times, with events
    dated by ``relapse_date`` (or a dropout status) exact and patients without return to use right-censored; its
    median and milestones are added to ``medians`` and ``milestones`` without CIs (the ``n_risk`` of its milestone
    rows is that of the main analysis, used only to suppress estimates read where few patients remain).
    """
    pts = cohort.patients[cohort.patients["has_followup"].to_numpy(bool)]
    if pts.empty:
        raise InsufficientData("No patient has a follow-up assessment yet (0 patients with follow-up), so there are "
                               "no returns to use to date. Upload the follow-ups export or widen the date range.")
    t = pts[TIME].to_numpy(float)
    e = pts[EVENT].to_numpy(bool)
    dated = pts["event_dated_by"].astype("string").fillna("").to_numpy(object)
    visit = e & (dated == "visit")
    start = pts["event_interval_start_days"].to_numpy(float)
    mid = t.copy()
    mid[visit] = (np.nan_to_num(start[visit], nan=0.0) + t[visit]) / 2
    counts = {"n_event": int(e.sum()), "by_relapse_date": int((e & (dated == "relapse_date")).sum()),
              "by_visit": int(visit.sum()), "by_dropout": int((e & (dated == "dropout")).sum())}
    mostly = counts["n_event"] > 0 and 2 * counts["by_visit"] > counts["n_event"]
    notes = [SENSITIVITY_METHOD,
             f"Returns to use: {note_n(counts['n_event'])}; dated by the follow-up's relapse date: "
             f"{note_n(counts['by_relapse_date'])}; dated by the assessment at which use was reported (no relapse "
             f"date, so the return happened between the previous assessment and that one): "
             f"{note_n(counts['by_visit'])}"
             + (f"; a dropout status counted as the event: {note_n(counts['by_dropout'])}" if counts["by_dropout"]
                else "") + ".",
             f"'{DATED_MIDPOINT}': each return to use dated by visit is moved to halfway between the previous "
             "assessment (day 0 for the first) and that visit (single midpoint imputation, a sensitivity analysis: "
             "its CIs are too narrow). The main analysis dates it at the visit."]
    if mostly:
        notes.append("Most returns to use are dated by visit: the main curve steps down on visit days, so its "
                     "median and milestones are read off visit-day steps and lean late; read them beside the "
                     "midpoint rule.")
    settings = cohort.settings
    curves = _rule_curves([(DATED_AS_RECORDED, t, e), (DATED_MIDPOINT, mid, e)], col="event dating", notes=notes,
                          conf_level=conf_level, milestones=milestones,
                          min_cell=settings.min_cell if settings.suppress else None)
    med = curves.medians.rename(columns={"group": "rule"})[["rule", "n", "n_event", "estimate", "ci_low", "ci_high"]]
    ms = curves.milestones.rename(columns={"group": "rule"})
    notes = list(curves.notes)
    fit = None
    try:
        fit = _turnbull_of(t, e, visit, start)
    except OutcomesError as err:
        notes.append(f"The Turnbull estimate could not be computed: {err}")
    if fit is not None:
        med, ms = _with_turnbull_rows(fit, med, ms, n=len(t), n_event=int(e.sum()))
        notes.append(f"'{DATED_TURNBULL}': Turnbull's nonparametric maximum-likelihood estimate for interval-censored "
                     "times (the estimate R's survfit gives for Surv(left, right, type = 'interval2')): each return "
                     "to use dated by visit is only known to lie between the previous assessment and that visit, and "
                     "the estimate uses exactly that, without choosing a day; returns dated by a relapse date are "
                     "exact, patients without return to use censored at their last assessment. Within an interval "
                     "the estimate cannot say when the returns happened; its steps are drawn at the interval "
                     "midpoints (as R does). No confidence interval is shown (it would need a bootstrap)."
                     + ("" if fit.converged else " The estimate did not converge; treat it with caution."))
    return EventDating(counts=counts, medians=med, milestones=ms, curves=curves, mostly_by_visit=bool(mostly),
                       notes=tuple(notes), turnbull=fit)


def _turnbull_of(t: np.ndarray, e: np.ndarray, visit: np.ndarray, start: np.ndarray) -> TurnbullFit:
    """Turnbull NPMLE of the main analysis' times: ``(previous assessment, visit]`` for events dated by visit,
    exact for other events, right-censored at ``t`` without an event."""
    left = np.where(visit, np.nan_to_num(start, nan=0.0), t)
    left = np.where(visit & (left >= t), t, left)  # a previous assessment on the same day: the day is known
    right = np.where(e, t, np.inf)
    return turnbull(left, right)


def _with_turnbull_rows(fit: TurnbullFit, med: pd.DataFrame, ms: pd.DataFrame, *, n: int,
                        n_event: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``medians`` and ``milestones`` with the Turnbull rows added (estimates without CIs)."""
    median = fit.median()
    row = pd.DataFrame([{"rule": DATED_TURNBULL, "n": n, "n_event": n_event,
                         "estimate": np.nan if median is None else median, "ci_low": np.nan, "ci_high": np.nan}])
    main = ms[ms["rule"] == DATED_AS_RECORDED]
    days = main["day"].to_numpy(float)
    extra = main.assign(rule=DATED_TURNBULL, estimate=fit.survival(days), se=np.nan, ci_low=np.nan, ci_high=np.nan)
    return (pd.concat([med, row.astype(med.dtypes.to_dict())], ignore_index=True),
            pd.concat([ms, extra], ignore_index=True))


# ----------------------------------------------------------------------------------------------------
# The --reference option
# ----------------------------------------------------------------------------------------------------

def check_reference(cohort: Cohort, *, by: str | None, reference: str | None) -> str | None:
    """The reference level that ``--reference`` names, spelled as in the data; None without one.

    A level is matched exactly, else ignoring case and surrounding spaces when that picks one group.

    Raises
    ------
    UnusableExport
        ``reference`` without ``by``; a level that names no group (the message lists the groups, marking those too
        small to compare); a group with fewer than :data:`MIN_GROUP_PATIENTS` patients with follow-up (left out of
        every comparison, so it cannot be the reference).
    """
    if reference is None:
        return None
    if by is None:
        raise UnusableExport(f"--reference {reference!r} needs --by: it names a level of the grouping column (e.g. "
                             f"--by program --reference {reference!r}). Add --by or drop --reference.")
    try:
        data = _grouped(cohort, by, what="compare groups")
    except InsufficientData:
        return reference  # no groups at all: the survival section says why (null, with its sentence)
    sizes = dict(zip(data.groups, np.bincount(data.code, minlength=len(data.groups)).tolist()))
    col = str(data.col)
    usable = [g for g in data.groups if sizes[g] >= MIN_GROUP_PATIENTS]
    small = [g for g in data.groups if sizes[g] < MIN_GROUP_PATIENTS]
    found = reference if reference in sizes else None
    if found is None:
        folded = [g for g in data.groups if g.strip().casefold() == reference.strip().casefold()]
        found = folded[0] if len(folded) == 1 else None
    if found is None:
        listed = ", ".join(repr(g) for g in data.groups)
        tiny = (f" ({', '.join(repr(g) for g in small)}: fewer than {note_below(MIN_GROUP_PATIENTS)} patients with "
                "follow-up, too small to compare)") if small else ""
        raise UnusableExport(f"--reference {reference!r} names no {col} group. The {col} groups are: {listed}{tiny}. "
                             "Pick one of them, spelled as listed.")
    if found in small:
        raise UnusableExport(
            f"--reference {reference!r} is a {col} group, but it has fewer than {note_below(MIN_GROUP_PATIENTS)} "
            "patients with follow-up, so it is left out of the comparison and cannot be the reference. "
            + (f"Pick one of: {', '.join(repr(g) for g in usable)}." if usable
               else "No group is large enough to compare; drop --reference."))
    return found


# ----------------------------------------------------------------------------------------------------
# JSON (cli.md `cohort` and `survival` sections)
# ----------------------------------------------------------------------------------------------------

def cohort_json(cohort: Cohort) -> dict[str, int]:
    """The cli.md ``cohort`` section: ``patients``, ``with_followup``, ``events``, ``censored``."""
    pts = cohort.patients
    fu = pts["has_followup"].to_numpy(bool) if len(pts) else np.zeros(0, dtype=bool)
    events = int(pts[EVENT].to_numpy(bool)[fu].sum()) if len(pts) else 0
    return {"patients": len(pts), "with_followup": int(fu.sum()), "events": events,
            "censored": int(fu.sum()) - events}


def survival_json(cohort: Cohort, *, by: str | None = None, reference: str | None = None,
                  adjust: Sequence[str] = ()) -> dict[str, Any]:
    """The cli.md ``survival`` section: ``groups`` (with ``km`` rows), ``logrank`` and ``cox``.

    Without ``by`` there is one group, ``"all"``, and ``logrank`` and ``cox`` are None. Numbers are plain
    Python floats and ints; None where not estimable (never NaN). ``cox`` is None when the notes of
    :func:`compare_groups` say the model could not be fitted; ``logrank`` and ``cox`` are None when the groups
    cannot be compared at all (the curves are kept). Counts are not suppressed here: the caller applies the
    small-cell rule to the whole output. :func:`survival_section` also returns why a part is missing.

    Raises
    ------
    InsufficientData
        As :func:`relapse_curves`.
    """
    return survival_section(cohort, by=by, reference=reference, adjust=adjust)[0]


def survival_section(cohort: Cohort, *, by: str | None = None, reference: str | None = None,
                     adjust: Sequence[str] = ()) -> tuple[dict[str, Any], list[str]]:
    """:func:`survival_json` and the sentences that explain each missing part (a null median, log-rank or Cox
    model, a group left out of the comparison), for stderr of ``kap-outcomes analyze``.

    When the group comparison fails (e.g. fewer than two groups large enough, or no return to use yet) the
    Kaplan–Meier curves per group are kept and ``logrank`` and ``cox`` are None.
    """
    curves = relapse_curves(cohort, by=by)
    reasons: list[str] = []
    groups = []
    for row in curves.medians.itertuples(index=False):
        km = curves.table[curves.table["group"] == row.group]
        groups.append({
            "group": str(row.group), "n": int(row.n), "events": int(row.n_event),
            "median_days": _num(row.estimate), "median_lower": _num(row.ci_low), "median_upper": _num(row.ci_high),
            "km": [{"time": float(d), "survival": float(s), "lower": _num(lo), "upper": _num(hi), "at_risk": int(n)}
                   for d, s, lo, hi, n in zip(km["day"], km["estimate"], km["ci_low"], km["ci_high"], km["n_risk"])],
        })
    not_reached = [str(g) for g, m in zip(curves.medians["group"], curves.medians["estimate"]) if not np.isfinite(m)]
    if not_reached:
        reasons.append(f"survival: median_days is null for {', '.join(not_reached)}: fewer than half had returned "
                       "to use by the last follow-up (median not reached).")
    out: dict[str, Any] = {"groups": groups, "logrank": None, "cox": None}
    if by is None:  # one curve by design (cli.md): nothing to explain
        return out, reasons
    try:
        cmp = compare_groups(cohort, by=by, reference=reference, adjust=adjust)
    except OutcomesError as err:
        reasons.append(f"survival: logrank and cox are null (the Kaplan–Meier curves per group are kept): {err}")
        return out, reasons
    lr = cmp.logrank
    out["logrank"] = {"chisq": _num(lr.chisq), "df": int(lr.df), "p": _num(lr.p)}
    reasons += [f"survival: {n}" for n in cmp.notes if n.startswith("Left out of the comparison")]
    if cmp.hazard_ratios is not None:
        out["cox"] = {
            "reference": cmp.reference, "ties": "efron",
            "terms": [{"term": str(r.term), "level": str(r.level), "coef": _num(r.coef), "se": _num(r.se),
                       "hr": _num(r.estimate), "hr_lower": _num(r.ci_low), "hr_upper": _num(r.ci_high),
                       "p": _num(r.p)} for r in cmp.hazard_ratios.itertuples(index=False)],
            "ph_test": {"p": _num(cmp.ph_test.iloc[-1]["p"]) if cmp.ph_test is not None else None},
        }
    else:
        why = [n for n in cmp.notes if n.startswith("No hazard ratio")] or ["the Cox model could not be fitted."]
        reasons.append("survival: cox is null: " + " ".join(why))
    return out, reasons
