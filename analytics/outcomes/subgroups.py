"""Who benefits: the program comparison within subgroups, with interaction tests.

For each subgrouping variable (substance, route, baseline depression band, sex, age band, site) and each of
its levels, two effects of the treatment contrast (default: program ``ketamine + therapy`` vs ``ketamine only``):

* **relapse**: hazard ratio of return to use (Cox, Efron ties) within the level, adjusted for case mix by default
  (age, sex, primary substance, baseline PHQ-9, site; the subgrouping variable itself is never an adjustment); the
  interaction p-value is the likelihood-ratio test of treatment × subgroup terms in one Cox model over all levels
  (with the same adjustment).
* **PHQ-9 slope**: difference in weekly PHQ-9 change (treatment − control), from one mixed model per variable
  ``phq9 ~ weeks * arm_level + cov * weeks + (1 + weeks | patient_id)`` (arm_level = program × subgroup level;
  ``cov``: the same case mix, each covariate with its own weekly slope, so the difference is adjusted); each
  level's difference is a linear combination of its fixed effects, and the interaction p-value is the joint
  Wald test that the differences are equal across levels (a χ² on levels − 1 df).

Subgroup analyses are many tests on small groups: the caution travels with the result, and every interaction
p-value comes with its Holm and Benjamini–Hochberg adjustments over the tests shown (one per outcome and variable).

Case mix (relapse): numeric covariates (age, baseline PHQ-9) enter linearly, a missing value as the mean with a
missing-value indicator; categorical ones (sex, substance, site) as indicators of each level with at least
``MIN_LEVEL`` patients in the subset (rarer levels and missing values pool with the most common level). A
covariate that is constant in the subset is left out. When the adjusted model cannot be fitted the row falls back
to the unadjusted hazard ratio and ``adjusted`` says so. The PHQ-9 slope models use the same coding over the
patients of the model (:func:`slope_case_mix`) and add each covariate column × weeks: a case mix that changes how
fast PHQ-9 falls (e.g. site) then does not masquerade as a program difference. An adjusted slope model that
cannot be fitted falls back to the unadjusted one, and ``adjusted`` says so.

Speed (50,000 patients in about a second): the PHQ-9 scores are reduced to per-patient sums once
(:func:`analytics.outcomes.trajectories.prepare_scores`) and shared by the seven mixed models, each of which starts from the
overall model's variance parameters (a few Newton steps instead of a full quasi-Newton run). The Cox models share
one sort of the patients by time (:class:`analytics.engines.survival.RiskSets`; a level or the interaction model's
patients are a mask over it), the case-mix covariates are coded once (numbers and integer codes, not text), and
each interaction model starts Newton–Raphson from its main-effects fit (interactions at 0). None of this changes a
number beyond rounding (tests/test_subgroups.py compares every row with plain fits, to 1e-10).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import pandas as pd

from analytics.engines.intervals import chi2_sf, z_crit
from analytics.engines.survival import RiskSets
from analytics.errors import InsufficientData, OutcomesError
from analytics.outcomes import survival, trajectories
from analytics.outcomes.cohort import Cohort, ids_in
from analytics.outcomes.memo import per_cohort

SUBGROUP_VARIABLES = ("primary_substance", "index_route", "baseline_band", "sex", "age_band", "site")
LABELS = {"primary_substance": "Primary substance", "index_route": "Route", "baseline_band": "Baseline PHQ-9 band",
          "sex": "Sex", "age_band": "Age band", "site": "Site", "program": "Program"}
MIN_PER_ARM = 10
MIN_LEVEL = 5
CASE_MIX = ("age", "sex", "primary_substance", "baseline_phq9", "site")
_NUMERIC = ("age", "baseline_phq9")
CAUTION = ("Subgroup results are exploratory: many comparisons are made, groups are small and observational, so "
           "some 'differences' arise by chance. Trust an interaction p-value below 0.05 only when the pattern "
           "was expected in advance and is consistent across outcomes.")


@dataclass(frozen=True)
class SubgroupForest:
    """Treatment contrast within subgroups.

    ``table``: ``outcome`` (``relapse_hr``/``phq9_slope_difference``), ``variable``, ``level``, ``n_treated``,
    ``n_control``, ``n_event`` (relapse only), ``estimate``, ``ci_low``, ``ci_high``, ``adjusted`` (the case-mix
    covariates of the row's model, comma-separated; empty when unadjusted), ``interaction_p`` (same for every level
    of a variable), ``interaction_p_holm`` and ``interaction_p_bh`` (adjusted over the tests shown: one per outcome
    and variable with a p-value). ``overall`` has the same columns for all patients (variable ``"all"``).
    ``adjust`` names the case-mix covariates asked for.
    """

    table: pd.DataFrame
    overall: pd.DataFrame
    treated: str
    control: str
    conf_level: float
    adjust: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def subset(cohort: Cohort, keep: pd.Series) -> Cohort:
    """The cohort restricted to patients where ``keep`` (aligned with ``cohort.patients``) is True."""
    keep = keep.fillna(False).astype(bool)
    ids = cohort.patients.loc[keep.to_numpy(), "patient_id"]
    parts = {k: getattr(cohort, k) for k in ("measures", "followups", "sessions")}
    parts = {k: v[ids_in(v["patient_id"], ids)].reset_index(drop=True) for k, v in parts.items()}
    return replace(cohort, patients=cohort.patients[keep.to_numpy()].reset_index(drop=True), **parts)


def page_arms(cohort: Cohort) -> tuple[list[str], str | None, str | None]:
    """The programs, and the comparison the Who benefits page opens with: 'ketamine + therapy' (else the first
    program) against the first other program; None when fewer than two programs."""
    programs = sorted(cohort.patients["program"].dropna().astype(str).unique())
    if len(programs) < 2:
        return programs, None, None
    treated = "ketamine + therapy" if "ketamine + therapy" in programs else programs[0]
    return programs, treated, next(p for p in programs if p != treated)


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


@dataclass(frozen=True)
class _Survival:
    """Time to return to use of the patients in either program, as arrays (subsets are boolean masks).

    ``risk`` holds the patients' risk sets (sorted by time once); every Cox model on a subset takes
    ``risk.subset(mask)`` instead of sorting again (the same fit: ``tests/test_subgroups.py``)."""

    days: np.ndarray
    relapsed: np.ndarray
    treated: np.ndarray
    covariates: pd.DataFrame  # the case-mix columns of the same patients (may have none)
    risk: RiskSets

    @classmethod
    def of(cls, pts: pd.DataFrame, treated: str, adjust: Sequence[str] = ()) -> _Survival:
        days, relapsed = pts["days_to_event"].to_numpy(dtype=float), pts["relapsed"].to_numpy(dtype=bool)
        return cls(days=days, relapsed=relapsed, treated=(pts["program"] == treated).to_numpy(dtype=bool),
                   covariates=pts[[c for c in adjust if c in pts.columns]].reset_index(drop=True),
                   risk=RiskSets(days, relapsed))

    def cox(self, mask: np.ndarray, design: pd.DataFrame, *, risk: RiskSets | None = None,
            start: np.ndarray | None = None) -> survival.CoxFit:
        """Cox model of the patients in ``mask`` (``risk``: ``self.risk.subset(mask)`` if already made; ``start``:
        Newton start values, e.g. a nested model's estimates; neither changes the fit)."""
        return survival.cox_ph(self.days[mask], self.relapsed[mask], design, ph_transform=None,
                               risk_sets=self.risk.subset(mask) if risk is None else risk, start=start)

    def case_mix(self, mask: np.ndarray, *, without: str) -> tuple[pd.DataFrame, list[str]]:
        """Design columns of the case-mix covariates within ``mask`` (see the module notes) and their names."""
        cols: dict[str, np.ndarray] = {}
        used: list[str] = []
        for name, (values, levels) in self.coded.items():
            if name == without:
                continue
            before = len(cols)
            if levels is None:  # numeric
                x = values[mask]
                seen = np.isfinite(x)
                if seen.sum() < MIN_LEVEL or np.nanstd(x[seen]) == 0:
                    continue
                cols[name] = np.where(seen, x, np.nanmean(x[seen]))
                if (~seen).sum() >= MIN_LEVEL:
                    cols[f"{name} missing"] = (~seen).astype(float)
            else:
                codes = values[mask]
                for code in _common_codes(codes, len(levels))[1:]:  # the most common level (and rare or
                    cols[f"{name}={levels[code]}"] = (codes == code).astype(float)  # missing ones): reference
            if len(cols) > before:
                used.append(name)
        return pd.DataFrame(cols), used

    @cached_property
    def coded(self) -> dict[str, tuple[np.ndarray, list[str] | None]]:
        """Each case-mix covariate once for all subsets: numeric ones as floats (NaN where missing), the others
        as integer codes of their text (−1 where missing) and the level of each code."""
        out: dict[str, tuple[np.ndarray, list[str] | None]] = {}
        for name in self.covariates.columns:
            if name in _NUMERIC:
                out[name] = (pd.to_numeric(self.covariates[name], errors="coerce").to_numpy(dtype=float), None)
            else:
                codes, uniques = pd.factorize(self.covariates[name].astype("string"))
                out[name] = (codes, [str(u) for u in uniques])
        return out


def _common_codes(codes: np.ndarray, n_levels: int) -> list[int]:
    """Codes with at least ``MIN_LEVEL`` rows, most common first, ties in order of first appearance: the order of
    ``value_counts()`` on the text."""
    counts = np.bincount(codes[codes >= 0], minlength=n_levels)
    common = [int(c) for c in np.flatnonzero(counts >= MIN_LEVEL)]
    first = {c: int(np.argmax(codes == c)) for c in common}
    return sorted(common, key=lambda c: (-counts[c], first[c]))


def _level_masks(values: pd.Series, levels: list[str]) -> dict[str, np.ndarray]:
    """Boolean mask of each level (missing values are in no level), via integer codes."""
    codes, uniques = pd.factorize(values.astype("string"))
    position = {str(u): i for i, u in enumerate(uniques)}
    return {lv: codes == position.get(lv, -2) for lv in levels}


def _cox_rows(surv: _Survival, masks: dict[str, np.ndarray], variable: str, levels: list[str],
              z: float) -> tuple[list, float]:
    rows = []
    for level in levels:
        mask = masks[level]
        t = surv.treated[mask]
        n_t, n_c = int(t.sum()), int(len(t) - t.sum())
        n_event = int(surv.relapsed[mask].sum())
        row = {"outcome": "relapse_hr", "variable": variable, "level": level, "n_treated": n_t, "n_control": n_c,
               "n_event": n_event, "estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan, "adjusted": ""}
        if min(n_t, n_c) >= MIN_PER_ARM and n_event > 0:
            mix, used = surv.case_mix(mask, without=variable)
            risk = surv.risk.subset(mask)
            for design, names in ((pd.concat([pd.DataFrame({"treated": t.astype(float)}), mix], axis=1), used),
                                  (pd.DataFrame({"treated": t.astype(float)}), [])):
                if names == [] and design.shape[1] > 1:
                    continue
                try:
                    fit = surv.cox(mask, design, risk=risk)
                    b, se = float(fit.table["coef"].iloc[0]), float(fit.table["se"].iloc[0])
                    if not (np.isfinite(b) and np.isfinite(se)):
                        continue
                    row.update(estimate=np.exp(b), ci_low=np.exp(b - z * se), ci_high=np.exp(b + z * se),
                               adjusted=", ".join(names))
                    break
                except (OutcomesError, np.linalg.LinAlgError):
                    continue
        rows.append(row)
    return rows, _cox_interaction_p(surv, masks, levels, variable)


def _cox_interaction_p(surv: _Survival, masks: dict[str, np.ndarray], levels: list[str], variable: str) -> float:
    usable = [lv for lv in levels if (masks[lv] & surv.treated).sum() >= MIN_PER_ARM
              and (masks[lv] & ~surv.treated).sum() >= MIN_PER_ARM]
    if len(usable) < 2:
        return np.nan
    keep = np.logical_or.reduce([masks[lv] for lv in usable])
    t = surv.treated[keep].astype(float)
    main = pd.DataFrame({"treated": t})
    for lv in usable[1:]:
        main[f"lv:{lv}"] = masks[lv][keep].astype(float)
    mix, _ = surv.case_mix(keep, without=variable)
    main = pd.concat([main, mix], axis=1)
    full = main.copy()
    for lv in usable[1:]:
        full[f"int:{lv}"] = full[f"lv:{lv}"] * t
    risk = surv.risk.subset(keep)
    try:
        fit0 = surv.cox(keep, main, risk=risk)
        l0 = fit0.loglik[1]
        # the interaction model starts from the main-effects estimates (interactions at 0): fewer Newton steps
        start = np.r_[fit0.table["coef"].to_numpy(dtype=float), np.zeros(full.shape[1] - main.shape[1])]
        l1 = surv.cox(keep, full, risk=risk, start=start).loglik[1]
    except (OutcomesError, np.linalg.LinAlgError):
        return np.nan
    return chi2_sf(max(2 * (l1 - l0), 0.0), len(usable) - 1)


def slope_case_mix(pts: pd.DataFrame, keep: np.ndarray, adjust: Sequence[str], *,
                   without: str) -> tuple[pd.DataFrame, list[str]]:
    """Case-mix columns for a PHQ-9 slope model of the patients in ``keep`` (rows of ``pts``; NA elsewhere).

    As for the hazard ratios: a numeric covariate (age, baseline PHQ-9) with a missing value gets the mean of the
    patients in ``keep`` and, when at least ``MIN_LEVEL`` are missing, a ``<name> missing`` indicator (0/1); a
    categorical one keeps its levels with at least ``MIN_LEVEL`` patients and pools rarer levels and missing values
    with the most common level. A covariate that is constant within ``keep`` (or ``without``, the subgrouping
    variable) is left out. Returns the columns (float for numeric and indicators, text otherwise) and the names of
    the covariates used."""
    cols: dict[str, pd.Series] = {}
    used: list[str] = []
    for name in adjust:
        if name == without or name not in pts.columns:
            continue
        if name in _NUMERIC:
            x = pd.to_numeric(pts[name], errors="coerce").to_numpy(dtype=float)
            xk = x[keep]
            seen = np.isfinite(xk)
            if seen.sum() < MIN_LEVEL or np.std(xk[seen]) == 0:
                continue
            filled = np.full(len(pts), np.nan)
            filled[keep] = np.where(seen, xk, xk[seen].mean())
            cols[name] = pd.Series(filled)
            if (~seen).sum() >= MIN_LEVEL:
                miss = np.full(len(pts), np.nan)
                miss[keep] = (~seen).astype(float)
                cols[f"{name} missing"] = pd.Series(miss)
        else:
            codes, uniques = pd.factorize(pts[name].astype("string"))
            common = _common_codes(codes[keep], len(uniques))
            if len(common) < 2:
                continue
            mapped = np.where(np.isin(codes, common), codes, common[0])
            text = np.asarray([str(u) for u in uniques], dtype=object)[mapped]
            cols[name] = pd.Series(text, dtype="string").where(keep)
        used.append(name)
    return pd.DataFrame(cols, index=pts.index), used


def _slope_fit(cohort: Cohort, combo: pd.Series, reference: str, mix: pd.DataFrame, *,
               prepared: trajectories.PreparedScores | None = None, align: np.ndarray | None = None,
               start: np.ndarray | None = None) -> trajectories.TrajectoryFit:
    """The mixed model ``phq9 ~ weeks * _arm_level (+ case mix × weeks) + (1 + weeks | patient_id)``.

    ``combo``: each patient's arm × level group (NA: not analysed); ``mix``: case-mix columns from
    :func:`slope_case_mix` (none: unadjusted), both aligned with ``cohort.patients``."""
    pts = cohort.patients
    # the model needs only the patient id, the arm × level group and the case mix: a slim patient table (in the
    # order of the prepared scores' patients when known, which spares the model an id lookup)
    if prepared is not None and align is not None:
        slim = pd.DataFrame({"patient_id": prepared.patient_id,
                             "_arm_level": combo.array.take(align, allow_fill=True)})
        for c in mix.columns:
            slim[c] = mix[c].array.take(align, allow_fill=True)
    else:
        slim = pd.concat([pd.DataFrame({"patient_id": pts["patient_id"], "_arm_level": combo}),
                          mix.reset_index(drop=True).set_axis(pts.index)], axis=1)
    return trajectories.fit_trajectory(replace(cohort, patients=slim), measure="phq9", by="_arm_level",
                                       reference=reference, prepared=prepared, start=start,
                                       adjust=tuple(mix.columns), adjust_by_time=True)


def _slope_rows(cohort: Cohort, variable: str, levels: list[str], treated: str, control: str, z: float, *,
                prepared: trajectories.PreparedScores | None = None, align: np.ndarray | None = None,
                start: np.ndarray | None = None,
                adjust: Sequence[str] = ()) -> tuple[list[dict], np.ndarray | None]:
    """PHQ-9 slope difference (treated − control) per level from ONE mixed model with an arm × level group.

    ``phq9 ~ weeks * arm_level + cov * weeks + (1 + weeks | patient_id)`` (``cov``: the case-mix covariates of
    ``adjust`` except ``variable``, coded by :func:`slope_case_mix`, each with its own weekly slope, so that the
    arm × level × weeks terms are slope differences adjusted for case mix): each level's difference is a linear
    combination of the fixed effects (SE from their covariance); the interaction test is the joint Wald test that
    the differences are equal across levels (χ² on usable levels − 1 df). When the adjusted model cannot be fitted
    the unadjusted one is reported and ``adjusted`` is empty. ``prepared`` (the cohort's PHQ-9 scores, read once),
    ``align`` (the row in ``cohort.patients`` of each of its patients, −1 if none) and ``start`` (covariance
    parameters of a similar model) only save time; the returned θ can start the next model.
    """
    pts = cohort.patients
    level = pts[variable].astype("string")
    arm = pts["program"].astype("string")
    masks = _level_masks(level, levels)
    is_treated = (arm == treated).fillna(False).to_numpy(dtype=bool)
    is_control = (arm == control).fillna(False).to_numpy(dtype=bool)
    rows = []
    usable = []
    for lv in levels:
        n_t = int((masks[lv] & is_treated).sum())
        n_c = int((masks[lv] & is_control).sum())
        rows.append({"outcome": "phq9_slope_difference", "variable": variable, "level": lv, "n_treated": n_t,
                     "n_control": n_c, "n_event": np.nan, "estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan,
                     "adjusted": "", "interaction_p": np.nan})
        if min(n_t, n_c) >= MIN_PER_ARM:
            usable.append(lv)
    if not usable:
        return rows, None
    analysed = level.isin(usable) & arm.isin([treated, control])
    combo = (arm + " | " + level).where(analysed)
    reference = f"{control} | {usable[0]}"
    mix, used = slope_case_mix(pts, analysed.fillna(False).to_numpy(dtype=bool), adjust, without=variable)
    fit, adjusted_names = None, ""
    attempts = [(mix, used)] + ([(mix.iloc[:, :0], [])] if mix.shape[1] else [])  # crude when adjusted fails
    for m, names_used in attempts:
        try:
            fit = _slope_fit(cohort, combo, reference, m, prepared=prepared, align=align, start=start)
            adjusted_names = ", ".join(names_used)
            break
        except OutcomesError:
            continue
    if fit is None:
        return rows, None
    names = list(fit.cov_params.index)
    beta = fit.fixed.set_index("term")["estimate"].reindex(names).to_numpy(dtype=float)
    cov = fit.cov_params.to_numpy(dtype=float)
    contrasts = {}
    for lv in usable:
        c = np.zeros(len(names))
        for group, sign in ((f"{treated} | {lv}", 1.0), (f"{control} | {lv}", -1.0)):
            term = f"weeks:_arm_level[T.{group}]"
            if term in names:
                c[names.index(term)] += sign
        contrasts[lv] = c
    for row in rows:
        c = contrasts.get(row["level"])
        if c is None:
            continue
        est, se = float(c @ beta), float(np.sqrt(c @ cov @ c))
        row.update(estimate=est, ci_low=est - z * se, ci_high=est + z * se, adjusted=adjusted_names)
    p = np.nan
    if len(usable) >= 2:
        base = contrasts[usable[0]]
        D = np.array([contrasts[lv] - base for lv in usable[1:]])
        diff = D @ beta
        try:
            chi2 = float(diff @ np.linalg.solve(D @ cov @ D.T, diff))
            p = chi2_sf(chi2, len(usable) - 1)
        except np.linalg.LinAlgError:
            p = np.nan
    return [dict(r, interaction_p=p) for r in rows], _theta(fit)


def _theta(fit: trajectories.TrajectoryFit) -> np.ndarray | None:
    """lme4's θ (relative covariance factor) of a random-slope fit, from its variance components."""
    vc = fit.random
    sd0, sd1, corr, sigma = vc.get("sd_intercept"), vc.get("sd_slope"), vc.get("corr"), vc.get("sd_residual")
    if not fit.random_slope or None in (sd0, sd1, corr, sigma) or not sigma:
        return None
    theta = np.array([sd0 / sigma, corr * sd1 / sigma, sd1 * np.sqrt(max(1.0 - corr ** 2, 0.0)) / sigma])
    return theta if np.all(np.isfinite(theta)) and theta[0] > 0 and theta[2] > 0 else None


def _overall_slope(cohort: Cohort, treated: str, control: str, z: float,
                   prepared: trajectories.PreparedScores | None = None,
                   align: np.ndarray | None = None, adjust: Sequence[str] = ()) -> tuple[dict, np.ndarray | None]:
    rows, theta = _slope_rows(replace(cohort, patients=cohort.patients.assign(all="all")), "all", ["all"], treated,
                              control, z, prepared=prepared, align=align, adjust=adjust)
    return rows[0], theta


@per_cohort
def who_benefits(cohort: Cohort, *, variables: Sequence[str] = SUBGROUP_VARIABLES, treated: str | None = None,
                 control: str | None = None, outcomes: Sequence[str] = ("relapse_hr", "phq9_slope_difference"),
                 adjust: Sequence[str] = CASE_MIX, conf_level: float = 0.95) -> SubgroupForest:
    """Program contrast within each subgroup, for relapse and PHQ-9 slope, with interaction p-values.

    ``adjust``: case-mix covariates of the relapse models (default :data:`CASE_MIX`; ``()`` for crude hazard
    ratios). Interaction p-values come with Holm and Benjamini–Hochberg adjustments over the tests shown."""
    treated, control = _arms(cohort, treated, control)
    z = z_crit(conf_level)
    # the slope models need only PHQ-9 scores and patient attributes: subset those, not every table
    phq = cohort.measures[cohort.measures["measure"] == "phq9"]
    cohort = replace(cohort, measures=phq.reset_index(drop=True), followups=cohort.followups.iloc[:0],
                     sessions=cohort.sessions.iloc[:0])
    pts = cohort.survival_patients
    pts = pts[pts["program"].isin([treated, control])]
    rows: list[dict] = []
    notes = [(f"Contrast: '{treated}' vs '{control}'. Levels with fewer than {MIN_PER_ARM} patients in either "
              "program get no estimate."), CAUTION]
    overall_rows = []
    prepared, align, start = None, None, None
    surv = _Survival.of(pts, treated, adjust)
    if "relapse_hr" in outcomes:
        all_rows, _ = _cox_rows(surv, {"all": np.ones(len(pts), dtype=bool)}, "all", ["all"], z)
        overall_rows += all_rows
    if "phq9_slope_difference" in outcomes:
        try:
            prepared = trajectories.prepare_scores(cohort, "phq9")
            ids = pd.Index(cohort.patients["patient_id"])
            align = ids.get_indexer(prepared.patient_id) if ids.is_unique else None
        except OutcomesError:
            prepared, align = None, None
        overall, start = _overall_slope(cohort, treated, control, z, prepared, align, adjust)
        overall_rows.append(overall)
    for variable in variables:
        if variable not in cohort.patients.columns or variable == "program":
            continue
        levels = sorted(cohort.patients[variable].dropna().astype(str).unique())
        if len(levels) < 2:
            continue
        if "relapse_hr" in outcomes:
            level_rows, p = _cox_rows(surv, _level_masks(pts[variable], levels), variable, levels, z)
            rows += [dict(r, interaction_p=p) for r in level_rows]
        if "phq9_slope_difference" in outcomes:
            rows += _slope_rows(cohort, variable, levels, treated, control, z, prepared=prepared, align=align,
                                start=start, adjust=adjust)[0]
    columns = ["outcome", "variable", "level", "n_treated", "n_control", "n_event", "estimate", "ci_low", "ci_high",
               "adjusted", "interaction_p", "interaction_p_holm", "interaction_p_bh"]
    table = _with_adjusted_p(pd.DataFrame(rows, columns=columns[:-2]))
    overall = pd.DataFrame(overall_rows).reindex(columns=columns)
    overall["adjusted"] = overall["adjusted"].fillna("")
    n_tests = int(table.drop_duplicates(["outcome", "variable"])["interaction_p"].notna().sum())
    asked = [LABELS.get(c, c.replace("_", " ")).lower() for c in adjust]
    notes.append(f"Multiplicity: {n_tests} interaction tests are shown; Holm's adjusted p-values keep the chance of "
                 "any false 'difference' at 5 %, Benjamini–Hochberg's the expected share of false ones.")
    if asked:
        notes.append("Relapse hazard ratios and PHQ-9 slope differences are adjusted for case mix ("
                     + ", ".join(asked) + "; never for the subgrouping variable itself); a missing numeric value "
                     "enters as the mean with a missing indicator. In the PHQ-9 models each case-mix covariate also "
                     "has its own weekly slope (covariate × weeks), so the program × subgroup × weeks term is the "
                     "slope difference for patients of the same case mix.")
    notes.append("Relapse: Cox hazard ratio (Efron ties) within each level; interaction p from a likelihood-ratio "
                 "test of program × subgroup terms. PHQ-9: difference in weekly slope from one random intercept and "
                 "slope mixed model (REML) per variable with a program × subgroup group term; interaction p from the "
                 "joint Wald test that the differences are equal across subgroups.")
    return SubgroupForest(table=table, overall=overall, treated=treated, control=control, conf_level=conf_level,
                          adjust=tuple(adjust), notes=tuple(notes))


def holm(p: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (R ``p.adjust(method = "holm")``)."""
    p = np.asarray(p, dtype=float)
    order = np.argsort(p, kind="stable")
    m = p.size
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(stepped, 1.0)
    return out


def benjamini_hochberg(p: Sequence[float]) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (R ``p.adjust(method = "BH")``)."""
    p = np.asarray(p, dtype=float)
    m = p.size
    order = np.argsort(p, kind="stable")[::-1]
    stepped = np.minimum.accumulate(p[order] * m / np.arange(m, 0, -1))
    out = np.empty(m)
    out[order] = np.minimum(stepped, 1.0)
    return out


def _with_adjusted_p(table: pd.DataFrame) -> pd.DataFrame:
    """Holm and BH adjustments of the interaction p-values, one test per (outcome, variable)."""
    tests = table.drop_duplicates(["outcome", "variable"])[["outcome", "variable", "interaction_p"]]
    tests = tests[tests["interaction_p"].notna()]
    tests = tests.assign(interaction_p_holm=holm(tests["interaction_p"]),
                         interaction_p_bh=benjamini_hochberg(tests["interaction_p"]))
    out = table.merge(tests.drop(columns="interaction_p"), on=["outcome", "variable"], how="left")
    out["adjusted"] = out["adjusted"].fillna("")
    return out
