"""Quality improvement: KPIs with period-over-period change, patient flow, control charts, funnel plots and the
list of patients needing attention.

Definitions shared by every function here (each a field of :class:`KpiOptions`; day 0 = first ketamine session):

* **Data end date** (``as_of``): the latest session or assessment date in the exports unless given.
* **Induction completion**: at least ``induction_sessions`` ketamine sessions on distinct dates within the first
  ``induction_window_days`` days (days 0 … ``induction_window_days`` − 1; 28 → days 0–27, i.e. weekly sessions on
  days 0, 7, 14, 21 complete). Assessable once that last day has passed.
* **Follow-up completion at day T** (T = 30, 90, 180): a follow-up assessment (a row of the follow-ups export)
  on days T − w … T + w, with w from ``followup_tolerance_days`` (default ±14, ±21, ±30). Assessable once day
  T + w has passed: a patient whose window is still open is neither a success nor a failure.
* **Abstinence at day 90** (completers): among patients whose status at day 90 is known, the share without return
  to use by day 90. Known = return to use observed on or before day 90 (``days_to_event`` ≤ 90, with the cohort's
  relapse definition), or an assessment on or after day 90 − w (w of the 90-day follow-up window). Patients lost
  before that are left out (``excluded``), so the figure is optimistic when drop-outs relapse more; the
  Kaplan–Meier estimate on the survival page handles censoring.
* **PHQ-9 response at 4 weeks**: among patients with baseline PHQ-9 ≥ ``phq9_min_baseline`` (default 10, the
  usual cut-off for clinically relevant depression; a 50 % drop from a low score is noise) and a PHQ-9 on days
  14–42, the share whose score closest to day 28 (later one on ties) is ≤ 50 % of baseline.
* **Adverse events per 100 sessions**: adverse events listed on ketamine sessions (each type once per session)
  per 100 ketamine sessions, exact Poisson interval. Control and funnel charts use the binomial share of
  sessions with at least one event instead.
* **Assignment to a period or month** (``assign_by``): ``"due"`` (default) puts a patient in the period in which
  the measure fell due (induction: the window's last day; follow-up: day T; abstinence: day 90; PHQ-9:
  day 28), so the latest quarter shows how this quarter's due work went. ``"start"`` groups by index date
  (treatment-start cohorts). Sessions go by session date; starters by index date.

* **Control-chart points** (``interval``): months, or quarters when the small-cell rule is on and most months
  with data have a denominator from 1 to ``min_cell - 1`` (their points would not be drawn); the chart says so.

Intervals: Wilson for proportions; exact (Garwood) Poisson for counts and rates; Newcombe's hybrid score
interval for differences of proportions (Newcombe 1998, method 10); Wald for differences of rates and counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from analytics.engines.intervals import poisson_exact_ci, wilson_ci
from analytics.errors import InsufficientData, OutcomesError
from analytics.outcomes import response as rsp
from analytics.outcomes.cohort import Cohort, early_dropouts, id_positions, ids_in
from analytics.outcomes.memo import once, per_cohort
from analytics.outcomes.safety import VitalThresholds, session_safety_flags
from analytics.outcomes.settings import DropoutRule
from analytics.privacy.counts import note_n
from schemas.arrow import text_map

if TYPE_CHECKING:
    from schemas.frames import ValidatedExports

DateLike = date | pd.Timestamp | str
Period = tuple[DateLike, DateLike]
FOLLOWUP_TARGETS = (30, 90, 180)
PATIENT_KPIS = ("induction_completion", "followup_30", "followup_90", "followup_180", "abstinence_90",
                "phq9_response_4w")
KPI_ORDER = ("patients_started", *PATIENT_KPIS, "ae_rate")
SPC_KPIS = (*PATIENT_KPIS, "ae_rate", "ae_sessions")


def _ts(value: DateLike) -> pd.Timestamp:
    return pd.Timestamp(value).normalize()


def _period(value: Period, name: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    start, end = _ts(value[0]), _ts(value[1])
    if end < start:
        raise OutcomesError(f"{name} ends ({end:%Y-%m-%d}) before it starts ({start:%Y-%m-%d}). "
                            "Swap the two dates.")
    return start, end


# ---------------------------------------------------------------------------------------------------------------
# Definitions


def _stats():  # noqa: ANN202 - scipy.stats, imported when a funnel or chart needs it (analyze never does)
    from scipy import stats

    return stats


@dataclass(frozen=True)
class KpiOptions:
    """Every definition behind the KPIs, control charts and funnel plots (see the module docstring).

    ``followup_tolerance_days`` holds ``(target_day, ± days)`` pairs; a day not listed uses ± 14 days.
    """

    induction_sessions: int = 4
    induction_window_days: int = 28
    followup_tolerance_days: tuple[tuple[int, int], ...] = ((30, 14), (90, 21), (180, 30))
    abstinence_day: int = 90
    phq9_day: int = 28
    phq9_tolerance_days: int = 14
    phq9_min_baseline: float = 10
    assign_by: Literal["due", "start"] = "due"

    def tolerance(self, target_day: int) -> int:
        return dict(self.followup_tolerance_days).get(target_day, 14)

    def with_(self, **changes: object) -> KpiOptions:
        return replace(self, **changes)  # type: ignore[arg-type]


def kpi_label(kpi: str, options: KpiOptions | None = None) -> str:
    """Short title of a KPI for tiles, axes and tables."""
    o = options or KpiOptions()
    labels = {
        "patients_started": "Patients starting treatment",
        "induction_completion": "Induction completed (per program/route protocol)",
        "followup_30": "Follow-up done at 30 days", "followup_90": "Follow-up done at 90 days",
        "followup_180": "Follow-up done at 180 days",
        "abstinence_90": f"No return to use by day {o.abstinence_day}",
        "phq9_response_4w": f"PHQ-9 response at {o.phq9_day // 7} weeks",
        "ae_rate": "Adverse events per 100 ketamine sessions",
        "ae_sessions": "Ketamine sessions with an adverse event",
    }
    if kpi not in labels:
        raise ValueError(f"Unknown KPI {kpi!r}; choose one of {', '.join(labels)}.")
    return labels[kpi]


def _protocols_text(o: KpiOptions) -> str:
    from analytics.outcomes.protocols import DEFAULT_INDUCTION_PROTOCOLS, describe_protocols, with_default

    return describe_protocols(with_default(DEFAULT_INDUCTION_PROTOCOLS, o.induction_sessions,
                                           o.induction_window_days))


def kpi_definition(kpi: str, options: KpiOptions | None = None) -> str:
    """One plain sentence defining a KPI under the given options (shown beside every tile and chart)."""
    o = options or KpiOptions()
    due = ("counted in the period in which it fell due" if o.assign_by == "due"
           else "counted in the period of the patient's first ketamine session")
    if kpi.startswith("followup_"):
        t = int(kpi.split("_")[1])
        w = o.tolerance(t)
        return (f"Patients with a follow-up assessment on days {t - w}–{t + w} after the first ketamine session, "
                f"among patients whose day {t + w} has passed; {due}.")
    d, w = o.abstinence_day, o.tolerance(o.abstinence_day)
    text = {
        "patients_started": "Patients whose first ketamine session falls in the period (exact Poisson interval).",
        "induction_completion": _protocols_text(o).rstrip(".") + "; among patients whose protocol window has "
                                "passed; " + due + ".",
        "abstinence_90": f"Patients without return to use by day {d}, among those whose status at day {d} is known "
                         f"(return to use by day {d}, or an assessment on or after day {d - w}); patients lost "
                         f"earlier are left out (completers); {due}.",
        "phq9_response_4w": f"Patients whose PHQ-9 closest to day {o.phq9_day} (days {o.phq9_day - o.phq9_tolerance_days}"
                            f"–{o.phq9_day + o.phq9_tolerance_days}) is at most half their baseline, among patients "
                            f"with baseline PHQ-9 ≥ {o.phq9_min_baseline:g} and such a score; {due}.",
        "ae_rate": "Adverse events listed on ketamine sessions (each type once per session) per 100 ketamine "
                   "sessions in the period (exact Poisson interval). Sessions without an entry count as without "
                   "an event.",
        "ae_sessions": "Share of ketamine sessions with at least one adverse event listed.",
    }
    if kpi not in text:
        raise ValueError(f"Unknown KPI {kpi!r}; choose one of {', '.join(KPI_ORDER)}.")
    return text[kpi]


# ---------------------------------------------------------------------------------------------------------------
# Patient- and session-level outcome frames


def _distinct_ket_days(cohort: Cohort, first_days: int) -> pd.Series:
    """Distinct ketamine session dates per patient on days 0 … first_days − 1."""
    s = cohort.sessions
    ket = s[(s["session_type"] == "ketamine") & (s["days"] >= 0) & (s["days"] < first_days)]
    return ket.groupby("patient_id")["session_date"].nunique()


def patient_kpi_frame(cohort: Cohort, kpi: str, *, options: KpiOptions | None = None,
                      as_of: DateLike | None = None) -> pd.DataFrame:
    """Per patient: whether a patient-level KPI is assessable, counted, and met.

    Returns
    -------
    pandas.DataFrame
        ``patient_id``, ``site``, ``clinician``, ``index_date``, ``due_date`` (day the measure falls due),
        ``close_date`` (day its window closes), ``date`` (the date used to assign a period: due or index date),
        ``assessable`` (window closed by ``as_of``), ``counted`` (in the denominator: assessable and status
        known), ``success`` (in the numerator), ``reason`` (why not counted, else empty).
    """
    o = options or KpiOptions(phq9_min_baseline=cohort.settings.phq9_min_baseline)
    if kpi not in PATIENT_KPIS:
        raise ValueError(f"Unknown patient-level KPI {kpi!r}; choose one of {', '.join(PATIENT_KPIS)}.")
    end = _ts(as_of) if as_of is not None else cohort.data_end_date()
    # tiles, control charts and funnels all ask for the same frames: computed once per cohort, KPI and options
    frame = once(cohort, ("qi", "patient kpi frame", kpi, o, end), lambda: _patient_kpi_frame(cohort, kpi, o, end))
    return frame.copy(deep=False)  # copy-on-write: the caller's changes never reach the kept frame


def _patient_kpi_frame(cohort: Cohort, kpi: str, o: KpiOptions, end: pd.Timestamp) -> pd.DataFrame:
    p = cohort.patients
    ids = p["patient_id"]
    out = pd.DataFrame({"patient_id": ids, "site": p["site"], "clinician": p["clinician"],
                        "index_date": p["index_date"]})
    known = pd.Series(True, index=p.index)
    success = pd.Series(False, index=p.index)
    reason_unknown = ""
    if kpi == "induction_completion":  # per program/route protocol; these options set the default protocol
        from analytics.outcomes.protocols import induction_completed, with_default
        table = with_default(cohort.settings.induction_protocols, o.induction_sessions, o.induction_window_days)
        ind = induction_completed(cohort, table, as_of=end).set_axis(p.index)
        due_day = close_day = ind["window_days"] - 1
        success = ind["completed"]
    elif kpi.startswith("followup_"):
        due_day = int(kpi.split("_")[1])
        w = o.tolerance(due_day)
        close_day = due_day + w
        fu = cohort.followups
        hit = fu.loc[(fu["days"] >= due_day - w) & (fu["days"] <= due_day + w), "patient_id"]
        success = ids_in(ids, hit)
    elif kpi == "abstinence_90":
        due_day = o.abstinence_day
        w = o.tolerance(due_day)
        close_day = due_day + w
        event_by = p["relapsed"].astype(bool) & (p["days_to_event"] <= due_day)
        last_day = text_map(ids, cohort.followups.groupby("patient_id")["days"].max())
        followed = last_day >= due_day - w
        known = event_by | followed.fillna(False)
        success = known & ~event_by
        reason_unknown = f"no assessment on or after day {due_day - w} and no return to use by day {due_day}"
    else:  # phq9_response_4w
        due_day = o.phq9_day
        w = o.phq9_tolerance_days
        close_day = due_day + w
        m = cohort.measures
        m = m[(m["measure"] == "phq9") & (m["days"] >= due_day - w) & (m["days"] <= due_day + w)].copy()
        m["dist"] = (m["days"] - due_day).abs()
        m = m.sort_values(["patient_id", "dist", "days"], ascending=[True, True, False])
        score = text_map(ids, m.drop_duplicates("patient_id").set_index("patient_id")["value"])
        base = p["baseline_phq9"].astype(float)
        base_ok = pd.Series(rsp.assessable(base, o.phq9_min_baseline), index=base.index)
        known = base_ok & score.notna()
        success = known & rsp.is_response(score, base)  # the one definition: analytics.outcomes.response
        reason_unknown = (f"baseline PHQ-9 missing or below {o.phq9_min_baseline:g}, or no PHQ-9 on days "
                          f"{due_day - w}–{due_day + w}")
    out["due_date"] = p["index_date"] + pd.to_timedelta(due_day, unit="D")
    out["close_date"] = p["index_date"] + pd.to_timedelta(close_day, unit="D")
    out["date"] = out["due_date"] if o.assign_by == "due" else out["index_date"]
    out["assessable"] = out["close_date"] <= end
    out["counted"] = out["assessable"] & known.astype(bool)
    out["success"] = out["counted"] & success.astype(bool)
    out["reason"] = np.where(~out["assessable"], f"window still open on {end:%Y-%m-%d}",
                             np.where(~out["counted"], reason_unknown, ""))
    return out.reset_index(drop=True)


AE_NOT_RECORDED = ("Adverse events per 100 sessions: not recorded in this export (no session lists an adverse event, "
                   "or the file has no adverse_events column), so no rate is shown; it is not 0.")


def _session_frame(cohort: Cohort) -> pd.DataFrame:
    flags = session_safety_flags(cohort)
    return flags[["patient_id", "session_date", "route", "site", "clinician", "has_ae", "n_events"]].rename(
        columns={"session_date": "date"})


# ---------------------------------------------------------------------------------------------------------------
# KPIs


@dataclass(frozen=True)
class KpiTable:
    """KPIs for two periods and their change.

    Attributes
    ----------
    table:
        One row per (``kpi``, ``period``): ``kpi``, ``label``, ``period`` (``"a"``/``"b"``), ``period_start``,
        ``period_end``, ``numerator``, ``denominator`` (NaN for the count of starters), ``estimate``
        (proportion 0–1; count for ``patients_started``; events per 100 sessions for ``ae_rate``), ``ci_low``,
        ``ci_high``, ``scale`` (``"count"``, ``"proportion"``, ``"per_100_sessions"``), ``not_yet_assessable``
        (patients whose window was still open at ``as_of``), ``excluded`` (assessable, status unknown),
        ``definition``.
    changes:
        One row per KPI: ``kpi``, ``label``, ``scale``, ``estimate_a``, ``estimate_b``, ``change`` (b − a, on
        the KPI's scale), ``ci_low``, ``ci_high``, ``method``.
    """

    table: pd.DataFrame
    changes: pd.DataFrame
    period_a: tuple[pd.Timestamp, pd.Timestamp]
    period_b: tuple[pd.Timestamp, pd.Timestamp]
    as_of: pd.Timestamp
    options: KpiOptions
    conf_level: float
    notes: tuple[str, ...] = ()


def default_periods(cohort: Cohort, *, as_of: DateLike | None = None) -> tuple[tuple[date, date], tuple[date, date]]:
    """``(previous quarter, last complete quarter)`` relative to the data's end date.

    A quarter is complete when the end date is on or after its last day. Use as ``period_a``, ``period_b``.
    """
    end = _ts(as_of) if as_of is not None else cohort.data_end_date()
    q = end.to_period("Q")
    last = q if end >= q.end_time.normalize() else q - 1
    prev = last - 1
    return ((prev.start_time.date(), prev.end_time.normalize().date()),
            (last.start_time.date(), last.end_time.normalize().date()))


def newcombe_ci(xa: float, na: float, xb: float, nb: float, *, conf_level: float = 0.95) -> tuple[float, float]:
    """Newcombe (1998, method 10) hybrid score interval for p_b − p_a = xb/nb − xa/na, from Wilson limits."""
    if not (na > 0 and nb > 0):
        return math.nan, math.nan
    (la,), (ua,) = wilson_ci(xa, na, conf_level)
    (lb,), (ub,) = wilson_ci(xb, nb, conf_level)
    pa, pb = xa / na, xb / nb
    d = pb - pa
    return d - math.sqrt((pb - lb) ** 2 + (ua - pa) ** 2), d + math.sqrt((ub - pb) ** 2 + (pa - la) ** 2)


@per_cohort
def kpis(cohort: Cohort, *, period_a: Period, period_b: Period, induction_sessions: int | None = None,
         induction_window_days: int | None = None, options: KpiOptions | None = None,
         as_of: DateLike | None = None, conf_level: float = 0.95) -> KpiTable:
    """The overview tiles: each KPI in two periods, with numerator, denominator, CI and the change b − a.

    Parameters
    ----------
    cohort:
        The analysis cohort (already filtered by the global filters).
    period_a, period_b:
        ``(start, end)`` dates, inclusive; usually ``default_periods(cohort)`` (a = previous quarter,
        b = last complete quarter).
    induction_sessions, induction_window_days:
        Shortcuts that replace the corresponding :class:`KpiOptions` fields (defaults 4 sessions in 28 days).
    options:
        All other definitions; see the module docstring.
    as_of:
        The data's end date (default: latest date in the exports). Windows that close after it are not counted.
    conf_level:
        Confidence level of every interval.

    Returns
    -------
    KpiTable
        ``table`` and ``changes`` (columns listed on :class:`KpiTable`).

    Notes
    -----
    Wilson intervals for proportions, exact Poisson for counts and rates, Newcombe hybrid score for differences
    of proportions, Wald for differences of rates and counts.
    """
    o = options or KpiOptions()
    if induction_sessions is not None:
        o = o.with_(induction_sessions=induction_sessions)
    if induction_window_days is not None:
        o = o.with_(induction_window_days=induction_window_days)
    pa, pb = _period(period_a, "Period A"), _period(period_b, "Period B")
    end = _ts(as_of) if as_of is not None else cohort.data_end_date()
    z = float(_stats().norm.ppf(0.5 + conf_level / 2))
    rows: list[dict[str, object]] = []
    frames = {k: patient_kpi_frame(cohort, k, options=o, as_of=end) for k in PATIENT_KPIS}
    sessions = _session_frame(cohort)
    idx = cohort.patients["index_date"]
    for name, (start, stop) in (("a", pa), ("b", pb)):
        base = {"period": name, "period_start": start, "period_end": stop}
        n_start = int(((idx >= start) & (idx <= stop)).sum())
        (lo,), (hi,) = poisson_exact_ci(n_start, 1, conf_level)
        rows.append({**base, "kpi": "patients_started", "numerator": n_start, "denominator": np.nan,
                     "estimate": float(n_start), "ci_low": lo, "ci_high": hi, "scale": "count",
                     "not_yet_assessable": 0, "excluded": 0})
        for k, f in frames.items():
            inp = f[(f["date"] >= start) & (f["date"] <= stop)]
            num, den = int(inp["success"].sum()), int(inp["counted"].sum())
            (lo,), (hi,) = wilson_ci(num, den, conf_level)
            rows.append({**base, "kpi": k, "numerator": num, "denominator": den,
                         "estimate": num / den if den else np.nan, "ci_low": lo, "ci_high": hi,
                         "scale": "proportion", "not_yet_assessable": int((~inp["assessable"]).sum()),
                         "excluded": int((inp["assessable"] & ~inp["counted"]).sum())})
        ses = sessions[(sessions["date"] >= start) & (sessions["date"] <= stop)]
        ev, n = int(ses["n_events"].sum()), len(ses)
        (lo,), (hi,) = poisson_exact_ci(ev, n, conf_level)
        rows.append({**base, "kpi": "ae_rate", "numerator": ev, "denominator": n,
                     "estimate": 100 * ev / n if n else np.nan, "ci_low": 100 * lo, "ci_high": 100 * hi,
                     "scale": "per_100_sessions", "not_yet_assessable": 0, "excluded": 0})
    table = pd.DataFrame(rows)
    ae_recorded = "adverse_events" in cohort.sessions and bool(cohort.sessions["adverse_events"].notna().any())
    if not ae_recorded:  # no session lists an event: not recorded in this export, never "0 per 100"
        table.loc[table["kpi"] == "ae_rate", ["estimate", "ci_low", "ci_high"]] = np.nan
    table["label"] = table["kpi"].map(lambda k: kpi_label(k, o))
    table["definition"] = table["kpi"].map(lambda k: kpi_definition(k, o))
    table["kpi"] = pd.Categorical(table["kpi"], categories=KPI_ORDER, ordered=True)
    table = table.sort_values(["kpi", "period"], kind="stable").reset_index(drop=True)
    table["kpi"] = table["kpi"].astype(str)
    table = table[["kpi", "label", "period", "period_start", "period_end", "numerator", "denominator", "estimate",
                   "ci_low", "ci_high", "scale", "not_yet_assessable", "excluded", "definition"]]

    changes = []
    for k in KPI_ORDER:
        a = table[(table["kpi"] == k) & (table["period"] == "a")].iloc[0]
        b = table[(table["kpi"] == k) & (table["period"] == "b")].iloc[0]
        diff = b["estimate"] - a["estimate"]
        if a["scale"] == "proportion":
            lo, hi = newcombe_ci(a["numerator"], a["denominator"], b["numerator"], b["denominator"],
                                 conf_level=conf_level)
            method = "difference of proportions, Newcombe hybrid score interval"
        elif a["scale"] == "count":
            se = math.sqrt(a["numerator"] + b["numerator"])
            lo, hi = diff - z * se, diff + z * se
            method = "difference of counts, Wald interval (Poisson variance)"
        else:
            if a["denominator"] > 0 and b["denominator"] > 0:
                se = 100 * math.sqrt(a["numerator"] / a["denominator"] ** 2 + b["numerator"] / b["denominator"] ** 2)
                lo, hi = diff - z * se, diff + z * se
            else:
                lo = hi = math.nan
            method = "difference of rates per 100 sessions, Wald interval (Poisson variance)"
        changes.append({"kpi": k, "label": a["label"], "scale": a["scale"], "estimate_a": a["estimate"],
                        "estimate_b": b["estimate"], "change": diff, "ci_low": lo, "ci_high": hi, "method": method})
    notes = [
        (f"Period A {pa[0]:%Y-%m-%d} to {pa[1]:%Y-%m-%d}; period B {pb[0]:%Y-%m-%d} to {pb[1]:%Y-%m-%d}; data "
         f"end date {end:%Y-%m-%d}. Change = B − A."),
        ("Patients whose measurement window had not closed by the data end date are not counted "
         "(column not_yet_assessable)."),
        ("Intervals: Wilson (proportions), exact Poisson (counts, adverse-event rate), Newcombe (differences of "
         "proportions), Wald (differences of counts and rates). A change whose interval includes 0 is within "
         "what chance alone could produce; the control charts show whether a month is a signal."),
    ]
    if not ae_recorded:
        notes.append(AE_NOT_RECORDED)
    open_b = table[(table["period"] == "b") & (table["not_yet_assessable"] > 0)]
    for _, r in open_b.iterrows():
        notes.append(f"{r['label']}: {note_n(r['not_yet_assessable'])} patients in period B could not be assessed "
                     "yet (window still open).")
    return KpiTable(table=table, changes=pd.DataFrame(changes), period_a=pa, period_b=pb, as_of=end, options=o,
                    conf_level=conf_level, notes=tuple(notes))


# ---------------------------------------------------------------------------------------------------------------
# Patient flow


@dataclass(frozen=True)
class FlowTable:
    """CONSORT-style patient flow.

    Attributes
    ----------
    steps:
        ``step`` (key), ``label``, ``n``, ``unit`` (``"rows"`` or ``"patients"``), ``parent`` (the step this
        one is counted from; empty for the first), ``lost`` (parent's n − n when the units agree, else NaN).
    losses:
        ``step``, ``reason``, ``n``: why units did not reach each step (counted from its parent).
    """

    steps: pd.DataFrame
    losses: pd.DataFrame
    as_of: pd.Timestamp
    notes: tuple[str, ...] = ()


def _rows_lost(quarantined: pd.DataFrame | int | None) -> tuple[int, list[tuple[str, int]], str | None]:
    if quarantined is None:
        return 0, [], None
    if isinstance(quarantined, int | np.integer):
        return int(quarantined), [("quarantined rows", int(quarantined))], None
    q = quarantined
    if q.empty:
        return 0, [], None
    keys = [c for c in ("file", "line") if c in q.columns]
    rows = q.drop_duplicates(keys) if keys else q
    reasons = (q.drop_duplicates([*keys, "reason"]) if keys else q).groupby("reason").size()
    reasons = reasons.sort_values(ascending=False)
    note = None
    if reasons.sum() > len(rows):
        note = "Some quarantined rows had several problems; each problem is listed, so reasons add up to more rows."
    return len(rows), [(str(r), int(n)) for r, n in reasons.items()], note


def load_flow(cohort: Cohort, exports: ValidatedExports | None) -> FlowTable:
    """The Overview's patient flow of the load ``cohort`` came from (``exports``: that load's accepted data, for its
    rows read and set aside; None: from the cohort's patients on), computed once and kept with the cohort: the
    page and the background warm-up (:mod:`analytics.outcomes.warmup`) share it."""
    rows = sum(r.rows for r in exports.files.values()) if exports is not None else None
    return once(cohort, ("patient flow of the load", rows), lambda: patient_flow(
        cohort, uploaded_rows=rows, quarantined=exports.issues if exports is not None else None))


@per_cohort
def patient_flow(cohort: Cohort, *, uploaded_rows: int | None = None,
                 quarantined: pd.DataFrame | int | None = None, options: KpiOptions | None = None,
                 as_of: DateLike | None = None, dropout: DropoutRule | None = None) -> FlowTable:
    """Uploaded → valid → started ketamine → baseline measured → reached each follow-up window → analysed.

    Parameters
    ----------
    cohort:
        The analysis cohort.
    uploaded_rows:
        Rows read from all uploaded files (e.g. ``sum(f.rows for f in exports.files.values())``); without it
        the row-level steps are left out.
    quarantined:
        The quarantine report (``ValidatedExports.issues``: ``file``, ``line``, ``reason``…) or a row count.
    options:
        Follow-up windows (:class:`KpiOptions`).
    as_of:
        Data end date (default: latest date in the exports).
    dropout:
        When a patient without any follow-up is an early dropout (:class:`analytics.outcomes.cohort.DropoutRule`).

    Returns
    -------
    FlowTable
        ``steps`` (``step``, ``label``, ``n``, ``unit``, ``parent``, ``lost``) and ``losses`` (``step``,
        ``reason``, ``n``).

    Notes
    -----
    Row steps count rows of all files; patient steps count patients. Baseline = PHQ-9 on or before day 0 (at
    most ``baseline_window_days`` before). Each follow-up window step counts, among patients with a baseline,
    those with a follow-up assessment in the window; the loss splits into "window not reached yet", "recorded as
    lost to follow-up / withdrew" and "no assessment in the window". "Analysed" steps: time to return to use
    (at least one follow-up; from all starters; its loss splits into early dropouts -- no follow-up although the
    first follow-up window has closed -- and "no follow-up yet") and PHQ-9 course (baseline and a later PHQ-9).
    """
    o = options or KpiOptions()
    end = _ts(as_of) if as_of is not None else cohort.data_end_date()
    steps: list[dict[str, object]] = []
    losses: list[dict[str, object]] = []
    notes: list[str] = []
    p = cohort.patients
    no_ket = int(cohort.exclusions.get("patients with sessions but no ketamine session", 0))
    if uploaded_rows is not None:
        n_lost, reasons, note = _rows_lost(quarantined)
        steps.append({"step": "uploaded", "label": "Rows uploaded", "n": int(uploaded_rows), "unit": "rows",
                      "parent": ""})
        steps.append({"step": "valid", "label": "Rows accepted", "n": int(uploaded_rows) - n_lost, "unit": "rows",
                      "parent": "uploaded"})
        losses += [{"step": "valid", "reason": r, "n": n} for r, n in reasons]
        if note:
            notes.append(note)
    steps.append({"step": "patients", "label": "Patients in accepted rows", "n": len(p) + no_ket,
                  "unit": "patients", "parent": "valid" if uploaded_rows is not None else ""})
    steps.append({"step": "started", "label": "Started ketamine", "n": len(p), "unit": "patients",
                  "parent": "patients"})
    if no_ket:
        losses.append({"step": "started", "reason": "no ketamine session in the export", "n": no_ket})
    has_base = p["baseline_phq9"].notna()
    steps.append({"step": "baseline", "label": "Baseline PHQ-9 measured", "n": int(has_base.sum()),
                  "unit": "patients", "parent": "started"})
    if (~has_base).sum():
        losses.append({"step": "baseline", "reason": f"no PHQ-9 in the {cohort.settings.baseline_window_days} days "
                       "up to the first ketamine session", "n": int((~has_base).sum())})
    base_ids = p.loc[has_base, "patient_id"]
    base_index_date = p.loc[has_base, "index_date"]
    fu = cohort.followups
    # each follow-up row's patient as a position among those with a baseline (-1: none), looked up once; a window's
    # patients are then counted per position (hashing each window's ids again took 0.22 s at 200,000 patients, the
    # one look-up 0.06 s)
    at = id_positions(fu["patient_id"], base_ids)
    mine = at >= 0
    at, days = at[mine], fu["days"].to_numpy(dtype=float)[mine]
    dropout_day = np.full(len(base_ids), np.inf)  # each patient's first lost-to-follow-up/withdrew status
    gone = fu["dropout"].to_numpy(dtype=bool)[mine] & ~np.isnan(days)  # groupby's min skipped a missing day
    np.minimum.at(dropout_day, at[gone], days[gone])
    for t in FOLLOWUP_TARGETS:
        w = o.tolerance(t)
        in_window = (days >= t - w) & (days <= t + w)
        reached = np.bincount(at[in_window], minlength=len(base_ids)) > 0
        open_ = (base_index_date + pd.to_timedelta(t + w, unit="D") > end).to_numpy() & ~reached
        dropped = (dropout_day <= t + w) & ~reached & ~open_
        missed = ~reached & ~open_ & ~dropped
        step = f"followup_{t}"
        steps.append({"step": step, "label": f"Follow-up at day {t} (days {t - w}–{t + w})",
                      "n": int(reached.sum()), "unit": "patients", "parent": "baseline"})
        for reason, n in ((f"window not reached by {end:%Y-%m-%d}", open_.sum()),
                          ("recorded as lost to follow-up or withdrew before the window closed", dropped.sum()),
                          ("no assessment in the window", missed.sum())):
            if n:
                losses.append({"step": step, "reason": reason, "n": int(n)})
    surv = int(p["has_followup"].sum())
    steps.append({"step": "analysed_survival", "label": "Analysed: time to return to use", "n": surv,
                  "unit": "patients", "parent": "started"})
    rule = dropout or cohort.settings.dropout_rule
    n_early = int(early_dropouts(cohort, rule, as_of=end).sum())
    if n_early:
        losses.append({"step": "analysed_survival", "n": n_early,
                       "reason": f"early dropout: no follow-up although the first follow-up window closed (day "
                                 f"{rule.closes_day})"})
    if len(p) - surv - n_early:
        losses.append({"step": "analysed_survival", "reason": "no follow-up assessment yet (first window still open)",
                       "n": len(p) - surv - n_early})
    m = cohort.measures
    later = m.loc[(m["measure"] == "phq9") & (m["days"] > 0), "patient_id"]
    traj = ids_in(base_ids, later)
    steps.append({"step": "analysed_phq9", "label": "Analysed: PHQ-9 course", "n": int(traj.sum()),
                  "unit": "patients", "parent": "baseline"})
    if (~traj).sum():
        losses.append({"step": "analysed_phq9", "reason": "no PHQ-9 after the first ketamine session",
                       "n": int((~traj).sum())})
    st = pd.DataFrame(steps)
    by_step = st.set_index("step")
    st["lost"] = [
        (by_step.loc[r.parent, "n"] - r.n) if r.parent and by_step.loc[r.parent, "unit"] == r.unit else np.nan
        for r in st.itertuples()
    ]
    for reason, n in cohort.exclusions.items():
        if reason.startswith("follow-ups of patients without"):
            notes.append(f"{note_n(n)} follow-up rows belong to patients without a ketamine session and are not "
                         "analysed.")
    notes.append(f"Follow-up windows: {', '.join(f'day {t} ± {o.tolerance(t)}' for t in FOLLOWUP_TARGETS)}; "
                 f"data end date {end:%Y-%m-%d}.")
    if n_early:
        notes.append(rule.describe() + " They are left out of the main time-to-return-to-use analysis (dropout "
                     "censored) and counted as return to use in its sensitivity analysis (dropout = return to use).")
    return FlowTable(steps=st, losses=pd.DataFrame(losses, columns=["step", "reason", "n"]), as_of=end,
                     notes=tuple(notes))


# ---------------------------------------------------------------------------------------------------------------
# Statistical process control


@dataclass(frozen=True)
class ControlChart:
    """A p-chart or Laney p′-chart with run-rule signals.

    Attributes
    ----------
    table:
        One row per plotted point: ``label``, ``numerator``, ``denominator``, ``estimate`` (proportion),
        ``centre``, ``lcl``, ``ucl``, ``sigma`` (binomial standard error at the point's n), ``z``,
        ``outside`` (beyond a limit), ``shift`` (part of a run of ``shift_run`` or more on one side of the centre),
        ``trend`` (part of ``trend_run`` or more points steadily rising or falling), ``signal`` (any of them).
    chart:
        ``"p"`` or ``"p_prime"`` (Laney).
    sigma_z:
        Laney's between-point dispersion: mean moving range of the z-scores / 1.128 (1 = binomial).
    dispersion_chi2, dispersion_df, dispersion_p:
        Pearson over-dispersion test: Σ z² on k − 1 degrees of freedom.
    """

    table: pd.DataFrame
    chart: Literal["p", "p_prime"]
    centre: float
    sigma_z: float
    dispersion_chi2: float
    dispersion_df: int
    dispersion_p: float
    limits_sigma: float
    kpi: str | None = None
    label: str | None = None
    notes: tuple[str, ...] = ()
    interval: Literal["month", "quarter"] = "month"

    @property
    def signals(self) -> pd.DataFrame:
        return self.table[self.table["signal"]]


def _runs(values: np.ndarray) -> list[tuple[int, int, int]]:
    """(start, stop, value) of maximal runs of equal values; stop exclusive."""
    out = []
    start = 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[start]:
            out.append((start, i, int(values[start])))
            start = i
    return out


def run_rules(estimate: Sequence[float], centre: float | Sequence[float], *, shift_run: int = 8,
              trend_run: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Shift and trend signals per point.

    Shift: ``shift_run`` or more consecutive points on the same side of the centre line (a point exactly on the
    line ends a run). Trend: ``trend_run`` or more consecutive points each higher (or each lower) than the one
    before (a tie ends it). Every point of a qualifying run is flagged.
    """
    y = np.asarray(estimate, dtype=float)
    c = np.broadcast_to(np.asarray(centre, dtype=float), y.shape)
    side = np.sign(np.where(np.isclose(y, c, rtol=0, atol=1e-12), 0.0, y - c)).astype(int)
    shift = np.zeros(len(y), dtype=bool)
    for a, b, v in _runs(side):
        if v != 0 and b - a >= shift_run:
            shift[a:b] = True
    trend = np.zeros(len(y), dtype=bool)
    if len(y) > 1:
        step = np.sign(np.where(np.isclose(np.diff(y), 0, rtol=0, atol=1e-12), 0.0, np.diff(y))).astype(int)
        for a, b, v in _runs(step):
            if v != 0 and b - a + 1 >= trend_run:
                trend[a:b + 1] = True
    return shift, trend


def p_chart(numerators: Sequence[float], denominators: Sequence[float], *, labels: Sequence[object],
            chart: Literal["auto", "p", "p_prime"] = "auto", sigma: float = 3.0, shift_run: int = 8,
            trend_run: int = 6, alpha: float = 0.05) -> ControlChart:
    """p-chart with limits per point (varying n), or Laney's p′-chart, with run rules.

    Parameters
    ----------
    numerators, denominators:
        Events and opportunities per point (e.g. per month). Points with denominator 0 are dropped (noted).
    labels:
        Point labels (e.g. ``"2025-01"``), same length.
    chart:
        ``"p"``, ``"p_prime"``, or ``"auto"``: p′ when the Pearson over-dispersion test (Σz² on k − 1 df) has
        p < ``alpha`` **and** σz > 1, i.e. when months differ by more than binomial sampling allows, which is
        what large denominators expose; otherwise p.
    sigma:
        Width of the limits in standard errors (3).
    shift_run, trend_run:
        Run-rule lengths (8 on one side; 6 rising/falling).
    alpha:
        Level of the over-dispersion test behind ``chart="auto"``.

    Returns
    -------
    ControlChart
        ``table``: ``label``, ``numerator``, ``denominator``, ``estimate``, ``centre``, ``lcl``, ``ucl``,
        ``sigma``, ``z``, ``outside``, ``shift``, ``trend``, ``signal``.

    Notes
    -----
    p-chart: centre p̄ = Σx/Σn; limits p̄ ± 3·√(p̄(1 − p̄)/nᵢ), clipped to [0, 1]. Laney (2002) p′: zᵢ =
    (pᵢ − p̄)/σᵢ, σz = mean |zᵢ − zᵢ₋₁| / 1.128, limits p̄ ± 3·σᵢ·σz (Laney DB, Quality Engineering
    2002;14:531–7; Mohammed MA et al., BMJ Qual Saf 2013;22:362–8).
    """
    x = np.asarray(numerators, dtype=float)
    n = np.asarray(denominators, dtype=float)
    lab = list(labels)
    if not (len(x) == len(n) == len(lab)):
        raise ValueError(f"numerators, denominators and labels must have the same length (got {len(x)}, {len(n)}, "
                         f"{len(lab)}).")
    if np.any(x < 0) or np.any(x > n):
        raise OutcomesError("A control chart needs 0 ≤ numerator ≤ denominator at every point. Check the "
                            "counts passed in.")
    keep = n > 0
    notes: list[str] = []
    if (~keep).sum():
        notes.append(f"{int((~keep).sum())} points without any patients or sessions are not plotted.")
    x, n = x[keep], n[keep]
    lab = [lab[i] for i in np.flatnonzero(keep)]
    k = len(x)
    if k < 2:
        raise InsufficientData(f"A control chart needs at least 2 months with data (got {k}). Widen the date "
                               "range.")
    pbar = float(x.sum() / n.sum())
    p = x / n
    s = np.sqrt(pbar * (1 - pbar) / n)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(s > 0, (p - pbar) / s, 0.0)
    sigma_z = float(np.mean(np.abs(np.diff(z))) / 1.128)
    chi2 = float(np.sum(z**2))
    disp_p = float(_stats().chi2.sf(chi2, k - 1))
    if chart == "auto":
        used: Literal["p", "p_prime"] = "p_prime" if (disp_p < alpha and sigma_z > 1) else "p"
        rule = (f"Chart chosen automatically: Laney p′ when the over-dispersion test has p < {alpha:g} and σz > 1 "
                f"(here Σz² = {chi2:.1f} on {k - 1} df, p = {disp_p:.3g}; σz = {sigma_z:.2f}).")
        notes.append(rule)
    elif chart in ("p", "p_prime"):
        used = chart
    else:
        raise ValueError(f"chart must be 'auto', 'p' or 'p_prime' (got {chart!r}).")
    width = sigma * s * (sigma_z if used == "p_prime" else 1.0)
    lcl = np.clip(pbar - width, 0.0, 1.0)
    ucl = np.clip(pbar + width, 0.0, 1.0)
    outside = (p > ucl + 1e-12) | (p < lcl - 1e-12)
    shift, trend = run_rules(p, pbar, shift_run=shift_run, trend_run=trend_run)
    table = pd.DataFrame({"label": lab, "numerator": x, "denominator": n, "estimate": p, "centre": pbar,
                          "lcl": lcl, "ucl": ucl, "sigma": s, "z": z, "outside": outside, "shift": shift,
                          "trend": trend})
    table["signal"] = table["outside"] | table["shift"] | table["trend"]
    if used == "p_prime":
        notes.append(f"Laney p′ chart: limits widened by σz = {sigma_z:.2f} for variation between months beyond "
                     "binomial sampling.")
    else:
        notes.append(f"p-chart: {sigma:g}-sigma binomial limits at each month's denominator.")
    notes.append(f"Signals: a point outside the limits; {shift_run} or more in a row on one side of the centre "
                 f"line; {trend_run} or more in a row rising or falling.")
    if k < 12:
        notes.append(f"Only {k} points: treat the limits as provisional (at least 12–20 are usual).")
    return ControlChart(table=table, chart=used, centre=pbar, sigma_z=sigma_z, dispersion_chi2=chi2,
                        dispersion_df=k - 1, dispersion_p=disp_p, limits_sigma=sigma, notes=tuple(notes))


@dataclass(frozen=True)
class MonthlySeries:
    """Monthly (or quarterly) numerators and denominators of one KPI.

    ``table``: ``month`` (first day of the month or quarter), ``label`` (``YYYY-MM``, or ``YYYY Qn`` by quarter),
    ``numerator``, ``denominator``. ``interval``: ``"month"`` or ``"quarter"``.
    """

    table: pd.DataFrame
    kpi: str
    label: str
    definition: str
    notes: tuple[str, ...] = ()
    interval: Literal["month", "quarter"] = "month"


Interval = Literal["auto", "month", "quarter"]


def _mostly_small(denominators: np.ndarray, min_cell: int) -> tuple[bool, int, int]:
    """(more than half of the months with data have a denominator of 1 … min_cell − 1, how many, of how many)."""
    d = np.asarray(denominators, dtype=float)
    with_data = int((d > 0).sum())
    small = int(((d > 0) & (d < min_cell)).sum())
    return with_data > 0 and 2 * small > with_data, small, with_data


def _kpi_units(cohort: Cohort, kpi: str, o: KpiOptions, end: pd.Timestamp) -> tuple[pd.DataFrame, list[str]]:
    """Rows counted for a proportion KPI: ``date``, ``site``, ``clinician``, ``num`` (0/1), ``den`` (1)."""
    if kpi in ("ae_rate", "ae_sessions"):
        s = _session_frame(cohort)
        s = s[s["date"] <= end]
        notes = [] if kpi == "ae_sessions" else [
            ("A control or funnel chart needs a proportion, so the adverse-event series counts ketamine sessions "
             "with at least one adverse event (not all events).")]
        return pd.DataFrame({"date": s["date"], "site": s["site"], "clinician": s["clinician"],
                             "num": s["has_ae"].astype(int), "den": 1}), notes
    if kpi == "patients_started":
        raise ValueError("Patients starting treatment is a count, not a proportion; control and funnel charts "
                         f"here need one of {', '.join(SPC_KPIS)}.")
    f = patient_kpi_frame(cohort, kpi, options=o, as_of=end)
    f = f[f["counted"]]
    return pd.DataFrame({"date": f["date"], "site": f["site"], "clinician": f["clinician"],
                         "num": f["success"].astype(int), "den": 1}), []


def monthly_rate(cohort: Cohort, *, kpi: str, options: KpiOptions | None = None, as_of: DateLike | None = None,
                 period: Period | None = None, interval: Interval = "month") -> MonthlySeries:
    """Monthly numerator and denominator of a proportion KPI, for :func:`p_chart`.

    ``kpi``: one of ``induction_completion``, ``followup_30``, ``followup_90``, ``followup_180``,
    ``abstinence_90``, ``phq9_response_4w``, ``ae_sessions`` (sessions with ≥ 1 adverse event; ``ae_rate`` is
    accepted and means the same). Patients go to the month their measure fell due (or started, with
    ``assign_by="start"``); only assessable, counted patients are included. Every month between the first and
    the last with data is listed (zeros included).

    ``interval``: ``"month"`` (default), ``"quarter"``, or ``"auto"`` (:func:`control_chart`'s default): by quarter
    when the cohort's small-cell rule is on, more than half of the months with data have a denominator from 1 to
    ``min_cell - 1`` (those months would not be drawn) and there are at least 2 quarters to chart; else by month.
    A note says why quarters are used.

    Returns
    -------
    MonthlySeries
        ``table``: ``month``, ``label``, ``numerator``, ``denominator``.
    """
    o = options or KpiOptions()
    end = _ts(as_of) if as_of is not None else cohort.data_end_date()
    units, notes = _kpi_units(cohort, kpi, o, end)
    if period is not None:
        start, stop = _period(period, "The period")
        units = units[(units["date"] >= start) & (units["date"] <= stop)]
    if units.empty:
        raise InsufficientData(f"{kpi_label(kpi, o)}: no patients or sessions can be assessed yet in the chosen "
                               "range. Widen the date range.")
    if interval not in ("auto", "month", "quarter"):
        raise ValueError(f"interval must be 'auto', 'month' or 'quarter' (got {interval!r}).")
    table = _per_period(units, "M")
    used: Literal["month", "quarter"] = "quarter" if interval == "quarter" else "month"
    settings = cohort.settings
    if interval == "auto" and settings.suppress:
        mostly, small, with_data = _mostly_small(table["denominator"].to_numpy(), settings.min_cell)
        if mostly and (_per_period(units, "Q")["denominator"] > 0).sum() >= 2:
            used = "quarter"
            notes.append(f"Aggregated by quarter: in {small} of {with_data} months with data the denominator was "
                         f"1–{settings.min_cell - 1}, which the small-cell rule would hide, so those months could "
                         "not be drawn. Quarters pool them.")
    if used == "quarter":
        table = _per_period(units, "Q")
    if kpi in PATIENT_KPIS and o.assign_by == "due":
        notes.append(f"Patients are placed in the {used} their measure fell due; the latest {used}s hold only "
                     "patients whose window has closed.")
    return MonthlySeries(table=table, kpi=kpi, label=kpi_label(kpi, o), definition=kpi_definition(kpi, o),
                         notes=tuple(notes), interval=used)


def _per_period(units: pd.DataFrame, freq: Literal["M", "Q"]) -> pd.DataFrame:
    """Numerator and denominator per month or quarter, every one between the first and last with data listed."""
    per = units["date"].dt.to_period(freq)
    g = units.groupby(per)[["num", "den"]].sum()
    full = pd.period_range(g.index.min(), g.index.max(), freq=freq)
    g = g.reindex(full, fill_value=0)
    label = full.strftime("%Y-%m") if freq == "M" else pd.Index([f"{q.year} Q{q.quarter}" for q in full])
    return pd.DataFrame({"month": full.to_timestamp(), "label": label,
                         "numerator": g["num"].to_numpy().astype(int), "denominator": g["den"].to_numpy().astype(int)})


@per_cohort
def control_chart(cohort: Cohort, *, kpi: str, options: KpiOptions | None = None,
                  chart: Literal["auto", "p", "p_prime"] = "auto", as_of: DateLike | None = None,
                  period: Period | None = None, interval: Interval = "auto") -> ControlChart:
    """:func:`monthly_rate` then :func:`p_chart`: the monthly (or, when monthly counts would be suppressed,
    quarterly) control chart of one KPI; ``interval`` as in :func:`monthly_rate`."""
    series = monthly_rate(cohort, kpi=kpi, options=options, as_of=as_of, period=period, interval=interval)
    t = series.table
    try:
        cc = p_chart(t["numerator"], t["denominator"], labels=t["label"], chart=chart)
    except InsufficientData as err:
        if series.interval != "quarter":
            raise
        raise InsufficientData(f"A control chart needs at least 2 quarters with data (got {len(t)}); monthly counts "
                               "are too small to show. Widen the date range.") from err
    notes = cc.notes if series.interval == "month" else tuple(
        n.replace("months", "quarters").replace("month's", "quarter's") for n in cc.notes)
    return replace(cc, kpi=kpi, label=series.label, notes=(series.definition, *series.notes, *notes),
                   interval=series.interval)


# ---------------------------------------------------------------------------------------------------------------
# Funnel plots


@dataclass(frozen=True)
class FunnelResult:
    """Units (clinicians or sites) against funnel limits around the overall rate.

    Attributes
    ----------
    units:
        ``unit``, ``numerator``, ``denominator``, ``estimate``, ``z`` (binomial z-score against the target),
        ``z_adjusted`` (after the over-dispersion adjustment; equals ``z`` without one).
    flags:
        One row per (unit, limit): ``unit``, ``conf_level``, ``lower``, ``upper`` (limits at the unit's n),
        ``position`` (``"above"``, ``"below"``, ``"within"``).
    limits:
        Limit curves for plotting: ``n``, ``conf_level``, ``lower``, ``upper``.
    target:
        Overall rate Σx/Σn.
    phi:
        Over-dispersion factor from 10 %-winsorised z-scores (1 = none); ``phi_p`` its χ² test p-value.
    tau2:
        Between-unit variance (DerSimonian–Laird), computed whatever the adjustment.
    adjustment:
        The adjustment applied: ``"none"``, ``"multiplicative"`` or ``"additive"``.
    """

    units: pd.DataFrame
    flags: pd.DataFrame
    limits: pd.DataFrame
    target: float
    phi: float
    phi_p: float
    tau2: float
    adjustment: Literal["none", "multiplicative", "additive"]
    unit: str
    kpi: str
    label: str
    conf_levels: tuple[float, ...]
    notes: tuple[str, ...] = ()

    @property
    def outliers(self) -> pd.DataFrame:
        """Units outside the widest limits."""
        widest = max(self.conf_levels)
        f = self.flags
        return f[(f["conf_level"] == widest) & (f["position"] != "within")]


def binomial_funnel_limits(target: float, n: object, conf_level: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact binomial funnel limits with interpolation (Spiegelhalter 2005, Stat Med 24:1185, appendix A.1.1).

    For probability q (= (1 ∓ conf_level)/2): r = smallest r with P(R ≤ r) ≥ q under Binomial(n, target),
    α = (P(R ≤ r) − q) / P(R = r), limit = (r − α)/n.
    """
    nn = np.atleast_1d(np.asarray(n, dtype=float))
    out = []
    for q in ((1 - conf_level) / 2, (1 + conf_level) / 2):
        r = _stats().binom.ppf(q, nn, target)
        f_r = _stats().binom.cdf(r, nn, target)
        pmf = _stats().binom.pmf(r, nn, target)
        with np.errstate(invalid="ignore", divide="ignore"):
            a = np.where(pmf > 0, (f_r - q) / pmf, 0.0)
            out.append(np.clip((r - a) / nn, 0.0, 1.0))
    return out[0], out[1]


def overdispersion(x: object, n: object, target: float, *, winsor: float = 0.1) -> tuple[float, float, float]:
    """``(phi, p_value, tau2)`` from winsorised z-scores (Spiegelhalter 2005, §6).

    z-scores below the ``winsor`` quantile and above the 1 − ``winsor`` quantile (linear interpolation, R type 7)
    are set to those quantiles; φ = Σ z_w² / I; the test compares I·φ with χ² on I − 1 df; τ² =
    max(0, (I·φ − (I − 1)) / (Σw − Σw²/Σw)) with w = 1/s², s² = target(1 − target)/n (DerSimonian–Laird).
    """
    xa = np.asarray(x, dtype=float)
    na = np.asarray(n, dtype=float)
    var = target * (1 - target) / na
    if target <= 0 or target >= 1:
        return 1.0, 1.0, 0.0
    z = (xa / na - target) / np.sqrt(var)
    lo, hi = np.quantile(z, [winsor, 1 - winsor])
    zw = np.clip(z, lo, hi)
    k = len(z)
    phi = float(np.sum(zw**2) / k)
    p = float(_stats().chi2.sf(k * phi, k - 1))
    w = 1 / var
    tau2 = max(0.0, (k * phi - (k - 1)) / (w.sum() - (w**2).sum() / w.sum()))
    return phi, p, float(tau2)


def funnel_from_counts(numerators: Sequence[float], denominators: Sequence[float], *, units: Sequence[object],
                       adjustment: Literal["multiplicative", "additive", "none"] = "multiplicative",
                       conf_levels: tuple[float, ...] = (0.95, 0.998), alpha: float = 0.05, winsor: float = 0.1,
                       unit: str = "unit", kpi: str = "", label: str = "") -> FunnelResult:
    """Funnel limits and flags from counts per unit (the computation behind :func:`funnel`).

    Parameters
    ----------
    numerators, denominators, units:
        Events, opportunities and names per unit (units with denominator 0 are dropped).
    adjustment:
        ``"multiplicative"`` (limits target ± z·√(φ·target(1 − target)/n)), ``"additive"`` (± z·√(target(1 −
        target)/n + τ²)) or ``"none"``. An adjustment is applied only when φ > 1 and I·φ exceeds the
        1 − ``alpha`` quantile of χ² on I − 1 df; otherwise the limits are exact binomial with interpolation.
    conf_levels:
        Limit levels (95 % and 99.8 %, about 2 and 3 standard errors).
    winsor:
        Share of z-scores winsorised at each end when estimating φ (10 %).

    Returns
    -------
    FunnelResult
        ``units``, ``flags``, ``limits`` (columns listed on :class:`FunnelResult`).
    """
    if adjustment not in ("none", "multiplicative", "additive"):
        raise ValueError(f"adjustment must be 'multiplicative', 'additive' or 'none' (got {adjustment!r}).")
    x = np.asarray(numerators, dtype=float)
    n = np.asarray(denominators, dtype=float)
    names = [str(u) for u in units]
    keep = n > 0
    x, n = x[keep], n[keep]
    names = [names[i] for i in np.flatnonzero(keep)]
    if len(x) < 2:
        raise InsufficientData(f"A funnel plot needs at least 2 {unit}s with patients or sessions to compare "
                               f"(got {len(x)}). Choose another grouping or widen the date range.")
    target = float(x.sum() / n.sum())
    est = x / n
    s = np.sqrt(target * (1 - target) / n)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(s > 0, (est - target) / s, 0.0)
    phi, phi_p, tau2 = overdispersion(x, n, target, winsor=winsor)
    applied: Literal["none", "multiplicative", "additive"] = "none"
    if adjustment != "none" and phi > 1 and phi_p < alpha:
        applied = adjustment

    def limits_at(nn: np.ndarray, cl: float) -> tuple[np.ndarray, np.ndarray]:
        if applied == "none":
            return binomial_funnel_limits(target, nn, cl)
        zc = float(_stats().norm.ppf(0.5 + cl / 2))
        var = target * (1 - target) / nn
        sd = np.sqrt(phi * var) if applied == "multiplicative" else np.sqrt(var + tau2)
        return np.clip(target - zc * sd, 0, 1), np.clip(target + zc * sd, 0, 1)

    if applied == "multiplicative":
        z_adj = z / math.sqrt(phi)
    elif applied == "additive":
        z_adj = (est - target) / np.sqrt(s**2 + tau2)
    else:
        z_adj = z
    units_t = pd.DataFrame({"unit": names, "numerator": x.astype(int), "denominator": n.astype(int),
                            "estimate": est, "z": z, "z_adjusted": z_adj})
    flag_rows = []
    for cl in conf_levels:
        lo, hi = limits_at(n, cl)
        pos = np.where(est > hi + 1e-12, "above", np.where(est < lo - 1e-12, "below", "within"))
        flag_rows.append(pd.DataFrame({"unit": names, "conf_level": cl, "lower": lo, "upper": hi,
                                       "position": pos}))
    grid = np.unique(np.concatenate([np.round(np.geomspace(1, max(n.max() * 1.15, 2), 150)), n]))
    curves = []
    for cl in conf_levels:
        lo, hi = limits_at(grid, cl)
        curves.append(pd.DataFrame({"n": grid, "conf_level": cl, "lower": lo, "upper": hi}))
    method = {"none": "exact binomial limits with interpolation (no over-dispersion adjustment)",
              "multiplicative": f"limits widened by the over-dispersion factor φ = {phi:.2f} (multiplicative)",
              "additive": f"random-effects limits with between-{unit} variance τ² = {tau2:.4g} (additive, "
                          "DerSimonian–Laird)"}[applied]
    notes = [(f"Target = overall rate {target:.3f}; {method}. φ from {100 * winsor:g} %-winsorised z-scores = "
              f"{phi:.2f} (χ² test p = {phi_p:.3g}); an adjustment is applied only when φ > 1 and p < {alpha:g}.")]
    if adjustment != "none" and applied == "none":
        notes.append(f"No over-dispersion detected, so the requested {adjustment} adjustment was not needed.")
    return FunnelResult(units=units_t, flags=pd.concat(flag_rows, ignore_index=True),
                        limits=pd.concat(curves, ignore_index=True), target=target, phi=phi, phi_p=phi_p, tau2=tau2,
                        adjustment=applied, unit=unit, kpi=kpi, label=label, conf_levels=tuple(conf_levels),
                        notes=tuple(notes))


@per_cohort
def funnel(cohort: Cohort, *, unit: Literal["clinician", "site"] = "clinician", kpi: str = "induction_completion",
           adjustment: Literal["multiplicative", "additive", "none"] = "multiplicative",
           conf_levels: tuple[float, ...] = (0.95, 0.998), options: KpiOptions | None = None,
           period: Period | None = None, as_of: DateLike | None = None, alpha: float = 0.05) -> FunnelResult:
    """Funnel plot of a proportion KPI by clinician or site, instead of a league table.

    Parameters
    ----------
    unit:
        ``"clinician"`` (of the patient's first ketamine session; for sessions, the session's) or ``"site"``.
    kpi:
        A proportion KPI (see :func:`monthly_rate`).
    adjustment:
        Over-dispersion adjustment (default multiplicative), applied only when over-dispersion is detected; see
        :func:`funnel_from_counts`.
    conf_levels:
        Limit levels (95 % and 99.8 %).
    period:
        Only patients (by due or start date) or sessions in this period.

    Returns
    -------
    FunnelResult
        ``units``, ``flags``, ``limits`` (columns listed on :class:`FunnelResult`).

    Notes
    -----
    Spiegelhalter DJ. Funnel plots for comparing institutional performance. Stat Med 2005;24:1185–1202
    (exact limits: appendix; over-dispersion with 10 % winsorised z-scores: §6; additive τ² by
    DerSimonian–Laird).
    """
    o = options or KpiOptions()
    if unit not in ("clinician", "site"):
        raise ValueError(f"unit must be 'clinician' or 'site' (got {unit!r}).")
    end = _ts(as_of) if as_of is not None else cohort.data_end_date()
    rows, notes = _kpi_units(cohort, kpi, o, end)
    if period is not None:
        start, stop = _period(period, "The period")
        rows = rows[(rows["date"] >= start) & (rows["date"] <= stop)]
    missing = int(rows[unit].isna().sum())
    if missing:
        notes.append(f"{note_n(missing)} patients or sessions without a recorded {unit} are left out.")
    g = rows.dropna(subset=[unit]).groupby(unit)[["num", "den"]].sum()
    res = funnel_from_counts(g["num"], g["den"], units=g.index, adjustment=adjustment, conf_levels=conf_levels,
                             alpha=alpha, unit=unit, kpi=kpi, label=kpi_label(kpi, o))
    notes = [kpi_definition(kpi, o), *notes, *res.notes,
             (f"{'Clinician of the first ketamine session' if unit == 'clinician' else 'Site'} of each patient "
              "(sessions: of each session). Units with few patients have wide limits: a point inside them is not "
              "evidence of average performance, only of no detectable difference.")]
    return replace(res, notes=tuple(notes))


# ---------------------------------------------------------------------------------------------------------------
# Patients needing attention


@dataclass(frozen=True)
class AttentionList:
    """Patients the clinical team should look at, by ``patient_id`` only.

    Attributes
    ----------
    table:
        One row per (patient, reason): ``patient_id``, ``reason`` (``phq9_above_expected``,
        ``followup_overdue``, ``followup_missed``, ``safety_flag``), ``detail`` (plain text), ``date`` (the
        date it refers to), ``value`` and ``expected`` (PHQ-9 rows; NaN otherwise).
    """

    table: pd.DataFrame
    as_of: pd.Timestamp
    notes: tuple[str, ...] = ()

    @property
    def by_patient(self) -> pd.DataFrame:
        """One row per patient: ``patient_id``, ``reasons`` (``; ``-joined details), ``n_reasons``."""
        t = self.table
        if t.empty:
            return pd.DataFrame(columns=["patient_id", "reasons", "n_reasons"])
        if t["detail"].isna().any() or t["patient_id"].isna().any():  # the general (slow) path
            return (t.groupby("patient_id", sort=True)
                    .agg(reasons=("detail", "; ".join), n_reasons=("reason", "size")).reset_index())
        # patients in sorted order, each patient's details in table order, joined by Arrow (no Python loop)
        codes, patients = pd.factorize(t["patient_id"], sort=True)
        order = np.argsort(codes, kind="stable")
        counts = np.bincount(codes, minlength=len(patients))
        offsets = pa.array(np.r_[0, np.cumsum(counts)].astype(np.int32))
        details = pa.array(t["detail"].to_numpy(dtype=object)[order], type=pa.string())
        joined = pc.binary_join(pa.ListArray.from_arrays(offsets, details), "; ")
        return pd.DataFrame({"patient_id": pd.Series(patients, name="patient_id").array,
                             "reasons": pd.Series(joined.to_pylist(), dtype="str").array,
                             "n_reasons": counts.astype(np.int64)})


def _expected_phq9(latest: pd.DataFrame, expected: pd.DataFrame | None, base: pd.Series) -> tuple[pd.Series, str]:
    """Expected PHQ-9 per latest score: the prediction table when given, else the baseline (no worsening)."""
    if expected is None:
        return text_map(latest["patient_id"], base).astype(float), "baseline PHQ-9 (no worsening expected)"
    if "expected_phq9" not in expected.columns or "patient_id" not in expected.columns:
        raise ValueError("expected needs columns patient_id and expected_phq9 (optionally days).")
    if "days" in expected.columns:
        key = expected.set_index(["patient_id", "days"])["expected_phq9"]
        idx = pd.MultiIndex.from_arrays([latest["patient_id"], latest["days"]])
        return (pd.Series(key.reindex(idx).to_numpy(dtype=float), index=latest.index),
                "model-predicted PHQ-9 on that day")
    return (text_map(latest["patient_id"], expected.set_index("patient_id")["expected_phq9"]).astype(float),
            "model-predicted PHQ-9")


def patients_needing_attention(cohort: Cohort, *, expected: pd.DataFrame | None = None, phq9_margin: float = 5,
                               options: KpiOptions | None = None, safety_lookback_days: int = 30,
                               followup_lookback_days: int = 90, thresholds: VitalThresholds | None = None,
                               safety_events: Sequence[str] | None = None,
                               as_of: DateLike | None = None) -> AttentionList:
    """Patients whose PHQ-9 is off course, who missed a due follow-up, or who had a recent safety flag.

    Parameters
    ----------
    expected:
        Hook for a trajectory model: a table with ``patient_id``, ``expected_phq9`` and optionally ``days``
        (prediction on the day of the latest score). Without it the expectation is the patient's baseline
        PHQ-9, i.e. a patient is flagged when worse than baseline by at least ``phq9_margin``.
    phq9_margin:
        Points above the expectation that flag a patient (5 = a clinically meaningful PHQ-9 change).
    options:
        Follow-up windows (:class:`KpiOptions`).
    safety_lookback_days:
        Safety flags on ketamine sessions in the last this-many days before ``as_of``.
    followup_lookback_days:
        Missed follow-ups are listed only when their window closed in the last this-many days (older misses are
        not actionable any more).
    thresholds:
        Raised blood pressure / heart rate (:class:`~analytics.outcomes.safety.VitalThresholds`).
    safety_events:
        Adverse-event types that flag (default: every type).
    as_of:
        "Today" (default: the latest date in the exports).

    Returns
    -------
    AttentionList
        ``table``: ``patient_id``, ``reason``, ``detail``, ``date``, ``value``, ``expected``.

    Notes
    -----
    Follow-up T (30/90/180): *overdue* when day T has passed, the window (T ± w) is still open and no assessment
    was made in it; *missed* when the window closed without one. Patients recorded as deceased are never listed;
    patients recorded as withdrawn are not listed for follow-ups.
    """
    o = options or KpiOptions()
    end = _ts(as_of) if as_of is not None else cohort.data_end_date()
    p = cohort.patients
    rows: list[pd.DataFrame] = []
    # PHQ-9 off course
    m = cohort.measures
    latest = (m[(m["measure"] == "phq9") & (m["days"] > 0) & (m["date"] <= end)]
              .sort_values(["patient_id", "days"]).drop_duplicates("patient_id", keep="last"))
    base = p.set_index("patient_id")["baseline_phq9"]
    exp, how = _expected_phq9(latest, expected, base)
    off = latest[(latest["value"] - exp >= phq9_margin).fillna(False).to_numpy()]
    if len(off):
        e = exp[off.index]
        rows.append(pd.DataFrame({
            "patient_id": off["patient_id"], "reason": "phq9_above_expected",
            "detail": [f"latest PHQ-9 {v:g} on {d:%Y-%m-%d} is {v - x:g} above the expected {x:g}"
                       for v, d, x in zip(off["value"], off["date"], e)],
            "date": off["date"], "value": off["value"], "expected": e.to_numpy()}))
    # follow-ups
    status = p.set_index("patient_id")["last_status"]
    excluded = status[status.isin(["deceased", "withdrew"])].index.to_series()
    fu = cohort.followups
    for t in FOLLOWUP_TARGETS:
        w = o.tolerance(t)
        due = p["index_date"] + pd.to_timedelta(t, unit="D")
        close = p["index_date"] + pd.to_timedelta(t + w, unit="D")
        hit = fu.loc[(fu["days"] >= t - w) & (fu["days"] <= t + w) & (fu["assessment_date"] <= end), "patient_id"]
        none = ~ids_in(p["patient_id"], hit) & ~ids_in(p["patient_id"], excluded)
        overdue = none & (due < end) & (close >= end)
        missed = none & (close < end) & (close >= end - pd.Timedelta(days=followup_lookback_days))
        for mask, reason, verb in ((overdue, "followup_overdue", "overdue"), (missed, "followup_missed", "missed")):
            if mask.any():
                sub = p[mask]
                d, c = due[mask], close[mask]
                rows.append(pd.DataFrame({
                    "patient_id": sub["patient_id"], "reason": reason,
                    "detail": [f"day-{t} follow-up {verb} (due {a:%Y-%m-%d}, window closes {b:%Y-%m-%d})"
                               for a, b in zip(d, c)],
                    "date": d, "value": np.nan, "expected": np.nan}))
    # safety
    flags = session_safety_flags(cohort, thresholds=thresholds)
    recent = flags[(flags["session_date"] > end - pd.Timedelta(days=safety_lookback_days))
                   & (flags["session_date"] <= end)]
    if safety_events is not None:
        wanted = set(safety_events)
        ev_hit = recent["events"].map(lambda s: bool(wanted & set(s.split(";"))) if s else False)
    else:
        ev_hit = recent["has_ae"]
    vit = recent["bp_raised"].fillna(False).astype(bool) | recent["hr_raised"].fillna(False).astype(bool)
    hit_s = recent[ev_hit.astype(bool) | vit]
    if len(hit_s):
        det = []
        for r in hit_s.itertuples():
            parts = []
            if r.events:
                parts.append(r.events.replace(";", ", "))
            if r.bp_raised is not pd.NA and bool(r.bp_raised):
                parts.append("raised blood pressure")
            if r.hr_raised is not pd.NA and bool(r.hr_raised):
                parts.append("raised heart rate")
            det.append(f"safety flag on {r.session_date:%Y-%m-%d}: {', '.join(parts)}")
        rows.append(pd.DataFrame({"patient_id": hit_s["patient_id"], "reason": "safety_flag", "detail": det,
                                  "date": hit_s["session_date"], "value": np.nan, "expected": np.nan}))
    cols = ["patient_id", "reason", "detail", "date", "value", "expected"]
    table = (pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=cols))[cols]
    deceased = set(status[status == "deceased"].index)
    table = table[~ids_in(table["patient_id"], deceased)]
    table = table.sort_values(["patient_id", "reason", "date"], kind="stable").reset_index(drop=True)
    notes = (f"As of {end:%Y-%m-%d}. PHQ-9: latest score at least {phq9_margin:g} points above the {how}.",
             (f"Follow-ups: windows {', '.join(f'day {t} ± {o.tolerance(t)}' for t in FOLLOWUP_TARGETS)}; missed "
              f"windows listed when they closed in the last {followup_lookback_days} days; patients recorded as "
              "withdrawn or deceased are not chased."),
             (f"Safety: ketamine sessions in the last {safety_lookback_days} days with "
              f"{'an adverse event' if safety_events is None else 'one of: ' + ', '.join(safety_events)} or "
              f"raised vital signs ({(thresholds or VitalThresholds()).describe()})"),
             "Patient-level list for the clinic's own follow-up: share only under the clinic's privacy rules.")
    return AttentionList(table=table, as_of=end, notes=notes)


__all__ = [
    "AttentionList", "ControlChart", "FlowTable", "FunnelResult", "KpiOptions", "KpiTable", "MonthlySeries",
    "binomial_funnel_limits", "control_chart", "default_periods", "funnel", "funnel_from_counts",
    "kpi_definition", "kpi_label", "kpis",
    "load_flow", "monthly_rate", "newcombe_ci", "overdispersion", "p_chart", "patient_flow", "patient_kpi_frame",
    "patients_needing_attention", "run_rules",
]
