"""Write the dropout times of a 400-patient sample clinic (default seed) for the R reference (run from the repo root:
`PYTHONPATH=. .venv/bin/python tests/reference/retention/make_times.py && Rscript tests/reference/retention/km_dropout.R`)."""

from pathlib import Path

from analytics.outcomes import retention
from analytics.outcomes.cohort import build_cohort
from analytics.sample import generate_clinic
from schemas.frames import ValidatedExports

c = generate_clinic(400)
cohort = build_cohort(ValidatedExports.from_frames(c["sessions"], c["followups"], c["patients"]))
per = retention.dropout(cohort, by="program").per_patient
out = Path(__file__).with_name("dropout_times.csv")
per[["group", "days", "dropped_out"]].assign(dropped_out=per["dropped_out"].astype(int)).to_csv(out, index=False)
