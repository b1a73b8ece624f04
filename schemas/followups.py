"""pandera model of followups.csv: one row per outcome assessment (data-contract.md)."""

from __future__ import annotations

import pandera.pandas as pa
from pandera.typing import Series

from schemas.columns import OBSERVATION_STATUSES, STATUSES, URINE_SUBSTANCES, URINE_TOX


class FollowupsSchema(pa.DataFrameModel):
    """Checked after parsing; rules that involve two columns or two files live in schemas/validate.py."""

    patient_id: Series[str] = pa.Field(nullable=False, str_length={"min_value": 1},
                                       description="The clinic's patient number; the patient must have a ketamine session. Required.")
    assessment_date: Series[pa.DateTime] = pa.Field(nullable=False,
                                                    description="Date of the assessment. Required. One before the first ketamine session is a pre-treatment assessment (its scores can be the baseline; its use answers are never a return to use).")
    window_days: Series[float] = pa.Field(nullable=True, ge=1, le=365,
                                          description="Days the use questions cover (1–365; 30 when empty).")
    days_abstinent: Series[float] = pa.Field(nullable=True, ge=0, le=365,
                                             description="Days without any use in the window (0 … window_days).")
    heavy_days: Series[float] = pa.Field(nullable=True, ge=0, le=365,
                                         description="Days of heavy use in the window (0 … window_days − days_abstinent).")
    any_use: Series[pa.BOOL] = pa.Field(nullable=True,
                                        description="Any use since the previous assessment: yes/no, true/false or 1/0.")
    relapse_date: Series[pa.DateTime] = pa.Field(nullable=True,
                                                 description="First day of return to use, when known; not after the assessment, not before the first ketamine session.")
    phq9: Series[float] = pa.Field(nullable=True, ge=0, le=27, description="PHQ-9 total, whole number 0–27.")
    gad7: Series[float] = pa.Field(nullable=True, ge=0, le=21, description="GAD-7 total, whole number 0–21.")
    craving: Series[float] = pa.Field(nullable=True, ge=0, le=10, description="Craving on a 0–10 visual analogue scale.")
    urine_tox: Series[str] = pa.Field(nullable=True, isin=list(URINE_TOX),
                                      description="Urine drug screen: positive, negative or not_done.")
    status: Series[str] = pa.Field(nullable=True, isin=list(STATUSES),
                                   description="active, completed, lost_to_follow_up, withdrew or deceased.")

    observation_status: Series[str] = pa.Field(nullable=True, isin=list(OBSERVATION_STATUSES),
                                               description="final (when empty), amended (replaces the earlier value of the same measure and day) or entered_in_error (dropped, counted).")
    # contract v2
    urine_substances: Series[str] = pa.Field(nullable=True,
                                             description="Substances the urine test found, separated by ';': " + ", ".join(URINE_SUBSTANCES) + " (alcohol = EtG/EtS). Empty when none was found or no test was done. A positive result only for prescribed medicines, or for ketamine within 7 days after a ketamine session, is not a return to use.")
    audit_c: Series[float] = pa.Field(nullable=True, ge=0, le=12, description="AUDIT-C total, whole number 0–12.")
    bam_use: Series[float] = pa.Field(nullable=True, ge=0, le=12,
                                      description="Brief Addiction Monitor use subscale (items 4–6), 0–12.")
    bam_risk: Series[float] = pa.Field(nullable=True, ge=0, le=24,
                                       description="Brief Addiction Monitor risk-factor subscale, 0–24.")
    bam_protective: Series[float] = pa.Field(nullable=True, ge=0, le=24,
                                             description="Brief Addiction Monitor protective-factor subscale, 0–24.")

    class Config:
        strict = False
        coerce = False
