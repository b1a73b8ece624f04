"""From accepted export rows to the analysis-ready cohort.

Definitions (data-contract.md, "Derived outcomes"; every one is a :class:`~analytics.settings.Settings` field):

* **Index date** (day 0): the patient's first ketamine session. Patients without one are not in the cohort.
* **Day** of an event: calendar days since the index date; **weeks** = days / 7.
* **Assessment window**: a follow-up with ``window_days = w`` on date ``d`` covers the ``w`` days that end on
  ``d`` (first day ``d - w + 1``). Counts of abstinent or heavy days say something certain about use after
  day 0 only when that first day is on or after day 0.
* **Return to use** (``relapsed``): see :meth:`Settings.describe`. Its day is ``relapse_date`` when given, else
  the assessment date. Follow-ups after the first event are ignored for survival.
* **Censoring**: a patient without return to use is censored at the last assessment (``days_to_event`` is that
  day, ``relapsed`` False). Patients without any follow-up have no ``days_to_event`` and are excluded from
  survival analyses (``has_followup`` False); the exclusion is counted in :attr:`Cohort.exclusions`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from analytics.settings import Settings
from schemas.arrow import text_codes, text_isin, text_series

if TYPE_CHECKING:  # pragma: no cover
    from schemas.validate import ValidatedExports

PATIENT_ATTRIBUTES = ("program", "primary_substance", "sex", "age", "site", "prior_treatments")
MEASURES = ("phq9", "gad7", "craving")
DROPOUT_STATUSES = ("lost_to_follow_up", "withdrew")
PHQ9_BANDS = ((0, 4, "0–4 minimal"), (5, 9, "5–9 mild"), (10, 14, "10–14 moderate"),
              (15, 19, "15–19 moderately severe"), (20, 27, "20–27 severe"))
AGE_BANDS = ((18, 29, "18–29"), (30, 44, "30–44"), (45, 59, "45–59"), (60, 100, "60+"))


def ids_in(values: pd.Series, members: object) -> pd.Series:
    """``values.isin(members)`` for patient ids (Arrow hash kernel, :func:`schemas.arrow.text_isin`); missing values
    are never members. Integer keys (:func:`analytics.benchmarks` works on them) use NumPy."""
    if pd.api.types.is_integer_dtype(values.dtype):
        return pd.Series(np.isin(values.to_numpy(), np.asarray(list(members) if isinstance(members, (set, frozenset))
                                                               else members, dtype=np.int64)), index=values.index)
    return text_isin(values, members)


def phq9_band(score: pd.Series) -> pd.Series:
    """PHQ-9 severity band labels (Kroenke 2001 thresholds 5, 10, 15, 20); missing stays missing."""
    bins = [-0.5, 4.5, 9.5, 14.5, 19.5, 27.5]
    labels = [b[2] for b in PHQ9_BANDS]
    return pd.cut(score.astype(float), bins=bins, labels=labels).astype("string")


def age_band(age: pd.Series) -> pd.Series:
    bins = [17.5, 29.5, 44.5, 59.5, 200]
    return pd.cut(age.astype(float), bins=bins, labels=[b[2] for b in AGE_BANDS]).astype("string")


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
        ``days_to_event`` (float; NaN without follow-up), ``event_date``.
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
    """

    patients: pd.DataFrame
    measures: pd.DataFrame
    followups: pd.DataFrame
    sessions: pd.DataFrame
    settings: Settings
    exclusions: dict[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def survival_patients(self) -> pd.DataFrame:
        """Patients with a follow-up, i.e. with a defined ``days_to_event``."""
        return self.patients[self.patients["has_followup"]]


def _first_per_patient(frame: pd.DataFrame, column: str) -> pd.Series:
    """First non-missing value of ``column`` per patient, in the frame's order."""
    sub = frame[["patient_id", column]].dropna(subset=[column])
    return sub.drop_duplicates("patient_id").set_index("patient_id")[column]


def build_cohort(data: ValidatedExports, settings: Settings | None = None) -> Cohort:
    """Derive the cohort from accepted rows.

    Parameters
    ----------
    data:
        Accepted rows of the three exports (:func:`schemas.validate.validate_exports`).
    settings:
        Outcome definitions; defaults are the contract's.
    """
    settings = settings or Settings()
    sessions = data.sessions.sort_values(["patient_id", "session_date"], kind="stable")
    ket = sessions[sessions["session_type"] == "ketamine"]
    index = ket.groupby("patient_id", sort=True)["session_date"].min().rename("index_date")
    all_ids = pd.Index(sessions["patient_id"].unique())
    exclusions: dict[str, int] = {}
    n_no_ket = int((~ids_in(all_ids.to_series(), index.index)).sum())
    if n_no_ket:
        exclusions["patients with sessions but no ketamine session"] = n_no_ket

    patients = index.to_frame()
    patients["index_route"] = _first_per_patient(ket, "route")
    patients["clinician"] = _first_per_patient(ket, "clinician")
    attrs = data.patients.set_index("patient_id") if len(data.patients) else pd.DataFrame()
    for col in PATIENT_ATTRIBUTES:
        if col in attrs.columns:
            patients[col] = attrs[col].reindex(patients.index)
        else:
            patients[col] = pd.NA
    if "site" in sessions.columns:
        patients["site"] = patients["site"].fillna(_first_per_patient(ket, "site").reindex(patients.index))
    patients["age_band"] = age_band(patients["age"])
    patients["n_ketamine_sessions"] = ket.groupby("patient_id").size().reindex(patients.index).fillna(0).astype(int)
    patients["n_sessions"] = sessions.groupby("patient_id").size().reindex(patients.index).fillna(0).astype(int)

    sess = sessions[ids_in(sessions["patient_id"], patients.index)].copy()
    sess["days"] = (sess["session_date"] - _per_row(patients["index_date"], sess["patient_id"])).dt.days

    fu = data.followups[ids_in(data.followups["patient_id"], patients.index)].copy()
    n_fu_orphans = int(len(data.followups) - len(fu))
    if n_fu_orphans:
        exclusions["follow-ups of patients without a ketamine session"] = n_fu_orphans
    fu = fu.sort_values(["patient_id", "assessment_date"], kind="stable")
    fu = _derive_followup_flags(fu, patients["index_date"])

    measures = _measures(sess, fu, patients["index_date"], settings)
    base = _baselines(measures, settings)
    for m in MEASURES:
        patients[f"baseline_{m}"] = base.get(m, pd.Series(dtype=float)).reindex(patients.index)
    patients["baseline_band"] = phq9_band(patients["baseline_phq9"])

    patients = patients.join(_events(fu, patients["index_date"], settings))
    patients["n_followups"] = fu.groupby("patient_id").size().reindex(patients.index).fillna(0).astype(int)
    patients["has_followup"] = patients["n_followups"] > 0
    patients["relapsed"] = patients["relapsed"].fillna(False).astype(bool)
    n_no_fu = int((~patients["has_followup"]).sum())
    if n_no_fu:
        exclusions["patients without any follow-up (not in survival analyses)"] = n_no_fu
    patients = patients.reset_index()
    notes = (settings.describe(),)
    return Cohort(patients=patients, measures=measures, followups=fu.reset_index(drop=True),
                  sessions=sess.reset_index(drop=True), settings=settings, exclusions=exclusions, notes=notes)


def _per_row(per_patient: pd.Series, patient_id: pd.Series) -> pd.Series:
    """``patient_id.map(per_patient)`` (a value per patient, indexed by id) by Arrow's hash look-up of the ids."""
    at = text_codes(patient_id, per_patient.index.to_series())
    values = per_patient.to_numpy()
    out = values[np.maximum(at, 0)]
    if (at < 0).any():
        out = pd.Series(out).where(at >= 0).to_numpy()
    return pd.Series(out, index=patient_id.index, dtype=per_patient.dtype)


def _derive_followup_flags(fu: pd.DataFrame, index_date: pd.Series) -> pd.DataFrame:
    idx = _per_row(index_date, fu["patient_id"])
    fu["days"] = (fu["assessment_date"] - idx).dt.days
    window = fu["window_days"].fillna(30).astype(float)
    fu["window_days"] = window
    fu["window_start_days"] = fu["days"] - window + 1
    fu["window_after_index"] = fu["window_start_days"] >= 0
    fu["pda"] = fu["days_abstinent"].astype(float) / window
    positive_tox = fu["urine_tox"].eq("positive").fillna(False).astype(bool)
    known_date = fu["relapse_date"].notna()
    any_use = fu["any_use"].eq(True).fillna(False).astype(bool)
    short_abst = (fu["days_abstinent"].astype(float) < window).fillna(False).astype(bool)
    heavy = (fu["heavy_days"].astype(float) > 0).fillna(False).astype(bool)
    ok = fu["window_after_index"].astype(bool)
    fu["use_any"] = any_use | (short_abst & ok) | positive_tox | known_date
    fu["use_heavy"] = heavy & ok
    fu["dropout"] = fu["status"].isin(DROPOUT_STATUSES).fillna(False).astype(bool)
    return fu


def _events(fu: pd.DataFrame, index_date: pd.Series, settings: Settings) -> pd.DataFrame:
    """Per patient: relapsed, days_to_event, event_date, last_assessment_date, last_status."""
    cols = ["relapsed", "days_to_event", "event_date", "last_assessment_date", "last_status"]
    if fu.empty:
        return pd.DataFrame(columns=cols, index=index_date.index)
    flag = fu["use_any"] if settings.relapse == "any" else fu["use_heavy"]
    if settings.dropout_as_relapse:
        flag = flag | fu["dropout"]
    last = fu.groupby("patient_id").agg(last_assessment_date=("assessment_date", "max"))
    last["last_status"] = fu.dropna(subset=["status"]).groupby("patient_id")["status"].last()
    first_event = fu[flag].groupby("patient_id", sort=False).head(1).set_index("patient_id")
    use_rel = first_event["relapse_date"].notna() & (
        first_event["use_any"] if settings.relapse == "any" else False)
    event_date = first_event["assessment_date"].where(~use_rel, first_event["relapse_date"])
    out = last.copy()
    out["relapsed"] = False
    out.loc[first_event.index, "relapsed"] = True
    out["event_date"] = out["last_assessment_date"]
    out.loc[first_event.index, "event_date"] = event_date
    out["days_to_event"] = (out["event_date"] - out.index.map(index_date)).dt.days.astype(float)
    return out[cols]


def _measures(sess: pd.DataFrame, fu: pd.DataFrame, index_date: pd.Series, settings: Settings) -> pd.DataFrame:
    """Long table of repeated measures, sorted by patient, measure and date; same-day duplicates of one measure are
    averaged (``source``: the last row's, follow-ups after sessions).

    Works on integer codes (patients by their position in the sorted ``index_date`` index): a group-by or melt on
    the text ids costs several times more on a million scores.
    """
    pids = index_date.index
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]] = []  # patient, measure, date, value
    names = sorted({*MEASURES, "pda"})
    for frame, date_col, source in ((sess, "session_date", 0), (fu, "assessment_date", 1)):
        if frame.empty:
            continue
        pcode = text_codes(frame["patient_id"], pids.to_series())
        date = frame[date_col].to_numpy("datetime64[ns]")
        columns = [m for m in MEASURES if m in frame.columns] + (["pda"] if source == 1 else [])
        for m in columns:
            value = pd.to_numeric(frame[m], errors="coerce").to_numpy(float)
            ok = ~np.isnan(value) & (pcode >= 0)
            parts.append((pcode[ok], np.full(ok.sum(), names.index(m)), date[ok], value[ok], source))
    if not parts:
        return pd.DataFrame({"patient_id": pd.Series(dtype=pids.dtype), "date": pd.Series(dtype="datetime64[ns]"),
                             "days": pd.Series(dtype=np.int64), "weeks": pd.Series(dtype=float),
                             "measure": pd.Series(dtype="str"), "value": pd.Series(dtype=float),
                             "source": pd.Series(dtype="str")})
    pcode = np.concatenate([p[0] for p in parts])
    mcode = np.concatenate([p[1] for p in parts])
    date = np.concatenate([p[2] for p in parts])
    value = np.concatenate([p[3] for p in parts])
    src = np.concatenate([np.full(len(p[0]), p[4], dtype=np.int8) for p in parts])
    # rows in the order of the former long table: sessions then follow-ups (then PDA), each measure by measure;
    # a stable sort keeps that order among same-day duplicates, so "last" is the follow-up's
    order = np.lexsort((date, mcode, pcode))
    pcode, mcode, date, value, src = pcode[order], mcode[order], date[order], value[order], src[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (pcode[1:] != pcode[:-1]) | (mcode[1:] != mcode[:-1]) | (date[1:] != date[:-1])
    start = np.flatnonzero(new)
    end = np.r_[start[1:], len(order)]
    mean = np.add.reduceat(value, start) / (end - start)
    first_day = index_date.to_numpy("datetime64[ns]")
    days = ((date[start] - first_day[pcode[start]]) // np.timedelta64(1, "D")).astype(np.int64)  # floor, as .dt.days
    keep = days >= -settings.baseline_window_days
    start, end, days = start[keep], end[keep], days[keep]
    return pd.DataFrame({
        "patient_id": pids.take(pcode[start]).to_series(index=pd.RangeIndex(len(start)))
        .astype(sess["patient_id"].dtype),
        "date": date[start], "days": days, "weeks": days / 7.0,
        "measure": _labels(names, mcode[start]), "value": mean[keep],
        "source": _labels(["session", "followup"], src[end - 1])})


def _labels(names: list[str], codes: np.ndarray) -> pd.Series:
    """A text column from a few labels and one code per row (Arrow take: no Python string per row)."""
    return text_series(pc.take(pa.array(names, type=pa.string()), pa.array(codes)), pd.RangeIndex(len(codes)))


def _baselines(measures: pd.DataFrame, settings: Settings) -> dict[str, pd.Series]:
    pre = measures[(measures["days"] <= 0) & (measures["days"] >= -settings.baseline_window_days)]
    last = pre.sort_values("days").groupby(["measure", "patient_id"])["value"].last()
    return {m: last.loc[m] for m in last.index.get_level_values(0).unique()}
