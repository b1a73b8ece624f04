"""Exact, vectorised GEE for a binary outcome: logit link, exchangeable working correlation, robust (sandwich) SEs.

The model, for cluster (patient) ``i`` with ``n_i`` observations ``y_ij ∈ {0, 1}`` and covariates ``x_ij``::

    E[y_ij] = μ_ij = expit(x_ij'β),   Var[y_ij] = v_ij = μ_ij (1 − μ_ij),
    working covariance  V_i = A_i^{1/2} R_i A_i^{1/2},   A_i = diag(v_i),   R_i = (1 − ρ) I + ρ 11'.

β solves the generalised estimating equations ``Σ_i D_i' V_i⁻¹ (y_i − μ_i) = 0`` with ``D_i = A_i X_i`` (the logit
link's ``dμ/dη = v``), and ρ is the moment estimator below, evaluated at β (Liang & Zeger 1986, *Biometrika* 73(1)).

Every per-cluster quantity has a closed form. The exchangeable inverse is

    R_i⁻¹ = (1/(1 − ρ)) [I − ρ/(1 + (n_i − 1)ρ) · 11'],

so with ``x̃_ij = √v_ij · x_ij`` and the Pearson residuals ``r_ij = (y_ij − μ_ij)/√v_ij``, and the cluster sums
``s_i = Σ_j x̃_ij``, ``t_i = Σ_j r_ij``, ``a_i = Σ_j x̃_ij r_ij`` and ``c_i = ρ / ((1 − ρ)(1 + (n_i − 1)ρ))``:

    B   = Σ_i D_i'V_i⁻¹D_i           = X̃'X̃ / (1 − ρ) − Σ_i c_i s_i s_i'        (the "bread"),
    U_i = D_i'V_i⁻¹(y_i − μ_i)        = a_i / (1 − ρ) − c_i t_i s_i,               U = Σ_i U_i,
    cov_robust(β̂) = B⁻¹ (Σ_i U_i U_i') B⁻¹,      cov_naive(β̂) = B⁻¹  (binomial scale fixed at 1).

The observations are sorted by cluster once and the design is held transposed (``p × n``, one contiguous row per
column); every sum over a cluster is then one ``np.add.reduceat`` over contiguous entries, so an iteration is a few
passes over the design, with no loop over clusters. Products are taken with ``np.einsum`` rather than BLAS: these are
tall, thin products, for which a multithreaded BLAS costs several times more CPU than one thread on a busy machine.

Moment estimator of ρ (with ``N`` observations, ``K = Σ_i n_i(n_i − 1)/2`` within-cluster pairs, ``p`` columns)::

    φ̂ = Σ_ij r_ij² / (N − d),      ρ̂ = [Σ_i Σ_{j<k} r_ij r_ik / (K − d)] / φ̂,
    Σ_{j<k} r_ij r_ik = (t_i² − Σ_j r_ij²) / 2,

where ``d`` is the degrees-of-freedom correction:

* ``ddof=None`` (``d = p``): statsmodels ``GEE(..., family=Binomial(), cov_struct=Exchangeable())``, whose
  ``ddof_scale`` defaults to the number of columns of the design and is subtracted from both ``N`` and ``K``
  (``Exchangeable.update``);
* ``ddof=0`` (``d = 0``): R ``geepack::geeglm(..., family=binomial, corstr="exchangeable")``, whose scale equation
  (identity scale link, ``scale.fix = FALSE``) gives ``φ̂ = Σ r²/N`` and whose correlation equation gives
  ``ρ̂ = Σ_pairs r r / (K φ̂)`` (Yan & Fine 2004, *Stat Med* 23; ``update_gamma``/``update_alpha`` in geepack's
  ``gee2.cc``).

The scale φ only enters ρ̂: the estimating equations and the sandwich do not depend on it. Neither package applies a
small-sample correction to the sandwich (statsmodels ``cov_type="robust"``, geepack ``std.err="san.se"``); nor does
this engine.

Iterations, as in both packages: an independence (GLM) fit by Fisher scoring gives the start; then, repeatedly, ρ is
re-estimated at the current β and β takes one Fisher-scoring step ``β += B⁻¹U`` with that ρ, until the largest
change of β and of ρ is below ``tol``. The result is the fixed point ``U(β̂, ρ̂(β̂)) = 0`` to rounding; statsmodels
stops when ``|U| < 1e-6`` and geepack when every change is below ``1e-4`` (its default ``epsilon``), so their numbers
can differ from the fixed point (and from each other) by that much more than the ρ estimators explain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

TOL = 1e-10  # largest change of β (and ρ) at which the iterations stop
MAX_ITER = 100


@dataclass(frozen=True)
class GEEResult:
    """One GEE fit (numbers only; tables are built by the caller).

    ``alpha`` is the exchangeable working correlation ρ̂ and ``scale`` the Pearson scale φ̂ of its moment
    estimator (both with the ``ddof`` correction used); ``cov_robust`` is the sandwich covariance of β̂ (its square
    roots of the diagonal are :attr:`se`), ``cov_naive`` the model-based one (binomial scale 1, as statsmodels).
    ``score_norm`` is the length of the estimating function ``U`` at β̂.
    """

    names: tuple[str, ...]
    beta: np.ndarray
    cov_robust: np.ndarray
    cov_naive: np.ndarray
    alpha: float
    scale: float
    ddof: int
    n_obs: int
    n_groups: int
    max_cluster_size: int
    n_iterations: int
    converged: bool
    score_norm: float
    notes: tuple[str, ...] = field(default=())

    @property
    def se(self) -> np.ndarray:
        """Robust (sandwich) standard errors."""
        return np.sqrt(np.diag(self.cov_robust))

    def cov_params(self) -> np.ndarray:
        """The robust covariance of β̂ (statsmodels' ``cov_params()`` with its default ``cov_type="robust"``)."""
        return self.cov_robust


@dataclass(frozen=True)
class _Clusters:
    """The data sorted by cluster, with the cluster boundaries and sizes."""

    y: np.ndarray
    xt: np.ndarray  # the design, transposed: (p, n)
    starts: np.ndarray
    sizes: np.ndarray
    n_pairs: float


@dataclass(frozen=True)
class _Pass:
    """The quantities of one pass over the data at a given β."""

    x1: np.ndarray  # √v · x, transposed: (p, n)
    r: np.ndarray  # Pearson residuals, (n,)
    s: np.ndarray  # cluster sums of x1, (p, N)
    t: np.ndarray  # cluster sums of r, (N,)
    ssr: float  # Σ r²
    pairs: float  # Σ_i Σ_{j<k} r_ij r_ik


def _expit(eta: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(eta))
    return np.where(eta >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _clusters(y: np.ndarray, X: np.ndarray, groups: np.ndarray) -> tuple[_Clusters, int]:
    codes, uniques = pd.factorize(np.asarray(groups), sort=False)
    if np.any(codes < 0):
        raise ValueError("groups must not be missing")
    if len(codes) > 1 and np.any(np.diff(codes) < 0):
        order = np.argsort(codes, kind="stable")
        codes, y, X = codes[order], y[order], X[order]
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]]) if len(codes) else np.zeros(0, dtype=np.intp)
    sizes = np.diff(np.r_[starts, len(codes)]).astype(float)
    n_pairs = float(np.sum(sizes * (sizes - 1.0)) / 2.0)
    return _Clusters(y=y, xt=np.ascontiguousarray(X.T), starts=starts, sizes=sizes, n_pairs=n_pairs), len(uniques)


def _pass(cl: _Clusters, beta: np.ndarray) -> _Pass:
    mu = _expit(np.einsum("j,jn->n", beta, cl.xt))
    w = np.sqrt(mu * (1.0 - mu))
    x1 = cl.xt * w
    r = (cl.y - mu) / w
    s = np.add.reduceat(x1, cl.starts, axis=1)
    t = np.add.reduceat(r, cl.starts)
    ssr = float(np.einsum("n,n->", r, r))
    return _Pass(x1=x1, r=r, s=s, t=t, ssr=ssr, pairs=float((t @ t - ssr) / 2.0))


def _moment_alpha(ps: _Pass, n_obs: int, n_pairs: float, ddof: int) -> tuple[float, float]:
    """ρ̂ and φ̂ (see the module docstring)."""
    scale = ps.ssr / (n_obs - ddof)
    return ps.pairs / (n_pairs - ddof) / scale, scale


def _c(rho: float, sizes: np.ndarray) -> np.ndarray:
    """``c_i = ρ / ((1 − ρ)(1 + (n_i − 1)ρ))``: the weight of ``11'`` in ``R_i⁻¹``."""
    return rho / ((1.0 - rho) * (1.0 + (sizes - 1.0) * rho))


def _bread_and_score(ps: _Pass, rho: float, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = _c(rho, sizes)
    bread = np.einsum("in,jn->ij", ps.x1, ps.x1) / (1.0 - rho) - np.einsum("in,n,jn->ij", ps.s, c, ps.s)
    score = np.einsum("in,n->i", ps.x1, ps.r) / (1.0 - rho) - np.einsum("in,n->i", ps.s, c * ps.t)
    return bread, score


def _solve(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, bool]:
    """``a⁻¹b`` and whether ``a`` was invertible (else the pseudo-inverse, as statsmodels falls back to)."""
    try:
        return np.linalg.solve(a, b), True
    except np.linalg.LinAlgError:
        return np.linalg.pinv(a) @ b, False


def _valid(rho: float, max_size: float) -> bool:
    """Whether the exchangeable matrix of the largest cluster is positive definite: ``−1/(n−1) < ρ < 1``."""
    return math.isfinite(rho) and rho < 1.0 and 1.0 + (max_size - 1.0) * rho > 0.0


def fit_gee(y: np.ndarray, X: np.ndarray, groups: np.ndarray, *, ddof: int | None = None,
            names: tuple[str, ...] | None = None, start: np.ndarray | None = None, tol: float = TOL,
            max_iter: int = MAX_ITER) -> GEEResult:
    """Fit ``logit P(y = 1) = Xβ`` by GEE with an exchangeable working correlation within ``groups``.

    Parameters
    ----------
    y:
        Binary response ``(n,)`` (0/1).
    X:
        Design ``(n, p)``; include the intercept column yourself.
    groups:
        Cluster labels ``(n,)`` (any hashable values). Observations of a cluster need not be contiguous; their
        order within the cluster does not matter (the exchangeable structure has none).
    ddof:
        Degrees-of-freedom correction ``d`` of the moment estimators of ρ and φ: None (``d = p``, statsmodels'
        default, the engine in use) or 0 (R geepack's ``geeglm``).
    names:
        Names of the columns of ``X``.
    start:
        Start values of β (default: the independence GLM fit, as both packages).
    tol, max_iter:
        The iterations stop when the largest change of β and of ρ is at most ``tol``; after ``max_iter``
        iterations the fit is returned with ``converged=False`` and a note.

    Returns
    -------
    GEEResult

    Notes
    -----
    The estimator of Liang & Zeger (1986) with the moment estimators and the sandwich of statsmodels and geepack;
    see the module docstring for the formulas.
    """
    y = np.asarray(y, dtype=float)
    X = np.asarray(X, dtype=float)
    if X.ndim != 2 or y.shape != (X.shape[0],) or np.asarray(groups).shape != y.shape:
        raise ValueError("y (n,), X (n, p) and groups (n,) must have the same number of rows")
    if not np.all((y == 0.0) | (y == 1.0)):
        raise ValueError("y must be 0 or 1")
    n, p = X.shape
    d = p if ddof is None else int(ddof)
    names = tuple(names) if names is not None else tuple(f"x{j}" for j in range(p))
    cl, n_groups = _clusters(y, X, np.asarray(groups))
    if cl.n_pairs - d <= 0 or n - d <= 0:
        raise ValueError(f"the exchangeable correlation needs more than {d} within-cluster pairs "
                         f"(got {cl.n_pairs:.0f})")
    max_size = float(cl.sizes.max())
    notes: list[str] = []
    singular = False

    # Independence (GLM) start by Fisher scoring, as statsmodels and geepack start from glm().
    beta = np.zeros(p) if start is None else np.asarray(start, dtype=float).copy()
    if start is None:
        for _ in range(max_iter):
            ps = _pass(cl, beta)
            step, ok = _solve(np.einsum("in,jn->ij", ps.x1, ps.x1), np.einsum("in,n->i", ps.x1, ps.r))
            singular |= not ok
            beta = beta + step
            if np.max(np.abs(step)) <= tol * max(1.0, float(np.max(np.abs(beta)))):
                break

    rho = 0.0
    converged = False
    change = math.inf
    it = 0
    for it in range(1, max_iter + 1):
        ps = _pass(cl, beta)
        rho_new, _ = _moment_alpha(ps, n, cl.n_pairs, d)
        if not _valid(rho_new, max_size):
            notes.append(f"The working correlation left its valid range (ρ = {rho_new:.3g} with clusters of up to "
                         f"{max_size:.0f} observations); the GEE did not converge.")
            break
        bread, score = _bread_and_score(ps, rho_new, cl.sizes)
        step, ok = _solve(bread, score)
        singular |= not ok
        beta = beta + step
        change = max(float(np.max(np.abs(step))), abs(rho_new - rho))
        rho = rho_new
        if not np.all(np.isfinite(beta)):
            break
        if change <= tol * max(1.0, float(np.max(np.abs(beta)))):
            converged = True
            break

    # Final quantities at β̂ with ρ̂(β̂): the fixed point.
    ps = _pass(cl, beta)
    alpha, scale = _moment_alpha(ps, n, cl.n_pairs, d)
    if not _valid(alpha, max_size):
        alpha, converged = rho, False
    bread, score = _bread_and_score(ps, alpha, cl.sizes)
    c = _c(alpha, cl.sizes)
    a = np.add.reduceat(ps.x1 * ps.r, cl.starts, axis=1)
    u = a / (1.0 - alpha) - ps.s * (c * ps.t)  # U_i, (p, N)
    try:
        bread_inv = np.linalg.inv(bread)
    except np.linalg.LinAlgError:
        bread_inv = np.linalg.pinv(bread)
        singular = True
    cov_robust = bread_inv @ np.einsum("in,jn->ij", u, u) @ bread_inv
    cov_robust = (cov_robust + cov_robust.T) / 2.0
    if singular:
        notes.append("The GEE design is singular (a term is constant or duplicates others); "
                     "the estimates are not unique.")
        converged = False
    if not converged and not any("did not converge" in x for x in notes):
        notes.append(f"The GEE iterations did not converge in {it} steps (last change {change:.2g}, "
                     f"tolerance {tol:g}); the estimates are not trustworthy.")
    return GEEResult(names=names, beta=beta, cov_robust=cov_robust, cov_naive=bread_inv, alpha=float(alpha),
                     scale=float(scale), ddof=d, n_obs=n, n_groups=n_groups, max_cluster_size=int(max_size),
                     n_iterations=it, converged=bool(converged), score_norm=float(np.linalg.norm(score)),
                     notes=tuple(notes))
