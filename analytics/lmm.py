"""Exact, vectorised (RE)ML for linear mixed models with a per-patient random intercept (and slope).

The model, for patient ``i`` with ``n_i`` observations::

    y_i = X_i β + Z_i b_i + e_i,   b_i ~ N(0, σ² Λ Λ'),   e_i ~ N(0, σ² I),

where ``Z_i`` has one column (random intercept) or two (intercept and slope on time) and ``Λ`` is the
lower-triangular relative covariance factor, parametrised like lme4's ``theta`` (column-wise lower
triangle: ``Λ[0,0], Λ[1,0], Λ[1,1]``).

Every quantity the likelihood needs reduces, per patient, to tiny cross-products: ``S_i = Z_i'Z_i``
(q×q) and ``B_i = Z_i'[X_i y_i]`` (q×(p+1)), plus the global ``C_0 = [X y]'[X y]``. With
``M_i = I + Λ'S_iΛ`` and ``K_i = Λ M_i⁻¹ Λ'`` (Woodbury),

    C(θ) = [X y]' V*⁻¹ [X y] = C_0 − Σ_i B_i' K_i B_i,       V* = V / σ²,

whose Cholesky factor gives ``β̂`` (generalised least squares), the penalised residual sum of squares
``r²`` and ``log|X'V*⁻¹X|``. ``β`` and ``σ²`` are profiled out, so only θ (3 numbers, or 1) is optimised:

    REML deviance  = Σ log|M_i| + log|X'V*⁻¹X| + (n−p) (1 + log(2π r² / (n−p)))
    ML deviance    = Σ log|M_i| + n (1 + log(2π r² / n))

the same profiled criteria that lme4 minimises (Bates et al. 2015, *J Stat Softw* 67(1), eqs 34 and 41).
The analytic gradient (derived below, in :func:`_deviance`) drives L-BFGS-B with the bounds
``Λ[0,0] ≥ 0, Λ[1,1] ≥ 0``; every evaluation costs a few array operations over patients and two small
matrix products, so 50,000 patients fit in a fraction of a second.

Standard errors of β are those of lme4's ``vcov()``: ``σ̂² (X'V*⁻¹X)⁻¹`` at the optimum. A fit is flagged
singular (lme4's ``isSingular``) when a diagonal element of ``Λ`` is below ``1e-4``; convergence is checked
as lme4 does, by the Newton step ``H⁻¹g`` at the optimum (finite-difference Hessian of the analytic
gradient) being small, and by the optimiser's own flag.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import optimize

SINGULAR_TOL = 1e-4  # lme4::isSingular default
GRADIENT_TOL = 2e-3  # lme4's check.conv.grad tolerance on the scaled gradient


@dataclass(frozen=True)
class Blocks:
    """Per-patient sufficient statistics of one model (what every likelihood evaluation needs).

    Attributes
    ----------
    s:
        ``(N, 3)`` entries ``(Σ1, Σt, Σt²)`` of ``Z_i'Z_i`` (only the first column when ``q = 1``).
    b0, b1:
        ``(N, p+1)`` rows ``Σ_j [x_ij y_ij]`` and ``Σ_j t_ij [x_ij y_ij]`` (``b1`` is empty when ``q = 1``).
    c0:
        ``(p+1, p+1)`` global cross-product ``[X y]'[X y]``.
    """

    s: np.ndarray
    b0: np.ndarray
    b1: np.ndarray
    c0: np.ndarray
    n_obs: int
    n_groups: int
    p: int
    q: int


@dataclass(frozen=True)
class LMMResult:
    """One linear mixed-model fit (numbers only; tables are built by the caller).

    ``cov_re`` is the absolute covariance of the random effects (σ² ΛΛ'); ``sigma`` the residual SD.
    ``deviance`` is the criterion minimised (REML criterion or −2 log-likelihood), so
    ``loglik = −deviance / 2``; AIC and BIC count ``p + q(q+1)/2 + 1`` parameters, as lme4 does.
    """

    names: tuple[str, ...]
    beta: np.ndarray
    cov_beta: np.ndarray
    theta: np.ndarray
    sigma: float
    cov_re: np.ndarray
    deviance: float
    loglik: float
    aic: float
    bic: float
    reml: bool
    n_obs: int
    n_groups: int
    converged: bool
    singular: bool
    n_evaluations: int
    scaled_gradient: float
    message: str = ""
    notes: tuple[str, ...] = field(default=())

    @property
    def se(self) -> np.ndarray:
        return np.sqrt(np.diag(self.cov_beta))

    @property
    def q(self) -> int:
        return self.cov_re.shape[0]

    @property
    def n_params(self) -> int:
        return len(self.beta) + self.q * (self.q + 1) // 2 + 1

    def variance_components(self) -> dict[str, float | None]:
        """``sd_intercept``, ``sd_slope``, ``corr``, ``sd_residual`` (None where the model has no such term)."""
        g = self.cov_re
        sd0 = math.sqrt(max(g[0, 0], 0.0))
        out: dict[str, float | None] = {"sd_intercept": sd0, "sd_slope": None, "corr": None,
                                        "sd_residual": float(self.sigma)}
        if self.q == 2:
            sd1 = math.sqrt(max(g[1, 1], 0.0))
            out["sd_slope"] = sd1
            out["corr"] = float(g[0, 1] / (sd0 * sd1)) if sd0 > 0 and sd1 > 0 else None
        return out


def build_blocks(y: np.ndarray, X: np.ndarray, groups: np.ndarray, time: np.ndarray | None) -> Blocks:
    """Reduce the data to per-patient cross-products.

    Parameters
    ----------
    y, X:
        Response ``(n,)`` and fixed-effects design ``(n, p)``.
    groups:
        Integer patient codes ``0 … N−1`` ``(n,)`` (e.g. from :func:`pandas.factorize`).
    time:
        Covariate with a random slope ``(n,)``, or None for a random intercept only.
    """
    y = np.asarray(y, dtype=float)
    X = np.asarray(X, dtype=float)
    groups = np.asarray(groups, dtype=np.int64)
    n, p = X.shape
    n_groups = int(groups.max()) + 1 if n else 0
    xy = np.empty((n, p + 1))
    xy[:, :p] = X
    xy[:, p] = y
    c0 = xy.T @ xy
    # Sorting once makes the per-patient sums contiguous reductions (faster than bincount per column).
    if n > 1 and np.any(np.diff(groups) < 0):
        order = np.argsort(groups, kind="stable")
        groups, xy = groups[order], xy[order]
        time = None if time is None else np.asarray(time, dtype=float)[order]
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    if len(starts) != n_groups:
        raise ValueError("group codes must be 0 … N−1 without gaps")
    counts = np.diff(np.r_[starts, n]).astype(float)
    b0 = np.add.reduceat(xy, starts, axis=0)
    if time is None:
        s = counts[:, None]
        b1 = np.empty((n_groups, 0))
        q = 1
    else:
        t = np.asarray(time, dtype=float)
        s = np.column_stack([counts, np.add.reduceat(t, starts), np.add.reduceat(t * t, starts)])
        b1 = np.add.reduceat(xy * t[:, None], starts, axis=0)
        q = 2
    return Blocks(s=s, b0=b0, b1=b1, c0=c0, n_obs=n, n_groups=n_groups, p=p, q=q)


@dataclass
class _Eval:
    deviance: float
    grad: np.ndarray | None
    beta: np.ndarray
    r2: float
    a_inv: np.ndarray
    ok: bool


class _Workspace:
    """Preallocated buffers: each evaluation then streams over the per-patient blocks a few times
    without allocating large temporaries (allocation, not arithmetic, dominated the first version)."""

    def __init__(self, blk: Blocks) -> None:
        n_groups, width = blk.b0.shape
        self.y = np.empty((blk.q * n_groups, width))
        self.tmp = np.empty((n_groups, width))
        self.bx0 = np.ascontiguousarray(blk.b0[:, :blk.p])
        self.bx1 = np.ascontiguousarray(blk.b1[:, :blk.p]) if blk.q == 2 else self.bx0
        self.t0 = np.empty((n_groups, blk.p))
        self.t1 = np.empty((n_groups, blk.p))


def _failed(p: int) -> _Eval:
    return _Eval(math.inf, None, np.full(p, np.nan), math.nan, np.full((p, p), np.nan), False)


def _deviance(theta: np.ndarray, blk: Blocks, reml: bool, want_grad: bool,
              ws: _Workspace | None = None) -> _Eval:
    """Profiled deviance at ``theta`` and its analytic gradient.

    Likelihood. With the Cholesky factor ``M_i = R_i R_i'`` and ``T_i = R_i⁻¹Λ'``, ``K_i = T_i'T_i`` and
    ``Σ_i B_i'K_iB_i = Y'Y`` with ``Y`` the stacked rows ``T_i B_i``: one matrix product per evaluation.

    Gradient. With ``P = ΛM⁻¹``, ``E = I − KS``, ``H_i = B_xi A⁻¹ B_xi'`` (``A = X'V*⁻¹X``, REML only),
    ``g_i = B_i (−β̂, 1)`` and ``J_i = H_i + (ν / r²) g_i g_i'`` (``ν = n − p`` for REML, ``n`` for ML), one
    has ``dK = E dΛ P' + (E dΛ P')'`` and ``d log|M| = 2 tr(P'S dΛ)``; by the envelope theorem
    ``dr² = −Σ g'dK g``, and ``d log|A| = −Σ tr(dK H)``. Hence ∂dev/∂Λ[r,c] = 2 Σ_i [P_i'(S_i − J_i E_i)]_{c,r}.
    """
    ws = ws or _Workspace(blk)
    p, n, n_groups = blk.p, blk.n_obs, blk.n_groups
    nu = n - p if reml else n
    y = ws.y
    if blk.q == 1:
        a = float(theta[0])
        s00 = blk.s[:, 0]
        m = 1.0 + a * a * s00
        logdet_m = float(np.log(m).sum())
        t00 = a / np.sqrt(m)
        np.multiply(blk.b0, t00[:, None], out=y)
        k00 = t00 * t00
    else:
        a, b, c = (float(v) for v in theta)
        s00, s01, s11 = blk.s[:, 0], blk.s[:, 1], blk.s[:, 2]
        m00 = 1.0 + a * a * s00 + 2.0 * a * b * s01 + b * b * s11
        m01 = c * (a * s01 + b * s11)
        m11 = 1.0 + c * c * s11
        r00 = np.sqrt(m00)
        r10 = m01 / r00
        r11 = np.sqrt(m11 - r10 * r10)
        logdet_m = 2.0 * float(np.log(r00).sum() + np.log(r11).sum())
        t00, t01 = a / r00, b / r00
        t10 = -r10 * t00 / r11
        t11 = (c - r10 * t01) / r11
        y0, y1, tmp = y[:n_groups], y[n_groups:], ws.tmp
        np.multiply(blk.b0, t00[:, None], out=y0)
        np.multiply(blk.b1, t01[:, None], out=tmp)
        y0 += tmp
        np.multiply(blk.b0, t10[:, None], out=y1)
        np.multiply(blk.b1, t11[:, None], out=tmp)
        y1 += tmp
        k00 = t00 * t00 + t10 * t10
        k01 = t00 * t01 + t10 * t11
        k11 = t01 * t01 + t11 * t11
    cmat = blk.c0 - y.T @ y
    try:
        low = np.linalg.cholesky(cmat)
    except np.linalg.LinAlgError:
        return _failed(p)
    diag = np.diag(low)
    if not np.all(np.isfinite(diag)) or np.any(diag[:p] <= 0) or diag[p] == 0:
        return _failed(p)
    r2 = float(diag[p] ** 2)
    lx_inv = np.linalg.inv(low[:p, :p])          # A = Lx Lx', A⁻¹ = Lx⁻ᵀ Lx⁻¹
    beta = lx_inv.T @ low[p, :p]
    a_inv = lx_inv.T @ lx_inv
    dev = logdet_m + nu * (1.0 + math.log(2.0 * math.pi * r2 / nu))
    if reml:
        dev += 2.0 * float(np.log(diag[:p]).sum())
    grad = None
    if want_grad:
        u = np.r_[-beta, 1.0]
        w = nu / r2
        g0 = blk.b0 @ u
        if reml:
            np.matmul(ws.bx0, lx_inv.T, out=ws.t0)
        if blk.q == 1:
            j00 = w * g0 * g0
            if reml:
                j00 += np.einsum("ij,ij->i", ws.t0, ws.t0)
            e00 = 1.0 - k00 * s00
            grad = np.array([2.0 * np.sum((a / m) * (s00 - j00 * e00))])
        else:
            g1 = blk.b1 @ u
            j00, j01, j11 = w * g0 * g0, w * g0 * g1, w * g1 * g1
            if reml:
                np.matmul(ws.bx1, lx_inv.T, out=ws.t1)
                j00 += np.einsum("ij,ij->i", ws.t0, ws.t0)
                j01 += np.einsum("ij,ij->i", ws.t0, ws.t1)
                j11 += np.einsum("ij,ij->i", ws.t1, ws.t1)
            det = m00 * m11 - m01 * m01
            i00, i01, i11 = m11 / det, -m01 / det, m00 / det
            p00, p01 = a * i00, a * i01
            p10, p11 = b * i00 + c * i01, b * i01 + c * i11
            # E = I − K S
            e00 = 1.0 - (k00 * s00 + k01 * s01)
            e01 = -(k00 * s01 + k01 * s11)
            e10 = -(k01 * s00 + k11 * s01)
            e11 = 1.0 - (k01 * s01 + k11 * s11)
            # F = S − J E
            f00 = s00 - (j00 * e00 + j01 * e10)
            f01 = s01 - (j00 * e01 + j01 * e11)
            f10 = s01 - (j01 * e00 + j11 * e10)
            f11 = s11 - (j01 * e01 + j11 * e11)
            # Q = P' F ; gradient entries Q[0,0] (Λ00), Q[0,1] (Λ10), Q[1,1] (Λ11)
            # (einsum, not np.dot: level-1 BLAS calls stall badly with threaded OpenBLAS on a busy machine)
            q00 = np.einsum("i,i->", p00, f00) + np.einsum("i,i->", p10, f10)
            q01 = np.einsum("i,i->", p00, f01) + np.einsum("i,i->", p10, f11)
            q11 = np.einsum("i,i->", p01, f01) + np.einsum("i,i->", p11, f11)
            grad = 2.0 * np.array([q00, q01, q11])
    return _Eval(dev, grad, beta, r2, a_inv, True)


def _lower_bounds(q: int) -> np.ndarray:
    return np.array([0.0]) if q == 1 else np.array([0.0, -np.inf, 0.0])


def _time_sd(blk: Blocks) -> float:
    n = blk.s[:, 0].sum()
    mean_t = blk.s[:, 1].sum() / n
    return math.sqrt(max(blk.s[:, 2].sum() / n - mean_t ** 2, 1e-12))


def _default_start(blk: Blocks) -> np.ndarray:
    """lme4's start (Λ = I), with the slope entry put on the scale of the time covariate."""
    return np.array([1.0]) if blk.q == 1 else np.array([1.0, 0.0, min(1.0, 1.0 / _time_sd(blk))])


def _moment_start(blk: Blocks) -> np.ndarray:
    """Method-of-moments start values for θ.

    Ordinary least squares gives β₀; each patient's own least-squares intercept (and slope) deviation
    ``b_i = S_i⁻¹ Z_i'(y_i − X_iβ₀)`` then has covariance ``G + σ² S_i⁻¹``, and the pooled within-patient residuals
    estimate σ². ``Λ₀ = chol(Ĝ / σ̂²)`` (kept away from the bounds). Patients whose own slope is barely
    determined (times bunched together) are left out. Falls back to lme4's start when this is not computable.
    """
    p = blk.p
    try:
        with np.errstate(all="ignore"):
            beta = np.linalg.solve(blk.c0[:p, :p], blk.c0[:p, p])
            u = np.r_[-beta, 1.0]
            total = float(u @ blk.c0 @ u)
            s00 = blk.s[:, 0]
            r0 = blk.b0 @ u
            if blk.q == 1:
                df = blk.n_obs - len(s00)
                sig2 = (total - float(np.sum(r0 * r0 / s00))) / df
                m = s00 >= 2
                g = float(np.mean((r0[m] / s00[m]) ** 2) - sig2 * np.mean(1.0 / s00[m]))
                start = np.array([math.sqrt(min(max(g / sig2, 0.01), 1e4))])
            else:
                s01, s11 = blk.s[:, 1], blk.s[:, 2]
                r1 = blk.b1 @ u
                det = s00 * s11 - s01 * s01
                inv = det > 1e-8 * s00 * s11
                safe = np.where(inv, det, 1.0)
                i00 = np.where(inv, s11 / safe, 0.0)
                i01 = np.where(inv, -s01 / safe, 0.0)
                i11 = np.where(inv, s00 / safe, 0.0)
                proj = np.where(inv, r0 * (i00 * r0 + i01 * r1) + r1 * (i01 * r0 + i11 * r1), r0 * r0 / s00)
                df = blk.n_obs - float(np.sum(np.where(inv, 2, 1)))
                sig2 = (total - float(proj.sum())) / df
                m = inv & (s00 >= 3)
                if m.sum() < 5:
                    m = inv
                m = m & (i11 <= 4 * np.median(i11[m]))
                b0 = i00 * r0 + i01 * r1
                b1 = i01 * r0 + i11 * r1
                g00 = float(np.mean(b0[m] ** 2) - sig2 * np.mean(i00[m])) / sig2
                g01 = float(np.mean(b0[m] * b1[m]) - sig2 * np.mean(i01[m])) / sig2
                g11 = float(np.mean(b1[m] ** 2) - sig2 * np.mean(i11[m])) / sig2
                floor11 = (0.05 / _time_sd(blk)) ** 2
                g00, g11 = min(max(g00, 0.01), 1e4), max(g11, floor11)
                l00 = math.sqrt(g00)
                l10 = g01 / l00
                if l10 * l10 > 0.9 * g11:  # keep |corr| ≤ 0.95 at the start
                    l10 = math.copysign(math.sqrt(0.9 * g11), l10)
                start = np.array([l00, l10, math.sqrt(g11 - l10 * l10)])
        if np.all(np.isfinite(start)) and sig2 > 0:
            return start
    except (np.linalg.LinAlgError, ValueError, ZeroDivisionError):
        pass
    return _default_start(blk)


def _hessian(theta: np.ndarray, blk: Blocks, reml: bool, ws: _Workspace, grad: np.ndarray) -> np.ndarray:
    """Forward-difference Hessian of the analytic gradient (one gradient per parameter)."""
    k = len(theta)
    lb = _lower_bounds(blk.q)
    hess = np.empty((k, k))
    for j in range(k):
        h = 1e-6 * max(1.0, abs(theta[j]))
        step = theta.copy()
        step[j] += h
        g = _deviance(step, blk, reml, True, ws).grad
        if g is None:
            step[j] = max(theta[j] - h, lb[j])
            g = _deviance(step, blk, reml, True, ws).grad
            h = step[j] - theta[j]
        hess[:, j] = (g - grad) / h if g is not None and h != 0 else np.nan
    return 0.5 * (hess + hess.T)


def _newton_check(theta: np.ndarray, ev: _Eval, blk: Blocks, reml: bool,
                  ws: _Workspace) -> tuple[np.ndarray | None, float, bool]:
    """Newton step on the parameters not held at a bound, its size (lme4's scaled gradient) and
    whether the Hessian there is positive definite."""
    lb = _lower_bounds(blk.q)
    grad = ev.grad
    if grad is None:
        return None, math.inf, False
    free = ~((theta <= lb + 1e-10) & (grad > 0))
    if not free.any():
        return np.zeros_like(theta), 0.0, True
    hess = _hessian(theta, blk, reml, ws, grad)[np.ix_(free, free)]
    if not np.all(np.isfinite(hess)):
        return None, math.inf, False
    pos_def = bool(np.all(np.linalg.eigvalsh(hess) > 0))
    try:
        step_free = np.linalg.solve(hess, grad[free])
    except np.linalg.LinAlgError:
        return None, math.inf, pos_def
    step = np.zeros_like(theta)
    step[free] = step_free
    return step, float(np.max(np.abs(step_free))), pos_def


def fit_blocks(blk: Blocks, *, reml: bool = True, names: tuple[str, ...] | None = None,
               start: np.ndarray | None = None) -> LMMResult:
    """Fit the model whose sufficient statistics are ``blk``.

    L-BFGS-B with the analytic gradient, then one Newton polishing step with a finite-difference Hessian,
    which also gives lme4's convergence check (``|H⁻¹g| < 0.002``). Returns a result in every case;
    ``converged`` is False (and ``notes`` say why) when the check fails.
    """
    p, q = blk.p, blk.q
    names = names or tuple(f"x{j}" for j in range(p))
    lb = _lower_bounds(q)
    theta0 = np.asarray(start, dtype=float) if start is not None else _moment_start(blk)
    ws = _Workspace(blk)
    n_eval = 0
    # Optimise φ = θ / scale, with the scale taken from the start values, so that every coordinate is of
    # order one (θ's entries differ by orders of magnitude when time is in weeks): far fewer iterations.
    scale = np.abs(theta0) if q == 1 else np.abs(np.array([theta0[0], max(theta0[2], abs(theta0[1])), theta0[2]]))
    scale = np.where(scale > 1e-8, scale, 1.0)

    def fun(phi: np.ndarray) -> tuple[float, np.ndarray]:
        nonlocal n_eval
        n_eval += 1
        ev = _deviance(phi * scale, blk, reml, True, ws)
        if not ev.ok:
            return 1e300, np.zeros_like(phi)
        return ev.deviance, ev.grad * scale  # type: ignore[operator]

    bounds = [(None if math.isinf(lo) else lo, None) for lo in lb]

    def run(th0: np.ndarray) -> optimize.OptimizeResult:
        out = optimize.minimize(fun, th0 / scale, jac=True, method="L-BFGS-B", bounds=bounds,
                                options={"maxiter": 1000, "ftol": 1e-12, "gtol": 1e-9, "maxcor": 10})
        out.x = out.x * scale
        return out

    res = run(theta0)
    # The deviance depends on the last diagonal element of Λ only through its square, so that element = 0 is a
    # stationary point (often a saddle) where a gradient method can stop after a first step overshoots onto
    # the bound. If moving away from 0 lowers the deviance, restart from the best point of a short grid.
    even = 0 if q == 1 else 2
    for _ in range(3):
        th = np.maximum(res.x, lb)
        if th[even] > SINGULAR_TOL:
            break
        here = _deviance(th, blk, reml, False, ws).deviance
        base = max(theta0[even], 0.1 if q == 1 else 0.1 / _time_sd(blk))
        grid = [base * f for f in (3.0, 1.0, 0.3, 0.1, 0.03, 0.01)]
        trials = []
        for v in grid:
            cand = th.copy()
            cand[even] = v
            trials.append((_deviance(cand, blk, reml, False, ws).deviance, v))
            n_eval += 1
        best_dev, best_v = min(trials)
        if not best_dev < here - 1e-9 * max(1.0, abs(here)):
            break
        cand = th.copy()
        cand[even] = best_v
        res = run(cand)
    theta = np.maximum(res.x, lb)
    ev = _deviance(theta, blk, reml, True, ws)
    notes: list[str] = []
    scaled, pos_def = math.inf, False
    if ev.ok:
        step, scaled, pos_def = _newton_check(theta, ev, blk, reml, ws)
        n_eval += len(theta)
        if step is not None and pos_def and scaled < 0.1:
            polished = np.maximum(theta - step, lb)
            ev2 = _deviance(polished, blk, reml, True, ws)
            n_eval += 1
            if ev2.ok and ev2.deviance <= ev.deviance:
                theta, ev = polished, ev2
    converged = bool(ev.ok and scaled < GRADIENT_TOL)
    if ev.ok and not pos_def:
        notes.append("The likelihood is not curved upwards in every direction at the optimum "
                     "(Hessian not positive definite); the variance estimates are not trustworthy.")
        converged = False
    if not converged:
        notes.append(f"The optimiser did not converge ({res.message}; scaled gradient {scaled:.2g}, "
                     f"lme4's tolerance {GRADIENT_TOL}).")
    diag_idx = [0] if q == 1 else [0, 2]
    singular = bool(np.any(theta[diag_idx] < SINGULAR_TOL))
    nu = blk.n_obs - p if reml else blk.n_obs
    sigma2 = ev.r2 / nu if ev.ok else math.nan
    lam = np.array([[theta[0]]]) if q == 1 else np.array([[theta[0], 0.0], [theta[1], theta[2]]])
    cov_re = sigma2 * lam @ lam.T
    k = p + q * (q + 1) // 2 + 1
    dev = float(ev.deviance)
    return LMMResult(
        names=tuple(names), beta=ev.beta, cov_beta=sigma2 * ev.a_inv, theta=theta,
        sigma=math.sqrt(sigma2) if sigma2 >= 0 else math.nan, cov_re=cov_re, deviance=dev, loglik=-dev / 2.0,
        aic=dev + 2 * k, bic=dev + k * math.log(blk.n_obs), reml=reml, n_obs=blk.n_obs,
        n_groups=blk.n_groups, converged=converged, singular=singular, n_evaluations=n_eval,
        scaled_gradient=scaled, message=str(res.message), notes=tuple(notes))


def fit_lmm(y: np.ndarray, X: np.ndarray, groups: np.ndarray, time: np.ndarray | None = None, *,
            reml: bool = True, names: tuple[str, ...] | None = None,
            start: np.ndarray | None = None) -> LMMResult:
    """Fit ``y = Xβ + b_0i + b_1i·time + e`` (or a random intercept only when ``time`` is None).

    Parameters
    ----------
    y, X:
        Response and fixed-effects design (include the intercept column yourself).
    groups:
        Patient labels (any hashable values); observations of one patient need not be contiguous.
    time:
        The covariate that gets a random slope, or None.
    reml:
        REML (default, lme4's default) or maximum likelihood (for likelihood-ratio tests of fixed effects).

    Returns
    -------
    LMMResult
    """
    codes, _ = pd.factorize(np.asarray(groups), sort=False)
    blk = build_blocks(np.asarray(y, float), np.asarray(X, float), codes, time)
    return fit_blocks(blk, reml=reml, names=names, start=start)


def blups(result: LMMResult, y: np.ndarray, X: np.ndarray, groups: np.ndarray,
          time: np.ndarray | None = None) -> pd.DataFrame:
    """Conditional modes (BLUPs) of the random effects per patient: ``b_i = K_i Z_i'(y_i − X_iβ̂)``.

    Returns a table indexed by patient with ``intercept`` (and ``slope``) deviations.
    """
    codes, labels = pd.factorize(np.asarray(groups), sort=False)
    blk = build_blocks(np.asarray(y, float), np.asarray(X, float), codes, time)
    u = np.r_[-result.beta, 1.0]
    th = result.theta
    if blk.q == 1:
        m = 1.0 + th[0] ** 2 * blk.s[:, 0]
        b = (th[0] ** 2 / m) * (blk.b0 @ u)
        return pd.DataFrame({"intercept": b}, index=pd.Index(labels, name="patient_id"))
    a, bb, c = th
    lam = np.array([[a, 0.0], [bb, c]])
    s = np.stack([np.stack([blk.s[:, 0], blk.s[:, 1]], -1), np.stack([blk.s[:, 1], blk.s[:, 2]], -1)], -2)
    m = np.eye(2) + lam.T @ s @ lam
    g = np.stack([blk.b0 @ u, blk.b1 @ u], -1)[..., None]
    b = (lam @ np.linalg.solve(m, lam.T @ g))[..., 0]
    return pd.DataFrame({"intercept": b[:, 0], "slope": b[:, 1]}, index=pd.Index(labels, name="patient_id"))
