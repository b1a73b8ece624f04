"""The vectorised GEE engine (analytics/engines/gee.py) against statsmodels (live) and R geepack (frozen).

geepack's numbers come from ``tests/reference/trajectories/make_reference.R`` (section 5 and 6; R is not needed to run
these tests). statsmodels is the reference engine of the dashboard and is compared live, on small data.
"""

from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analytics.engines import gee
from analytics.outcomes import trajectories
from analytics.outcomes.cohort import Cohort
from analytics.outcomes.settings import Settings

REF_DIR = Path(__file__).parent / "reference" / "trajectories"
REF = json.loads((REF_DIR / "reference.json").read_text())
TOL = 1e-6


def _csv(name: str) -> pd.DataFrame:
    return pd.read_csv(REF_DIR / f"{name}.csv")


def _case(key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Response, design (columns in R's order) and cluster ids of a frozen geepack fit."""
    if key in ("gee", "gee_interaction"):
        d = _csv("gee")
        b = (d["group"] == "b").to_numpy(float)
        cols = [np.ones(len(d)), d["weeks"], b] + ([d["weeks"] * b] if key == "gee_interaction" else [])
        return d["abstinent"].to_numpy(float), np.column_stack(cols), d["id"].to_numpy()
    if key == "gee_ohio":
        d = _csv("ohio")
        return d["resp"].to_numpy(float), np.column_stack([np.ones(len(d)), d["age"], d["smoke"]]), d["id"].to_numpy()
    d = _csv("gee_clinic")
    iop = (d["program"] == "ketamine + IOP").to_numpy(float)
    ther = (d["program"] == "ketamine + therapy").to_numpy(float)
    w = d["weeks"].to_numpy(float)
    X = np.column_stack([np.ones(len(d)), w, iop, ther, w * iop, w * ther])
    return d["abstinent"].to_numpy(float), X, d["id"].to_numpy()


def _statsmodels(y: np.ndarray, X: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    from statsmodels.genmod import families
    from statsmodels.genmod.cov_struct import Exchangeable
    from statsmodels.genmod.generalized_estimating_equations import GEE

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = GEE(y, X, groups=groups, family=families.Binomial(), cov_struct=Exchangeable())
        res = model.fit()
    return np.asarray(res.params), np.asarray(res.bse), float(model.cov_struct.dep_params)


def _dense_reference(y: np.ndarray, X: np.ndarray, groups: np.ndarray, beta: np.ndarray,
                     rho: float) -> tuple[np.ndarray, np.ndarray]:
    """Bread and meat by the textbook formulas, one dense ``V_i⁻¹`` per cluster (a loop, for checking only)."""
    p = X.shape[1]
    bread, meat = np.zeros((p, p)), np.zeros((p, p))
    for g in pd.unique(groups):
        m = groups == g
        mu = 1 / (1 + np.exp(-X[m] @ beta))
        v = mu * (1 - mu)
        n = int(m.sum())
        R = (1 - rho) * np.eye(n) + rho * np.ones((n, n))
        V = np.sqrt(v)[:, None] * R * np.sqrt(v)[None, :]
        D = X[m] * v[:, None]
        Vinv = np.linalg.inv(V)
        bread += D.T @ Vinv @ D
        u = D.T @ Vinv @ (y[m] - mu)
        meat += np.outer(u, u)
    return bread, meat


# ------------------------------------------------------------------------------------ golden: geepack
@pytest.mark.parametrize("key", ["gee", "gee_interaction", "gee_ohio", "gee_clinic"])
def test_fit_with_geepack_moment_estimators_equals_geeglm(key):
    ref = REF[key]
    y, X, ids = _case(key)
    fit = gee.fit_gee(y, X, ids, ddof=0)
    assert fit.converged and fit.ddof == 0 and not fit.notes
    assert np.max(np.abs(fit.beta - list(ref["estimate"].values()))) < TOL
    assert np.max(np.abs(fit.se - list(ref["se"].values()))) < TOL
    assert abs(fit.alpha - ref["alpha"]) < TOL
    if "scale" in ref:
        assert abs(fit.scale - ref["scale"]) < TOL
        assert (fit.n_obs, fit.n_groups) == (ref["n_obs"], ref["n_clusters"])


def test_statsmodels_and_geepack_differ_by_the_documented_degrees_of_freedom():
    # statsmodels divides by N − p and K − p, geepack by N and K: the ρ estimates differ by more than 1e-6, and each
    # engine option reproduces its own package.
    ref = REF["gee_clinic"]
    y, X, ids = _case("gee_clinic")
    sm_fit, gp_fit = gee.fit_gee(y, X, ids), gee.fit_gee(y, X, ids, ddof=0)
    assert sm_fit.ddof == X.shape[1]
    assert abs(sm_fit.alpha - ref["alpha"]) > 1e-4 and abs(gp_fit.alpha - ref["alpha"]) < TOL
    n, k, p = len(y), float(np.sum([c * (c - 1) / 2 for c in pd.Series(ids).value_counts()])), X.shape[1]
    # at a common β the two estimators differ by exactly the factor of their denominators
    beta = gp_fit.beta
    mu = 1 / (1 + np.exp(-X @ beta))
    r = (y - mu) / np.sqrt(mu * (1 - mu))
    t = pd.Series(r).groupby(ids).sum().to_numpy()
    pairs = (np.sum(t ** 2) - np.sum(r ** 2)) / 2
    assert gp_fit.alpha == pytest.approx(pairs / k / (np.sum(r ** 2) / n), rel=1e-12)
    assert gp_fit.scale == pytest.approx(np.sum(r ** 2) / n, rel=1e-12)
    mu_sm = 1 / (1 + np.exp(-X @ sm_fit.beta))
    assert sm_fit.scale == pytest.approx(np.sum((y - mu_sm) ** 2 / (mu_sm * (1 - mu_sm))) / (n - p), rel=1e-12)


# ------------------------------------------------------------------------------------ statsmodels, live
@pytest.mark.parametrize("key", ["gee", "gee_interaction", "gee_clinic"])
def test_fit_equals_statsmodels_gee_exchangeable(key):
    y, X, ids = _case(key)
    est, se, alpha = _statsmodels(y, X, ids)
    fit = gee.fit_gee(y, X, ids)
    assert fit.converged
    assert np.max(np.abs(fit.beta - est)) < TOL
    assert np.max(np.abs(fit.se - se)) < TOL
    assert abs(fit.alpha - alpha) < TOL
    assert np.max(np.abs(fit.cov_params() - fit.cov_robust)) == 0


def test_closed_form_inverse_gives_the_dense_bread_and_meat():
    y, X, ids = _case("gee_clinic")
    fit = gee.fit_gee(y, X, ids)
    bread, meat = _dense_reference(y, X, ids, fit.beta, fit.alpha)
    binv = np.linalg.inv(bread)
    assert fit.cov_naive == pytest.approx(binv, rel=1e-9, abs=1e-14)
    assert fit.cov_robust == pytest.approx(binv @ meat @ binv, rel=1e-9, abs=1e-14)
    assert fit.score_norm < 1e-8  # the estimating equations hold at β̂


def test_row_order_and_cluster_labels_do_not_change_the_fit():
    y, X, ids = _case("gee_clinic")
    fit = gee.fit_gee(y, X, ids)
    order = np.random.default_rng(0).permutation(len(y))  # clusters no longer contiguous
    labels = np.array([f"patient {i}" for i in ids])[order]
    shuffled = gee.fit_gee(y[order], X[order], labels)
    assert shuffled.beta == pytest.approx(fit.beta, rel=1e-10, abs=1e-13)
    assert shuffled.se == pytest.approx(fit.se, rel=1e-10)
    assert shuffled.alpha == pytest.approx(fit.alpha, rel=1e-10)
    assert shuffled.n_groups == fit.n_groups == 500 and shuffled.max_cluster_size == 8


def test_singleton_clusters_add_to_the_mean_model_but_not_to_the_correlation():
    y, X, ids = _case("gee")
    rng = np.random.default_rng(1)
    extra = 40
    y2 = np.r_[y, rng.integers(0, 2, extra)]
    X2 = np.r_[X, np.column_stack([np.ones(extra), rng.choice([4.0, 8.0], extra), rng.integers(0, 2, extra)])]
    ids2 = np.r_[ids, 10_000 + np.arange(extra)]
    est, se, alpha = _statsmodels(y2, X2, ids2)
    fit = gee.fit_gee(y2, X2, ids2)
    assert np.max(np.abs(fit.beta - est)) < TOL and abs(fit.alpha - alpha) < TOL
    assert np.max(np.abs(fit.se - se)) < TOL


def test_non_convergence_is_flagged_with_a_note():
    y, X, ids = _case("gee_clinic")
    fit = gee.fit_gee(y, X, ids, max_iter=1)
    assert not fit.converged
    assert any("did not converge" in n for n in fit.notes)


def test_invalid_input_is_refused():
    y, X, ids = _case("gee")
    with pytest.raises(ValueError, match="0 or 1"):
        gee.fit_gee(y * 2, X, ids)
    with pytest.raises(ValueError, match="same number of rows"):
        gee.fit_gee(y[:-1], X, ids)
    with pytest.raises(ValueError, match="within-cluster pairs"):
        gee.fit_gee(y, X, np.arange(len(y)))  # every cluster a singleton: no correlation to estimate


# ------------------------------------------------------------------------------------ through the cohort API
def _gee_cohort() -> Cohort:
    d = _csv("gee")
    n = len(d)
    followups = pd.DataFrame({
        "patient_id": d["id"].astype(str), "days": d["weeks"] * 7.0, "window_days": 28.0,
        "days_abstinent": np.where(d["abstinent"] == 1, 28.0, 20.0), "any_use": pd.array([pd.NA] * n, "boolean"),
        "urine_tox": pd.array([pd.NA] * n, "string"), "window_after_index": True})
    patients = d.drop_duplicates("id")[["id", "group"]].rename(columns={"id": "patient_id"})
    patients["patient_id"] = patients["patient_id"].astype(str)
    return Cohort(patients=patients, measures=pd.DataFrame(), followups=followups, sessions=pd.DataFrame(),
                  settings=Settings())


def test_abstinence_gee_table_equals_statsmodels():
    res = trajectories.abstinence_gee(_gee_cohort(), by="group", reference="a")
    y, X, ids = _case("gee_interaction")
    est, se, alpha = _statsmodels(y, X, ids)
    assert res.table["term"].tolist() == ["Intercept", "weeks", "group[T.b]", "weeks:group[T.b]"]
    assert np.max(np.abs(res.table["estimate"].to_numpy() - est)) < TOL
    assert np.max(np.abs(res.table["se"].to_numpy() - se)) < TOL
    assert abs(res.working_correlation - alpha) < TOL
    assert res.notes[0].startswith(f"GEE (binomial, logit link, exchangeable working correlation {alpha:.2f}")
    assert len(res.notes) == 1


def test_abstinence_gee_that_does_not_converge_says_so(monkeypatch):
    monkeypatch.setattr(trajectories.gee, "fit_gee", functools.partial(gee.fit_gee, max_iter=1))
    res = trajectories.abstinence_gee(_gee_cohort(), by="group", reference="a")
    assert any("did not converge" in n for n in res.notes[1:])
