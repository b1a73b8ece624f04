"""analytics/engines/intervals.py (SciPy's special functions underneath) equals scipy.stats / statsmodels / R to
floating-point precision."""

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.proportion import proportion_confint

from analytics.engines import intervals


@pytest.mark.parametrize("conf", [0.5, 0.8, 0.9, 0.95, 0.99, 0.999])
def test_critical_values_equal_scipy_stats(conf):
    assert intervals.z_crit(conf) == pytest.approx(stats.norm.ppf(0.5 + conf / 2), rel=1e-14)
    for df in (1, 2.5, 7, 30, 1234.5):
        assert intervals.t_crit(conf, df) == pytest.approx(stats.t.ppf(0.5 + conf / 2, df), rel=1e-12)


def test_p_values_equal_scipy_stats():
    z = np.array([-4.0, -1.96, 0.0, 0.3, 2.5, 8.0])
    np.testing.assert_allclose(intervals.norm_two_sided_p(z), 2 * stats.norm.sf(np.abs(z)), rtol=1e-13)
    assert isinstance(intervals.norm_two_sided_p(1.2), float)
    for x, df in [(0.1, 1), (3.84, 1), (12.0, 5), (250.0, 3), (0.0, 2)]:
        assert intervals.chi2_sf(x, df) == pytest.approx(stats.chi2.sf(x, df), rel=1e-12, abs=1e-300)
    q = np.array([0.025, 0.5, 0.975])
    np.testing.assert_allclose(intervals.chi2_ppf(q, np.array([2.0, 7.0, 40.0])),
                               stats.chi2.ppf(q, [2.0, 7.0, 40.0]), rtol=1e-12)


def test_wilson_equals_statsmodels_and_r_prop_test():
    x = np.array([0, 1, 5, 37, 99, 100])
    n = np.array([10, 10, 40, 120, 100, 100])
    low, high = intervals.wilson_ci(x, n, 0.95)
    sm_low, sm_high = proportion_confint(x, n, alpha=0.05, method="wilson")
    np.testing.assert_allclose(low, sm_low, atol=1e-14)
    np.testing.assert_allclose(high, sm_high, atol=1e-14)
    # R 4.2: print(prop.test(37, 120, correct = FALSE)$conf.int, digits = 10)
    assert (low[3], high[3]) == pytest.approx((0.2327273699, 0.3958299772), abs=1e-9)
    assert np.isnan(intervals.wilson_ci([0], [0])[0][0])


def test_poisson_exact_equals_chi2_quantiles():
    x, t = np.array([0, 1, 7, 250]), np.array([100.0, 100.0, 50.0, 1000.0])
    low, high = intervals.poisson_exact_ci(x, t, 0.95)
    np.testing.assert_allclose(low, np.where(x > 0, stats.chi2.ppf(0.025, 2 * x) / 2, 0) / t, rtol=1e-12)
    np.testing.assert_allclose(high, stats.chi2.ppf(0.975, 2 * x + 2) / 2 / t, rtol=1e-12)
    # R 4.2: print(poisson.test(7, 50)$conf.int, digits = 10)
    assert (low[2], high[2]) == pytest.approx((0.05628726103, 0.28845350723), rel=1e-8)
    with pytest.raises(ValueError):
        intervals.z_crit(1.5)


def test_t_critical_values_over_a_grid_of_degrees_of_freedom_equal_scipy():
    """Newton on the incomplete beta tail (up to 20,000 df, Welch's non-integer df included), SciPy beyond."""
    for df in np.r_[0.5, 1, 1.5, 2, np.arange(2.1, 60, 0.73), np.geomspace(60, 2e5, 60)]:
        for conf in (0.5, 0.8, 0.95, 0.99, 0.9999):
            assert intervals.t_crit(conf, df) == pytest.approx(stats.t.ppf(0.5 + conf / 2, df), rel=1e-12)
    assert np.isnan(intervals.t_crit(0.95, 0))


def test_chi2_tails_of_integer_df_and_normal_p_values_equal_scipy_everywhere():
    for df in (*range(1, 60), 99, 100, 299, 1000, 2.5):
        for x in (1e-6, 0.3, 1.0, 3.84, 10.0, 57.0, 250.0, 1500.0):
            assert intervals.chi2_sf(x, df) == pytest.approx(stats.chi2.sf(x, df), rel=1e-12, abs=1e-300)
    z = np.linspace(-37, 37, 741)
    np.testing.assert_allclose(intervals.norm_two_sided_p(z), 2 * stats.norm.sf(np.abs(z)), rtol=1e-12)
    assert np.isnan(intervals.norm_two_sided_p(np.nan))
