"""A synthetic clinic with known, documented effects (``kap-outcomes sample``).

:func:`generate_clinic` simulates a ketamine-assisted treatment clinic and returns the three exports of
data-contract.md (``sessions``, ``followups``, ``patients``) exactly as a clinic's CSV files would hold
them: ISO date strings, ``any_use`` as ``yes``/``no``, ``adverse_events`` joined by ``;``, ``patient_id`` as
text with leading zeros. :func:`write_clinic` writes them as CSV files. Every true parameter lives in
:data:`TRUE_EFFECTS`; ``sample_data/README.md`` lists them and the tests recover them with simple
estimators.

The simulation is vectorised with numpy (no per-patient Python loop): 50,000 patients take a few seconds.

Notes
-----
Data-generating model, in order (all parameters in :class:`TrueEffects`):

1. **Patients**: site, program (therapy share depends on site only), primary substance, sex, age, prior
   treatments, weight; intake date from the start date until ``intake_stops_days_before_end`` days before
   the upload date, with linearly rising volume; a small share is assessed but never starts ketamine.
2. **Return to use**: proportional hazards with a Weibull baseline (shape ``weibull_shape``),
   ``S(t) = exp(-(t / scale_s)**k * exp(lp))`` with substance-specific ``scale_s`` set by the median for the
   reference patient (``ketamine only``, male, age 40, 1 prior treatment) and
   ``lp = log(hr_therapy)·therapy + log(hr_female)·female + log(hr_age_per_10y)·(age−40)/10
   + log(hr_per_prior_treatment)·(prior−1)``. The relapse day is the continuous time rounded up (≥ 1).
3. **Leaving follow-up**: independent exponential times to ``lost_to_follow_up``, ``withdrew`` and
   ``deceased``, independent of relapse and of every covariate (non-informative censoring); administrative
   censoring at the upload date.
4. **Follow-ups** scheduled at about 30, 90, 180, 365 days, each missed at a site-specific rate. The use
   fields agree with the contract's derivation: follow-ups before the relapse show no use after day 0; the
   first follow-up after it has ``any_use = yes`` (and ``relapse_date`` = the true day in a stated share of
   cases).
5. **Sessions**: baseline assessment, ketamine induction with early stopping, boosters, psychotherapy and
   integration for the therapy program, reassessments; per-session adverse events at route-specific rates.
6. **PHQ-9 / GAD-7 / craving**: piecewise-linear mixed models on ``weeks`` since day 0 with a knot at week 4
   (fast drop during induction, then a slow partial rebound), a random intercept and a random slope on
   ``weeks``; rounded and clipped to their scale (see :class:`Trajectory`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from analytics.errors import InsufficientData, OutcomesError

DEFAULT_SEED = 20261125
DEFAULT_START = date(2024, 1, 1)
DEFAULT_UPLOAD = date(2026, 10, 31)

THERAPY = "ketamine + therapy"
KETAMINE_ONLY = "ketamine only"
ROUTES = ("iv", "im", "sublingual", "intranasal")
SUBSTANCES = ("alcohol", "opioids", "cocaine", "methamphetamine", "cannabis", "other")
SEXES = ("male", "female", "other", "unknown")
SITES = ("Northside", "Riverside", "Harbor", "Eastgate")
# adverse events drawn directly at per-session rates (hypertension/tachycardia come from the vital signs)
DIRECT_AES = ("dizziness", "nausea", "vomiting", "hallucinations", "dissociation", "headache", "anxiety",
              "sedation", "other")
SESSION_TYPES = ("ketamine", "psychotherapy", "integration", "assessment")
_KET, _PSY, _INT, _ASM = range(4)
# usual (not raised) rise of systolic, diastolic and heart rate on a ketamine session, by route; the raised
# shares are drawn directly, so these only shape the ordinary values
_USUAL_RISE = ((14.0, 13.0, 7.0, 9.0), (8.0, 7.0, 4.0, 5.0), (10.0, 9.0, 5.0, 7.0))
AE_ORDER = ("dizziness", "nausea", "vomiting", "hypertension", "tachycardia", "hallucinations",
            "dissociation", "headache", "anxiety", "sedation", "other")

SESSION_COLUMNS = ("patient_id", "session_date", "session_type", "route", "dose_mg", "weight_kg", "phq9",
                   "gad7", "craving", "bp_systolic_max", "bp_diastolic_max", "heart_rate_max",
                   "adverse_events", "site", "clinician")
FOLLOWUP_COLUMNS = ("patient_id", "assessment_date", "window_days", "days_abstinent", "heavy_days", "any_use",
                    "relapse_date", "phq9", "gad7", "craving", "urine_tox", "status",
                    "urine_substances", "audit_c", "bam_use", "bam_risk", "bam_protective")  # contract v2 (#22)
PATIENT_COLUMNS = ("patient_id", "primary_substance", "program", "sex", "age", "site", "prior_treatments",
                   "prescribed")  # contract v2 (#22)
DAILY_USE_COLUMNS = ("patient_id", "date", "substance", "used", "amount")
# issue 22: session monitoring and misuse-watch columns, drawn from their own random stream (appended at the end;
# every column above stays byte-identical)
MONITORING_COLUMNS = ("bp_systolic_pre", "bp_diastolic_pre", "bp_systolic_40min", "bp_diastolic_40min",
                      "bp_systolic_discharge", "bp_diastolic_discharge", "minutes_to_discharge", "sedation_score",
                      "dissociation_score", "event_severity", "action_taken", "take_home_issue", "urinary_symptoms")
SESSION_COLUMNS = SESSION_COLUMNS + MONITORING_COLUMNS
MONITORING_STREAM = 2202  # np.random.default_rng([seed, MONITORING_STREAM])


def _ro(mapping: dict) -> Mapping:  # type: ignore[type-arg]
    return MappingProxyType(mapping)


@dataclass(frozen=True)
class Trajectory:
    """Piecewise-linear mixed model of one score in ``weeks`` since day 0, with a knot at ``knot_weeks``.

    ``y = b0 + u0 + (b1 + b1t·therapy + u1)·weeks + (b2 + b2t·therapy)·max(weeks − knot, 0) + e``, where the
    early slope (up to the knot, also before day 0) is ``b1 = slope_per_week`` (+ ``b1t =
    therapy_slope_per_week`` in ``ketamine + therapy``) and the late slope after the knot is
    ``late_slope_per_week`` (+ ``therapy_late_slope_per_week``), so ``b2 = late − early`` is the change of
    slope at the knot. ``(u0, u1)`` are bivariate normal per patient (sds ``sd_intercept``, ``sd_slope``,
    correlation ``corr``); the patient's slope deviation ``u1`` is on ``weeks`` and so carries past the knot,
    exactly as the fitted model ``(1 + weeks | patient)`` has it. ``e`` is normal with sd ``sd_residual``; the
    value is rounded to an integer and clipped to ``[0, top]``.
    """

    intercept: float
    slope_per_week: float
    therapy_slope_per_week: float
    late_slope_per_week: float
    therapy_late_slope_per_week: float
    sd_intercept: float
    sd_slope: float
    corr: float
    sd_residual: float
    top: int
    knot_weeks: float = 4.0
    relapse_shift: float = 0.0  # added on and after the true relapse day (craving only)

    def mean(self, weeks: float | np.ndarray, *, therapy: bool | np.ndarray = False) -> np.ndarray:
        """True population mean (before rounding and clipping) at ``weeks`` since day 0."""
        w = np.asarray(weeks, dtype=float)
        t = np.asarray(therapy, dtype=float)
        early = self.slope_per_week + self.therapy_slope_per_week * t
        late = self.late_slope_per_week + self.therapy_late_slope_per_week * t
        return self.intercept + early * w + (late - early) * np.maximum(w - self.knot_weeks, 0.0)

    def fixed_effects(self) -> dict[str, float]:
        """True coefficients of the piecewise model ``(weeks + weeks_after_<knot>) * therapy``.

        Keys: ``Intercept``, ``weeks``, ``weeks_after_<knot>``, ``therapy`` (always 0: no baseline
        difference), ``weeks:therapy``, ``weeks_after_<knot>:therapy`` — the terms of
        ``analytics.outcomes.trajectories.fit_trajectory(time="piecewise", by="program")`` with ``therapy`` standing for
        ``program[T.ketamine + therapy]``.
        """
        after = f"weeks_after_{self.knot_weeks:g}"
        return {"Intercept": self.intercept, "weeks": self.slope_per_week,
                after: self.late_slope_per_week - self.slope_per_week, "therapy": 0.0,
                "weeks:therapy": self.therapy_slope_per_week,
                f"{after}:therapy": self.therapy_late_slope_per_week - self.therapy_slope_per_week}


@dataclass(frozen=True)
class SubstanceEffects:
    """True parameters of the contract-v2 substance-use fields (drawn from their own random stream, so every other
    column of the clinic is the same with or without them).

    * **Prescribed medicines** (patients ``prescribed``): a share of opioid patients take buprenorphine or methadone,
      a share of alcohol patients benzodiazepines; every urine test done finds them (never a return to use).
    * **Urine by substance** (follow-ups ``urine_substances``, on tests done): the primary substance's analyte
      (alcohol → alcohol, opioids → opioids (+ fentanyl in a share), cocaine, methamphetamine → amphetamines,
      cannabis, other) exactly when ``urine_tox`` is positive (use in the last 3 days, as before); cannabis as well
      on a share of those positive tests of non-cannabis patients, by program (co-use only when using, so return to
      use is unchanged); ketamine in a share of tests within 7 days after a ketamine session; prescribed medicines.
      So the urine-negative share of the primary substance (prescribed and in-treatment ketamine excluded) equals
      the ``urine_tox`` negative share, and e.g. the cannabis-positive share among primary-positive tests is
      ``cannabis_couse_by_program``.
    * **AUDIT-C** (alcohol patients, follow-ups): ``round(2 + 8 · (1 − PDA) + N(0, 1.5²))`` clipped to 0–12, so it
      falls as days abstinent rise (PDA = days_abstinent / window_days of the same follow-up).
    * **BAM** (follow-ups): use = ``round(10 · (1 − PDA) + N(0, 1))`` (0–12); risk = ``round(12 − 4 · min(day, 180)
      / 180 − 2 · therapy + N(0, 2.5²))`` (0–24); protective = ``round(10 + 4 · min(day, 180) / 180 + 2 · therapy +
      N(0, 2.5²))`` (0–24).
    * **Daily use log** (daily_use.csv) for a share of started alcohol patients: one row per day from day 0 to the
      earlier of leaving, the upload date and day 365; no use before the true relapse day, use on it, then use on
      each day with the patient's ``use_share``; a use day is heavy with the patient's ``heavy_share``
      (drinks = heavy threshold (4 women, other and unknown sex; 5 men) + Poisson(2)), else 1 … threshold − 1.
    """

    opioid_prescribed_share: float = 0.50
    opioid_medicine_share: Mapping[str, float] = field(default_factory=lambda: _ro(
        {"buprenorphine": 0.70, "methadone": 0.30}))
    alcohol_benzodiazepine_share: float = 0.10
    fentanyl_share: float = 0.40  # of opioid-positive tests
    cannabis_couse_by_program: Mapping[str, float] = field(default_factory=lambda: _ro(
        {"ketamine + therapy": 0.15, "ketamine only": 0.30}))
    ketamine_detected_within_7_days: float = 0.90
    audit_c: tuple[float, float, float] = (2.0, 8.0, 1.5)  # intercept, per (1 − PDA), residual SD
    audit_c_recorded: float = 0.80  # of alcohol patients' follow-ups
    bam_recorded: float = 0.60  # of follow-ups
    bam_use: tuple[float, float] = (10.0, 1.0)  # per (1 − PDA), residual SD
    bam_risk: tuple[float, float, float, float] = (12.0, -4.0, -2.0, 2.5)  # intercept, by day 180, therapy, SD
    bam_protective: tuple[float, float, float, float] = (10.0, 4.0, 2.0, 2.5)
    daily_log_share: float = 0.40  # of started alcohol patients
    daily_log_last_day: int = 365
    heavy_drinks_women: int = 4
    heavy_drinks_men: int = 5


@dataclass(frozen=True)
class InformativeDropout:
    """Early dropout that depends on the risk of return to use (an option of :class:`TrueEffects`, off by default).

    Each started patient drops out (``lost_to_follow_up``) before the first follow-up, on a day drawn uniformly from
    ``1 … first_day_max``, with probability ``logit⁻¹(logit(share_at_mean_risk) + log(odds_ratio_per_sd) · z)``, ``z``
    the patient's standardised linear predictor of return to use (step 2 of the module notes: therapy, sex, age,
    prior treatments; substance through its median). Patients at higher risk of return to use thus leave before any
    follow-up more often: the "dropout censored" analysis, which cannot see them, is optimistic, and "dropout as
    return to use" pessimistic. The patient's latent return-to-use day is unchanged (the truth to recover). Drawn from
    a separate random stream, so every other value of the clinic is the same with the option on or off.
    """

    share_at_mean_risk: float = 0.20
    odds_ratio_per_sd: float = 3.0
    first_day_max: int = 20  # before the earliest first follow-up (day 30 − 7)


@dataclass(frozen=True)
class TrueEffects:
    """Every true parameter of the sample clinic (rates are probabilities per session or per follow-up)."""

    # --- patients -------------------------------------------------------------------------------------
    site_share: Mapping[str, float] = field(default_factory=lambda: _ro(
        {"Northside": 0.35, "Riverside": 0.30, "Harbor": 0.20, "Eastgate": 0.15}))
    clinicians: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: _ro(
        {"Northside": ("C01", "C02", "C03"), "Riverside": ("C04", "C05", "C06"), "Harbor": ("C07", "C08"),
         "Eastgate": ("C09",)}))
    therapy_share_by_site: Mapping[str, float] = field(default_factory=lambda: _ro(
        {"Northside": 0.70, "Riverside": 0.60, "Harbor": 0.50, "Eastgate": 0.45}))
    substance_share: Mapping[str, float] = field(default_factory=lambda: _ro(
        {"alcohol": 0.40, "opioids": 0.20, "cocaine": 0.12, "methamphetamine": 0.10, "cannabis": 0.10,
         "other": 0.08}))
    sex_share: Mapping[str, float] = field(default_factory=lambda: _ro(
        {"male": 0.62, "female": 0.36, "other": 0.01, "unknown": 0.01}))
    age_beta: tuple[float, float] = (2.2, 4.0)  # age = floor(18 + 62 · Beta(a, b)): 18–79, mean ≈ 40
    prior_treatments_mean: float = 1.2  # Poisson, capped at 12
    weight_mean_kg: Mapping[str, float] = field(default_factory=lambda: _ro({"male": 86.0, "female": 72.0}))
    weight_sd_kg: float = 15.0
    never_started_share: float = 0.02  # assessed, no ketamine session, no follow-up
    intake_stops_days_before_end: int = 45  # intake runs from the start date until 45 days before the upload
    # date (989 days for the defaults; at least half the period when the dates are close); volume rises linearly
    intake_growth: float = 0.6  # intake density ∝ 1 + growth · (fraction of the intake period)
    assessment_days_before_index: tuple[int, int] = (1, 14)

    # --- return to use (proportional hazards, Weibull baseline) -------------------------------------------
    weibull_shape: float = 0.8
    median_days_by_substance: Mapping[str, float] = field(default_factory=lambda: _ro(
        {"methamphetamine": 80.0, "opioids": 110.0, "cocaine": 150.0, "alcohol": 210.0, "other": 260.0,
         "cannabis": 330.0}))  # reference patient: ketamine only, male, age 40, 1 prior treatment
    hr_therapy: float = 0.60  # ketamine + therapy vs ketamine only
    hr_female: float = 0.90
    hr_age_per_10y: float = 0.90  # per 10 years above 40
    hr_per_prior_treatment: float = 1.10  # per treatment above 1
    relapse_date_recorded: float = 0.70  # share of first post-relapse follow-ups that give relapse_date

    # --- leaving follow-up (independent of relapse and covariates) ---------------------------------------
    annual_lost_to_follow_up: float = 0.18
    annual_withdrew: float = 0.05
    annual_deceased: float = 0.006

    # --- follow-ups --------------------------------------------------------------------------------------
    followup_days: tuple[int, ...] = (30, 90, 180, 365)
    followup_jitter_days: tuple[int, ...] = (7, 14, 21, 30)  # uniform ± around each scheduled day
    missed_by_site: Mapping[str, float] = field(default_factory=lambda: _ro(
        {"Northside": 0.15, "Riverside": 0.18, "Harbor": 0.20, "Eastgate": 0.35}))
    window_days_by_site: Mapping[str, int] = field(default_factory=lambda: _ro(
        {"Northside": 30, "Riverside": 30, "Harbor": 28, "Eastgate": 30}))
    window_90_share_late: float = 0.25  # 180- and 365-day follow-ups asking about 90 days
    pre_index_use_share: float = 0.6  # share of days used before the last pre-index use day
    last_use_days_before_assessment: tuple[int, int] = (0, 14)
    use_day_share_beta: tuple[float, float] = (2.0, 4.0)  # per patient: share of days used after relapse
    heavy_share_beta: tuple[float, float] = (2.0, 3.0)  # per patient: share of use days that are heavy
    urine_not_done: float = 0.25
    urine_lookback_days: int = 3  # urine is positive iff a use day falls in the last 3 days (no false +)
    missing_days_abstinent: float = 0.03
    missing_heavy_days: float = 0.08
    missing_any_use: float = 0.04  # never on the follow-up that first reports a relapse
    missing_status: float = 0.05  # only on 'active' rows

    # --- sessions ----------------------------------------------------------------------------------------
    route_share: Mapping[str, float] = field(default_factory=lambda: _ro(
        {"iv": 0.40, "im": 0.25, "sublingual": 0.20, "intranasal": 0.15}))
    induction_plan_share: Mapping[int, float] = field(default_factory=lambda: _ro({4: 0.5, 6: 0.5}))
    # 4 sessions weekly (7 ± 1 days apart) or 6 twice weekly (3–4 days apart); after each session the
    # patient continues with probability 0.70**(1/3), so 70% reach a 4th session (all within 28 days)
    induction_reach_4: float = 0.70
    booster_share: float = 0.30  # of patients with ≥ 3 induction sessions
    booster_count_mean: float = 2.0  # 1 + Poisson, at most 8; first on day 42–70, then every 21–42 days
    therapy_prep_share: float = 0.80  # psychotherapy 1–7 days before day 0
    integration_share: float = 0.85  # integration 1–2 days after each ketamine session
    psychotherapy_weeks: tuple[int, int] = (4, 19)  # weekly psychotherapy in weeks 4–19
    psychotherapy_attended: float = 0.75
    reassessment: tuple[tuple[int, int, float], ...] = ((56, 7, 0.60), (182, 14, 0.40))  # day, ±, share
    iv_mg_per_kg: tuple[float, float, float] = (0.50, 0.05, 0.80)  # start, + per session, cap
    im_mg_per_kg: tuple[float, float, float] = (0.60, 0.10, 1.00)
    sublingual_mg: tuple[int, ...] = (100, 150, 200, 250, 300)  # by session number, then the last
    intranasal_mg: tuple[int, ...] = (50, 75, 100)
    weight_recorded: float = 0.90
    vitals_recorded: float = 0.95  # on ketamine sessions only

    # --- adverse events per ketamine session, by route (iv, im, sublingual, intranasal) --------------------
    ae_rates: Mapping[str, tuple[float, float, float, float]] = field(default_factory=lambda: _ro({
        "dissociation": (0.25, 0.20, 0.08, 0.12),
        "dizziness": (0.15, 0.14, 0.08, 0.12),
        "nausea": (0.10, 0.09, 0.06, 0.07),
        "vomiting": (0.03, 0.03, 0.015, 0.02),
        "hallucinations": (0.05, 0.04, 0.01, 0.02),
        "headache": (0.06, 0.05, 0.04, 0.08),
        "anxiety": (0.04, 0.04, 0.03, 0.03),
        "sedation": (0.08, 0.07, 0.10, 0.06),
        "other": (0.01, 0.01, 0.01, 0.01),
    }))
    # share of ketamine sessions (with vitals) where bp_systolic_max ≥ 165 or bp_diastolic_max ≥ 100
    raised_bp_rate: tuple[float, float, float, float] = (0.12, 0.10, 0.04, 0.06)
    hypertension_recorded: float = 0.70  # 'hypertension' AE written for this share of raised-BP sessions
    # share of ketamine sessions (with vitals) where heart_rate_max ≥ 120
    tachycardia_rate: tuple[float, float, float, float] = (0.06, 0.05, 0.02, 0.03)
    tachycardia_recorded: float = 0.60

    # --- session monitoring and misuse watch (issue 22; own random stream, ketamine sessions only) -----------
    monitoring_recorded: float = 0.90  # share of ketamine sessions with BP before, at ~40 min and at discharge
    bp_rise_40min_rate: tuple[float, float, float, float] = (0.06, 0.05, 0.02, 0.03)  # systolic rise ≥ 40 mmHg
    # by route (iv, im, sublingual, intranasal): 40 + Exponential(8) mmHg; otherwise a rise of Normal(12, 8),
    # kept below 40; pre-dose systolic Normal(126, 12) clipped to 95–175, diastolic Normal(79, 8) clipped to 55–105
    minutes_to_discharge_median: tuple[float, float, float, float] = (70.0, 75.0, 90.0, 120.0)  # by route
    # minutes = round(median · exp(Normal(0, 0.25))): the median is the true median, IQR ≈ median · (0.845–1.184)
    sedation_share: Mapping[int, float] = field(default_factory=lambda: _ro(
        {5: 0.60, 4: 0.25, 3: 0.10, 2: 0.04, 1: 0.01}))  # MOAA/S, every route
    dissociation_mean: tuple[float, float, float, float] = (8.0, 7.0, 3.0, 5.0)  # CADSS-6 0–24, Binomial(24, m/24)
    serious_event_rate: float = 0.002  # per ketamine session: event_severity 'serious', action 'transfer'
    severe_event_rate: float = 0.005  # 'severe', action 'medication'
    moderate_event_rate: float = 0.03  # 'moderate', action 'observation' or 'medication' (half each)
    # otherwise 'mild' when adverse_events is not empty (action 'observation' for 30%, else 'no_action'), else
    # 'no_event' (with 'no_action')
    take_home_issue_rate: Mapping[str, float] = field(default_factory=lambda: _ro(
        {"early_refill": 0.010, "lost": 0.005}))  # per sublingual session (take-home route); empty elsewhere
    urinary_asked: float = 0.50  # share of ketamine sessions where urinary symptoms are asked about
    urinary_symptoms_rate: float = 0.02  # 'yes' among those asked

    # --- repeated measures -------------------------------------------------------------------------------
    # piecewise: fast drop during induction (weeks 0–4), then a slow partial rebound; see Trajectory
    phq9: Trajectory = Trajectory(intercept=15.5, slope_per_week=-1.6, therapy_slope_per_week=-0.4,
                                  late_slope_per_week=0.05, therapy_late_slope_per_week=-0.03,
                                  sd_intercept=3.5, sd_slope=0.10, corr=-0.2, sd_residual=2.5, top=27)
    gad7: Trajectory = Trajectory(intercept=12.0, slope_per_week=-1.0, therapy_slope_per_week=-0.25,
                                  late_slope_per_week=0.03, therapy_late_slope_per_week=-0.02,
                                  sd_intercept=3.0, sd_slope=0.07, corr=-0.2, sd_residual=2.0, top=21)
    craving: Trajectory = Trajectory(intercept=6.0, slope_per_week=-0.5, therapy_slope_per_week=-0.15,
                                     late_slope_per_week=0.02, therapy_late_slope_per_week=-0.01,
                                     sd_intercept=1.5, sd_slope=0.03, corr=0.0, sd_residual=1.2, top=10,
                                     relapse_shift=1.5)
    phq9_recorded: Mapping[str, float] = field(default_factory=lambda: _ro(
        {"assessment": 0.97, "ketamine": 0.50, "psychotherapy": 0.30, "integration": 0.0, "followup": 0.90}))
    gad7_given_phq9: float = 0.85
    craving_recorded: Mapping[str, float] = field(default_factory=lambda: _ro(
        {"assessment": 0.90, "ketamine": 0.60, "psychotherapy": 0.0, "integration": 0.0, "followup": 0.85}))
    substance_use: SubstanceEffects = SubstanceEffects()  # contract-v2 fields (#22), their own random stream

    # --- informative early dropout (off in the bundled sample) ------------------------------------------------
    informative_dropout: InformativeDropout | None = None

    @property
    def therapy_share(self) -> float:
        """Expected share of patients in ``ketamine + therapy``."""
        return sum(self.site_share[s] * self.therapy_share_by_site[s] for s in SITES)

    @property
    def missed_followup_share(self) -> float:
        """Expected share of scheduled follow-ups (while still in follow-up) that are missed."""
        return sum(self.site_share[s] * self.missed_by_site[s] for s in SITES)

    def relapse_hazard_ratio(self, substance: str, reference: str = "alcohol") -> float:
        """True hazard ratio of one substance against another (same other covariates)."""
        m = self.median_days_by_substance
        return float((m[reference] / m[substance]) ** self.weibull_shape)

    def reference_survival(self, substance: str, day: float, *, therapy: bool = False) -> float:
        """True probability of no return to use by ``day`` for the reference patient of a substance."""
        k = self.weibull_shape
        h = math.log(2.0) * (day / self.median_days_by_substance[substance]) ** k
        return math.exp(-h * (self.hr_therapy if therapy else 1.0))

    def ae_rate(self, event: str, route: str) -> float:
        """True per-session probability that ``event`` is recorded on a ketamine session by ``route``."""
        r = ROUTES.index(route)
        if event == "hypertension":
            return self.vitals_recorded * self.raised_bp_rate[r] * self.hypertension_recorded
        if event == "tachycardia":
            return self.vitals_recorded * self.tachycardia_rate[r] * self.tachycardia_recorded
        return self.ae_rates[event][r]


TRUE_EFFECTS = TrueEffects()


# ------------------------------------------------------------------------------------------------------------
# public API
# ------------------------------------------------------------------------------------------------------------

def generate_clinic(n_patients: int, *, seed: int = DEFAULT_SEED, start: date = DEFAULT_START,
                    end: date = DEFAULT_UPLOAD, effects: TrueEffects = TRUE_EFFECTS,
                    with_truth: bool = False) -> dict[str, pd.DataFrame]:
    """Simulate a clinic and return its three exports as a clinic's CSV files would hold them.

    Parameters
    ----------
    n_patients:
        Number of patients (≥ 1).
    seed:
        Seed of numpy's ``default_rng``; the same seed gives identical frames.
    start:
        First intake day. Intake runs until ``effects.intake_stops_days_before_end`` days before ``end``
        (over at least the first half of the period when the dates are close).
    end:
        Upload date: no session or follow-up is after it (administrative censoring).
    effects:
        The true parameters (default :data:`TRUE_EFFECTS`).
    with_truth:
        Also return ``"truth"``: one row per patient with the latent values (for tests): ``patient_id``,
        ``started``, ``index_date``, ``therapy``, ``relapse_day`` (true day of return to use since day 0,
        possibly after the end of follow-up), ``leave_day`` (day of leaving follow-up, inf if never),
        ``leave_reason``, ``admin_day`` (upload date in days since day 0), ``followups_due`` (scheduled
        follow-ups that fell while the patient was still followed and before the upload date, attended or
        missed), ``phq9_u0``, ``phq9_u1`` (the patient's PHQ-9 random intercept and slope).

    Returns
    -------
    dict[str, pandas.DataFrame]
        ``"sessions"``, ``"followups"``, ``"patients"`` with the canonical columns of data-contract.md, in
        contract order. Dates are ISO strings, ``patient_id`` is zero-padded text, ``any_use`` is
        ``yes``/``no``, ``adverse_events`` is ``;``-joined; integers are nullable ``Int64``; missing is NA.
    """
    if n_patients < 1:
        raise InsufficientData(f"A sample clinic needs at least 1 patient (got {n_patients}); "
                               "ask for 1 or more patients.")
    if end <= start:
        raise OutcomesError(f"The upload date {end.isoformat()} is not after the start date "
                            f"{start.isoformat()}; choose an upload date after the start.")
    return _Simulation(int(n_patients), seed=seed, start=start, end=end, fx=effects).run(with_truth)


def write_clinic(out_dir: str | Path, n_patients: int, seed: int = DEFAULT_SEED) -> dict[str, Path]:
    """Generate a clinic and write ``sessions.csv``, ``followups.csv``, ``patients.csv`` into ``out_dir``.

    The folder is created when missing; existing files of those names are replaced. Files are UTF-8 with a
    header row, comma-separated, unquoted (no value contains a comma, quote or line break), empty cells for
    missing values. Written with pyarrow (about 7× faster than ``DataFrame.to_csv`` at 1M rows).

    Returns
    -------
    dict[str, pathlib.Path]
        ``{"sessions": path, "followups": path, "patients": path}``.
    """
    frames = generate_clinic(n_patients, seed=seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name in ("sessions", "followups", "patients", "daily_use"):
        paths[name] = out / f"{name}.csv"
        _write_csv(frames[name], paths[name])
    return paths


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    with open(path, "wb") as fh:
        fh.write((",".join(frame.columns) + "\n").encode("utf-8"))
        options = pacsv.WriteOptions(include_header=False, quoting_style="none")
        pacsv.write_csv(table, fh, write_options=options)


def true_effects_table(effects: TrueEffects = TRUE_EFFECTS) -> pd.DataFrame:
    """The documented true parameters as a tidy table: ``group``, ``parameter``, ``value``.

    ``sample_data/README.md`` embeds :func:`true_effects_markdown` of this table.
    """
    fx = effects
    rows: list[tuple[str, str, str]] = []

    def add(group: str, parameter: str, value: object) -> None:
        rows.append((group, parameter, str(value)))

    add("patients", "sites (share of patients)", ", ".join(f"{s} {fx.site_share[s]:.0%}" for s in SITES))
    add("patients", "clinicians nested in sites",
        "; ".join(f"{s}: {', '.join(fx.clinicians[s])}" for s in SITES))
    add("patients", "share in 'ketamine + therapy' by site (rest 'ketamine only')",
        ", ".join(f"{s} {fx.therapy_share_by_site[s]:.0%}" for s in SITES)
        + f" (overall {fx.therapy_share:.1%})")
    add("patients", "primary substance", ", ".join(f"{k} {v:.0%}" for k, v in fx.substance_share.items()))
    add("patients", "sex", ", ".join(f"{k} {v:.0%}" for k, v in fx.sex_share.items()))
    add("patients", "age at intake", f"floor(18 + 62·Beta{fx.age_beta}): 18–79, mean ≈ 40")
    add("patients", "prior treatments", f"Poisson(mean {fx.prior_treatments_mean}), at most 12")
    add("patients", "weight (kg)", f"normal, mean male {fx.weight_mean_kg['male']:.0f} / female "
        f"{fx.weight_mean_kg['female']:.0f} (others 80), sd {fx.weight_sd_kg:.0f}, clipped to 42–180")
    add("patients", "assessed but never started ketamine", f"{fx.never_started_share:.0%}")
    add("patients", "intake period", f"from the start date until {fx.intake_stops_days_before_end} days "
        "before the upload date (2024-01-01 to 2026-09-16 for the defaults); volume rises linearly "
        f"(density ∝ 1 + {fx.intake_growth}·fraction of the period)")
    add("patients", "baseline assessment", f"{fx.assessment_days_before_index[0]}–"
        f"{fx.assessment_days_before_index[1]} days before the first ketamine session (day 0)")

    add("return to use", "model", f"proportional hazards, Weibull baseline, shape {fx.weibull_shape}")
    add("return to use", "median days, reference patient (ketamine only, male, 40 y, 1 prior treatment)",
        ", ".join(f"{k} {v:.0f}" for k, v in fx.median_days_by_substance.items()))
    add("return to use", "hazard ratio vs alcohol (same covariates)",
        ", ".join(f"{k} {fx.relapse_hazard_ratio(k):.2f}" for k in fx.median_days_by_substance))
    add("return to use", "hazard ratio ketamine + therapy vs ketamine only", f"{fx.hr_therapy:.2f}")
    add("return to use", "hazard ratio female vs male", f"{fx.hr_female:.2f}")
    add("return to use", "hazard ratio per 10 years of age above 40", f"{fx.hr_age_per_10y:.2f}")
    add("return to use", "hazard ratio per prior treatment above 1", f"{fx.hr_per_prior_treatment:.2f}")
    add("return to use", "first follow-up after relapse gives relapse_date (= true day)",
        f"{fx.relapse_date_recorded:.0%}; otherwise the event day is that assessment's date")

    add("follow-up", "scheduled days (± uniform jitter)",
        ", ".join(f"{d} ± {j}" for d, j in zip(fx.followup_days, fx.followup_jitter_days, strict=True)))
    add("follow-up", "missed (per scheduled follow-up, by site)",
        ", ".join(f"{s} {fx.missed_by_site[s]:.0%}" for s in SITES)
        + f" (overall {fx.missed_followup_share:.1%})")
    add("follow-up", "leaving follow-up (annual probability; independent of relapse and covariates)",
        f"lost_to_follow_up {fx.annual_lost_to_follow_up:.0%}, withdrew {fx.annual_withdrew:.0%}, "
        f"deceased {fx.annual_deceased:.1%}")
    add("follow-up", "window_days", "30 (Harbor: 28); 180- and 365-day follow-ups ask about 90 days in "
        f"{fx.window_90_share_late:.0%} of cases")
    add("follow-up", "urine_tox", f"not_done {fx.urine_not_done:.0%}; positive iff a use day falls in the "
        f"last {fx.urine_lookback_days} days (sensitivity < 1, no false positives)")
    add("follow-up", "before treatment", f"last use {fx.last_use_days_before_assessment[0]}–"
        f"{fx.last_use_days_before_assessment[1]} days before the baseline assessment; "
        f"{fx.pre_index_use_share:.0%} of the days before it are use days (seen only in windows reaching "
        "before day 0)")
    add("follow-up", "after relapse", f"share of days used per patient ~ Beta{fx.use_day_share_beta}; "
        f"share of use days heavy ~ Beta{fx.heavy_share_beta}")
    add("follow-up", "missing values", f"days_abstinent {fx.missing_days_abstinent:.0%}, heavy_days "
        f"{fx.missing_heavy_days:.0%}, any_use {fx.missing_any_use:.0%} (never on the row reporting the "
        f"relapse), status {fx.missing_status:.0%} of 'active' rows")

    add("sessions", "route of ketamine (per patient)",
        ", ".join(f"{k} {v:.0%}" for k, v in fx.route_share.items()))
    add("sessions", "induction", "4 weekly sessions (50%) or 6 twice-weekly sessions (50%); "
        f"{fx.induction_reach_4:.0%} reach a 4th session (all within 28 days), the rest stop after 1–3 at a "
        "constant per-session rate; sessions also stop when a patient leaves follow-up")
    add("sessions", "dose_mg", f"iv {fx.iv_mg_per_kg[0]} mg/kg + {fx.iv_mg_per_kg[1]} per session (max "
        f"{fx.iv_mg_per_kg[2]}); im {fx.im_mg_per_kg[0]} + {fx.im_mg_per_kg[1]} (max {fx.im_mg_per_kg[2]}); "
        f"sublingual {'/'.join(map(str, fx.sublingual_mg))} mg; "
        f"intranasal {'/'.join(map(str, fx.intranasal_mg))} mg")
    add("sessions", "boosters", f"{fx.booster_share:.0%} of patients with ≥ 3 induction sessions; "
        f"1 + Poisson({fx.booster_count_mean}) (max 8), from day 42–70 every 21–42 days")
    add("sessions", "therapy program", f"preparation psychotherapy {fx.therapy_prep_share:.0%}; integration "
        f"after {fx.integration_share:.0%} of ketamine sessions; weekly psychotherapy weeks "
        f"{fx.psychotherapy_weeks[0]}–{fx.psychotherapy_weeks[1]} ({fx.psychotherapy_attended:.0%} attended)")
    add("sessions", "reassessments", ", ".join(f"day {d} ± {j} ({p:.0%})" for d, j, p in fx.reassessment))
    for ev, rates in fx.ae_rates.items():
        add("adverse events per ketamine session", ev,
            ", ".join(f"{r} {p:.1%}" for r, p in zip(ROUTES, rates, strict=True)))
    add("adverse events per ketamine session", "raised BP (bp_systolic_max ≥ 165 or bp_diastolic_max ≥ 100)",
        ", ".join(f"{r} {p:.0%}" for r, p in zip(ROUTES, fx.raised_bp_rate, strict=True))
        + f" of sessions with vitals ({fx.vitals_recorded:.0%}); 'hypertension' recorded for "
          f"{fx.hypertension_recorded:.0%} of them")
    add("adverse events per ketamine session", "heart_rate_max ≥ 120",
        ", ".join(f"{r} {p:.0%}" for r, p in zip(ROUTES, fx.tachycardia_rate, strict=True))
        + f" of sessions with vitals; 'tachycardia' recorded for {fx.tachycardia_recorded:.0%} of them")

    for name in ("phq9", "gad7", "craving"):
        t: Trajectory = getattr(fx, name)
        k = f"{t.knot_weeks:g}"
        m0 = (float(t.mean(-1.0)), float(t.mean(-1.0, therapy=True)))
        m4 = (float(t.mean(t.knot_weeks)), float(t.mean(t.knot_weeks, therapy=True)))
        text = (f"piecewise linear, knot at week {k}: intercept (day 0) {t.intercept}; slope to week {k} "
                f"{t.slope_per_week}/week (ketamine only), therapy adds {t.therapy_slope_per_week}/week; slope "
                f"after week {k} {t.late_slope_per_week:+}/week (ketamine only), therapy adds "
                f"{t.therapy_late_slope_per_week}/week; mean (ketamine only / + therapy) {m0[0]:.1f} / {m0[1]:.1f} at "
                f"week −1 (baseline; the early line extends before day 0), {m4[0]:.1f} / {m4[1]:.1f} at week {k}; "
                "sd_intercept {t.sd_intercept}, sd_slope "
                f"{t.sd_slope} (on weeks, all periods), corr {t.corr}, sd_residual {t.sd_residual}; rounded, "
                f"clipped to 0–{t.top}")
        if t.relapse_shift:
            text += f"; +{t.relapse_shift} from the relapse day on"
        add("repeated measures", name, text)
    add("repeated measures", "time scale",
        "weeks = days since day 0 / 7; scores from day −14 to about day 395")
    add("repeated measures", "PHQ-9 recorded at",
        ", ".join(f"{k} {v:.0%}" for k, v in fx.phq9_recorded.items() if v)
        + "; at most one per patient and day")
    add("repeated measures", "GAD-7 and craving recorded",
        f"GAD-7 with {fx.gad7_given_phq9:.0%} of PHQ-9 scores; craving at "
        + ", ".join(f"{k} {v:.0%}" for k, v in fx.craving_recorded.items() if v))
    _substance_rows(fx.substance_use, add)
    _monitoring_rows(fx, add)
    if fx.informative_dropout is not None:  # listed only when on (the bundled sample has it off)
        d = fx.informative_dropout
        add("follow-up", "informative early dropout (before any follow-up, day 1–"
            f"{d.first_day_max})", f"{d.share_at_mean_risk:.0%} at average risk of return to use; odds ratio "
            f"{d.odds_ratio_per_sd:g} per SD of the return-to-use linear predictor")
    return pd.DataFrame(rows, columns=["group", "parameter", "value"])


def _substance_rows(su: SubstanceEffects, add) -> None:  # type: ignore[no-untyped-def]
    """The contract-v2 substance-use parameters (:class:`SubstanceEffects`) as rows of the true-effects table."""
    g = "substance use (contract v2)"
    add(g, "prescribed", f"opioid patients {su.opioid_prescribed_share:.0%} ("
        + ", ".join(f"{k} {v:.0%}" for k, v in su.opioid_medicine_share.items())
        + f"); alcohol patients benzodiazepines {su.alcohol_benzodiazepine_share:.0%}; found on every urine test done")
    add(g, "urine_substances", "primary substance's analyte exactly when urine_tox is positive; fentanyl on "
        f"{su.fentanyl_share:.0%} of opioid-positive tests; cannabis on positive tests of non-cannabis patients: "
        + ", ".join(f"{k} {v:.0%}" for k, v in su.cannabis_couse_by_program.items())
        + f"; ketamine on {su.ketamine_detected_within_7_days:.0%} of tests within 7 days after a ketamine session")
    a0, a1, asd = su.audit_c
    add(g, "audit_c", f"alcohol patients, {su.audit_c_recorded:.0%} of follow-ups: round({a0:g} + {a1:g}·(1 − PDA) "
        f"+ N(0, {asd:g}²)), 0–12")
    add(g, "bam_use / bam_risk / bam_protective", f"{su.bam_recorded:.0%} of follow-ups: use round("
        f"{su.bam_use[0]:g}·(1 − PDA) + N(0, {su.bam_use[1]:g}²)); risk {su.bam_risk[0]:g} {su.bam_risk[1]:+g}·"
        f"min(day,180)/180 {su.bam_risk[2]:+g}·therapy + N(0, {su.bam_risk[3]:g}²); protective "
        f"{su.bam_protective[0]:g} {su.bam_protective[1]:+g}·min(day,180)/180 {su.bam_protective[2]:+g}·therapy + "
        f"N(0, {su.bam_protective[3]:g}²)")
    add(g, "daily use log", f"{su.daily_log_share:.0%} of started alcohol patients, day 0 to the earlier of leaving, "
        f"the upload date and day {su.daily_log_last_day}; first use on the true relapse day; heavy day = "
        f"{su.heavy_drinks_women}+ drinks (women, other, unknown) / {su.heavy_drinks_men}+ (men)")


def _monitoring_rows(fx: TrueEffects, add: Callable[[str, str, object], None]) -> None:
    """Rows of :func:`true_effects_table` for the issue-22 session monitoring and misuse-watch columns."""
    g = "session monitoring"
    by_route = lambda v, f: ", ".join(f"{r} {f(x)}" for r, x in zip(ROUTES, v))
    add(g, "BP recorded before dosing, at ~40 min and at discharge", f"{fx.monitoring_recorded:.0%} of ketamine sessions")
    add(g, "systolic rise ≥ 40 mmHg at ~40 min (per session)", by_route(fx.bp_rise_40min_rate, lambda x: f"{x:.0%}"))
    add(g, "median minutes to discharge", by_route(fx.minutes_to_discharge_median, lambda x: f"{x:.0f}"))
    add(g, "sedation (MOAA/S) distribution", ", ".join(f"{k}: {v:.0%}" for k, v in fx.sedation_share.items()))
    add(g, "mean dissociation (CADSS-6, 0–24)", by_route(fx.dissociation_mean, lambda x: f"{x:.0f}"))
    add(g, "event severity per ketamine session",
        f"serious {fx.serious_event_rate:.1%} (transfer), severe {fx.severe_event_rate:.1%}, "
        f"moderate {fx.moderate_event_rate:.0%}; mild when an adverse event is listed")
    add(g, "take-home issues per sublingual session",
        ", ".join(f"{k} {v:.1%}" for k, v in fx.take_home_issue_rate.items()))
    add(g, "urinary symptoms", f"asked at {fx.urinary_asked:.0%} of ketamine sessions; yes in "
        f"{fx.urinary_symptoms_rate:.0%} of those")


def true_effects_markdown(effects: TrueEffects = TRUE_EFFECTS) -> str:
    """:func:`true_effects_table` as a Markdown table (embedded in ``sample_data/README.md``)."""
    table = true_effects_table(effects)
    lines = ["| group | parameter | true value |", "|---|---|---|"]
    lines += [f"| {g} | {p} | {v} |" for g, p, v in table.itertuples(index=False)]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------------
# simulation
# ------------------------------------------------------------------------------------------------------------

def _expand(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For per-owner counts: (owner index of each item, item number 0..count-1 within its owner)."""
    counts = np.asarray(counts, dtype=np.int64)
    owner = np.repeat(np.arange(len(counts)), counts)
    starts = np.cumsum(counts) - counts
    j = np.arange(len(owner)) - np.repeat(starts, counts)
    return owner, j


def _group_cumsum(values: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Cumulative sum within consecutive groups whose item numbers ``j`` restart at 0."""
    total = np.cumsum(values)
    first = j == 0
    base = (total - values)[first]
    group = np.cumsum(first) - 1
    return total - base[group]


def _choice(rng: np.random.Generator, shares: Mapping, n: int) -> np.ndarray:  # type: ignore[type-arg]
    p = np.array(list(shares.values()), dtype=float)
    return rng.choice(len(p), size=n, p=p / p.sum())


def _nullable_int(values: np.ndarray, present: np.ndarray | None = None) -> pd.arrays.IntegerArray:
    values = np.asarray(values)
    mask = ~present if present is not None else np.zeros(len(values), dtype=bool)
    if values.dtype.kind == "f":
        mask = mask | np.isnan(values)
        values = np.where(mask, 0, values)
    return pd.arrays.IntegerArray(values.astype(np.int64), mask)


def _text(values: np.ndarray, present: np.ndarray | None = None) -> pd.Series:
    arr = np.asarray(values, dtype=object)
    if present is not None:
        arr = arr.copy()
        arr[~present] = None
    return pd.Series(arr, dtype="str")


class _Simulation:
    """One run of the data-generating model (internal; see the module docstring)."""

    def __init__(self, n: int, *, seed: int, start: date, end: date, fx: TrueEffects) -> None:
        self.n, self.fx, self.start, self.end = n, fx, start, end
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.epoch = np.datetime64(start, "D")
        self.upload_day = (end - start).days  # days since the start date

    # -- patients -------------------------------------------------------------------------------------------
    def patients(self) -> None:
        fx, rng, n = self.fx, self.rng, self.n
        span = max(self.upload_day - fx.intake_stops_days_before_end, self.upload_day // 2)
        u = rng.random(n)
        g = fx.intake_growth
        x = (-1.0 + np.sqrt(1.0 + 2.0 * g * u * (1.0 + g / 2.0))) / g  # inverse CDF of density ∝ 1 + g x
        intake = np.sort(np.floor(x * span).astype(np.int64))
        lo, hi = fx.assessment_days_before_index
        lead = rng.integers(lo, hi + 1, n)
        index = np.minimum(intake + lead, self.upload_day)
        self.intake_day, self.index_day = index - lead, index
        self.lead = lead
        self.site = _choice(rng, fx.site_share, n)
        ncl = np.array([len(fx.clinicians[s]) for s in SITES])
        first_cl = np.cumsum(ncl) - ncl
        self.clinician_names = np.array([c for s in SITES for c in fx.clinicians[s]], dtype=object)
        self.clinician = first_cl[self.site] + np.floor(rng.random(n) * ncl[self.site]).astype(np.int64)
        self.therapist = first_cl[self.site] + np.floor(rng.random(n) * ncl[self.site]).astype(np.int64)
        self.therapy = rng.random(n) < np.array([fx.therapy_share_by_site[s] for s in SITES])[self.site]
        self.substance = _choice(rng, fx.substance_share, n)
        self.sex = _choice(rng, fx.sex_share, n)
        self.age = np.floor(18 + 62 * rng.beta(*fx.age_beta, n)).astype(np.int64)
        self.prior = np.minimum(rng.poisson(fx.prior_treatments_mean, n), 12)
        wmean = np.where(self.sex == 0, fx.weight_mean_kg["male"],
                         np.where(self.sex == 1, fx.weight_mean_kg["female"], 80.0))
        self.weight = np.clip(rng.normal(wmean, fx.weight_sd_kg), 42, 180)
        self.started = rng.random(n) >= fx.never_started_share
        self.route = _choice(rng, fx.route_share, n)
        width = max(6, len(str(3 * n)))
        numbers = np.sort(rng.choice(10 ** width - 1, size=n, replace=False) + 1)
        self.ids = np.array([f"{v:0{width}d}" for v in numbers.tolist()], dtype=object)

    # -- latent times
    def latent_times(self) -> None:
        fx, rng, n = self.fx, self.rng, self.n
        k = fx.weibull_shape
        medians = np.array([fx.median_days_by_substance[s] for s in SUBSTANCES])
        scale = medians[self.substance] / math.log(2.0) ** (1.0 / k)
        lp = (math.log(fx.hr_therapy) * self.therapy + math.log(fx.hr_female) * (self.sex == 1)
              + math.log(fx.hr_age_per_10y) * (self.age - 40) / 10.0
              + math.log(fx.hr_per_prior_treatment) * (self.prior - 1))
        t = scale * (rng.standard_exponential(n) * np.exp(-lp)) ** (1.0 / k)
        self.relapse_day = np.ceil(np.minimum(t, 1e7)).astype(np.int64)
        self.relapse_day = np.maximum(self.relapse_day, 1)
        rates = np.array([-math.log(1 - p) / 365.25 for p in (fx.annual_lost_to_follow_up, fx.annual_withdrew,
                                                             fx.annual_deceased)])
        times = rng.standard_exponential((n, 3)) / rates
        self.leave_reason = np.argmin(times, axis=1)
        self.leave_day = np.floor(times.min(axis=1)).astype(np.int64)
        if fx.informative_dropout is not None:
            self._informative_dropout(fx.informative_dropout, lp + np.log(medians[self.substance]) * -k)
        self.admin_day = self.upload_day - self.index_day  # last day (since day 0) that can be in the export
        # sessions after day 0 stop at the earlier of leaving and the upload date
        self.last_day = np.minimum(self.leave_day, self.admin_day)
        self.use_share = rng.beta(*fx.use_day_share_beta, n)
        self.heavy_share = rng.beta(*fx.heavy_share_beta, n)
        # last use before treatment: on or before the baseline assessment (so no use is reported after it)
        lo, hi = fx.last_use_days_before_assessment
        self.last_use = self.lead + rng.integers(lo, hi + 1, n)

    def _informative_dropout(self, opt: InformativeDropout, risk: np.ndarray) -> None:
        """Early dropout by risk of return to use (:class:`InformativeDropout`), from its own random stream."""
        rng = np.random.default_rng([self.seed, 19])
        z = (risk - risk.mean()) / (risk.std() or 1.0)
        logit = math.log(opt.share_at_mean_risk / (1.0 - opt.share_at_mean_risk)) + math.log(opt.odds_ratio_per_sd) * z
        drops = self.started & (rng.random(self.n) < 1.0 / (1.0 + np.exp(-logit)))
        day = rng.integers(1, opt.first_day_max + 1, self.n)
        self.leave_day = np.where(drops, np.minimum(self.leave_day, day), self.leave_day)
        self.leave_reason = np.where(drops & (day <= self.leave_day), 0, self.leave_reason)
        self.risk_z = z
        self.early_dropout = drops

    # -- follow-ups
    def followups(self) -> pd.DataFrame:
        fx, rng, n = self.fx, self.rng, self.n
        K = len(fx.followup_days)
        jit = np.array(fx.followup_jitter_days)
        day = np.array(fx.followup_days)[None, :] + rng.integers(-jit, jit + 1, (n, K))
        missed = rng.random((n, K)) < np.array([fx.missed_by_site[s] for s in SITES])[self.site][:, None]
        due = self.started[:, None] & (day <= self.leave_day[:, None]) & (day <= self.admin_day[:, None])
        attended = due & ~missed
        self.followups_due = due.sum(axis=1)
        win = np.array([fx.window_days_by_site[s] for s in SITES])[self.site][:, None].repeat(K, axis=1)
        late = np.arange(K)[None, :] >= 2
        win = np.where(late & (rng.random((n, K)) < fx.window_90_share_late), 90, win)
        # previous attended day (0 = day 0 for the first)
        prev = np.zeros((n, K), dtype=np.int64)
        last = np.zeros(n, dtype=np.int64)
        for k in range(K):  # K = 4 columns, vectorised over patients
            prev[:, k] = last
            last = np.where(attended[:, k], day[:, k], last)
        R = self.relapse_day[:, None]
        start = day - win + 1
        # use days before day 0 inside the window (patients were using before treatment)
        pre_days = np.clip(-self.last_use[:, None] - start + 1, 0, None)
        pre_use = rng.binomial(pre_days, fx.pre_index_use_share)
        after = R <= day
        lo = np.maximum(start, R)
        n_post = np.where(after, np.clip(day - lo + 1, 0, None), 0)
        has_r = after & (R >= start)
        f = self.use_share[:, None]
        post_use = has_r + rng.binomial(np.clip(n_post - has_r, 0, None), np.broadcast_to(f, (n, K)))
        use = pre_use + post_use
        heavy = rng.binomial(use, np.broadcast_to(self.heavy_share[:, None], (n, K)))
        first_after = after & (R > prev)
        gap = np.clip(start - np.maximum(prev + 1, R), 0, None)
        gap_use = after & (rng.random((n, K)) < 1.0 - (1.0 - f) ** gap)
        any_use = after & (first_after | (post_use > 0) | gap_use)
        recent = after & ((R >= day - fx.urine_lookback_days + 1)
                          | (rng.random((n, K)) < 1.0 - (1.0 - f) ** fx.urine_lookback_days))
        urine_done = rng.random((n, K)) >= fx.urine_not_done
        give_date = first_after & (rng.random((n, K)) < fx.relapse_date_recorded)
        # status: the last attended row carries the final status
        any_att = attended.any(axis=1)
        k_last = np.where(any_att, K - 1 - np.argmax(attended[:, ::-1], axis=1), -1)
        left_early = (self.leave_day < np.minimum(self.admin_day, day[:, -1]))
        final = np.where(k_last == K - 1, "completed",
                         np.where(left_early, np.array(["lost_to_follow_up", "withdrew", "deceased"],
                                                      dtype=object)[self.leave_reason], "active"))
        is_last = np.arange(K)[None, :] == k_last[:, None]

        pi, kk = np.nonzero(attended)  # row order: patient, then follow-up number
        a = day[pi, kk]
        self.fu_records = (pi, a)
        m = len(pi)
        status = np.where(is_last[pi, kk], final[pi], "active").astype(object)
        status[(status == "active") & (rng.random(m) < fx.missing_status)] = None
        use_present = ~(rng.random(m) < fx.missing_any_use) | first_after[pi, kk]
        da_present = rng.random(m) >= fx.missing_days_abstinent
        hv_present = da_present & (rng.random(m) >= fx.missing_heavy_days)
        urine = np.where(~urine_done[pi, kk], "not_done",
                         np.where(recent[pi, kk], "positive", "negative")).astype(object)
        rel = np.where(give_date[pi, kk], self.index_day[pi] + self.relapse_day[pi], -1)
        w = win[pi, kk]
        return pd.DataFrame({
            "patient_id": _text(self.ids[pi]),
            "assessment_date": _text(self._dates(self.index_day[pi] + a)),
            "window_days": _nullable_int(w),
            "days_abstinent": _nullable_int(w - use[pi, kk], da_present),
            "heavy_days": _nullable_int(heavy[pi, kk], hv_present),
            "any_use": _text(np.where(any_use[pi, kk], "yes", "no"), use_present),
            "relapse_date": _text(self._dates(np.maximum(rel, 0)), rel >= 0),
            "urine_tox": _text(urine),
            "status": _text(status, pd.notna(status)),
        })

    # -- sessions
    def _schedule(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every session as (patient, day since day 0, type code, ketamine session number or -1)."""
        fx, rng, n = self.fx, self.rng, self.n
        st = np.flatnonzero(self.started)
        blocks: list[tuple[np.ndarray, np.ndarray, int, np.ndarray]] = []

        def add(who: np.ndarray, day: np.ndarray, kind: int, number: np.ndarray | None = None) -> None:
            blocks.append((who, day, kind, np.full(len(who), -1) if number is None else number))

        add(np.arange(n), self.intake_day - self.index_day, _ASM)  # baseline assessment for everyone
        # induction: 4 weekly or 6 twice-weekly sessions, stopping early at a constant per-session probability
        plan = np.array(list(fx.induction_plan_share))[_choice(rng, fx.induction_plan_share, len(st))]
        stops = rng.geometric(1.0 - fx.induction_reach_4 ** (1.0 / 3.0), len(st))
        n_ind = np.minimum(plan, stops)
        owner, j = _expand(n_ind)
        gaps = np.where(j == 0, 0, np.where(plan[owner] == 4, rng.integers(6, 9, len(j)),
                                            rng.integers(3, 5, len(j))))
        ind_p, ind_d = st[owner], _group_cumsum(gaps, j)
        add(ind_p, ind_d, _KET, j)
        # boosters
        gets = (n_ind >= 3) & (rng.random(len(st)) < fx.booster_share)
        nb = np.minimum(1 + rng.poisson(fx.booster_count_mean, int(gets.sum())), 8)
        owner, j = _expand(nb)
        b_p = st[gets][owner]
        b_d = _group_cumsum(np.where(j == 0, rng.integers(42, 71, len(j)), rng.integers(21, 43, len(j))), j)
        add(b_p, b_d, _KET, n_ind[gets][owner] + j)
        # therapy program: integration after ketamine sessions, preparation, weekly psychotherapy
        ket_p, ket_d = np.concatenate([ind_p, b_p]), np.concatenate([ind_d, b_d])
        integ = self.therapy[ket_p] & (rng.random(len(ket_p)) < fx.integration_share)
        add(ket_p[integ], ket_d[integ] + rng.integers(1, 3, int(integ.sum())), _INT)
        tp = st[self.therapy[st]]
        prep = tp[rng.random(len(tp)) < fx.therapy_prep_share]
        prep_day = np.maximum(-rng.integers(1, 8, len(prep)), self.intake_day[prep] - self.index_day[prep])
        add(prep, prep_day, _PSY)
        w0, w1 = fx.psychotherapy_weeks
        owner, j = _expand(np.full(len(tp), w1 - w0 + 1))
        keep = rng.random(len(owner)) < fx.psychotherapy_attended
        add(tp[owner[keep]], 7 * (w0 + j[keep]) + rng.integers(-1, 2, int(keep.sum())), _PSY)
        for d0, jit, share in fx.reassessment:
            who = st[rng.random(len(st)) < share]
            add(who, d0 + rng.integers(-jit, jit + 1, len(who)), _ASM)

        pid = np.concatenate([b[0] for b in blocks])
        day = np.concatenate([b[1] for b in blocks]).astype(np.int64)
        kind = np.concatenate([np.full(len(b[0]), b[2]) for b in blocks])
        number = np.concatenate([b[3] for b in blocks]).astype(np.int64)
        ok = (day <= 0) | (day <= self.last_day[pid])  # nothing after leaving follow-up or the upload date
        order = np.lexsort((kind[ok], day[ok], pid[ok]))
        pid, day, kind, number = pid[ok][order], day[ok][order], kind[ok][order], number[ok][order]
        dup = np.zeros(len(pid), dtype=bool)  # one row per patient, day and type
        dup[1:] = (pid[1:] == pid[:-1]) & (day[1:] == day[:-1]) & (kind[1:] == kind[:-1])
        return pid[~dup], day[~dup], kind[~dup], number[~dup]

    def _dose(self, pid: np.ndarray, ket: np.ndarray, route: np.ndarray, number: np.ndarray,
              weight: np.ndarray) -> np.ndarray:
        fx = self.fx
        dose = np.full(len(pid), np.nan)
        jj = np.maximum(number, 0)
        for r, name in enumerate(ROUTES):
            sel = ket & (route == r)
            if name in ("iv", "im"):
                s0, step, cap = fx.iv_mg_per_kg if name == "iv" else fx.im_mg_per_kg
                dose[sel] = np.round(weight[sel] * np.minimum(s0 + step * jj[sel], cap))
            else:
                levels = np.array(fx.sublingual_mg if name == "sublingual" else fx.intranasal_mg)
                dose[sel] = levels[np.minimum(jj[sel], len(levels) - 1)]
        return dose

    def _vitals_and_events(self, pid: np.ndarray, ket: np.ndarray,
                           route: np.ndarray) -> tuple[np.ndarray, ...]:
        """(vitals recorded, systolic, diastolic, heart rate, adverse-event bit mask) per session."""
        fx, rng, n, m = self.fx, self.rng, self.n, len(pid)
        vit = ket & (rng.random(m) < fx.vitals_recorded)
        raised = vit & (rng.random(m) < np.array(fx.raised_bp_rate)[route])
        tachy = vit & (rng.random(m) < np.array(fx.tachycardia_rate)[route])
        rise_s, rise_d, rise_h = (np.array(v)[route] for v in _USUAL_RISE)
        base_s, base_d, base_h = (rng.normal(mu, sd, n)[pid] for mu, sd in ((124, 11), (78, 7), (74, 9)))
        sbp = np.where(raised, np.minimum(165 + np.floor(rng.exponential(9.0, m)), 240),
                       np.clip(np.round(base_s + rise_s + rng.normal(0, 8, m)), 90, 164))
        dbp = np.where(raised, np.clip(np.round(rng.normal(97, 6, m)), 70, 150),
                       np.clip(np.round(base_d + rise_d + rng.normal(0, 6, m)), 50, 99))
        dbp = np.minimum(dbp, sbp - 20)
        hr = np.where(tachy, np.minimum(120 + np.floor(rng.exponential(8.0, m)), 200),
                      np.clip(np.round(base_h + rise_h + rng.normal(0, 8, m)), 45, 119))
        bits = np.zeros(m, dtype=np.int64)
        for name in DIRECT_AES:
            hit = ket & (rng.random(m) < np.array(fx.ae_rates[name])[route])
            bits |= hit.astype(np.int64) << AE_ORDER.index(name)
        hyper = raised & (rng.random(m) < fx.hypertension_recorded)
        bits |= hyper.astype(np.int64) << AE_ORDER.index("hypertension")
        tachy_ae = tachy & (rng.random(m) < fx.tachycardia_recorded)
        bits |= tachy_ae.astype(np.int64) << AE_ORDER.index("tachycardia")
        return vit, sbp, dbp, hr, bits

    def sessions(self) -> pd.DataFrame:
        pid, day, kind, number = self._schedule()
        self.s_records = (pid, day, kind)
        rng, m = self.rng, len(pid)
        ket = kind == _KET
        route = self.route[pid]
        weight = self.weight[pid] + rng.normal(0, 0.5, m)
        dose = self._dose(pid, ket, route, number, weight)
        w_present = ket & (rng.random(m) < self.fx.weight_recorded)
        vit, sbp, dbp, hr, bits = self._vitals_and_events(pid, ket, route)
        labels = np.empty(int(bits.max()) + 1 if m else 1, dtype=object)
        for b in np.unique(bits).tolist():
            labels[b] = ";".join(e for i, e in enumerate(AE_ORDER) if b >> i & 1) or None
        therapist = (kind == _PSY) | (kind == _INT)
        return pd.DataFrame({
            "patient_id": _text(self.ids[pid]),
            "session_date": _text(self._dates(self.index_day[pid] + day)),
            "session_type": _text(np.array(SESSION_TYPES, dtype=object)[kind]),
            "route": _text(np.array(ROUTES, dtype=object)[route], ket),
            "dose_mg": _nullable_int(dose, ket),
            "weight_kg": pd.array(np.where(w_present, np.round(weight, 1), np.nan), dtype="Float64"),
            "bp_systolic_max": _nullable_int(sbp, vit),
            "bp_diastolic_max": _nullable_int(dbp, vit),
            "heart_rate_max": _nullable_int(hr, vit),
            "adverse_events": _text(labels[bits], bits > 0),
            "site": _text(np.array(SITES, dtype=object)[self.site[pid]]),
            "clinician": _text(self.clinician_names[np.where(therapist, self.therapist[pid],
                                                             self.clinician[pid])]),
        })

    # -- repeated measures
    def _random_effects(self, t: Trajectory) -> tuple[np.ndarray, np.ndarray]:
        cov = np.array([[t.sd_intercept ** 2, t.corr * t.sd_intercept * t.sd_slope],
                        [t.corr * t.sd_intercept * t.sd_slope, t.sd_slope ** 2]])
        u = self.rng.multivariate_normal(np.zeros(2), cov, self.n, method="cholesky")
        return u[:, 0], u[:, 1]

    def _scores(self, t: Trajectory, u0: np.ndarray, u1: np.ndarray, pid: np.ndarray,
                day: np.ndarray) -> np.ndarray:
        weeks = day / 7.0
        y = (t.mean(weeks, therapy=self.therapy[pid]) + u0[pid] + u1[pid] * weeks
             + self.rng.normal(0.0, t.sd_residual, len(pid)))
        if t.relapse_shift:
            y = y + t.relapse_shift * (day >= self.relapse_day[pid])
        return np.clip(np.round(y), 0, t.top)

    def measures(self, sessions: pd.DataFrame, followups: pd.DataFrame) -> None:
        fx, rng = self.fx, self.rng
        spid, sday, stype = self.s_records
        fpid, fday = self.fu_records
        kinds = SESSION_TYPES + ("followup",)
        pid = np.concatenate([spid, fpid])
        day = np.concatenate([sday, fday])
        kind = np.concatenate([stype, np.full(len(fpid), 4)])
        ns = len(spid)
        m = len(pid)
        p_phq = np.array([fx.phq9_recorded[k] for k in kinds])[kind]
        phq_on = rng.random(m) < p_phq
        # at most one PHQ-9 per patient and day (the session's, or the follow-up's when no session has one)
        key = pid.astype(np.int64) * 100_000 + (day + 1_000)
        order = np.lexsort((~phq_on, key))
        first = np.ones(m, dtype=bool)
        ks = key[order]
        first[1:] = ks[1:] != ks[:-1]
        keep = np.zeros(m, dtype=bool)
        keep[order] = first
        phq_on &= keep
        gad_on = phq_on & (rng.random(m) < fx.gad7_given_phq9)
        crav_on = keep & (rng.random(m) < np.array([fx.craving_recorded[k] for k in kinds])[kind])
        self.phq9_u = self._random_effects(fx.phq9)
        for name, on in (("phq9", phq_on), ("gad7", gad_on), ("craving", crav_on)):
            t: Trajectory = getattr(fx, name)
            u0, u1 = self.phq9_u if name == "phq9" else self._random_effects(t)
            values = np.full(m, np.nan)
            values[on] = self._scores(t, u0, u1, pid[on], day[on])
            sessions[name] = _nullable_int(values[:ns])
            followups[name] = _nullable_int(values[ns:])

    # -- session monitoring and misuse watch (issue 22): its own random stream
    def monitoring(self, sessions: pd.DataFrame) -> None:
        """Add :data:`MONITORING_COLUMNS` to ``sessions`` (ketamine rows only) from ``default_rng([seed, 2202])``."""
        fx = self.fx
        rng = np.random.default_rng([self.seed, MONITORING_STREAM])
        m = len(sessions)
        ket = sessions["session_type"].eq("ketamine").fillna(False).to_numpy(bool)
        route = np.full(m, 0)
        route_text = sessions["route"].astype(object).to_numpy()
        for r, name in enumerate(ROUTES):
            route[route_text == name] = r
        on = ket & (rng.random(m) < fx.monitoring_recorded)
        s_pre = np.clip(np.round(rng.normal(126, 12, m)), 95, 175)
        d_pre = np.clip(np.round(rng.normal(79, 8, m)), 55, 105)
        big = rng.random(m) < np.array(fx.bp_rise_40min_rate)[route]
        rise = np.where(big, 40 + np.floor(rng.exponential(8.0, m)), np.clip(np.round(rng.normal(12, 8, m)), -10, 39))
        s40 = np.minimum(s_pre + rise, 250)
        d40 = np.clip(np.round(d_pre + rise * 0.5 + rng.normal(0, 4, m)), 45, 150)
        s_dis = np.clip(np.round(s_pre + rng.normal(3, 6, m)), 90, 200)
        d_dis = np.clip(np.round(d_pre + rng.normal(2, 4, m)), 50, 120)
        minutes = np.round(np.array(fx.minutes_to_discharge_median)[route] * np.exp(rng.normal(0, 0.25, m)))
        levels = np.array(list(fx.sedation_share))
        sedation = levels[_choice(rng, fx.sedation_share, m)]
        dissoc = rng.binomial(24, np.array(fx.dissociation_mean)[route] / 24.0)
        u = rng.random(m)
        serious = u < fx.serious_event_rate
        severe = ~serious & (u < fx.serious_event_rate + fx.severe_event_rate)
        moderate = ~serious & ~severe & (u < fx.serious_event_rate + fx.severe_event_rate + fx.moderate_event_rate)
        mild = ~serious & ~severe & ~moderate & sessions["adverse_events"].notna().to_numpy(bool)
        severity = np.select([serious, severe, moderate, mild], ["serious", "severe", "moderate", "mild"], "no_event")
        v = rng.random(m)
        action = np.select([serious, severe, moderate & (v < 0.5), moderate, mild & (v < 0.3)],
                           ["transfer", "medication", "observation", "medication", "observation"], "no_action")
        take_home = ket & (route_text == "sublingual")
        w = rng.random(m)
        early = fx.take_home_issue_rate["early_refill"]
        issue = np.where(w < early, "early_refill", np.where(w < early + fx.take_home_issue_rate["lost"], "lost", "no_issue"))
        asked = ket & (rng.random(m) < fx.urinary_asked)
        urinary = np.where(rng.random(m) < fx.urinary_symptoms_rate, "yes", "no")
        for name, values in (("bp_systolic_pre", s_pre), ("bp_diastolic_pre", d_pre), ("bp_systolic_40min", s40),
                             ("bp_diastolic_40min", d40), ("bp_systolic_discharge", s_dis),
                             ("bp_diastolic_discharge", d_dis)):
            sessions[name] = _nullable_int(values, on)
        sessions["minutes_to_discharge"] = _nullable_int(minutes, on)
        sessions["sedation_score"] = _nullable_int(sedation.astype(float), ket)
        sessions["dissociation_score"] = _nullable_int(dissoc.astype(float), ket)
        sessions["event_severity"] = _text(severity.astype(object), ket)
        sessions["action_taken"] = _text(action.astype(object), ket)
        sessions["take_home_issue"] = _text(issue.astype(object), take_home)
        sessions["urinary_symptoms"] = _text(urinary.astype(object), asked)

    # -- assembly
    def _dates(self, day: np.ndarray) -> np.ndarray:
        lo, hi = int(day.min()) if len(day) else 0, int(day.max()) if len(day) else 0
        lookup = np.datetime_as_string(self.epoch + np.arange(lo, hi + 1), unit="D").astype(object)
        return lookup[day - lo]

    def patients_frame(self) -> pd.DataFrame:
        return pd.DataFrame({
            "patient_id": _text(self.ids),
            "primary_substance": _text(np.array(SUBSTANCES, dtype=object)[self.substance]),
            "program": _text(np.where(self.therapy, THERAPY, KETAMINE_ONLY).astype(object)),
            "sex": _text(np.array(SEXES, dtype=object)[self.sex]),
            "age": _nullable_int(self.age),
            "site": _text(np.array(SITES, dtype=object)[self.site]),
            "prior_treatments": _nullable_int(self.prior),
        })

    def truth(self) -> pd.DataFrame:
        leave = np.array(["lost_to_follow_up", "withdrew", "deceased"], dtype=object)[self.leave_reason]
        return pd.DataFrame({
            "patient_id": _text(self.ids), "started": self.started,
            "index_date": _text(self._dates(self.index_day)), "therapy": self.therapy,
            "relapse_day": self.relapse_day, "leave_day": self.leave_day, "leave_reason": _text(leave),
            "admin_day": self.admin_day, "followups_due": self.followups_due,
            "phq9_u0": self.phq9_u[0], "phq9_u1": self.phq9_u[1],
            **({"risk_z": self.risk_z, "informative_dropout": self.early_dropout}
               if self.fx.informative_dropout is not None else {}),
        })

    def run(self, with_truth: bool) -> dict[str, pd.DataFrame]:
        self.patients()
        self.latent_times()
        followups = self.followups()
        sessions = self.sessions()
        self.measures(sessions, followups)
        self.monitoring(sessions)
        patients = self.patients_frame()
        daily_use = _SubstanceUse(self).add(followups, patients)  # own random stream: the rest is unchanged
        out = {"sessions": sessions[list(SESSION_COLUMNS)], "followups": followups[list(FOLLOWUP_COLUMNS)],
               "patients": patients[list(PATIENT_COLUMNS)], "daily_use": daily_use}
        if with_truth:
            out["truth"] = self.truth()
        return out


class _SubstanceUse:
    """The contract-v2 substance-use fields of a simulated clinic (:class:`SubstanceEffects`), from the random stream
    ``default_rng([seed, 22])``: drawing them never changes another column."""

    def __init__(self, sim: _Simulation) -> None:
        self.sim, self.fx = sim, sim.fx.substance_use
        self.rng = np.random.default_rng([sim.seed, 22])

    def add(self, followups: pd.DataFrame, patients: pd.DataFrame) -> pd.DataFrame:
        """Adds ``prescribed`` to ``patients`` and the urine/AUDIT-C/BAM columns to ``followups`` (in place); returns
        the daily use log."""
        sim, fx, rng = self.sim, self.fx, self.rng
        n = sim.n
        opioid, alcohol = sim.substance == SUBSTANCES.index("opioids"), sim.substance == SUBSTANCES.index("alcohol")
        meds = list(fx.opioid_medicine_share)
        med = np.array(meds, dtype=object)[_choice(rng, fx.opioid_medicine_share, n)]
        rx = np.where(opioid & (rng.random(n) < fx.opioid_prescribed_share), med, None)
        rx = np.where(alcohol & (rng.random(n) < fx.alcohol_benzodiazepine_share), "benzodiazepines", rx)
        patients["prescribed"] = _text(rx.astype(object), pd.notna(rx))
        pi, day = sim.fu_records
        self._urine(followups, pi, day, rx)
        self._scores(followups, pi, day, alcohol)
        return self._daily_log(alcohol)

    def _urine(self, followups: pd.DataFrame, pi: np.ndarray, day: np.ndarray, rx: np.ndarray) -> None:
        sim, fx, rng = self.sim, self.fx, self.rng
        m = len(pi)
        tox = followups["urine_tox"].to_numpy(object)
        done = np.isin(tox, ["positive", "negative"])
        positive = tox == "positive"
        analyte = np.array(["alcohol", "opioids", "cocaine", "amphetamines", "cannabis", "other"], dtype=object)
        primary = analyte[sim.substance[pi]]
        fentanyl = positive & (primary == "opioids") & (rng.random(m) < fx.fentanyl_share)
        couse_p = np.where(sim.therapy[pi], fx.cannabis_couse_by_program[THERAPY], fx.cannabis_couse_by_program[
            KETAMINE_ONLY])
        couse = positive & (primary != "cannabis") & (rng.random(m) < couse_p)
        spid, sday, stype = sim.s_records
        ket = stype == _KET
        key = spid[ket].astype(np.int64) * 100_000 + sday[ket]
        order = np.sort(key)
        at = np.searchsorted(order, pi.astype(np.int64) * 100_000 + day, side="right") - 1
        last_ket = np.where(at >= 0, order[np.maximum(at, 0)], -1)
        recent_ket = (last_ket // 100_000 == pi) & (day - last_ket % 100_000 <= 7) & (at >= 0)
        ketamine = done & recent_ket & (rng.random(m) < fx.ketamine_detected_within_7_days)
        items = []
        for i in range(m):
            if not done[i]:
                items.append(None)
                continue
            found = [primary[i]] if positive[i] else []
            found += ["fentanyl"] * bool(fentanyl[i]) + ["cannabis"] * bool(couse[i]) + ["ketamine"] * bool(ketamine[i])
            found += [rx[pi[i]]] if rx[pi[i]] is not None else []
            items.append(";".join(dict.fromkeys(found)) or None)
        values = np.array(items, dtype=object)
        followups["urine_substances"] = _text(values, pd.notna(values))

    def _scores(self, followups: pd.DataFrame, pi: np.ndarray, day: np.ndarray, alcohol: np.ndarray) -> None:
        sim, fx, rng = self.sim, self.fx, self.rng
        m = len(pi)
        pda = (followups["days_abstinent"].astype("Float64") / followups["window_days"].astype("Float64")).to_numpy(
            float, na_value=np.nan)
        a0, a1, asd = fx.audit_c
        audit = np.clip(np.round(a0 + a1 * (1 - pda) + rng.normal(0, asd, m)), 0, 12)
        on = alcohol[pi] & (rng.random(m) < fx.audit_c_recorded) & ~np.isnan(pda)
        followups["audit_c"] = _nullable_int(np.where(on, audit, 0), on)
        bam_on = rng.random(m) < fx.bam_recorded
        use = np.clip(np.round(fx.bam_use[0] * (1 - pda) + rng.normal(0, fx.bam_use[1], m)), 0, 12)
        followups["bam_use"] = _nullable_int(np.where(bam_on & ~np.isnan(pda), use, 0), bam_on & ~np.isnan(pda))
        frac = np.minimum(day, 180) / 180.0
        for name, (b0, b_day, b_ther, sd) in (("bam_risk", fx.bam_risk), ("bam_protective", fx.bam_protective)):
            score = np.clip(np.round(b0 + b_day * frac + b_ther * sim.therapy[pi] + rng.normal(0, sd, m)), 0, 24)
            followups[name] = _nullable_int(score, bam_on)

    def _daily_log(self, alcohol: np.ndarray) -> pd.DataFrame:
        sim, fx, rng = self.sim, self.fx, self.rng
        who = np.flatnonzero(alcohol & sim.started & (rng.random(sim.n) < fx.daily_log_share))
        last = np.minimum(np.minimum(sim.leave_day[who], sim.admin_day[who]), fx.daily_log_last_day)
        who, last = who[last >= 0], last[last >= 0]
        owner, d = _expand(last + 1)
        p = who[owner]
        r = sim.relapse_day[p]
        used = (d == r) | ((d > r) & (rng.random(len(d)) < sim.use_share[p]))
        heavy = used & (rng.random(len(d)) < sim.heavy_share[p])
        limit = np.where(sim.sex[p] == SEXES.index("male"), fx.heavy_drinks_men, fx.heavy_drinks_women)
        light = 1 + np.floor(rng.random(len(d)) * (limit - 1)).astype(np.int64)
        drinks = np.where(heavy, limit + rng.poisson(2.0, len(d)), np.where(used, light, 0))
        return pd.DataFrame({
            "patient_id": _text(sim.ids[p]),
            "date": _text(sim._dates(sim.index_day[p] + d)) if len(d) else _text(np.array([], dtype=object)),
            "substance": _text(np.full(len(d), "alcohol", dtype=object)),
            "used": _text(np.where(used, "yes", "no").astype(object)),
            "amount": _nullable_int(drinks),
        })[list(DAILY_USE_COLUMNS)]


# ------------------------------------------------------------------------------------------------------------
# a simple clinic with informative dropout (hand-checkable; tests of the dropout rules)
# ------------------------------------------------------------------------------------------------------------
SIMPLE_CLINIC_START = pd.Timestamp("2024-01-01")
SIMPLE_RELAPSE_HAZARD = 1 / 250  # per day
SIMPLE_DROPOUT_HAZARD = 1 / 300  # per day


def _simple_date(index: pd.Timestamp, d: float) -> str:
    return (index + pd.Timedelta(days=int(d))).strftime("%Y-%m-%d")


def informative_dropout_clinic(n: int = 1500, seed: int = 19, *,
                               relapse_dates: bool = True) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """A hand-checkable clinic with informative dropout: sessions, follow-ups and the truth per patient.

    Patients with one ketamine session (day 0) and an assessment every 30 days up to day 360.

    Latent: return to use on day T0 ~ Exp(SIMPLE_RELAPSE_HAZARD) (rounded up), dropout on day
    D ~ Exp(SIMPLE_DROPOUT_HAZARD). A patient who drops out
    (D < 360) is last seen at L = 30·floor(D/30) with status lost_to_follow_up (no assessment at all when D < 30:
    an early dropout) and, informatively, returns to use the day after dropping out: true time min(T0, D + 1).
    Use is reported at the first assessment on or after T0 with ``relapse_date`` = T0 (or without it).

    ``truth`` columns: ``patient_id``, ``t0``, ``d``, ``early`` (no assessment at all), what each dropout rule
    should give (``censored_time``/``censored_event``, ``event_time``/``event_event``) and ``true_time`` (the
    true day of return to use). Moved here from the tests (issue #19) so that analyses can be checked on it.
    """
    rng = np.random.default_rng(seed)
    t0 = np.ceil(rng.exponential(1 / SIMPLE_RELAPSE_HAZARD, n))
    d = rng.exponential(1 / SIMPLE_DROPOUT_HAZARD, n)
    sessions, followups = [], []
    for i in range(n):
        pid = f"p{i:05d}"
        index = SIMPLE_CLINIC_START + pd.Timedelta(days=int(i % 60))
        sessions.append({"patient_id": pid, "session_date": _simple_date(index, 0), "session_type": "ketamine",
                         "route": "iv"})
        last = 360 if d[i] >= 360 else 30 * math.floor(d[i] / 30)
        for day in range(30, last + 1, 30):
            row = {"patient_id": pid, "assessment_date": _simple_date(index, day), "window_days": 30}
            if t0[i] <= day:
                row.update(any_use="yes", days_abstinent=0)
                if relapse_dates:
                    row["relapse_date"] = _simple_date(index, t0[i])
                followups.append(row)
                break
            row.update(any_use="no", days_abstinent=30)
            if day == last:
                row["status"] = "lost_to_follow_up" if d[i] < 360 else "completed"
            followups.append(row)
    # what each rule should give, from the latent times
    dropped = d < 360
    last = np.where(dropped, 30 * np.floor(d / 30), 360.0)
    early = last < 30
    observed = t0 <= last
    truth = pd.DataFrame({"patient_id": [f"p{i:05d}" for i in range(n)], "t0": t0, "d": d, "early": early,
                          "censored_time": np.where(observed, t0, last), "censored_event": observed,
                          "event_time": np.where(early, 30.0, np.where(observed, t0, last)),
                          "event_event": early | observed | dropped,
                          "true_time": np.where(dropped, np.minimum(t0, d + 1), t0)})
    return pd.DataFrame(sessions), pd.DataFrame(followups), truth



def _main() -> None:  # pragma: no cover - `python -m analytics.sample OUT [N] [SEED]`
    import sys

    args = sys.argv[1:]
    out = args[0] if args else "sample_data"
    n = int(args[1]) if len(args) > 1 else 1500
    seed = int(args[2]) if len(args) > 2 else DEFAULT_SEED
    for name, path in write_clinic(out, n, seed).items():
        print(f"{name}: {path}")


if __name__ == "__main__":  # pragma: no cover
    _main()
