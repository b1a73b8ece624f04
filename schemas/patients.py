"""pandera model of patients.csv: one row per patient (optional export; data-contract.md)."""

from __future__ import annotations

import pandera.pandas as pa
from pandera.typing import Series

from schemas.columns import SEXES, SUBSTANCES, URINE_SUBSTANCES


class PatientsSchema(pa.DataFrameModel):
    patient_id: Series[str] = pa.Field(nullable=False, str_length={"min_value": 1},
                                       description="The clinic's patient number; one row per patient. Required.")
    primary_substance: Series[str] = pa.Field(nullable=True, isin=list(SUBSTANCES),
                                              description="alcohol, opioids, cocaine, methamphetamine, cannabis or other.")
    program: Series[str] = pa.Field(nullable=True, description="The clinic's program name, e.g. 'ketamine + therapy'.")
    sex: Series[str] = pa.Field(nullable=True, isin=list(SEXES), description="female, male, other or unknown.")
    age: Series[float] = pa.Field(nullable=True, ge=18, le=100, description="Age at intake in years (18–100).")
    site: Series[str] = pa.Field(nullable=True, description="Clinic site (optional).")
    prior_treatments: Series[float] = pa.Field(nullable=True, ge=0,
                                               description="Number of earlier treatment episodes (0 or more).")
    prescribed: Series[str] = pa.Field(nullable=True,  # contract v2
                                       description="Medicines prescribed to the patient that a urine test finds, separated by ';' (e.g. buprenorphine; methadone; benzodiazepines), from: " + ", ".join(URINE_SUBSTANCES) + ". A urine result positive only for these is not a return to use.")

    class Config:
        strict = False
        coerce = False
