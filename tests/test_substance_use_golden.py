"""The substance-use mixed models (weeks x program by REML, natural spline x program by ML) against lme4 on frozen data.

tests/reference/substance_use/make_reference.R fits the use windows of a generated clinic (pda.csv, heavy.csv) with
lmer; the numbers are in reference.json. The models are those :func:`analytics.outcomes.substance_use.use_course`
fits (through :func:`analytics.outcomes.trajectories.fit_trajectory`)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analytics.outcomes import trajectories as tr
from analytics.outcomes.cohort import Cohort
from analytics.outcomes.settings import Settings

REF_DIR = Path(__file__).resolve().parent / "reference" / "substance_use"
REF = json.loads((REF_DIR / "reference.json").read_text(encoding="utf-8"))


def _cohort(measure: str) -> Cohort:
    d = pd.read_csv(REF_DIR / f"{measure}.csv", dtype={"patient_id": str})
    patients = d.groupby("patient_id", sort=True)["program"].first().reset_index()
    measures = pd.DataFrame({"patient_id": d["patient_id"].astype("string"), "date": pd.NaT, "days": d["days"],
                             "weeks": d["weeks"], "measure": "pda", "value": d["value"] / 100, "source": d["source"]})
    empty = pd.DataFrame({"patient_id": pd.Series(dtype="string")})
    base = Cohort(patients=patients, measures=measures, followups=empty, sessions=empty, settings=Settings())
    return replace(base, patients=patients.assign(patient_id=patients["patient_id"].astype("string")))


def _check(fit: tr.TrajectoryFit, ref: dict) -> None:
    assert fit.fixed["estimate"].to_numpy() == pytest.approx(ref["fixed"], rel=1e-6)
    assert fit.fixed["se"].to_numpy() == pytest.approx(ref["se"], rel=1e-5)
    for key in ("sd_intercept", "sd_slope", "sd_residual"):
        assert fit.random[key] == pytest.approx(ref[key], rel=1e-4), key
    assert fit.random["corr"] == pytest.approx(ref["corr"], abs=1e-4)
    assert fit.loglik == pytest.approx(ref["loglik"], abs=1e-6)
    assert (fit.n_obs, fit.n_patients) == (ref["n_obs"], ref["n_groups"])


@pytest.mark.parametrize("measure", ["pda", "heavy"])
def test_weeks_by_program_model_equals_lme4(measure):
    fit = tr.fit_trajectory(_cohort(measure), measure="pda", by="program", time="linear")
    assert fit.converged and fit.formula.startswith("pda ~ weeks * program")
    _check(fit, REF[f"{measure}_linear_reml"])


@pytest.mark.parametrize("measure", ["pda", "heavy"])
def test_spline_by_program_model_equals_lme4_by_ml_likelihood_and_predictions(measure):
    ref = REF[f"{measure}_spline_ml"]
    fit = tr.fit_trajectory(_cohort(measure), measure="pda", by="program", time="spline", spline_df=3, reml=False)
    knots = fit.design.time.knots
    assert knots[1:-1] == pytest.approx(ref["knots"]["interior"], rel=1e-12)
    assert fit.loglik == pytest.approx(ref["loglik"], abs=1e-6)
    for key in ("sd_intercept", "sd_slope", "sd_residual"):
        assert fit.random[key] == pytest.approx(ref[key], rel=1e-4), key
    pred = tr.predicted_means(fit, weeks=REF["prediction_weeks"]).table
    r = pd.DataFrame({"group": ref["predicted_program"], "estimate": ref["predicted"]})
    for g in r["group"].unique():
        assert pred.loc[pred["group"] == g, "estimate"].to_numpy() == pytest.approx(
            r.loc[r["group"] == g, "estimate"].to_numpy(), rel=1e-6)
    assert np.isfinite(pred["se"]).all()
