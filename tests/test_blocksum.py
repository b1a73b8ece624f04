"""The two ways to sum rows by block (NumPy per column, SciPy's sparse product) give the same sums and the same fits;
the command line's analysis of a clinic imports no SciPy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analytics.engines import blocksum, lmm
from analytics.outcomes import survival as sv


def test_block_sums_by_hand_with_weights_and_an_empty_block():
    values = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    sums = blocksum.sum_by_block(values, np.array([2, 0, 2]), 4, weights=np.array([1.0, 10.0, 0.5]))
    assert sums.tolist() == [[30.0, 40.0], [0.0, 0.0], [3.5, 5.0], [0.0, 0.0]]


def _cox_data(n: int = 3000, seed: int = 2) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame({"a": rng.normal(size=n), "b": rng.integers(0, 2, n).astype(float), "c": rng.normal(size=n)})
    time = np.ceil(rng.exponential(200 * np.exp(-0.4 * x["a"] + 0.3 * x["b"]))).clip(1, 400)  # many ties
    return time, (time < 400) & (rng.random(n) < 0.8), x


@pytest.fixture
def both(monkeypatch):
    """A fit by bincount sums only, and by sparse products only."""
    def fit(fn):
        monkeypatch.setattr(blocksum, "use_sparse", lambda rows, columns: False)
        small = fn()
        monkeypatch.setattr(blocksum, "use_sparse", lambda rows, columns: True)
        large = fn()
        return small, large
    return fit


def test_sparse_products_once_scipy_is_loaded_or_a_sum_is_large_or_bincount_has_cost_the_import(monkeypatch):
    modules = dict(sys.modules)
    modules.pop("scipy.sparse", None)
    monkeypatch.setattr(sys, "modules", modules)
    monkeypatch.setattr(blocksum, "_spent", 0)
    assert not blocksum.use_sparse(100_000, 20)            # 2 M cells: bincount
    assert blocksum.use_sparse(200_000, 20)                # 4 M cells in one sum: sparse at once
    for _ in range(5):
        assert not blocksum.use_sparse(100_000, 20)        # 2 + 10 M cells so far: within the 12 M budget
    assert blocksum.use_sparse(100_000, 20)                # would pass the budget: sparse from now on
    modules["scipy.sparse"] = object()
    monkeypatch.setattr(blocksum, "_spent", 0)
    assert blocksum.use_sparse(10, 2)                      # already loaded: nothing to save


def test_cox_fit_is_the_same_by_either_block_sum(both):
    time, event, x = _cox_data()
    a, b = both(lambda: sv.cox_ph(time, event, x))
    np.testing.assert_allclose(a.table["coef"], b.table["coef"], rtol=1e-12)
    np.testing.assert_allclose(a.vcov, b.vcov, rtol=1e-11)
    np.testing.assert_allclose(a.ph_test["chisq"], b.ph_test["chisq"], rtol=1e-10)
    assert a.loglik == pytest.approx(b.loglik, rel=1e-13)


def test_mixed_model_fit_is_the_same_by_either_block_sum(both):
    rng = np.random.default_rng(4)
    ids = np.repeat(np.arange(400), 6)
    rng.shuffle(ids)  # observations of a patient need not be together
    t = rng.uniform(0, 26, ids.size)
    y = 15 + rng.normal(0, 3, 400)[ids] + (-0.3 + rng.normal(0, 0.1, 400)[ids]) * t + rng.normal(0, 2, ids.size)
    X = np.column_stack([np.ones(ids.size), t])
    a, b = both(lambda: lmm.fit_lmm(y, X, ids, t))
    np.testing.assert_allclose(a.beta, b.beta, rtol=1e-12)
    np.testing.assert_allclose(a.theta, b.theta, rtol=1e-9)
    assert a.deviance == pytest.approx(b.deviance, rel=1e-13)


def test_analyze_of_a_clinic_imports_no_scipy(tmp_path):
    """``kap-outcomes analyze`` on 2,000 patients: every section computed, with SciPy's special functions only
    (analytics/engines/intervals.py, issue 21), never scipy.stats or statsmodels (1–2 s to import)."""
    code = (
        "import sys, json\n"
        "sys.modules.setdefault('hypothesis', None)\n"
        "from analytics.sample import write_clinic\n"
        "from analytics.outcomes.pipeline import analysis_json\n"
        "from analytics.outcomes.settings import Settings\n"
        "from schemas.validate import load_exports\n"
        f"d = {str(tmp_path)!r}\n"
        "write_clinic(d, n_patients=2000, seed=3)\n"
        "data = load_exports(d + '/sessions.csv', d + '/followups.csv', d + '/patients.csv')\n"
        "out, problems = analysis_json(data, Settings())\n"
        "print(json.dumps({'scipy': [m for m in sys.modules if m.split('.')[0] in ('scipy', 'statsmodels')],\n"
        "                  'sections': [k for k, v in out.items() if v], 'problems': problems}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(Path(__file__).parents[1]))
    result = json.loads(out.stdout)
    assert result["sections"] == ["cohort", "survival", "trajectories", "benchmarks"] and not result["problems"]
    assert "scipy.special" in result["scipy"]
    assert not [m for m in result["scipy"] if m.startswith(("scipy.stats", "statsmodels"))]
