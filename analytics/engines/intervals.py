"""Confidence intervals and p-values shared by every analysis module.

The distribution functions are SciPy's (:mod:`scipy.special`: ``ndtri``, ``stdtrit``, ``erfc``, ``chdtrc``,
``gammaincinv``), the same routines ``scipy.stats`` calls; hand-written series for the t and χ² distributions, kept
earlier to save SciPy's import, were replaced once a benchmark showed no user-visible gain (issue 21: the dashboard
imports SciPy in the background at start, and ``scipy.special`` alone takes ~0.1 s on the command line). The
Wilson and exact Poisson intervals below are formulas on top of them. ``tests/test_intervals.py`` checks every
function against ``scipy.stats`` and R.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special


def _check(conf_level: float) -> None:
    if not 0 < conf_level < 1:
        raise ValueError(f"conf_level must lie between 0 and 1 (got {conf_level}).")


def z_crit(conf_level: float) -> float:
    """Two-sided normal critical value: ``norm.ppf(0.5 + conf_level / 2)`` (1.959964 for 95%)."""
    _check(conf_level)
    return float(special.ndtri(0.5 + conf_level / 2))


def t_crit(conf_level: float, df: float) -> float:
    """Two-sided Student-t critical value: ``t.ppf(0.5 + conf_level / 2, df)``; NaN unless ``df > 0``."""
    _check(conf_level)
    if not df > 0:
        return math.nan
    return float(special.stdtrit(df, 0.5 + conf_level / 2))


def norm_two_sided_p(z: object) -> np.ndarray | float:
    """Two-sided normal p-value ``2 · norm.sf(|z|) = erfc(|z| / √2)`` (array in, array out; float in, float out)."""
    values = np.asarray(z, dtype=float)
    out = special.erfc(np.abs(values) / math.sqrt(2))
    return float(out) if values.ndim == 0 else out


def chi2_sf(x: float, df: float) -> float:
    """Upper tail of the χ² distribution: ``chi2.sf(x, df)`` (1 for ``x ≤ 0``)."""
    if math.isnan(x) or math.isnan(df):
        return math.nan
    if x <= 0:
        return 1.0
    return float(special.chdtrc(df, x))


def chi2_ppf(q: object, df: object) -> np.ndarray:
    """Quantile of the χ² distribution: ``chi2.ppf(q, df)`` (vectorised)."""
    return 2 * special.gammaincinv(np.asarray(df, dtype=float) / 2, q)


def wilson_ci(successes: object, trials: object, conf_level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for binomial proportions (vectorised).

    Returns ``(low, high)`` arrays; NaN where ``trials`` is 0 or missing. Equals R's
    ``prop.test(x, n, correct = FALSE)$conf.int`` (Wilson 1927; Newcombe 1998, method 3).
    """
    x = np.atleast_1d(np.asarray(successes, dtype=float))
    n = np.atleast_1d(np.asarray(trials, dtype=float))
    z = z_crit(conf_level)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = x / n
        denom = 1 + z**2 / n
        centre = (p + z**2 / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
        low = np.clip(centre - half, 0.0, 1.0)
        high = np.clip(centre + half, 0.0, 1.0)
    bad = ~(n > 0)
    low[bad] = np.nan
    high[bad] = np.nan
    low[(x == 0) & ~bad] = 0.0
    high[(x == n) & ~bad] = 1.0
    return low, high


def poisson_exact_ci(events: object, exposure: object, conf_level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Exact (Garwood 1936) Poisson interval for ``events / exposure`` (vectorised).

    Lower = χ²(α/2; 2x)/2, upper = χ²(1 − α/2; 2x + 2)/2, both divided by the exposure; equals R's
    ``poisson.test(x, T)$conf.int``. NaN where the exposure is 0 or missing.
    """
    x = np.atleast_1d(np.asarray(events, dtype=float))
    t = np.atleast_1d(np.asarray(exposure, dtype=float))
    z_crit(conf_level)  # validates conf_level
    alpha = 1 - conf_level
    with np.errstate(invalid="ignore", divide="ignore"):
        low = np.where(x > 0, chi2_ppf(alpha / 2, np.maximum(2 * x, 1e-300)) / 2, 0.0) / t
        high = chi2_ppf(1 - alpha / 2, 2 * x + 2) / 2 / t
    bad = ~(t > 0)
    low[bad] = np.nan
    high[bad] = np.nan
    return low, high
