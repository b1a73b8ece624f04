"""Canonical columns of the three exports (data-contract.md): names, kinds and allowed values.

This module is the single place the contract's column list lives; the pandera models, the reader,
presets and the README column table are built from it.
"""

from __future__ import annotations

SESSION_TYPES = ("ketamine", "psychotherapy", "integration", "assessment")
ROUTES = ("iv", "im", "sublingual", "intranasal", "oral")
ADVERSE_EVENTS = ("dizziness", "nausea", "vomiting", "hypertension", "tachycardia", "hallucinations",
                  "dissociation", "headache", "anxiety", "sedation", "other")
URINE_TOX = ("positive", "negative", "not_done")
STATUSES = ("active", "completed", "lost_to_follow_up", "withdrew", "deceased")
SUBSTANCES = ("alcohol", "opioids", "cocaine", "methamphetamine", "cannabis", "other")
SEXES = ("female", "male", "other", "unknown")

# kind: text | date | category | number | integer | boolean | list
SESSIONS: dict[str, str] = {
    "patient_id": "text", "session_date": "date", "session_type": "category", "route": "category",
    "dose_mg": "number", "weight_kg": "number", "phq9": "integer", "gad7": "integer", "craving": "number",
    "bp_systolic_max": "integer", "bp_diastolic_max": "integer", "heart_rate_max": "integer",
    "adverse_events": "list", "site": "text", "clinician": "text",
}
FOLLOWUPS: dict[str, str] = {
    "patient_id": "text", "assessment_date": "date", "window_days": "integer", "days_abstinent": "integer",
    "heavy_days": "integer", "any_use": "boolean", "relapse_date": "date", "phq9": "integer",
    "gad7": "integer", "craving": "number", "urine_tox": "category", "status": "category",
}
PATIENTS: dict[str, str] = {
    "patient_id": "text", "primary_substance": "category", "program": "text", "sex": "category",
    "age": "integer", "site": "text", "prior_treatments": "integer",
}
REQUIRED = {
    "sessions": ("patient_id", "session_date", "session_type"),
    "followups": ("patient_id", "assessment_date"),
    "patients": ("patient_id",),
}
COLUMNS = {"sessions": SESSIONS, "followups": FOLLOWUPS, "patients": PATIENTS}
# patient attributes that may also appear on sessions rows (data-contract.md)
PATIENT_COLUMNS_ON_SESSIONS = ("primary_substance", "program", "sex", "age", "prior_treatments")


def read_columns(kind: str) -> dict[str, str]:
    """Columns the reader recognises in a file: the export's own, plus patient columns on sessions rows."""
    cols = dict(COLUMNS[kind])
    if kind == "sessions":
        cols.update({c: PATIENTS[c] for c in PATIENT_COLUMNS_ON_SESSIONS})
    return cols
