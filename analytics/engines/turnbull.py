"""Turnbull's nonparametric maximum-likelihood estimate of a survival function from interval-censored times.

Pure numerics on arrays: no clinic words. Each observation is a time known only to lie in an interval:

* ``left < right < inf``: the time lies in ``(left, right]`` (interval-censored);
* ``left == right``: the time is exactly ``left`` (an exact event);
* ``right == inf``: the time is after ``left`` (right-censored at ``left``).

This is R's ``Surv(left, right, type = "interval2")`` coding (with ``NA`` for an infinite right end), and the
estimate is the one ``survival::survfit`` computes for such data (Turnbull 1976, J R Stat Soc B 38:290-295).

Method. The NPMLE puts all its mass on the *innermost intervals* (Turnbull 1976; Peto 1973): the regions where a left
end is followed, in sorted order, directly by a right end. An exact time ``t`` is a closed point ``[t, t]``; an
interval's left end is open, so at equal times the order is: exact points, right ends, open left ends. Each
observation contains a contiguous run of innermost intervals, so the self-consistency (EM) step of Turnbull
(p_j ← p_j · Σ_i α_ij / Σ_k α_ik p_k / n) costs O(n + m) with cumulative sums. It is accelerated by SQUAREM
(Varadhan & Roland 2008, Scand J Stat 35:335-353; the step is kept only when it does not lower the likelihood)
and stopped when the largest change of a mass is below ``tol`` and the Kuhn–Tucker conditions of the NPMLE hold
(Gentleman & Geyer 1994, Biometrika 81:618-623): ``d_j = Σ_i α_ij / Σ_k α_ik p_k ≤ n`` for every j, with equality
where ``p_j > 0``.

The survival function is determined except inside innermost intervals of positive length, where the NPMLE does
not say how the mass is spread. :meth:`TurnbullFit.survival` follows R's ``survfit``: the mass of an interval is
placed at its midpoint (so ``S`` steps down there); :attr:`TurnbullFit.intervals` gives the intervals themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analytics.errors import InsufficientData


@dataclass(frozen=True)
class TurnbullFit:
    """The Turnbull NPMLE.

    Attributes
    ----------
    lower, upper:
        The innermost intervals (sorted): ``(lower, upper]``, or the point ``lower == upper`` (an exact time);
        ``upper`` may be ``inf`` (the mass beyond the last finite end).
    mass:
        Probability mass of each innermost interval (sums to 1).
    loglik:
        Log-likelihood ``Σ_i log P(time_i in its interval)``.
    n_iter:
        EM (SQUAREM) iterations.
    converged:
        The masses changed by less than ``tol`` in the last iteration and the Kuhn–Tucker conditions hold (to 1e-6).
    n, n_exact, n_interval, n_right:
        Observations, and how many are exact, interval-censored and right-censored.
    """

    lower: np.ndarray
    upper: np.ndarray
    mass: np.ndarray
    loglik: float
    n_iter: int
    converged: bool
    n: int
    n_exact: int
    n_interval: int
    n_right: int

    @property
    def points(self) -> np.ndarray:
        """Where :meth:`survival` places each interval's mass: the midpoint (R's ``survfit``), the point itself for
        exact times, the lower end for an interval reaching to infinity (never reached: that mass stays)."""
        mid = np.where(np.isfinite(self.upper), 0.5 * (self.lower + self.upper), np.inf)
        return np.where(self.lower == self.upper, self.lower, mid)

    def survival(self, times: np.ndarray | list[float] | float) -> np.ndarray:
        """``S(t) = P(T > t)`` with each interval's mass at its :attr:`points` (a right-continuous step function)."""
        t = np.atleast_1d(np.asarray(times, dtype=float))
        pts = self.points
        order = np.argsort(pts, kind="stable")
        cum = np.r_[0.0, np.cumsum(self.mass[order])]
        return 1.0 - cum[np.searchsorted(pts[order], t, side="right")]

    def steps(self) -> tuple[np.ndarray, np.ndarray]:
        """The step function's jump times (finite :attr:`points` with mass) and ``S`` just after each."""
        pts = self.points
        keep = np.isfinite(pts) & (self.mass > 0)
        times = np.unique(pts[keep])
        return times, self.survival(times)

    def median(self) -> float | None:
        """The smallest time with ``S(t) ≤ 0.5`` (None if the curve stays above 0.5)."""
        times, surv = self.steps()
        below = np.flatnonzero(surv <= 0.5 + 1e-12)
        return float(times[below[0]]) if below.size else None


def _innermost(left: np.ndarray, right: np.ndarray, exact: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Innermost intervals: lower and upper ends and whether each is an exact point."""
    # endpoints with an order at equal times: exact left 0 < right ends 1 < open left ends 2
    times = np.r_[left, right]
    kind = np.r_[np.where(exact, 0, 2), np.ones(len(right), dtype=np.int64)]
    order = np.lexsort((kind, times))
    t, k = times[order], kind[order]
    pair = (k[:-1] != 1) & (k[1:] == 1)
    lo, hi = t[:-1][pair], t[1:][pair]
    point = k[:-1][pair] == 0
    # several exact observations at one time give one point
    keep = np.r_[True, (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1]) | (point[1:] != point[:-1])]
    return lo[keep], hi[keep], point[keep]


def _ranges(left: np.ndarray, right: np.ndarray, exact: np.ndarray, lo: np.ndarray, hi: np.ndarray,
            point: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each observation the run ``[first, last)`` of innermost intervals it contains.

    Interval ``(a, b]`` (``point`` False) lies in observation ``(L, R]`` iff ``L <= a`` and ``b <= R``; the point
    ``[a, a]`` iff ``L < a <= R``; an exact observation ``t`` contains only the point ``[t, t]``. Innermost intervals
    are disjoint and sorted (at one lower end the point comes first), so each run is contiguous."""
    m = len(lo)
    first = np.searchsorted(lo, left, side="left")  # first with lo >= L
    at = np.minimum(first, m - 1)
    skip = ~exact & (first < m) & point[at] & (lo[at] == left)  # an open left end excludes the point at L
    first = first + skip
    last = np.searchsorted(hi, right, side="right")  # every interval with hi <= R
    last = np.where(exact, first + 1, last)
    return first.astype(np.int64), last.astype(np.int64)


def turnbull(left: np.ndarray | list[float], right: np.ndarray | list[float], *, tol: float = 1e-12,
             max_iter: int = 20000) -> TurnbullFit:
    """The Turnbull NPMLE of ``S(t) = P(T > t)`` from interval-censored times (see the module notes).

    Parameters
    ----------
    left, right:
        One entry per observation: ``(left, right]`` with ``left < right``; ``left == right`` for an exact time;
        ``right = inf`` (or NaN) for right-censored at ``left``. ``left`` must be finite and ``≤ right``.
    tol:
        Stop when no mass changes by more than this in an iteration (and the Kuhn–Tucker conditions hold).
    max_iter:
        At most this many SQUAREM iterations (each three EM steps).

    Returns
    -------
    TurnbullFit

    Raises
    ------
    InsufficientData
        No observation, or an interval with ``left > right`` or a missing ``left``.
    """
    left = np.asarray(left, dtype=float)
    right = np.asarray(right, dtype=float)
    right = np.where(np.isnan(right), np.inf, right)
    if left.size == 0:
        raise InsufficientData("There are no observations to estimate a survival curve from (0 given).")
    if left.shape != right.shape or not np.all(np.isfinite(left)) or np.any(left > right):
        raise InsufficientData("Each interval needs a finite left end no later than its right end; check the "
                               "interval-censored times (left end missing or after the right end).")
    exact = left == right
    lo, hi, point = _innermost(left, right, exact)
    first, last = _ranges(left, right, exact, lo, hi, point)
    # identical ranges pooled with their counts: the EM only needs how many observations share each run
    codes, inverse, counts = np.unique(np.c_[first, last], axis=0, return_inverse=True, return_counts=True)
    a, b = codes[:, 0], codes[:, 1]
    w = counts.astype(float)
    n = float(w.sum())
    m = len(lo)
    if np.any(b <= a):
        raise InsufficientData("An observation's interval contains no support interval of the estimate; check for "
                               "intervals of zero length that are not exact times.")
    del inverse

    def em(p: np.ndarray) -> np.ndarray:
        cum = np.r_[0.0, np.cumsum(p)]
        denom = cum[b] - cum[a]
        ratio = np.zeros(m + 1)
        np.add.at(ratio, a, w / denom)
        np.add.at(ratio, b, -w / denom)
        return p * np.cumsum(ratio[:m]) / n

    def loglik(p: np.ndarray) -> float:
        cum = np.r_[0.0, np.cumsum(p)]
        d = cum[b] - cum[a]
        return float(np.sum(w * np.log(d))) if np.all(d > 0) else -np.inf

    p = np.full(m, 1.0 / m)
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        p1 = em(p)
        p2 = em(p1)
        r, v = p1 - p, p2 - 2 * p1 + p
        vv = float(v @ v)
        alpha = -np.sqrt(float(r @ r) / vv) if vv > 0 else -1.0
        alpha = min(alpha, -1.0)
        q = np.clip(p - 2 * alpha * r + alpha * alpha * v, 0.0, None)
        q = q / q.sum()
        # the extrapolation is kept only when it leaves every observation some mass and does not lower the
        # likelihood (then one EM step from it, for stability); else the plain EM steps
        q = em(q) if np.isfinite(loglik(q)) else p2
        if not loglik(q) >= loglik(p2):
            q = p2
        change = float(np.max(np.abs(q - p)))
        p = q
        if change < tol:
            converged = True
            break
    p = p / p.sum()
    cum = np.r_[0.0, np.cumsum(p)]
    d = np.zeros(m + 1)
    np.add.at(d, a, w / (cum[b] - cum[a]))
    np.add.at(d, b, -w / (cum[b] - cum[a]))
    d = np.cumsum(d[:m]) / n
    kkt = bool(np.all(d <= 1 + 1e-6) and np.all(np.abs(d[p > 1e-8] - 1) < 1e-6))
    return TurnbullFit(lower=lo, upper=hi, mass=p, loglik=loglik(p), n_iter=it, converged=converged and kkt,
                       n=int(n), n_exact=int(exact.sum()), n_interval=int((~exact & np.isfinite(right)).sum()),
                       n_right=int(np.isinf(right).sum()))
