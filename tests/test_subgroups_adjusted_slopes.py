"""Who benefits: PHQ-9 slope differences adjusted for case mix (covariates and covariate × weeks).

Golden: one adjusted model against lme4 (``tests/reference/subgroups/make_reference.R``, frozen in
``reference.json``). Recovery: a generated clinic whose true therapy slope difference is known and whose sites differ
in how fast PHQ-9 falls (sites also differ in their share of therapy patients, so site confounds the crude
difference): the adjusted difference recovers the truth within its CI, the crude one does not.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analytics.engines import lmm
from analytics.engines.intervals import z_crit
from analytics.outcomes import subgroups
from analytics.outcomes.cohort import Cohort, build_cohort
from analytics.outcomes.settings import Settings
from analytics.sample import TRUE_EFFECTS, generate_clinic
from schemas.validate import load_exports

REF_DIR = Path(__file__).parent / "reference" / "subgroups"
REF = json.loads((REF_DIR / "reference.json").read_text())
TREATED, CONTROL = "ketamine + therapy", "ketamine only"
Z = z_crit(0.95)


@pytest.fixture(scope="module")
def reference_cohort() -> Cohort:
    pts = pd.read_csv(REF_DIR / "patients.csv", dtype={"patient_id": str})
    sc = pd.read_csv(REF_DIR / "scores.csv", dtype={"patient_id": str})
    measures = pd.DataFrame({"patient_id": sc["patient_id"], "date": pd.NaT, "days": sc["weeks"] * 7.0,
                             "weeks": sc["weeks"], "measure": "phq9", "value": sc["phq9"], "source": "followup"})
    return Cohort(patients=pts, measures=measures, followups=pd.DataFrame(), sessions=pd.DataFrame(),
                  settings=Settings())


def _r_name(term: str) -> str:
    """Our term names in lme4's spelling (treatment-coded factor level appended to the variable name)."""
    out = term.replace("_arm_level[T.", "arm_level").replace("sex[T.", "sex").replace("site[T.", "site")
    return out.replace("]", "").replace("baseline_phq9 missing", "baseline_phq9_missing").replace("Intercept",
                                                                                                  "(Intercept)")


def test_adjusted_slope_model_equals_lme4(reference_cohort, monkeypatch):
    pts = reference_cohort.patients
    levels = sorted(pts["primary_substance"].unique())
    analysed = pts["program"].isin([TREATED, CONTROL]).to_numpy()
    mix, used = subgroups.slope_case_mix(pts, analysed, subgroups.CASE_MIX, without="primary_substance")
    assert used == ["age", "sex", "baseline_phq9", "site"]
    assert list(mix.columns) == ["age", "sex", "baseline_phq9", "baseline_phq9 missing", "site"]
    combo = (pts["program"] + " | " + pts["primary_substance"]).astype("string")
    blocks = []
    fit_blocks = lmm.fit_blocks
    monkeypatch.setattr(lmm, "fit_blocks", lambda blk, **kw: blocks.append(blk) or fit_blocks(blk, **kw))
    fit = subgroups._slope_fit(reference_cohort, combo, f"{CONTROL} | {levels[0]}", mix)
    assert "weeks" in fit.formula and fit.random_structure == "correlated" and not fit.singular and fit.converged
    ours = fit.fixed.set_index("term")
    ours.index = [_r_name(t) for t in ours.index]
    assert sorted(ours.index) == sorted(REF["fixed"])
    ref_beta = pd.Series(REF["fixed"])
    # the same model: at lme4's θ our engine gives lme4's fixed effects, SEs and REML criterion
    at_r = lmm._deviance(np.array(REF["theta"]), blocks[-1], True, False)
    beta_at_r = pd.Series(at_r.beta, index=ours.index)[ref_beta.index]
    assert np.max(np.abs(beta_at_r - ref_beta) / np.abs(ref_beta)) < 1e-6
    assert at_r.deviance == pytest.approx(REF["reml_criterion"], abs=1e-6)
    # and the same optimum: the REML surface is flat here (lme4's derivative-free optimiser stops with a scaled
    # gradient of ~1e-3, ours at ~1e-8, 2e-10 lower), so the reported estimates agree to ~4e-6 of the smallest
    for term, value in REF["fixed"].items():
        assert ours.loc[term, "estimate"] == pytest.approx(value, rel=1e-5, abs=1e-9), term
        assert ours.loc[term, "se"] == pytest.approx(REF["se"][term], rel=1e-5), term
    assert fit.deviance <= REF["reml_criterion"] + 1e-9
    for key in ("sd_intercept", "sd_slope", "sd_residual"):
        assert fit.random[key] == pytest.approx(REF[key], rel=1e-4), key
    assert fit.random["corr"] == pytest.approx(REF["corr"], abs=1e-4)
    assert (fit.n_obs, fit.n_patients) == (REF["n_obs"], REF["n_groups"])

    # the rows who_benefits shows: each substance's adjusted difference, its CI and the interaction test
    rows, _ = subgroups._slope_rows(reference_cohort, "primary_substance", levels, TREATED, CONTROL, Z,
                                    adjust=subgroups.CASE_MIX)
    got = pd.DataFrame(rows).set_index("level")
    for ref in REF["slope_difference"]:
        row = got.loc[ref["level"]]
        assert row["estimate"] == pytest.approx(ref["estimate"], rel=1e-5)
        assert (row["ci_high"] - row["ci_low"]) / (2 * Z) == pytest.approx(ref["se"], rel=1e-5)
        assert row["adjusted"] == "age, sex, baseline_phq9, site"
    assert got["interaction_p"].iloc[0] == pytest.approx(REF["interaction_p"], rel=1e-5)


TRUE_DIFF = -0.06  # PHQ-9 points per week, therapy − ketamine only, every subgroup
SITE_SLOPE = {"Northside": -0.12, "Riverside": -0.04, "Harbor": 0.04, "Eastgate": 0.12}


@pytest.fixture(scope="module")
def confounded_clinic(tmp_path_factory):
    """A clinic whose PHQ-9 falls linearly (no bend, little clipping) with a true therapy difference of
    TRUE_DIFF per week, plus a site-specific weekly slope (site also sets the therapy share: confounding)."""
    traj = replace(TRUE_EFFECTS.phq9, slope_per_week=-0.06, therapy_slope_per_week=TRUE_DIFF,
                   late_slope_per_week=-0.06, therapy_late_slope_per_week=TRUE_DIFF,
                   sd_intercept=2.0, sd_slope=0.06, sd_residual=2.0)
    fx = replace(TRUE_EFFECTS, phq9=traj, therapy_share_by_site={"Northside": 0.85, "Riverside": 0.65,
                                                                  "Harbor": 0.40, "Eastgate": 0.15})
    frames = generate_clinic(2000, seed=1919, effects=fx)
    d = tmp_path_factory.mktemp("confounded")
    for name, frame in frames.items():
        frame.to_csv(d / f"{name}.csv", index=False)
    cohort = build_cohort(load_exports(d / "sessions.csv", d / "followups.csv", d / "patients.csv"))
    m = cohort.measures
    site = m["patient_id"].map(cohort.patients.set_index("patient_id")["site"])
    shift = np.where(m["measure"] == "phq9", site.map(SITE_SLOPE).to_numpy(dtype=float) * m["weeks"], 0.0)
    return replace(cohort, measures=m.assign(value=m["value"] + shift))


def test_true_slope_difference_is_recovered_after_case_mix_adjustment(confounded_clinic):
    adjusted = subgroups.who_benefits(confounded_clinic, variables=("sex",), outcomes=("phq9_slope_difference",))
    crude = subgroups.who_benefits(confounded_clinic, variables=(), outcomes=("phq9_slope_difference",), adjust=())
    a = adjusted.overall.iloc[0]
    c = crude.overall.iloc[0]
    assert a["ci_low"] < TRUE_DIFF < a["ci_high"]
    assert "site" in a["adjusted"] and c["adjusted"] == ""
    assert not (c["ci_low"] < TRUE_DIFF < c["ci_high"])  # the crude difference mixes in the sites' slopes
    assert c["estimate"] < a["estimate"]  # therapy patients are mostly at the fast-falling Northside
    rows = adjusted.table[adjusted.table["level"].isin(["female", "male"])]
    assert ((rows["ci_low"] < TRUE_DIFF) & (TRUE_DIFF < rows["ci_high"])).all()
    assert (rows["adjusted"] == "age, primary_substance, baseline_phq9, site").all()
    assert any("covariate × weeks" in n for n in adjusted.notes)
    from analytics.report.plots.subgroups import subgroup_forest

    assert "adjusted for case mix" in subgroup_forest(adjusted, outcome="phq9_slope_difference").layout.title.text
    assert "unadjusted" in subgroup_forest(crude, outcome="phq9_slope_difference").layout.title.text
