"""Who benefits: the program contrast within subgroups, on the sample clinic (true HR 0.60, same in every subgroup)."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analytics.outcomes import subgroups, survival
from analytics.outcomes.cohort import build_cohort
from analytics.outcomes.subgroups import who_benefits
from schemas.validate import load_exports

ROOT = Path(__file__).resolve().parents[1]
TREATED, CONTROL = "ketamine + therapy", "ketamine only"


@pytest.fixture(scope="module")
def cohort():
    d = ROOT / "sample_data"
    return build_cohort(load_exports(d / "sessions.csv", d / "followups.csv", d / "patients.csv"))


@pytest.fixture(scope="module")
def result(cohort):
    return who_benefits(cohort, variables=("primary_substance", "sex"), adjust=())


@pytest.fixture(scope="module")
def adjusted(cohort):
    return who_benefits(cohort, variables=("primary_substance", "sex"))


def test_overall_relapse_hazard_ratio_contains_the_true_value(result):
    row = result.overall[result.overall["outcome"] == "relapse_hr"].iloc[0]
    assert row["ci_low"] < 0.60 < row["ci_high"]
    assert result.treated == "ketamine + therapy" and result.control == "ketamine only"


def test_every_level_has_counts_and_one_interaction_p_per_variable(result):
    t = result.table
    assert set(t["variable"]) == {"primary_substance", "sex"}
    for (_, _), g in t.groupby(["outcome", "variable"]):
        p = g["interaction_p"].dropna().unique()
        assert len(p) == 1 and 0 <= p[0] <= 1
    relapse = t[(t["outcome"] == "relapse_hr") & (t["variable"] == "primary_substance")]
    big = relapse[relapse[["n_treated", "n_control"]].min(axis=1) >= 40]
    assert np.isfinite(big["estimate"]).all() and (big["ci_low"] < big["estimate"]).all()


def test_levels_too_small_for_a_comparison_get_no_estimate(result):
    t = result.table
    small = t[t[["n_treated", "n_control"]].min(axis=1) < 10]
    assert small["estimate"].isna().all()


def test_slope_rows_equal_one_plain_trajectory_model_per_variable(cohort, result):
    # who_benefits reads the PHQ-9 scores once, skips the id lookup and starts each model from the overall one;
    # none of that may change a number: compare with the plain path (each model fitted from scratch)
    z = float(stats.norm.ppf(0.975))
    phq = replace(cohort, measures=cohort.measures[cohort.measures["measure"] == "phq9"].reset_index(drop=True))
    t = result.table[result.table["outcome"] == "phq9_slope_difference"]
    for variable in ("primary_substance", "sex"):
        levels = sorted(cohort.patients[variable].dropna().astype(str).unique())
        plain, _ = subgroups._slope_rows(phq, variable, levels, TREATED, CONTROL, z)
        plain = pd.DataFrame(plain).set_index("level")
        got = t[t["variable"] == variable].set_index("level")
        assert got["n_treated"].tolist() == plain["n_treated"].tolist()
        for col in ("estimate", "ci_low", "ci_high", "interaction_p"):
            a, b = got[col].to_numpy(float), plain[col].to_numpy(float)
            assert np.array_equal(np.isnan(a), np.isnan(b))
            ok = ~np.isnan(b)
            assert np.all(np.abs(a[ok] - b[ok]) <= 1e-8 * np.abs(b[ok])), (variable, col)
    overall = result.overall[result.overall["outcome"] == "phq9_slope_difference"].iloc[0]
    assert overall["estimate"] < 0  # the therapy arm's PHQ-9 falls faster in the sample clinic


def test_relapse_rows_equal_cox_models_fitted_directly(cohort, result):
    pts = cohort.survival_patients
    pts = pts[pts["program"].isin([TREATED, CONTROL])]
    sub = pts[pts["sex"] == "female"]
    fit = survival.cox_ph(sub["days_to_event"], sub["relapsed"],
                          (sub["program"] == TREATED).astype(float).to_frame("treated"), ph_transform=None)
    row = result.table.query("outcome == 'relapse_hr' and variable == 'sex' and level == 'female'").iloc[0]
    assert row["estimate"] == pytest.approx(float(fit.table["estimate"].iloc[0]), rel=1e-12)
    assert row["n_event"] == int(sub["relapsed"].sum())
    # interaction: likelihood-ratio test of program × sex over the levels with ≥ 10 patients per program
    usable = [lv for lv in ("female", "male", "other", "unknown")
              if min(((pts["sex"] == lv) & (pts["program"] == arm)).sum() for arm in (TREATED, CONTROL)) >= 10]
    d = pts[pts["sex"].isin(usable)]
    t = (d["program"] == TREATED).astype(float).to_numpy()
    main = pd.DataFrame({"treated": t, **{lv: (d["sex"] == lv).astype(float).to_numpy() for lv in usable[1:]}})
    full = main.assign(**{f"x{lv}": main[lv] * t for lv in usable[1:]})
    l0 = survival.cox_ph(d["days_to_event"], d["relapsed"], main, ph_transform=None).loglik[1]
    l1 = survival.cox_ph(d["days_to_event"], d["relapsed"], full, ph_transform=None).loglik[1]
    p = stats.chi2.sf(2 * (l1 - l0), df=len(usable) - 1)
    assert row["interaction_p"] == pytest.approx(p, rel=1e-10)


def test_adjusted_relapse_row_equals_a_cox_model_with_the_case_mix_built_by_hand(cohort, adjusted):
    pts = cohort.survival_patients
    pts = pts[pts["program"].isin([TREATED, CONTROL])]
    sub = pts[pts["sex"] == "female"]
    design = pd.DataFrame({"treated": (sub["program"] == TREATED).astype(float).to_numpy()})
    for name in ("age", "baseline_phq9"):
        x = sub[name].astype(float).to_numpy()
        seen = np.isfinite(x)
        design[name] = np.where(seen, x, x[seen].mean())
        if (~seen).sum() >= 5:
            design[f"{name} missing"] = (~seen).astype(float)
    for name in ("primary_substance", "site"):
        counts = sub[name].astype("string").value_counts()
        for level in [v for v, n in counts.items() if n >= 5][1:]:
            design[f"{name}={level}"] = (sub[name] == level).fillna(False).astype(float).to_numpy()
    fit = survival.cox_ph(sub["days_to_event"], sub["relapsed"], design, ph_transform=None)
    row = adjusted.table.query("outcome == 'relapse_hr' and variable == 'sex' and level == 'female'").iloc[0]
    assert row["estimate"] == pytest.approx(float(fit.table["estimate"].iloc[0]), rel=1e-9)
    assert row["adjusted"] == "age, primary_substance, baseline_phq9, site"  # never sex itself
    overall = adjusted.overall[adjusted.overall["outcome"] == "relapse_hr"].iloc[0]
    assert overall["ci_low"] < 0.60 < overall["ci_high"]  # the true HR, same for every case mix in the generator
    assert any("adjusted for case mix" in n for n in adjusted.notes)


def test_interaction_p_values_are_adjusted_for_the_tests_shown_as_r_p_adjust(adjusted):
    from statsmodels.stats.multitest import multipletests  # equal to R's p.adjust (holm, BH)

    tests = adjusted.table.drop_duplicates(["outcome", "variable"]).dropna(subset=["interaction_p"])
    assert len(tests) == 4  # two outcomes × two variables
    p = tests["interaction_p"].to_numpy(float)
    assert np.allclose(tests["interaction_p_holm"], multipletests(p, method="holm")[1], rtol=1e-12)
    assert np.allclose(tests["interaction_p_bh"], multipletests(p, method="fdr_bh")[1], rtol=1e-12)
    assert (tests["interaction_p_holm"] >= tests["interaction_p"]).all()
    assert any("4 interaction tests" in n for n in adjusted.notes)


def test_holm_and_bh_on_a_hand_worked_example():
    p = [0.01, 0.04, 0.03, 0.20]
    # Holm: sorted 0.01·4, 0.03·3, 0.04·2, 0.20·1 → 0.04, 0.09, 0.09 (monotone), 0.20
    assert subgroups.holm(p) == pytest.approx([0.04, 0.09, 0.09, 0.20])
    # BH: 0.20·4/4, 0.04·4/3, 0.03·4/2, 0.01·4/1 → min from the top: 0.20, 0.0533, 0.0533, 0.04
    assert subgroups.benjamini_hochberg(p) == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.20])


def test_the_forest_says_lower_hazard_with_never_favours_and_prints_the_interaction_p(adjusted):
    from analytics.report.plots.subgroups import subgroup_forest

    fig = subgroup_forest(adjusted, outcome="relapse_hr")
    x_title = fig.layout.xaxis.title.text
    assert "lower hazard of return to use with ketamine + therapy" in x_title and "favour" not in x_title
    assert "adjusted for case mix" in fig.layout.title.text
    assert any("interaction p" in str(label) and "Holm" in str(label) for label in fig.data[0].y)


def _case_mix_by_hand(sub: pd.DataFrame, without: str) -> pd.DataFrame:
    """The module's case mix, written out plainly with pandas (as the plain path did before the speed-ups)."""
    design = {}
    for name in ("age", "sex", "primary_substance", "baseline_phq9", "site"):
        if name == without:
            continue
        if name in ("age", "baseline_phq9"):
            x = pd.to_numeric(sub[name], errors="coerce").to_numpy(dtype=float)
            seen = np.isfinite(x)
            if seen.sum() < 5 or np.nanstd(x[seen]) == 0:
                continue
            design[name] = np.where(seen, x, x[seen].mean())
            if (~seen).sum() >= 5:
                design[f"{name} missing"] = (~seen).astype(float)
        else:
            text = sub[name].astype("string")
            for level in [v for v, n in text.value_counts().items() if n >= 5][1:]:
                design[f"{name}={level}"] = (text == level).fillna(False).to_numpy(dtype=float)
    return pd.DataFrame(design, index=range(len(sub)))


@pytest.mark.parametrize("variable", ["primary_substance", "sex"])
def test_relapse_rows_with_case_mix_equal_plain_cox_fits_of_each_level_and_the_interaction(cohort, adjusted, variable):
    # who_benefits sorts the patients once (shared risk sets, subsets as masks), codes the case mix once and starts
    # the interaction model from the main-effects fit: none of that may change a number. Plain path: every model
    # built with pandas and fitted from β = 0 on its own rows.
    pts = cohort.survival_patients
    pts = pts[pts["program"].isin([TREATED, CONTROL])].reset_index(drop=True)
    got = adjusted.table.query("outcome == 'relapse_hr' and variable == @variable").set_index("level")
    usable = []
    for level, row in got.iterrows():
        sub = pts[pts[variable].astype("string") == level].reset_index(drop=True)
        treated = (sub["program"] == TREATED).to_numpy(dtype=float)
        if min(treated.sum(), len(sub) - treated.sum()) < 10:
            assert np.isnan(row["estimate"])
            continue
        usable.append(level)
        design = pd.concat([pd.DataFrame({"treated": treated}), _case_mix_by_hand(sub, variable)], axis=1)
        fit = survival.cox_ph(sub["days_to_event"], sub["relapsed"], design, ph_transform=None)
        for col in ("estimate", "ci_low", "ci_high"):
            assert row[col] == pytest.approx(float(fit.table[col].iloc[0]), rel=1e-10), (level, col)
    d = pts[pts[variable].astype("string").isin(usable)].reset_index(drop=True)
    t = (d["program"] == TREATED).to_numpy(dtype=float)
    level = d[variable].astype("string")
    main = pd.DataFrame({"treated": t, **{f"lv:{lv}": (level == lv).to_numpy(dtype=float) for lv in usable[1:]}})
    main = pd.concat([main, _case_mix_by_hand(d, variable)], axis=1)
    full = main.assign(**{f"int:{lv}": main[f"lv:{lv}"] * t for lv in usable[1:]})
    l0 = survival.cox_ph(d["days_to_event"], d["relapsed"], main, ph_transform=None).loglik[1]
    l1 = survival.cox_ph(d["days_to_event"], d["relapsed"], full, ph_transform=None).loglik[1]
    p = stats.chi2.sf(2 * (l1 - l0), df=len(usable) - 1)
    assert got["interaction_p"].iloc[0] == pytest.approx(p, rel=1e-10)
