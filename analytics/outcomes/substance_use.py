"""Substance-use outcomes: days abstinent and heavy days over time, urine results by substance, 30-day continuous
abstinence at 6 and 12 months, and the AUDIT-C, BAM, craving and GAD-7 courses (issue #22, data-contract v2).

Definitions (day 0 = first ketamine session, as in :mod:`analytics.outcomes.cohort`):

* **Use windows**: for a patient *without* a daily use log, each follow-up after day 0 whose recall window lies wholly
  after day 0 (``days_abstinent / window_days`` = PDA, ``heavy_days / window_days`` = heavy share); for a patient
  *with* a log, each 30-day window of the log (days 1–30, 31–60, …) with at least :data:`MIN_LOG_DAYS` logged days
  (abstinent days / logged days, heavy days / logged days). The log wins for its patients: it is exact, where a
  follow-up recalls a window. Heavy-drinking days are for patients whose primary substance is alcohol.
* **Model**: the linear mixed model of :func:`analytics.outcomes.trajectories.fit_trajectory` (percent 0–100 ~ time
  shape × group + random intercept and slope per patient, REML; time shape chosen by ML AIC), the model form checked
  against lme4 in ``tests/reference/trajectories``. Observed means per time window with t intervals beside it.
* **Urine by substance**: tests done after day 0 (``urine_tox`` positive/negative or a ``urine_substances`` list).
  A test is *negative for a substance* when the list does not name it (with ``urine_tox`` only: the "any substance"
  row). Excluded from a substance's denominator: tests of patients prescribed it, and for ketamine tests within
  ``Settings.ketamine_urine_days`` days after a ketamine session (the treatment). Wilson intervals.
* **30-day continuous abstinence at month m** (6 → day 180, 12 → day 365): no use on days ``mark − 29 … mark``.
  Known *abstinent* when the daily log covers every one of those days without use, or the windows of follow-ups that
  report no use (whole window abstinent, no use answer, no urine positive for a non-prescribed substance) cover every
  day; known *use* when a logged day, a follow-up window lying inside the 30 days, or a relapse date inside them
  shows use; else *missing*. Eligible: patients whose data reach the mark. Both missing-data bounds: missing = use
  (all eligible) and completers only (known status).
* **Courses**: observed means of AUDIT-C, BAM subscales, craving and GAD-7 per time window (baseline = the 30 days
  up to day 0), each patient once per window (the mean of their scores there), t intervals.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from analytics import formatting as fmt
from analytics.engines.intervals import t_crit, wilson_ci
from analytics.errors import InsufficientData
from analytics.outcomes import trajectories as tr
from analytics.outcomes.benchmarks import _covered_days
from analytics.outcomes.cohort import Cohort, ids_in
from analytics.outcomes.memo import once, per_cohort
from analytics.privacy.counts import mask_text, note_n
from analytics.privacy.suppression import suppress_counts
from schemas.arrow import text_map
from schemas.columns import URINE_SUBSTANCES

MIN_LOG_DAYS = 15  # a log window counts when at least half of its 30 days are logged
# time windows (days since day 0) of observed means and urine results: (label, first day, last day)
WINDOWS: tuple[tuple[str, float, float], ...] = (
    ("baseline (days −30 to 0)", -30, 0), ("month 1 (days 1–30)", 1, 30), ("months 2–3 (days 31–90)", 31, 90),
    ("months 4–6 (days 91–180)", 91, 180), ("months 7–12 (days 181–365)", 181, 365),
    ("after month 12 (day 366+)", 366, np.inf))
COURSES = {"audit_c": "AUDIT-C (0–12)", "bam_use": "BAM use (0–12)", "bam_risk": "BAM risk factors (0–24)",
           "bam_protective": "BAM protective factors (0–24)", "craving": "craving (0–10)", "gad7": "GAD-7 (0–21)"}
GROUPINGS = {"program": "program", "primary_substance": "primary substance"}
NOT_RECORDED = "not recorded in this export"


def _group(cohort: Cohort, by: str | None) -> pd.Series:
    """Each patient's group label (``All patients`` without ``by``; missing values as ``(missing)``)."""
    p = cohort.patients
    if by is None:
        return pd.Series("All patients", index=p["patient_id"].to_numpy())
    return pd.Series(p[by].astype("string").fillna("(missing)").to_numpy(), index=p["patient_id"].to_numpy())


def _mean_ci(per_patient: pd.DataFrame, keys: list[str], conf_level: float) -> pd.DataFrame:
    """Mean of per-patient values per ``keys`` with a t interval: ``n`` (patients), ``estimate``, ``ci_low/high``."""
    agg = per_patient.groupby(keys, sort=False, observed=True)["value"].agg(["size", "mean", "std"]).reset_index()
    n = agg["size"].to_numpy(float)
    t = np.array([t_crit(conf_level, k - 1) if k >= 2 else np.nan for k in n])
    half = t * agg["std"].to_numpy(float) / np.sqrt(n)
    return agg.assign(n=agg["size"].astype(int), estimate=agg["mean"], ci_low=agg["mean"] - half,
                      ci_high=agg["mean"] + half)[[*keys, "n", "estimate", "ci_low", "ci_high"]]


def _windowed(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (``days``) with ``window`` (label of :data:`WINDOWS`) and ``window_order``; rows outside dropped."""
    days = frame["days"].to_numpy(float)
    label = np.full(len(frame), None, dtype=object)
    order = np.full(len(frame), -1)
    for k, (name, lo, hi) in enumerate(WINDOWS):
        at = (days >= lo) & (days <= hi)
        label[at], order[at] = name, k
    return frame.assign(window=label, window_order=order)[order >= 0]


def observed_course(frame: pd.DataFrame, groups: pd.Series, conf_level: float = 0.95) -> pd.DataFrame:
    """Observed means per group and time window: ``group``, ``window``, ``window_order``, ``n``, ``estimate``,
    ``ci_low``, ``ci_high``. ``frame``: ``patient_id``, ``days``, ``value``; each patient counts once per window."""
    d = _windowed(frame.dropna(subset=["value"]))
    d = d.assign(group=text_map(d["patient_id"], groups))
    per = d.groupby(["group", "window_order", "window", "patient_id"], sort=True, observed=True)["value"].mean()
    out = _mean_ci(per.reset_index(), ["group", "window_order", "window"], conf_level)
    return out.sort_values(["group", "window_order"]).reset_index(drop=True)


# ------------------------------------------------------------------------------------------ days abstinent, heavy


def use_frame(cohort: Cohort, measure: str = "pda") -> pd.DataFrame:
    """Use windows (module docstring): ``patient_id``, ``days`` (window end), ``weeks``, ``value`` (share 0–1),
    ``source`` (``follow-up`` / ``daily log``). ``measure``: ``pda`` or ``heavy`` (alcohol patients only)."""
    if measure not in ("pda", "heavy"):
        raise ValueError(f"measure must be 'pda' or 'heavy' (got {measure!r})")
    p = cohort.patients
    logged = p.loc[p.get("has_daily_log", pd.Series(False, index=p.index)).astype(bool), "patient_id"]
    fu = cohort.followups
    fu = fu[(fu["days"] > 0) & fu["window_after_index"].astype(bool) & ~ids_in(fu["patient_id"], logged)]
    col = "days_abstinent" if measure == "pda" else "heavy_days"
    value = fu[col].astype(float) / fu["window_days"].astype(float)
    parts = [pd.DataFrame({"patient_id": fu["patient_id"].to_numpy(), "days": fu["days"].to_numpy(float),
                           "value": value.to_numpy(float), "source": "follow-up"})]
    w = cohort.log_windows
    if len(w):
        w = w[w["days_recorded"] >= MIN_LOG_DAYS]
        num = w["days_abstinent"] if measure == "pda" else w["heavy_days"]
        parts.append(pd.DataFrame({"patient_id": w["patient_id"].to_numpy(), "days": w["end_day"].to_numpy(float),
                                   "value": (num / w["days_recorded"]).to_numpy(float), "source": "daily log"}))
    d = pd.concat(parts, ignore_index=True).dropna(subset=["value"])
    if measure == "heavy":
        alcohol = p.loc[p["primary_substance"].eq("alcohol").fillna(False).astype(bool), "patient_id"]
        d = d[ids_in(d["patient_id"], alcohol).to_numpy(bool)]
    d["patient_id"] = d["patient_id"].astype(p["patient_id"].dtype)
    d["weeks"] = d["days"] / 7.0
    return d.sort_values(["patient_id", "days"], kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class UseCourse:
    """Percent days abstinent (``pda``) or percent heavy-drinking days (``heavy``) over time.

    ``predicted``: ``group``, ``weeks``, ``estimate``, ``ci_low``, ``ci_high`` (percent, model).
    ``observed``: ``group``, ``window``, ``window_order``, ``n``, ``estimate``, ``ci_low``, ``ci_high`` (percent).
    ``fixed``: the model's fixed effects (``term``, ``estimate``, ``se``, ``ci_low``, ``ci_high``, ``p``).
    ``sources``: use windows by source (``follow-up``, ``daily log``) → count.
    """

    measure: str
    by: str | None
    predicted: pd.DataFrame
    observed: pd.DataFrame
    fixed: pd.DataFrame
    formula: str
    n_patients: int
    n_obs: int
    sources: dict[str, int]
    definition: str
    conf_level: float
    notes: tuple[str, ...] = ()


def _definition(measure: str) -> str:
    if measure == "pda":
        return ("Percent days abstinent (PDA): days without any use / days covered, per follow-up recall window lying "
                "wholly after day 0, or per 30-day window of a daily use log (days 1–30, 31–60, …; at least "
                f"{MIN_LOG_DAYS} logged days). The log wins for patients who have one (exact days).")
    return ("Percent heavy-drinking days, alcohol patients: heavy days / days covered (a heavy day: 4+ standard "
            "drinks for women, 5+ for men, in the log; the follow-up's heavy_days otherwise), per follow-up window "
            "lying wholly after day 0 or 30-day log window.")


@per_cohort
def use_course(cohort: Cohort, *, measure: str = "pda", by: str | None = "program",
               conf_level: float = 0.95) -> UseCourse:
    """Model and observed means of PDA or heavy days over weeks since day 0, by ``by`` (module docstring)."""
    return once(cohort, ("substance_use.course", measure, by, conf_level),
                lambda: _use_course(cohort, measure, by, conf_level))


def _use_course(cohort: Cohort, measure: str, by: str | None, conf_level: float) -> UseCourse:
    d = use_frame(cohort, measure)
    what = "percent days abstinent" if measure == "pda" else "percent heavy-drinking days (alcohol patients)"
    if d.empty:
        raise InsufficientData(f"No use windows for {what}: {NOT_RECORDED} (follow-ups need days_abstinent"
                               f"{'' if measure == 'pda' else ' and heavy_days'}, or upload a daily use log).")
    measures = pd.DataFrame({"patient_id": d["patient_id"], "date": pd.NaT, "days": d["days"].astype(np.int64),
                             "weeks": d["weeks"], "measure": "pda", "value": d["value"], "source": d["source"]})
    view = replace(cohort, measures=measures)  # the trajectory model reads its scores from the cohort's measures
    keep_by = by
    pts = cohort.patients
    if by is not None and pts[by].notna().sum() == 0:
        keep_by = None
    fallback: tuple[str, ...] = ()
    try:
        fit = tr.fit_trajectory(view, measure="pda", by=keep_by, time="auto", conf_level=conf_level)
    except InsufficientData as err:
        if keep_by is None:
            raise
        fallback = (f"Not split by {GROUPINGS.get(keep_by, keep_by)}: {err} The model is fitted over all patients.",)
        keep_by = None
        fit = tr.fit_trajectory(view, measure="pda", by=None, time="auto", conf_level=conf_level)
    pm = tr.predicted_means(fit)
    label = "pda" if measure == "pda" else "heavy_pct"
    formula = fit.formula.replace("pda", label, 1)
    groups = _group(cohort, keep_by)
    obs = observed_course(d.assign(value=d["value"] * 100), groups, conf_level)
    sources = d["source"].value_counts().to_dict()
    notes = [n.replace("percent days abstinent", what).replace("Percent days abstinent", what.capitalize())
             .replace(fit.formula, formula) for n in fit.notes]
    notes.append(f"Use windows: {', '.join(f'{note_n(v)} from {k}' for k, v in sources.items())}; points are "
                 "observed means per time window (each patient once per window) with t intervals.")
    notes.extend(fallback)
    return UseCourse(measure=measure, by=keep_by, predicted=pm.table[["group", "weeks", "estimate", "ci_low",
                                                                       "ci_high"]],
                     observed=obs, fixed=fit.fixed, formula=formula, n_patients=int(fit.n_patients),
                     n_obs=int(fit.n_obs), sources={str(k): int(v) for k, v in sources.items()},
                     definition=_definition(measure), conf_level=conf_level, notes=tuple(notes))


# ------------------------------------------------------------------------------------------------ urine results


@dataclass(frozen=True)
class UrineResults:
    """Urine-negative share by substance and time window (and group).

    ``table``: ``group``, ``substance``, ``window``, ``window_order``, ``n_tests`` (evaluable), ``n_negative``,
    ``estimate`` (percent negative), ``ci_low``, ``ci_high``, ``n_excluded`` (prescribed or in-treatment ketamine).
    ``by_substance``: whether the export lists substances (else one ``any substance`` row from ``urine_tox``).
    """

    table: pd.DataFrame
    by_substance: bool
    n_tests: int
    n_excluded: int
    definition: str
    conf_level: float
    notes: tuple[str, ...] = ()

    @property
    def groups(self) -> list[str]:
        """The groups in table order (the page's choice of group; the first is its default)."""
        return list(dict.fromkeys(self.table["group"]))


def urine_results(cohort: Cohort, *, by: str | None = "program", conf_level: float = 0.95) -> UrineResults:
    """Urine-negative share by substance over time windows (module docstring)."""
    return once(cohort, ("substance_use.urine", by, conf_level), lambda: _urine_results(cohort, by, conf_level))


def _urine_tests(cohort: Cohort) -> pd.DataFrame:
    fu = cohort.followups
    listed = fu["urine_substances"].notna() if "urine_substances" in fu else pd.Series(False, index=fu.index)
    done = fu["urine_tox"].isin(["positive", "negative"]).fillna(False).astype(bool) | listed
    return fu[done.to_numpy(bool) & (fu["days"] > 0).to_numpy(bool)]


def _padded(lists: pd.Series) -> pd.Series:
    """``a;b`` lists as ``;a;b;`` (missing: ``;;``), so that an item is in a list exactly when ``;item;`` is in its
    padded text: one vectorised substring search per item in place of splitting every row."""
    return ";" + lists.astype("str").fillna("") + ";"


def _lists_have(padded: pd.Series, item: str) -> np.ndarray:
    """Rows whose list (:func:`_padded`) names ``item`` (``item in text.split(";")``)."""
    return padded.str.contains(f";{item};", regex=False).fillna(False).to_numpy(bool)


def _urine_results(cohort: Cohort, by: str | None, conf_level: float) -> UrineResults:
    tests = _urine_tests(cohort)
    if tests.empty:
        raise InsufficientData(f"Urine results after day 0: {NOT_RECORDED} (followups.csv urine_tox or "
                               "urine_substances).")
    groups = _group(cohort, by)
    by_substance = "urine_substances" in tests and tests["urine_substances"].notna().any()
    t = _windowed(tests.assign(group=text_map(tests["patient_id"], groups)))
    rows = []
    if by_substance:
        found = _padded(t["urine_substances"])
        # the cohort lists each result's substances left out: the patient's prescribed medicines (patients.csv
        # prescribed) and ketamine within the days after a session (analytics.outcomes.cohort._urine_use)
        excluded = _padded(t["urine_excluded"]) if "urine_excluded" in t else None
        for s in URINE_SUBSTANCES:
            pos = _lists_have(found, s)
            if not pos.any():
                continue
            out = _lists_have(excluded, s) if excluded is not None else np.zeros(len(t), dtype=bool)
            rows.append(t.assign(substance=s, negative=~pos, excluded=out))
        left = t["urine_use"].astype(bool).to_numpy() if "urine_use" in t else np.zeros(len(t), dtype=bool)
        rows.append(t.assign(substance="any non-prescribed substance", negative=~left, excluded=False))
    else:
        rows.append(t.assign(substance="any substance (urine_tox)", negative=t["urine_tox"].eq("negative").to_numpy(),
                             excluded=False))
    long = pd.concat(rows, ignore_index=True)
    keys = ["group", "substance", "window_order", "window"]
    agg = long.groupby(keys, sort=False).agg(n_excluded=("excluded", "sum")).reset_index()
    ev = long[~long["excluded"]].groupby(keys, sort=False).agg(
        n_tests=("negative", "size"), n_negative=("negative", "sum")).reset_index()
    table = agg.merge(ev, on=keys, how="left").fillna({"n_tests": 0, "n_negative": 0})
    table[["n_tests", "n_negative", "n_excluded"]] = table[["n_tests", "n_negative", "n_excluded"]].astype(int)
    lo, hi = wilson_ci(table["n_negative"].to_numpy(), np.maximum(table["n_tests"].to_numpy(), 1), conf_level)
    has = table["n_tests"].to_numpy() > 0
    table["estimate"] = np.where(has, 100 * table["n_negative"] / np.maximum(table["n_tests"], 1), np.nan)
    table["ci_low"], table["ci_high"] = np.where(has, 100 * lo, np.nan), np.where(has, 100 * hi, np.nan)
    order = {s: k for k, s in enumerate([*URINE_SUBSTANCES, "any non-prescribed substance", "any substance (urine_tox)"])}
    table = table.sort_values(["group", "substance", "window_order"], key=lambda c: c.map(order) if c.name ==
                              "substance" else c).reset_index(drop=True)
    n_excl = int(long.loc[long["substance"].isin(URINE_SUBSTANCES), "excluded"].sum())
    definition = ("Share of urine tests after day 0 negative for each substance, per time window; a substance's "
                  "results are left out for patients prescribed it (patients.csv prescribed) and, for ketamine, "
                  f"within {cohort.settings.ketamine_urine_days} days after a ketamine session. 'Any non-prescribed "
                  "substance': negative for everything but those. Wilson 95% intervals; n = tests.")
    notes = [f"{note_n(len(t))} urine tests after day 0 from {note_n(t['patient_id'].nunique())} patients; "
             f"{note_n(n_excl)} substance results excluded as prescribed or in-treatment ketamine."]
    if not by_substance:
        notes.append(f"Urine results by substance: {NOT_RECORDED} (urine_substances); the urine_tox result is shown "
                     "for any substance, and prescribed medicines cannot be told apart.")
    return UrineResults(table=table, by_substance=bool(by_substance), n_tests=len(t), n_excluded=n_excl,
                        definition=definition, conf_level=conf_level, notes=tuple(notes))


# ------------------------------------------------------------------------- 30-day continuous abstinence at 6 / 12


@dataclass(frozen=True)
class ContinuousAbstinence:
    """30-day continuous abstinence at 6 and 12 months, per group, with both missing-data bounds.

    ``table``: ``group``, ``month``, ``mark_day``, ``n_eligible``, ``n_abstinent``, ``n_use``, ``n_missing``, then
    per bound ``missing_as_use_*`` (denominator every eligible patient) and ``completers_*`` (known status only):
    ``_pct``, ``_low``, ``_high``.
    """

    table: pd.DataFrame
    definition: str
    conf_level: float
    notes: tuple[str, ...] = ()


def window_status(cohort: Cohort, start: int, end: int) -> pd.Series:
    """Per patient id: ``abstinent``, ``use`` or ``missing`` over days ``start … end`` (module docstring)."""
    ids = cohort.patients["patient_id"]
    status = pd.Series("missing", index=ids.to_numpy(), dtype=object)
    fu = cohort.followups
    fu = fu[fu["days"] >= 0]
    if len(fu):
        free = (fu["days_abstinent"].astype(float) == fu["window_days"]).fillna(False) & ~fu["use_any"].astype(bool)
        free |= fu["days_abstinent"].isna() & fu["any_use"].eq(False).fillna(False) & ~fu["use_any"].astype(bool)
        covered = _covered_days(fu[free.to_numpy(bool)], start, end)
        status[covered[covered >= end - start + 1].index] = "abstinent"
        inside = (fu["window_start_days"] >= start) & (fu["days"] <= end) & fu["use_any"].astype(bool)
        rel = (fu["relapse_date"] - fu["assessment_date"]).dt.days + fu["days"]
        used = fu.loc[(inside | rel.between(start, end)).to_numpy(bool), "patient_id"].unique()
        status[used] = "use"
    log = cohort.daily_use
    if len(log):
        w = log[(log["days"] >= start) & (log["days"] <= end)]
        g = w.groupby("patient_id").agg(n=("days", "nunique"), used=("used", "any"))
        status[g.index] = "missing"  # the log decides for its patients where it has days in the window
        status[g.index[g["n"] >= end - start + 1]] = "abstinent"
        status[g.index[g["used"]]] = "use"
    return status


def continuous_abstinence(cohort: Cohort, *, months: tuple[int, ...] = (6, 12), by: str | None = "program",
                          conf_level: float = 0.95) -> ContinuousAbstinence:
    """30-day continuous abstinence at each month mark (module docstring), with both missing-data bounds."""
    return once(cohort, ("substance_use.cab", months, by, conf_level),
                lambda: _continuous_abstinence(cohort, months, by, conf_level))


def _continuous_abstinence(cohort: Cohort, months: tuple[int, ...], by: str | None,
                           conf_level: float) -> ContinuousAbstinence:
    end = cohort.data_end_date()
    groups = _group(cohort, by)
    p = cohort.patients
    rows = []
    for month in months:
        mark = {6: 180, 12: 365}.get(month, round(month * 30.4375))
        reached = (p["index_date"] + pd.Timedelta(days=mark) <= end).to_numpy(bool)
        status = window_status(cohort, mark - 29, mark)
        d = pd.DataFrame({"group": groups.to_numpy(), "status": status.reindex(p["patient_id"]).to_numpy()})[reached]
        for g, sub in [*sorted(d.groupby("group")), *([("All patients", d)] if by is not None else [])]:
            n, a = len(sub), int((sub["status"] == "abstinent").sum())
            u, m = int((sub["status"] == "use").sum()), int((sub["status"] == "missing").sum())
            rows.append({"group": g, "month": month, "mark_day": mark, "n_eligible": n, "n_abstinent": a,
                         "n_use": u, "n_missing": m})
    table = pd.DataFrame(rows, columns=["group", "month", "mark_day", "n_eligible", "n_abstinent", "n_use",
                                        "n_missing"])
    for name, den in (("missing_as_use", table["n_eligible"]), ("completers", table["n_abstinent"] + table["n_use"])):
        lo, hi = wilson_ci(table["n_abstinent"].to_numpy(), np.maximum(den.to_numpy(), 1), conf_level)
        ok = den.to_numpy() > 0
        table[f"{name}_pct"] = np.where(ok, 100 * table["n_abstinent"] / np.maximum(den, 1), np.nan)
        table[f"{name}_low"], table[f"{name}_high"] = np.where(ok, 100 * lo, np.nan), np.where(ok, 100 * hi, np.nan)
    definition = ("30-day continuous abstinence at 6 / 12 months: no use of any substance on days 151–180 / 336–365 "
                  "after the first ketamine session, confirmed by the daily use log (every day logged) or by follow-up "
                  "recall windows reporting no use that cover all 30 days; use when a logged day, a follow-up window "
                  "inside the 30 days, a relapse date or a urine test for a non-prescribed substance there shows it. "
                  "Eligible: patients whose data reach the mark. Bounds: missing counted as use (n = eligible) and "
                  "completers only (n = known status). Wilson 95% intervals.")
    notes = (f"Data end {end.date()}: patients whose day 180 / 365 is later are not yet eligible.",)
    return ContinuousAbstinence(table=table, definition=definition, conf_level=conf_level, notes=notes)


# ----------------------------------------------------------------------------------------------------- courses


@dataclass(frozen=True)
class Courses:
    """Observed means of AUDIT-C, BAM, craving and GAD-7 per time window and group.

    ``table``: ``measure``, ``label``, ``group``, ``window``, ``window_order``, ``n``, ``estimate``, ``ci_low``,
    ``ci_high``. ``missing``: measures not recorded in this export (label → sentence).
    """

    table: pd.DataFrame
    missing: dict[str, str]
    definition: str
    conf_level: float
    notes: tuple[str, ...] = ()

    @property
    def recorded(self) -> list[str]:
        """The measures of :data:`COURSES` this export records, in that order (the page's choice; the first is its
        default)."""
        present = set(self.table["measure"])
        return [m for m in COURSES if m in present]


def courses(cohort: Cohort, *, by: str | None = "program", conf_level: float = 0.95) -> Courses:
    """Observed AUDIT-C, BAM, craving and GAD-7 courses (module docstring)."""
    return once(cohort, ("substance_use.courses", by, conf_level), lambda: _courses(cohort, by, conf_level))


def _courses(cohort: Cohort, by: str | None, conf_level: float) -> Courses:
    groups = _group(cohort, by)
    fu = pd.concat([f for f in (cohort.pretreatment, cohort.followups) if len(f)], ignore_index=True) \
        if len(cohort.followups) or len(cohort.pretreatment) else cohort.followups
    parts, missing = [], {}
    for m, label in COURSES.items():
        if m in ("craving", "gad7"):
            s = cohort.measures[cohort.measures["measure"] == m]
            frame = pd.DataFrame({"patient_id": s["patient_id"], "days": s["days"], "value": s["value"]})
        elif m in fu.columns:
            frame = pd.DataFrame({"patient_id": fu["patient_id"], "days": fu["days"], "value": fu[m].astype(float)})
        else:
            frame = pd.DataFrame(columns=["patient_id", "days", "value"])
        frame = frame.dropna(subset=["value"])
        if frame.empty:
            missing[label] = f"{label}: {NOT_RECORDED}."
            continue
        parts.append(observed_course(frame, groups, conf_level).assign(measure=m, label=label))
    cols = ["measure", "label", "group", "window", "window_order", "n", "estimate", "ci_low", "ci_high"]
    table = pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)
    definition = ("Observed mean score per time window (baseline = days −30 to 0; then months 1, 2–3, 4–6, 7–12 and "
                  "later), each patient once per window (the mean of their scores there), with t 95% intervals; "
                  "n = patients. AUDIT-C and BAM from follow-ups, craving and GAD-7 from sessions and follow-ups. "
                  "Lower is better except BAM protective factors.")
    return Courses(table=table, missing=missing, definition=definition, conf_level=conf_level,
                   notes=tuple(missing.values()))


# ------------------------------------------------------------------------------- tables as shown (suppressed)


def _pct_text(e: float, lo: float, hi: float, hidden: bool) -> str:
    if hidden:
        return "hidden (a count of 1–10)"
    return fmt.pct_ci(e / 100, lo / 100, hi / 100, 0) if pd.notna(e) else "—"


def abstinence_table(cab: ContinuousAbstinence, *, min_cell: int = 11, enabled: bool = True) -> pd.DataFrame:
    """:class:`ContinuousAbstinence` as shown: counts with small-cell suppression (the group rows add up to
    'All patients' within a month), both bounds as ``% (CI)``, hidden with their counts."""
    t = cab.table.assign(n_known=cab.table["n_abstinent"] + cab.table["n_use"])
    margin = ("group", "All patients") if (t["group"] == "All patients").any() and t["group"].nunique() > 1 else None
    s = suppress_counts(t, count_columns=["n_abstinent", "n_use", "n_missing"], total_columns=["n_eligible"],
                        rate_columns={"missing_as_use_pct": ("n_abstinent", "n_eligible")}, margin=margin,
                        by=["month"], min_cell=min_cell, enabled=enabled)
    text = s.text()
    hide_all = s.mask["missing_as_use_pct"].to_numpy(bool)
    hide_comp = s.mask["n_abstinent"].to_numpy(bool) | s.mask["n_use"].to_numpy(bool)
    return pd.DataFrame({
        "group": t["group"], "month": t["month"], "days": [f"{d - 29}–{d}" for d in t["mark_day"]],
        "eligible": text["n_eligible"], "abstinent": text["n_abstinent"], "use": text["n_use"],
        "missing": text["n_missing"],
        "missing = use, % (95% CI)": [_pct_text(*r, h) for *r, h in zip(
            t["missing_as_use_pct"], t["missing_as_use_low"], t["missing_as_use_high"], hide_all)],
        "completers only, % (95% CI)": [_pct_text(*r, h) for *r, h in zip(
            t["completers_pct"], t["completers_low"], t["completers_high"], hide_comp)],
    })


def urine_table(ur: UrineResults, *, group: str, min_cell: int = 11, enabled: bool = True) -> pd.DataFrame:
    """One group's urine results as shown: tests, negative and % (CI) hidden when small (the positives, tests minus
    negatives, protected too); excluded results masked when 1–10."""
    t = ur.table[ur.table["group"] == group].reset_index(drop=True)
    s = suppress_counts(t, count_columns=["n_negative"], total_columns=["n_tests"],
                        rate_columns={"estimate": ("n_negative", "n_tests")}, min_cell=min_cell, enabled=enabled)
    text = s.text()
    return pd.DataFrame({
        "substance": t["substance"], "time window": t["window"], "tests": text["n_tests"],
        "negative": text["n_negative"],
        "negative, % (95% CI)": [_pct_text(*r, h) for *r, h in zip(t["estimate"], t["ci_low"], t["ci_high"],
                                                                    s.mask["estimate"].to_numpy(bool))],
        "excluded (prescribed / in-treatment ketamine)": [mask_text(n, min_cell=min_cell, enabled=enabled)
                                                          for n in t["n_excluded"]],
    })
