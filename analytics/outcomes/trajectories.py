"""Depression and abstinence trajectories: mixed models, response/remission, durability, GEE.

Everything here takes a :class:`~analytics.outcomes.cohort.Cohort` and returns a frozen result around tidy tables.

* :func:`fit_trajectory` — linear mixed model ``measure ~ time (* group) (+ covariates) + (1 + weeks | patient)``
  by REML (or ML), with the fast exact engine of :mod:`analytics.engines.lmm` (checked against lme4) or statsmodels
  ``MixedLM``. A singular (boundary) or non-converged random-slope fit is weighed by likelihood against the simpler
  random-effect structures (uncorrelated, slope only, intercept only): the lowest AIC is reported, the boundary fit
  included (as lme4 reports it), and the notes say what was done. ``time="auto"`` chooses the time shape on the data.
* :func:`phq9_model` — THE PHQ-9 model of ``kap-outcomes analyze``, the meeting pack and the trajectories page.
* :func:`predicted_means` — model-based mean trajectory with a confidence band, per group;
  :func:`observed_means` — observed means with 95 % CIs per group and time bin, to draw beside it.
* :func:`compare_time_shapes` — linear vs piecewise (bend at 4 weeks) vs natural spline, by ML (AIC, LR test).
* :func:`response_remission` / :func:`band_transitions` — PHQ-9 response (≥ 50 % below baseline) and remission
  (< 5) at fixed weeks with Wilson CIs, among patients with baseline PHQ-9 ≥ ``settings.phq9_min_baseline``
  (:mod:`analytics.outcomes.response`: one definition for every output); baseline band → latest band.
* :func:`response_durability` — Kaplan–Meier time from first response to loss of response (two consecutive scores
  above half the baseline, or a rise of ≥ 5 points from the response score), by maintenance ketamine sessions,
  plus a Cox model with maintenance as a time-varying covariate.
* :func:`abstinence_gee` — repeated binary abstinence by GEE (binomial, exchangeable): population-average odds.
* :func:`trajectories_json` — the ``trajectories`` section of ``kap-outcomes analyze`` (../shared/cli.md).

Time is ``weeks`` = days since the first ketamine session / 7; every score on or after the start of the baseline
window is used (``cohort.measures`` is already so filtered), so baseline scores enter at weeks ≤ 0.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import pandas as pd

from analytics.engines import gee, lmm
from analytics.engines.intervals import chi2_sf, norm_two_sided_p, wilson_ci, z_crit
from analytics.engines.survival import cox_ph
from analytics.errors import InsufficientData, ModelDidNotConverge, OutcomesError
from analytics.outcomes import response as rsp
from analytics.outcomes.cohort import PHQ9_BANDS, Cohort, ids_in
from analytics.outcomes.memo import once, per_cohort
from analytics.privacy.counts import note_n, note_of
from schemas.arrow import text_map

TimeShape = Literal["linear", "piecewise", "spline"]
TimeChoice = Literal["auto", "linear", "piecewise", "spline"]
TIME_SHAPES: tuple[TimeShape, ...] = ("linear", "piecewise", "spline")
TIME_CHOICES: tuple[TimeChoice, ...] = ("auto", "linear", "piecewise", "spline")
Engine = Literal["fast", "statsmodels"]
RandomStructure = Literal["correlated", "uncorrelated", "slope", "intercept"]
RANDOM_TERMS: dict[str, str] = {"correlated": "(1 + weeks | patient_id)", "uncorrelated": "(1 + weeks || patient_id)",
                                "slope": "(0 + weeks | patient_id)", "intercept": "(1 | patient_id)"}
RANDOM_NAMES: dict[str, str] = {"correlated": "correlated random intercept and slope",
                                "uncorrelated": "uncorrelated random intercept and slope",
                                "slope": "random slope only", "intercept": "random intercept only"}
N_THETA: dict[str, int] = {"correlated": 3, "uncorrelated": 2, "slope": 1, "intercept": 1}

MEASURES = ("phq9", "gad7", "craving", "pda")
MEASURE_NAMES = {"phq9": "PHQ-9", "gad7": "GAD-7", "craving": "craving", "pda": "percent days abstinent"}
AXIS_TITLES = {"phq9": "PHQ-9 total (0–27)", "gad7": "GAD-7 total (0–21)", "craving": "Craving (0–10 scale)",
               "pda": "Days abstinent (% of assessment window)"}
MIN_PATIENTS = 10          # patients with ≥ 2 scores, overall and per group
RESPONSE_FRACTION = rsp.RESPONSE_FRACTION  # response: score ≤ 50 % of baseline
REMISSION_BELOW = rsp.REMISSION_BELOW      # remission: PHQ-9 < 5
ALL = "all patients"


def _shape_words(shape: str, knot_weeks: float = 4.0) -> str:
    return {"linear": "a straight line", "piecewise": f"a bend at week {knot_weeks:g}",
            "spline": "a natural spline"}.get(shape, shape)


# --------------------------------------------------------------------------------------------- design
@dataclass(frozen=True)
class TimeBasis:
    """Fixed-effect columns for time: ``linear`` (weeks), ``piecewise`` (weeks and the extra slope after
    ``knot_weeks``) or ``spline`` (natural cubic spline; ``knots`` = boundary and interior knots in weeks)."""

    shape: TimeShape = "linear"
    knot_weeks: float = 4.0
    knots: tuple[float, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        if self.shape == "linear":
            return ("weeks",)
        if self.shape == "piecewise":
            return ("weeks", f"weeks_after_{self.knot_weeks:g}")
        return tuple(f"ns(weeks){j + 1}" for j in range(len(self.knots) - 1))

    @property
    def formula(self) -> str:
        if self.shape == "linear":
            return "weeks"
        if self.shape == "piecewise":
            return f"weeks + weeks_after_{self.knot_weeks:g}"
        return f"ns(weeks, df = {len(self.knots) - 1})"

    def __call__(self, weeks: np.ndarray) -> np.ndarray:
        w = np.asarray(weeks, dtype=float)
        if self.shape == "linear":
            return w[:, None]
        if self.shape == "piecewise":
            return np.column_stack([w, np.maximum(w - self.knot_weeks, 0.0)])
        return natural_spline_basis(w, self.knots)


def natural_spline_basis(x: np.ndarray, knots: tuple[float, ...]) -> np.ndarray:
    """Natural cubic spline basis without the constant (``len(knots) − 1`` columns).

    ``knots`` are sorted, first and last being the boundary knots. The truncated-power construction of
    Hastie, Tibshirani & Friedman (ESL 2nd ed., eqs 5.4–5.5) on ``x`` rescaled to the boundary range: it spans the
    same space as R's ``splines::ns(x, knots = interior, Boundary.knots = boundary)`` (linear beyond the
    boundary knots), so fitted values and likelihoods agree with R's although the coefficients differ.
    """
    k = np.asarray(knots, dtype=float)
    lo, hi = k[0], k[-1]
    u = (np.asarray(x, dtype=float) - lo) / (hi - lo)
    kap = (k - lo) / (hi - lo)

    def d(j: int) -> np.ndarray:
        return (np.maximum(u - kap[j], 0.0) ** 3 - np.maximum(u - kap[-1], 0.0) ** 3) / (kap[-1] - kap[j])

    cols = [u]
    last = d(len(kap) - 2)
    cols += [d(j) - last for j in range(len(kap) - 2)]
    return np.column_stack(cols)


Labels = np.ndarray | pd.Categorical  # text labels, one per row (a Categorical skips re-coding the text)


def _codes(values: Labels) -> tuple[np.ndarray, list[str]]:
    """Integer codes and text labels of ``values`` (hash-based; a :class:`pandas.Categorical` is used as is)."""
    if isinstance(values, pd.Categorical):
        return np.asarray(values.codes, dtype=np.int64), [str(c) for c in values.categories]
    codes, uniques = pd.factorize(pd.Series(values).astype(str))
    return codes, [str(u) for u in uniques]


def _dummies(values: Labels, levels: tuple[str, ...]) -> np.ndarray:
    """Indicator columns of ``levels`` (treatment coding), via integer codes (fast on text)."""
    codes, labels = _codes(values)
    pos = {lab: i for i, lab in enumerate(labels)}
    out = np.zeros((len(values), len(levels)))
    for j, lv in enumerate(levels):
        if lv in pos:
            out[:, j] = codes == pos[lv]
    return out


@dataclass(frozen=True)
class Covariate:
    """A baseline covariate: numeric (centred at its cohort mean) or categorical (treatment-coded)."""

    name: str
    kind: Literal["numeric", "categorical"]
    center: float = 0.0
    reference: str | None = None
    levels: tuple[str, ...] = ()          # non-reference levels
    level_means: tuple[float, ...] = ()   # share of patients at each non-reference level
    by_time: bool = False                 # also covariate × each time term (the covariate changes the slope)

    @property
    def names(self) -> tuple[str, ...]:
        if self.kind == "numeric":
            return (self.name,)
        return tuple(f"{self.name}[T.{lv}]" for lv in self.levels)

    def all_names(self, time_names: tuple[str, ...]) -> tuple[str, ...]:
        """Its main-effect names, then (``by_time``) ``time:name`` for each of them and each time term."""
        if not self.by_time:
            return self.names
        return (*self.names, *(f"{t}:{n}" for n in self.names for t in time_names))

    def with_time(self, cols: np.ndarray, tb: np.ndarray) -> np.ndarray:
        """Its columns, then (``by_time``) each column times each time term (the order of :meth:`all_names`)."""
        if not self.by_time:
            return cols
        return np.column_stack([cols, *(tb * cols[:, [j]] for j in range(cols.shape[1]))])

    def columns(self, values: pd.Series) -> np.ndarray:
        if self.kind == "numeric":
            return (values.astype(float).to_numpy() - self.center)[:, None]
        return _dummies(values.astype("string").to_numpy(), self.levels)

    def mean_row(self) -> np.ndarray:
        return np.zeros(1) if self.kind == "numeric" else np.asarray(self.level_means, dtype=float)


@dataclass(frozen=True)
class Design:
    """How the fixed-effects matrix is built (kept on the fit so predictions use the same coding)."""

    measure: str
    time: TimeBasis
    by: str | None = None
    reference: str | None = None
    levels: tuple[str, ...] = ()           # non-reference group levels
    covariates: tuple[Covariate, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        out = ["Intercept", *self.time.names]
        out += [f"{self.by}[T.{lv}]" for lv in self.levels]
        out += [f"{t}:{self.by}[T.{lv}]" for lv in self.levels for t in self.time.names]
        for cov in self.covariates:
            out += cov.all_names(self.time.names)
        return tuple(out)

    @property
    def groups(self) -> tuple[str, ...]:
        return (self.reference, *self.levels) if self.by else (ALL,)  # type: ignore[return-value]

    def formula(self, random: bool | str) -> str:
        """lme4-style formula; ``random``: a :data:`RandomStructure` (True: correlated, False: intercept)."""
        t = self.time.formula
        rhs = t
        if self.by:
            rhs = f"{t} * {self.by}" if self.time.shape != "piecewise" else f"({t}) * {self.by}"
        for cov in self.covariates:
            rhs += f" + {cov.name}" if not cov.by_time else f" + {cov.name} * ({t})"
        structure = random if isinstance(random, str) else ("correlated" if random else "intercept")
        return f"{self.measure} ~ {rhs} + {RANDOM_TERMS[structure]}"

    def matrix(self, weeks: np.ndarray, group: np.ndarray | None, covs: pd.DataFrame | None) -> np.ndarray:
        n = len(weeks)
        tb = self.time(weeks)
        parts = [np.ones((n, 1)), tb]
        if self.by:
            dummies = _dummies(np.asarray(group), self.levels)
            parts.append(dummies)
            parts += [tb * dummies[:, [j]] for j in range(dummies.shape[1])]
        for cov in self.covariates:
            parts.append(cov.with_time(cov.columns(covs[cov.name]), tb))  # type: ignore[index]
        return np.column_stack(parts)

    def patient_features(self, n_patients: int, group: Labels | None, covs: pd.DataFrame | None,
                         extra: list[tuple[np.ndarray, int]] | None = None) -> tuple[np.ndarray, list[int], list[int]]:
        """The design in factored form for :func:`analytics.engines.lmm.factored_blocks`: patient-level features ``W``
        (group indicators, then covariate columns; one row per patient) and, per column of :meth:`matrix`, the
        feature that multiplies it (``-1``: none) and its basis column (``0``: the constant, ``1 …``: time terms).
        ``matrix(weeks, group[codes], covs.iloc[codes])`` equals ``W[codes, feature] · [1, time(weeks)][:, column]``.

        ``extra`` (a list, filled in): numeric covariates with a slope (``by_time``) then go into the basis instead of
        ``W`` -- their patient values differ from patient to patient, so in ``W`` every patient would be a pattern
        of its own and the engine's per-pattern evaluation (:class:`analytics.engines.lmm.Blocks` ``factored``) would
        be lost. Each appended ``(values, tcol)`` is a basis column ``values[patient] · [1, time(weeks)][:, tcol]``
        after ``[1, time(weeks)]`` (see :meth:`basis`).
        """
        n_time = len(self.time.names)
        parts: list[np.ndarray] = []
        feature = [-1] * (1 + n_time)
        column = list(range(1 + n_time))
        if self.by:
            dummies = _dummies(group, self.levels)  # type: ignore[arg-type]
            parts.append(dummies)
            n_lv = dummies.shape[1]
            feature += list(range(n_lv))
            column += [0] * n_lv
            for j in range(n_lv):
                feature += [j] * n_time
                column += list(range(1, 1 + n_time))
        for cov in self.covariates:
            cols = cov.columns(covs[cov.name])  # type: ignore[index]
            if extra is not None and cov.kind == "numeric" and cov.by_time:
                # into the basis: x and x · each time term, no patient factor
                for tcol in range(1 + n_time):
                    feature.append(-1)
                    column.append(1 + n_time + len(extra))
                    extra.append((cols[:, 0], tcol))
                continue
            start = sum(x.shape[1] for x in parts)
            parts.append(cols)
            feature += list(range(start, start + cols.shape[1]))
            column += [0] * cols.shape[1]
            if cov.by_time:
                for j in range(cols.shape[1]):
                    feature += [start + j] * n_time
                    column += list(range(1, 1 + n_time))
        w = np.column_stack(parts) if parts else np.empty((n_patients, 0))
        return w, feature, column

    def basis(self, weeks: np.ndarray, codes: np.ndarray | None = None,
              extra: list[tuple[np.ndarray, int]] | None = None) -> np.ndarray:
        """Observation-level basis ``[1, time(weeks)]`` of :meth:`patient_features`, then its ``extra`` columns for
        observations of the patients ``codes`` (rows of the ``extra`` values; ``-1``: none, 0 there)."""
        base = np.column_stack([np.ones(len(weeks)), self.time(weeks)])
        if not extra:
            return base
        ok = codes >= 0  # type: ignore[operator]
        at = np.where(ok, codes, 0)  # type: ignore[call-overload]
        cols = [np.where(ok, values[at], 0.0) * base[:, tcol] for values, tcol in extra]
        return np.column_stack([base, *cols])

    def mean_rows(self, weeks: np.ndarray, group: str) -> np.ndarray:
        """Design rows for the population mean at ``weeks`` in ``group`` (covariates at cohort means)."""
        n = len(weeks)
        tb = self.time(weeks)
        parts = [np.ones((n, 1)), tb]
        if self.by:
            dummies = np.array([[float(group == lv) for lv in self.levels]]).repeat(n, 0)
            parts.append(dummies)
            parts += [tb * dummies[:, [j]] for j in range(dummies.shape[1])]
        for cov in self.covariates:
            parts.append(cov.with_time(np.tile(cov.mean_row(), (n, 1)), tb))
        return np.column_stack(parts)


# --------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class TrajectoryFit:
    """A fitted trajectory model.

    Attributes
    ----------
    fixed:
        One row per fixed-effect term: ``term``, ``estimate``, ``se``, ``ci_low``, ``ci_high``, ``p`` (Wald,
        normal reference distribution).
    random:
        ``sd_intercept``, ``sd_slope`` (per week), ``corr``, ``sd_residual``: the reported model's values (0 where
        its structure holds a term at 0: ``corr`` of the uncorrelated structure, ``sd_intercept`` of slope only);
        None where the model has no such term (``corr`` when an SD is 0).
    random_slope:
        Whether the reported model has a random slope (False when the random-intercept model is reported).
    random_structure:
        ``correlated`` ``(1 + weeks | patient_id)``, ``uncorrelated`` ``(1 + weeks || patient_id)``, ``slope``
        ``(0 + weeks | patient_id)`` or ``intercept`` ``(1 | patient_id)``.
    structures:
        When the random-slope fit was singular or did not converge: the structures weighed (``structure``,
        ``formula``, ``n_theta``, ``criterion`` (REML criterion or −2 log-likelihood), ``aic``, ``converged``,
        ``singular``, ``chosen``); else None.
    time_comparison:
        With ``time="auto"``: the ML comparison of the time shapes that chose the reported one; else None.
    converged, singular:
        Optimiser convergence (lme4's scaled-gradient check); boundary fit of the reported model.
    formula, method:
        lme4-style formula of the reported model; ``"REML"`` or ``"ML"``.
    loglik, aic, bic, deviance:
        Of the reported model (REML criterion for REML fits, as lme4 reports).
    cov_params:
        Covariance matrix of the fixed effects (term × term).
    """

    measure: str
    formula: str
    method: str
    fixed: pd.DataFrame
    random: dict[str, float | None]
    random_slope: bool
    n_patients: int
    n_obs: int
    converged: bool
    singular: bool
    loglik: float
    aic: float
    bic: float
    deviance: float
    cov_params: pd.DataFrame
    design: Design = field(repr=False)
    engine: str = "fast"
    conf_level: float = 0.95
    n_per_group: dict[str, int] = field(default_factory=dict)
    weeks_range: tuple[float, float] = (0.0, 0.0)
    notes: tuple[str, ...] = ()
    random_structure: str = "correlated"
    structures: pd.DataFrame | None = field(default=None, repr=False)
    time_comparison: ModelComparison | None = field(default=None, repr=False)
    # lme4's theta of the fast engine's fit (None for statsmodels): a warm start for a closely related model
    theta: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def time(self) -> str:
        return self.design.time.shape

    @property
    def by(self) -> str | None:
        return self.design.by


@dataclass(frozen=True)
class PredictedMeans:
    """Model-based mean trajectory: ``group``, ``weeks``, ``estimate``, ``se``, ``ci_low``, ``ci_high``."""

    table: pd.DataFrame
    measure: str
    conf_level: float
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ObservedMeans:
    """Observed means per group and time bin, to draw beside the model line (a misfit shows as points off it).

    ``table``: ``group``, ``bin`` (label, e.g. ``"4–6"``), ``weeks`` (mean time of the scores in the bin),
    ``n_patients``, ``n_scores``, ``estimate`` (mean over patients of each patient's mean score in the bin),
    ``ci_low``, ``ci_high`` (t interval over patients; NaN with fewer than 2 patients).
    """

    table: pd.DataFrame
    measure: str
    conf_level: float
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelComparison:
    """Time shapes compared by ML: ``time``, ``formula``, ``n_params``, ``loglik``, ``aic``, ``bic``,
    ``lr_chisq``, ``df``, ``p`` (likelihood-ratio test against the linear model), ``converged``."""

    table: pd.DataFrame
    best: str
    notes: tuple[str, ...] = ()
    # each shape's ML fit (the REML refit of the best one starts from its estimates)
    fits: dict[str, TrajectoryFit] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class ResponseRemission:
    """PHQ-9 response and remission at fixed weeks.

    ``table``: ``group``, ``weeks``, ``outcome`` (``response``/``remission``), ``n`` (denominator: baseline and a
    score in the window), ``n_event``, ``estimate``, ``ci_low``, ``ci_high`` (Wilson).
    """

    table: pd.DataFrame
    window_days: int
    conf_level: float
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class BandTransitions:
    """Baseline PHQ-9 band → latest band. ``table``: ``group``, ``baseline_band``, ``latest_band``, ``n`` (every
    pair, zeros included); ``summary``: ``group``, ``improved``, ``unchanged``, ``worsened``, ``n``."""

    table: pd.DataFrame
    summary: pd.DataFrame
    notes: tuple[str, ...] = ()

    def matrix(self, group: str | None = None) -> pd.DataFrame:
        """Counts as a baseline × latest matrix (rows baseline band, columns latest band)."""
        t = self.table if group is None else self.table[self.table["group"] == group]
        order = [b[2] for b in PHQ9_BANDS]
        m = t.pivot_table(index="baseline_band", columns="latest_band", values="n", aggfunc="sum", observed=False)
        return m.reindex(index=order, columns=order).fillna(0).astype(int)


@dataclass(frozen=True)
class ResponseDurability:
    """Time from first PHQ-9 response to loss of response (Kaplan–Meier).

    Attributes
    ----------
    curves:
        ``group``, ``day`` (days since first response), ``estimate`` (still in response), ``ci_low``, ``ci_high``,
        ``n_risk``, ``n_event``, ``n_censor``. Groups: all responders, with and without maintenance sessions.
    milestones:
        ``group``, ``weeks``, ``estimate``, ``ci_low``, ``ci_high``, ``n_risk``: sustained response at 4 and 8 weeks.
    responders:
        One row per responder: ``patient_id``, ``baseline_phq9``, ``response_day``, ``response_score``,
        ``days_in_response``, ``lost_response`` (True = loss observed), ``maintenance`` (a ketamine session after response and after
        induction, before loss or censoring), ``first_maintenance_day`` (days since response).
    maintenance_hr:
        Cox hazard ratio of losing response after vs before a first maintenance session (time-varying covariate):
        ``hr``, ``ci_low``, ``ci_high``, ``p``, ``n_events``; None when not estimable.
    """

    curves: pd.DataFrame
    milestones: pd.DataFrame
    responders: pd.DataFrame
    maintenance_hr: dict[str, float] | None
    conf_level: float
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class AbstinenceGEE:
    """Population-average odds of a fully abstinent assessment window (GEE, binomial, exchangeable).

    ``table``: ``term``, ``estimate`` (log-odds), ``se`` (robust), ``odds_ratio``, ``ci_low``, ``ci_high`` (odds
    ratio scale), ``p``. ``predicted``: ``group``, ``weeks``, ``estimate``, ``ci_low``, ``ci_high`` (probability).
    """

    table: pd.DataFrame
    predicted: pd.DataFrame
    working_correlation: float
    n_patients: int
    n_obs: int
    formula: str
    conf_level: float
    notes: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------- helpers


def _label(measure: str) -> str:
    return MEASURE_NAMES.get(measure, measure)


def measure_frame(cohort: Cohort, measure: str) -> pd.DataFrame:
    """Scores of one measure: ``patient_id``, ``days``, ``weeks``, ``value`` (PDA in percent)."""
    if measure not in MEASURES:
        raise InsufficientData(f"Unknown measure '{measure}'; choose one of {', '.join(MEASURES)}.")

    def compute() -> pd.DataFrame:
        m = cohort.measures
        d = m.loc[(m["measure"] == measure) & m["value"].notna(), ["patient_id", "days", "weeks", "value"]].copy()
        d["value"] = d["value"].astype(float) * (100.0 if measure == "pda" else 1.0)
        d["weeks"] = d["weeks"].astype(float)
        return d.reset_index(drop=True)

    # a new frame on the same data (copy-on-write): callers add columns to theirs, never to the kept one
    return once(cohort, ("measure frame", measure), compute).copy(deep=False)


@dataclass(frozen=True, eq=False)
class PreparedScores:
    """One measure's scores, reduced once for several :func:`fit_trajectory` calls on the same cohort.

    Fitting many models to the same scores (one per subgrouping variable in :mod:`analytics.outcomes.subgroups`) then reads
    the long table and forms the per-patient sums of the time basis only once. Build with :func:`prepare_scores`
    from the cohort that is also passed to :func:`fit_trajectory`.

    Attributes
    ----------
    measure:
        The measure (``phq9``, ``gad7``, ``craving``, ``pda``).
    patient_id:
        Patients with at least one score, in order of their first score.
    codes:
        For each score, the position of its patient in ``patient_id``.
    weeks, value:
        Time (weeks since the first ketamine session) and value of each score (PDA in percent).
    n_scores:
        Scores per patient.
    """

    measure: str
    patient_id: pd.Index
    codes: np.ndarray
    weeks: np.ndarray
    value: np.ndarray
    n_scores: np.ndarray
    _moments: dict = field(default_factory=dict, repr=False, compare=False)

    def moments(self, time: TimeBasis) -> lmm.Moments:
        """Per-patient sums of ``[1, time(weeks), value]`` with a random slope on weeks (computed once per basis;
        the sums of columns and products that time bases share, e.g. the weeks in the linear and piecewise ones,
        are computed once for all: :class:`analytics.engines.lmm.PatientSums`)."""
        if time not in self._moments:
            if "sums" not in self._moments:
                self._moments["sums"] = lmm.PatientSums(self.codes)
            sums: lmm.PatientSums = self._moments["sums"]
            h = time(self.weeks)
            keys = ["weeks" if time.shape != "spline" and j == 0 else (time.shape, time.knot_weeks, time.knots, j)
                    for j in range(h.shape[1])]
            columns = {"1": np.ones(len(self.weeks)), "weeks": self.weeks, "value": self.value,
                       **{k: h[:, j] for j, k in enumerate(keys)}}
            self._moments[time] = sums.moments(columns, ["1", *keys], "value", "weeks")
        return self._moments[time]

    def keep_moments_of(self, shape: str) -> None:
        """Forget the per-patient sums and the moments of every time shape but ``shape``; asked for again, they are
        computed again, the same bit for bit. After the time shapes are compared only the chosen one is refitted:
        at a million patients this frees about 0.4 GB (the sums and two shapes' moments) before that refit."""
        for key in [k for k in self._moments if not (isinstance(k, TimeBasis) and k.shape == shape)]:
            del self._moments[key]


def prepare_scores(cohort: Cohort, measure: str = "phq9") -> PreparedScores:
    """The scores of ``measure`` in ``cohort``, ready for repeated :func:`fit_trajectory` calls (``prepared=``)."""
    d = measure_frame(cohort, measure)
    if d["patient_id"].hasnans:
        d = d[d["patient_id"].notna()]
    codes, uniques = pd.factorize(d["patient_id"])
    codes = codes.astype(np.int64)
    return PreparedScores(measure=measure, patient_id=pd.Index(uniques, name="patient_id"), codes=codes,
                          weeks=d["weeks"].to_numpy(dtype=float), value=d["value"].to_numpy(dtype=float),
                          n_scores=np.bincount(codes, minlength=len(uniques)))


def _check_enough(n_scores: np.ndarray, group: Labels | None, measure: str, by: str | None) -> None:
    """At least 2 scores for ``MIN_PATIENTS`` patients (per group with ``by``); one entry per patient."""
    ok = n_scores >= 2
    if by is None or group is None:
        if ok.sum() < MIN_PATIENTS:
            raise InsufficientData(
                f"{_label(measure)} trajectories need at least 2 scores for {MIN_PATIENTS} patients "
                f"(got {note_n(ok.sum())}). Widen the date range or add follow-up scores.")
        return
    codes, labels = _codes(group)
    with_two = np.bincount(codes, weights=ok, minlength=len(labels))
    for g, got in sorted(zip(labels, with_two.astype(int).tolist()), key=lambda x: str(x[0])):
        if got < MIN_PATIENTS:
            raise InsufficientData(
                f"{_label(measure)} trajectories need at least 2 scores for {MIN_PATIENTS} patients per group "
                f"(got {note_n(got)} in '{g}'). Widen the date range or merge groups.")


def _covariate_specs(patients: pd.DataFrame, adjust: tuple[str, ...],
                     by_time: bool = False) -> tuple[Covariate, ...]:
    specs = []
    for name in adjust:
        col = patients[name]
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            specs.append(Covariate(name, "numeric", center=float(col.astype(float).mean()), by_time=by_time))
        else:
            v = col.astype("string")
            counts = v.value_counts()
            ordered = sorted(counts.index, key=lambda lv: (-counts[lv], str(lv)))
            ref, rest = ordered[0], tuple(ordered[1:])
            means = tuple(float((v == lv).mean()) for lv in rest)
            specs.append(Covariate(name, "categorical", reference=str(ref), levels=tuple(map(str, rest)),
                                   level_means=means, by_time=by_time))
    return tuple(specs)


def _patients(cohort: Cohort, prepared: PreparedScores, by: str | None,
              adjust: tuple[str, ...]) -> tuple[np.ndarray, pd.DataFrame, pd.Categorical | None, list[str]]:
    """Patients with scores and complete ``by``/``adjust`` values: their positions in ``prepared.patient_id``,
    their columns (``patient_id`` and ``by``/``adjust``, one row each), their group labels (text) and notes.
    Patients missing any of those values are dropped (and counted). A patient table listing exactly the
    prepared patients, in their order, is matched without a lookup."""
    notes: list[str] = []
    cols = [c for c in (by, *adjust) if c is not None]
    missing_cols = [c for c in cols if c not in cohort.patients.columns]
    if missing_cols:
        raise InsufficientData(f"'{missing_cols[0]}' is not a patient column; choose one of "
                               f"{', '.join(map(str, cohort.patients.columns))}.")
    n = len(prepared.patient_id)
    if not cols:
        return np.arange(n), prepared.patient_id.to_frame(index=False), None, notes
    patients = cohort.patients
    index = pd.Index(patients["patient_id"])
    if len(index) == n and index.equals(prepared.patient_id):
        rows = np.arange(n)
    else:
        if not index.is_unique:
            patients = patients.drop_duplicates("patient_id")
            index = pd.Index(patients["patient_id"])
        rows = index.get_indexer(prepared.patient_id)
    pts = patients[cols].iloc[np.maximum(rows, 0)].reset_index(drop=True)
    complete = pts.notna().all(axis=1).to_numpy() & (rows >= 0)
    n_drop = int((~complete).sum())
    if n_drop:
        notes.append(f"{note_n(n_drop)} patients with scores were left out because {' or '.join(cols)} "
                     "is missing for them.")
    keep = np.flatnonzero(complete)
    pts = pts[complete].reset_index(drop=True)
    pts.insert(0, "patient_id", prepared.patient_id[keep])
    group = None
    if by is not None:
        codes, uniques = pd.factorize(pts[by].astype("string"))
        group = pd.Categorical.from_codes(codes, categories=pd.Index([str(u) for u in uniques], dtype=object))
    return keep, pts, group, notes


def _levels_of(group: Labels, reference: str | None, by: str) -> tuple[str, tuple[str, ...]]:
    """Reference level (default: the level with most patients) and the other levels, most patients first."""
    counts = _patients_per_group(group)
    ordered = sorted(counts, key=lambda lv: (-counts[lv], str(lv)))
    if reference is None:
        reference = ordered[0]
    elif reference not in counts:
        raise InsufficientData(f"Reference level '{reference}' does not occur in {by} (levels: "
                               f"{', '.join(ordered)}). Pick one of those.")
    return reference, tuple(lv for lv in ordered if lv != reference)


def _patients_per_group(group: Labels) -> dict[str, int]:
    """Patients per group label (hash-based: sorting text labels is slow)."""
    codes, labels = _codes(group)
    return {lv: int(n) for lv, n in zip(labels, np.bincount(codes, minlength=len(labels)))}


def _group_levels(d: pd.DataFrame, reference: str | None, by: str) -> tuple[str, tuple[str, ...]]:
    """:func:`_levels_of` for a long table with ``patient_id`` and ``_group``."""
    return _levels_of(d.drop_duplicates("patient_id")["_group"].to_numpy(), reference, by)


def _full_rank(X: np.ndarray) -> bool:
    """Columns linearly independent? Eigenvalues of the scaled cross-product (cheap for tall X)."""
    return _full_rank_xtx(X.T @ X)


def _full_rank_xtx(xtx: np.ndarray) -> bool:
    """:func:`_full_rank` from the cross-product ``X'X``."""
    d = np.sqrt(np.diag(xtx))
    if np.any(d == 0):
        return False
    ev = np.linalg.eigvalsh(xtx / np.outer(d, d))
    return bool(ev.min() > 1e-10 * ev.max())


class _ModelData:
    """The analysed scores of one model in the two forms the engines need: factored per-patient sums (fast
    engine, :func:`analytics.engines.lmm.factored_blocks`) and, on demand, the long arrays (statsmodels)."""

    def __init__(self, prepared: PreparedScores, keep: np.ndarray, design: Design, w: np.ndarray,
                 feature: list[int], column: list[int], extra: list[tuple[np.ndarray, int]] | None = None) -> None:
        self.prepared, self.keep, self.design = prepared, keep, design
        self.w, self.feature, self.column = w, feature, column
        self.extra = extra or []
        self.moments = prepared.moments(design.time)
        if self.extra:  # numeric covariates with a slope in the basis: their sums from the shared ones
            self.moments = _scaled_moments(self.moments, keep, self.extra)
        self._blocks: dict[bool, lmm.Blocks] = {}

    def blocks(self, random_slope: bool) -> lmm.Blocks:
        if random_slope not in self._blocks:
            mom = self.moments if random_slope else self.moments.intercept_only()
            self._blocks[random_slope] = lmm.factored_blocks(mom, self.w, self.feature, self.column, rows=self.keep)
        return self._blocks[random_slope]

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``y``, ``X``, patient codes ``0 … N−1`` and weeks of the analysed scores, in the long table's order."""
        pr = self.prepared
        position = np.full(len(pr.patient_id), -1, dtype=np.int64)
        position[self.keep] = np.arange(len(self.keep))
        codes = position[pr.codes]
        obs = codes >= 0
        codes, weeks = codes[obs], pr.weeks[obs]
        w_ext = np.column_stack([self.w, np.ones(len(self.w))])
        X = w_ext[codes][:, self.feature] * self.design.basis(weeks, codes, self.extra)[:, self.column]
        return pr.value[obs], X, codes, weeks


def _scaled_moments(mom: lmm.Moments, keep: np.ndarray, extra: list[tuple[np.ndarray, int]]) -> lmm.Moments:
    """The per-patient sums of the basis ``[1, time, extra …]`` (:meth:`Design.basis`) from those of ``[1, time]``.

    An extra column is a patient's value ``x_i`` times a basis column, so its sums are ``x_i`` times that column's
    (and ``x_i x'_i`` times for products of two): no pass over the scores (patients outside ``keep``: 0)."""
    n, r0 = len(mom.s), mom.r
    mult = [np.ones(n)] * r0
    cols = list(range(r0))
    for values, tcol in extra:
        full = np.zeros(n)
        full[keep] = values
        mult.append(full)
        cols.append(tcol)
    mult.append(np.ones(n))  # the response
    cols.append(r0)
    m = np.column_stack(mult)
    c = np.asarray(cols)
    tu = m * mom.tu[:, c] if mom.tu.shape[1] else mom.tu
    return lmm.Moments(s=mom.s, su=m * mom.su[:, c], tu=tu, uu=m[:, :, None] * mom.uu[:, c][:, :, c] * m[:, None, :])


def _statsmodels_fit(y: np.ndarray, X: np.ndarray, groups: np.ndarray, weeks: np.ndarray, random_slope: bool,
                     reml: bool, names: tuple[str, ...]) -> tuple[lmm.LMMResult, list[str]]:
    """statsmodels MixedLM with the same design, returned in the fast engine's result type."""
    from statsmodels.regression.mixed_linear_model import MixedLM

    z = np.column_stack([np.ones_like(weeks), weeks]) if random_slope else np.ones((len(weeks), 1))
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = MixedLM(y, X, groups=groups, exog_re=z)
        res = model.fit(reml=reml, method=["lbfgs", "bfgs", "nm"])
    for w in caught:
        notes.append(f"statsmodels: {str(w.message).strip()}")
    p, q = X.shape[1], z.shape[1]
    scale = float(res.scale)
    cov_re = np.asarray(res.cov_re, dtype=float)
    try:
        lam = np.linalg.cholesky(cov_re / scale)
        theta = np.array([lam[0, 0]]) if q == 1 else np.array([lam[0, 0], lam[1, 0], lam[1, 1]])
    except np.linalg.LinAlgError:
        theta = np.zeros(1 if q == 1 else 3)
    diag = [0] if q == 1 else [0, 2]
    singular = bool(np.any(theta[diag] < lmm.SINGULAR_TOL))
    llf = float(res.llf)
    dev = -2.0 * llf
    k = p + q * (q + 1) // 2 + 1
    n = len(y)
    cov_beta = np.asarray(res.cov_params())[:p, :p]
    result = lmm.LMMResult(
        names=names, beta=np.asarray(res.fe_params, dtype=float), cov_beta=cov_beta, theta=theta,
        sigma=math.sqrt(scale), cov_re=cov_re, deviance=dev, loglik=llf, aic=dev + 2 * k, bic=dev + k * math.log(n),
        reml=reml, n_obs=n, n_groups=int(pd.Series(groups).nunique()), converged=bool(res.converged),
        singular=singular, n_evaluations=0, scaled_gradient=math.nan, message="statsmodels MixedLM",
        notes=tuple(notes))
    return result, notes


def _fit_one(data: _ModelData, structure: str, reml: bool, names: tuple[str, ...], engine: Engine,
             start: np.ndarray | None = None) -> lmm.LMMResult:
    random_slope = structure != "intercept"
    if engine == "statsmodels":
        if structure not in ("correlated", "intercept"):
            raise ValueError(f"The statsmodels engine fits the correlated or intercept structure only, not {structure}.")
        y, X, codes, weeks = data.arrays()
        return _statsmodels_fit(y, X, codes, weeks, random_slope, reml, names)[0]
    blk = data.blocks(random_slope)
    if structure in ("uncorrelated", "slope"):
        return lmm.fit_structure(blk, structure, reml=reml, names=names)
    warm = start is not None and random_slope
    res = lmm.fit_blocks(blk, reml=reml, names=names, start=start if warm else None, warm=warm)
    if not res.converged and random_slope:  # a second start before giving up on the slope
        retry = lmm.fit_blocks(blk, reml=reml, names=names, start=np.array([0.5, 0.0, 0.01]))
        if retry.converged or retry.deviance < res.deviance:
            res = retry
    return res


def _boundary_text(res: lmm.LMMResult) -> str:
    """What sits on the boundary in a singular random-slope fit, in words."""
    a, b, c = (float(v) for v in res.theta)
    if a < lmm.SINGULAR_TOL:
        return "the between-patient SD of the starting level was estimated as 0"
    if c < lmm.SINGULAR_TOL and abs(b) >= lmm.SINGULAR_TOL:
        return (f"the correlation of starting level and slope was estimated as {'−1' if a * b < 0 else '+1'}, i.e. "
                "the slopes are a fixed multiple of the starting levels")
    return "the between-patient SD of the weekly slope was estimated as 0"


def _fit_random(data: _ModelData, *, reml: bool, names: tuple[str, ...], engine: Engine, measure: str,
                random_slope: bool = True, structure: str | None = None,
                start: np.ndarray | None = None) -> tuple[lmm.LMMResult, str, pd.DataFrame | None, list[str]]:
    """Fit the random part: the correlated random-slope model; when it is singular or does not converge, the
    simpler structures too, and the lowest AIC among the converged fits is reported (fixed effects are the same,
    so REML criteria are comparable; ties go to fewer parameters). The boundary fit stays a candidate, as lme4
    reports it. ``structure`` forces one structure (no choice); ``random_slope=False`` forces the intercept."""
    notes: list[str] = []
    label = _label(measure)
    crit = "REML criterion" if reml else "−2 log-likelihood"
    if structure is None and not random_slope:
        structure = "intercept"
    if structure is not None:
        res = _fit_one(data, structure, reml, names, engine, start)
        table = None
        chosen = structure
    else:
        res = _fit_one(data, "correlated", reml, names, engine, start)
        chosen, table = "correlated", None
        if res.singular or not res.converged:
            fits = {"correlated": res}
            others = ("uncorrelated", "slope", "intercept") if engine == "fast" else ("intercept",)
            for other in others:
                fits[other] = _fit_one(data, other, reml, names, engine)
            ok = {k: r for k, r in fits.items() if math.isfinite(r.deviance)}
            usable = {k: r for k, r in ok.items() if r.converged} or ok
            order = list(N_THETA)  # ties: fewer parameters first, then this order
            chosen = min(usable, key=lambda k: (round(usable[k].deviance + 2 * N_THETA[k], 9), N_THETA[k],
                                                order.index(k)))
            table = pd.DataFrame([{"structure": k, "formula": RANDOM_TERMS[k], "n_theta": N_THETA[k],
                                   "criterion": r.deviance, "aic": r.deviance + 2 * N_THETA[k],
                                   "converged": r.converged, "singular": r.singular, "chosen": k == chosen}
                                  for k, r in fits.items()])
            why = ("did not converge" if not res.converged else
                   f"was singular ({_boundary_text(res)}: a boundary fit, lme4's isSingular)")
            listing = "; ".join(f"{RANDOM_NAMES[k]} {r.deviance:.2f}" + ("" if r.converged else " (not converged)")
                                for k, r in fits.items())
            gap = fits[chosen].deviance - res.deviance
            if chosen == "correlated":
                notes.append(f"The model with a random slope per patient {why}. It is kept, as lme4 does: simpler "
                             f"random-effect structures fit clearly worse ({crit}: {listing}; lowest AIC kept). "
                             "Dropping the slope would make the standard errors of time effects too small.")
            elif chosen == "intercept":
                notes.append(f"The model with a random slope per patient {why}; by AIC the random-intercept model is "
                             f"reported instead ({crit}: {listing}): its criterion is {gap:+.2f} from the random-slope "
                             "model's, no evidence that patients' weekly changes differ.")
            else:
                notes.append(f"The model with a random slope per patient {why}; by AIC the {RANDOM_NAMES[chosen]} "
                             f"structure {RANDOM_TERMS[chosen]} is reported instead ({crit}: {listing}): it fits "
                             f"as well ({gap:+.2f}) with fewer parameters and keeps the patient-specific slopes.")
            res = fits[chosen]
    if chosen != "correlated" and chosen != "intercept" and res.singular:
        notes.append(f"The {RANDOM_NAMES[chosen]} fit is itself on the boundary (an SD estimated as 0).")
    if chosen == "intercept" and res.singular:
        notes.append(f"Between-patient differences in {label} level were estimated as zero; the "
                     "model reduces to ordinary least squares.")
    if not np.all(np.isfinite(res.beta)) or not math.isfinite(res.deviance):
        raise ModelDidNotConverge(
            f"The {label} trajectory model could not be fitted (the likelihood could not be evaluated). "
            "Check for patients with implausible scores or try fewer adjustment variables.")
    if not res.converged:
        notes.append(f"The {label} trajectory model did not converge; treat its numbers with caution.")
    notes.extend(res.notes)
    return res, chosen, table, notes


# --------------------------------------------------------------------------------------------- models
def fit_trajectory(cohort: Cohort, *, measure: str = "phq9", by: str | None = None, adjust: tuple[str, ...] = (),
                   time: TimeChoice = "linear", knot_weeks: float = 4.0, spline_df: int = 3,
                   reference: str | None = None, random_slope: bool = True, reml: bool = True,
                   engine: Engine = "fast", conf_level: float = 0.95, prepared: PreparedScores | None = None,
                   start: np.ndarray | None = None, random_structure: RandomStructure | None = None,
                   adjust_by_time: bool = False) -> TrajectoryFit:
    """Linear mixed model of one repeated measure over weeks since the first ketamine session.

    Parameters
    ----------
    cohort:
        The analysis cohort; scores come from ``cohort.measures``.
    measure:
        ``phq9``, ``gad7``, ``craving`` or ``pda`` (percent days abstinent, modelled in percent 0–100).
    by:
        A patient column (e.g. ``program``): adds the group and its interaction with every time term.
    adjust:
        Baseline patient columns to adjust for; numeric ones are centred at their mean, others treatment-coded
        against their most common level.
    adjust_by_time:
        Also each ``adjust`` column × each time term (``measure ~ time * by + cov * (time)``): the covariates may
        change the slope, so a group × time term is the slope difference adjusted for them.
    time:
        ``linear``; ``piecewise`` (extra slope after ``knot_weeks``: fast early change, then a plateau) or
        ``spline`` (natural cubic spline with ``spline_df`` degrees of freedom, knots at quantiles of weeks);
        ``auto``: the shape with the lowest AIC in :func:`compare_time_shapes` (ML fits), refitted by ``reml``.
    reference:
        Reference level of ``by`` (default: the level with most patients).
    random_slope:
        Random intercept and slope on weeks per patient (default; when that fit is singular or does not converge,
        the structure is chosen by AIC, see Notes), else a random intercept only.
    random_structure:
        Force one random-effect structure (``correlated``, ``uncorrelated``, ``slope``, ``intercept``), no choice.
    reml:
        REML (default) or ML (needed to compare models with different fixed effects).
    engine:
        ``fast`` (exact vectorised (RE)ML, :mod:`analytics.engines.lmm`) or ``statsmodels`` (``MixedLM``; slow, reference).
    conf_level:
        Level of the Wald confidence intervals.
    prepared:
        The cohort's scores of ``measure`` from :func:`prepare_scores`, when several models are fitted to the same
        cohort (saves re-reading the long table; the result is the same).
    start:
        Covariance parameters of a closely related random-slope model (lme4's ``theta``, e.g.
        :attr:`analytics.engines.lmm.LMMResult.theta` of the same model with fewer fixed effects): the fast engine then
        first tries Newton steps from them (``analytics.engines.lmm.fit_blocks(warm=True)``). Default: method-of-moments
        start values. The optimum does not depend on it (to ~1e-10), only the number of evaluations.

    Returns
    -------
    TrajectoryFit
        ``fixed`` columns: ``term``, ``estimate``, ``se``, ``ci_low``, ``ci_high``, ``p``.

    Raises
    ------
    InsufficientData
        Fewer than 10 patients (per group, with ``by``) with at least 2 scores.

    Notes
    -----
    The model and criterion are lme4's (Bates et al. 2015, J Stat Softw 67(1)); standard errors are lme4's
    ``vcov`` (conditional on the variance estimates); p-values and intervals use the normal distribution (Wald),
    as statsmodels does. A singular (boundary) or non-converged random-slope fit is not simply dropped: the
    uncorrelated ``(1 + weeks || patient_id)``, slope-only ``(0 + weeks | patient_id)`` and random-intercept
    structures are fitted too and the lowest AIC among the converged fits is reported, the boundary fit included
    (lme4 reports boundary fits as they are; the fixed effects are the same, so the REML criteria are comparable).
    The notes say what was done, and ``structures`` holds the comparison.
    """
    z = z_crit(conf_level)
    adjust = tuple(adjust)
    own_scores = prepared is None  # no caller reuses them: what only the comparison needed can go after it
    if prepared is None:
        prepared = prepare_scores(cohort, measure)
    elif prepared.measure != measure:
        raise ValueError(f"prepared holds {prepared.measure} scores, not {measure}.")
    if time == "auto":
        comparison = compare_time_shapes(cohort, measure=measure, by=by, adjust=adjust, knot_weeks=knot_weeks,
                                         spline_df=spline_df, engine=engine, reference=reference,
                                         prepared=prepared)
        if own_scores:
            prepared.keep_moments_of(comparison.best)
        chosen_ml = comparison.fits.get(comparison.best)
        if (start is None and random_slope and random_structure is None and chosen_ml is not None
                and chosen_ml.random_structure == "correlated" and chosen_ml.theta is not None):
            # the REML estimates are close to the ML ones of the same model: Newton steps from there first
            # (the optimum is the same to ~1e-10 relative; about half the evaluations)
            start = chosen_ml.theta
        fit = fit_trajectory(cohort, measure=measure, by=by, adjust=adjust, time=comparison.best,  # type: ignore[arg-type]
                             knot_weeks=knot_weeks, spline_df=spline_df, reference=reference,
                             random_slope=random_slope, reml=reml, engine=engine, conf_level=conf_level,
                             prepared=prepared, start=start, random_structure=random_structure,
                             adjust_by_time=adjust_by_time)
        t = comparison.table.set_index("time")
        aics = ", ".join(f"{shape} {t.loc[shape, 'aic']:.1f}" for shape in t.index)
        note = (f"Time shape chosen on the data: {comparison.best} ({_shape_words(comparison.best, knot_weeks)}), the lowest "
                f"AIC of the shapes fitted by maximum likelihood ({aics}); reported refitted by "
                f"{'REML' if reml else 'ML'}.")
        return replace(fit, notes=(fit.notes[0], note, *fit.notes[1:], *comparison.notes[1:]),
                       time_comparison=comparison)
    keep, pts, group, notes = _patients(cohort, prepared, by, adjust)
    analysed = np.zeros(len(prepared.patient_id), dtype=bool)
    analysed[keep] = True
    obs = analysed[prepared.codes]
    weeks = prepared.weeks[obs]
    values = prepared.value[obs]
    if len(values) == 0:
        raise InsufficientData(f"No {_label(measure)} scores to analyse. Check that the exports contain them.")
    if np.all(values == values[0]):
        raise InsufficientData(f"Every {_label(measure)} score is the same ({values[0]:g}); a trajectory "
                               "cannot be estimated. Check the exports.")
    if by is not None:
        ref, levels = _levels_of(group, reference, by)  # type: ignore[arg-type]
    else:
        ref, levels = None, ()
    _check_enough(prepared.n_scores[keep], group, measure, by)
    basis = TimeBasis(time, knot_weeks=knot_weeks)
    if time == "spline":
        qs = np.linspace(0, 1, spline_df + 1)
        knots = np.quantile(weeks, qs)
        if len(np.unique(knots)) < len(knots):
            raise InsufficientData(f"Too few distinct times to place {spline_df} spline pieces; use a smaller "
                                   "spline_df or time='piecewise'.")
        basis = TimeBasis("spline", knot_weeks=knot_weeks, knots=tuple(float(k) for k in knots))
    elif time not in ("linear", "piecewise"):
        raise ValueError(f"time must be 'auto', 'linear', 'piecewise' or 'spline' (got {time!r}).")
    design = Design(measure=measure, time=basis, by=by, reference=ref, levels=levels,
                    covariates=_covariate_specs(pts, adjust, adjust_by_time))
    names = design.names
    extra: list[tuple[np.ndarray, int]] = []
    w, feature, column = design.patient_features(len(keep), group, pts if adjust else None, extra)
    data = _ModelData(prepared, keep, design, w, feature, column, extra)
    p = len(names)
    if not _full_rank_xtx(data.blocks(random_slope).c0[:p, :p]):
        raise InsufficientData(f"The {_label(measure)} model has more terms than the data can separate (e.g. a "
                               "covariate that never varies). Drop an adjustment variable or merge groups.")
    res, structure, structures, fit_notes = _fit_random(data, reml=reml, names=names, engine=engine,
                                                        measure=measure, random_slope=random_slope,
                                                        structure=random_structure, start=start)
    notes.extend(fit_notes)
    se = res.se
    est = res.beta
    fixed = pd.DataFrame({"term": list(names), "estimate": est, "se": se, "ci_low": est - z * se,
                          "ci_high": est + z * se, "p": norm_two_sided_p(est / se)})
    method = "REML" if reml else "ML"
    has_slope = structure != "intercept"
    notes.insert(0, f"Linear mixed model ({method}, {'fast exact engine' if engine == 'fast' else 'statsmodels'}): "
                    f"{design.formula(structure)}; {note_n(res.n_groups)} patients, {note_n(res.n_obs)} scores. Wald "
                    f"{round(conf_level * 100)}% intervals.")
    if measure == "pda":
        notes.append("Percent days abstinent is modelled in percent (0–100).")
    if by:
        counts = _patients_per_group(group)  # type: ignore[arg-type]
        n_per_group = {g: counts[g] for g in sorted(counts)}
    else:
        n_per_group = {ALL: int(res.n_groups)}
    return TrajectoryFit(
        measure=measure, formula=design.formula(structure), method=method, fixed=fixed,
        random=res.variance_components(), random_slope=has_slope, n_patients=res.n_groups, n_obs=res.n_obs,
        converged=res.converged, singular=res.singular, loglik=res.loglik, aic=res.aic, bic=res.bic,
        deviance=res.deviance, cov_params=pd.DataFrame(res.cov_beta, index=list(names), columns=list(names)),
        design=design, engine=engine, conf_level=conf_level, n_per_group=n_per_group,
        weeks_range=(float(weeks.min()), float(weeks.max())), notes=tuple(notes), random_structure=structure,
        structures=structures, theta=np.asarray(res.theta, dtype=float) if engine == "fast" else None)


def predicted_means(fit: TrajectoryFit, *, weeks: np.ndarray | list[float] | None = None,
                    conf_level: float | None = None) -> PredictedMeans:
    """Model-based mean trajectory per group with a pointwise confidence band.

    Covariates are held at their cohort means (numeric) or cohort shares (categories), so each curve is the
    mean for a patient with the cohort's average characteristics (for a linear model, also the average over
    patients). The band is ``x'β̂ ± z·sqrt(x'Vx)``.

    Returns
    -------
    PredictedMeans
        ``table`` columns ``group``, ``weeks``, ``estimate``, ``se``, ``ci_low``, ``ci_high``.
    """
    conf_level = fit.conf_level if conf_level is None else conf_level
    z = z_crit(conf_level)
    if weeks is None:
        lo = max(0.0, fit.weeks_range[0])
        weeks = np.linspace(lo, fit.weeks_range[1], 61)
    w = np.asarray(weeks, dtype=float)
    beta = fit.fixed["estimate"].to_numpy()
    cov = fit.cov_params.to_numpy()
    parts = []
    for g in fit.design.groups:
        xr = fit.design.mean_rows(w, g)
        est = xr @ beta
        se = np.sqrt(np.einsum("ij,jk,ik->i", xr, cov, xr))
        parts.append(pd.DataFrame({"group": g, "weeks": w, "estimate": est, "se": se,
                                   "ci_low": est - z * se, "ci_high": est + z * se}))
    notes: tuple[str, ...] = ((f"Model-based mean {_label(fit.measure)} ({fit.formula}); "
                               f"{round(conf_level * 100)}% pointwise confidence band."),)
    if fit.design.covariates:
        notes += ("Adjusted curves: covariates held at the cohort's mean values.",)
    return PredictedMeans(table=pd.concat(parts, ignore_index=True), measure=fit.measure, conf_level=conf_level,
                          notes=notes + fit.notes[1:])


# Bins (weeks) of the observed means: the baseline window, then weekly over induction, wider later.
WEEK_BINS: tuple[float, ...] = (-np.inf, 0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 20.0, 26.0, 39.0, 52.0, np.inf)


def observed_means(cohort: Cohort, *, measure: str = "phq9", by: str | None = None,
                   bins: tuple[float, ...] = WEEK_BINS, conf_level: float = 0.95) -> ObservedMeans:
    """Observed mean score per group and time bin with a t confidence interval, one value per patient and bin.

    Each patient contributes the mean of their scores in a bin (so a patient scored twice in a bin does not count
    twice); the bin's mean and interval are over those patient means. Groups as :func:`patient_lines` (missing
    ``by`` values are left out, as the model leaves them out).

    Returns
    -------
    ObservedMeans
        ``table`` columns ``group``, ``bin``, ``weeks``, ``n_patients``, ``n_scores``, ``estimate``, ``ci_low``,
        ``ci_high``.
    """
    from scipy import stats

    d = measure_frame(cohort, measure)
    groups = _groups_of(cohort, by)
    # integer codes for patients (their row in ``groups``) and groups: grouping on text ids is several times slower
    patient = groups.index.get_indexer(d["patient_id"])
    level_code, levels = pd.factorize(groups.to_numpy(), sort=True)
    group = np.where(patient >= 0, level_code[np.maximum(patient, 0)], -1)
    keep = (patient >= 0) & (group >= 0)
    if by is not None and "(missing)" in levels:
        keep &= group != levels.get_loc("(missing)")
    edges = np.asarray(bins, dtype=float)
    labels = [("≤ 0" if not np.isfinite(lo) else f"> {lo:g}" if not np.isfinite(hi) else f"{lo:g}–{hi:g}")
              for lo, hi in itertools.pairwise(edges)]
    d = pd.DataFrame({"group": group[keep], "patient": patient[keep], "weeks": d["weeks"].to_numpy(float)[keep],
                      "value": d["value"].to_numpy(float)[keep]})
    d["bin"] = pd.cut(d["weeks"], edges, labels=labels, right=True)
    per_patient = (d.groupby(["group", "bin", "patient"], observed=True)
                   .agg(value=("value", "mean"), weeks=("weeks", "sum"), n=("value", "size")).reset_index())
    per_patient["group"] = np.asarray(levels, dtype=object)[per_patient["group"].to_numpy()]
    agg = (per_patient.groupby(["group", "bin"], observed=True)
           .agg(n_patients=("value", "size"), n_scores=("n", "sum"), weeks_sum=("weeks", "sum"),
                estimate=("value", "mean"), sd=("value", "std")).reset_index())
    agg["weeks"] = agg["weeks_sum"] / agg["n_scores"]
    n = agg["n_patients"].to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(n >= 2, stats.t.ppf(0.5 + conf_level / 2, np.maximum(n - 1, 1)), np.nan)
        half = t * agg["sd"].to_numpy(float) / np.sqrt(n)
    agg["ci_low"], agg["ci_high"] = agg["estimate"] - half, agg["estimate"] + half
    agg["bin"] = agg["bin"].astype(str)
    table = agg[["group", "bin", "weeks", "n_patients", "n_scores", "estimate", "ci_low", "ci_high"]]
    notes = ((f"Points: observed mean {_label(measure)} per time bin (weeks {', '.join(labels)}) with "
              f"{round(conf_level * 100)}% t intervals; each patient counts once per bin (the mean of their "
              "scores there). Where the points leave the model line, the time shape does not fit."),)
    return ObservedMeans(table=table.reset_index(drop=True), measure=measure, conf_level=conf_level, notes=notes)


def compare_time_shapes(cohort: Cohort, *, measure: str = "phq9", by: str | None = None,
                        adjust: tuple[str, ...] = (), knot_weeks: float = 4.0, spline_df: int = 3,
                        engine: Engine = "fast", reference: str | None = None,
                        prepared: PreparedScores | None = None) -> ModelComparison:
    """Does a bend or a spline describe the course better than a straight line?

    Fits the linear, piecewise (knot at ``knot_weeks``) and natural-spline models by maximum likelihood (REML
    likelihoods of models with different fixed effects are not comparable) and reports AIC, BIC and the
    likelihood-ratio test of each against the linear model (nested: both contain the straight line). All three
    have the same random-effect structure: when the per-shape choice (:func:`fit_trajectory`) differs between
    shapes, all are refitted with the richest structure chosen. A shape the data cannot support (too few distinct
    times for the spline, no scores after the bend) is left out and named in the notes.

    Returns
    -------
    ModelComparison
        ``table`` columns ``time``, ``formula``, ``n_params``, ``loglik``, ``aic``, ``bic``, ``lr_chisq``,
        ``df``, ``p``, ``converged``; ``best`` = the shape with the lowest AIC.
    """
    rows = []
    fits: dict[str, TrajectoryFit] = {}
    notes: list[str] = []
    if prepared is None:
        prepared = prepare_scores(cohort, measure)
    common = {"measure": measure, "by": by, "adjust": adjust, "knot_weeks": knot_weeks, "spline_df": spline_df,
              "reml": False, "engine": engine, "reference": reference, "prepared": prepared}
    for shape in TIME_SHAPES:
        try:
            fits[shape] = fit_trajectory(cohort, time=shape, **common)  # type: ignore[arg-type]
        except InsufficientData as err:
            if shape == "linear":
                raise
            notes.append(f"The {shape} shape was not fitted: {err}")
    structures = {f.random_structure for f in fits.values()}
    if len(structures) > 1:  # compare like with like: the same random part everywhere
        richest = max(structures, key=lambda k: (N_THETA[k], k != "slope"))
        if structures == {"intercept", "slope"}:
            richest = "uncorrelated"
        notes.append(f"The shapes' random-effect structures differed, so all are compared with the "
                     f"{RANDOM_NAMES[richest]} structure {RANDOM_TERMS[richest]}.")
        for shape in fits:
            fits[shape] = fit_trajectory(cohort, time=shape, random_structure=richest,  # type: ignore[arg-type]
                                         **common)
    base = fits["linear"]
    for shape, f in fits.items():
        test = lr_test(base, f) if shape != "linear" else {"chisq": math.nan, "df": 0, "p": math.nan}
        rows.append({"time": shape, "formula": f.formula, "n_params": n_parameters(f), "loglik": f.loglik,
                     "aic": f.aic, "bic": f.bic, "lr_chisq": test["chisq"], "df": int(test["df"]), "p": test["p"],
                     "converged": f.converged})
    table = pd.DataFrame(rows)
    ok = table[table["converged"]] if table["converged"].any() else table
    best = str(ok.loc[ok["aic"].idxmin(), "time"])
    if not table["converged"].all():
        notes.append("Shapes whose model did not converge were not chosen.")
    notes.insert(0, f"Fitted by maximum likelihood on {note_n(base.n_patients)} patients and {note_n(base.n_obs)} "
                    f"scores; likelihood-ratio tests against the straight line. Lowest AIC: {best}.")
    return ModelComparison(table=table, best=best, notes=tuple(notes), fits=fits)


def n_parameters(fit: TrajectoryFit) -> int:
    """Fixed effects + random-effect (co)variances + residual variance (lme4's ``df`` of ``logLik``)."""
    return len(fit.fixed) + N_THETA[fit.random_structure] + 1


def lr_test(reduced: TrajectoryFit, full: TrajectoryFit) -> dict[str, float]:
    """Likelihood-ratio test of a nested pair of ML fits on the same scores: ``chisq``, ``df``, ``p``.

    E.g. ``fit_trajectory(c, reml=False)`` against ``fit_trajectory(c, by="program", reml=False)`` tests whether
    the programs differ in level or slope. (Fits must use the same patients: missing ``by`` values drop some.)
    """
    if reduced.method != "ML" or full.method != "ML":
        raise ValueError("Likelihood-ratio tests of fixed effects need ML fits (fit_trajectory(..., reml=False)).")
    if reduced.n_obs != full.n_obs or reduced.n_patients != full.n_patients:
        raise ValueError(f"The two fits use different scores ({reduced.n_obs} vs {full.n_obs}); they are not "
                         "nested.")
    df = n_parameters(full) - n_parameters(reduced)
    chisq = max(2.0 * (full.loglik - reduced.loglik), 0.0)
    return {"chisq": chisq, "df": float(df), "p": chi2_sf(chisq, df) if df > 0 else math.nan}


@per_cohort
def phq9_model(cohort: Cohort, *, time: TimeChoice = "auto", by: str | None = None,
               conf_level: float = 0.95) -> TrajectoryFit:
    """THE PHQ-9 trajectory model: the one ``kap-outcomes analyze`` writes, the meeting pack prints and the
    trajectories page shows by default (one function, so that the three always agree).

    ``phq9 ~ <time> + (1 + weeks | patient_id)`` by REML on every PHQ-9 on or after the start of the baseline
    window; ``time="auto"`` (default) takes the shape with the lowest ML AIC among the straight line, the bend at
    week 4 and the natural spline (3 df), then refits it by REML. A singular random-slope fit is handled by
    likelihood (:func:`fit_trajectory`, Notes).
    """
    return fit_trajectory(cohort, measure="phq9", by=by, time=time, conf_level=conf_level)


def trajectories_json(cohort: Cohort, *, time: TimeChoice = "auto") -> dict:
    """The ``trajectories`` section of ``kap-outcomes analyze`` (../shared/cli.md): :func:`phq9_model`.

    ``formula`` is the reported model's (time shape and random-effect structure, e.g.
    ``phq9 ~ weeks + weeks_after_4 + (1 + weeks | patient_id)``); ``sd_slope``/``corr`` are null for the
    random-intercept model. Raises :class:`InsufficientData` when too few patients have two scores (the CLI then
    writes null).
    """
    fit = phq9_model(cohort, time=time)

    def num(x: float | None) -> float | None:
        return None if x is None or not math.isfinite(float(x)) else float(x)

    fixed = [{"term": str(r.term), "estimate": num(r.estimate), "se": num(r.se), "lower": num(r.ci_low),
              "upper": num(r.ci_high)} for r in fit.fixed.itertuples()]
    random = {k: num(fit.random.get(k)) for k in ("sd_intercept", "sd_slope", "corr", "sd_residual")}
    return {"phq9": {"formula": fit.formula, "method": fit.method, "converged": bool(fit.converged),
                     "n_patients": int(fit.n_patients), "n_obs": int(fit.n_obs), "fixed": fixed, "random": random}}


# --------------------------------------------------------------------------------------------- response
def _wilson(k: np.ndarray, n: np.ndarray, conf_level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Proportion and Wilson score interval (:func:`analytics.engines.intervals.wilson_ci`); NaN where n = 0."""
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    low, high = wilson_ci(k, n, conf_level)
    with np.errstate(invalid="ignore", divide="ignore"):
        return k / n, low.reshape(k.shape), high.reshape(k.shape)


def _post_baseline_phq9(cohort: Cohort) -> pd.DataFrame:
    """PHQ-9 scores after day 0 of patients with a baseline, with that baseline; formed once per cohort (response,
    bands and durability all start from it). Callers filter it into new frames and never change it in place."""

    def compute() -> pd.DataFrame:
        d = measure_frame(cohort, "phq9")
        d = d[d["days"] > 0]
        base = cohort.patients.drop_duplicates("patient_id").set_index("patient_id")["baseline_phq9"].dropna()
        at = base.index.get_indexer(d["patient_id"])  # one hash look-up of the ids (a merge on text ids is slower)
        d = d[at >= 0].assign(baseline_phq9=base.to_numpy()[at[at >= 0]])
        return d.reset_index(drop=True)

    return once(cohort, ("post-baseline phq9",), compute)


def _groups_of(cohort: Cohort, by: str | None) -> pd.Series:
    p = cohort.patients.drop_duplicates("patient_id").set_index("patient_id")
    if by is None:
        return pd.Series(ALL, index=p.index)
    if by not in p.columns:
        raise InsufficientData(f"'{by}' is not a patient column; choose one of {', '.join(map(str, p.columns))}.")
    return p[by].astype("string").fillna("(missing)").astype(str)


@per_cohort
def response_remission(cohort: Cohort, *, weeks: tuple[float, ...] = (4, 8, 12, 26), window_days: int = 14,
                       by: str | None = None, min_baseline: float | None = None,
                       conf_level: float = 0.95) -> ResponseRemission:
    """PHQ-9 response (score ≤ 50 % of baseline) and remission (score < 5) at fixed weeks.

    At each target week the score nearest ``7 × weeks`` days within ± ``window_days`` is used (ties: the earlier).
    The denominator is every patient with a baseline PHQ-9 ≥ ``min_baseline`` (default
    ``cohort.settings.phq9_min_baseline``, 10; a baseline of 0 never counts: :mod:`analytics.outcomes.response`)
    and a score in that window, so each rate says whom it describes; patients without a score there are not
    counted as failures.

    Returns
    -------
    ResponseRemission
        ``table`` columns ``group``, ``weeks``, ``outcome``, ``n``, ``n_event``, ``estimate``, ``ci_low``,
        ``ci_high`` (Wilson score interval).
    """
    min_baseline = cohort.settings.phq9_min_baseline if min_baseline is None else min_baseline
    d = _post_baseline_phq9(cohort)
    d = d[rsp.assessable(d["baseline_phq9"], min_baseline)]
    groups = _groups_of(cohort, by)
    rows = []
    for w in weeks:
        target = 7.0 * w
        near = d[(d["days"] - target).abs() <= window_days].copy()
        near["dist"] = (near["days"] - target).abs()
        pick = near.sort_values(["patient_id", "dist", "days"]).drop_duplicates("patient_id")
        pick["group"] = text_map(pick["patient_id"], groups)
        pick["response"] = rsp.is_response(pick["value"], pick["baseline_phq9"])
        pick["remission"] = rsp.is_remission(pick["value"])
        levels = [ALL] if by is None else sorted(groups.unique())
        for g in levels:
            sub = pick[pick["group"] == g]
            for outcome in ("response", "remission"):
                rows.append({"group": g, "weeks": float(w), "outcome": outcome, "n": len(sub),
                             "n_event": int(sub[outcome].sum())})
    table = pd.DataFrame(rows, columns=["group", "weeks", "outcome", "n", "n_event"])
    est, lo, hi = _wilson(table["n_event"].to_numpy(), table["n"].to_numpy(), conf_level)
    table["estimate"], table["ci_low"], table["ci_high"] = est, lo, hi
    notes = [(f"{rsp.definition_text(min_baseline)} At each week the score nearest the target day within "
              f"±{window_days} days; denominator = patients with such a baseline and a score in that window. Wilson "
              f"{round(conf_level * 100)}% intervals.")]
    return ResponseRemission(table=table, window_days=window_days, conf_level=conf_level, notes=tuple(notes))


@per_cohort
def band_transitions(cohort: Cohort, *, by: str | None = None) -> BandTransitions:
    """Baseline PHQ-9 severity band → band of the latest score after day 0.

    Returns
    -------
    BandTransitions
        ``table``: ``group``, ``baseline_band``, ``latest_band``, ``n`` (all 25 pairs per group, zeros included);
        ``summary``: ``group``, ``improved``, ``unchanged``, ``worsened``, ``n``.
    """
    from analytics.outcomes.cohort import phq9_band

    d = _post_baseline_phq9(cohort)
    latest = d.sort_values(["patient_id", "days"]).drop_duplicates("patient_id", keep="last")
    latest = latest.assign(baseline_band=phq9_band(latest["baseline_phq9"]), latest_band=phq9_band(latest["value"]))
    groups = _groups_of(cohort, by)
    latest["group"] = text_map(latest["patient_id"], groups)
    order = [b[2] for b in PHQ9_BANDS]
    levels = [ALL] if by is None else sorted(groups.unique())
    full = pd.MultiIndex.from_product([levels, order, order], names=["group", "baseline_band", "latest_band"])
    counts = latest.groupby(["group", "baseline_band", "latest_band"]).size()
    table = counts.reindex(full, fill_value=0).rename("n").reset_index()
    rank = {b: i for i, b in enumerate(order)}
    delta = latest["latest_band"].map(rank) - latest["baseline_band"].map(rank)
    latest["change"] = np.select([delta < 0, delta == 0], ["improved", "unchanged"], "worsened")
    summary = (latest.groupby("group")["change"].value_counts().unstack(fill_value=0)
               .reindex(index=levels, columns=["improved", "unchanged", "worsened"], fill_value=0))
    summary["n"] = summary.sum(axis=1)
    summary = summary.reset_index()
    summary.columns.name = None
    n_base = int(cohort.patients["baseline_phq9"].notna().sum())
    notes = ((f"{note_of(len(latest), n_base)} patients with a baseline PHQ-9 have a later score; bands 0–4, 5–9, "
              "10–14, 15–19, 20–27 (Kroenke 2001). Latest = last score after the first ketamine session."),)
    return BandTransitions(table=table, summary=summary, notes=notes)


# --------------------------------------------------------------------------------------------- durability
def _km(time: np.ndarray, event: np.ndarray, z: float) -> pd.DataFrame:
    """Kaplan–Meier with R ``survfit``'s default log-scale pointwise interval (statsmodels SurvfuncRight)."""
    from statsmodels.duration.survfunc import SurvfuncRight

    sf = SurvfuncRight(time, event.astype(int))
    s = np.asarray(sf.surv_prob, dtype=float)
    se = np.asarray(sf.surv_prob_se, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        se_log = np.where(s > 0, se / s, np.nan)
        lo = np.where(s > 0, s * np.exp(-z * se_log), np.nan)
        hi = np.where(s > 0, np.minimum(s * np.exp(z * se_log), 1.0), np.nan)
    times = np.asarray(sf.surv_times, dtype=float)
    n_risk = np.asarray(sf.n_risk, dtype=int)
    n_event = np.asarray(sf.n_events, dtype=int)
    n_censor = np.array([int(np.sum((time == t) & (event == 0))) for t in times], dtype=int)
    head = pd.DataFrame({"day": [0.0], "estimate": [1.0], "ci_low": [1.0], "ci_high": [1.0],
                         "n_risk": [len(time)], "n_event": [0], "n_censor": [0]})
    body = pd.DataFrame({"day": times, "estimate": s, "ci_low": lo, "ci_high": hi, "n_risk": n_risk,
                         "n_event": n_event, "n_censor": n_censor})
    return pd.concat([head, body[body["day"] > 0]], ignore_index=True) if len(body) else head


def _km_at(curve: pd.DataFrame, day: float, time: np.ndarray) -> dict[str, float]:
    upto = curve[curve["day"] <= day]
    last = upto.iloc[-1]
    return {"estimate": float(last["estimate"]), "ci_low": float(last["ci_low"]), "ci_high": float(last["ci_high"]),
            "n_risk": int(np.sum(time >= day))}


def _responders(cohort: Cohort, min_baseline: float, rise_points: float) -> pd.DataFrame:
    d = _post_baseline_phq9(cohort)
    d = d[rsp.assessable(d["baseline_phq9"], min_baseline)]
    out = rsp.response_episodes(d, rise_points=rise_points)
    return out[["patient_id", "response_day", "baseline_phq9", "response_score", "lost_response",
                "days_in_response"]]


@per_cohort
def response_durability(cohort: Cohort, *, milestone_weeks: tuple[float, ...] = (4, 8),
                        induction_days: int = 28, min_baseline: float | None = None,
                        rise_points: float | None = None, conf_level: float = 0.95) -> ResponseDurability:
    """How long does a PHQ-9 response last, and does it last longer with maintenance ketamine sessions?

    Responders are patients with baseline PHQ-9 ≥ ``min_baseline`` (default ``cohort.settings.phq9_min_baseline``)
    whose PHQ-9 after day 0 reached at most half their baseline score. Time runs from the first such score to the
    loss of response (:mod:`analytics.outcomes.response`): two consecutive scores above half the baseline (dated at
    the first of the two), or a rise of at least ``rise_points`` (default ``cohort.settings.response_loss_rise``, 5)
    from the response score; a responder without loss is censored at the last PHQ-9. A *maintenance* (booster) session is a ketamine session
    after the first response and after the induction period (day ``induction_days``), before loss or censoring:
    induction sessions that continue after an early response are not maintenance.

    Returns
    -------
    ResponseDurability
        Kaplan–Meier curves for all responders and split by maintenance, sustained response at
        ``milestone_weeks`` and a Cox hazard ratio with maintenance as a time-varying covariate.

    Notes
    -----
    Loss is only seen when a score is recorded, so times are as coarse as the scoring schedule. Splitting the
    curves by "had a maintenance session" favours the maintenance group (immortal-time bias: patients who stay in
    response longer have more time to receive a session); the time-varying Cox model (counting-process data,
    :func:`analytics.engines.survival.cox_ph` with entry times, Efron ties, as R ``coxph(Surv(start, stop,
    event) ~ ...)``) avoids that bias. McInnes et al. 2022 report about 80 % sustained at 4 weeks and 60 % at
    8 weeks without maintenance.
    """
    z = z_crit(conf_level)
    min_baseline = cohort.settings.phq9_min_baseline if min_baseline is None else min_baseline
    rise_points = cohort.settings.response_loss_rise if rise_points is None else rise_points
    resp = _responders(cohort, min_baseline, rise_points)
    if len(resp) < MIN_PATIENTS:
        raise InsufficientData(f"Durability of response needs at least {MIN_PATIENTS} PHQ-9 responders with a "
                               f"baseline score (got {note_n(len(resp))}). Widen the date range or add follow-up "
                               "scores.")
    ses = cohort.sessions
    ket = ses.loc[ses["session_type"] == "ketamine", ["patient_id", "days"]]
    at = pd.Index(resp["patient_id"]).get_indexer(ket["patient_id"])  # responder of each session, -1: none
    days = ket["days"].to_numpy(float)
    ok = at >= 0
    at, days = at[ok], days[ok]
    t_since = days - resp["response_day"].to_numpy(float)[at]
    maint = (t_since > 0) & (t_since <= resp["days_in_response"].to_numpy(float)[at]) & (days > induction_days)
    first_m = np.full(len(resp), np.inf)
    np.minimum.at(first_m, at[maint], t_since[maint])
    resp["first_maintenance_day"] = np.where(np.isfinite(first_m), first_m, np.nan)
    resp["maintenance"] = resp["first_maintenance_day"].notna()
    t = resp["days_in_response"].to_numpy(dtype=float)
    e = resp["lost_response"].to_numpy(dtype=bool)
    curves, milestones = [], []
    for g, mask in (("all responders", np.ones(len(resp), bool)),
                    ("maintenance sessions", resp["maintenance"].to_numpy()),
                    ("no maintenance sessions", ~resp["maintenance"].to_numpy())):
        if mask.sum() == 0:
            continue
        c = _km(t[mask], e[mask], z)
        c.insert(0, "group", g)
        curves.append(c)
        for w in milestone_weeks:
            milestones.append({"group": g, "weeks": float(w), **_km_at(c, 7.0 * w, t[mask])})
    notes = [(f"{note_n(len(resp))} responders (PHQ-9 at most half of baseline after day 0, baseline ≥ "
              f"{min_baseline:g}), {note_n(e.sum())} lost response (two consecutive later scores above half of "
              f"baseline, or a rise of at least {rise_points:g} points from the response score); the others are "
              f"censored at their last PHQ-9. Kaplan–Meier with {round(conf_level * 100)}% log-scale intervals (R "
              "survfit default)."),
             (f"Maintenance = a ketamine session after the first response and after day {induction_days} "
              "(the end of induction), before loss of response or censoring. "
              "Curves split by maintenance favour the maintenance group (patients who stay in response longer have "
              "more time to get a session); the hazard ratio treats maintenance as time-varying and is the fairer "
              "comparison.")]
    hr = _maintenance_cox(resp, z, notes)
    return ResponseDurability(curves=pd.concat(curves, ignore_index=True), milestones=pd.DataFrame(milestones),
                              responders=resp, maintenance_hr=hr, conf_level=conf_level, notes=tuple(notes))


def _maintenance_cox(resp: pd.DataFrame, z: float, notes: list[str]) -> dict[str, float] | None:
    """Cox model of loss of response with maintenance as a time-varying covariate: counting-process rows
    ``(start, stop]`` before and after the first maintenance session (:func:`analytics.engines.survival.cox_ph` with
    ``entry``; R ``coxph(Surv(start, stop, event) ~ maintenance)``, Efron ties)."""
    end = resp["days_in_response"].to_numpy(float)
    m = resp["first_maintenance_day"].to_numpy(float)
    lost = resp["lost_response"].to_numpy(bool)
    keep = end > 0
    end, m, lost = end[keep], m[keep], lost[keep]
    split = ~np.isnan(m) & (m > 0) & (m < end)  # counting process: before and after the first maintenance session
    n = len(end)
    before = pd.DataFrame({"start": 0.0, "stop": np.where(split, m, end), "maintenance": 0.0,
                           "event": np.where(split, False, lost), "_k": np.arange(n), "_part": 0})
    after = pd.DataFrame({"start": m[split], "stop": end[split], "maintenance": 1.0, "event": lost[split],
                          "_k": np.flatnonzero(split), "_part": 1})
    cp = (pd.concat([before, after], ignore_index=True).sort_values(["_k", "_part"], kind="stable")
          [["start", "stop", "maintenance", "event"]].reset_index(drop=True))
    if cp.empty or cp["maintenance"].nunique() < 2 or cp["event"].sum() < 5:
        notes.append("The maintenance hazard ratio is not estimable (too few events or no patients in one "
                     "of the two states).")
        return None
    try:
        fit = cox_ph(cp["stop"].to_numpy(), cp["event"].to_numpy(bool), cp[["maintenance"]],
                     entry=cp["start"].to_numpy(), ph_transform=None)
    except OutcomesError as err:
        notes.append(f"The maintenance hazard ratio is not estimable: {err}")
        return None
    b, se = float(fit.table["coef"].iloc[0]), float(fit.table["se"].iloc[0])
    notes.append("Hazard ratio: Cox model of loss of response with maintenance as a time-varying covariate "
                 "(after vs before the first maintenance session), Efron ties.")
    return {"hr": math.exp(b), "ci_low": math.exp(b - z * se), "ci_high": math.exp(b + z * se),
            "p": norm_two_sided_p(b / se), "n_events": int(cp["event"].sum())}


# --------------------------------------------------------------------------------------------- GEE
def abstinence_frame(cohort: Cohort) -> pd.DataFrame:
    """One row per follow-up after day 0 whose abstinence is known: ``patient_id``, ``days``, ``weeks``,
    ``abstinent`` (1 = the whole assessment window abstinent, no reported use, no positive urine test).

    ``days_abstinent == window_days`` means abstinent; ``days_abstinent < window_days``, ``any_use = yes`` or a
    positive urine test mean not, except that a short count says nothing certain about use after day 0 when the
    window reaches back before day 0 (data-contract.md); such rows are dropped. Without ``days_abstinent``,
    ``any_use = no`` (and no positive urine test) means abstinent.
    """
    fu = cohort.followups
    fu = fu[fu["days"] > 0]
    window = fu["window_days"].astype(float)
    da = fu["days_abstinent"].astype(float)
    use = fu["any_use"].astype("boolean")
    # a positive urine result counts as use unless only for prescribed medicines or in-treatment ketamine (cohort)
    tox = (fu["urine_use"] if "urine_use" in fu else fu["urine_tox"].astype("string").eq("positive")) \
        .fillna(False).astype(bool)
    full = da.eq(window).fillna(False).astype(bool)
    short = (da < window).fillna(False).astype(bool)
    used = use.eq(True).fillna(False).astype(bool) | tox
    abst = pd.Series(np.nan, index=fu.index)
    abst[full & ~used] = 1.0
    abst[da.isna() & use.eq(False).fillna(False).astype(bool) & ~tox] = 1.0
    abst[used] = 0.0
    abst[short & fu["window_after_index"].astype(bool)] = 0.0
    out = pd.DataFrame({"patient_id": fu["patient_id"], "days": fu["days"].astype(float),
                        "weeks": fu["days"].astype(float) / 7.0, "abstinent": abst})
    return out.dropna(subset=["abstinent"]).reset_index(drop=True)


@per_cohort
def abstinence_gee(cohort: Cohort, *, by: str | None = None, reference: str | None = None,
                   interaction: bool = True, conf_level: float = 0.95) -> AbstinenceGEE:
    """Repeated binary abstinence per assessment window by GEE (population-average view).

    ``logit P(abstinent) = β0 + β1·weeks (+ group (+ group × weeks when ``interaction``))``, binomial family,
    exchangeable working
    correlation within patient, robust (sandwich) standard errors (Liang & Zeger 1986), fitted by the exact
    vectorised engine :func:`analytics.engines.gee.fit_gee` with statsmodels' moment estimator of the correlation
    (equal to statsmodels ``GEE`` to rounding; to R's geepack with ``ddof=0``).

    Returns
    -------
    AbstinenceGEE
        ``table`` (odds ratios per term; ``weeks`` = per week), ``predicted`` probabilities by group over weeks.
    """
    z = z_crit(conf_level)
    d = abstinence_frame(cohort)
    groups = _groups_of(cohort, by)
    d["_group"] = text_map(d["patient_id"], groups)
    if by is not None:
        d = d[d["_group"] != "(missing)"]
    n_pat = d.groupby("patient_id").size()
    if (n_pat >= 2).sum() < MIN_PATIENTS or d["abstinent"].nunique() < 2:
        raise InsufficientData(f"Abstinence over time needs at least 2 assessments for {MIN_PATIENTS} patients and "
                               f"both abstinent and non-abstinent windows (got {note_n((n_pat >= 2).sum())} patients). "
                               "Widen the date range or add follow-ups.")
    d = d.sort_values(["patient_id", "days"]).reset_index(drop=True)
    design = Design(measure="abstinent", time=TimeBasis("linear"))
    if by is not None:
        ref, levels = _group_levels(d, reference, by)
        design = Design(measure="abstinent", time=TimeBasis("linear"), by=by, reference=ref, levels=levels)
    X = design.matrix(d["weeks"].to_numpy(), d["_group"].to_numpy() if by else None, None)
    names = list(design.names)
    if by is not None and not interaction:
        keep = [j for j, nm in enumerate(names) if not nm.startswith("weeks:")]
        X, names = X[:, keep], [names[j] for j in keep]
    codes, _ = pd.factorize(d["patient_id"])
    res = gee.fit_gee(d["abstinent"].to_numpy(dtype=float), X, codes, names=tuple(names))
    notes: list[str] = list(res.notes)
    est = res.beta
    se = res.se
    table = pd.DataFrame({"term": names, "estimate": est, "se": se, "odds_ratio": np.exp(est),
                          "ci_low": np.exp(est - z * se), "ci_high": np.exp(est + z * se),
                          "p": norm_two_sided_p(est / se)})
    cov = np.asarray(res.cov_params())
    grid = np.linspace(max(0.0, float(d["weeks"].min())), float(d["weeks"].max()), 41)
    preds = []
    for g in design.groups:
        xr = design.mean_rows(grid, g)
        if by is not None and not interaction:
            xr = xr[:, keep]
        eta = xr @ est
        s = np.sqrt(np.einsum("ij,jk,ik->i", xr, cov, xr))
        preds.append(pd.DataFrame({"group": g, "weeks": grid, "estimate": _expit(eta),
                                   "ci_low": _expit(eta - z * s), "ci_high": _expit(eta + z * s)}))
    rhs = (f"weeks * {by}" if interaction else f"weeks + {by}") if by else "weeks"
    alpha = res.alpha
    notes.insert(0, f"GEE (binomial, logit link, exchangeable working correlation {alpha:.2f}, robust standard "
                    f"errors): abstinent ~ {rhs}; {d['patient_id'].nunique()} patients, {len(d)} assessments. "
                    "Abstinent = the whole assessment window without use and no positive urine test.")
    return AbstinenceGEE(table=table, predicted=pd.concat(preds, ignore_index=True), working_correlation=alpha,
                         n_patients=int(d["patient_id"].nunique()), n_obs=len(d),
                         formula=f"abstinent ~ {rhs}", conf_level=conf_level, notes=tuple(notes))


def _expit(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def patient_lines(cohort: Cohort, *, measure: str = "phq9", by: str | None = None, n: int = 40,
                  seed: int = 0) -> pd.DataFrame:
    """A random sample of individual courses for display: ``line`` (1…n, not the patient id), ``group``,
    ``weeks``, ``value``. Only patients with ≥ 2 scores; groups with fewer than ``cohort.settings.min_cell``
    such patients get no lines when suppression is on (an individual line is one patient's data)."""
    d = measure_frame(cohort, measure)
    codes, uniques = pd.factorize(d["patient_id"])  # patients in order of their first score
    d = d[(np.bincount(codes[codes >= 0], minlength=len(uniques)) >= 2)[codes] & (codes >= 0)]
    groups = _groups_of(cohort, by)
    d["group"] = text_map(d["patient_id"], groups)
    rng = np.random.default_rng(seed)
    parts = []
    line = 0
    for g, sub in d.groupby("group", sort=True):
        ids = sub["patient_id"].unique()
        if cohort.settings.suppress and len(ids) < cohort.settings.min_cell:
            continue
        pick = rng.choice(ids, size=min(n, len(ids)), replace=False)
        chosen = sub[ids_in(sub["patient_id"], pd.Series(pick))]
        order = pd.Index(pick).get_indexer(chosen["patient_id"])  # line of each score: the patient's pick order
        chosen = chosen.assign(line=line + 1 + order).sort_values(["line", "weeks"], kind="stable")
        line += len(pick)
        parts.append(pd.DataFrame({"line": chosen["line"].to_numpy(), "group": g,
                                   "weeks": chosen["weeks"].to_numpy(), "value": chosen["value"].to_numpy()}))
    if not parts:
        return pd.DataFrame(columns=["line", "group", "weeks", "value"])
    return pd.concat(parts, ignore_index=True)
