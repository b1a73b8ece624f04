"""From accepted export rows to the analysis-ready cohort.

Definitions (data-contract.md, "Derived outcomes"; every one is a :class:`~analytics.outcomes.settings.Settings` field):

* **Index date** (day 0): the patient's first attended ketamine session. Patients without one are not in the
  cohort. Only attended sessions are sessions (contract v2 ``status``): a row whose status is ``no_show``,
  ``cancelled``, ``scheduled`` or ``entered_in_error`` never sets the index date or counts as a session.
* **Pre-treatment assessments** (contract v2): a follow-up dated before the index date. Its scores can be the
  baseline (within the baseline window); its use answers describe use before treatment and are never a return to
  use. It is not a follow-up: :attr:`Cohort.followups`, ``n_followups``, censoring and events leave it out; it is
  kept in :attr:`Cohort.pretreatment`.
* **Day** of an event: calendar days since the index date; **weeks** = days / 7.
* **Assessment window**: a follow-up with ``window_days = w`` on date ``d`` covers the ``w`` days that end on
  ``d`` (first day ``d - w + 1``). Counts of abstinent or heavy days say something certain about use after
  day 0 only when that first day is on or after day 0.
* **Return to use** (``relapsed``): see :meth:`Settings.describe`. Its day is ``relapse_date`` when given, else
  the assessment date. Follow-ups after the first event are ignored for survival.
* **Urine results by substance** (contract v2 ``urine_substances``): a result counts as use (``urine_use``) when it
  lists a substance that is neither among the patient's ``prescribed`` medicines nor ketamine within
  ``Settings.ketamine_urine_days`` (7) days after a ketamine session (on or before the test); ``urine_excluded``
  names the substances left out. Without ``urine_substances`` a row's ``urine_tox = positive`` counts.
* **Daily use log** (contract v2 ``daily_use.csv``, :attr:`Cohort.daily_use`): a day is recorded when the log has a
  row for it, a use day when any row says ``used``, a heavy day when alcohol reaches ``heavy_drinks_women`` /
  ``heavy_drinks_men`` standard drinks (other or unknown sex: the women's threshold; an alcohol day without an
  amount is a use day, not a heavy one) or another drug is used.
  :attr:`Cohort.log_windows` holds days abstinent and heavy days per 30-day window (days 1–30, 31–60, …, as a
  30-day follow-up on day 30, 60, … covers them). The log is never a follow-up assessment (no scores). For a
  patient with a log, the log decides use: the first logged use (heavy) day after day 0 is the return to use, exact
  (``event_dated_by = "daily_log"``); their follow-ups' use answers and urine results are not used for it; a
  dropout status on a follow-up still counts under ``dropout_as_relapse``; without use they are censored at the
  later of their last logged day and last assessment. ``has_followup`` is True for them (they have outcome data).
* **Censoring**: a patient without return to use is censored at the last assessment (``days_to_event`` is that
  day, ``relapsed`` False). Patients without any follow-up have no ``days_to_event`` and are excluded from
  survival analyses (``has_followup`` False); the exclusion is counted in :attr:`Cohort.exclusions`.
* **Early dropout** (:class:`DropoutRule`): a patient without any follow-up whose first follow-up window has closed
  (day ``first_followup_day + grace_days``, default 30 + 14, on or before the data end date). Not "no follow-up
  yet": :func:`dropout_outcomes` counts them as return to use (on the expected first assessment day, or their last
  session if later) in the dropout-as-event sensitivity rule; the main (censored) rule leaves them out.
* **Event dating** (``event_dated_by``): ``relapse_date`` when the follow-up gives one; ``visit`` when it does not,
  so the return to use happened somewhere after the previous assessment (``event_interval_start_days``, day 0 for
  the first) and on or before this one (interval-censored, dated at its right end); ``dropout`` when a
  lost-to-follow-up/withdrew status is the event (``Settings.dropout_as_relapse``).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from analytics.errors import InsufficientData
from analytics.outcomes.settings import DropoutRule, Settings
from analytics.privacy.counts import note_n

__all__ = ["Cohort", "DropoutRule", "Settings", "build_cohort", "dropout_outcomes", "early_dropouts", "id_positions"]
from schemas.arrow import text_array, text_codes, text_isin, text_series

if TYPE_CHECKING:  # pragma: no cover
    from schemas.validate import ValidatedExports

PATIENT_ATTRIBUTES = ("program", "primary_substance", "sex", "age", "site", "prior_treatments")
MEASURES = ("phq9", "gad7", "craving")
# the session columns build_cohort reads (the index date, patient attributes, attended rows, scores)
SESSION_COLUMNS_READ = ("patient_id", "session_date", "session_type", "status", "route", "clinician", "site", *MEASURES)
DROPOUT_STATUSES = ("lost_to_follow_up", "withdrew")
PHQ9_BANDS = ((0, 4, "0–4 minimal"), (5, 9, "5–9 mild"), (10, 14, "10–14 moderate"),
              (15, 19, "15–19 moderately severe"), (20, 27, "20–27 severe"))
AGE_BANDS = ((18, 29, "18–29"), (30, 44, "30–44"), (45, 59, "45–59"), (60, 100, "60+"))


def ids_in(values: pd.Series, members: object) -> pd.Series:
    """``values.isin(members)`` for patient ids (Arrow hash kernel, :func:`schemas.arrow.text_isin`); missing values
    are never members. Integer keys (:func:`analytics.outcomes.benchmarks` works on them) use NumPy."""
    if pd.api.types.is_integer_dtype(values.dtype):
        keys = values.to_numpy()
        wanted = np.asarray(list(members) if isinstance(members, (set, frozenset)) else members, dtype=np.int64)
        top = max(int(keys.max(initial=-1)), int(wanted.max(initial=-1))) + 1
        if len(keys) and keys.min() >= 0 and wanted.min(initial=0) >= 0 and top <= 4 * (len(keys) + len(wanted)):
            table = np.zeros(top, dtype=bool)  # keys are row positions: a look-up table, no sorting
            table[wanted] = True
            return pd.Series(table[keys], index=values.index)
        return pd.Series(np.isin(keys, wanted), index=values.index)
    return text_isin(values, members)


def id_positions(values: pd.Series, keys: pd.Series) -> np.ndarray:
    """Position of each patient id of ``values`` among ``keys`` (unique ids), -1 where absent or missing: Arrow's
    hash kernel for text ids (:func:`schemas.arrow.text_codes`), pandas' for others (integer keys)."""
    if isinstance(values.array, pd.arrays.ArrowStringArray) and isinstance(keys.array, pd.arrays.ArrowStringArray):
        return text_codes(values, keys)
    return pd.Index(keys).get_indexer(values)


def _bands(values: pd.Series, bins: list[float], labels: list[str]) -> pd.Series:
    """``pd.cut(values, bins, labels=labels).astype("string")``: intervals (bins[i], bins[i + 1]], missing outside
    them and where the value is missing; the labels taken by code (the categorical's cast to text built a Python
    string per row: 0.1 s per 200,000)."""
    x = values.astype(float).to_numpy()
    code = np.searchsorted(np.asarray(bins, dtype=float), x, side="left") - 1  # bins[code] < x <= bins[code + 1]
    code[np.isnan(x) | (code < 0) | (code >= len(labels))] = -1
    return pd.Series(pd.array(labels, dtype="string").take(code, allow_fill=True), index=values.index,
                     name=values.name)


def phq9_band(score: pd.Series) -> pd.Series:
    """PHQ-9 severity band labels (Kroenke 2001 thresholds 5, 10, 15, 20); missing stays missing."""
    return _bands(score, [-0.5, 4.5, 9.5, 14.5, 19.5, 27.5], [b[2] for b in PHQ9_BANDS])


def age_band(age: pd.Series) -> pd.Series:
    return _bands(age, [17.5, 29.5, 44.5, 59.5, 200], [b[2] for b in AGE_BANDS])


@dataclass(frozen=True)
class Cohort:
    """Analysis-ready tables built from accepted rows under one :class:`Settings`.

    Attributes
    ----------
    patients:
        One row per patient with at least one ketamine session. Columns: ``patient_id``, ``index_date``,
        ``index_route`` (route of the first ketamine session), ``program``, ``primary_substance``, ``sex``,
        ``age``, ``age_band``, ``site``, ``clinician``, ``prior_treatments``, ``baseline_phq9``,
        ``baseline_gad7``, ``baseline_craving``, ``baseline_band``, ``n_ketamine_sessions``, ``n_sessions``,
        ``n_followups``, ``has_followup``, ``last_assessment_date``, ``last_status``, ``relapsed`` (bool),
        ``days_to_event`` (float; NaN without follow-up), ``event_date``, ``event_dated_by`` (``relapse_date``,
        ``visit``, ``dropout``; missing when censored), ``event_interval_start_days`` (events dated by visit: the
        previous assessment's day, at least 0; NaN otherwise).
    measures:
        Long table of repeated measures on or after the start of the baseline window: ``patient_id``,
        ``date``, ``days``, ``weeks``, ``measure`` (``phq9``, ``gad7``, ``craving``, ``pda``), ``value``,
        ``source`` (``session``/``followup``). Same-day duplicates of one measure are averaged.
    followups:
        Accepted follow-ups of cohort patients with ``days``, ``window_start_days``, ``window_after_index``,
        ``pda`` (0–1), ``use_any``, ``use_heavy`` (the per-assessment use flags under each definition).
    sessions:
        Accepted sessions of cohort patients with ``days`` since the index date.
    exclusions:
        Reason → number of patients (e.g. sessions without any ketamine session).
    pretreatment:
        Accepted assessments dated before the patient's index date (same columns as ``followups``; use flags
        all False, ``pda`` missing): their scores are in ``measures`` and can be the baseline.
    daily_use:
        The daily use log (contract v2) of cohort patients, one row per patient and day: ``patient_id``, ``date``,
        ``days``, ``used``, ``heavy``, ``substances`` (those used that day, ``;``-joined). Empty without a log.
    log_windows:
        Per patient with a log and 30-day window after day 0: ``patient_id``, ``window`` (1 = days 1–30),
        ``start_day``, ``end_day``, ``days_recorded``, ``days_abstinent``, ``heavy_days``, ``pda`` (abstinent /
        recorded, 0–1).
    """

    patients: pd.DataFrame
    measures: pd.DataFrame
    followups: pd.DataFrame
    sessions: pd.DataFrame
    settings: Settings
    exclusions: dict[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    pretreatment: pd.DataFrame = field(default_factory=pd.DataFrame)
    daily_use: pd.DataFrame = field(default_factory=pd.DataFrame)
    log_windows: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def survival_patients(self) -> pd.DataFrame:
        """Patients with a follow-up, i.e. with a defined ``days_to_event``."""
        return self.patients[self.patients["has_followup"]]

    @cached_property
    def data_end(self) -> pd.Timestamp | None:
        """The latest session, assessment or daily-log date in the cohort: "today" for the data; None without any date.

        Computed once per cohort (a filtered cohort is a new :class:`Cohort` and computes its own)."""
        dates = [self.sessions["session_date"].max()] if len(self.sessions) else []
        if len(self.followups):
            dates.append(self.followups["assessment_date"].max())
        if len(self.daily_use):
            dates.append(self.daily_use["date"].max())
        dates = [d for d in dates if pd.notna(d)]
        return pd.Timestamp(max(dates)) if dates else None

    def data_end_date(self) -> pd.Timestamp:
        """:attr:`data_end`, or a sentence saying there is none."""
        if self.data_end is None:
            raise InsufficientData("The exports hold no dated sessions or assessments. Upload a sessions export.")
        return self.data_end

    def window_closed(self, window_days: int, *, as_of: pd.Timestamp | None = None) -> pd.Series:
        """Per patient (aligned with :attr:`patients`): has the window of days 0 … ``window_days - 1`` closed by
        ``as_of`` (default :attr:`data_end`)? Only such patients can be judged on that window."""
        end = self.data_end_date() if as_of is None else pd.Timestamp(as_of)
        return self.patients["index_date"] + pd.to_timedelta(window_days - 1, unit="D") <= end


def early_dropouts(cohort: Cohort, rule: DropoutRule | None = None, *,
                   as_of: pd.Timestamp | None = None) -> pd.Series:
    """Per patient (aligned with ``cohort.patients``): an early dropout under ``rule`` (default: the cohort's
    ``settings.dropout_rule``, see :class:`DropoutRule`)?

    Patients whose first follow-up window is still open, or who have a follow-up, are not."""
    rule = rule or cohort.settings.dropout_rule
    if cohort.patients.empty:
        return pd.Series(False, index=cohort.patients.index)
    closed = cohort.window_closed(rule.closes_day + 1, as_of=as_of)
    return (~cohort.patients["has_followup"].astype(bool)) & closed


def dropout_outcomes(cohort: Cohort, *, as_event: bool, rule: DropoutRule | None = None,
                     as_of: pd.Timestamp | None = None) -> pd.DataFrame:
    """Time to return to use under one of the two dropout rules, whatever ``Settings.dropout_as_relapse`` says.

    ``as_event=False`` (dropout censored): a lost-to-follow-up/withdrew status is a censoring at that assessment;
    patients without any follow-up are left out. ``as_event=True`` (dropout counted as return to use, the Dakwar 2019
    "use or dropout" event): the first lost-to-follow-up/withdrew status is a return to use on that assessment's day
    (unless use came first), and every early dropout is a return to use on the day of the expected first assessment
    (``rule.first_followup_day``), or of their last session when that is later.

    Returns
    -------
    pandas.DataFrame
        One row per patient of ``cohort.patients`` (same order): ``patient_id``, ``included`` (in the analysis
        under this rule), ``days_to_event``, ``relapsed``, ``early_dropout``, ``dropout_event`` (the event is a
        dropout, status or early).
    """
    rule = rule or cohort.settings.dropout_rule
    p = cohort.patients
    ids = p["patient_id"]
    fu = cohort.followups
    f_code = text_codes(fu["patient_id"], ids)
    keep = f_code >= 0
    fu, f_code = (fu, f_code) if keep.all() else (fu[keep], f_code[keep])
    index_date = pd.Series(p["index_date"].to_numpy(), index=pd.Index(ids))
    under_rule = cohort.settings.with_(dropout_as_relapse=as_event)
    ev = _events(fu, f_code, index_date, under_rule)
    on_log = p["has_daily_log"].to_numpy(bool) if "has_daily_log" in p else np.zeros(len(p), dtype=bool)
    if on_log.any():  # the daily log decides use for its patients, as in the cohort itself
        ev = _log_events(ev, cohort.daily_use, fu, f_code, index_date, on_log, under_rule)
    ev = ev.reindex(index_date.index)
    out = pd.DataFrame({"patient_id": ids.to_numpy(),
                        "included": p["has_followup"].to_numpy(bool),
                        "days_to_event": ev["days_to_event"].to_numpy(float),
                        "relapsed": ev["relapsed"].fillna(False).to_numpy(bool),
                        "early_dropout": early_dropouts(cohort, rule, as_of=as_of).to_numpy(bool)})
    out["dropout_event"] = (ev["event_dated_by"] == "dropout").fillna(False).to_numpy(bool)
    if as_event:
        early = out["early_dropout"].to_numpy(bool)
        s = cohort.sessions
        last_contact = s.groupby("patient_id")["days"].max() if len(s) else pd.Series(dtype=float)
        contact = ids.map(last_contact).to_numpy(float)
        day = np.fmax(float(rule.first_followup_day), contact)
        out.loc[early, "days_to_event"] = day[early]
        out.loc[early, ["relapsed", "included", "dropout_event"]] = True
    return out


def _first_per_patient(frame: pd.DataFrame, column: str, codes: np.ndarray, pids: pd.Index) -> pd.Series:
    """First non-missing value of ``column`` per patient of ``pids``, in the frame's order (missing where none);
    ``codes``: each row's patient as a position in ``pids`` (one hash look-up of the ids for every column)."""
    values = frame[column]
    rows = np.flatnonzero(values.notna().to_numpy(dtype=bool))
    first = np.full(len(pids), len(frame), dtype=np.int64)
    np.minimum.at(first, codes[rows], rows)  # each patient's earliest row with a value
    first[first == len(frame)] = -1  # none: missing
    return pd.Series(values.array.take(first, allow_fill=True), index=pids, name=column)


def build_cohort(data: ValidatedExports, settings: Settings | None = None, *, consume: bool = False,
                 session_columns: Collection[str] | None = None) -> Cohort:
    """Derive the cohort from accepted rows.

    Parameters
    ----------
    data:
        Accepted rows of the three exports (:func:`schemas.validate.validate_exports`).
    consume:
        The caller hands ``data`` over (the command line): the columns of ``data.sessions`` are removed as the
        cohort's sessions are made from them, so that the accepted rows and the cohort's copy are never both held
        (at a million patients each is GBs).
    session_columns:
        Keep only these columns of the sessions in :attr:`Cohort.sessions` (and ``days``); None: all. A caller that
        reads a few (the command line's ``analyze``, :data:`analytics.outcomes.pipeline.ANALYZE_SESSION_COLUMNS`)
        spares the others, e.g. the session monitoring columns: with ``consume`` they are removed from
        ``data.sessions`` before the cohort is made (GBs at a million patients).
    settings:
        Outcome definitions; defaults are the contract's.
    """
    settings = settings or Settings()
    sessions = data.sessions
    if session_columns is not None:  # the columns read here, and those the caller keeps
        wanted = {*SESSION_COLUMNS_READ, *session_columns}
        unused = [c for c in sessions.columns if c not in wanted]
        if consume:
            for col in unused:
                del sessions[col]
        elif unused:
            sessions = sessions[[c for c in sessions.columns if c in wanted]]
    if "status" in sessions.columns:  # only attended rows are sessions (validation already keeps only those)
        attended = (sessions["status"].isna() | sessions["status"].eq("attended")).fillna(True).to_numpy(bool)
        sessions = sessions if attended.all() else sessions[attended]
    sessions = _sorted_sessions(sessions, data.sessions if consume else None)
    ket_cols = ["patient_id", "session_date", *[c for c in ("route", "clinician", "site") if c in sessions.columns]]
    is_ket = (sessions["session_type"] == "ketamine").to_numpy(bool)
    ket = sessions.loc[is_ket, ket_cols]  # the columns used below
    index = ket.groupby("patient_id", sort=True)["session_date"].min().rename("index_date")
    # from here on patients are integer codes: their position in the (sorted) patients index (-1: no ketamine session)
    s_code = text_codes(sessions["patient_id"], index.index.to_series())
    k_code = s_code[is_ket]
    exclusions: dict[str, int] = {}
    n_no_ket = int(sessions.loc[s_code < 0, "patient_id"].nunique(dropna=False))
    if n_no_ket:
        exclusions["patients with sessions but no ketamine session"] = n_no_ket

    patients = index.to_frame()
    patients["index_route"] = _first_per_patient(ket, "route", k_code, index.index)
    patients["clinician"] = _first_per_patient(ket, "clinician", k_code, index.index)
    attrs = data.patients.set_index("patient_id") if len(data.patients) else pd.DataFrame()
    # each attribute's .reindex(patients.index), with the patients looked up in the attributes' index once (not
    # once per column: most of the 2.3 s of reindexing at a million patients); -1 (not in patients.csv): missing
    rows = attrs.index.get_indexer(patients.index) if len(attrs.columns) else None
    pids = patients.index

    def attribute(col: str) -> pd.Series:
        return pd.Series(pd.api.extensions.take(attrs[col].array, rows, allow_fill=True), index=pids)

    for col in PATIENT_ATTRIBUTES:
        patients[col] = attribute(col) if col in attrs.columns else pd.NA
    if "site" in sessions.columns:
        patients["site"] = patients["site"].fillna(_first_per_patient(ket, "site", k_code, index.index))
    patients["age_band"] = age_band(patients["age"])

    ids = patients.index.to_series()
    index_date = patients["index_date"]
    in_cohort = s_code >= 0
    patients["n_ketamine_sessions"] = np.bincount(s_code[in_cohort & is_ket], minlength=len(patients))
    patients["n_sessions"] = np.bincount(s_code[in_cohort], minlength=len(patients))
    sess = sessions if in_cohort.all() else _rows_of(sessions, in_cohort, data.sessions if consume else None)
    s_code = s_code[in_cohort]
    sess = sess.assign(days=(sess["session_date"] - _at(index_date, s_code, sess.index)).dt.days)

    fu = data.followups.sort_values(["patient_id", "assessment_date"], kind="stable")
    f_code = text_codes(fu["patient_id"], ids)
    n_fu_orphans = int((f_code < 0).sum())
    if n_fu_orphans:
        exclusions["follow-ups of patients without a ketamine session"] = n_fu_orphans
        fu, f_code = fu[f_code >= 0], f_code[f_code >= 0]
    prescribed = attribute("prescribed") if "prescribed" in attrs.columns else None
    fu["urine_use"], fu["urine_excluded"] = _urine_use(fu, f_code, sess, s_code, prescribed, settings)
    fu = _derive_followup_flags(fu, _at(index_date, f_code, fu.index))
    pre = (fu["days"] < 0).to_numpy(bool)
    if pre.any():  # pre-treatment assessments: scores only (baseline); use answers never count
        fu.loc[pre, ["use_any", "use_heavy", "dropout"]] = False
        fu.loc[pre, "pda"] = np.nan

    measures, base = _measures(sess, s_code, fu, f_code, index_date, settings)
    if session_columns is not None:
        sess = sess[[c for c in sess.columns if c in session_columns or c == "days"]]
    pre_fu = fu[pre].reset_index(drop=True)
    if pre.any():
        fu, f_code = fu[~pre], f_code[~pre]
    for m in MEASURES:
        patients[f"baseline_{m}"] = base[m]
    patients["baseline_band"] = phq9_band(patients["baseline_phq9"])

    log = daily_log(data.daily_use, index_date, patients["sex"], settings)
    log_ids = pd.Index(log["patient_id"].unique())
    on_log = ids_in(patients.index.to_series(), log_ids).to_numpy(bool)
    events = _events(fu, f_code, index_date, settings)
    if on_log.any():
        events = _log_events(events, log, fu, f_code, index_date, on_log, settings)
    patients = patients.join(events)
    patients["n_followups"] = np.bincount(f_code, minlength=len(patients))
    patients["has_daily_log"] = on_log
    patients["has_followup"] = (patients["n_followups"] > 0) | patients["has_daily_log"]
    patients["relapsed"] = patients["relapsed"].fillna(False).astype(bool)
    n_no_fu = int((~patients["has_followup"]).sum())
    if n_no_fu:
        exclusions["patients without any follow-up (not in survival analyses)"] = n_no_fu
    patients = patients.reset_index()
    notes: tuple[str, ...] = (settings.describe(),)
    if len(pre_fu):
        notes += ((f"{len(pre_fu):,} pre-treatment assessment(s) (before the first ketamine session): their scores "
                  f"can be the baseline (within {settings.baseline_window_days} days before day 0); their use answers "
                  "describe use before treatment and never count as a return to use."),)
    if on_log.any():
        notes += (f"{note_n(int(on_log.sum()))} patient(s) have a daily use log: for them the log decides use "
                  "(exact days; it wins over follow-up use answers and urine results, which can only place a return "
                  "to use between two visits).",)
    n_log_orphans = 0 if data.daily_use is None else int(len(data.daily_use) - ids_in(
        data.daily_use["patient_id"], patients["patient_id"]).sum())
    if n_log_orphans:
        exclusions["daily use log rows of patients without a ketamine session"] = n_log_orphans
    return Cohort(patients=patients, measures=measures, followups=fu.reset_index(drop=True),
                  sessions=sess.reset_index(drop=True), settings=settings, exclusions=exclusions, notes=notes,
                  pretreatment=pre_fu, daily_use=log, log_windows=log_windows(log))


def _sorted_sessions(frame: pd.DataFrame, handed_over: pd.DataFrame | None) -> pd.DataFrame:
    """``frame.sort_values(["patient_id", "session_date"], kind="stable")``, without a copy when the rows are already
    in that order (exports usually are), else, with ``handed_over`` (see :func:`_rows_of`), built column by column so
    that the accepted rows and their sorted copy are never both held (GBs at a million patients)."""
    if _in_patient_date_order(frame):  # exports usually are: the sort itself is 1.8 s at a million patients
        return frame
    keys = pd.DataFrame({"p": frame["patient_id"].array, "d": frame["session_date"].array})
    order = keys.sort_values(["p", "d"], kind="stable").index.to_numpy()
    del keys
    if (order == np.arange(len(order))).all():
        return frame
    return frame.take(order) if handed_over is None else _taken(frame, order, handed_over)


def _in_patient_date_order(frame: pd.DataFrame) -> bool:
    """True when every row's (patient_id, session_date) is at most the next row's, so that the stable sort would
    keep the rows as they are: text compared byte by byte as Arrow's sort does (UTF-8 bytes), dates as times. False
    (the sort decides) when either key has a missing value or the patient ids are not Arrow text."""
    ids, dates = frame["patient_id"], frame["session_date"]
    if len(frame) < 2:
        return True
    if not isinstance(ids.array, pd.arrays.ArrowStringArray) or ids.hasnans or dates.hasnans:
        return False
    p = text_array(ids)
    before, after = p.slice(0, len(p) - 1), p.slice(1)
    d = dates.to_numpy()
    less = np.asarray(pc.less(before, after).to_numpy(zero_copy_only=False), dtype=bool)
    same = np.asarray(pc.equal(before, after).to_numpy(zero_copy_only=False), dtype=bool)
    return bool(np.all(less | (same & (d[:-1] <= d[1:]))))


def _rows_of(frame: pd.DataFrame, keep: np.ndarray, handed_over: pd.DataFrame | None) -> pd.DataFrame:
    """``frame[keep]``; with ``handed_over`` (the accepted rows the caller gave up), built by :func:`_taken`."""
    return frame[keep] if handed_over is None else _taken(frame, keep, handed_over)


def _taken(frame: pd.DataFrame, rows: np.ndarray, handed_over: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``frame`` at positions ``rows`` (or where the boolean mask ``rows`` is True), built column by
    column, each column removed from ``frame`` and from ``handed_over`` (the accepted rows the caller gave up, which
    ``frame`` may be or share columns with) as soon as it is copied: the two are never both held in full."""
    out = pd.DataFrame(index=frame.index[rows])
    for col in list(frame.columns):
        values = frame.pop(col)
        if col in handed_over.columns:
            del handed_over[col]
        out[col] = values.array[rows]  # positional: no alignment on the index
        del values
    return out


def _at(per_patient: pd.Series, codes: np.ndarray, index: pd.Index) -> pd.Series:
    """The per-patient value of each row, from the rows' patient codes (positions in ``per_patient``)."""
    return pd.Series(per_patient.to_numpy()[codes], index=index, dtype=per_patient.dtype)


def _derive_followup_flags(fu: pd.DataFrame, idx: pd.Series) -> pd.DataFrame:
    """The follow-ups with their day, window and use flags; ``idx`` is each row's index date."""
    fu["days"] = (fu["assessment_date"] - idx).dt.days
    window = fu["window_days"].fillna(30).astype(float)
    fu["window_days"] = window
    fu["window_start_days"] = fu["days"] - window + 1
    fu["window_after_index"] = fu["window_start_days"] >= 0
    fu["pda"] = fu["days_abstinent"].astype(float) / window
    positive_tox = fu["urine_use"].astype(bool) if "urine_use" in fu else \
        fu["urine_tox"].eq("positive").fillna(False).astype(bool)
    known_date = fu["relapse_date"].notna()
    any_use = fu["any_use"].eq(True).fillna(False).astype(bool)
    short_abst = (fu["days_abstinent"].astype(float) < window).fillna(False).astype(bool)
    heavy = (fu["heavy_days"].astype(float) > 0).fillna(False).astype(bool)
    ok = fu["window_after_index"].astype(bool)
    fu["use_any"] = any_use | (short_abst & ok) | positive_tox | known_date
    fu["use_heavy"] = (heavy & ok) | positive_tox | known_date  # data-contract v2 "Heavy-use return"
    # (positive_tox: a positive urine result for a substance that is not prescribed, see _urine_use)
    fu["dropout"] = fu["status"].isin(DROPOUT_STATUSES).fillna(False).astype(bool)
    return fu


def _urine_use(fu: pd.DataFrame, f_code: np.ndarray, sess: pd.DataFrame, s_code: np.ndarray,
               prescribed: pd.Series | None, settings: Settings) -> tuple[pd.Series, pd.Series]:
    """Per follow-up row: (urine result counts as use, substances left out as prescribed or in-treatment ketamine).

    With ``urine_substances`` given, the row counts as use when a listed substance is neither prescribed to the
    patient (``prescribed``, aligned with the patient codes) nor ketamine within ``settings.ketamine_urine_days`` days
    after a ketamine session; without it, ``urine_tox = positive`` counts (contract v2)."""
    tox = fu["urine_tox"].eq("positive").fillna(False).to_numpy(bool) if "urine_tox" in fu else \
        np.zeros(len(fu), dtype=bool)
    excluded = pd.Series(pd.NA, index=fu.index, dtype="string")
    if "urine_substances" not in fu or not fu["urine_substances"].notna().any():
        return pd.Series(tox, index=fu.index), excluded
    listed = fu["urine_substances"].notna().to_numpy(bool)
    rx = prescribed.to_numpy(object)[f_code] if prescribed is not None else np.full(len(fu), None, dtype=object)
    ket_recent = np.zeros(len(fu), dtype=bool)
    has_ket = fu["urine_substances"].str.contains("ketamine", regex=False).fillna(False).to_numpy(bool)
    if has_ket.any():
        ket = sess["session_type"].eq("ketamine").fillna(False).to_numpy(bool)
        last = pd.merge_asof(
            pd.DataFrame({"code": f_code[has_ket], "date": fu["assessment_date"].to_numpy()[has_ket],
                          "row": np.flatnonzero(has_ket)}).sort_values("date"),
            pd.DataFrame({"code": s_code[ket], "date": sess["session_date"].to_numpy()[ket],
                          "session": sess["session_date"].to_numpy()[ket]}).sort_values("date"),
            on="date", by="code", direction="backward")
        near = ((last["date"] - last["session"]).dt.days <= settings.ketamine_urine_days).fillna(False)
        ket_recent[last["row"].to_numpy()[near.to_numpy(bool)]] = True
    use = tox.copy()
    use[listed] = False
    out_text = np.full(len(fu), None, dtype=object)
    values = fu["urine_substances"].to_numpy(object)
    rows = np.flatnonzero(listed)
    # the answer depends only on (result list, prescribed list, recent ketamine): worked out once per distinct
    # combination (an export repeats a few dozen of them), then given to its rows
    list_code, _ = pd.factorize(values[rows])  # (not s_code: that name is the sessions' patient codes here)
    rx_code, rx_uniq = pd.factorize(rx[rows])  # a missing prescription: code -1 (no own substances)
    key = (list_code.astype(np.int64) * (len(rx_uniq) + 1) + (rx_code + 1)) * 2 + ket_recent[rows]
    combo, first, at = np.unique(key, return_index=True, return_inverse=True)
    combo_use = np.zeros(len(combo), dtype=bool)
    combo_text = np.full(len(combo), None, dtype=object)
    for j, i in enumerate(rows[first]):
        items = str(values[i]).split(";")
        own = set(str(rx[i]).split(";")) if isinstance(rx[i], str) else set()
        left = [x for x in items if x in own or (x == "ketamine" and ket_recent[i])]
        combo_use[j] = len(left) < len(items)
        combo_text[j] = ";".join(left) if left else None
    use[rows] = combo_use[at]
    out_text[rows] = combo_text[at]
    excluded[:] = out_text
    return pd.Series(use, index=fu.index), excluded


def daily_log(log: pd.DataFrame | None, index_date: pd.Series, sex: pd.Series, settings: Settings) -> pd.DataFrame:
    """The daily use log of cohort patients, one row per patient and day (see :attr:`Cohort.daily_use`).

    ``index_date`` and ``sex`` are indexed by patient id. Rows of patients outside the cohort are left out."""
    cols = ["patient_id", "date", "days", "used", "heavy", "substances"]
    if log is None or log.empty:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(cols, (
            "string", "datetime64[ns]", "int64", bool, bool, "string"))})
    log = log[ids_in(log["patient_id"], index_date.index).to_numpy(bool)]
    female_or_unknown = ~sex.reindex(log["patient_id"]).eq("male").fillna(False).to_numpy(bool)
    limit = np.where(female_or_unknown, settings.heavy_drinks_women, settings.heavy_drinks_men)
    used = log["used"].fillna(False).to_numpy(bool)
    alcohol = log["substance"].eq("alcohol").fillna(False).to_numpy(bool)
    heavy = used & np.where(alcohol, (log["amount"].to_numpy(float) >= limit), True)
    day = pd.DataFrame({"patient_id": log["patient_id"].to_numpy(), "date": log["date"].to_numpy(),
                        "used": used, "heavy": heavy,
                        "substance": np.where(used, log["substance"].astype(object).to_numpy(), "")})
    out = day.groupby(["patient_id", "date"], sort=True).agg(used=("used", "any"), heavy=("heavy", "any")).reset_index()
    # substances used that day: one row per day is the rule, so only days with several substances are joined
    taken = day[used].drop_duplicates(["patient_id", "date", "substance"]).sort_values(["patient_id", "date",
                                                                                          "substance"])
    several = taken.duplicated(["patient_id", "date"], keep=False).to_numpy(bool)
    single = taken[~several].set_index(["patient_id", "date"])["substance"]
    joined = taken[several].groupby(["patient_id", "date"])["substance"].agg(";".join) if several.any() else \
        pd.Series(dtype=object)
    names = pd.concat([single, joined])
    key = pd.MultiIndex.from_frame(out[["patient_id", "date"]])
    out["substances"] = pd.Series(names.reindex(key).to_numpy(), index=out.index).astype("string")
    out["days"] = (out["date"] - out["patient_id"].map(index_date)).dt.days.astype("int64")
    out["patient_id"] = out["patient_id"].astype("string")
    return out[cols]


def log_windows(log: pd.DataFrame, width: int = 30) -> pd.DataFrame:
    """Days abstinent and heavy days per patient and ``width``-day window after day 0 (days 1–30, 31–60, …)."""
    after = log[log["days"] >= 1]
    w = (after["days"].to_numpy() - 1) // width + 1
    g = after.assign(window=w).groupby(["patient_id", "window"], sort=True)
    out = g.agg(days_recorded=("days", "size"), use_days=("used", "sum"), heavy_days=("heavy", "sum")).reset_index()
    out["start_day"] = (out["window"] - 1) * width + 1
    out["end_day"] = out["window"] * width
    out["days_abstinent"] = out["days_recorded"] - out["use_days"]
    out["pda"] = out["days_abstinent"] / out["days_recorded"]
    return out[["patient_id", "window", "start_day", "end_day", "days_recorded", "days_abstinent", "heavy_days",
                "pda"]]


def _log_events(events: pd.DataFrame, log: pd.DataFrame, fu: pd.DataFrame, f_code: np.ndarray,
                index_date: pd.Series, on_log: np.ndarray, settings: Settings) -> pd.DataFrame:
    """Replace the use events of patients with a daily log by the log's exact first use (heavy) day after day 0;
    a dropout event of their follow-ups still counts (``dropout_as_relapse``) when it comes first."""
    ids = index_date.index
    mine = on_log[f_code] if len(f_code) else np.zeros(0, dtype=bool)
    sub = fu[mine].copy()
    sub[["use_any", "use_heavy"]] = False  # the log decides use
    status_only = _events(sub, f_code[mine], index_date, settings) if len(sub) else None
    flag = log["used" if settings.relapse == "any" else "heavy"].to_numpy(bool) & (log["days"].to_numpy() >= 1)
    mine_ids = ids[on_log]
    use_day = log[flag].groupby("patient_id")["days"].min().reindex(mine_ids).to_numpy(float)
    last_log = log.groupby("patient_id")["days"].max().reindex(mine_ids).to_numpy(float)
    cols = ["relapsed", "days_to_event", "last_assessment_date", "last_status"]
    base = status_only[cols].reindex(mine_ids) if status_only is not None else \
        pd.DataFrame({c: pd.Series(np.nan, index=mine_ids, dtype=object) for c in cols})
    day0 = pd.Series(index_date.reindex(mine_ids).to_numpy(), index=mine_ids)
    last_fu = (pd.to_datetime(base["last_assessment_date"]) - day0).dt.days.to_numpy(float)
    dropped = base["relapsed"].eq(True).fillna(False).to_numpy(bool)
    drop_day = np.where(dropped, base["days_to_event"].to_numpy(float), np.inf)
    by_log = ~np.isnan(use_day) & (use_day <= drop_day)
    by_drop = ~by_log & dropped
    days = np.where(by_log, use_day, np.where(by_drop, drop_day, np.fmax(last_log, np.nan_to_num(last_fu, nan=-1))))
    dated = np.where(by_log, "daily_log", np.where(by_drop, "dropout", None)).astype(object)
    out = events.reindex(events.index.union(mine_ids))
    out["relapsed"] = out["relapsed"].astype("boolean")
    out.loc[mine_ids, "relapsed"] = by_log | by_drop
    out.loc[mine_ids, "days_to_event"] = days
    out.loc[mine_ids, "event_date"] = (day0 + pd.to_timedelta(days, unit="D")).to_numpy()
    out.loc[mine_ids, "last_assessment_date"] = pd.to_datetime(base["last_assessment_date"]).to_numpy()
    out["event_dated_by"] = out["event_dated_by"].astype("string")
    out.loc[mine_ids, "event_dated_by"] = pd.array(dated, dtype="string")
    out.loc[mine_ids, "event_interval_start_days"] = np.nan
    return out


def _last_of_runs(codes: np.ndarray) -> np.ndarray:
    """Positions of the last row of each run of equal codes."""
    return np.flatnonzero(np.r_[codes[1:] != codes[:-1], True]) if len(codes) else np.array([], dtype=np.int64)


def _first_of_runs(codes: np.ndarray) -> np.ndarray:
    """Positions of the first row of each run of equal codes."""
    return np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]]) if len(codes) else np.array([], dtype=np.int64)


def _events(fu: pd.DataFrame, f_code: np.ndarray, index_date: pd.Series, settings: Settings) -> pd.DataFrame:
    """Per patient with a follow-up: relapsed, days_to_event, event_date, last_assessment_date, last_status.

    ``fu`` is sorted by patient and date; ``f_code`` is each row's patient (position in ``index_date``)."""
    cols = ["relapsed", "days_to_event", "event_date", "last_assessment_date", "last_status", "event_dated_by",
            "event_interval_start_days"]
    if fu.empty:
        return pd.DataFrame(columns=cols, index=index_date.index)
    flag = (fu["use_any"] if settings.relapse == "any" else fu["use_heavy"]).to_numpy(bool)
    if settings.dropout_as_relapse:
        flag = flag | fu["dropout"].to_numpy(bool)
    last_date = fu["assessment_date"].groupby(f_code).max()
    with_fu = last_date.index.to_numpy()
    out = pd.DataFrame({"last_assessment_date": last_date.to_numpy()}, index=index_date.index[with_fu])
    has_status = np.flatnonzero(fu["status"].notna().to_numpy())
    last = has_status[_last_of_runs(f_code[has_status])]  # each patient's last row with a status
    out["last_status"] = fu["status"].iloc[last].set_axis(index_date.index[f_code[last]])
    flagged = np.flatnonzero(flag)
    first = flagged[_first_of_runs(f_code[flagged])]  # each patient's first row with the event
    relapse = fu["relapse_date"].to_numpy("datetime64[ns]")[first]
    flagged_use = fu["use_any" if settings.relapse == "any" else "use_heavy"].to_numpy(bool)[first]
    by_relapse_date = ~np.isnat(relapse) & flagged_use  # the event's day is relapse_date when given (contract)
    at = np.searchsorted(with_fu, f_code[first])
    out["relapsed"] = False
    out.iloc[at, out.columns.get_loc("relapsed")] = True
    event_date = out["last_assessment_date"].to_numpy().copy()
    event_date[at] = np.where(by_relapse_date, relapse, fu["assessment_date"].to_numpy("datetime64[ns]")[first])
    out["event_date"] = event_date
    out["days_to_event"] = (out["event_date"] - pd.Series(index_date.to_numpy()[with_fu], index=out.index)
                            ).dt.days.astype(float)
    dated_by = np.full(len(out), None, dtype=object)
    dated_by[at] = np.where(by_relapse_date, "relapse_date", np.where(flagged_use, "visit", "dropout"))
    out["event_dated_by"] = pd.Series(dated_by, index=out.index, dtype="string")
    start = np.full(len(out), np.nan)
    start[at] = np.where(by_relapse_date | ~flagged_use, np.nan, _previous_visit_days(fu, f_code)[first])
    out["event_interval_start_days"] = start
    return out[cols]


def _previous_visit_days(fu: pd.DataFrame, f_code: np.ndarray) -> np.ndarray:
    """Per follow-up row (sorted by patient and date): the day of the patient's previous assessment on an earlier
    date, at least day 0 (day 0 for the first one): where a return to use reported at this visit began, at the
    earliest."""
    days = fu["days"].to_numpy(float)
    if not len(days):
        return days
    new = np.r_[True, (f_code[1:] != f_code[:-1]) | (days[1:] != days[:-1])]
    starts = np.flatnonzero(new)
    same_patient = np.r_[False, f_code[starts[1:]] == f_code[starts[1:] - 1]]
    prev = np.where(same_patient, days[np.maximum(starts - 1, 0)], 0.0)
    return np.maximum(prev, 0.0)[np.cumsum(new) - 1]


def _measures(sess: pd.DataFrame, s_code: np.ndarray, fu: pd.DataFrame, f_code: np.ndarray, index_date: pd.Series,
              settings: Settings) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Long table of repeated measures, sorted by patient, measure and date; same-day duplicates of one measure are
    averaged (``source``: the last row's, follow-ups after sessions). Also each patient's baseline of each measure:
    the last (same-day averaged) score of the baseline window, day ``-baseline_window_days`` to day 0.

    Works on integer codes (``s_code``, ``f_code``: each row's patient as its position in the sorted ``index_date``
    index): a group-by or melt on the text ids costs several times more on a million scores.
    """
    pids = index_date.index
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]] = []  # patient, measure, date, value
    names = sorted({*MEASURES, "pda"})
    for frame, pcode, date_col, source in ((sess, s_code, "session_date", 0), (fu, f_code, "assessment_date", 1)):
        if frame.empty:
            continue
        date = frame[date_col].to_numpy("datetime64[ns]")
        columns = [m for m in MEASURES if m in frame.columns] + (["pda"] if source == 1 else [])
        for m in columns:
            value = pd.to_numeric(frame[m], errors="coerce").to_numpy(float)
            ok = ~np.isnan(value)
            parts.append((pcode[ok].astype(np.int32), np.full(ok.sum(), names.index(m), dtype=np.int8), date[ok],
                          value[ok], source))
    base = {m: np.full(len(pids), np.nan) for m in MEASURES}
    if not parts:
        return pd.DataFrame({"patient_id": pd.Series(dtype=pids.dtype), "date": pd.Series(dtype="datetime64[ns]"),
                             "days": pd.Series(dtype=np.int64), "weeks": pd.Series(dtype=float),
                             "measure": pd.Series(dtype="str"), "value": pd.Series(dtype=float),
                             "source": pd.Series(dtype="str")}), base
    # narrow codes, and each array put in order as soon as it is made (the unordered one is freed at once): at a
    # million patients the long table has tens of millions of rows, and every full-length copy costs GBs
    pcode = np.concatenate([p[0] for p in parts])
    mcode = np.concatenate([p[1] for p in parts])
    date = np.concatenate([p[2] for p in parts])
    # rows in the order of the former long table: sessions then follow-ups (then PDA), each measure by measure;
    # a stable sort keeps that order among same-day duplicates, so "last" is the follow-up's
    order = _order(pcode, mcode, date, len(names))
    pcode, mcode, date = pcode[order], mcode[order], date[order]
    value = np.concatenate([p[3] for p in parts])[order]
    src = np.concatenate([np.full(len(p[0]), p[4], dtype=np.int8) for p in parts])[order]
    del parts, order
    new = np.ones(len(pcode), dtype=bool)
    new[1:] = (pcode[1:] != pcode[:-1]) | (mcode[1:] != mcode[:-1]) | (date[1:] != date[:-1])
    start = np.flatnonzero(new)
    del new
    end = np.r_[start[1:], len(pcode)][:len(start)]  # none without scores
    mean = np.add.reduceat(value, start) / (end - start)
    source = src[end - 1]
    del src, end, value
    # one row per patient, measure and day from here on: the per-score arrays are freed at once
    patient, measure, date = pcode[start], mcode[start], date[start]
    del pcode, mcode, start
    first_day = index_date.to_numpy("datetime64[ns]")
    days = ((date - first_day[patient]) // np.timedelta64(1, "D")).astype(np.int64)  # floor, as .dt.days
    keep = days >= -settings.baseline_window_days
    if not keep.all():
        patient, measure, date, days, mean, source = (a[keep] for a in (patient, measure, date, days, mean, source))
    del keep
    pre = np.flatnonzero(days <= 0)  # the baseline window; within a patient and measure the rows go by date
    last = pre[_last_of_runs(patient[pre] * len(names) + measure[pre])]
    for m in MEASURES:
        mine = last[measure[last] == names.index(m)]
        base[m][patient[mine]] = mean[mine]
    rows = pd.RangeIndex(len(patient))
    ids = pids.take(patient).to_series(index=rows)
    columns = {"patient_id": ids if ids.dtype == sess["patient_id"].dtype else ids.astype(sess["patient_id"].dtype),
               "date": date, "days": days, "weeks": days / 7.0,
               "measure": _labels(names, measure), "value": mean, "source": _labels(["session", "followup"], source)}
    # the arrays as they are (copy=False): one block per column, neither consolidated nor copied (setting the columns
    # one by one copied each: 0.2 s at 200,000 patients)
    return pd.DataFrame(columns, index=rows, copy=False), base


def _order(pcode: np.ndarray, mcode: np.ndarray, date: np.ndarray, n_measures: int) -> np.ndarray:
    """``np.lexsort((date, mcode, pcode))``. Dates are calendar days, so the three keys fit one integer; its stable
    sort merges the already sorted parts (one per file and measure) ten times faster than the three-key sort."""
    day = np.timedelta64(1, "D")
    if len(date) == 0 or np.isnat(date).any() or ((date - date.min()) % day).any():
        return np.lexsort((date, mcode, pcode))
    days = (date - date.min()) // day
    span = int(days.max()) + 1
    if (int(pcode.max()) + 1) * n_measures * span >= 1 << 62:
        return np.lexsort((date, mcode, pcode))
    return np.argsort((pcode.astype(np.int64) * n_measures + mcode) * span + days, kind="stable")


def _labels(names: list[str], codes: np.ndarray) -> pd.Series:
    """A text column from a few labels and one code per row (Arrow take: no Python string per row)."""
    # large_string: the Arrow type of pandas' text columns, so the column is not cast (copied) into it
    return text_series(pc.take(pa.array(names, type=pa.large_string()), pa.array(codes)), pd.RangeIndex(len(codes)))
