"""pandera model of sessions.csv: one row per treatment contact (data-contract.md)."""

from __future__ import annotations

import pandera.pandas as pa
from pandera.typing import Series

from schemas.columns import (
    ACTIONS_TAKEN,
    EVENT_SEVERITIES,
    ROUTES,
    SESSION_STATUSES,
    SESSION_TYPES,
    TAKE_HOME_ISSUES,
)


class SessionsSchema(pa.DataFrameModel):
    """Checked after each value is parsed to its type (dates, numbers); text is lower-cased categories."""

    patient_id: Series[str] = pa.Field(nullable=False, str_length={"min_value": 1},
                                       description="The clinic's patient number (text; leading zeros are kept). Required.")
    session_date: Series[pa.DateTime] = pa.Field(nullable=False,
                                                 description="Date of the contact (yyyy-mm-dd unless you choose another format). Required; not after the upload date.")
    session_type: Series[str] = pa.Field(nullable=False, isin=list(SESSION_TYPES),
                                         description="ketamine, psychotherapy, integration or assessment. Required.")
    route: Series[str] = pa.Field(nullable=True, isin=list(ROUTES),
                                  description="Ketamine route: iv, im, sublingual, intranasal or oral. Required on ketamine rows.")
    dose_mg: Series[float] = pa.Field(nullable=True, gt=0, le=1000, description="Ketamine dose in mg (above 0, at most 1000).")
    weight_kg: Series[float] = pa.Field(nullable=True, ge=30, le=300, description="Body weight in kg (30–300).")
    phq9: Series[float] = pa.Field(nullable=True, ge=0, le=27, description="PHQ-9 total, whole number 0–27.")
    gad7: Series[float] = pa.Field(nullable=True, ge=0, le=21, description="GAD-7 total, whole number 0–21.")
    craving: Series[float] = pa.Field(nullable=True, ge=0, le=10, description="Craving on a 0–10 visual analogue scale.")
    bp_systolic_max: Series[float] = pa.Field(nullable=True, ge=60, le=260,
                                              description="Highest systolic blood pressure in the session, mmHg (60–260).")
    bp_diastolic_max: Series[float] = pa.Field(nullable=True, ge=30, le=160,
                                               description="Highest diastolic blood pressure in the session, mmHg (30–160).")
    heart_rate_max: Series[float] = pa.Field(nullable=True, ge=30, le=220,
                                             description="Highest heart rate in the session, beats per minute (30–220).")
    adverse_events: Series[str] = pa.Field(nullable=True,
                                           description="Side effects, separated by ';': dizziness, nausea, vomiting, hypertension, tachycardia, hallucinations, dissociation, headache, anxiety, sedation, other.")
    site: Series[str] = pa.Field(nullable=True, description="Clinic site (optional).")
    clinician: Series[str] = pa.Field(nullable=True, description="Clinician (optional).")

    status: Series[str] = pa.Field(nullable=True, isin=list(SESSION_STATUSES),
                                   description="attended (when empty), no_show, cancelled, scheduled or entered_in_error. Only attended rows count as sessions; the others are counted and reported.")

    # issue 22 (optional): session monitoring and the ketamine misuse watch
    bp_systolic_pre: Series[float] = pa.Field(nullable=True, ge=60, le=260,
                                              description="Systolic blood pressure before dosing, mmHg (60–260).")
    bp_diastolic_pre: Series[float] = pa.Field(nullable=True, ge=30, le=160,
                                               description="Diastolic blood pressure before dosing, mmHg (30–160).")
    bp_systolic_40min: Series[float] = pa.Field(nullable=True, ge=60, le=260,
                                                description="Systolic blood pressure about 40 minutes after dosing, mmHg (60–260).")
    bp_diastolic_40min: Series[float] = pa.Field(nullable=True, ge=30, le=160,
                                                 description="Diastolic blood pressure about 40 minutes after dosing, mmHg (30–160).")
    bp_systolic_discharge: Series[float] = pa.Field(nullable=True, ge=60, le=260,
                                                    description="Systolic blood pressure at discharge, mmHg (60–260).")
    bp_diastolic_discharge: Series[float] = pa.Field(nullable=True, ge=30, le=160,
                                                     description="Diastolic blood pressure at discharge, mmHg (30–160).")
    minutes_to_discharge: Series[float] = pa.Field(nullable=True, ge=0, le=1440,
                                                   description="Minutes from dosing until the patient was ready to leave (0–1440).")
    sedation_score: Series[float] = pa.Field(nullable=True, ge=0, le=5,
                                             description="Deepest sedation in the session on the MOAA/S scale, whole number 0–5 (5 = responds readily to name, 0 = no response).")
    dissociation_score: Series[float] = pa.Field(nullable=True, ge=0, le=24,
                                                 description="Peak dissociation on the CADSS-6 (six items scored 0–4), whole number 0–24.")
    event_severity: Series[str] = pa.Field(nullable=True, isin=list(EVENT_SEVERITIES),
                                           description="Worst adverse event in the session: no_event, mild, moderate, severe or serious (needed hospital care, was life-threatening or disabling).")
    action_taken: Series[str] = pa.Field(nullable=True, isin=list(ACTIONS_TAKEN),
                                         description="What was done about it: no_action, observation, medication, stopped_dosing or transfer (to emergency care).")
    take_home_issue: Series[str] = pa.Field(nullable=True, isin=list(TAKE_HOME_ISSUES),
                                            description="Take-home ketamine doses: no_issue, early_refill (asked for a refill early) or lost (doses reported lost).")
    urinary_symptoms: Series[pa.BOOL] = pa.Field(nullable=True,
                                                         description="Urinary symptoms asked about at this visit (frequency, urgency, pain, blood): yes or no.")

    class Config:
        strict = False
        coerce = False
