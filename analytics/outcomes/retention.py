"""Retention: the cascade from starting ketamine to follow-up, time to dropout, initiation and engagement, boosters.

Definitions (day 0 = the first attended ketamine session; every window is judged only for patients whose window has
closed by the data end date, :meth:`analytics.outcomes.cohort.Cohort.window_closed`; the others are *not yet
judged*, never counted as missing):

* **Started**: every cohort patient (an attended ketamine session).
* **Completed induction**: per program/route protocol (:mod:`analytics.outcomes.protocols`,
  ``Settings.induction_protocols``); judged once day ``window_days - 1`` of the patient's protocol has passed.
* **Attended integration or therapy**: at least one attended ``integration`` or ``psychotherapy`` session on days
  0–89; judged once day 89 has passed.
* **Follow-up at 30/90/180 days**: an assessment on days 30 ± 14, 90 ± 21, 180 ± 30 (the windows of the Overview
  KPIs, :class:`analytics.outcomes.qi.KpiOptions`); judged once the window's last day has passed.
* **Contact**: an attended session of any type or a follow-up assessment.
* **Dropout** (``Settings.dropout_gap_days`` = N, default 90): the first contact on or after day 0 followed by no
  contact in the next N days. Time to dropout is that contact's day. A patient whose last contact is less than N
  days before the data end date, or who is recorded as deceased, is censored at the last contact. Kaplan–Meier
  (:func:`analytics.engines.survival.kaplan_meier`, R ``survfit`` defaults; right-censored times like any other).
* **Leaving after the first session**: dropout at day 0 (no contact in the N days after the first ketamine
  session), among patients whose day N has passed.
* **Initiation and engagement** (the HEDIS IET idea, adapted): *intake* = the patient's first attended contact (the
  first assessment, or the first session of any type). *Initiation* = a treatment session (ketamine,
  psychotherapy or integration) within 14 days of intake (days 0–14 after intake; the intake itself counts when it
  is a treatment session). *Engagement* = initiation plus at least 2 further treatment sessions on other dates
  within 34 days of intake. HEDIS counts from an episode of diagnosis and claims; we count from the clinic's own
  first contact, and only patients who started ketamine are in the exports' cohort, so initiation is high by
  construction: the figure is an upper bound for everyone assessed.
* **Boosters**: ketamine sessions after the patient's induction window (per protocol: on day ≥ ``window_days``).
  Time to the first booster (Kaplan–Meier, censored at the last contact); share boosted by day 180 (patients whose
  day 180 has passed); PHQ-9 in the 28 days before the first booster (booster day included: scored before dosing)
  and in days 1–28 after it, paired by patient (mean difference, t interval).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analytics.engines.intervals import t_crit, wilson_ci
from analytics.errors import InsufficientData
from analytics.outcomes.cohort import Cohort, ids_in
from analytics.outcomes.memo import once, per_cohort
from analytics.outcomes.protocols import describe_protocols, induction_completed
from analytics.outcomes.survival import SurvivalCurves, _curves, _Grouped
from analytics.privacy.counts import note_n

ALL = "all"
FOLLOWUP_WINDOWS = ((30, 14), (90, 21), (180, 30))
THERAPY_DAYS = 90
TREATMENT_TYPES = ("ketamine", "psychotherapy", "integration")
STEP_LABELS = {"started": "Started ketamine", "induction": "Completed induction (per protocol)",
               "therapy": "Attended integration or therapy (days 0–89)",
               "followup_30": "Follow-up at 30 days (16–44)", "followup_90": "Follow-up at 90 days (69–111)",
               "followup_180": "Follow-up at 180 days (150–210)"}


@dataclass(frozen=True)
class RetentionCascade:
    """The retention cascade per program.

    Attributes
    ----------
    table:
        One row per (``group``, ``step``): ``label``, ``judged`` (patients whose window has closed),
        ``reached``, ``not_yet`` (window still open), ``estimate`` (reached / judged), ``ci_low``, ``ci_high``
        (Wilson), ``shown`` (small-cell rule).
    per_patient:
        One row per patient: ``patient_id``, ``group``, then per step ``<step>`` (True/False, missing when not
        yet judged).
    """

    table: pd.DataFrame
    per_patient: pd.DataFrame
    by: str | None
    conf_level: float
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Dropout:
    """Time to dropout (Kaplan–Meier) and the share leaving after the first session, per program.

    Attributes
    ----------
    curves:
        Kaplan–Meier curves ("estimate" = share still in contact).
    per_patient:
        ``patient_id``, ``group``, ``days`` (to dropout or censoring), ``dropped_out`` (bool).
    first_session:
        Per group: ``judged``, ``left`` (dropout at day 0), ``estimate``, ``ci_low``, ``ci_high``, ``shown``.
    gap_days:
        N of the definition.
    """

    curves: SurvivalCurves
    per_patient: pd.DataFrame
    first_session: pd.DataFrame
    gap_days: int
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Boosters:
    """Booster sessions after induction.

    Attributes
    ----------
    curves:
        Kaplan–Meier time to the first booster ("estimate" = share not yet boosted).
    share:
        Per group: ``judged`` (day 180 passed), ``reached`` (a booster by day 180), ``estimate``, ``ci_low``,
        ``ci_high``, ``shown``.
    phq9:
        Per group: ``n`` (patients with a PHQ-9 before and after their first booster), ``before``, ``after``
        (means), ``estimate`` (mean after − before), ``ci_low``, ``ci_high``, ``shown``.
    per_patient:
        ``patient_id``, ``group``, ``first_booster_day`` (NaN without one), ``n_boosters``.
    """

    curves: SurvivalCurves | None
    share: pd.DataFrame
    phq9: pd.DataFrame
    per_patient: pd.DataFrame
    conf_level: float
    notes: tuple[str, ...] = ()


def _groups(cohort: Cohort, by: str | None) -> pd.Series:
    p = cohort.patients
    if by is None or by not in p.columns:
        return pd.Series(ALL, index=p.index, dtype=object)
    return p[by].astype("string").fillna("not recorded").astype(object)


def _small(n: float, min_cell: int) -> bool:
    return 0 < n < min_cell


def _rate_rows(frame: pd.DataFrame, flag: str, judged: str, group: pd.Series, conf_level: float, cohort: Cohort,
               extra: Mapping[str, object] | None = None) -> list[dict[str, object]]:
    """Share of ``flag`` among ``judged`` rows per group and in all; ``shown`` by the small-cell rule.

    Groups are parts of the total (a group is hidden with a small one so that it cannot be worked out), and the
    judged patients are part of the group's patients, which a reader knows (the cascade's first row): the patients
    not yet judged (group − judged) are a derived count, protected when it is 1–10."""
    from analytics.privacy.suppression import suppress_cells

    min_cell, enabled = cohort.settings.min_cell, cohort.settings.suppress
    labels = sorted(group.unique().tolist())
    nums: dict[str, int] = {}
    dens: dict[str, int] = {}
    totals: dict[str, int] = {}
    for g in labels:
        in_group = group.eq(g).to_numpy(bool)
        sel = frame[judged].to_numpy(bool) & in_group
        nums[g], dens[g], totals[g] = int(frame.loc[sel, flag].astype(bool).sum()), int(sel.sum()), int(in_group.sum())
    if len(labels) > 1:
        nums[ALL], dens[ALL], totals[ALL] = sum(nums.values()), sum(dens.values()), sum(totals.values())
    values: dict[object, float | None] = {}
    for g in nums:
        values[("num", g)], values[("den", g)] = float(nums[g]), float(dens[g])
        values[("total", g)] = float(totals[g])
    sums = ([([("num", g) for g in labels], ("num", ALL)), ([("den", g) for g in labels], ("den", ALL))]
            if len(labels) > 1 else [])
    # a small group is hidden whole (no relation to its total); with one, the total of all would give it away
    known = [("total", g) for g in nums if not (0 < totals[g] < min_cell)]
    if len(known) < len(nums):
        known = [k for k in known if k[1] != ALL]
    sums += [([("den", k[1])], k) for k in known]
    cells = suppress_cells(values, sums=sums, rates=[(("num", g), ("den", g)) for g in nums], known=known,
                           pooled=True, min_cell=min_cell, enabled=enabled)
    lo, hi = wilson_ci(np.array(list(nums.values())), np.array(list(dens.values())), conf_level)
    return [{**(extra or {}), "group": g, "judged": dens[g], "reached": nums[g],
             "estimate": nums[g] / dens[g] if dens[g] else np.nan, "ci_low": float(lo[i]), "ci_high": float(hi[i]),
             "shown": cells.shown(("num", g)) and cells.shown(("den", g))} for i, g in enumerate(nums)]


def _contacts(cohort: Cohort) -> pd.DataFrame:
    """Every contact on or after day 0: ``patient_id``, ``days`` (unique per patient and day, sorted)."""
    s = cohort.sessions[["patient_id", "days"]]
    f = cohort.followups[["patient_id", "days"]] if len(cohort.followups) else s.iloc[:0]
    c = pd.concat([s, f], ignore_index=True)
    c = c[c["days"] >= 0]
    return c.drop_duplicates().sort_values(["patient_id", "days"], kind="stable").reset_index(drop=True)


def retention_cascade(cohort: Cohort, *, by: str | None = "program", conf_level: float = 0.95) -> RetentionCascade:
    """The cascade started → induction (per protocol) → integration/therapy → follow-up at 30/90/180 days.

    Each step is a share of the patients whose window for it has closed (not of the step before), so a step never
    counts a patient who could still reach it. See the module docstring for every window.
    """
    p = cohort.patients
    if p.empty:
        raise InsufficientData("The retention cascade needs patients who started ketamine; the current view has "
                               "none. Widen the date range or the filters.")
    end = cohort.data_end_date()
    group = _groups(cohort, by)
    ind = induction_completed(cohort, as_of=end)
    out = pd.DataFrame({"patient_id": p["patient_id"].to_numpy(), "group": group.to_numpy()})
    judged = {"started": np.ones(len(p), bool), "induction": ind["window_closed"].to_numpy(bool)}
    reached = {"started": np.ones(len(p), bool), "induction": ind["completed"].to_numpy(bool)}
    s = cohort.sessions
    ther = s[s["session_type"].isin(["integration", "psychotherapy"]).to_numpy(bool)
             & (s["days"] >= 0).to_numpy(bool) & (s["days"] < THERAPY_DAYS).to_numpy(bool)]
    judged["therapy"] = cohort.window_closed(THERAPY_DAYS, as_of=end).to_numpy(bool)
    reached["therapy"] = ids_in(p["patient_id"], ther["patient_id"]).to_numpy(bool)
    fu = cohort.followups
    for t, w in FOLLOWUP_WINDOWS:
        hit = fu.loc[(fu["days"] >= t - w) & (fu["days"] <= t + w), "patient_id"] if len(fu) else []
        judged[f"followup_{t}"] = cohort.window_closed(t + w + 1, as_of=end).to_numpy(bool)
        reached[f"followup_{t}"] = ids_in(p["patient_id"], hit).to_numpy(bool)
    rows: list[dict[str, object]] = []
    for step in STEP_LABELS:
        out[step] = pd.array(np.where(judged[step], reached[step], False), dtype="boolean")
        out.loc[~judged[step], step] = pd.NA
        frame = pd.DataFrame({"flag": reached[step] & judged[step], "judged": judged[step]})
        for r in _rate_rows(frame, "flag", "judged", group.reset_index(drop=True), conf_level, cohort,
                            {"step": step, "label": STEP_LABELS[step]}):
            r["not_yet"] = int(((~judged[step]) & (group.eq(r["group"]).to_numpy(bool) | (r["group"] == ALL))).sum())
            rows.append(r)
    table = pd.DataFrame(rows, columns=["group", "step", "label", "judged", "reached", "not_yet", "estimate",
                                        "ci_low", "ci_high", "shown"])
    notes = ((f"Each step is the share of patients whose window for it has closed by {end:%Y-%m-%d} (the data end "
             "date); patients whose window is still open are 'not yet judged', never counted as missing. Day 0 = "
             "first attended ketamine session."),
             describe_protocols(cohort.settings.induction_protocols),
             ("Follow-up windows: an assessment on days 30 ± 14, 90 ± 21, 180 ± 30 (the Overview KPI windows). "
             "Integration or therapy: an attended integration or psychotherapy session on days 0–89."),
             ("Shares with Wilson 95% CIs; groups of 1–10 patients (and a group that would give one away) are "
             "suppressed."))
    return RetentionCascade(table=table, per_patient=out, by=by, conf_level=conf_level, notes=notes)


def induction_by_protocol(cohort: Cohort, *, conf_level: float = 0.95) -> pd.DataFrame:
    """Induction completion per protocol (patients whose protocol window has closed).

    Returns
    -------
    pandas.DataFrame
        ``protocol``, ``rule``, ``group`` (the protocol name, then ``all``), ``judged``, ``reached``, ``estimate``,
        ``ci_low``, ``ci_high``, ``shown``.
    """
    ind = induction_completed(cohort)
    rules = {t.name: t.rule() for t in cohort.settings.induction_protocols}
    group = ind["protocol"].astype(object).reset_index(drop=True)
    rows = _rate_rows(ind.assign(flag=ind["completed"] & ind["window_closed"]), "flag", "window_closed", group,
                      conf_level, cohort)
    out = pd.DataFrame(rows, columns=["group", "judged", "reached", "estimate", "ci_low", "ci_high", "shown"])
    out.insert(0, "rule", [rules.get(g, "all protocols") for g in out["group"]])
    out.insert(0, "protocol", out["group"])
    return out


def dropout_times(cohort: Cohort, *, gap_days: int | None = None) -> pd.DataFrame:
    """Per patient (order of ``cohort.patients``): ``patient_id``, ``days`` (to dropout or censoring),
    ``dropped_out`` (bool), ``first_gap_closed`` (day ``gap_days`` after day 0 has passed), ``left_after_first``
    (dropout at day 0). See the module docstring for the definition. Worked out once per cohort and gap (the
    dropout curves and the boosters' censoring both use it); each caller gets its own copy."""
    n_gap = int(gap_days if gap_days is not None else cohort.settings.dropout_gap_days)
    return once(cohort, ("retention.dropout_times", n_gap), lambda: _dropout_times(cohort, n_gap)).copy()


def _dropout_times(cohort: Cohort, n_gap: int) -> pd.DataFrame:
    p = cohort.patients
    end_day = ((cohort.data_end_date() - p["index_date"]).dt.days).to_numpy(float)
    c = _contacts(cohort)
    code = pd.Index(p["patient_id"]).get_indexer(c["patient_id"])
    c = c[code >= 0]
    code = code[code >= 0]
    d = c["days"].to_numpy(float)
    nxt = np.r_[d[1:], np.inf]
    last = np.r_[code[1:] != code[:-1], True] if len(code) else np.zeros(0, bool)
    nxt[last] = np.inf
    gap_after = nxt - d
    closes = d + n_gap <= end_day[code]  # the N days after this contact have passed
    drop = (gap_after > n_gap) & closes
    first_drop = np.full(len(p), np.nan)
    idx = np.flatnonzero(drop)
    if len(idx):
        first_idx = pd.Series(idx).groupby(code[idx]).min()
        first_drop[first_idx.index.to_numpy()] = d[first_idx.to_numpy()]
    last_day = np.zeros(len(p))
    if len(code):
        lasts = pd.Series(d).groupby(code).max()
        last_day[lasts.index.to_numpy()] = lasts.to_numpy()
    deceased = p["last_status"].eq("deceased").fillna(False).to_numpy(bool) if "last_status" in p else False
    dropped = ~np.isnan(first_drop) & ~deceased
    days = np.where(dropped, first_drop, last_day)
    return pd.DataFrame({"patient_id": p["patient_id"].to_numpy(), "days": days, "dropped_out": dropped,
                         "first_gap_closed": end_day >= n_gap, "left_after_first": dropped & (days == 0)})


def _km(time: np.ndarray, event: np.ndarray, group: pd.Series, by: str | None, cohort: Cohort,
        conf_level: float, milestones: tuple[float, ...]) -> SurvivalCurves:
    labels = sorted(group.unique().tolist())
    code = np.array([labels.index(g) for g in group], dtype=np.intp)
    data = _Grouped(time.astype(float), event.astype(bool), code, labels, by, pd.DataFrame(index=range(len(time))),
                    [])
    s = cohort.settings
    return _curves(data, conf_level=conf_level, milestones=milestones, min_cell=s.min_cell if s.suppress else None)


def dropout(cohort: Cohort, *, by: str | None = "program", gap_days: int | None = None,
            conf_level: float = 0.95) -> Dropout:
    """Time to dropout (Kaplan–Meier) and the share leaving after the first session, per group."""
    if cohort.patients.empty:
        raise InsufficientData("Time to dropout needs patients who started ketamine; the current view has none.")
    n_gap = int(gap_days if gap_days is not None else cohort.settings.dropout_gap_days)
    per = dropout_times(cohort, gap_days=n_gap)
    group = _groups(cohort, by).reset_index(drop=True)
    per.insert(1, "group", group.to_numpy())
    curves = _km(per["days"].to_numpy(), per["dropped_out"].to_numpy(), group, by, cohort, conf_level,
                 (30.0, 90.0, 180.0, 365.0))
    first = pd.DataFrame(_rate_rows(per, "left_after_first", "first_gap_closed", group, conf_level, cohort))
    first = first.rename(columns={"reached": "left"})
    n_drop = int(per["dropped_out"].sum())
    notes = ((f"Dropout = the first contact (attended session of any type or follow-up assessment) followed by no "
             f"contact in the next {n_gap} days; time = that contact's day since the first ketamine session. "
             f"Censored at the last contact when fewer than {n_gap} days of data follow it, or when the patient is "
             f"recorded as deceased. {note_n(n_drop)} dropouts among {note_n(len(per))} patients."),
             (f"Leaving after the first session = no contact in the {n_gap} days after the first ketamine session, "
             f"among patients whose day {n_gap} has passed."),
             ("A planned gap longer than the dropout window (e.g. between 6- and 12-month follow-ups) counts as "
             "dropout by this definition; raise the setting when the clinic's schedule has such gaps."))
    return Dropout(curves=curves, per_patient=per, first_session=first, gap_days=n_gap,
                   notes=curves.notes + notes)


def initiation_engagement(cohort: Cohort, *, by: str | None = "program", conf_level: float = 0.95) -> pd.DataFrame:
    """Initiation within 14 days and engagement within 34 days of intake (HEDIS IET, adapted; module docstring).

    Returns
    -------
    pandas.DataFrame
        ``measure`` (``initiation``, ``engagement``), ``group``, ``judged`` (intake + 14 or + 34 days passed),
        ``reached``, ``estimate``, ``ci_low``, ``ci_high``, ``shown``.
    """
    p = cohort.patients
    end = cohort.data_end_date()
    s = cohort.sessions[["patient_id", "session_date", "session_type"]]
    intake = s.groupby("patient_id")["session_date"].min().reindex(p["patient_id"])
    treat = s[s["session_type"].isin(TREATMENT_TYPES).to_numpy(bool)].drop_duplicates(["patient_id", "session_date"])
    since = (treat["session_date"] - intake.reindex(treat["patient_id"]).to_numpy()).dt.days
    treat = treat.assign(since=since.to_numpy())
    first_treat = treat[treat["since"] <= 14].groupby("patient_id")["since"].min()
    init = first_treat.reindex(p["patient_id"])
    later = treat.merge(init.rename("init").reset_index(), on="patient_id")
    further = later[(later["since"] > later["init"]) & (later["since"] <= 34)].groupby("patient_id").size()
    frame = pd.DataFrame({
        "initiation": init.notna().to_numpy(),
        "engagement": (init.notna() & (further.reindex(p["patient_id"]).fillna(0) >= 2)).to_numpy(),
        "judged_14": ((end - intake).dt.days >= 14).to_numpy(),
        "judged_34": ((end - intake).dt.days >= 34).to_numpy()})
    group = _groups(cohort, by).reset_index(drop=True)
    rows = (_rate_rows(frame, "initiation", "judged_14", group, conf_level, cohort, {"measure": "initiation"})
            + _rate_rows(frame, "engagement", "judged_34", group, conf_level, cohort, {"measure": "engagement"}))
    return pd.DataFrame(rows, columns=["measure", "group", "judged", "reached", "estimate", "ci_low", "ci_high",
                                       "shown"])


INITIATION_NOTE = ("Initiation and engagement adapt the HEDIS IET measure: intake = the patient's first attended "
                   "contact (assessment or any session); initiation = a treatment session (ketamine, psychotherapy or "
                   "integration) within 14 days of intake (the intake counts when it is one); engagement = "
                   "initiation plus at least 2 further treatment sessions on other dates within 34 days of intake. "
                   "HEDIS starts from a diagnosis episode in claims; here only patients who started ketamine are in "
                   "the cohort, so initiation is an upper bound for everyone assessed. Judged once day 14 (34) after "
                   "intake has passed.")


def boosters(cohort: Cohort, *, by: str | None = "program", conf_level: float = 0.95,
             share_day: int = 180, phq9_days: int = 28) -> Boosters:
    """Booster sessions after the induction window (per protocol): time to the first, share boosted by
    ``share_day``, PHQ-9 in the ``phq9_days`` before vs after the first booster (module docstring)."""
    p = cohort.patients
    if p.empty:
        raise InsufficientData("Boosters need patients who started ketamine; the current view has none.")
    ind = induction_completed(cohort)
    window = pd.Series(ind["window_days"].to_numpy(), index=p["patient_id"].to_numpy())
    s = cohort.sessions
    k = s[(s["session_type"] == "ketamine").to_numpy(bool)][["patient_id", "days"]]
    k = k[k["days"].to_numpy(float) >= window.reindex(k["patient_id"]).to_numpy(float)]
    first = k.groupby("patient_id")["days"].min().reindex(p["patient_id"])
    n_b = k.groupby("patient_id").size().reindex(p["patient_id"]).fillna(0).astype(int)
    group = _groups(cohort, by).reset_index(drop=True)
    per = pd.DataFrame({"patient_id": p["patient_id"].to_numpy(), "group": group.to_numpy(),
                        "first_booster_day": first.to_numpy(float), "n_boosters": n_b.to_numpy()})
    last = dropout_times(cohort)["days"].to_numpy(float)
    event = per["first_booster_day"].notna().to_numpy()
    time = np.where(event, per["first_booster_day"].to_numpy(float), last)
    eligible = ind["window_closed"].to_numpy(bool)
    curves = (_km(time[eligible], event[eligible], group[eligible].reset_index(drop=True), by, cohort, conf_level,
                  (90.0, 180.0, 365.0)) if eligible.any() else None)
    end = cohort.data_end_date()
    frame = pd.DataFrame({"boosted": (per["first_booster_day"] <= share_day).to_numpy(),
                          "judged": cohort.window_closed(share_day + 1, as_of=end).to_numpy(bool)})
    share = pd.DataFrame(_rate_rows(frame, "boosted", "judged", group, conf_level, cohort))
    phq = _phq9_around(cohort, per, group, phq9_days, conf_level)
    notes = (describe_protocols(cohort.settings.induction_protocols),
             ("Booster = a ketamine session on or after the day the patient's induction window ends. Time to the "
             "first booster from day 0 (Kaplan–Meier among patients whose induction window has closed; censored at "
             f"the last contact). Share boosted by day {share_day}, among patients whose day {share_day} has passed."),
             (f"PHQ-9 around the first booster: the latest score in the {phq9_days} days before it (its day included: "
             f"scored before dosing) and the latest in days 1–{phq9_days} after it, paired by patient; mean "
             "difference (after − before) with a t interval. Not a causal effect: no comparison group."))
    return Boosters(curves=curves, share=share, phq9=phq, per_patient=per, conf_level=conf_level,
                    notes=(curves.notes if curves else ()) + notes)


def _phq9_around(cohort: Cohort, per: pd.DataFrame, group: pd.Series, days: int, conf_level: float) -> pd.DataFrame:
    m = cohort.measures
    m = m[m["measure"] == "phq9"][["patient_id", "days", "value"]]
    b = per.loc[per["first_booster_day"].notna(), ["patient_id", "group", "first_booster_day"]]
    j = m.merge(b, on="patient_id")
    rel = j["days"] - j["first_booster_day"]
    before = j[(rel <= 0) & (rel > -days)].sort_values("days").groupby("patient_id")["value"].last()
    after = j[(rel > 0) & (rel <= days)].sort_values("days").groupby("patient_id")["value"].last()
    both = pd.DataFrame({"before": before, "after": after}).dropna()
    both["group"] = b.set_index("patient_id")["group"].reindex(both.index)
    min_cell, enabled = cohort.settings.min_cell, cohort.settings.suppress
    rows = []
    labels = sorted(both["group"].unique().tolist())
    for g in [*labels, *([ALL] if len(labels) > 1 else [])]:
        sub = both if g == ALL else both[both["group"] == g]
        n = len(sub)
        diff = (sub["after"] - sub["before"]).to_numpy(float)
        est = float(diff.mean()) if n else np.nan
        half = float(t_crit(conf_level, n - 1) * diff.std(ddof=1) / np.sqrt(n)) if n > 1 else np.nan
        rows.append({"group": g, "n": n, "before": float(sub["before"].mean()) if n else np.nan,
                     "after": float(sub["after"].mean()) if n else np.nan, "estimate": est,
                     "ci_low": est - half, "ci_high": est + half, "shown": not (enabled and _small(n, min_cell))})
    return pd.DataFrame(rows, columns=["group", "n", "before", "after", "estimate", "ci_low", "ci_high", "shown"])


def visit_status_rates(not_analysed: Mapping[str, int], attended_rows: int) -> pd.DataFrame:
    """Clinic-level share of booked visits that were missed, from the load report's counts.

    Parameters
    ----------
    not_analysed:
        ``FileReport.not_analysed`` of the sessions file (``no_show``, ``cancelled``, ``scheduled``,
        ``entered_in_error`` → rows).
    attended_rows:
        Attended session rows accepted.

    Returns
    -------
    pandas.DataFrame
        ``status`` (``no_show``, ``cancelled``), ``rows``, ``booked`` (attended + no_show + cancelled), ``share``.
        Empty when the export has no status column (nothing is known, never 0).

    Notes
    -----
    Validation keeps only the counts of visits that did not take place, not their patients, so no-shows are counted
    per clinic, not per patient (a contract proposal in the issue-22 report).
    """
    if not not_analysed:
        return pd.DataFrame(columns=["status", "rows", "booked", "share"])
    booked = attended_rows + int(not_analysed.get("no_show", 0)) + int(not_analysed.get("cancelled", 0))
    return pd.DataFrame([{"status": s, "rows": int(not_analysed.get(s, 0)), "booked": booked,
                          "share": int(not_analysed.get(s, 0)) / booked if booked else np.nan}
                         for s in ("no_show", "cancelled")])


__all__ = [
    "ALL",
    "INITIATION_NOTE",
    "STEP_LABELS",
    "Boosters",
    "Dropout",
    "RetentionCascade",
    "RetentionSummary",
    "boosters",
    "dropout",
    "dropout_times",
    "induction_by_protocol",
    "initiation_engagement",
    "retention_cascade",
    "retention_summary",
    "visit_status_rates",
]


@dataclass(frozen=True)
class RetentionSummary:
    """Everything the Retention page and the pack section show, computed once per cohort and options."""

    cascade: RetentionCascade
    protocols: pd.DataFrame
    dropout: Dropout
    initiation: pd.DataFrame
    boosters: Boosters


def default_by(cohort: Cohort) -> str | None:
    """The Retention page's grouping: by program when the export has one, else the whole clinic."""
    p = cohort.patients
    return "program" if "program" in p and p["program"].notna().any() else None


@per_cohort
def retention_summary(cohort: Cohort, *, by: str | None = "program", gap_days: int | None = None) -> RetentionSummary:
    """:func:`retention_cascade`, :func:`induction_by_protocol`, :func:`dropout`, :func:`initiation_engagement` and
    :func:`boosters`, kept on the cohort (:func:`analytics.outcomes.memo.once`) for the page's reruns."""
    gap = int(gap_days if gap_days is not None else cohort.settings.dropout_gap_days)
    return once(cohort, ("retention", by, gap), lambda: RetentionSummary(
        cascade=retention_cascade(cohort, by=by), protocols=induction_by_protocol(cohort),
        dropout=dropout(cohort, by=by, gap_days=gap), initiation=initiation_engagement(cohort, by=by),
        boosters=boosters(cohort, by=by)))
