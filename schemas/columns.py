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
# contract v2: urine results by substance (followups ``urine_substances``) and prescribed medicines (patients
# ``prescribed``), both ``;``-separated lists of these (``alcohol`` = EtG/EtS)
URINE_SUBSTANCES = ("alcohol", "opioids", "fentanyl", "buprenorphine", "methadone", "cocaine", "amphetamines",
                    "benzodiazepines", "cannabis", "ketamine", "other")
# contract v2: sessions.csv ``status`` (only attended rows are sessions) and followups.csv ``observation_status``
SESSION_STATUSES = ("attended", "no_show", "cancelled", "scheduled", "entered_in_error")
OBSERVATION_STATUSES = ("final", "amended", "entered_in_error")
# issue 22 (contract proposal, optional sessions columns): session monitoring and the ketamine misuse watch
# ("none" is a missing-value word of the reader, so the "nothing happened" values are no_event / no_action / no_issue)
EVENT_SEVERITIES = ("no_event", "mild", "moderate", "severe", "serious")
ACTIONS_TAKEN = ("no_action", "observation", "medication", "stopped_dosing", "transfer")
TAKE_HOME_ISSUES = ("no_issue", "early_refill", "lost")
# other spellings read as the contract's status values (after lower-casing and turning spaces and '-' into '_'):
# FHIR Appointment/Encounter/Observation status codes and common EHR words
STATUS_ALIASES: dict[tuple[str, str], dict[str, str]] = {
    ("sessions", "status"): {"canceled": "cancelled", "noshow": "no_show", "did_not_attend": "no_show", "dna": "no_show",
               "completed": "attended", "arrived": "attended", "fulfilled": "attended", "finished": "attended",
               "checked_out": "attended", "checked_in": "attended", "seen": "attended", "booked": "scheduled",
               "planned": "scheduled", "pending": "scheduled", "proposed": "scheduled", "error": "entered_in_error"},
    ("followups", "observation_status"): {"corrected": "amended", "error": "entered_in_error"},
}
# adverse-event words read as the contract's events (each item of a list; a mapping's value map adds more)
ADVERSE_EVENT_ALIASES: dict[str, str] = {
    "dizzy": "dizziness", "lightheaded": "dizziness", "light-headed": "dizziness", "vertigo": "dizziness",
    "nauseous": "nausea", "nauseated": "nausea", "vomit": "vomiting", "vomited": "vomiting", "emesis": "vomiting",
    "high blood pressure": "hypertension", "elevated blood pressure": "hypertension", "elevated bp": "hypertension",
    "high bp": "hypertension", "hypertensive": "hypertension", "fast heart rate": "tachycardia",
    "elevated heart rate": "tachycardia", "hallucination": "hallucinations", "dissociative": "dissociation",
    "dissociated": "dissociation", "headaches": "headache", "anxious": "anxiety", "drowsy": "sedation",
    "drowsiness": "sedation", "somnolence": "sedation", "sleepy": "sedation", "sedated": "sedation"}

# kind: text | date | category | number | integer | boolean | list | substances (a list of URINE_SUBSTANCES;
# an unknown item sets the row aside)
SESSIONS: dict[str, str] = {
    "patient_id": "text", "session_date": "date", "session_type": "category", "route": "category",
    "dose_mg": "number", "weight_kg": "number", "phq9": "integer", "gad7": "integer", "craving": "number",
    "bp_systolic_max": "integer", "bp_diastolic_max": "integer", "heart_rate_max": "integer",
    "adverse_events": "list", "site": "text", "clinician": "text", "status": "category",
    # issue 22 (optional): session monitoring and the ketamine misuse watch
    "bp_systolic_pre": "integer", "bp_diastolic_pre": "integer", "bp_systolic_40min": "integer",
    "bp_diastolic_40min": "integer", "bp_systolic_discharge": "integer", "bp_diastolic_discharge": "integer",
    "minutes_to_discharge": "integer", "sedation_score": "integer", "dissociation_score": "integer",
    "event_severity": "category", "action_taken": "category", "take_home_issue": "category",
    "urinary_symptoms": "boolean",
}
FOLLOWUPS: dict[str, str] = {
    "patient_id": "text", "assessment_date": "date", "window_days": "integer", "days_abstinent": "integer",
    "heavy_days": "integer", "any_use": "boolean", "relapse_date": "date", "phq9": "integer",
    "gad7": "integer", "craving": "number", "urine_tox": "category", "status": "category",
    "observation_status": "category",
    # contract v2
    "urine_substances": "substances", "audit_c": "integer", "bam_use": "number", "bam_risk": "number",
    "bam_protective": "number",
}
PATIENTS: dict[str, str] = {
    "patient_id": "text", "primary_substance": "category", "program": "text", "sex": "category",
    "age": "integer", "site": "text", "prior_treatments": "integer",
    "prescribed": "substances",  # contract v2
}
# contract v2: daily_use.csv (optional), one row per patient, day and substance (timeline follow-back, diary)
DAILY_USE: dict[str, str] = {
    "patient_id": "text", "date": "date", "substance": "category", "used": "boolean", "amount": "number",
}
REQUIRED = {
    "sessions": ("patient_id", "session_date", "session_type"),
    "followups": ("patient_id", "assessment_date"),
    "patients": ("patient_id",),
    "daily_use": ("patient_id", "date", "substance", "used"),
}
COLUMNS = {"sessions": SESSIONS, "followups": FOLLOWUPS, "patients": PATIENTS, "daily_use": DAILY_USE}
# patient attributes that may also appear on sessions rows (data-contract.md)
PATIENT_COLUMNS_ON_SESSIONS = ("primary_substance", "program", "sex", "age", "prior_treatments")


def read_columns(kind: str) -> dict[str, str]:
    """Columns the reader recognises in a file: the export's own, plus patient columns on sessions rows."""
    cols = dict(COLUMNS[kind])
    if kind == "sessions":
        cols.update({c: PATIENTS[c] for c in PATIENT_COLUMNS_ON_SESSIONS})
    return cols
