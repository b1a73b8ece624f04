"""PHQ-9 response, remission and loss of response: one definition for every output.

The trajectories page and the meeting pack (:func:`analytics.outcomes.trajectories.response_remission`,
:func:`~analytics.outcomes.trajectories.response_durability`), the key indicator "PHQ-9 response at 4 weeks"
(:mod:`analytics.outcomes.qi`) and the comparisons with published studies (:mod:`analytics.outcomes.benchmarks`)
all use these functions, so a patient is a responder in one place exactly when they are in every other.

* **Assessable**: a baseline PHQ-9 of at least ``min_baseline`` (default :data:`MIN_BASELINE` = 10, the usual
  threshold of a depressed population and of the key indicator; :attr:`Settings.phq9_min_baseline`). A baseline of
  0 is never assessable, whatever the setting: half of 0 is 0, so any later 0 would count as a "response".
* **Response**: a score at most half the baseline (a fall of at least 50 %).
* **Remission**: a score below 5.
* **Loss of response** (after a first response): two consecutive scores above half the baseline, dated at the
  first of the two; or a rise of at least ``rise_points`` (default :data:`MIN_IMPORTANT_CHANGE` = 5, the PHQ-9's
  minimal clinically important difference; Löwe et al. 2004, *Med Care* 42(12)) above the score that first met
  response, dated at that score. One score above half the baseline followed by a return into response is a
  fluctuation, not a loss.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

RESPONSE_FRACTION = 0.5   # response: score ≤ 50 % of baseline
REMISSION_BELOW = 5.0     # remission: PHQ-9 < 5
MIN_BASELINE = 10.0       # assessable: baseline PHQ-9 ≥ 10
MIN_IMPORTANT_CHANGE = 5.0  # loss of response: a rise of ≥ 5 points from the response score
LOSS_CONSECUTIVE = 2      # loss of response: this many consecutive scores above half the baseline


def assessable(baseline: pd.Series | np.ndarray, min_baseline: float = MIN_BASELINE) -> np.ndarray:
    """Whose response and remission can be judged: baseline known, ≥ ``min_baseline`` and above 0."""
    b = pd.to_numeric(pd.Series(baseline).reset_index(drop=True), errors="coerce").to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        return np.isfinite(b) & (b >= min_baseline) & (b > 0)


def is_response(score: pd.Series | np.ndarray, baseline: pd.Series | np.ndarray) -> np.ndarray | pd.Series:
    """Score at most half a positive baseline (False where either is missing or the baseline is 0)."""
    with np.errstate(invalid="ignore"):
        out = (baseline > 0) & (score <= RESPONSE_FRACTION * baseline)
    return out.fillna(False).astype(bool) if isinstance(out, pd.Series) else np.asarray(out, dtype=bool)


def is_remission(score: pd.Series | np.ndarray) -> np.ndarray | pd.Series:
    """Score below 5 (False where missing)."""
    with np.errstate(invalid="ignore"):
        out = score < REMISSION_BELOW
    return out.fillna(False).astype(bool) if isinstance(out, pd.Series) else np.asarray(out, dtype=bool)


def definition_text(min_baseline: float, rise_points: float | None = None) -> str:
    """The definitions in one plain sentence (captions, notes, the report)."""
    text = (f"Response = PHQ-9 at most half the baseline score; remission = PHQ-9 below 5; both among patients with "
            f"a baseline PHQ-9 of at least {min_baseline:g} (a baseline of 0 never counts)")
    if rise_points is not None:
        text += (f"; loss of response = {LOSS_CONSECUTIVE} consecutive scores above half the baseline, or a rise of "
                 f"at least {rise_points:g} points from the response score")
    return text + "."


def response_episodes(scores: pd.DataFrame, *, rise_points: float = MIN_IMPORTANT_CHANGE) -> pd.DataFrame:
    """First response and its loss, per patient.

    Parameters
    ----------
    scores:
        ``patient_id``, ``days``, ``value`` (PHQ-9 after day 0) and ``baseline_phq9``, for assessable patients.
    rise_points:
        A rise of this many points from the response score is a loss of response.

    Returns
    -------
    pandas.DataFrame
        One row per patient who responded: ``patient_id``, ``baseline_phq9``, ``response_day``,
        ``response_score``, ``lost_response`` (True = loss observed), ``loss_day`` (NaN without loss),
        ``last_day`` (last PHQ-9), ``days_in_response`` (to the loss, else to the last PHQ-9).
    """
    d = scores.sort_values(["patient_id", "days"], kind="stable").reset_index(drop=True)
    responding = np.asarray(is_response(d["value"].to_numpy(float), d["baseline_phq9"].to_numpy(float)))
    first = d[responding].drop_duplicates("patient_id")
    out = pd.DataFrame({"patient_id": first["patient_id"].to_numpy(),
                        "baseline_phq9": first["baseline_phq9"].to_numpy(float),
                        "response_day": first["days"].to_numpy(float),
                        "response_score": first["value"].to_numpy(float)})
    at = pd.Index(out["patient_id"]).get_indexer(d["patient_id"])
    last = d.groupby("patient_id", sort=False)["days"].max()
    out["last_day"] = last.reindex(out["patient_id"]).to_numpy(float)
    ok = at >= 0
    after = d[ok].assign(_k=at[ok])
    after = after[after["days"].to_numpy(float) > out["response_day"].to_numpy()[after["_k"].to_numpy()]]
    k = after["_k"].to_numpy()
    days = after["days"].to_numpy(float)
    value = after["value"].to_numpy(float)
    above = value > RESPONSE_FRACTION * after["baseline_phq9"].to_numpy(float)
    same = np.r_[False, k[1:] == k[:-1]]                       # previous row is the same patient's, after response
    prev_above = np.r_[False, above[:-1]] & same
    prev_days = np.r_[np.nan, days[:-1]]
    onset = np.where(above & prev_above, prev_days, np.inf)   # two consecutive: dated at the first of the two
    rise = np.where(value >= out["response_score"].to_numpy()[k] + rise_points, days, np.inf)
    loss = np.full(len(out), np.inf)
    np.minimum.at(loss, k, np.minimum(onset, rise))
    out["lost_response"] = np.isfinite(loss)
    out["loss_day"] = np.where(np.isfinite(loss), loss, np.nan)
    end = np.where(np.isfinite(loss), loss, out["last_day"].to_numpy())
    out["days_in_response"] = end - out["response_day"].to_numpy()
    return out
