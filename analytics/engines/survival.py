"""Survival estimators on arrays: Kaplan–Meier, log-rank, Cox (Efron ties) with a PH check, RMST.

No clinic words here: times, events, groups and a design matrix in; tables out. The cohort-level
analyses (what time and event mean for a patient) are in :mod:`analytics.outcomes.survival`.

Methods (each checked against R's ``survival`` 3.5 in ``tests/test_survival_golden.py``; the R script
and the frozen numbers are in ``tests/reference/survival/``):

* Kaplan–Meier with Greenwood variance and a pointwise CI on the log scale: R ``survfit`` defaults
  (``conf.type = "log"``): ``S·exp(±z·se)``, with ``se`` the standard error of ``−log S``; the upper
  limit is capped at 1; no CI where ``S = 0``.
* Median: the first day with ``S(t) ≤ 0.5``; where ``S(t)`` is exactly 0.5 over an interval, the midpoint
  between that day and the next event day (R ``survmean``). Its CI: the first days at which the lower and
  the upper pointwise CI limits reach 0.5 (Brookmeyer–Crowley with the log CI, as R prints).
* Milestones: ``S(t)`` at chosen days, as R ``summary(survfit, times = ...)``; none past the last follow-up.
* Restricted mean survival time (RMST) up to a horizon ``tau``: the area under the KM curve and its
  standard error, as R ``print(survfit, rmean = tau)``; differences between groups use the normal
  approximation with summed variances, as ``survRM2::rmst2``.
* Log-rank: R ``survdiff`` (groups with no expected events are left out, df = groups − 1), p from the
  chi-square survival function (never ``1 − cdf``, which rounds to 0 for large statistics).
* Cox proportional hazards with Efron's tie correction, Newton–Raphson from 0 (R ``coxph`` default);
  Wald CIs and p-values; also on counting-process ``(entry, time]`` data (time-varying covariates), with R's
  risk sets for ``Surv(start, stop, event)`` (``tests/test_survival_counting_golden.py``).
* Proportional-hazards test: score test for ``β(t) = β + θ·g(t)`` (Grambsch & Therneau 1994) per term and
  global, exactly as R ``cox.zph`` in survival ≥ 3.0, with its default time transform ``"km"``:
  ``g(t) = 1 − S(t−)`` from the pooled Kaplan–Meier, centred at its mean over events.

The Cox engine and the KM and log-rank arithmetic are vectorised NumPy rather than statsmodels'
``PHReg``/``SurvfuncRight``/``survdiff``, for measured reasons: at 500,000 patients ``PHReg`` spends 2.2 of
its 3.4 s building risk sets in a per-patient Python loop (R's ``coxph``: 2.4 s; this engine with the PH test:
under 0.7 s; ``perf/bench_survival.py``); the PH test needs Efron risk-set moments that ``PHReg`` does not
expose; ``SurvfuncRight`` reports event days only (no censoring counts); ``survdiff`` returns ``1 − cdf`` and
fails when a group has no expected events; ``PHReg`` with entry times counts an interval that starts on an event
day as at risk on that day (R's ``(start, stop]`` does not). The tests check these functions against statsmodels as
well as R.

The Cox engine never forms per-event-time second moments: the information is one weighted Gram matrix
``Xᵀ diag(w) X`` and the risk-set sums are reverse cumulative sums over time-sorted rows (:class:`_Efron`), and
the sort itself (:class:`RiskSets`) can be made once and shared by many models on subsets of the same patients
(``analytics.outcomes.subgroups``). At 50,000 patients and 20 covariates a fit takes about 0.15 s (before: 0.8 s).

References: Kaplan & Meier (1958); Greenwood (1926); Efron (1977); Grambsch & Therneau (1994),
Biometrika 81:515–526; Therneau & Grambsch (2000), *Modeling Survival Data*; Royston & Parmar (2013)
for RMST; Peduzzi et al. (1996) for events per variable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from analytics.engines.intervals import chi2_sf, norm_two_sided_p, z_crit
from analytics.errors import InsufficientData, ModelDidNotConverge, OutcomesError

Transform = Literal["km", "identity", "rank", "log"]
_KM_COLUMNS = ["day", "estimate", "ci_low", "ci_high", "std_err", "n_risk", "n_event", "n_censor"]


# ----------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LogRank:
    """Log-rank test across groups.

    ``table`` columns: ``group``, ``n``, ``observed``, ``expected`` (events under equal hazards).
    ``chisq``/``p`` are None when fewer than two groups have expected events.
    """

    chisq: float | None
    df: int
    p: float | None
    table: pd.DataFrame


@dataclass(frozen=True)
class CoxFit:
    """A fitted Cox model (Efron ties).

    ``table`` columns: ``column`` (design column), ``term``, ``level``, ``coef``, ``se``, ``z``, ``p``,
    ``estimate`` (hazard ratio), ``ci_low``, ``ci_high``. ``ph_test`` columns: ``term``, ``chisq``, ``df``,
    ``p``; its last row is ``GLOBAL``. ``loglik`` is (null model, fitted model).
    """

    table: pd.DataFrame
    vcov: np.ndarray
    loglik: tuple[float, float]
    n: int
    n_event: int
    iterations: int
    conf_level: float
    ph_test: pd.DataFrame | None = None
    ph_transform: str | None = None


# ----------------------------------------------------------------------------------------------------
# Array-level: Kaplan–Meier, median, milestones, RMST
# ----------------------------------------------------------------------------------------------------

def _z(conf_level: float) -> float:
    if not 0 < conf_level < 1:
        raise OutcomesError(f"The confidence level must be between 0 and 1 (got {conf_level}). Use e.g. 0.95.")
    return z_crit(conf_level)


def _arrays(time: Any, event: Any) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(time, dtype=float)
    e = np.asarray(event).astype(bool)
    if t.shape != e.shape or t.ndim != 1:
        raise ValueError("time and event must be 1-d arrays of the same length")
    if np.isnan(t).any():
        raise ValueError("time has missing values; drop them first")
    return t, e


def _time_index(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct times (ascending) and each patient's index into them, as ``np.unique(return_inverse=True)``.

    Whole days (the usual case) take an O(n) counting path, ~20× faster than sorting at 500,000 patients.
    """
    if t.size and t.min() >= 0 and t.max() <= 1_000_000:
        whole = t.astype(np.int64)
        if np.array_equal(whole, t):
            present = np.bincount(whole) > 0
            return np.flatnonzero(present).astype(float), (np.cumsum(present) - 1)[whole]
    return np.unique(t, return_inverse=True)


def _stable_order(inv: np.ndarray, k: int) -> np.ndarray:
    """Stable sort order of small integer codes (radix sort when they fit in 16 bits)."""
    return np.argsort(inv.astype(np.uint16) if k <= 65_535 else inv, kind="stable")


def kaplan_meier(time: Any, event: Any, *, conf_level: float = 0.95) -> pd.DataFrame:
    """Kaplan–Meier estimate with Greenwood variance and log-scale CI (R ``survfit`` defaults).

    Parameters
    ----------
    time:
        Days to event or censoring (non-negative).
    event:
        True where the event was observed, False where censored.
    conf_level:
        Level of the pointwise confidence interval.

    Returns
    -------
    pandas.DataFrame
        One row per distinct day with an event or a censoring: ``day``, ``estimate`` (S(t)), ``ci_low``,
        ``ci_high``, ``std_err`` (standard error of −log S, R's ``std.err``; inf where S = 0), ``n_risk``,
        ``n_event``, ``n_censor``.
    """
    t, e = _arrays(time, event)
    z = _z(conf_level)
    if t.size == 0:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in _KM_COLUMNS})
    day, inv = _time_index(t)
    n_at = np.bincount(inv, minlength=day.size)
    n_event = np.bincount(inv, weights=e, minlength=day.size).astype(np.int64)
    n_risk = np.cumsum(n_at[::-1])[::-1]
    surv = np.cumprod(1.0 - n_event / n_risk)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(n_event > 0, n_event / (n_risk * (n_risk - n_event).astype(float)), 0.0)
        std_err = np.sqrt(np.cumsum(terms))
        low = surv * np.exp(-z * std_err)
        high = np.minimum(1.0, surv * np.exp(z * std_err))
    dead = surv <= 0
    low[dead] = np.nan
    high[dead] = np.nan
    return pd.DataFrame({"day": day, "estimate": surv, "ci_low": low, "ci_high": high, "std_err": std_err,
                         "n_risk": n_risk.astype(np.int64), "n_event": n_event,
                         "n_censor": (n_at - n_event).astype(np.int64)})


def _first_at_or_below_half(y: np.ndarray, x: np.ndarray) -> float | None:
    """R ``survmean``'s ``minmin``: first x with y ≤ 0.5 (midpoint rule when y is 0.5 over an interval)."""
    tol = np.finfo(float).eps ** 0.5
    keep = ~np.isnan(y) & (y < 0.5 + tol)
    if not keep.any():
        return None
    x, y = x[keep], y[keep]
    if abs(y[0] - 0.5) < tol and (y < y[0]).any():
        return float((x[0] + x[np.argmax(y < y[0])]) / 2)
    return float(x[0])


def km_median(km: pd.DataFrame) -> tuple[float | None, float | None, float | None]:
    """Median and its CI from a :func:`kaplan_meier` table, exactly as R prints them.

    Returns
    -------
    (median, ci_low, ci_high)
        Days; None where not reached (e.g. the curve never falls to 0.5).
    """
    x = km["day"].to_numpy(float)
    return (_first_at_or_below_half(km["estimate"].to_numpy(float), x),
            _first_at_or_below_half(km["ci_low"].to_numpy(float), x),
            _first_at_or_below_half(km["ci_high"].to_numpy(float), x))


def km_at(km: pd.DataFrame, days: Sequence[float]) -> pd.DataFrame:
    """Survival at chosen days from a :func:`kaplan_meier` table (R ``summary(survfit, times = days)``).

    The CI is the table's (its ``conf_level``).

    Returns
    -------
    pandas.DataFrame
        ``day``, ``estimate``, ``se`` (standard error of S, Greenwood), ``ci_low``, ``ci_high``, ``n_risk``.
        Days past the last follow-up have NaN estimates (R leaves them out); ``n_risk`` there is 0.
    """
    wanted = np.asarray(days, dtype=float)
    day = km["day"].to_numpy(float)
    if day.size == 0:
        nan = np.full(wanted.size, np.nan)
        return pd.DataFrame({"day": wanted, "estimate": nan, "se": nan, "ci_low": nan, "ci_high": nan,
                             "n_risk": np.zeros(wanted.size, dtype=np.int64)})
    at = np.searchsorted(day, wanted, side="right") - 1  # last day on or before each wanted day
    nxt = np.searchsorted(day, wanted, side="left")  # first day on or after: its n_risk is the risk then
    n_risk = np.where(nxt < day.size, km["n_risk"].to_numpy()[np.minimum(nxt, day.size - 1)], 0)
    i = np.maximum(at, 0)
    before = at < 0
    surv = km["estimate"].to_numpy(float)[i]
    with np.errstate(invalid="ignore"):
        se = np.where(surv > 0, surv * km["std_err"].to_numpy(float)[i], np.nan)
    out = pd.DataFrame({"day": wanted, "estimate": np.where(before, 1.0, surv), "se": np.where(before, 0.0, se),
                        "ci_low": np.where(before, 1.0, km["ci_low"].to_numpy(float)[i]),
                        "ci_high": np.where(before, 1.0, km["ci_high"].to_numpy(float)[i]),
                        "n_risk": n_risk.astype(np.int64)})
    out.loc[wanted > day[-1], ["estimate", "se", "ci_low", "ci_high"]] = np.nan
    return out


def rmst(km: pd.DataFrame, *, tau: float) -> tuple[float, float]:
    """Restricted mean survival time up to ``tau`` and its standard error (R ``print(survfit, rmean=tau)``).

    Past the last follow-up the curve is carried forward flat, as R does.

    Returns
    -------
    (estimate, se)
        Mean days without the event in ``[0, tau]`` and its standard error.
    """
    day = km["day"].to_numpy(float)
    surv = km["estimate"].to_numpy(float)
    n = km["n_risk"].to_numpy(float)
    d = km["n_event"].to_numpy(float)
    start = min(0.0, float(day.min())) if day.size else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        hh = np.where(n - d == 0, 0.0, d / (n * (n - d)))
    keep = day <= tau
    if not keep.any():
        times, tsurv, hh = np.array([tau]), np.array([1.0]), np.array([0.0])
    else:
        times = np.r_[day[keep], tau]
        tsurv = np.r_[surv[keep], surv[keep][-1]]
        hh = np.r_[hh[keep], 0.0]
    rect = np.diff(np.r_[start, times]) * np.r_[1.0, tsurv[:-1]]
    var = float(np.sum(np.cumsum(rect[1:][::-1]) ** 2 * hh[::-1][1:]))
    return float(rect.sum() + start), math.sqrt(var)


# ----------------------------------------------------------------------------------------------------
# Array-level: log-rank
# ----------------------------------------------------------------------------------------------------

def logrank(time: Any, event: Any, group: Any, *, groups: Sequence[str] | None = None) -> LogRank:
    """Log-rank test of equal hazards across groups (R ``survdiff`` with ``rho = 0``).

    Parameters
    ----------
    time, event:
        As in :func:`kaplan_meier`.
    group:
        Group label per patient (no missing values).
    groups:
        Order of the groups in the table; default: sorted labels.

    Returns
    -------
    LogRank
        ``chisq``, ``df`` (groups with expected events − 1), ``p`` (chi-square survival function) and a table
        of ``group``, ``n``, ``observed``, ``expected``.
    """
    t, e = _arrays(time, event)
    g = np.asarray(group).astype(str)
    labels = list(groups) if groups is not None else sorted(set(g.tolist()))
    code = pd.Categorical(g, categories=labels).codes
    if (code < 0).any():
        raise ValueError("group has labels that are not in groups")
    return _logrank_codes(t, e, code, labels)


def _logrank_codes(t: np.ndarray, e: np.ndarray, code: np.ndarray, labels: Sequence[str]) -> LogRank:
    """:func:`logrank` on integer group codes (indexes into ``labels``)."""
    n_g = len(labels)
    day, inv = _time_index(t)
    k = day.size
    cell = inv * n_g + code
    at = np.bincount(cell, minlength=k * n_g).reshape(k, n_g).astype(float)
    dg = np.bincount(cell, weights=e, minlength=k * n_g).reshape(k, n_g)
    risk = np.cumsum(at[::-1], axis=0)[::-1]
    n = risk.sum(axis=1)
    d = dg.sum(axis=1)
    use = d > 0
    risk, n, d, dg = risk[use], n[use], d[use], dg[use]
    observed = dg.sum(axis=0)
    frac = risk / n[:, None]
    expected = (d[:, None] * frac).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(n > 1, d * (n - d) / (n - 1), 0.0)
    var = np.diag((w[:, None] * frac).sum(axis=0)) - np.einsum("k,ki,kj->ij", w, frac, frac)
    table = pd.DataFrame({"group": labels, "n": at.sum(axis=0).astype(np.int64), "observed": observed,
                          "expected": expected})
    ok = expected > 0
    df = int(ok.sum()) - 1
    if ok.sum() < 2:
        return LogRank(chisq=None, df=max(df, 0), p=None, table=table)
    diff = (observed - expected)[ok][1:]
    vv = var[np.ix_(ok, ok)][1:, 1:]
    chisq = float(diff @ np.linalg.solve(vv, diff))
    return LogRank(chisq=chisq, df=df, p=chi2_sf(chisq, df), table=table)


# ----------------------------------------------------------------------------------------------------
# Array-level: Cox (Efron) and the PH test
# ----------------------------------------------------------------------------------------------------

class RiskSets:
    """Who is at risk at each event time: the time-sorted tie structure of one data set, without covariates.

    Built once per set of patients (a sort by exit time) and shared by every Cox model on them or on subsets of
    them (:meth:`subset` keeps the sort: no model sorts again). With ``entry`` the data are counting-process
    ``(entry, time]`` intervals: a row is at risk at the event times ``t`` with ``entry < t ≤ time`` (R
    ``Surv(start, stop, event)``).
    """

    def __init__(self, time: Any, event: Any, entry: Any | None = None) -> None:
        t, e = _arrays(time, event)
        start = None if entry is None else _entry_array(entry, t)
        day, inv = _time_index(t)
        order = _stable_order(inv, day.size)
        self._build(order, inv[order], day, e[order], None if start is None else start[order])

    def _build(self, order: np.ndarray, inv: np.ndarray, day: np.ndarray, ev: np.ndarray,
               entry: np.ndarray | None) -> None:
        counts = np.bincount(inv, minlength=day.size)
        present = counts > 0
        if not present.all():  # a subset: drop the days nobody in it has
            day, inv, counts = day[present], (np.cumsum(present) - 1)[inv], counts[present]
        self.order, self.inv, self.day, self.event, self.entry = order, inv, day, ev, entry
        self.n = int(order.size)
        self.counts = counts
        self.starts = np.r_[0, np.cumsum(counts)[:-1]]
        deaths = np.bincount(inv, weights=ev, minlength=day.size).astype(np.int64)
        self.deaths_all = deaths
        self.ev_k = np.flatnonzero(deaths > 0)
        self.d = deaths[self.ev_k]
        self.n_event = int(self.d.sum())
        self.dead = np.flatnonzero(ev)
        self.dptr = np.r_[0, np.cumsum(self.d)]
        self.k_rows = np.repeat(np.arange(self.d.size), self.d)
        self.frac = (np.arange(self.n_event) - self.dptr[self.k_rows]) / self.d[self.k_rows]
        self.first = self.starts[self.ev_k]  # first sorted row still at risk (by exit) at each event time
        self.hi = np.cumsum(deaths > 0)[inv]  # event times at or before each row's exit: at risk at k < hi
        if entry is not None:
            self.lo = np.searchsorted(day[self.ev_k], entry, side="right")  # ... and not at k < lo (entry ≥ t_k)
            self.entry_order = np.argsort(self.lo, kind="stable")
            self.entry_blocks, self.entry_starts = np.unique(self.lo[self.entry_order], return_index=True)

    def subset(self, mask: np.ndarray) -> RiskSets:
        """The risk sets of the rows where ``mask`` (over the original rows) is True, rows numbered as in
        ``time[mask]``; the same as ``RiskSets(time[mask], event[mask], ...)`` without sorting again."""
        mask = np.asarray(mask, dtype=bool)
        keep = mask[self.order]
        local = np.cumsum(mask) - 1
        out = RiskSets.__new__(RiskSets)
        out._build(local[self.order[keep]], self.inv[keep], self.day, self.event[keep],
                   None if self.entry is None else self.entry[keep])
        return out


# NumPy's BLAS (OpenBLAS) splits a product over its threads when it is large; for the thin products here (p × n
# times n, p × n times n × p with p small and n large) the threads cost more than they save, and on a busy machine
# (2 cores shared) far more: measured at 46,000 × 21 under load, 8 ms for one product vs 0.7 ms in column blocks,
# each below OpenBLAS's threading threshold. Summing the blocks' results changes only the rounding.
_BLOCK = 8192


def _chunked_gemv(beta: np.ndarray, xt: np.ndarray) -> np.ndarray:
    """``beta @ xt`` in column blocks (see above)."""
    n = xt.shape[1]
    out = np.empty(n)
    for i in range(0, n, _BLOCK):
        np.matmul(beta, xt[:, i:i + _BLOCK], out=out[i:i + _BLOCK])
    return out


def _chunked_gram(xt: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``(xt * w) @ xt.T`` in column blocks small enough for one thread (see above)."""
    p, n = xt.shape
    step = max(256, min(_BLOCK, 1_000_000 // max(p * p, 1)))
    out = np.zeros((p, p))
    for i in range(0, n, step):
        block = xt[:, i:i + step]
        out += (block * w[i:i + step]) @ block.T
    return out


def _reverse_cumsum(a: np.ndarray) -> np.ndarray:
    """Sums over the later columns: ``out[:, k] = a[:, k:].sum(axis=1)``."""
    return np.cumsum(a[:, ::-1], axis=1)[:, ::-1]


def _entry_array(entry: Any, t: np.ndarray) -> np.ndarray:
    start = np.asarray(entry, dtype=float)
    if start.shape != t.shape:
        raise ValueError("entry must be a 1-d array of the same length as time")
    if np.isnan(start).any():
        raise ValueError("entry has missing values; drop them first")
    if (start >= t).any():
        raise ValueError("every interval must end after it starts (entry < time)")
    return start


@dataclass(frozen=True)
class _Moments:
    """Risk-set moments of one β: what the information matrix (of any event-time weighting) is made of."""

    r: np.ndarray        # exp(η − shift) per sorted row
    s1: np.ndarray       # per event time: Σ r·x over the risk set
    d1: np.ndarray       # per event time: Σ r·x over the rows with the event
    coef: np.ndarray     # per event time: Efron's a, b, c, cd, f (sums over the tied events' 1/den etc.)
    resid: np.ndarray    # per event time: Σx of the events − Σ of their expected x (score residuals)


class _Efron:
    """One design on shared :class:`RiskSets`: log partial likelihood, score and information (Efron ties).

    The information is assembled without per-event-time second moments: ``Σ_k h_k a_k Σ_{i∈R_k} r_i x_i x_iᵀ``
    equals ``Xᵀ diag(r_i Σ_{k: i∈R_k} h_k a_k) X``, one weighted Gram matrix (BLAS), and the risk-set first
    moments are reverse cumulative sums over the exit-sorted rows (minus those over the entry-sorted rows for
    counting-process data). No n × p² array and no sparse matrix is built.
    """

    def __init__(self, risk: RiskSets, x: np.ndarray) -> None:
        self.risk = risk
        self.n, self.p = x.shape
        xt = np.ascontiguousarray(x.T)  # a design from a DataFrame is column-major already: no copy
        self.qt = np.empty((self.p + 1, self.n))  # [1, x]ᵀ: rows contiguous, so sums over patients run fast
        self.qt[0] = 1.0
        np.take(xt, risk.order, axis=1, out=self.qt[1:])
        self.qt[1:] -= xt.mean(axis=1)[:, None]  # centred, as R does, for stable variances
        self.xt = self.qt[1:]
        self.qt_dead = self.qt[:, risk.dead]
        self.xd = (np.add.reduceat(self.qt_dead[1:], risk.dptr[:-1], axis=1).T if risk.n_event
                   else np.zeros((0, self.p)))
        self.n_event = risk.n_event

    def evaluate(self, beta: np.ndarray) -> tuple[float, np.ndarray, _Moments]:
        """Log partial likelihood, score and the risk-set moments at ``beta``."""
        rs = self.risk
        eta = _chunked_gemv(beta, self.xt)
        shift = float(eta.max()) if eta.size else 0.0
        r = np.exp(eta - shift)
        rq = self.qt * r
        # rows exiting between event times k and k + 1 (sorted by exit) are at risk up to k: block sums, then
        # sums over the later blocks
        s = _reverse_cumsum(np.add.reduceat(rq, rs.first, axis=1))
        if rs.entry is not None:  # not yet entered at t_k: rows with lo > k
            blocks = np.zeros((rq.shape[0], rs.d.size + 1))
            blocks[:, rs.entry_blocks] = np.add.reduceat(rq[:, rs.entry_order], rs.entry_starts, axis=1)
            s = s - _reverse_cumsum(blocks[:, 1:])
        dd = np.add.reduceat(self.qt_dead * r[rs.dead], rs.dptr[:-1], axis=1)
        den = s[0, rs.k_rows] - rs.frac * dd[0, rs.k_rows]
        ke = rs.d.size
        inv = 1.0 / den
        coef = np.vstack([np.bincount(rs.k_rows, w, ke) for w in
                          (inv, rs.frac * inv, inv * inv, rs.frac * inv * inv, rs.frac ** 2 * inv * inv)])
        loglik = float((eta[rs.dead] - shift).sum() - np.log(den).sum())
        s1, d1 = s[1:].T, dd[1:].T
        resid = self.xd - (s1 * coef[0][:, None] - d1 * coef[1][:, None])  # per event time: Σx − Σ mean
        return loglik, resid.sum(axis=0), _Moments(r=r, s1=s1, d1=d1, coef=coef, resid=resid)

    def information(self, m: _Moments, h: np.ndarray | None = None) -> np.ndarray:
        """``Σ_k h_k I_k``: the information summed over event times with weights ``h`` (default 1)."""
        rs = self.risk
        a, b, c, cd, f = m.coef if h is None else m.coef * h
        cum = np.r_[0.0, np.cumsum(a)]  # cum[j] = Σ_{k<j} a_k
        w = m.r * cum[rs.hi]
        if rs.entry is not None:
            w -= m.r * cum[rs.lo]
        w[rs.dead] -= m.r[rs.dead] * b[rs.k_rows]
        s1, d1 = m.s1, m.d1
        out = _chunked_gram(self.xt, w)
        cross = s1.T @ (d1 * cd[:, None])
        out -= s1.T @ (s1 * c[:, None]) - cross - cross.T + d1.T @ (d1 * f[:, None])
        return (out + out.T) / 2

    def fit(self, *, max_iter: int = 30, start: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray, tuple[float, float], int, _Moments]:
        """Newton–Raphson with step halving from 0 (or ``start``); returns β, its covariance, (null, final)
        loglik, iterations and the moments at β̂."""
        beta = np.zeros(self.p)
        loglik, score, moments = self.evaluate(beta)
        loglik0 = loglik
        if start is not None:
            ll, sc, mo = self.evaluate(np.asarray(start, dtype=float))
            if np.isfinite(ll) and ll >= loglik:
                beta, loglik, score, moments = np.asarray(start, dtype=float), ll, sc, mo
        for it in range(1, max_iter + 1):
            info = self.information(moments)
            try:
                step = np.linalg.solve(info, score)
            except np.linalg.LinAlgError as err:
                raise ModelDidNotConverge(
                    "The Cox model's terms are collinear (one is a combination of others), so their hazard "
                    "ratios cannot be separated. Remove an adjustment or merge groups.") from err
            new = beta + step
            new_ll, new_score, new_mo = self.evaluate(new)
            halvings = 0
            while (not np.isfinite(new_ll) or new_ll < loglik - 1e-12 * abs(loglik)) and halvings < 40:
                new = (beta + new) / 2
                new_ll, new_score, new_mo = self.evaluate(new)
                halvings += 1
            done = (np.max(np.abs(new - beta)) <= 1e-11 * max(1.0, float(np.max(np.abs(new))))
                    or abs(new_ll - loglik) <= 1e-13 * abs(new_ll))
            beta, loglik, score, moments = new, new_ll, new_score, new_mo
            if done and halvings == 0:
                vcov = np.linalg.inv(self.information(moments))
                return beta, vcov, (loglik0, loglik), it, moments
        raise ModelDidNotConverge(
            f"The Cox model did not converge in {max_iter} iterations; a hazard ratio is probably infinite (a "
            "group or covariate level where everyone, or no one, returned to use). Merge small groups or drop "
            "an adjustment.")

    def transform(self, kind: Transform) -> np.ndarray:
        """g(t) per event time, centred at its mean over events (R cox.zph)."""
        rs = self.risk
        day = rs.day
        if kind == "km":
            n_risk = np.cumsum(rs.counts[::-1])[::-1]
            surv = np.cumprod(1.0 - rs.deaths_all / n_risk)
            g_all = 1.0 - np.r_[1.0, surv[:-1]]
        elif kind == "identity":
            g_all = day.astype(float)
        elif kind == "rank":
            below = np.cumsum(rs.counts) - rs.counts
            g_all = below + (rs.counts + 1) / 2.0
        elif kind == "log":
            if (day[rs.ev_k] <= 0).any():
                raise OutcomesError("The log time transform needs event days after day 0. Use \"km\".")
            with np.errstate(divide="ignore"):
                g_all = np.log(day)
        else:
            raise OutcomesError(f"Unknown PH-test time transform {kind!r}. Use km, identity, rank or log.")
        g = g_all[rs.ev_k]
        return g - float((g * rs.d).sum() / self.n_event)

    def ph_test(self, moments: _Moments, terms: Mapping[str, Sequence[int]],
                transform: Transform) -> pd.DataFrame:
        g = self.transform(transform)
        p = self.p
        u2 = (g[:, None] * moments.resid).sum(axis=0)
        imat = np.zeros((2 * p, 2 * p))
        imat[:p, :p] = self.information(moments)
        imat[:p, p:] = imat[p:, :p] = self.information(moments, g)
        imat[p:, p:] = self.information(moments, g ** 2)
        rows = []
        for name, cols in list(terms.items()) + [("GLOBAL", list(range(p)))]:
            kk = list(range(p)) + [p + c for c in cols]
            u = np.r_[np.zeros(p), u2[list(cols)]]
            chisq = float(u @ np.linalg.solve(imat[np.ix_(kk, kk)], u))
            rows.append({"term": name, "chisq": chisq, "df": len(cols), "p": chi2_sf(chisq, len(cols))})
        return pd.DataFrame(rows)


def cox_ph(time: Any, event: Any, design: pd.DataFrame, *, terms: Mapping[str, Sequence[str]] | None = None,
           levels: Mapping[str, tuple[str, str]] | None = None, conf_level: float = 0.95,
           ph_transform: Transform | None = "km", entry: Any | None = None, risk_sets: RiskSets | None = None,
           start: np.ndarray | None = None) -> CoxFit:
    """Cox proportional-hazards model with Efron ties and the Grambsch–Therneau PH test.

    Parameters
    ----------
    time, event:
        As in :func:`kaplan_meier` (no missing values).
    design:
        Numeric design matrix, one column per coefficient (dummy columns for categorical terms), no missing
        values, no intercept.
    terms:
        Term name → its design columns (a categorical term has several); used for the per-term PH test.
        Default: one term per column.
    levels:
        Design column → (term, level) labels for the table; default (column, "").
    conf_level:
        Level of the Wald CIs.
    ph_transform:
        Time transform of the PH test (``"km"``, R's default; ``"identity"``, ``"rank"``, ``"log"``), or None
        to skip it.
    entry:
        Counting-process data: the start of each row's interval; the row is at risk at event times ``t`` with
        ``entry < t ≤ time`` (R ``coxph(Surv(entry, time, event) ~ ...)``), e.g. one row per patient and value of a
        time-varying covariate. The PH test is not available with entry times (pass ``ph_transform=None``).
    risk_sets:
        ``RiskSets(time, event, entry)`` of these very rows (e.g. ``RiskSets(...).subset(mask)`` when many
        models are fitted to subsets of the same patients): spares the sort; the fit is the same.
    start:
        Start values of β for Newton–Raphson (used when their log-likelihood is not below that of β = 0; the
        maximum is the same, only fewer iterations), e.g. a smaller model's estimates padded with zeros.

    Returns
    -------
    CoxFit
        ``table`` with ``column``, ``term``, ``level``, ``coef``, ``se``, ``z``, ``p``, ``estimate`` (hazard
        ratio), ``ci_low``, ``ci_high``; ``ph_test`` with ``term``, ``chisq``, ``df``, ``p`` (``GLOBAL`` last).

    Notes
    -----
    Newton–Raphson from β = 0 to full convergence, variance = inverse information at the estimate (R
    ``coxph``); with entry times the risk sets are R's for ``Surv(start, stop, event)``
    (``tests/test_survival_counting_golden.py``). The PH test is R ``cox.zph``'s score test (survival ≥ 3.0): the
    score for adding ``x·g(t)`` terms at (β̂, 0) against the full 2p×2p information matrix (Grambsch & Therneau
    1994).
    """
    t, e = _arrays(time, event)
    x = design.to_numpy(dtype=float)
    if x.ndim != 2 or x.shape[0] != t.size or x.shape[1] == 0:
        raise ValueError("design must have one row per patient and at least one column")
    if np.isnan(x).any():
        raise ValueError("design has missing values; drop incomplete rows first")
    if not e.any():
        raise InsufficientData("A Cox model needs at least one return to use (got 0 events).")
    if entry is not None and ph_transform is not None:
        raise ValueError("The PH test is not available for counting-process (entry, time] data; pass "
                         "ph_transform=None.")
    if risk_sets is None:
        risk_sets = RiskSets(t, e, entry)
    elif risk_sets.n != t.size or risk_sets.n_event != int(e.sum()):
        raise ValueError("risk_sets were built from other rows than time and event")
    cols = [str(c) for c in design.columns]
    engine = _Efron(risk_sets, x)
    beta, vcov, loglik, iterations, moments = engine.fit(start=start)
    se = np.sqrt(np.diag(vcov))
    z = beta / se
    zc = _z(conf_level)
    labels = levels or {}
    table = pd.DataFrame({
        "column": cols,
        "term": [labels.get(c, (c, ""))[0] for c in cols],
        "level": [labels.get(c, (c, ""))[1] for c in cols],
        "coef": beta, "se": se, "z": z, "p": norm_two_sided_p(z),
        "estimate": np.exp(beta), "ci_low": np.exp(beta - zc * se), "ci_high": np.exp(beta + zc * se)})
    ph = None
    if ph_transform is not None:
        term_map = terms or {c: [c] for c in cols}
        index = {c: i for i, c in enumerate(cols)}
        ph = engine.ph_test(moments, {k: [index[c] for c in v] for k, v in term_map.items()}, ph_transform)
    return CoxFit(table=table, vcov=vcov, loglik=loglik, n=int(t.size), n_event=engine.n_event,
                  iterations=iterations, conf_level=conf_level, ph_test=ph, ph_transform=ph_transform)


def difference_ci(estimate: float, se: float, *, conf_level: float = 0.95) -> tuple[float, float, float]:
    """Normal-approximation CI and two-sided p for a difference with standard error ``se``."""
    zc = _z(conf_level)
    if not (np.isfinite(estimate) and np.isfinite(se)) or se <= 0:
        return float("nan"), float("nan"), float("nan")
    return estimate - zc * se, estimate + zc * se, norm_two_sided_p(estimate / se)
