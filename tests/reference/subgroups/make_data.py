"""Write the input of the frozen lme4 reference for the case-mix adjusted PHQ-9 slope differences.

A generated clinic (analytics.sample, 600 patients, seed 19) with a site-dependent weekly PHQ-9 slope added to its
scores (so that adjustment matters): ``patients.csv`` (program and raw case-mix columns, missing values kept) and
``scores.csv`` (patient_id, weeks, phq9). Run from the repository root:

    .venv/bin/python tests/reference/subgroups/make_data.py && Rscript tests/reference/subgroups/make_reference.R
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from analytics.outcomes.cohort import build_cohort
from analytics.outcomes.trajectories import measure_frame
from analytics.sample import write_clinic
from schemas.validate import load_exports

OUT = Path(__file__).parent
SITE_SLOPE = {"Northside": -0.10, "Riverside": 0.0, "Harbor": 0.05, "Eastgate": 0.10}  # PHQ-9 points per week


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        write_clinic(tmp, n_patients=600, seed=19)
        d = Path(tmp)
        cohort = build_cohort(load_exports(d / "sessions.csv", d / "followups.csv", d / "patients.csv"))
    pts = cohort.patients[["patient_id", "program", "site", "age", "sex", "primary_substance", "baseline_phq9"]]
    scores = measure_frame(cohort, "phq9")[["patient_id", "weeks", "value"]].rename(columns={"value": "phq9"})
    site = scores["patient_id"].map(pts.set_index("patient_id")["site"])
    scores["phq9"] = scores["phq9"] + site.map(SITE_SLOPE).fillna(0.0).to_numpy() * scores["weeks"]
    scores["weeks"] = np.round(scores["weeks"], 6)
    scores["phq9"] = np.round(scores["phq9"], 6)
    pts.to_csv(OUT / "patients.csv", index=False)
    scores.to_csv(OUT / "scores.csv", index=False)


if __name__ == "__main__":
    main()
