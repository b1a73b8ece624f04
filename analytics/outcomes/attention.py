"""Expected PHQ-9 for the "patients needing attention" list, from the trajectory model."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analytics.errors import OutcomesError
from analytics.outcomes import trajectories
from analytics.outcomes.cohort import Cohort
from analytics.outcomes.memo import once


def expected_phq9(cohort: Cohort, *, by: str | None = "program") -> tuple[pd.DataFrame | None, str]:
    """Model-expected PHQ-9 on the day of each patient's latest score.

    The expectation is the mixed model's mean course for the patient's group (``phq9 ~ weeks * by``, REML),
    read at the week of the latest score: "where patients like this one usually are by now".

    Returns
    -------
    (table, note)
        ``table`` has ``patient_id``, ``days``, ``expected_phq9`` (None when the model cannot be fitted; the note
        says why and the caller falls back to the baseline). Fitted once per cohort and ``by`` (the page's
        reruns, e.g. a new margin, reuse it).
    """
    table, note = once(cohort, ("attention", "expected phq9", by), lambda: _expected_phq9(cohort, by))
    return (None if table is None else table.copy(deep=False)), note


def _expected_phq9(cohort: Cohort, by: str | None) -> tuple[pd.DataFrame | None, str]:
    phq = cohort.measures[(cohort.measures["measure"] == "phq9") & (cohort.measures["days"] > 0)]
    if phq.empty:
        return None, "No PHQ-9 after day 0: expectation = baseline."
    latest = phq.sort_values("days").groupby("patient_id").tail(1)[["patient_id", "days", "weeks"]]
    try:
        fit = trajectories.fit_trajectory(cohort, measure="phq9", by=by)
    except OutcomesError as err:
        if by is None:
            return None, f"Expected PHQ-9 = baseline (trajectory model not available: {err})"
        return expected_phq9(cohort, by=None)
    weeks = np.unique(np.round(latest["weeks"].to_numpy(), 1))
    pred = trajectories.predicted_means(fit, weeks=weeks).table
    pred = pred.assign(weeks=pred["weeks"].round(1))
    groups = cohort.patients.set_index("patient_id")[by].astype("string") if by else None
    latest = latest.assign(weeks=latest["weeks"].round(1),
                           group=latest["patient_id"].map(groups) if groups is not None else "all")
    key = pred.set_index(["group", "weeks"])["estimate"]
    idx = pd.MultiIndex.from_arrays([latest["group"].astype(object), latest["weeks"]])
    latest["expected_phq9"] = key.reindex(idx).to_numpy(dtype=float)
    note = (f"Expected PHQ-9: the mixed model's mean course ({fit.formula}, REML) for the patient's "
            f"{by or 'clinic'} at the week of their latest score.")
    return latest[["patient_id", "days", "expected_phq9"]].reset_index(drop=True), note


def attention_counts(table: pd.DataFrame, *, min_cell: int = 11, enabled: bool = True) -> tuple[str, pd.DataFrame]:
    """How many patients are flagged, in all and per reason, as the small-cell rule lets them be shown.

    Parameters
    ----------
    table:
        ``AttentionList.table`` (one row per patient and reason).

    Returns
    -------
    (total, counts)
        ``total``: the number of patients flagged as text (``"<11"`` for 1–10). ``counts``: ``reason``,
        ``patients`` (text). The reasons are parts of the total (when no patient has two, they add up to it):
        suppressed together, so that the total minus the shown reasons does not give a small one away.
    """
    from analytics.privacy.suppression import suppress_cells

    per = table.groupby("reason")["patient_id"].nunique() if len(table) else pd.Series(dtype=int)
    values: dict[object, float | None] = {("reason", r): float(n) for r, n in per.items()}
    values[("all",)] = float(table["patient_id"].nunique()) if len(table) else 0.0
    cells = suppress_cells(values, sums=[([("reason", r) for r in per.index], ("all",))], pooled=True,
                           min_cell=min_cell, enabled=enabled)
    counts = pd.DataFrame({"reason": list(per.index), "patients": [cells.text(("reason", r)) for r in per.index]},
                          columns=["reason", "patients"])
    return cells.text(("all",)), counts
