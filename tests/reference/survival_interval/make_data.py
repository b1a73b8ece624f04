"""Write the interval-censored data set of the frozen Turnbull reference (tests/test_turnbull.py).

300 generated patients assessed about every 30 days (30 ± 7) up to day 360, leaving follow-up at an exponential time
(mean 400 days); return to use at an exponential time (mean 150 days, rounded up to a day). Use is found at the first
assessment on or after it: 60 % of such events give the exact day (``left == right``), the others only that it lay
between the previous assessment (day 0 for the first) and this one: ``(left, right]``. Patients without use are
right-censored at their last assessment (``right`` empty). ``intervals_visit.csv``: the same clinic with no exact
day recorded (every event interval-censored). Run from the repository root:

    .venv/bin/python tests/reference/survival_interval/make_data.py
    Rscript tests/reference/survival_interval/make_reference.R
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path(__file__).parent


def clinic(exact_share: float) -> pd.DataFrame:
    rng = np.random.default_rng(1976)
    rows = []
    for i in range(300):
        visits = np.cumsum(rng.integers(23, 38, 12))
        visits = visits[visits <= min(360, rng.exponential(400))]
        t = float(np.ceil(rng.exponential(150)))
        exact = rng.random() < exact_share
        after = visits[visits >= t]
        if after.size:
            prev = visits[visits < t]
            left = float(prev[-1]) if prev.size else 0.0
            rows.append((f"p{i:03d}", t, t) if exact else (f"p{i:03d}", left, float(after[0])))
        elif visits.size:
            rows.append((f"p{i:03d}", float(visits[-1]), np.nan))
    return pd.DataFrame(rows, columns=["id", "left", "right"])


def main() -> None:
    clinic(0.6).to_csv(OUT / "intervals.csv", index=False)  # exact, interval- and right-censored
    clinic(0.0).to_csv(OUT / "intervals_visit.csv", index=False)  # every event dated by visit: no exact times


if __name__ == "__main__":
    main()
