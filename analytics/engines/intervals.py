"""Confidence intervals and p-values shared by every analysis module.

The normal and Student-t critical values, normal p-values and χ² tail areas of integer degrees of freedom are computed
here from :mod:`math` (a command-line run then imports no SciPy at all, whose first import costs about 0.15 s); the χ²
quantiles (exact Poisson intervals) and non-integer χ² tails use :mod:`scipy.special`, imported when first needed.
Each function equals its ``scipy.stats`` counterpart to floating-point precision (``tests/test_intervals.py``).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

_NORMAL = NormalDist()


def _check(conf_level: float) -> None:
    if not 0 < conf_level < 1:
        raise ValueError(f"conf_level must lie between 0 and 1 (got {conf_level}).")


def z_crit(conf_level: float) -> float:
    """Two-sided normal critical value: ``norm.ppf(0.5 + conf_level / 2)`` (1.959964 for 95%)."""
    _check(conf_level)
    return _NORMAL.inv_cdf(0.5 + conf_level / 2)


def _log_gamma_ratio_half(a: float) -> float:
    """``log Γ(a + ½) − log Γ(a)``: the difference of two lgamma values while they are small, else its asymptotic
    series (the difference of two large lgamma values would lose digits)."""
    if a < 20:
        return math.lgamma(a + 0.5) - math.lgamma(a)
    return (0.5 * math.log(a) - 1 / (8 * a) + 1 / (192 * a ** 3) - 1 / (640 * a ** 5)
            + 17 / (14336 * a ** 7) - 31 / (18432 * a ** 9))


def _beta_fraction(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (modified Lentz; Numerical Recipes 6.4)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((a + m2 - 1) * (a + m2)), -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1))):
            d = 1 + num * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < 1e-16:
            break
    return h


def _t_upper_tail(t: float, df: float) -> float:
    """``P(T > t)`` for ``t ≥ 0``: half the regularised incomplete beta ``I_x(df/2, ½)``, ``x = df / (df + t²)``."""
    a, t2 = df / 2, t * t
    x, y = df / (df + t2), t2 / (df + t2)  # y = 1 − x without cancellation
    log_front = -a * math.log1p(t2 / df) + 0.5 * math.log(y) - (math.lgamma(0.5) - _log_gamma_ratio_half(a))
    if x < (a + 1) / (a + 1.5 + 1):
        return 0.5 * math.exp(log_front) * _beta_fraction(a, 0.5, x) / a
    return 0.5 * (1 - math.exp(log_front) * _beta_fraction(0.5, a, y) / 0.5)


def _t_density(t: float, df: float) -> float:
    log_c = _log_gamma_ratio_half(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_c - (df + 1) / 2 * math.log1p(t * t / df))


def t_crit(conf_level: float, df: float) -> float:
    """Two-sided Student-t critical value: ``t.ppf(0.5 + conf_level / 2, df)``.

    Closed forms for 1 and 2 degrees of freedom; otherwise Newton's method on the upper tail area (incomplete beta
    function) from the normal value. Beyond 20,000 degrees of freedom SciPy's ``stdtrit`` answers.
    """
    _check(conf_level)
    if not df > 0:
        return math.nan
    tail = (1 - conf_level) / 2
    if df == 1:
        return math.tan(math.pi * (0.5 - tail))
    if df == 2:
        p = 1 - tail
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    if df > 2e4:
        from scipy import special

        return float(special.stdtrit(df, 0.5 + conf_level / 2))
    t = z_crit(conf_level)
    for _ in range(100):
        step = (_t_upper_tail(t, df) - tail) / _t_density(t, df)
        new = t + step if t + step > 0 else t / 2  # the tail area is convex for t > 0: never past 0
        if abs(new - t) <= 1e-15 * new:
            return new
        t = new
    return t


def norm_two_sided_p(z: object) -> np.ndarray | float:
    """Two-sided normal p-value ``2 · norm.sf(|z|) = erfc(|z| / √2)`` (array in, array out; float in, float out)."""
    values = np.asarray(z, dtype=float)
    out = np.array([math.erfc(abs(v) / math.sqrt(2)) if not math.isnan(v) else math.nan for v in values.ravel()])
    return float(out[0]) if values.ndim == 0 else out.reshape(values.shape)


def chi2_sf(x: float, df: float) -> float:
    """Upper tail of the χ² distribution: ``chi2.sf(x, df)``.

    Integer degrees of freedom (every test here) by the finite series of the χ² tail (even ``df``: Poisson sum;
    odd: ``erfc`` plus a sum), summed in logs; other ``df`` by SciPy's ``chdtrc``.
    """
    if math.isnan(x) or math.isnan(df):
        return math.nan
    if df != int(df) or df < 1 or df > 1000:
        from scipy import special

        return float(special.chdtrc(df, x))
    if x <= 0:
        return 1.0
    k, h = int(df), x / 2
    if k % 2 == 0:
        total, first = 0.0, 0  # Σ_{i<k/2} e^{-h} hⁱ / i!
    else:
        total, first = math.erfc(math.sqrt(h)), 0.5  # + Σ_{i<(k-1)/2} e^{-h} h^{i+½} / Γ(i + 3/2)
    terms = range(k // 2)
    log_h = math.log(h)
    for i in terms:
        total += math.exp(-h + (i + first) * log_h - math.lgamma(i + first + 1))
    return min(total, 1.0)


def chi2_ppf(q: object, df: object) -> np.ndarray:
    """Quantile of the χ² distribution: ``chi2.ppf(q, df)`` (vectorised)."""
    from scipy import special

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
