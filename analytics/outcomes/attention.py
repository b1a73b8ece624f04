"""Expected PHQ-9 for the "patients needing attention" list, from the trajectory model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analytics.errors import OutcomesError
from analytics.outcomes import trajectories
from analytics.outcomes.cohort import Cohort
from analytics.outcomes.memo import once, per_cohort
from analytics.outcomes.safety import VitalThresholds
from analytics.privacy.counts import note_n
from schemas.arrow import text_map


def expected_phq9(cohort: Cohort, *, by: str | None = "program") -> tuple[pd.DataFrame | None, str]:
    """Model-expected PHQ-9 on the day of each patient's latest score.

    The expectation is the mixed model's mean course for the patient's group (``phq9 ~ weeks * by``, REML),
    read at the week of the latest score: "where patients like this one usually are by now".

    Returns
    -------
    (table, note)
        ``table`` has ``patient_id``, ``days``, ``expected_phq9`` (None when the model cannot be fitted; the note
        says why and the caller falls back to the baseline). Fitted once per cohort and ``by`` (the page's
        reruns, e.g. a new margin, reuse it).
    """
    table, note = once(cohort, ("attention", "expected phq9", by), lambda: _expected_phq9(cohort, by))
    return (None if table is None else table.copy(deep=False)), note


def _expected_phq9(cohort: Cohort, by: str | None) -> tuple[pd.DataFrame | None, str]:
    phq = cohort.measures[(cohort.measures["measure"] == "phq9") & (cohort.measures["days"] > 0)]
    if phq.empty:
        return None, "No PHQ-9 after day 0: expectation = baseline."
    latest = phq.sort_values("days").groupby("patient_id").tail(1)[["patient_id", "days", "weeks"]]
    try:
        fit = trajectories.fit_trajectory(cohort, measure="phq9", by=by)
    except OutcomesError as err:
        if by is None:
            return None, f"Expected PHQ-9 = baseline (trajectory model not available: {err})"
        return expected_phq9(cohort, by=None)
    weeks = np.unique(np.round(latest["weeks"].to_numpy(), 1))
    pred = trajectories.predicted_means(fit, weeks=weeks).table
    pred = pred.assign(weeks=pred["weeks"].round(1))
    groups = cohort.patients.set_index("patient_id")[by].astype("string") if by else None
    latest = latest.assign(weeks=latest["weeks"].round(1),
                           group=text_map(latest["patient_id"], groups) if groups is not None else "all")
    key = pred.set_index(["group", "weeks"])["estimate"]
    idx = pd.MultiIndex.from_arrays([latest["group"].astype(object), latest["weeks"]])
    latest["expected_phq9"] = key.reindex(idx).to_numpy(dtype=float)
    note = (f"Expected PHQ-9: the mixed model's mean course ({fit.formula}, REML) for the patient's "
            f"{by or 'clinic'} at the week of their latest score.")
    return latest[["patient_id", "days", "expected_phq9"]].reset_index(drop=True), note


def attention_counts(table: pd.DataFrame, *, min_cell: int = 11, enabled: bool = True) -> tuple[str, pd.DataFrame]:
    """How many patients are flagged, in all and per reason, as the small-cell rule lets them be shown.

    Parameters
    ----------
    table:
        ``AttentionList.table`` (one row per patient and reason).

    Returns
    -------
    (total, counts)
        ``total``: the number of patients flagged as text (``"<11"`` for 1–10). ``counts``: ``reason``,
        ``patients`` (text). The reasons are parts of the total (when no patient has two, they add up to it):
        suppressed together, so that the total minus the shown reasons does not give a small one away.
    """
    from analytics.privacy.suppression import suppress_cells

    per = table.groupby("reason")["patient_id"].nunique() if len(table) else pd.Series(dtype=int)
    values: dict[object, float | None] = {("reason", r): float(n) for r, n in per.items()}
    values[("all",)] = float(table["patient_id"].nunique()) if len(table) else 0.0
    cells = suppress_cells(values, sums=[([("reason", r) for r in per.index], ("all",))], pooled=True,
                           min_cell=min_cell, enabled=enabled)
    counts = pd.DataFrame({"reason": list(per.index), "patients": [cells.text(("reason", r)) for r in per.index]},
                          columns=["reason", "patients"])
    return cells.text(("all",)), counts


# ---------------------------------------------------------------------------------------------------------------
# issue 22: the patient's own expected course (BLUPs), the ketamine misuse watch, and the ranked meeting list
# ---------------------------------------------------------------------------------------------------------------

def conditional_modes(resid: np.ndarray, weeks: np.ndarray, codes: np.ndarray, n_patients: int, *,
                      sd_intercept: float, sd_slope: float, corr: float, sd_residual: float) -> np.ndarray:
    """Conditional modes (BLUPs) of a random intercept and slope on ``weeks``, per patient.

    ``b_i = D Z_i'(Z_i D Z_i' + σ² I)^{-1} r_i = D (Z_i'Z_i D + σ² I)^{-1} Z_i' r_i`` with ``Z_i = [1, weeks]`` and
    ``r_i = y_i − X_i β̂`` (the second form needs no inverse of D, so boundary fits with a zero variance work).

    Parameters
    ----------
    resid:
        ``y − Xβ̂`` per score. ``weeks``: time of each score. ``codes``: patient position (0 … n_patients − 1).
    sd_intercept, sd_slope, corr, sd_residual:
        The fitted variance components (0 where the model holds a term at 0).

    Returns
    -------
    numpy.ndarray
        ``(n_patients, 2)``: intercept and slope deviations (0 for patients without scores). Checked against
        lme4 ``ranef`` (tests/reference/attention).
    """
    d = np.array([[sd_intercept ** 2, corr * sd_intercept * sd_slope],
                  [corr * sd_intercept * sd_slope, sd_slope ** 2]])
    w = np.asarray(weeks, float)
    r = np.asarray(resid, float)
    n = np.bincount(codes, minlength=n_patients).astype(float)
    sw = np.bincount(codes, weights=w, minlength=n_patients)
    sww = np.bincount(codes, weights=w * w, minlength=n_patients)
    g = np.stack([np.bincount(codes, weights=r, minlength=n_patients),
                  np.bincount(codes, weights=w * r, minlength=n_patients)], -1)
    s = np.stack([np.stack([n, sw], -1), np.stack([sw, sww], -1)], -2)
    m = s @ d + sd_residual ** 2 * np.eye(2)
    return (d @ np.linalg.solve(m, g[..., None]))[..., 0]


def conditional_variance(weeks: np.ndarray, codes: np.ndarray, n_patients: int, *, sd_intercept: float,
                         sd_slope: float, corr: float, sd_residual: float) -> np.ndarray:
    """``Var(b_i | y_i) = D − D (Z_i'Z_i D + σ² I)^{-1} Z_i'Z_i D`` per patient, ``(n_patients, 2, 2)`` (β̂ taken as
    known): the uncertainty of the patient's own course, for a prediction interval of their next score."""
    d = np.array([[sd_intercept ** 2, corr * sd_intercept * sd_slope],
                  [corr * sd_intercept * sd_slope, sd_slope ** 2]])
    w = np.asarray(weeks, float)
    n = np.bincount(codes, minlength=n_patients).astype(float)
    sw = np.bincount(codes, weights=w, minlength=n_patients)
    sww = np.bincount(codes, weights=w * w, minlength=n_patients)
    s = np.stack([np.stack([n, sw], -1), np.stack([sw, sww], -1)], -2)
    m = s @ d + sd_residual ** 2 * np.eye(2)
    return d - d @ np.linalg.solve(m, s @ d)


def own_expected_phq9(cohort: Cohort, *, by: str | None = "program") -> tuple[pd.DataFrame | None, str]:
    """Each patient's own expected PHQ-9 on the day of their latest score after day 0.

    The PHQ-9 model of the Symptom trajectories page (:func:`analytics.outcomes.trajectories.phq9_model`, time shape
    by AIC, REML, random intercept and slope on weeks) gives the program's mean course; the patient's random effects
    (BLUPs, :func:`conditional_modes`) estimated from their **earlier** scores (baseline included; the latest left
    out, so that it can be judged against them) move it to the patient's own course.

    Returns
    -------
    (table, note)
        ``patient_id``, ``days``, ``weeks``, ``expected_phq9`` (own course), ``group_mean`` (the program's mean
        course at that week), ``n_earlier`` (scores the BLUPs use), ``prediction_sd`` (SD of a new score around the
        own course: residual plus the BLUPs' conditional variance); None when the model cannot be fitted (the note
        says why). Kept once per cohort and ``by``.
    """
    table, note = once(cohort, ("attention", "own expected phq9", by), lambda: _own_expected(cohort, by))
    return (None if table is None else table.copy(deep=False)), note


def _own_expected(cohort: Cohort, by: str | None) -> tuple[pd.DataFrame | None, str]:
    d = trajectories.measure_frame(cohort, "phq9")
    if d[d["days"] > 0].empty:
        return None, "No PHQ-9 after day 0: no expected course."
    try:
        fit = trajectories.phq9_model(cohort, by=by)
    except OutcomesError as err:
        if by is not None:
            return _own_expected(cohort, None)
        return None, f"No expected course (PHQ-9 model not available: {err})"
    design = fit.design
    groups = (cohort.patients.set_index("patient_id")[by].astype("string") if by else None)
    d = d.assign(group=text_map(d["patient_id"], groups).astype(object) if groups is not None
                 else trajectories.ALL)
    d = d[d["group"].isin(design.groups)].sort_values(["patient_id", "days"], kind="stable").reset_index(drop=True)
    beta = fit.fixed.set_index("term").loc[list(design.names), "estimate"].to_numpy(float)
    mean = design.matrix(d["weeks"].to_numpy(float), d["group"].to_numpy(object) if by else None, None) @ beta
    is_last = ~d["patient_id"].duplicated(keep="last").to_numpy()
    latest = is_last & (d["days"].to_numpy(float) > 0)
    codes, ids = pd.factorize(d["patient_id"])
    earlier = ~is_last
    rnd = {k: (v or 0.0) for k, v in fit.random.items()}
    b = conditional_modes(d["value"].to_numpy(float)[earlier] - mean[earlier], d["weeks"].to_numpy(float)[earlier],
                          codes[earlier], len(ids), sd_intercept=rnd["sd_intercept"], sd_slope=rnd["sd_slope"],
                          corr=rnd["corr"], sd_residual=rnd["sd_residual"])
    w = d["weeks"].to_numpy(float)[latest]
    c = codes[latest]
    own = mean[latest] + b[c, 0] + b[c, 1] * w
    cv = conditional_variance(d["weeks"].to_numpy(float)[earlier], codes[earlier], len(ids),
                              sd_intercept=rnd["sd_intercept"], sd_slope=rnd["sd_slope"], corr=rnd["corr"],
                              sd_residual=rnd["sd_residual"])[c]
    z = np.stack([np.ones_like(w), w], -1)
    pred_sd = np.sqrt(rnd["sd_residual"] ** 2 + np.einsum("ni,nij,nj->n", z, cv, z))
    n_earlier = np.bincount(codes[earlier], minlength=len(ids))[c]
    table = pd.DataFrame({"patient_id": d["patient_id"].to_numpy()[latest], "days": d["days"].to_numpy(float)[latest],
                          "weeks": w, "expected_phq9": own, "group_mean": mean[latest], "n_earlier": n_earlier,
                          "prediction_sd": pred_sd})
    note = (f"Expected PHQ-9: the patient's own predicted course from the PHQ-9 mixed model ({fit.formula}, "
            f"{fit.method}): the {by or 'clinic'} mean course plus the patient's random intercept and slope (BLUPs) "
            "estimated from their earlier scores, read at the week of the latest score. With few earlier scores the "
            "own course stays close to the mean course (shrinkage).")
    return table, note


MISUSE_REASONS = {"ketamine_urine": "ketamine-positive urine outside the 7 days after a ketamine session",
                  "take_home_issue": "take-home ketamine: early refill or lost doses",
                  "urinary_symptoms": "urinary symptoms recorded"}


def misuse_signals(cohort: Cohort, *, since: pd.Timestamp | None = None, after_session_days: int = 7) -> pd.DataFrame:
    """The ketamine misuse watch, where the export records it.

    * ``ketamine_urine``: a follow-up whose ``urine_substances`` lists ``ketamine`` with no attended ketamine
      session in the ``after_session_days`` days before it (the session's own day included): ketamine the clinic
      did not give (contract v2; the column is read only when present).
    * ``take_home_issue``: a session with ``take_home_issue`` ``early_refill`` or ``lost``.
    * ``urinary_symptoms``: a session with ``urinary_symptoms`` yes (ketamine cystitis is a sign of heavy use).

    Parameters
    ----------
    since:
        Only signals dated on or after this day (None: all).

    Returns
    -------
    pandas.DataFrame
        ``patient_id``, ``reason`` (a key of :data:`MISUSE_REASONS`), ``date``, ``detail`` (words).
    """
    parts: list[pd.DataFrame] = []
    fu, s = cohort.followups, cohort.sessions
    if "urine_substances" in fu.columns and len(fu):
        pos = fu[fu["urine_substances"].astype("string").str.contains(r"(?:^|;)\s*ketamine\s*(?:;|$)", regex=True,
                                                                       case=False).fillna(False).to_numpy(bool)]
        if len(pos):
            ket = s.loc[s["session_type"].eq("ketamine").to_numpy(bool), ["patient_id", "session_date"]]
            j = pos[["patient_id", "assessment_date"]].reset_index().merge(ket, on="patient_id", how="left")
            gap = (j["assessment_date"] - j["session_date"]).dt.days
            covered = j[(gap >= 0) & (gap < after_session_days)]["index"].unique()
            out = pos[~pos.index.isin(covered)]
            parts.append(pd.DataFrame({"patient_id": out["patient_id"].to_numpy(), "reason": "ketamine_urine",
                                       "date": out["assessment_date"].to_numpy(),
                                       "detail": [f"ketamine-positive urine on {d:%Y-%m-%d}, no ketamine session in "
                                                  f"the {after_session_days} days before"
                                                  for d in out["assessment_date"]]}))
    if "take_home_issue" in s.columns:
        hit = s[s["take_home_issue"].isin(["early_refill", "lost"]).fillna(False).to_numpy(bool)]
        parts.append(pd.DataFrame({"patient_id": hit["patient_id"].to_numpy(), "reason": "take_home_issue",
                                   "date": hit["session_date"].to_numpy(),
                                   "detail": [f"take-home ketamine {'asked for early' if v == 'early_refill' else 'reported lost'} "
                                              f"on {d:%Y-%m-%d}" for v, d in zip(hit["take_home_issue"],
                                                                                 hit["session_date"])]}))
    if "urinary_symptoms" in s.columns:
        hit = s[s["urinary_symptoms"].astype("boolean").fillna(False).to_numpy(bool)]
        parts.append(pd.DataFrame({"patient_id": hit["patient_id"].to_numpy(), "reason": "urinary_symptoms",
                                   "date": hit["session_date"].to_numpy(),
                                   "detail": [f"urinary symptoms recorded on {d:%Y-%m-%d}" for d in hit["session_date"]]}))
    cols = ["patient_id", "reason", "date", "detail"]
    out = pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)
    if since is not None and len(out):
        out = out[pd.to_datetime(out["date"]) >= since]
    return out.sort_values(["patient_id", "date"], kind="stable").reset_index(drop=True)


def misuse_recorded(cohort: Cohort) -> dict[str, bool]:
    """Which misuse-watch signals the export can show at all (the column exists with a value)."""
    fu, s = cohort.followups, cohort.sessions
    return {"ketamine_urine": "urine_substances" in fu.columns and bool(fu["urine_substances"].notna().any()),
            "take_home_issue": "take_home_issue" in s.columns and bool(s["take_home_issue"].notna().any()),
            "urinary_symptoms": "urinary_symptoms" in s.columns and bool(s["urinary_symptoms"].notna().any())}


REASON_WORDS = {"phq9_above_expected": "PHQ-9 above own expected course", "followup_missed": "follow-up missed",
                "followup_overdue": "follow-up overdue", "safety_flag": "very high vital signs",
                "serious_event": "severe or serious event", "ketamine_urine": "ketamine-positive urine",
                "take_home_issue": "take-home ketamine issue", "urinary_symptoms": "urinary symptoms"}
# weight of each reason in the ranking (a patient's priority is the sum over their reasons; PHQ-9 adds 1 per
# 5 points above their own course beyond the margin)
WEIGHTS = {"ketamine_urine": 3.0, "take_home_issue": 3.0, "serious_event": 3.0, "safety_flag": 2.0,
           "urinary_symptoms": 2.0, "phq9_above_expected": 2.0, "followup_overdue": 1.0, "followup_missed": 1.0}
# the meeting list's safety flag: very high vital signs (not every raised reading; the Session safety page counts those)
ATTENTION_VITALS = VitalThresholds(systolic_mmhg=180, diastolic_mmhg=110, heart_rate_bpm=130)


@dataclass(frozen=True)
class RankedAttention:
    """Active patients needing attention, ranked.

    Attributes
    ----------
    table:
        One row per (patient, reason): ``patient_id``, ``reason``, ``detail`` (words, rounded numbers), ``date``,
        ``weight``.
    by_patient:
        One row per patient, highest priority first: ``rank``, ``patient_id``, ``priority``, ``reasons``
        (``; ``-joined), ``n_reasons``, ``latest``.
    n_active:
        Patients with a contact in the last ``active_days`` days.
    """

    table: pd.DataFrame
    by_patient: pd.DataFrame
    n_active: int
    active_days: int
    as_of: pd.Timestamp
    notes: tuple[str, ...] = ()

    @property
    def n_flagged(self) -> int:
        return int(self.by_patient["patient_id"].nunique())

    @property
    def flagged_share(self) -> float:
        return self.n_flagged / self.n_active if self.n_active else float("nan")


def _last_contact(cohort: Cohort) -> pd.Series:
    s = cohort.sessions.groupby("patient_id")["session_date"].max()
    if len(cohort.followups):
        f = cohort.followups.groupby("patient_id")["assessment_date"].max()
        s = pd.concat([s, f], axis=1).max(axis=1)
    return s


@per_cohort
def needing_attention(cohort: Cohort, *, phq9_margin: float = 5, phq9_floor: float = 10, by: str | None = "program",
                      active_days: int | None = None, followup_lookback_days: int = 30) -> RankedAttention:
    """The ranked list for the clinical meeting (see :data:`WEIGHTS`, :func:`own_expected_phq9`,
    :func:`misuse_signals`); only patients with a contact in the last ``active_days`` days
    (default ``Settings.attention_active_days``)."""
    from analytics.outcomes import qi

    days = int(active_days if active_days is not None else cohort.settings.attention_active_days)
    end = cohort.data_end_date()
    since = end - pd.Timedelta(days=days)
    last = _last_contact(cohort)
    active = set(last[last >= since].index)
    own, own_note = own_expected_phq9(cohort, by=by)
    expected = None if own is None else own[["patient_id", "days", "expected_phq9"]]
    base = qi.patients_needing_attention(cohort, expected=expected, phq9_margin=phq9_margin, safety_events=(),
                                         thresholds=ATTENTION_VITALS, followup_lookback_days=followup_lookback_days)
    t = base.table
    rows = [t[~t["reason"].isin(["phq9_above_expected", "followup_overdue"])][["patient_id", "reason", "detail",
                                                                              "date"]]]
    phq = t[(t["reason"] == "phq9_above_expected") & (t["value"] >= phq9_floor)]
    if len(phq) and own is not None:  # and above the own course's 95% prediction interval
        psd = text_map(phq["patient_id"], own.set_index("patient_id")["prediction_sd"]).to_numpy(float)
        phq = phq[(phq["value"] - phq["expected"]).to_numpy(float) >= 1.96 * psd]
    if len(phq) and own is not None:
        o = own.set_index("patient_id")
        gm = text_map(phq["patient_id"], o["group_mean"])
        rows.append(pd.DataFrame({
            "patient_id": phq["patient_id"], "reason": "phq9_above_expected", "date": phq["date"],
            "detail": [f"PHQ-9 {v:.0f} on {d:%Y-%m-%d}: {v - x:.0f} points above their own expected course "
                       f"({x:.0f}; {by or 'clinic'} average {g:.0f})" for v, x, g, d in
                       zip(phq["value"], phq["expected"], gm, phq["date"])],
            "excess": (phq["value"] - phq["expected"]).to_numpy()}))
    elif len(phq):
        rows.append(phq[["patient_id", "reason", "detail", "date"]])
    rows.append(_serious_recent(cohort, end))
    rows.append(misuse_signals(cohort, since=since))
    table = pd.concat([r for r in rows if len(r)], ignore_index=True) if any(len(r) for r in rows) else \
        pd.DataFrame(columns=["patient_id", "reason", "detail", "date"])
    table = table[table["patient_id"].isin(active)].reset_index(drop=True)
    excess = table["excess"] if "excess" in table else pd.Series(np.nan, index=table.index)
    table["weight"] = table["reason"].map(WEIGHTS).fillna(1.0) + (
        (excess.fillna(phq9_margin) - phq9_margin) / 5).clip(lower=0)
    table = table.drop(columns=[c for c in ("excess",) if c in table])
    by_patient = _rank(table)
    notes = ((f"As of {end:%Y-%m-%d}: only patients with a session or assessment in the last {days} days "
             f"({note_n(len(active))} active patients) are listed."),
             own_note,
             (f"PHQ-9: latest score at least {phq9_margin:g} points above the patient's own expected course, above "
             f"the upper limit of its 95% prediction interval (residual and random-effect uncertainty), and at "
             f"least {phq9_floor:g} (moderate depression or worse)."),
             ("Safety: a ketamine session in the last 30 days with very high vital signs "
             f"({ATTENTION_VITALS.describe()}) or an event recorded as severe or serious. Follow-ups: a 30/90/180-day "
             f"follow-up whose window closed without an assessment in the last {followup_lookback_days} days (one "
             "still open is not listed: it can still be done)."),
             "Misuse watch: " + "; ".join(MISUSE_REASONS.values()) + " (each where the export records it).",
             "Ranked by priority: " + ", ".join(f"{k.replace('_', ' ')} {v:g}" for k, v in WEIGHTS.items())
             + "; +1 per 5 PHQ-9 points beyond the margin; ties by the latest date.")
    return RankedAttention(table=table, by_patient=by_patient, n_active=len(active), active_days=days, as_of=end,
                           notes=notes)


def _serious_recent(cohort: Cohort, end: pd.Timestamp, lookback_days: int = 30) -> pd.DataFrame:
    s = cohort.sessions
    cols = ["patient_id", "reason", "detail", "date"]
    if "event_severity" not in s.columns:
        return pd.DataFrame(columns=cols)
    hit = s[s["event_severity"].isin(["severe", "serious"]).fillna(False).to_numpy(bool)
            & (s["session_date"] > end - pd.Timedelta(days=lookback_days)).to_numpy(bool)]
    return pd.DataFrame({"patient_id": hit["patient_id"].to_numpy(), "reason": "serious_event",
                         "date": hit["session_date"].to_numpy(),
                         "detail": [f"{v} event in the session on {d:%Y-%m-%d}" + (f" (action: {a})" if isinstance(a, str)
                                                                                   else "")
                                    for v, d, a in zip(hit["event_severity"], hit["session_date"],
                                                       hit["action_taken"] if "action_taken" in hit else [None] * len(hit))]},
                        columns=cols)


def _rank(table: pd.DataFrame) -> pd.DataFrame:
    if table.empty:
        return pd.DataFrame({"rank": pd.Series(dtype="int64"), "patient_id": pd.Series(dtype="string"),
                             "priority": pd.Series(dtype=float), "reasons": pd.Series(dtype="string"),
                             "n_reasons": pd.Series(dtype="int64"), "latest": pd.Series(dtype="datetime64[ns]")})
    t = table.sort_values(["patient_id", "weight", "date"], ascending=[True, False, False], kind="stable")
    g = t.groupby("patient_id", sort=False)
    out = pd.DataFrame({"priority": g["weight"].sum().round(1), "reasons": g["detail"].agg("; ".join),
                        "n_reasons": g.size(), "latest": g["date"].max()}).reset_index()
    out = out.sort_values(["priority", "latest", "patient_id"], ascending=[False, False, True], kind="stable")
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    return out.reset_index(drop=True)


def misuse_counts(cohort: Cohort) -> pd.DataFrame:
    """Patients with each misuse-watch signal (whole view, any date), as the small-cell rule lets them be shown.

    Returns
    -------
    pandas.DataFrame
        ``signal`` (words), ``patients`` (text: a count, ``"<11"``, or "not recorded in this export").
        A patient may have several signals: the rows overlap and have no total.
    """
    from analytics.privacy.counts import mask_text

    sig = misuse_signals(cohort)
    rec = misuse_recorded(cohort)
    s = cohort.settings
    rows = []
    for key, words in MISUSE_REASONS.items():
        n = int(sig.loc[sig["reason"] == key, "patient_id"].nunique())
        rows.append({"signal": words, "patients": mask_text(n, min_cell=s.min_cell, enabled=s.suppress)
                     if rec[key] else "not recorded in this export"})
    return pd.DataFrame(rows, columns=["signal", "patients"])
