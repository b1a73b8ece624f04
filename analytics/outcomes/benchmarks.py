"""Published benchmarks with provenance, and the clinic's own figures computed the same way.

Two halves:

* **The registry** (:func:`load_registry`): figures from ``shared/reference/published-benchmarks*.md``, held as data
  in ``analytics/outcomes/data/benchmarks.toml``. Only figures whose verification status is ``yes`` or ``secondary`` are
  allowed; the loader refuses anything else. Between-arm differences (e.g. KARE's ketamine-minus-placebo percent
  days abstinent) have ``kind = "difference"`` and are never shown as absolute levels.
* **Like-for-like clinic metrics**: functions of a :class:`~analytics.outcomes.cohort.Cohort` that compute the clinic's
  figure with the benchmark's definition and window, or say exactly why they cannot (``estimate`` None and a
  ``reason`` sentence). Every registry entry names one of them with its options, or gives a reason.

Definitions shared by the clinic metrics
----------------------------------------
* **Day** counts from the index date (day 0 = first ketamine session), as in :mod:`analytics.outcomes.cohort`. A window
  "days a–b" includes both ends. A follow-up with ``window_days = w`` on day ``d`` covers days ``d - w + 1`` … ``d``.
* **Window reached**: a patient counts for a window only when the data extend to its last day; the data end
  (``as_of``) is the latest session or assessment date in the exports unless given. Patients whose window has not
  closed are not eligible (counted in ``notes``), never attrition.
* **Use in a window** (per patient): *use* when a follow-up whose window lies inside the target window reports use
  (``any_use``, fewer abstinent days than the window, or a positive urine test; for heavy use ``heavy_days > 0``)
  or when a ``relapse_date`` falls inside it; *abstinent* when the windows of follow-ups that report no use cover
  every day of the target window; otherwise *unknown* (missing).
* **PDA over a window**: 100 × abstinent days / days covered, summed over follow-ups whose window lies wholly
  inside the target window; a follow-up whose window overlaps an earlier follow-up's window is left out (its days
  would count twice). A patient needs data on at least ``min_coverage`` of the window's days, else counts as
  attrition.
* **Return to use by day t**: Kaplan–Meier 1 − S(t), event = first follow-up with use under the stated definition
  (``relapse_date`` when given), censored at the last assessment; the definition is fixed by the benchmark, not by
  the user's :class:`~analytics.outcomes.settings.Settings`.

Intervals: proportions use the Wilson score interval, means a t interval, differences of means Welch's t interval,
Kaplan–Meier the log-log (complementary log-log) interval with Greenwood's variance (R ``survfit(conf.type =
"log-log")``). Clinic percentages are in percent (0–100), as the published figures are.
"""

from __future__ import annotations

import inspect
import math
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from analytics.engines.intervals import t_crit, wilson_ci, z_crit
from analytics.errors import OutcomesError
from analytics.outcomes import response as rsp
from analytics.outcomes.cohort import DROPOUT_STATUSES, Cohort, ids_in
from analytics.outcomes.memo import once, per_cohort, release
from analytics.outcomes.safety import EXPECTED_ACUTE_EFFECTS, NEEDED_ACTION_NOT_RECORDED, SERIOUS_NOT_RECORDED
from analytics.privacy.counts import note_n, note_of
from schemas.arrow import text_array, text_codes, text_map
from schemas.columns import ADVERSE_EVENTS

REGISTRY_PATH = Path(__file__).parent / "data" / "benchmarks.toml"

Status = Literal["yes", "secondary"]
Kind = Literal["difference", "level", "ratio"]
Group = Literal["alcohol", "cocaine", "opioids", "any", "depression", "safety"]
Domain = Literal["efficacy", "safety"]
Interval = Literal["ci95", "range", "upper95", "none"]
Qualifier = Literal["=", "about", "<"]
Use = Literal["any", "heavy"]
Outcome = Literal["response", "remission"]

SUBSTANCE_GROUPS = ("alcohol", "cocaine", "opioids")
GROUP_ORDER = ("alcohol", "cocaine", "opioids", "any", "depression", "safety")
STATUS_LABELS = {"yes": "verified", "secondary": "secondary source"}
DEFAULT_ARMS = ("ketamine + therapy", "ketamine only")


class InvalidRegistry(OutcomesError):
    """The benchmark registry file holds an entry that may not be displayed or is malformed."""


# ------------------------------------------------------------------------------------------------ registry


@dataclass(frozen=True)
class ClinicSpec:
    """The like-for-like clinic metric of a benchmark: a function name of this module and its options."""

    function: str
    options: tuple[tuple[str, Any], ...] = ()

    def kwargs(self) -> dict[str, Any]:
        return dict(self.options)


@dataclass(frozen=True)
class Benchmark:
    """One displayable published figure with its provenance.

    ``value`` is the point figure in ``unit`` (percentages in percent); it is None only for a published range
    (``interval = "range"``: ``ci_low``–``ci_high`` are the range ends, not a confidence interval).
    ``interval = "upper95"``: ``ci_high`` is a one-sided 95% upper bound. ``qualifier`` is ``"about"`` or ``"<"``
    when the source gives a rounded or bounded figure. ``cautions`` hold the reference sheets' comparability
    cautions verbatim; ``notes`` hold caveats specific to this figure. Exactly one of ``clinic`` and
    ``clinic_reason`` is set.
    """

    id: str
    row: str
    sheet: str
    study: str
    domain: Domain
    group: Group
    metric: str
    kind: Kind
    definition: str
    population: str
    design: str
    timepoint: str
    arms: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    interval: Interval
    qualifier: Qualifier
    n: int | None
    events: int | None
    computed: bool
    unit: str
    unit_of_analysis: str | None
    value_text: str
    citation: str
    short_citation: str
    doi: str | None
    address: str
    status: Status
    status_note: str
    cautions: tuple[str, ...]
    notes: tuple[str, ...]
    clinic: ClinicSpec | None
    clinic_reason: str | None

    @property
    def status_label(self) -> str:
        """``"verified"`` or ``"secondary source"``."""
        return STATUS_LABELS[self.status]

    @property
    def link(self) -> str:
        """The address of the page that held the figure (the DOI, when seen, is in ``doi``)."""
        return self.address

    @property
    def substance(self) -> str | None:
        """The primary substance the benchmark is about (None for depression, safety and any-substance rows)."""
        return self.group if self.group in SUBSTANCE_GROUPS else None


def _bad(entry_id: str, message: str) -> InvalidRegistry:
    return InvalidRegistry(f"Benchmark registry entry {entry_id!r}: {message} Fix the entry in {REGISTRY_PATH.name}.")


def _choice(entry_id: str, field_name: str, value: Any, allowed: tuple[str, ...]) -> Any:
    if value not in allowed:
        raise _bad(entry_id, f"{field_name} is {value!r}; allowed: {', '.join(allowed)}.")
    return value


def _opt_float(x: Any) -> float | None:
    return None if x is None else float(x)


def _check_interval(b: dict[str, Any], entry_id: str) -> None:
    value, low, high, kind = b.get("value"), b.get("ci_low"), b.get("ci_high"), b["interval"]
    ok = {
        "ci95": value is not None and low is not None and high is not None and low <= value <= high,
        "range": value is None and low is not None and high is not None and low < high,
        "upper95": value is not None and low is None and high is not None and value <= high,
        "none": value is not None and low is None and high is None,
    }[kind]
    if not ok:
        raise _bad(entry_id, f"value {value!r} with interval {kind!r} ({low!r}, {high!r}) is inconsistent.")


FIGURE_KEYS = frozenset({
    "id", "row", "study", "metric", "kind", "definition", "timepoint", "arms", "value", "ci_low", "ci_high",
    "interval", "qualifier", "n", "events", "computed", "unit", "unit_of_analysis", "value_text", "status",
    "status_note", "address", "cautions", "notes", "clinic", "clinic_reason"})
STUDY_KEYS = frozenset({"sheet", "short", "citation", "doi", "address", "design", "population", "group", "domain",
                        "cautions"})


def _figure(raw: dict[str, Any], studies: dict[str, Any], cautions: dict[str, Any],
            reasons: dict[str, str]) -> Benchmark:
    entry_id = str(raw.get("id", "?"))
    unknown = sorted(set(raw) - FIGURE_KEYS)
    if unknown:
        raise _bad(entry_id, f"unknown field(s) {unknown}; allowed: {', '.join(sorted(FIGURE_KEYS))}.")
    status = raw.get("status")
    if status not in get_args(Status):
        raise _bad(entry_id, f"verification status is {status!r}; only 'yes' or 'secondary' figures may be displayed "
                             "(UNVERIFIED, partial or from-memory numbers never are). Check the figure in its source "
                             "and update the reference sheet first.")
    study = studies.get(raw.get("study", ""))
    if study is None:
        raise _bad(entry_id, f"study {raw.get('study')!r} is not defined under [studies].")
    if set(study) - STUDY_KEYS:
        raise _bad(entry_id, f"its study has unknown field(s) {sorted(set(study) - STUDY_KEYS)}.")
    interval = _choice(entry_id, "interval", raw.get("interval", "none"), get_args(Interval))
    _check_interval({**raw, "interval": interval}, entry_id)
    keys = list(study.get("cautions", [])) + list(raw.get("cautions", []))
    missing = [k for k in keys if k not in cautions]
    if missing:
        raise _bad(entry_id, f"caution(s) {missing} are not defined under [cautions].")
    spec, reason = _clinic_side(entry_id, raw, reasons)
    domain = _choice(entry_id, "domain", study["domain"], get_args(Domain))
    if domain == "safety" and not raw.get("unit_of_analysis"):
        raise _bad(entry_id, "a safety figure needs its unit_of_analysis (per patient or per session).")
    computed = bool(raw.get("computed", False))
    if computed:
        n, events = raw.get("n"), raw.get("events")
        if not n or events is None or abs(100 * events / n - raw["value"]) > 0.05:
            raise _bad(entry_id, f"computed value {raw.get('value')!r} is not 100 × {events!r} / {n!r}.")
    return Benchmark(
        id=entry_id, row=raw["row"], sheet=study["sheet"], study=raw["study"], domain=domain,
        group=_choice(entry_id, "group", study["group"], get_args(Group)),
        metric=raw["metric"], kind=_choice(entry_id, "kind", raw["kind"], get_args(Kind)),
        definition=raw["definition"], population=study["population"], design=study.get("design", ""),
        timepoint=raw["timepoint"], arms=raw["arms"], value=_opt_float(raw.get("value")),
        ci_low=_opt_float(raw.get("ci_low")), ci_high=_opt_float(raw.get("ci_high")), interval=interval,
        qualifier=_choice(entry_id, "qualifier", raw.get("qualifier", "="), get_args(Qualifier)),
        n=raw.get("n"), events=raw.get("events"), computed=computed, unit=raw["unit"],
        unit_of_analysis=raw.get("unit_of_analysis"), value_text=raw["value_text"], citation=study["citation"],
        short_citation=study["short"], doi=study.get("doi"), address=raw.get("address", study["address"]),
        status=status, status_note=raw.get("status_note", ""),
        cautions=tuple(cautions[k]["text"] for k in dict.fromkeys(keys)), notes=tuple(raw.get("notes", ())),
        clinic=spec, clinic_reason=reason,
    )


def _clinic_side(entry_id: str, raw: dict[str, Any], reasons: dict[str, str]) -> tuple[ClinicSpec | None, str | None]:
    spec_raw, reason = raw.get("clinic"), raw.get("clinic_reason")
    if (spec_raw is None) == (reason is None):
        raise _bad(entry_id, "give exactly one of 'clinic' (the like-for-like metric) and 'clinic_reason'.")
    if reason is not None:
        if reason.startswith("@"):
            if reason[1:] not in reasons:
                raise _bad(entry_id, f"clinic_reason {reason!r} is not defined under [reasons].")
            reason = reasons[reason[1:]]
        return None, reason
    options = dict(spec_raw)
    name = options.pop("function", None)
    if name not in CLINIC_METRICS:
        raise _bad(entry_id, f"clinic function {name!r} is not one of {', '.join(sorted(CLINIC_METRICS))}.")
    return ClinicSpec(function=name, options=tuple(sorted(options.items()))), None


@lru_cache(maxsize=8)
def _load(path: str) -> tuple[Benchmark, ...]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise InvalidRegistry(f"The benchmark registry {path} cannot be read ({err}). Restore the file from the "
                              "repository.") from err
    studies, cautions, reasons = data.get("studies", {}), data.get("cautions", {}), data.get("reasons", {})
    figures = tuple(_figure(raw, studies, cautions, reasons) for raw in data.get("figures", []))
    seen: set[str] = set()
    for b in figures:
        if b.id in seen:
            raise _bad(b.id, "the id is used twice.")
        seen.add(b.id)
    return figures


def load_registry(path: Path | str | None = None) -> tuple[Benchmark, ...]:
    """Read the benchmark registry, refusing any entry that may not be displayed.

    Parameters
    ----------
    path:
        Registry file; default ``analytics/outcomes/data/benchmarks.toml``.

    Returns
    -------
    tuple of Benchmark
        In file order (grouped by study).

    Raises
    ------
    InvalidRegistry
        An entry's status is not ``yes``/``secondary``, its interval is inconsistent, it names an unknown study,
        caution, reason or clinic function, or has neither or both of a clinic metric and a reason.
    """
    return _load(str(Path(path) if path is not None else REGISTRY_PATH))


# ------------------------------------------------------------------------------------------- clinic results


@dataclass(frozen=True)
class ClinicFigure:
    """The clinic's like-for-like figure for one definition and window.

    ``estimate`` is None when the data cannot support the figure; ``reason`` then says exactly why. ``n`` is the
    denominator (patients or sessions analysed), ``n_eligible`` those who met the definition's population and
    whose window had closed, ``attrition`` the eligible ones without the data needed (``n_eligible - n`` unless the
    definition counts missing data as failure, as intention-to-treat does, in which case it is the number of
    eligible patients whose outcome was imputed as failure). ``events`` is the numerator of a proportion.
    """

    metric: str
    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    n_eligible: int
    attrition: int
    unit: str
    definition: str
    events: int | None = None
    reason: str | None = None
    conf_level: float = 0.95
    notes: tuple[str, ...] = ()
    n_covered: int | None = None
    bounds: tuple[Bound, ...] = ()

    @property
    def coverage(self) -> float | None:
        """Share of eligible patients whose assessments cover the benchmark's window (None where not defined)."""
        return self.n_covered / self.n_eligible if self.n_covered is not None and self.n_eligible else None


@dataclass(frozen=True)
class Bound:
    """The figure under one missing-data rule: ``rule`` in words, estimate with its interval, and its n."""

    rule: str
    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    events: int | None = None


MIN_COVERAGE_SHARE = 0.7  # a window figure needs assessments covering the window for this share of eligible patients


def _coverage_reason(n_covered: int, n_eligible: int, *, start: int, end: int, what: str, min_share: float,
                     who: str) -> str | None:
    """Why there is no like-for-like figure when too few eligible patients have data covering the window."""
    if n_eligible == 0 or n_covered / n_eligible >= min_share:
        return None
    if n_covered == 0:
        return (f"No follow-up falls inside days {start}–{end} for any of the {note_n(n_eligible)} eligible {who}: "
                f"the clinic's assessment schedule cannot see {what} over that window.")
    return (f"Assessments cover {what} over days {start}–{end} for only {note_of(n_covered, n_eligible)} eligible "
            f"{who} ({n_covered / n_eligible:.0%}); a like-for-like figure needs {min_share:.0%} (a setting), "
            "otherwise the figure would be decided by who happened to be assessed.")


def _bound_prop(rule: str, success: pd.Series, conf_level: float) -> Bound:
    n = len(success)
    if n == 0:
        return Bound(rule, None, None, None, 0, 0)
    events = int(success.sum())
    est, low, high = _wilson(events, n, conf_level)
    return Bound(rule, est, low, high, n, events)


def _unavailable(metric: str, unit: str, definition: str, reason: str, *, n_eligible: int = 0, attrition: int = 0,
                 conf_level: float = 0.95, notes: tuple[str, ...] = (), n_covered: int | None = None) -> ClinicFigure:
    return ClinicFigure(metric=metric, estimate=None, ci_low=None, ci_high=None, n=0, n_eligible=n_eligible,
                        attrition=attrition, unit=unit, definition=definition, reason=reason,
                        conf_level=conf_level, notes=notes, n_covered=n_covered)


def _wilson(events: int, n: int, conf_level: float) -> tuple[float, float, float]:
    low, high = wilson_ci(events, n, conf_level)
    return 100 * events / n, 100 * float(low[0]), 100 * float(high[0])


def _proportion(metric: str, definition: str, success: pd.Series, *, n_eligible: int, attrition: int,
                conf_level: float, notes: tuple[str, ...], empty_reason: str) -> ClinicFigure:
    """Wilson-interval percentage of True among ``success`` (one value per analysed unit)."""
    n = len(success)
    if n == 0:
        return _unavailable(metric, "%", definition, empty_reason, n_eligible=n_eligible, attrition=attrition,
                            conf_level=conf_level, notes=notes)
    events = int(success.sum())
    est, low, high = _wilson(events, n, conf_level)
    return ClinicFigure(metric=metric, estimate=est, ci_low=low, ci_high=high, n=n, n_eligible=n_eligible,
                        attrition=attrition, unit="%", definition=definition, events=events, conf_level=conf_level,
                        notes=notes)


def _t_mean(values: np.ndarray, conf_level: float) -> tuple[float, float | None, float | None]:
    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, None, None
    half = t_crit(conf_level, len(values) - 1) * float(np.std(values, ddof=1)) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def _welch(a: np.ndarray, b: np.ndarray, conf_level: float) -> tuple[float, float, float]:
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    diff, se = float(np.mean(a) - np.mean(b)), math.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = t_crit(conf_level, df) * se
    return diff, diff - half, diff + half


def _km_at(time: np.ndarray, event: np.ndarray, day: float,
           conf_level: float) -> tuple[float, float | None, float | None, int] | None:
    """Kaplan–Meier S(day) with a log-log interval; None when no one is followed to ``day`` and S > 0."""
    time, event = np.asarray(time, float), np.asarray(event, bool)
    surv, greenwood = 1.0, 0.0
    ordered = np.sort(time[~np.isnan(time)])  # at risk at t: the times ≥ t; deaths at t: the event times at t
    times, deaths_at = np.unique(time[event & (time <= day)], return_counts=True)
    at_risk_at = len(ordered) - np.searchsorted(ordered, times, side="left")
    for at_risk, deaths in zip(at_risk_at.tolist(), deaths_at.tolist()):
        surv *= 1 - deaths / at_risk
        if at_risk > deaths:
            greenwood += deaths / (at_risk * (at_risk - deaths))
    n_risk = int((time >= day).sum())
    if n_risk == 0 and surv > 0:
        return None
    if surv <= 0 or surv >= 1:
        return surv, None, None, n_risk
    z = z_crit(conf_level)
    spread = z * math.sqrt(greenwood) / abs(math.log(surv))
    return surv, surv ** math.exp(spread), surv ** math.exp(-spread), n_risk


# ------------------------------------------------------------------------------------------ shared selection


def _once(cohort: Cohort, name: str, compute: Callable[[], Any]) -> Any:
    """``compute()`` once per cohort (the data end, the PHQ-9 rows, …: many metrics ask for the same).

    Kept on the cohort object itself (:func:`analytics.outcomes.memo.once`): never shared with another cohort or
    session, and gone with the cohort."""
    return once(cohort, ("benchmarks", name), compute)


def _as_of(cohort: Cohort, as_of: Any) -> pd.Timestamp | None:
    if as_of is not None:
        return pd.Timestamp(as_of)
    return cohort.data_end


def _select(cohort: Cohort, substance: str | None) -> tuple[pd.DataFrame, str | None]:
    """Patients of the substance group (all when None), or a reason why there are none."""
    return _once(cohort, f"patients of {substance}", lambda: _select_patients(cohort, substance))


def _select_patients(cohort: Cohort, substance: str | None) -> tuple[pd.DataFrame, str | None]:
    pats = cohort.patients
    if substance is None:
        return pats, None if len(pats) else "The cohort has no patients."
    recorded = pats["primary_substance"].notna()
    if not recorded.any():
        return pats.iloc[:0], (f"No patient has a primary substance recorded (patients.csv lacks primary_substance or "
                               f"leaves it empty), so {substance} patients cannot be picked out. Add primary_substance "
                               "to the patients export.")
    chosen = pats[pats["primary_substance"].eq(substance).fillna(False).astype(bool)]
    if chosen.empty:
        return chosen, f"No patients with primary substance '{substance}' (0 of {note_n(len(pats))} patients)."
    return chosen, None


def _days_available(cohort: Cohort, pats: pd.DataFrame, as_of: Any) -> pd.Series:
    """Days from each patient's index date to the data end, indexed by patient_id."""
    end = _as_of(cohort, as_of)
    days = (end - pats["index_date"]).dt.days if end is not None else pd.Series(-1, index=pats.index)
    return pd.Series(days.to_numpy(), index=pats["patient_id"].to_numpy(), dtype=float)


def _member(values: pd.Series, ids: Any) -> pd.Series:
    """``values.isin(ids)`` for patient ids (hash-based: arrow-backed string ``isin`` is slow)."""
    return ids_in(values, ids)


def _who(substance: str | None) -> str:
    return f"{substance} patients" if substance else "patients"


def _flags(fu: pd.DataFrame, use: Use) -> tuple[pd.Series, pd.Series]:
    """Per follow-up: (use reported in its window, no use over its whole window)."""
    window, abst = fu["window_days"].astype(float), fu["days_abstinent"].astype(float)
    any_yes = fu["any_use"].eq(True).fillna(False).astype(bool)
    any_no = fu["any_use"].eq(False).fillna(False).astype(bool)
    # a positive urine result counts as use unless only for prescribed medicines or in-treatment ketamine (cohort)
    positive = (fu["urine_use"] if "urine_use" in fu else fu["urine_tox"].eq("positive")).fillna(False).astype(bool)
    full = (abst == window).fillna(False).astype(bool)
    if use == "any":
        used = any_yes | (abst < window).fillna(False).astype(bool) | positive
        free = ~used & (full | (abst.isna() & any_no))
    else:
        heavy = fu["heavy_days"].astype(float)
        used = (heavy > 0).fillna(False).astype(bool)
        free = ~used & ((heavy == 0).fillna(False).astype(bool) | full)
    return used, free


def _covered_days(fu: pd.DataFrame, start: int, end: int) -> pd.Series:
    """Per patient: days of [start, end] inside the union of the given follow-ups' windows."""
    lo = fu["window_start_days"].clip(lower=start)
    hi = fu["days"].clip(upper=end)
    iv = pd.DataFrame({"patient_id": fu["patient_id"], "lo": lo, "hi": hi})[lo <= hi].sort_values(["patient_id", "lo"])
    if iv.empty:
        return pd.Series(dtype=float)
    prev_hi = iv.groupby("patient_id")["hi"].cummax().groupby(iv["patient_id"]).shift(1)
    eff_lo = np.maximum(iv["lo"], prev_hi.fillna(-np.inf) + 1)
    return (iv["hi"] - eff_lo + 1).clip(lower=0).groupby(iv["patient_id"]).sum()


def _window_status(cohort: Cohort, ids: pd.Index, start: int, end: int, use: Use) -> pd.DataFrame:
    """Per patient in ``ids``: ``status`` ("use", "abstinent", "unknown") over days start–end, and ``dropout``
    (lost to follow-up or withdrew at an assessment on or before ``end``)."""
    fu = cohort.followups[_member(cohort.followups["patient_id"], ids)]
    used, free = _flags(fu, use)
    inside = (fu["window_start_days"] >= start) & (fu["days"] <= end)
    use_known = (used & inside).groupby(fu["patient_id"]).any()
    if use == "any" and len(fu):
        index = text_map(fu["patient_id"], cohort.patients.set_index("patient_id")["index_date"])
        rel = (fu["relapse_date"] - index).dt.days
        use_known = use_known | rel.between(start, end).groupby(fu["patient_id"]).any()
    covered = _covered_days(fu[free], start, end)
    out = pd.DataFrame(index=ids)
    out["use"] = use_known.reindex(ids).fillna(False).astype(bool)
    out["abstinent"] = covered.reindex(ids).fillna(0) >= end - start + 1
    out["status"] = np.where(out["use"], "use", np.where(out["abstinent"], "abstinent", "unknown"))
    dropped = fu["status"].isin(DROPOUT_STATUSES).fillna(False).astype(bool) & (fu["days"] <= end)
    out["dropout"] = dropped.groupby(fu["patient_id"]).any().reindex(ids).fillna(False).astype(bool)
    return out[["status", "dropout"]]


def _reach(cohort: Cohort, pats: pd.DataFrame, as_of: Any, end_day: float) -> tuple[pd.Index, int]:
    """Patients whose data extend to ``end_day``; and how many have not reached it."""
    avail = _days_available(cohort, pats, as_of)
    reached = avail[avail >= end_day].index
    return pd.Index(reached), int(len(avail) - len(reached))


def _not_reached_note(n: int, end_day: float) -> tuple[str, ...]:
    return (f"{note_n(n)} patient(s) not yet followed to day {end_day:g} are not eligible.",) if n else ()

def _eligible(cohort: Cohort, metric: str, definition: str, *, substance: str | None, as_of: Any, end_day: float,
              conf_level: float) -> "tuple[pd.Index, tuple[str, ...]] | ClinicFigure":
    """Patients of the substance group followed to ``end_day`` and the note on those not yet there; or, when there
    are none, the unavailable figure that says why."""
    pats, reason = _select(cohort, substance)
    if reason:
        return _unavailable(metric, "%", definition, reason, conf_level=conf_level)
    ids, not_reached = _reach(cohort, pats, as_of, end_day)
    notes = _not_reached_note(not_reached, end_day)
    if len(ids) == 0:
        return _unavailable(metric, "%", definition, f"No {_who(substance)} have been followed to day {end_day} yet "
                            f"({note_n(not_reached)} not reached).", conf_level=conf_level, notes=notes)
    return ids, notes



# ----------------------------------------------------------------------------------------- alcohol/drug use


def _pda_per_patient(cohort: Cohort, ids: pd.Index, start: int, end: int) -> pd.DataFrame:
    fu = cohort.followups[_member(cohort.followups["patient_id"], ids) & cohort.followups["days_abstinent"].notna()]
    fu = fu[(fu["window_start_days"] >= start) & (fu["days"] <= end)].sort_values(["patient_id", "days"])
    prev_end = fu.groupby("patient_id")["days"].cummax().groupby(fu["patient_id"]).shift(1)
    kept = fu[~(fu["window_start_days"] <= prev_end).fillna(False).astype(bool)]
    sums = kept.groupby("patient_id").agg(abstinent=("days_abstinent", "sum"), covered=("window_days", "sum"))
    out = sums.reindex(ids).fillna(0.0)
    out["pda"] = 100 * out["abstinent"] / out["covered"].where(out["covered"] > 0)
    out["coverage"] = out["covered"] / (end - start + 1)
    out.attrs["n_overlap_dropped"] = int(len(fu) - len(kept))
    return out


def _pda_definition(start_day: int, end_day: int, substance: str | None, min_coverage: float) -> str:
    return (f"Percent days abstinent over days {start_day}–{end_day} after the first ketamine session "
            f"({_who(substance)}): 100 × abstinent days / days with data, summed over follow-ups whose window lies "
            f"inside the period; patients with data on fewer than {min_coverage:.0%} of the days count as attrition.")


def pda_in_window(cohort: Cohort, *, start_day: int = 0, end_day: int = 180, substance: str | None = "alcohol",
                  min_coverage: float = 0.5, min_share: float = MIN_COVERAGE_SHARE, as_of: Any = None,
                  conf_level: float = 0.95) -> ClinicFigure:
    """Mean percent days abstinent over a fixed window after the index date, with a t interval.

    Parameters
    ----------
    cohort:
        The analysis cohort.
    start_day, end_day:
        The window, days after the first ketamine session, both included (default 0–180: KARE's 6 months;
        COMBINE's 16 weeks are 0–112).
    substance:
        Primary substance of the patients analysed (None: all).
    min_coverage:
        Share of the window's days a patient's follow-up windows must cover; patients below it are attrition.
    min_share:
        Share of eligible patients who must reach ``min_coverage`` for a clinic figure at all (default 70 %);
        below it ``reason`` says how much of the window the assessments cover.
    as_of:
        Data end; default the latest session or assessment date.

    Returns
    -------
    ClinicFigure
        ``estimate`` = mean of per-patient PDA (0–100), t interval; ``n`` = patients with enough data.

    Notes
    -----
    Missing windows are not imputed: each patient's PDA uses the days with data (the PDA formula of
    published-benchmarks.md section 2.2), and patients below ``min_coverage`` are left out and counted.
    """
    metric, definition = "pda_in_window", _pda_definition(start_day, end_day, substance, min_coverage)
    eligible = _eligible(cohort, metric, definition, substance=substance, as_of=as_of, end_day=end_day,
                         conf_level=conf_level)
    if isinstance(eligible, ClinicFigure):
        return eligible
    ids, notes = eligible
    per = _pda_per_patient(cohort, ids, start_day, end_day)
    ok = per[per["coverage"] >= min_coverage]
    if per.attrs["n_overlap_dropped"]:
        notes += ((f"{note_n(per.attrs['n_overlap_dropped'])} follow-up(s) whose window overlapped an earlier one "
                  "were left out."),)
    if ok.empty:
        return _unavailable(metric, "%", definition, f"None of the {note_n(len(ids))} eligible {_who(substance)} has "
                            f"abstinent-day counts covering {min_coverage:.0%} of days {start_day}–{end_day}.",
                            n_eligible=len(ids), attrition=len(ids), conf_level=conf_level, notes=notes)
    why = _coverage_reason(len(ok), len(ids), start=start_day, end=end_day, what="abstinent days", min_share=min_share,
                           who=_who(substance))
    if why:
        return _unavailable(metric, "%", definition, why, n_eligible=len(ids), attrition=len(ids) - len(ok),
                            conf_level=conf_level, notes=notes, n_covered=len(ok))
    est, low, high = _t_mean(ok["pda"].to_numpy(), conf_level)
    if low is None:
        notes += ("A confidence interval needs at least 2 patients.",)
    # missing days decide PDA: the other bound counts every day without data in the window as a day of use
    worst = (100 * ok["abstinent"] / (end_day - start_day + 1)).to_numpy()
    w_est, w_low, w_high = _t_mean(worst, conf_level)
    bounds = (Bound("days with data only (as shown)", est, low, high, len(ok)),
              Bound("days without data counted as use", w_est, w_low, w_high, len(ok)))
    return ClinicFigure(metric=metric, estimate=est, ci_low=low, ci_high=high, n=len(ok), n_eligible=len(ids),
                        attrition=len(ids) - len(ok), unit="%", definition=definition, conf_level=conf_level,
                        notes=notes, n_covered=len(ok), bounds=bounds)


def pda_difference(cohort: Cohort, *, arms: tuple[str, str] = DEFAULT_ARMS, start_day: int = 0, end_day: int = 180,
                   substance: str | None = "alcohol", min_coverage: float = 0.5,
                   min_share: float = MIN_COVERAGE_SHARE, as_of: Any = None, conf_level: float = 0.95) -> ClinicFigure:
    """Difference in mean PDA between two of the clinic's programs (first minus second), Welch t interval.

    The clinic counterpart of KARE's ketamine + therapy vs ketamine + education contrast. Programs are matched on
    the ``program`` column, ignoring case and surrounding spaces. Same window and missing-data rule as
    :func:`pda_in_window`.

    Returns
    -------
    ClinicFigure
        ``estimate`` in percentage points; ``n``/``n_eligible``/``attrition`` summed over both programs.
    """
    metric = "pda_difference"
    unit = "percentage points"
    definition = (f"Mean PDA in program '{arms[0]}' minus program '{arms[1]}'. "
                  + _pda_definition(start_day, end_day, substance, min_coverage) + " Welch t interval.")
    pats, reason = _select(cohort, substance)
    if reason:
        return _unavailable(metric, unit, definition, reason, conf_level=conf_level)
    program = pats["program"].astype("string").str.strip().str.casefold()
    if program.isna().all():
        return _unavailable(metric, unit, definition, "No patient has a program recorded, so the clinic's programs "
                            "cannot be compared. Add program to the patients export.", conf_level=conf_level)
    groups, notes, eligible, analysed = [], (), 0, 0
    for arm in arms:
        members = pats[program.eq(arm.casefold()).fillna(False).to_numpy()]
        if members.empty:
            found = ", ".join(sorted(set(pats["program"].dropna().astype(str))))
            return _unavailable(metric, unit, definition, f"No {_who(substance)} in program '{arm}' (programs found: "
                                f"{found}). Name the two programs to compare.", conf_level=conf_level)
        ids, not_reached = _reach(cohort, members, as_of, end_day)
        per = _pda_per_patient(cohort, ids, start_day, end_day)
        ok = per.loc[per["coverage"] >= min_coverage, "pda"].to_numpy()
        notes += tuple(f"'{arm}': {s}" for s in _not_reached_note(not_reached, end_day))
        eligible, analysed = eligible + len(ids), analysed + len(ok)
        groups.append((arm, ok))
    why = _coverage_reason(analysed, eligible, start=start_day, end=end_day, what="abstinent days",
                           min_share=min_share, who=f"{_who(substance)} of the two programs")
    if why:
        return _unavailable(metric, unit, definition, why, n_eligible=eligible, attrition=eligible - analysed,
                            conf_level=conf_level, notes=notes, n_covered=analysed)
    short = [(arm, len(v)) for arm, v in groups if len(v) < 2]
    if short:
        arm, k = short[0]
        return _unavailable(metric, unit, definition, f"A difference needs PDA over days {start_day}–{end_day} for at "
                            f"least 2 patients per program (got {note_n(k)} in '{arm}').", n_eligible=eligible,
                            attrition=eligible - analysed, conf_level=conf_level, notes=notes)
    diff, low, high = _welch(groups[0][1], groups[1][1], conf_level)
    notes += tuple(f"'{arm}': n = {note_n(len(v))}, mean PDA {np.mean(v):.1f}%." for arm, v in groups)
    return ClinicFigure(metric=metric, estimate=diff, ci_low=low, ci_high=high, n=analysed, n_eligible=eligible,
                        attrition=eligible - analysed, unit=unit, definition=definition, conf_level=conf_level,
                        notes=notes)


def abstinence_in_window(cohort: Cohort, *, start_day: int = 21, end_day: int = 34, substance: str | None = "cocaine",
                         use: Use = "any", missing_as_use: bool = True, dropout_as_use: bool = True,
                         min_share: float = MIN_COVERAGE_SHARE, as_of: Any = None,
                         conf_level: float = 0.95) -> ClinicFigure:
    """Share of patients abstinent over every day of a window (Wilson interval).

    Default: Dakwar 2019's last 2 weeks of a 5-week trial (days 21–34 after the first ketamine session),
    intention to treat: a patient whose abstinence is not confirmed for every day (``missing_as_use``) or who dropped
    out (lost to follow-up or withdrew) on or before the window's end (``dropout_as_use``) counts as a failure.

    Returns
    -------
    ClinicFigure
        ``estimate`` in percent; with ``missing_as_use`` the denominator is every eligible patient and
        ``attrition`` counts those whose missing data were counted as use.
    """
    metric = "abstinence_in_window"
    kind = "any use" if use == "any" else "heavy use"
    rule = []
    if missing_as_use:
        rule.append("missing data count as use (intention to treat)")
    if dropout_as_use:
        rule.append(f"dropping out (lost to follow-up or withdrew) by day {end_day} counts as use")
    definition = (f"No {kind} on any day {start_day}–{end_day} after the first ketamine session ({_who(substance)}), "
                  "confirmed by follow-up windows that cover every day of the period; "
                  + ("; ".join(rule) if rule else "patients without confirmed status are left out") + ".")
    eligible = _eligible(cohort, metric, definition, substance=substance, as_of=as_of, end_day=end_day,
                         conf_level=conf_level)
    if isinstance(eligible, ClinicFigure):
        return eligible
    ids, notes = eligible
    st = _window_status(cohort, ids, start_day, end_day, use)
    success = st["status"].eq("abstinent")
    if dropout_as_use:
        success &= ~st["dropout"]
        notes += ((f"{note_n((st['dropout'] & st['status'].eq('abstinent')).sum())} abstinent patient(s) dropped out "
                  "and count as failures."),)
    unknown = st["status"].eq("unknown")
    n_known = int((~unknown).sum())
    why = _coverage_reason(n_known, len(ids), start=start_day, end=end_day, what=f"{kind} or its absence",
                           min_share=min_share, who=_who(substance))
    if why:
        return _unavailable(metric, "%", definition, why, n_eligible=len(ids), attrition=int(unknown.sum()),
                            conf_level=conf_level, notes=notes, n_covered=n_known)
    analysed = success if missing_as_use else success[~unknown]
    fig = _proportion(metric, definition, analysed, n_eligible=len(ids), attrition=int(unknown.sum()),
                      conf_level=conf_level,
                      notes=notes, empty_reason=f"None of the {note_n(len(ids))} eligible {_who(substance)} has "
                                   f"follow-up data covering days {start_day}–{end_day}.")
    bounds = (_bound_prop("missing status counted as use", success, conf_level),
              _bound_prop("patients with known status only", success[~unknown], conf_level))
    return replace(fig, n_covered=n_known, bounds=bounds)


def use_in_window(cohort: Cohort, *, start_day: int = 1, end_day: int = 21, substance: str | None = "alcohol",
                  use: Use = "any", min_share: float = MIN_COVERAGE_SHARE, as_of: Any = None,
                  conf_level: float = 0.95) -> ClinicFigure:
    """Share of patients with any (or heavy) use in a window, among those whose status is known (Wilson interval).

    Default: Dakwar 2020's 21 days after the infusion (days 1–21). A patient's status is known when use is
    reported inside the window or abstinence is confirmed for every day of it; others are attrition.
    """
    metric = "use_in_window"
    kind = "any use" if use == "any" else "at least one heavy-use day"
    definition = (f"{kind[0].upper() + kind[1:]} on days {start_day}–{end_day} after the first ketamine session "
                  f"({_who(substance)}); patients whose use in the period is neither reported nor ruled out for every "
                  "day count as attrition.")
    eligible = _eligible(cohort, metric, definition, substance=substance, as_of=as_of, end_day=end_day,
                         conf_level=conf_level)
    if isinstance(eligible, ClinicFigure):
        return eligible
    ids, notes = eligible
    st = _window_status(cohort, ids, start_day, end_day, use)
    known = st[st["status"] != "unknown"]
    why = _coverage_reason(len(known), len(ids), start=start_day, end=end_day, what=kind, min_share=min_share,
                           who=_who(substance))
    if why:
        return _unavailable(metric, "%", definition, why, n_eligible=len(ids), attrition=len(ids) - len(known),
                            conf_level=conf_level, notes=notes, n_covered=len(known))
    bounds = (_bound_prop("patients with known status only (as shown)", known["status"].eq("use"), conf_level),
              _bound_prop("missing status counted as use", st["status"].ne("abstinent"), conf_level))
    fig = _proportion(metric, definition, known["status"].eq("use"), n_eligible=len(ids),
                      attrition=len(ids) - len(known), conf_level=conf_level, notes=notes,
                      empty_reason=f"None of the {note_n(len(ids))} eligible {_who(substance)} has follow-up data "
                                   f"that report or rule out use on days {start_day}–{end_day}.")
    return replace(fig, n_covered=len(known), bounds=bounds)


def _first_use(cohort: Cohort, ids: pd.Index, use: Use, dropout_as_use: bool) -> pd.DataFrame:
    """Per patient with a follow-up: ``time`` (days) and ``event`` under a fixed definition (as cohort._events)."""
    fu = cohort.followups[_member(cohort.followups["patient_id"], ids)]
    flag = fu["use_any"] if use == "any" else fu["use_heavy"]
    flag = flag.fillna(False).astype(bool)
    if dropout_as_use:
        flag = flag | fu["dropout"].fillna(False).astype(bool)
    last = fu.groupby("patient_id")["days"].max()
    first = fu[flag].groupby("patient_id").head(1).set_index("patient_id")
    out = pd.DataFrame({"time": last.astype(float), "event": False})
    if len(first):
        index = text_map(first.index.to_series(), cohort.patients.set_index("patient_id")["index_date"])
        rel_days = (first["relapse_date"] - index).dt.days
        used = first["use_any" if use == "any" else "use_heavy"].fillna(False).astype(bool)
        by_date = first["relapse_date"].notna() & used  # flagged by use (not only by dropout): dated by relapse_date
        out.loc[first.index, "time"] = np.where(by_date, rel_days, first["days"]).astype(float)
        out.loc[first.index, "event"] = True
    return out


def _km_figure(cohort: Cohort, *, metric: str, day: int, substance: str | None, use: Use, dropout_as_use: bool,
               complement: bool, conf_level: float) -> ClinicFigure:
    event_text = "any use" if use == "any" else "a heavy-use day, a recorded relapse date or a positive urine test"
    what = "Returned to use" if complement else "Abstinent throughout"
    definition = (f"{what} by day {day} after the first ketamine session ({_who(substance)}): Kaplan–Meier "
                  f"{'1 − S' if complement else 'S'}({day}), event = first follow-up with {event_text}"
                  f"{' or dropout' if dropout_as_use else ''}, censored at the last assessment; log-log interval.")
    pats, reason = _select(cohort, substance)
    if reason:
        return _unavailable(metric, "%", definition, reason, conf_level=conf_level)
    ids = pd.Index(pats["patient_id"])
    ev = _first_use(cohort, ids, use, dropout_as_use)
    attrition = len(ids) - len(ev)
    if ev.empty:
        return _unavailable(metric, "%", definition, f"None of the {note_n(len(ids))} {_who(substance)} has a "
                            "follow-up assessment.", n_eligible=len(ids), attrition=attrition, conf_level=conf_level)
    km = _km_at(ev["time"].to_numpy(), ev["event"].to_numpy(), day, conf_level)
    if km is None:
        return _unavailable(metric, "%", definition, f"No {_who(substance)} have been followed to day {day} "
                            f"(longest follow-up: day {ev['time'].max():g}), so S({day}) is not estimable.",
                            n_eligible=len(ids), attrition=attrition, conf_level=conf_level)
    surv, low, high, n_risk = km
    notes = (f"{note_n(n_risk)} patient(s) still followed at day {day}; {note_n(ev['event'].sum())} event(s).",)
    if attrition:
        notes += (f"{note_n(attrition)} patient(s) without any follow-up are not in the Kaplan–Meier estimate.",)
    if complement:
        est = 100 * (1 - surv)
        lo, hi = (None, None) if low is None else (100 * (1 - high), 100 * (1 - low))
    else:
        est = 100 * surv
        lo, hi = (None, None) if low is None else (100 * low, 100 * high)
    return ClinicFigure(metric=metric, estimate=est, ci_low=lo, ci_high=hi, n=len(ev), n_eligible=len(ids),
                        attrition=attrition, unit="%", definition=definition, events=int(ev["event"].sum()),
                        conf_level=conf_level, notes=notes)


def return_to_use_by_day(cohort: Cohort, *, day: int = 365, substance: str | None = None, use: Use = "any",
                         dropout_as_use: bool = False, as_of: Any = None, conf_level: float = 0.95) -> ClinicFigure:
    """Kaplan–Meier share returned to use by ``day`` (1 − S(day)), e.g. McLellan 2000's 40–60% within a year.

    ``n`` = patients with a follow-up; ``attrition`` = eligible patients without any follow-up. The estimate is
    not available when no patient is followed to ``day`` (unless every patient had the event before). ``as_of``
    is accepted for a uniform signature: Kaplan–Meier already censors follow-up that has not reached ``day``.
    """
    return _km_figure(cohort, metric="return_to_use_by_day", day=day, substance=substance, use=use,
                      dropout_as_use=dropout_as_use, complement=True, conf_level=conf_level)


def abstinent_through_day(cohort: Cohort, *, day: int = 365, substance: str | None = None, use: Use = "any",
                          dropout_as_use: bool = False, as_of: Any = None, conf_level: float = 0.95) -> ClinicFigure:
    """Kaplan–Meier share abstinent throughout to ``day`` (S(day)), e.g. Krupitsky's abstinence at 1 year."""
    return _km_figure(cohort, metric="abstinent_through_day", day=day, substance=substance, use=use,
                      dropout_as_use=dropout_as_use, complement=False, conf_level=conf_level)


# ---------------------------------------------------------------------------------------------- depression


def _meets(score: pd.Series, baseline: pd.Series, outcome: Outcome) -> pd.Series:
    """The one definition of :mod:`analytics.outcomes.response` (a baseline of 0 is never a response)."""
    if outcome == "response":
        return rsp.is_response(score, baseline)
    if outcome == "remission":
        return rsp.is_remission(score)
    raise ValueError(f"outcome must be 'response' or 'remission', not {outcome!r}")


def _outcome_text(outcome: Outcome) -> str:
    return "response (PHQ-9 at least 50% below baseline)" if outcome == "response" else "remission (PHQ-9 below 5)"


def _depressed(pats: pd.DataFrame, min_baseline: float) -> tuple[pd.DataFrame, tuple[str, ...]]:
    base = pats["baseline_phq9"]
    notes = ()
    if base.isna().any():
        notes += (f"{note_n(base.isna().sum())} patient(s) without a baseline PHQ-9 cannot be assessed.",)
    if (base < min_baseline).any():
        notes += ((f"{note_n((base < min_baseline).sum())} patient(s) with baseline PHQ-9 below {min_baseline:g} "
                  "are not in the depressed population."),)
    return pats[rsp.assessable(base, min_baseline)], notes


def _phq9_rows(cohort: Cohort, ids: pd.Index) -> pd.DataFrame:
    m = _once(cohort, "phq9 rows",
              lambda: cohort.measures.loc[cohort.measures["measure"].eq("phq9").to_numpy(bool),
                                          ["patient_id", "days", "value"]])
    return m[_member(m["patient_id"], ids).to_numpy()]


# the columns the clinic metrics read; the keyed copy keeps only these, so each of the many row selections of a
# comparison moves a few columns, not the whole cohort table
_USED_COLUMNS = {
    "patients": ("patient_id", "index_date", "index_route", "program", "primary_substance", "baseline_phq9"),
    "sessions": ("patient_id", "session_date", "session_type", "route", "days", "bp_systolic_max", "bp_diastolic_max",
                 "adverse_events"),
    "followups": ("patient_id", "assessment_date", "window_days", "days_abstinent", "heavy_days", "any_use",
                  "relapse_date", "urine_tox", "status", "days", "window_start_days", "use_any", "use_heavy",
                  "dropout"),
    "measures": ("patient_id", "days", "measure", "value"),
}


def _keyed(cohort: Cohort) -> Cohort:
    """The cohort with ``patient_id`` as integer keys (the patient's row in ``cohort.patients``) in every table.

    The clinic metrics only match, group and count patients, never show an id; on integer keys the many
    membership tests, group-bys and look-ups of a comparison run on NumPy instead of hashing text ids each time.
    Computed once per cohort object (its settings included).
    """
    keys = cohort.patients["patient_id"]
    if pd.api.types.is_integer_dtype(keys.dtype):
        return cohort
    return _once(cohort, "keyed copy", lambda: _keyed_copy(cohort))


def release_keyed_copy(cohort: Cohort) -> None:
    """Free the integer-keyed copy of ``cohort`` and what was derived from it (about 3 GB at a million patients):
    for a caller that asks for no further comparison of this cohort (the command line's ``analyze``)."""
    release(cohort, ("benchmarks", "keyed copy"))


def _keyed_copy(cohort: Cohort) -> Cohort:
    keys = cohort.patients["patient_id"]

    def recode(table: str) -> pd.DataFrame:
        frame = getattr(cohort, table)
        frame = frame[[c for c in _USED_COLUMNS[table] if c in frame.columns]]
        return frame.assign(patient_id=text_codes(frame["patient_id"], keys)) if "patient_id" in frame else frame

    return replace(cohort, patients=recode("patients").assign(patient_id=np.arange(len(keys), dtype=np.int64)),
                   sessions=recode("sessions"), followups=recode("followups"), measures=recode("measures"))


def _all_ketamine_sessions(cohort: Cohort) -> pd.DataFrame:
    """Ketamine sessions sorted by patient and day, computed once per cohort (many metrics reuse it)."""
    return _once(cohort, "ketamine sessions", lambda: _ketamine_table(cohort.sessions))


def _ketamine_table(s: pd.DataFrame) -> pd.DataFrame:
    """The ketamine sessions with their adverse events as ``_events`` (";nausea;dizziness;") and one flag column
    per named event (``_ev_<event>``, ``_ev_any``)."""
    ket = s[s["session_type"] == "ketamine"].sort_values(["patient_id", "days"])
    # an export writes few distinct event lists (hundreds in a million sessions): each is worked out once, and the
    # sessions take theirs by code
    codes, uniques = pd.factorize(ket["adverse_events"], use_na_sentinel=False)  # a missing entry is one of them
    events = pd.Series(uniques, dtype=ket["adverse_events"].dtype).fillna("").astype(str) \
        .str.replace(" ", "", regex=False)
    written = (";" + events + ";").where(events.ne(""), "")  # ";nausea;dizziness;" or ""
    # one pass over the named events (Arrow split and look-up), not one text scan per event and metric
    tokens = pc.split_pattern(text_array(events), ";")
    named = pc.index_in(pc.list_flatten(tokens), value_set=pa.array(list(ADVERSE_EVENTS), type=pa.string()))
    row = pc.list_parent_indices(tokens).to_numpy()
    which = pc.fill_null(named, -1).to_numpy()
    found = {}
    for k, e in enumerate(ADVERSE_EVENTS):
        flag = np.zeros(len(events), dtype=bool)
        flag[row[which == k]] = True
        found[f"_ev_{e}"] = flag[codes]
    return ket.assign(_events=pd.Series(written.array.take(codes), index=ket.index),
                      _ev_any=written.ne("").to_numpy(bool)[codes], **found)


def _ketamine_sessions(cohort: Cohort, ids: pd.Index) -> pd.DataFrame:
    """Patient and day of the ketamine sessions of ``ids``, sorted by patient and day."""
    ket = _all_ketamine_sessions(cohort)
    return ket.loc[_member(ket["patient_id"], ids).to_numpy(), ["patient_id", "days"]]


def _normalised(values: pd.Series) -> pd.Series:
    """``values.astype("string").str.strip().str.casefold()``, worked out once per distinct value (routes: a few
    values in hundreds of thousands of rows)."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    norm = pd.Series(uniques, dtype=object).astype("string").str.strip().str.casefold()
    table = np.array([*norm.to_numpy(dtype=object), pd.NA], dtype=object)  # code -1 (missing) → the last: NA
    return pd.Series(table[codes], index=values.index, dtype="string")


def _on_route(pats: pd.DataFrame, route: str | None) -> tuple[pd.DataFrame, str | None]:
    """Patients whose first ketamine session was by ``route`` (None: all), or why there are none."""
    if route is None:
        return pats, None
    routes = _normalised(pats["index_route"]) if "index_route" in pats else None
    if routes is None or routes.isna().all():
        return pats.iloc[:0], (f"The published figure is for {route.upper()} ketamine and the export records no route "
                               "of the ketamine sessions, so the same route cannot be compared.")
    chosen = pats[routes.eq(route.casefold()).fillna(False).to_numpy(bool)]
    if chosen.empty:
        found = ", ".join(sorted(set(routes.dropna().unique())))
        return chosen, (f"The published figure is for {route.upper()} ketamine; no clinic patient started on that "
                        f"route (routes found: {found}), so there is no like-for-like figure.")
    return chosen, None


def _select_on_route(cohort: Cohort, substance: str | None, route: str | None) -> tuple[pd.DataFrame, str | None]:
    """Patients of the substance group whose first ketamine session was by ``route``, or why there are none."""
    pats, reason = _select(cohort, substance)
    return (pats, reason) if reason else _on_route(pats, route)


def _route_text(route: str | None) -> str:
    return f", first ketamine session {route.upper()}" if route else ""


def _score_outcome(metric: str, definition: str, pats: pd.DataFrame, scores: pd.Series, outcome: Outcome,
                   n_eligible: int, conf_level: float, notes: tuple[str, ...], what: str, *,
                   min_share: float = MIN_COVERAGE_SHARE) -> ClinicFigure:
    base = pats.set_index("patient_id")["baseline_phq9"]
    success = _meets(scores, base.reindex(scores.index), outcome)
    return _with_score_bounds(metric, definition, success, n_eligible, conf_level, notes, what, min_share)


def _with_score_bounds(metric: str, definition: str, success: pd.Series, n_eligible: int, conf_level: float,
                       notes: tuple[str, ...], what: str, min_share: float) -> ClinicFigure:
    """Completers' proportion, or the coverage reason; bounds: completers and missing scores as no response."""
    why = _coverage_reason(len(success), n_eligible, start=0, end=0, what="", min_share=min_share, who="patients")
    if why:
        share = len(success) / n_eligible
        why = (f"Only {note_of(len(success), n_eligible)} eligible patients have a PHQ-9 {what} ({share:.0%}); a "
               f"like-for-like figure needs {min_share:.0%} (a setting), otherwise it would be decided by who "
               "happened to be assessed." if len(success) else
               f"None of the {note_n(n_eligible)} eligible patients has a PHQ-9 {what}: the clinic's assessment "
               "schedule cannot see this window.")
        return _unavailable(metric, "%", definition, why, n_eligible=n_eligible, attrition=n_eligible - len(success),
                            conf_level=conf_level, notes=notes, n_covered=len(success))
    fig = _proportion(metric, definition, success, n_eligible=n_eligible, attrition=n_eligible - len(success),
                      conf_level=conf_level, notes=notes,
                      empty_reason=f"None of the {note_n(n_eligible)} eligible patients has a PHQ-9 {what}.")
    padded = pd.concat([success.astype(bool), pd.Series(False, index=range(n_eligible - len(success)))],
                       ignore_index=True)
    bounds = (_bound_prop("patients with a score only (as shown)", success.astype(bool), conf_level),
              _bound_prop("patients without a score counted as not responding", padded, conf_level))
    return replace(fig, n_covered=len(success), bounds=bounds)


def phq9_after_induction(cohort: Cohort, *, outcome: Outcome = "response", min_sessions: int = 4,
                         induction_days: int = 28, window: tuple[int, int] = (14, 31), min_baseline: float = 10,
                         substance: str | None = None, route: str | None = None,
                         min_share: float = MIN_COVERAGE_SHARE, as_of: Any = None,
                         conf_level: float = 0.95) -> ClinicFigure:
    """PHQ-9 response or remission 14–31 days after induction (McInnes 2022), completers only.

    Induction = ketamine sessions in the first ``induction_days`` days (days 0–27); it is complete with at least
    ``min_sessions`` of them, and ends on the day of the last one. The score is the first PHQ-9 from
    ``window[0]`` to ``window[1]`` days after that day. Eligible: completed induction, baseline PHQ-9 at least
    ``min_baseline`` (a depressed population; McInnes enrolled depression patients), window closed.
    """
    metric = "phq9_after_induction"
    definition = (f"PHQ-9 {_outcome_text(outcome)} {window[0]}–{window[1]} days after induction ({_who(substance)} "
                  f"with baseline PHQ-9 ≥ {min_baseline:g}{_route_text(route)}); induction = at least {min_sessions} "
                  "ketamine sessions in "
                  f"days 0–{induction_days - 1}, ending on the last of them; first PHQ-9 in the window; completers "
                  "only.")
    pats, reason = _select_on_route(cohort, substance, route)
    if reason:
        return _unavailable(metric, "%", definition, reason, conf_level=conf_level)
    ket = _ketamine_sessions(cohort, pd.Index(pats["patient_id"]))
    ind = ket[(ket["days"] >= 0) & (ket["days"] < induction_days)].groupby("patient_id")["days"].agg(["size", "max"])
    done = ind[ind["size"] >= min_sessions]
    notes = ((f"{note_n(len(pats) - len(done))} patient(s) had fewer than {min_sessions} ketamine sessions in the "
              f"first {induction_days} days (induction not completed) and are not eligible."),)
    pats = pats[_member(pats["patient_id"], done.index)]
    pats, more = _depressed(pats, min_baseline)
    notes += more
    avail = _days_available(cohort, pats, as_of)
    end = done["max"].reindex(avail.index)
    closed = avail.index[(avail - end) >= window[1]]
    if len(avail) - len(closed):
        notes += ((f"{note_n(len(avail) - len(closed))} patient(s) whose post-induction window has not closed are not "
                  "eligible."),)
    if len(closed) == 0:
        return _unavailable(metric, "%", definition, f"No {_who(substance)} completed induction with baseline "
                            f"PHQ-9 ≥ {min_baseline:g} and reached {window[1]} days after it.", conf_level=conf_level,
                            notes=notes)
    rows = _phq9_rows(cohort, closed)
    rows = rows.assign(since=rows["days"] - text_map(rows["patient_id"], end))
    rows = rows[rows["since"].between(*window)].sort_values(["patient_id", "days"])
    scores = rows.groupby("patient_id")["value"].first()
    return _score_outcome(metric, definition, pats[_member(pats["patient_id"], closed)], scores, outcome, len(closed),
                          conf_level, notes, f"{window[0]}–{window[1]} days after induction", min_share=min_share)


def phq9_within_days(cohort: Cohort, *, outcome: Outcome = "response", end_day: int = 42, min_baseline: float = 10,
                     substance: str | None = None, route: str | None = None, min_share: float = MIN_COVERAGE_SHARE,
                     as_of: Any = None, conf_level: float = 0.95) -> ClinicFigure:
    """PHQ-9 response or remission at any score on days 1–``end_day`` (Oliver 2022: within 6 weeks)."""
    metric = "phq9_within_days"
    definition = (f"PHQ-9 {_outcome_text(outcome)} at any score on days 1–{end_day} after the first ketamine session "
                  f"({_who(substance)} with baseline PHQ-9 ≥ {min_baseline:g}{_route_text(route)}); patients without "
                  "a score in the period count as attrition.")
    pats, reason = _select_on_route(cohort, substance, route)
    if reason:
        return _unavailable(metric, "%", definition, reason, conf_level=conf_level)
    pats, notes = _depressed(pats, min_baseline)
    ids, not_reached = _reach(cohort, pats, as_of, end_day)
    notes += _not_reached_note(not_reached, end_day)
    if len(ids) == 0:
        return _unavailable(metric, "%", definition, f"No {_who(substance)} with baseline PHQ-9 ≥ {min_baseline:g} "
                            f"have been followed to day {end_day}.", conf_level=conf_level, notes=notes)
    rows = _phq9_rows(cohort, ids)
    rows = rows[rows["days"].between(1, end_day)]
    base = pats.set_index("patient_id")["baseline_phq9"]
    hit = _meets(rows["value"], text_map(rows["patient_id"], base), outcome).groupby(rows["patient_id"]).any()
    return _with_score_bounds(metric, definition, hit, len(ids), conf_level, notes, f"on days 1–{end_day}", min_share)


def phq9_after_infusions(cohort: Cohort, *, outcome: Outcome = "response", infusions: int = 10, within_days: int = 28,
                         min_baseline: float = 10, substance: str | None = None, route: str | None = None,
                         min_share: float = MIN_COVERAGE_SHARE, as_of: Any = None,
                         conf_level: float = 0.95) -> ClinicFigure:
    """PHQ-9 response or remission after ``infusions`` ketamine sessions (Oliver 2022: after 10 infusions).

    The score is the first PHQ-9 after the day of the ``infusions``-th ketamine session (a score on that day is
    taken as pre-dose) and at most ``within_days`` days after it.
    """
    metric = "phq9_after_infusions"
    definition = (f"PHQ-9 {_outcome_text(outcome)} at the first score 1–{within_days} days after the "
                  f"{infusions}th ketamine session ({_who(substance)} with baseline PHQ-9 ≥ {min_baseline:g} who "
                  f"had {infusions} sessions{_route_text(route)}); patients without such a score count as attrition.")
    pats, reason = _select_on_route(cohort, substance, route)
    if reason:
        return _unavailable(metric, "%", definition, reason, conf_level=conf_level)
    ket = _ketamine_sessions(cohort, pd.Index(pats["patient_id"]))
    nth = ket[ket.groupby("patient_id").cumcount() == infusions - 1].set_index("patient_id")["days"]
    notes = (f"{note_n(len(pats) - len(nth))} patient(s) have had fewer than {infusions} ketamine sessions.",)
    pats, more = _depressed(pats[_member(pats["patient_id"], nth.index)], min_baseline)
    notes += more
    avail = _days_available(cohort, pats, as_of)
    closed = avail.index[(avail - nth.reindex(avail.index)) >= within_days]
    if len(avail) - len(closed):
        notes += ((f"{note_n(len(avail) - len(closed))} patient(s) whose {within_days}-day window has not closed "
                   "are not eligible."),)
    if len(closed) == 0:
        return _unavailable(metric, "%", definition, f"No {_who(substance)} with baseline PHQ-9 ≥ {min_baseline:g} "
                            f"have had {infusions} ketamine sessions and {within_days} days after them.",
                            conf_level=conf_level, notes=notes)
    rows = _phq9_rows(cohort, closed)
    rows = rows.assign(since=rows["days"] - text_map(rows["patient_id"], nth))
    rows = rows[rows["since"].between(1, within_days)].sort_values(["patient_id", "days"])
    scores = rows.groupby("patient_id")["value"].first()
    return _score_outcome(metric, definition, pats[_member(pats["patient_id"], closed)], scores, outcome, len(closed),
                          conf_level, notes, f"within {within_days} days after the {infusions}th session",
                          min_share=min_share)


# -------------------------------------------------------------------------------------------------- safety


def _session_scope(cohort: Cohort, pats: pd.DataFrame, route: str | None, start_day: int,
                   end_day: int | None, columns: list[str]) -> pd.DataFrame:
    """``columns`` of the ketamine sessions of ``pats`` in the route and day window."""
    ket = _all_ketamine_sessions(cohort)
    days = ket["days"].to_numpy(float)
    keep = _member(ket["patient_id"], pd.Index(pats["patient_id"])).to_numpy() & (days >= start_day)
    if route is not None:
        keep &= ket["route"].eq(route).fillna(False).to_numpy(bool)
    if end_day is not None:
        keep &= days <= end_day
    return ket.loc[keep, columns]  # one selection of the columns needed, not of the wide table per condition


def _scope_text(route: str | None, start_day: int, end_day: int | None, substance: str | None) -> str:
    where = f"{route.upper()} " if route else ""
    when = f"days {start_day}–{end_day}" if end_day is not None else "the whole course"
    return f"{where}ketamine sessions in {when} ({_who(substance)})"


def _route_reason(cohort: Cohort, route: str | None) -> str | None:
    """Why a figure for ``route`` sessions has no like-for-like clinic figure (no ketamine session of the route)."""
    if route is None:
        return None
    present: set[str] = _once(cohort, "ketamine session routes", lambda: set(
        _normalised(_all_ketamine_sessions(cohort)["route"]).dropna().unique()))
    if route.casefold() in present:
        return None
    found = ", ".join(sorted(present)) or "none recorded"
    return (f"The published figure is for {route.upper() if len(route) <= 2 else route} ketamine sessions; the clinic "
            f"has no {route.upper() if len(route) <= 2 else route} ketamine sessions (routes found: {found}), so there "
            "is no like-for-like figure.")


SAFETY_CATEGORIES = ("any", "expected", "needed_action", "serious")


def adverse_event_rate(cohort: Cohort, *, event: str | None = None, per: Literal["patient", "session"] = "patient",
                       start_day: int = 0, end_day: int | None = None, route: str | None = None,
                       category: Literal["any", "expected", "needed_action", "serious"] = "any",
                       substance: str | None = None, as_of: Any = None, conf_level: float = 0.95) -> ClinicFigure:
    """Share of patients (or sessions) with an adverse event recorded on ketamine sessions (Wilson interval).

    ``event`` is one of the contract's adverse-event names (None: any event of ``category``). ``category``:
    ``"any"`` recorded event, ``"expected"`` acute effects (:data:`analytics.outcomes.safety.EXPECTED_ACUTE_EFFECTS`),
    or ``"needed_action"`` / ``"serious"`` events, which the export does not record (the figure then has a reason).
    ``route``: only sessions of that route; a clinic without any gets a reason. Per patient: at least one session in
    the window with the event; patients must have a ketamine session in the window and, for a bounded window, data
    up to its end. A session without an ``adverse_events`` entry counts as a session without an event.
    """
    metric = "adverse_event_rate"
    if category not in SAFETY_CATEGORIES:
        raise ValueError(f"category must be one of {', '.join(SAFETY_CATEGORIES)} (got {category!r}).")
    kind = {"any": "", "expected": "expected acute effect ", "needed_action": "adverse event that needed action ",
            "serious": "serious adverse event "}[category]
    name = f"'{event}'" if event else f"any {kind or 'adverse event '}".rstrip()
    unit_text = "patients with at least one" if per == "patient" else "sessions with"
    definition = f"Share of {unit_text} {name} recorded, over {_scope_text(route, start_day, end_day, substance)}."
    if category in ("needed_action", "serious"):
        return _unavailable(metric, "%", definition, NEEDED_ACTION_NOT_RECORDED if category == "needed_action"
                            else SERIOUS_NOT_RECORDED, conf_level=conf_level)
    pats, reason = _select(cohort, substance)
    if reason:
        return _unavailable(metric, "%", definition, reason, conf_level=conf_level)
    if _all_ketamine_sessions(cohort)["adverse_events"].isna().all():
        return _unavailable(metric, "%", definition, "No ketamine session in the export has an adverse_events entry, "
                            "so recorded events cannot be told apart from events not recorded. Export the "
                            "adverse_events column.", conf_level=conf_level)
    reason = _route_reason(cohort, route)
    if reason:
        return _unavailable(metric, "%", definition, reason, conf_level=conf_level)
    notes: tuple[str, ...] = ()
    if end_day is not None:
        ids, not_reached = _reach(cohort, pats, as_of, end_day)
        pats, notes = pats[_member(pats["patient_id"], ids)], _not_reached_note(not_reached, end_day)
    if event is None and category == "expected":
        cols = [f"_ev_{e}" for e in EXPECTED_ACUTE_EFFECTS]
        s = _session_scope(cohort, pats, route, start_day, end_day, ["patient_id", *cols])
        has = s[cols].any(axis=1)
        notes += ((f"Expected acute effects = {', '.join(EXPECTED_ACUTE_EFFECTS)} (type only: the export cannot "
                   "tell whether an effect resolved in the session)."),)
    else:
        flag = "_ev_any" if event is None else f"_ev_{event}"
        flagged = flag in _all_ketamine_sessions(cohort)
        s = _session_scope(cohort, pats, route, start_day, end_day, ["patient_id", flag if flagged else "_events"])
        has = s[flag] if flagged else s["_events"].str.contains(f";{event};", regex=False)
    notes += ("Sessions without an adverse_events entry count as sessions without an event.",)
    if per == "session":
        return _proportion(metric, definition, has, n_eligible=len(s), attrition=0, conf_level=conf_level,
                           notes=notes, empty_reason=f"No {_scope_text(route, start_day, end_day, substance)}.")
    by_patient = has.groupby(s["patient_id"]).any()
    return _proportion(metric, definition, by_patient, n_eligible=len(by_patient), attrition=0,
                       conf_level=conf_level, notes=notes,
                       empty_reason=f"No patients with {_scope_text(route, start_day, end_day, substance)}.")


def bp_elevation_rate(cohort: Cohort, *, systolic: float = 165, diastolic: float = 100, route: str | None = "iv",
                      substance: str | None = None, as_of: Any = None, conf_level: float = 0.95) -> ClinicFigure:
    """Share of patients with a session whose highest blood pressure reached ``systolic`` or ``diastolic``.

    Rodrigues 2020's treatment-emergent hypertension (≥165/100 mmHg) over the course. Eligible: patients with a
    ketamine session of the route; attrition: those without any blood-pressure reading.
    """
    metric = "bp_elevation_rate"
    definition = (f"Share of patients with at least one session whose highest systolic was ≥ {systolic:g} or highest "
                  f"diastolic ≥ {diastolic:g} mmHg, over {_scope_text(route, 0, None, substance)}; patients without "
                  "a reading count as attrition.")
    pats, reason = _select(cohort, substance)
    if not reason:
        reason = _route_reason(cohort, route)
    if reason:
        return _unavailable(metric, "%", definition, reason, conf_level=conf_level)
    s = _session_scope(cohort, pats, route, 0, None, ["patient_id", "bp_systolic_max", "bp_diastolic_max"])
    eligible = int(s["patient_id"].nunique())
    read = s[s["bp_systolic_max"].notna() | s["bp_diastolic_max"].notna()]
    if read.empty:
        why = (f"No blood-pressure reading is recorded on {_scope_text(route, 0, None, substance)}" if eligible else
               f"No {_scope_text(route, 0, None, substance)}")
        return _unavailable(metric, "%", definition, why + ".", n_eligible=eligible, attrition=eligible,
                            conf_level=conf_level)
    high = (read["bp_systolic_max"] >= systolic).fillna(False) | (read["bp_diastolic_max"] >= diastolic).fillna(False)
    by_patient = high.groupby(read["patient_id"]).any()
    return _proportion(metric, definition, by_patient, n_eligible=eligible, attrition=eligible - len(by_patient),
                       conf_level=conf_level, notes=(), empty_reason="No readings.")


CLINIC_METRICS: dict[str, Callable[..., ClinicFigure]] = {
    "pda_in_window": pda_in_window,
    "pda_difference": pda_difference,
    "abstinence_in_window": abstinence_in_window,
    "use_in_window": use_in_window,
    "return_to_use_by_day": return_to_use_by_day,
    "abstinent_through_day": abstinent_through_day,
    "phq9_after_induction": phq9_after_induction,
    "phq9_within_days": phq9_within_days,
    "phq9_after_infusions": phq9_after_infusions,
    "adverse_event_rate": adverse_event_rate,
    "bp_elevation_rate": bp_elevation_rate,
}


# ------------------------------------------------------------------------------------------------- compare

COMPARISON_COLUMNS = (
    "id", "row", "metric", "group", "domain", "kind", "unit", "unit_of_analysis", "arms", "published",
    "published_low", "published_high", "published_interval", "published_qualifier", "published_text", "published_n",
    "clinic_metric", "clinic_estimate", "clinic_ci_low", "clinic_ci_high", "clinic_n", "clinic_n_eligible",
    "clinic_attrition", "clinic_events", "clinic_definition", "clinic_n_covered", "clinic_coverage",
    *(f"clinic_bound{k}_{c}" for k in (1, 2) for c in ("rule", "estimate", "ci_low", "ci_high", "n")),
    "clinic_reason", "clinic_notes", "citation",
    "short_citation", "link", "doi", "population", "timepoint", "definition", "cautions", "notes", "status",
    "status_label",
)


@dataclass(frozen=True)
class BenchmarkComparison:
    """Published benchmarks beside the clinic's like-for-like figures; one row per benchmark.

    ``table`` columns: ``COMPARISON_COLUMNS`` (published figure, interval and text; clinic estimate, interval,
    ``clinic_n``, ``clinic_n_eligible``, ``clinic_attrition``, definition, or ``clinic_reason``; provenance:
    citation, link, DOI, population, timepoint, cautions (newline-separated), status and ``status_label``).
    """

    table: pd.DataFrame
    conf_level: float
    as_of: pd.Timestamp | None
    substance: str | None
    notes: tuple[str, ...] = ()


def _clinic_for(b: Benchmark, cohort: Cohort, substance: str | None, as_of: Any, arms: tuple[str, str],
                conf_level: float, cache: dict[tuple[Any, ...], ClinicFigure],
                min_share: float = MIN_COVERAGE_SHARE) -> ClinicFigure | None:
    if b.clinic is None:
        return None
    kwargs = b.clinic.kwargs()
    if "substance" not in kwargs:
        kwargs["substance"] = substance
    if "min_share" in inspect.signature(CLINIC_METRICS[b.clinic.function]).parameters:
        kwargs["min_share"] = min_share
    if b.clinic.function == "pda_difference":
        kwargs["arms"] = tuple(arms)
    key = (b.clinic.function, tuple(sorted((k, str(v)) for k, v in kwargs.items())))
    if key not in cache:
        fn = CLINIC_METRICS[b.clinic.function]
        try:
            cache[key] = fn(cohort, as_of=as_of, conf_level=conf_level, **kwargs)
        except OutcomesError as err:
            cache[key] = _unavailable(b.clinic.function, b.unit, "", str(err), conf_level=conf_level)
    return cache[key]


def _row(b: Benchmark, fig: ClinicFigure | None) -> dict[str, Any]:
    return {
        "id": b.id, "row": b.row, "metric": b.metric, "group": b.group, "domain": b.domain, "kind": b.kind,
        "unit": b.unit, "unit_of_analysis": b.unit_of_analysis, "arms": b.arms, "published": b.value,
        "published_low": b.ci_low, "published_high": b.ci_high, "published_interval": b.interval,
        "published_qualifier": b.qualifier, "published_text": b.value_text, "published_n": b.n,
        "clinic_metric": b.clinic.function if b.clinic else None,
        "clinic_estimate": fig.estimate if fig else None, "clinic_ci_low": fig.ci_low if fig else None,
        "clinic_ci_high": fig.ci_high if fig else None, "clinic_n": fig.n if fig else None,
        "clinic_n_eligible": fig.n_eligible if fig else None, "clinic_attrition": fig.attrition if fig else None,
        "clinic_events": fig.events if fig else None, "clinic_definition": fig.definition if fig else None,
        "clinic_n_covered": fig.n_covered if fig else None, "clinic_coverage": fig.coverage if fig else None,
        **_bound_columns(fig),
        "clinic_reason": b.clinic_reason if fig is None else fig.reason,
        "clinic_notes": "\n".join(fig.notes) if fig else "",
        "citation": b.citation, "short_citation": b.short_citation, "link": b.link, "doi": b.doi,
        "population": b.population, "timepoint": b.timepoint, "definition": b.definition,
        "cautions": "\n".join(b.cautions), "notes": "\n".join(b.notes), "status": b.status,
        "status_label": b.status_label,
    }


def _bound_columns(fig: ClinicFigure | None) -> dict[str, Any]:
    """The two missing-data bounds as columns: ``clinic_bound{1,2}_{rule,estimate,ci_low,ci_high,n}``."""
    out: dict[str, Any] = {}
    bounds = fig.bounds if fig is not None and fig.estimate is not None else ()
    for k in (1, 2):
        b = bounds[k - 1] if len(bounds) >= k else None
        out.update({f"clinic_bound{k}_rule": b.rule if b else None,
                    f"clinic_bound{k}_estimate": b.estimate if b else None,
                    f"clinic_bound{k}_ci_low": b.ci_low if b else None,
                    f"clinic_bound{k}_ci_high": b.ci_high if b else None, f"clinic_bound{k}_n": b.n if b else None})
    return out


@per_cohort
def compare(cohort: Cohort, *, substance: str | None = None, domain: Domain | None = None, as_of: Any = None,
            arms: tuple[str, str] = DEFAULT_ARMS, conf_level: float = 0.95,
            registry: tuple[Benchmark, ...] | None = None,
            min_share: float = MIN_COVERAGE_SHARE) -> BenchmarkComparison:
    """Every benchmark beside the clinic's figure computed with the same definition and window, or a reason.

    Parameters
    ----------
    cohort:
        The analysis cohort.
    substance:
        Restrict to one primary substance: benchmarks about other substances are dropped, and the substance-free
        ones (any substance, depression, safety) are computed on this subpopulation. None: everything.
    domain:
        ``"efficacy"`` or ``"safety"`` to keep one domain; None keeps both.
    as_of:
        Data end for "window reached" rules; default the latest session or assessment date.
    arms:
        The two programs compared for KARE-3 (ketamine + therapy vs ketamine + education).
    registry:
        Benchmarks to use; default :func:`load_registry`.
    min_share:
        Coverage a window figure needs: the share of eligible patients whose assessments cover the benchmark's
        window (default 70 %); below it the row gives the reason instead of a figure.

    Returns
    -------
    BenchmarkComparison
        One row per benchmark; see ``COMPARISON_COLUMNS``. Rows with a clinic figure come first.
    """
    registry = registry if registry is not None else load_registry()
    chosen = [b for b in registry
              if (substance is None or b.substance in (None, substance)) and (domain is None or b.domain == domain)]
    keyed = _keyed(cohort)
    cache: dict[tuple[Any, ...], ClinicFigure] = {}
    rows = [_row(b, _clinic_for(b, keyed, substance, as_of, arms, conf_level, cache, min_share)) for b in chosen]
    table = pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))
    has_figure = table["clinic_estimate"].notna().to_numpy()
    table = pd.concat([table[has_figure], table[~has_figure]], ignore_index=True)  # stable: registry order within
    end = _as_of(keyed, as_of)
    notes = (
        (f"Published figures from {len({b.study for b in chosen})} sources; 'secondary source' marks figures seen only "
        "in a press release, news item or summary site. Figures marked UNVERIFIED in the reference sheets are never "
        "shown."),
        "Between-arm differences and ratios are shown on their own axes, never as absolute levels.",
        (f"Clinic figures use data up to {end.date() if end is not None else 'an unknown date'}; windows that had not "
        "closed by then are left out."),
    )
    return BenchmarkComparison(table=table, conf_level=conf_level, as_of=end, substance=substance, notes=notes)


def _num(x: Any) -> float | None:
    if x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA:
        return None
    return float(x)


def _source(row: pd.Series) -> str:
    where = f"doi:{row['doi']}" if isinstance(row["doi"], str) and row["doi"] else row["link"]
    label = " (secondary source)" if row["status"] == "secondary" else ""
    return f"{row['short_citation']}; {where}{label}"


def benchmarks_json(cohort: Cohort, *, substance: str | None = None, as_of: Any = None,
                    arms: tuple[str, str] = DEFAULT_ARMS) -> list[dict[str, Any]]:
    """The ``benchmarks`` section of ``kap-outcomes analyze --json`` (cli.md).

    One object per benchmark: ``{"id", "metric", "clinic": number or null, "published": number, "source"}``.
    A published range (e.g. McLellan's 40–60%) has no single value, so it gives two objects, ``<id>/range-low`` and
    ``<id>/range-high``. Numbers are in the benchmark's unit (percent for rates).
    """
    table = compare(cohort, substance=substance, as_of=as_of, arms=arms).table
    out: list[dict[str, Any]] = []
    for _, row in table.iterrows():
        clinic = _num(row["clinic_estimate"])
        n = _num(row["clinic_n"])
        if cohort.settings.suppress and n is not None and 0 < n < cohort.settings.min_cell:
            clinic = None  # small-cell suppression: a figure from 1–10 patients is not shared
        metric = row["metric"]
        if row["published_qualifier"] != "=":
            metric = f"{metric} (published: {row['published_text']})"
        base = {"metric": metric, "clinic": clinic, "source": _source(row)}
        if row["published_interval"] == "range":
            out.append({"id": f"{row['id']}/range-low", **base, "published": _num(row["published_low"])})
            out.append({"id": f"{row['id']}/range-high", **base, "published": _num(row["published_high"])})
        else:
            out.append({"id": row["id"], **base, "published": _num(row["published"])})
    return [{k: d[k] for k in ("id", "metric", "clinic", "published", "source")} for d in out]
