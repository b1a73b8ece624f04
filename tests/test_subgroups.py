"""Who benefits: the program contrast within subgroups, on the sample clinic (true HR 0.60, same in every subgroup)."""

from pathlib import Path

import numpy as np
import pytest

from analytics.cohort import build_cohort
from analytics.subgroups import who_benefits
from schemas.validate import load_exports

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def result():
    d = ROOT / "sample_data"
    cohort = build_cohort(load_exports(d / "sessions.csv", d / "followups.csv", d / "patients.csv"))
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
