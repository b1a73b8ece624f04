"""The fast paths of the mixed-model engine give the same numbers as the plain ones (equivalence, not timing).

* Factored blocks (patient-level features × time basis, :func:`analytics.engines.lmm.factored_blocks`, evaluated per
  pattern) against the blocks of the materialised design (:func:`analytics.engines.lmm.build_blocks`): same sufficient
  statistics, deviance, gradient and fit.
* The optimum does not depend on the start values (Newton polish) nor on a warm start (Newton steps from a related
  model's estimate), and a warm start far from the optimum falls back to the cold path. The cold path (damped
  Newton steps, no SciPy) reaches the optimum of the bounded quasi-Newton run, which takes over for boundary fits.
* ``fit_trajectory`` with shared prepared scores and a start equals the plain call; the arm × level model of the
  who-benefits analysis equals statsmodels ``MixedLM`` on a small sample.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analytics.engines import lmm
from analytics.outcomes import trajectories
from analytics.outcomes.cohort import Cohort
from analytics.outcomes.settings import Settings


def simulate(n: int = 400, seed: int = 3) -> pd.DataFrame:
    """Unbalanced long data: two arms, a three-level band (one small), age and sex; arm-specific slopes."""
    rng = np.random.default_rng(seed)
    k = rng.integers(2, 9, n)
    ids = np.repeat(np.arange(n), k)
    weeks = rng.uniform(0, 26, len(ids))
    weeks[np.r_[0, np.cumsum(k)[:-1]]] = 0.0
    arm = np.where(rng.random(n) < 0.55, "treated", "control")
    band = rng.choice(np.array(["mild", "moderate", "severe"]), n, p=[0.15, 0.5, 0.35])
    age = rng.integers(20, 70, n)
    sex = rng.choice(np.array(["female", "male"]), n)
    u0, u1 = rng.normal(0, 3.5, n), rng.normal(0, 0.12, n)
    slope = -0.25 - 0.08 * (arm == "treated") + u1
    y = 16 + u0[ids] + slope[ids] * weeks + 0.03 * (age[ids] - 45) + rng.normal(0, 2.5, len(ids))
    return pd.DataFrame({"id": [f"p{i:04d}" for i in ids], "weeks": weeks, "y": np.round(y, 3),
                         "arm": arm[ids], "band": band[ids], "age": age[ids], "sex": sex[ids]})


def cohort_of(d: pd.DataFrame) -> Cohort:
    measures = pd.DataFrame({"patient_id": d["id"], "date": pd.NaT, "days": d["weeks"] * 7.0, "weeks": d["weeks"],
                             "measure": "phq9", "value": d["y"].astype(float), "source": "followup"})
    pts = d.drop_duplicates("id")[["id", "arm", "band", "age", "sex"]].rename(columns={"id": "patient_id"})
    pts["arm_band"] = pts["arm"] + " | " + pts["band"]
    return Cohort(patients=pts.reset_index(drop=True), measures=measures, followups=pd.DataFrame(),
                  sessions=pd.DataFrame(), settings=Settings())


def both_blocks(d: pd.DataFrame, *, time: str = "linear", covariates: bool = False, slope: bool = True,
                max_pattern_share: float = 0.25) -> tuple[lmm.Blocks, lmm.Blocks]:
    """Blocks of one arm × band design: from the materialised design and from the factored form."""
    cohort = cohort_of(d)
    prepared = trajectories.prepare_scores(cohort, "phq9")
    pts = cohort.patients.set_index("patient_id").reindex(prepared.patient_id).reset_index()
    group = pts["arm_band"].to_numpy()
    ref, levels = trajectories._levels_of(group, "control | moderate", "arm_band")
    adjust = ("age", "sex") if covariates else ()
    design = trajectories.Design(measure="phq9", time=trajectories.TimeBasis(time), by="arm_band", reference=ref,
                                 levels=levels, covariates=trajectories._covariate_specs(pts, adjust))
    codes, weeks = prepared.codes, prepared.weeks
    X = design.matrix(weeks, group[codes], pts.iloc[codes].reset_index(drop=True) if covariates else None)
    dense = lmm.build_blocks(prepared.value, X, codes, weeks if slope else None)
    w, feature, column = design.patient_features(len(pts), group, pts if covariates else None)
    mom = prepared.moments(design.time)
    fac = lmm.factored_blocks(mom if slope else mom.intercept_only(), w, feature, column,
                              max_pattern_share=max_pattern_share)
    return dense, fac


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def test_patient_moments_are_the_per_patient_sums():
    y = np.array([1.0, 2.0, 4.0, 3.0, 5.0])
    t = np.array([0.0, 1.0, 3.0, 0.0, 2.0])
    groups = np.array([0, 0, 1, 0, 1])            # patient 0: rows 0, 1, 3; patient 1: rows 2, 4
    mom = lmm.patient_moments(y, np.column_stack([np.ones(5), t]), groups, t)
    assert mom.s.tolist() == [[3, 1, 1], [2, 5, 13]]
    assert mom.su.tolist() == [[3, 1, 6], [2, 5, 9]]                      # Σ[1, t, y]
    assert mom.tu.tolist() == [[1, 1, 2], [5, 13, 22]]                    # Σ t·[1, t, y]
    assert mom.uu[1].tolist() == [[2, 5, 9], [5, 13, 22], [9, 22, 41]]    # Σ [1, t, y][1, t, y]'
    assert mom.take(np.array([1])).su.tolist() == [[2, 5, 9]]
    assert mom.intercept_only().s.tolist() == [[3], [2]] and mom.intercept_only().q == 1


def test_identical_patient_rows_share_one_pattern():
    w = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    codes, rows = lmm._row_patterns(w)
    assert codes.tolist() == [0, 1, 0, 2, 1]
    assert rows.tolist() == [[1, 0], [0, 1], [0, 0]]


@pytest.mark.parametrize("time, covariates, slope, share", [
    ("linear", False, True, 0.25), ("piecewise", False, True, 0.25), ("linear", False, False, 0.25),
    ("linear", True, True, 1.0), ("piecewise", True, True, 0.25)])
def test_factored_blocks_give_the_likelihood_of_the_materialised_design(time, covariates, slope, share):
    dense, fac = both_blocks(simulate(), time=time, covariates=covariates, slope=slope, max_pattern_share=share)
    assert (fac.factored is not None) == (not covariates or share == 1.0)  # many patterns → per-patient path
    assert (fac.p, fac.q, fac.n_obs, fac.n_groups) == (dense.p, dense.q, dense.n_obs, dense.n_groups)
    assert _rel(fac.c0, dense.c0) < 1e-13
    # patients are in another order (sorted by pattern): compare what does not depend on the order
    for name in ("s", "b0", "b1") if slope else ("s", "b0"):
        assert _rel(getattr(fac, name).sum(axis=0), getattr(dense, name).sum(axis=0)) < 1e-12
    thetas = [np.array([0.9, -0.01, 0.04]), np.array([1.4, 0.02, 0.01])] if slope else [np.array([0.9])]
    for theta in thetas:
        for reml in (True, False):
            a, b = lmm._deviance(theta, fac, reml, True), lmm._deviance(theta, dense, reml, True)
            assert a.deviance == pytest.approx(b.deviance, rel=1e-12)
            assert _rel(a.grad, b.grad) < 1e-8
            assert _rel(a.beta, b.beta) < 1e-10 and _rel(a.a_inv, b.a_inv) < 1e-10


@pytest.mark.parametrize("covariates", [False, True])
def test_fit_on_factored_blocks_equals_fit_on_the_materialised_design(covariates):
    dense, fac = both_blocks(simulate(seed=4), covariates=covariates, max_pattern_share=1.0)
    a, b = lmm.fit_blocks(fac), lmm.fit_blocks(dense)
    assert a.converged and b.converged and not a.singular
    assert _rel(a.beta, b.beta) < 1e-8 and _rel(a.se, b.se) < 1e-8 and _rel(a.theta, b.theta) < 1e-8
    assert a.deviance == pytest.approx(b.deviance, rel=1e-12)


def test_optimum_does_not_depend_on_the_start_values():
    dense, _ = both_blocks(simulate(seed=5))
    fits = [lmm.fit_blocks(dense), lmm.fit_blocks(dense, start=lmm._default_start(dense)),
            lmm.fit_blocks(dense, start=np.array([0.5, 0.0, 0.01]))]
    for fit in fits[1:]:
        assert _rel(fit.beta, fits[0].beta) < 1e-8 and _rel(fit.se, fits[0].se) < 1e-8
        assert _rel(fit.theta, fits[0].theta) < 1e-7


def test_warm_start_near_the_optimum_takes_newton_steps_to_the_same_optimum():
    _, fac = both_blocks(simulate(seed=6))
    cold = lmm.fit_blocks(fac)
    warm = lmm.fit_blocks(fac, start=cold.theta * np.array([1.002, 0.99, 1.003]), warm=True)
    assert warm.message.startswith("Newton") and warm.converged
    assert warm.n_evaluations < cold.n_evaluations
    assert _rel(warm.beta, cold.beta) < 1e-8 and _rel(warm.se, cold.se) < 1e-8


def test_warm_start_far_from_the_optimum_falls_back_to_the_cold_path():
    _, fac = both_blocks(simulate(seed=6))
    cold = lmm.fit_blocks(fac)
    far = lmm.fit_blocks(fac, start=np.array([3.0, 0.5, 0.2]), warm=True)
    assert far.message == "damped Newton steps" and far.converged
    assert _rel(far.beta, cold.beta) < 1e-8 and _rel(far.se, cold.se) < 1e-8


@pytest.mark.parametrize("kwargs", [{"by": "arm_band"}, {"by": "arm", "adjust": ("age", "sex"), "time": "piecewise"},
                                    {"random_slope": False, "by": "band"}])
def test_fit_trajectory_with_prepared_scores_and_a_start_equals_the_plain_call(kwargs):
    cohort = cohort_of(simulate(seed=7))
    plain = trajectories.fit_trajectory(cohort, **kwargs)
    base = trajectories.fit_trajectory(cohort)  # a related model: its θ starts the others
    vc = base.random
    start = np.array([vc["sd_intercept"], vc["corr"] * vc["sd_slope"],
                      vc["sd_slope"] * np.sqrt(1 - vc["corr"] ** 2)]) / vc["sd_residual"]
    fast = trajectories.fit_trajectory(cohort, prepared=trajectories.prepare_scores(cohort), start=start, **kwargs)
    assert fast.fixed["term"].tolist() == plain.fixed["term"].tolist()
    assert _rel(fast.fixed["estimate"], plain.fixed["estimate"]) < 1e-8
    assert _rel(fast.fixed["se"], plain.fixed["se"]) < 1e-8
    assert _rel(fast.cov_params.to_numpy(), plain.cov_params.to_numpy()) < 1e-8
    assert fast.notes == plain.notes and fast.n_per_group == plain.n_per_group


def test_prepared_scores_of_another_measure_are_refused():
    cohort = cohort_of(simulate(n=60))
    with pytest.raises(ValueError, match="phq9"):
        trajectories.fit_trajectory(cohort, measure="gad7", prepared=trajectories.prepare_scores(cohort))


def test_statsmodels_engine_gets_exactly_the_materialised_design():
    cohort = cohort_of(simulate(n=80, seed=8))
    prepared = trajectories.prepare_scores(cohort)
    pts = cohort.patients.set_index("patient_id").reindex(prepared.patient_id).reset_index()
    ref, levels = trajectories._levels_of(pts["arm"].to_numpy(), None, "arm")
    design = trajectories.Design(measure="phq9", time=trajectories.TimeBasis("piecewise"), by="arm", reference=ref,
                                 levels=levels, covariates=trajectories._covariate_specs(pts, ("age", "sex")))
    group = pts["arm"].to_numpy()
    w, feature, column = design.patient_features(len(pts), group, pts)
    data = trajectories._ModelData(prepared, np.arange(len(pts)), design, w, feature, column)
    y, X, codes, weeks = data.arrays()
    expected = design.matrix(prepared.weeks, group[prepared.codes], pts.iloc[prepared.codes].reset_index(drop=True))
    assert np.array_equal(X, expected) and np.array_equal(y, prepared.value)
    assert np.array_equal(codes, prepared.codes) and np.array_equal(weeks, prepared.weeks)


def test_arm_by_level_model_equals_statsmodels_mixedlm_and_naive_gls_on_a_small_sample():
    from statsmodels.regression.mixed_linear_model import MixedLM, MixedLMParams

    d = simulate(n=150, seed=9)
    fit = trajectories.fit_trajectory(cohort_of(d), by="arm_band", reference="control | moderate")
    assert fit.converged and fit.random_slope
    codes, _ = pd.factorize(d["id"])
    # the same design, built from the term names independently of the engine
    group = (d["arm"] + " | " + d["band"]).to_numpy()
    cols = []
    for term in fit.fixed["term"]:
        if term == "Intercept":
            cols.append(np.ones(len(d)))
        elif term == "weeks":
            cols.append(d["weeks"].to_numpy())
        elif term.startswith("weeks:"):
            cols.append(d["weeks"].to_numpy() * (group == term.split("[T.")[1][:-1]))
        else:
            cols.append((group == term.split("[T.")[1][:-1]).astype(float))
    X = np.column_stack(cols)
    z = np.column_stack([np.ones(len(d)), d["weeks"]])
    y = d["y"].to_numpy()
    est, se = fit.fixed["estimate"].to_numpy(), fit.fixed["se"].to_numpy()
    vc = fit.random
    cov01 = vc["corr"] * vc["sd_intercept"] * vc["sd_slope"]
    g = np.array([[vc["sd_intercept"] ** 2, cov01], [cov01, vc["sd_slope"] ** 2]])
    scale = vc["sd_residual"] ** 2

    # statsmodels: its REML log-likelihood at our estimates is ours, and its own optimum is no higher
    model = MixedLM(y, X, groups=codes, exog_re=z)
    ref = model.fit(reml=True, method=["lbfgs"])
    assert ref.converged and ref.llf <= fit.loglik + 1e-8
    at_ours = model.loglike(MixedLMParams.from_components(fe_params=est, cov_re=g / scale), profile_fe=False)
    assert at_ours == pytest.approx(fit.loglik, rel=1e-10)
    assert np.max(np.abs(np.asarray(ref.fe_params) - est) / se) < 1e-4  # statsmodels' optimiser tolerance

    # naive GLS at our variance estimates, one patient at a time: β̂ and lme4's (X'V⁻¹X)⁻¹ SEs
    xtvx, xtvy = np.zeros((X.shape[1], X.shape[1])), np.zeros(X.shape[1])
    for i in range(codes.max() + 1):
        m = codes == i
        v_inv = np.linalg.inv(z[m] @ g @ z[m].T + scale * np.eye(m.sum()))
        xtvx += X[m].T @ v_inv @ X[m]
        xtvy += X[m].T @ v_inv @ y[m]
    assert _rel(est, np.linalg.solve(xtvx, xtvy)) < 1e-8
    assert _rel(se, np.sqrt(np.diag(np.linalg.inv(xtvx)))) < 1e-8


def test_cold_fit_takes_damped_newton_steps_to_the_quasi_newton_optimum(monkeypatch):
    for seed in (6, 7, 8):
        dense, fac = both_blocks(simulate(seed=seed), covariates=seed == 7, max_pattern_share=1.0)
        for blk in (dense, fac):
            for reml in (True, False):
                newton = lmm.fit_blocks(blk, reml=reml)
                with monkeypatch.context() as m:
                    m.setattr(lmm, "_damped_newton", lambda *a, **k: (None, 0))
                    quasi = lmm.fit_blocks(blk, reml=reml)
                assert newton.message == "damped Newton steps" and newton.converged
                assert quasi.message != newton.message and quasi.converged
                assert _rel(newton.beta, quasi.beta) < 1e-8 and _rel(newton.se, quasi.se) < 1e-8
                assert _rel(newton.theta, quasi.theta) < 1e-7
                assert newton.deviance <= quasi.deviance + 1e-9 * abs(quasi.deviance)


def test_boundary_fit_leaves_damped_newton_for_the_bounded_optimiser():
    """No random slope in the data: Λ[1,1] goes to its bound 0, which only the bounded optimiser handles."""
    rng = np.random.default_rng(11)
    n, k = 150, 5
    ids = np.repeat(np.arange(n), k)
    t = np.tile(np.arange(k, dtype=float), n)
    y = 10 + rng.normal(0, 2, n)[ids] - 0.3 * t + rng.normal(0, 1, n * k)
    fit = lmm.fit_lmm(y, np.column_stack([np.ones(n * k), t]), ids, t)
    assert fit.message != "damped Newton steps" and fit.singular and fit.theta[2] < lmm.SINGULAR_TOL
    assert fit.beta[1] == pytest.approx(-0.3, abs=0.05)


def test_a_cold_fit_does_not_import_the_scipy_optimiser():
    """``kap-outcomes analyze`` fits the default model without paying for ``import scipy.optimize`` (0.13 s)."""
    import subprocess
    import sys
    code = ("import sys, numpy as np\nfrom analytics.engines import lmm\nrng = np.random.default_rng(1)\n"
            "ids = np.repeat(np.arange(300), 4); t = np.tile(np.arange(4.0), 300)\n"
            "y = 10 + rng.normal(0, 2, 300)[ids] + (-0.3 + rng.normal(0, 0.3, 300)[ids]) * t + rng.normal(0, 1, 1200)\n"
            "fit = lmm.fit_lmm(y, np.column_stack([np.ones(1200), t]), ids, t)\n"
            "print(fit.message, fit.converged, 'scipy.optimize' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["damped", "Newton", "steps", "True", "False"]
