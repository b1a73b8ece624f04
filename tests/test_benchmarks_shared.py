"""The benchmark metrics' shared pieces, worked out once per distinct value or time, equal their row-by-row
definitions (issue 21: the comparison at 200,000 patients)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analytics.engines.intervals import z_crit
from analytics.outcomes import benchmarks as bm
from schemas.columns import ADVERSE_EVENTS


def _km_row_by_row(time, event, day, conf_level):
    """Kaplan–Meier S(day), Greenwood, log-log interval: one pass over the rows per event time."""
    time, event = np.asarray(time, float), np.asarray(event, bool)
    surv, greenwood = 1.0, 0.0
    for t in np.unique(time[event & (time <= day)]):
        at_risk = int((time >= t).sum())
        deaths = int(((time == t) & event).sum())
        surv *= 1 - deaths / at_risk
        if at_risk > deaths:
            greenwood += deaths / (at_risk * (at_risk - deaths))
    n_risk = int((time >= day).sum())
    if n_risk == 0 and surv > 0:
        return None
    if surv <= 0 or surv >= 1:
        return surv, None, None, n_risk
    spread = z_crit(conf_level) * math.sqrt(greenwood) / abs(math.log(surv))
    return surv, surv ** math.exp(spread), surv ** math.exp(-spread), n_risk


def test_kaplan_meier_at_a_day_equals_the_row_by_row_definition_exactly():
    rng = np.random.default_rng(21)
    seen = set()
    for i in range(600):
        n = int(rng.integers(1, 80))
        time = rng.integers(0, 40, n).astype(float)
        if i % 3 == 0:
            time[rng.random(n) < 0.2] = np.nan  # a patient without a time is never at risk
        event = rng.random(n) < 0.5
        for day in (0, 12, 30, 45):
            got = bm._km_at(time, event, day, 0.95)
            assert got == _km_row_by_row(time, event, day, 0.95)  # bit for bit
            seen.add("none" if got is None else "bounds" if got[1] is not None else "edge")
    assert seen == {"none", "bounds", "edge"}
    # a hand-checked case: 4 at risk, 1 event at day 2, then 2 at risk, 1 event at day 5
    surv, low, high, n_risk = bm._km_at(np.array([2, 3, 5, 9.0]), np.array([1, 0, 1, 0], bool), 6, 0.95)
    assert surv == (1 - 1 / 4) * (1 - 1 / 2) and n_risk == 1 and low < surv < high


def test_ketamine_table_flags_each_session_as_its_written_event_list_says():
    written = [None, "nausea", "Nausea; dizziness", " sedation ;headache", "itchy", "", "nausea;nausea",
               "dissociation;other", None, "nausea", "vomiting; hypertension;tachycardia"]
    n = len(written)
    sessions = pd.DataFrame({
        "patient_id": np.array([3, 1, 2, 1, 3, 2, 1, 2, 3, 1, 2], dtype=np.int64),
        "days": np.array([5, 0, 7, 3, 0, 1, 9, 4, 2, 6, 8], dtype=np.int64),
        "session_type": pd.Series(["ketamine"] * (n - 2) + ["psychotherapy", "ketamine"], dtype="string"),
        "adverse_events": pd.Series(written, dtype="string"),
    })
    ket = bm._ketamine_table(sessions)
    expected = sessions[sessions["session_type"] == "ketamine"].sort_values(["patient_id", "days"])
    assert ket.index.tolist() == expected.index.tolist()
    for i, value in zip(expected.index, expected["adverse_events"]):
        text = "" if pd.isna(value) else value.replace(" ", "")
        assert ket.at[i, "_events"] == (f";{text};" if text else "")
        items = text.split(";")
        assert ket.at[i, "_ev_any"] == bool(text)
        for event in ADVERSE_EVENTS:
            assert ket.at[i, f"_ev_{event}"] == (event in items), (value, event)
    # "Nausea" is not lower-cased here (validation writes events lower case); the psychotherapy row is left out
    assert ket["_ev_nausea"].sum() == 2 and ket["_ev_dizziness"].sum() == 1 and len(ket) == n - 1
    assert str(ket["_events"].dtype) == "str"
