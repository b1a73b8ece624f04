"""Who benefits: the program comparison within subgroups, with interaction tests.

For each subgrouping variable (substance, route, baseline depression band, sex, age band, site) and each of
its levels, two effects of the treatment contrast (default: program ``ketamine + therapy`` vs ``ketamine only``):

* **relapse**: hazard ratio of return to use (Cox, Efron ties) within the level; the interaction p-value is
  the likelihood-ratio test of treatment × subgroup terms in one Cox model over all levels.
* **PHQ-9 slope**: difference in weekly PHQ-9 change (treatment − control), from the mixed model
  ``phq9 ~ weeks * program + (1 + weeks | patient_id)`` fitted within the level; the interaction p-value is
  Cochran's Q test of heterogeneity of the per-level differences (a χ² on levels − 1 df).

Subgroup analyses are many tests on small groups: the caution travels with the result.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from analytics import survival, trajectories
from analytics.cohort import Cohort, ids_in
from analytics.errors import InsufficientData, OutcomesError

SUBGROUP_VARIABLES = ("primary_substance", "index_route", "baseline_band", "sex", "age_band", "site")
LABELS = {"primary_substance": "Primary substance", "index_route": "Route", "baseline_band": "Baseline PHQ-9 band",
          "sex": "Sex", "age_band": "Age band", "site": "Site", "program": "Program"}
MIN_PER_ARM = 10
CAUTION = ("Subgroup results are exploratory: many comparisons are made, groups are small and observational, so "
           "some 'differences' arise by chance. Trust an interaction p-value below 0.05 only when the pattern "
           "was expected in advance and is consistent across outcomes.")


@dataclass(frozen=True)
class SubgroupForest:
    """Treatment contrast within subgroups.

    ``table``: ``outcome`` (``relapse_hr``/``phq9_slope_difference``), ``variable``, ``level``, ``n_treated``,
    ``n_control``, ``n_event`` (relapse only), ``estimate``, ``ci_low``, ``ci_high``, ``interaction_p`` (same for
    every level of a variable). ``overall`` has the same columns for all patients (variable ``"all"``).
    """

    table: pd.DataFrame
    overall: pd.DataFrame
    treated: str
    control: str
    conf_level: float
    notes: tuple[str, ...] = ()


def subset(cohort: Cohort, keep: pd.Series) -> Cohort:
    """The cohort restricted to patients where ``keep`` (aligned with ``cohort.patients``) is True."""
    keep = keep.fillna(False).astype(bool)
    ids = set(cohort.patients.loc[keep.to_numpy(), "patient_id"])
    parts = {k: getattr(cohort, k) for k in ("measures", "followups", "sessions")}
    parts = {k: v[ids_in(v["patient_id"], ids)].reset_index(drop=True) for k, v in parts.items()}
    return replace(cohort, patients=cohort.patients[keep.to_numpy()].reset_index(drop=True), **parts)


def _arms(cohort: Cohort, treated: str | None, control: str | None) -> tuple[str, str]:
    counts = cohort.patients["program"].value_counts()
    if len(counts) < 2:
        raise InsufficientData("Who-benefits needs two programs to compare (found "
                               f"{len(counts)}). Add the 'program' column to patients.csv.")
    treated = treated or ("ketamine + therapy" if "ketamine + therapy" in counts.index else counts.index[1])
    control = control or ("ketamine only" if "ketamine only" in counts.index else counts.index[0])
    for arm in (treated, control):
        if arm not in counts.index:
            raise InsufficientData(f"There is no program called '{arm}' in the data; choose one of: "
                                   f"{', '.join(map(str, counts.index))}.")
    return treated, control


def _cox_rows(pts: pd.DataFrame, variable: str, levels: list[str], treated: str, z: float) -> tuple[list, float]:
    rows = []
    for level in levels:
        sub = pts[pts[variable] == level]
        x = (sub["program"] == treated).astype(float).to_frame("treated")
        n_t, n_c = int(x["treated"].sum()), int(len(x) - x["treated"].sum())
        row = {"outcome": "relapse_hr", "variable": variable, "level": level, "n_treated": n_t, "n_control": n_c,
               "n_event": int(sub["relapsed"].sum()), "estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan}
        if min(n_t, n_c) >= MIN_PER_ARM and sub["relapsed"].sum() > 0:
            try:
                fit = survival.cox_ph(sub["days_to_event"], sub["relapsed"], x, ph_transform=None)
                b, se = float(fit.table["coef"].iloc[0]), float(fit.table["se"].iloc[0])
                row.update(estimate=np.exp(b), ci_low=np.exp(b - z * se), ci_high=np.exp(b + z * se))
            except (OutcomesError, np.linalg.LinAlgError):
                pass
        rows.append(row)
    return rows, _cox_interaction_p(pts, variable, levels, treated)


def _cox_interaction_p(pts: pd.DataFrame, variable: str, levels: list[str], treated: str) -> float:
    usable = [lv for lv in levels if ((pts[variable] == lv) & (pts["program"] == treated)).sum() >= MIN_PER_ARM
              and ((pts[variable] == lv) & (pts["program"] != treated)).sum() >= MIN_PER_ARM]
    if len(usable) < 2:
        return np.nan
    d = pts[pts[variable].isin(usable)]
    t = (d["program"] == treated).astype(float).to_numpy()
    main = pd.DataFrame({"treated": t})
    for lv in usable[1:]:
        main[f"lv:{lv}"] = (d[variable] == lv).astype(float).to_numpy()
    full = main.copy()
    for lv in usable[1:]:
        full[f"int:{lv}"] = full[f"lv:{lv}"] * t
    try:
        l0 = survival.cox_ph(d["days_to_event"], d["relapsed"], main, ph_transform=None).loglik[1]
        l1 = survival.cox_ph(d["days_to_event"], d["relapsed"], full, ph_transform=None).loglik[1]
    except (OutcomesError, np.linalg.LinAlgError):
        return np.nan
    return float(stats.chi2.sf(max(2 * (l1 - l0), 0.0), df=len(usable) - 1))


def _slope_row(cohort: Cohort, keep: pd.Series, variable: str, level: str, treated: str, control: str,
               z: float) -> dict:
    sub = subset(cohort, keep)
    arms = sub.patients["program"]
    n_t, n_c = int((arms == treated).sum()), int((arms == control).sum())
    row = {"outcome": "phq9_slope_difference", "variable": variable, "level": level, "n_treated": n_t,
           "n_control": n_c, "n_event": np.nan, "estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan,
           "se": np.nan}
    if min(n_t, n_c) < MIN_PER_ARM:
        return row
    two_arms = subset(sub, sub.patients["program"].isin([treated, control]))
    try:
        fit = trajectories.fit_trajectory(two_arms, measure="phq9", by="program", reference=control)
    except OutcomesError:
        return row
    term = fit.fixed[fit.fixed["term"].str.contains("weeks", regex=False)
                     & fit.fixed["term"].str.contains(treated, regex=False)]
    if len(term) == 1:
        est, se = float(term["estimate"].iloc[0]), float(term["se"].iloc[0])
        row.update(estimate=est, se=se, ci_low=est - z * se, ci_high=est + z * se)
    return row


def _q_test(rows: list[dict]) -> float:
    est = np.array([r["estimate"] for r in rows], dtype=float)
    se = np.array([r["se"] for r in rows], dtype=float)
    ok = np.isfinite(est) & np.isfinite(se) & (se > 0)
    if ok.sum() < 2:
        return np.nan
    w = 1 / se[ok] ** 2
    pooled = np.sum(w * est[ok]) / np.sum(w)
    q = float(np.sum(w * (est[ok] - pooled) ** 2))
    return float(stats.chi2.sf(q, df=int(ok.sum()) - 1))


def who_benefits(cohort: Cohort, *, variables: Sequence[str] = SUBGROUP_VARIABLES, treated: str | None = None,
                 control: str | None = None, outcomes: Sequence[str] = ("relapse_hr", "phq9_slope_difference"),
                 conf_level: float = 0.95) -> SubgroupForest:
    """Program contrast within each subgroup, for relapse and PHQ-9 slope, with interaction p-values."""
    treated, control = _arms(cohort, treated, control)
    z = float(stats.norm.ppf(0.5 + conf_level / 2))
    # the slope models need only PHQ-9 scores and patient attributes: subset those, not every table
    phq = cohort.measures[cohort.measures["measure"] == "phq9"]
    cohort = replace(cohort, measures=phq.reset_index(drop=True), followups=cohort.followups.iloc[:0],
                     sessions=cohort.sessions.iloc[:0])
    pts = cohort.survival_patients
    pts = pts[pts["program"].isin([treated, control])]
    rows: list[dict] = []
    notes = [f"Contrast: '{treated}' vs '{control}'. Levels with fewer than {MIN_PER_ARM} patients in either "
             "program get no estimate.", CAUTION]
    overall_rows = []
    if "relapse_hr" in outcomes:
        all_rows, _ = _cox_rows(pts.assign(all="all"), "all", ["all"], treated, z)
        overall_rows += all_rows
    if "phq9_slope_difference" in outcomes:
        overall_rows.append(_slope_row(cohort, pd.Series(True, index=cohort.patients.index), "all", "all",
                                       treated, control, z))
    for variable in variables:
        if variable not in cohort.patients.columns or variable == "program":
            continue
        levels = sorted(cohort.patients[variable].dropna().astype(str).unique())
        if len(levels) < 2:
            continue
        if "relapse_hr" in outcomes:
            level_rows, p = _cox_rows(pts.assign(**{variable: pts[variable].astype("string")}), variable, levels,
                                      treated, z)
            rows += [dict(r, interaction_p=p) for r in level_rows]
        if "phq9_slope_difference" in outcomes:
            level_rows = [_slope_row(cohort, cohort.patients[variable].astype("string") == lv, variable, lv,
                                     treated, control, z) for lv in levels]
            p = _q_test(level_rows)
            rows += [dict(r, interaction_p=p) for r in level_rows]
    columns = ["outcome", "variable", "level", "n_treated", "n_control", "n_event", "estimate", "ci_low", "ci_high",
               "interaction_p"]
    table = pd.DataFrame(rows).reindex(columns=columns)
    overall = pd.DataFrame(overall_rows).reindex(columns=columns)
    notes.append("Relapse: Cox hazard ratio (Efron ties) within each level; interaction p from a likelihood-ratio "
                 "test of program × subgroup terms. PHQ-9: difference in weekly slope from a random intercept and "
                 "slope mixed model (REML) within each level; interaction p from Cochran's Q across levels.")
    return SubgroupForest(table=table, overall=overall, treated=treated, control=control, conf_level=conf_level,
                          notes=tuple(notes))
