"""Golden tests: the Cox engine on counting-process (start, stop] data against R's survival (numbers frozen by R).

tests/reference/survival_counting/ holds the R script, its data (R's Stanford heart transplant data ``heart`` with
the time-varying transplant; a simulated response-durability data set with whole days, where maintenance often
starts on another patient's event day) and the frozen numbers. R fitted with eps = 1e-14, so its estimates are the
exact maxima that we reach too: tolerances 1e-8 relative (coefficients, SEs) and 1e-10 (log-likelihoods).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analytics.engines.survival import RiskSets, _Efron, cox_ph

HERE = Path(__file__).parent / "reference" / "survival_counting"
REF = json.loads((HERE / "reference.json").read_text())


def _fit(name: str, **kwargs):
    d = pd.read_csv(HERE / f"{name}.csv")
    columns = list(np.atleast_1d(REF[name]["columns"]))
    return d, cox_ph(d["stop"], d["event"].astype(bool), d[columns].astype(float), entry=d["start"],
                     ph_transform=None, **kwargs)


@pytest.mark.parametrize("name", ["heart", "maintenance"])
def test_cox_on_start_stop_data_equals_r_coxph(name):
    r = REF[name]
    _, fit = _fit(name)
    np.testing.assert_allclose(fit.table["coef"], np.atleast_1d(r["coef"]), rtol=1e-8)
    np.testing.assert_allclose(fit.table["se"], np.atleast_1d(r["se"]), rtol=1e-8)
    np.testing.assert_allclose(fit.loglik, r["loglik"], rtol=1e-10)
    assert (fit.n, fit.n_event) == (r["n"], r["nevent"])


def test_an_interval_starting_on_an_event_day_is_not_at_risk_that_day():
    # (start, stop]: a row entering on day 5 is not at risk at an event on day 5 (R); statsmodels' PHReg counts it,
    # which is why the engine replaced PHReg in the response-durability model
    time, event, entry = np.array([5.0, 8.0, 9.0]), np.array([True, True, False]), np.array([0.0, 5.0, 0.0])
    engine = _Efron(RiskSets(time, event, entry), np.array([[0.0], [1.0], [1.0]]))
    b = 0.3
    loglik, _, _ = engine.evaluate(np.array([b]))
    # day 5: rows 1 and 3 at risk (row 2 enters after day 5); day 8: rows 2 and 3
    assert loglik == pytest.approx(-np.log(1 + np.exp(b)) + b - np.log(2 * np.exp(b)), rel=1e-14)


def test_risk_sets_of_a_subset_give_the_fit_of_the_subset_alone():
    d = pd.read_csv(HERE / "heart.csv")
    x = d[["age", "year", "surgery", "transplant"]].astype(float)
    mask = (d["surgery"] == 0).to_numpy()
    shared = RiskSets(d["stop"], d["event"].astype(bool), d["start"]).subset(mask)
    alone = cox_ph(d["stop"][mask], d["event"][mask].astype(bool), x[mask].drop(columns="surgery"),
                   entry=d["start"][mask], ph_transform=None)
    via = cox_ph(d["stop"][mask], d["event"][mask].astype(bool), x[mask].drop(columns="surgery"),
                 entry=d["start"][mask], ph_transform=None, risk_sets=shared)
    np.testing.assert_allclose(via.table["coef"], alone.table["coef"], rtol=1e-13, atol=0)
    np.testing.assert_allclose(via.vcov, alone.vcov, rtol=1e-13)
    assert via.loglik == alone.loglik


def test_entry_times_must_precede_exit_and_rule_out_the_ph_test():
    x = pd.DataFrame({"x": [0.0, 1.0]})
    with pytest.raises(ValueError, match="entry < time"):
        cox_ph([5.0, 6.0], [True, True], x, entry=[5.0, 0.0], ph_transform=None)
    with pytest.raises(ValueError, match="PH test"):
        cox_ph([5.0, 6.0], [True, True], x, entry=[0.0, 1.0])
