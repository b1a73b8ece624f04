"""pandera model of daily_use.csv: one row per patient, day and substance (optional export; contract v2).

A timeline follow-back or drinking diary. Days abstinent, heavy days and the first day of use after day 0 are
derived from it exactly (:mod:`analytics.outcomes.cohort`); it is never a follow-up assessment.
"""

from __future__ import annotations

import pandera.pandas as pa
from pandera.typing import Series

from schemas.columns import SUBSTANCES


class DailyUseSchema(pa.DataFrameModel):
    patient_id: Series[str] = pa.Field(nullable=False, str_length={"min_value": 1},
                                       description="The clinic's patient number; the patient must have a ketamine session. Required.")
    date: Series[pa.DateTime] = pa.Field(nullable=False, description="The day the row describes. Required.")
    substance: Series[str] = pa.Field(nullable=False, isin=list(SUBSTANCES),
                                      description="alcohol, opioids, cocaine, methamphetamine, cannabis or other (as primary_substance). Required.")
    used: Series[pa.BOOL] = pa.Field(nullable=False,
                                     description="Any use of the substance that day: yes/no, true/false or 1/0. Required.")
    amount: Series[float] = pa.Field(nullable=True, ge=0, le=100,
                                     description="Amount used that day; for alcohol standard drinks (0–100).")

    class Config:
        strict = False
        coerce = False
