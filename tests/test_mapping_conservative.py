"""Suggestions are conservative (#18): a header that fits a field by name but means something else is never chosen,
whatever its similarity; a unit conversion is offered instead where one exists."""

from __future__ import annotations

import pytest

from schemas.mapping import POUNDS_TO_KG, detect_long, mapping_suggestions


@pytest.mark.parametrize("header", ["Weight (lb)", "weight_lbs", "Weight in pounds", "Wt lbs"])
def test_a_weight_in_pounds_is_never_weight_kg_and_a_conversion_is_offered(header):
    sugg = mapping_suggestions(["Patient ID", "Visit Date", "Visit Type", header], "sessions")
    assert "weight_kg" not in sugg.chosen
    assert sugg.conversions["weight_kg"][:2] == (header, POUNDS_TO_KG)


def test_a_weight_in_kg_is_still_suggested():
    assert mapping_suggestions(["Patient ID", "Weight (kg)"], "sessions").chosen["weight_kg"][0] == "Weight (kg)"


def test_a_0_100_craving_scale_is_offered_rescaled_never_read_as_0_10():
    sugg = mapping_suggestions(["Patient ID", "Date", "Craving (0-100)"], "followups")
    assert "craving" not in sugg.chosen and sugg.conversions["craving"][:2] == ("Craving (0-100)", 0.1)


@pytest.mark.parametrize("kind", ["sessions", "followups"])
def test_a_period_end_is_never_the_patient_id(kind):
    headers = ["period.end", "period.start", "Date", "Visit Type"]
    assert "patient_id" not in mapping_suggestions(headers, kind).chosen


@pytest.mark.parametrize("header", ["Status: Completed", "Complete?", "phq9_complete", "Questionnaire Status",
                                    "Form status"])
def test_the_completion_status_of_a_form_is_never_a_treatment_status(header):
    sugg = mapping_suggestions(["Patient ID", "Assessment Date", header], "followups")
    assert "status" not in sugg.chosen


def test_a_status_column_holding_record_statuses_is_never_a_treatment_status():
    headers = ["Patient ID", "Assessment Date", "Status"]
    record = mapping_suggestions(headers, "followups", samples={"Status": ["Completed", "final", "amended"]})
    treatment = mapping_suggestions(headers, "followups", samples={"Status": ["Active", "Lost to follow-up"]})
    assert "status" not in record.chosen and treatment.chosen["status"][0] == "Status"


@pytest.mark.parametrize("header", ["Due Date", "Assigned date", "Date Assigned", "Scheduled Date", "Next Due"])
def test_an_assigned_or_due_date_is_never_the_relapse_date_or_the_assessment_date(header):
    sugg = mapping_suggestions(["Patient ID", header], "followups")
    assert "relapse_date" not in sugg.chosen and "assessment_date" not in sugg.chosen


def test_a_real_relapse_date_is_still_suggested_beside_a_due_date():
    sugg = mapping_suggestions(["Patient ID", "Assessment Date", "Due Date", "Date of Relapse"], "followups")
    assert sugg.chosen["relapse_date"][0] == "Date of Relapse" and sugg.chosen["assessment_date"][0] == "Assessment Date"


@pytest.mark.parametrize("headers", [
    ["Client Code", "Questionnaire Code", "Score", "Completed Date"],
    ["code", "subject", "value", "date"],
    ["subject.reference", "code.coding.0.code", "valueQuantity.value", "effectiveDateTime", "period.end"],
])
def test_in_a_long_file_the_code_column_is_never_the_patient_id_and_totals_are_preselected(headers):
    codes = ["44261-6", "70274-6", "PHQ-9", "PHQ9 Total", "GAD-7", "PHQ-9 Total Score", "AUDIT-C"]
    sugg = mapping_suggestions(headers, "followups", codes_in_file=codes)
    code, _ = detect_long(headers)
    assert sugg.layout == "long" and sugg.code_column == code
    assert sugg.chosen["patient_id"][0] != code
    assert sugg.chosen["patient_id"][0] in ("Client Code", "subject", "subject.reference")
    assert {c: m for c, (m, _) in sugg.codes.items()} == {
        "44261-6": "phq9", "70274-6": "gad7", "PHQ-9": "phq9", "PHQ9 Total": "phq9", "GAD-7": "gad7",
        "PHQ-9 Total Score": "phq9", "AUDIT-C": "audit_c"}  # AUDIT-C is a contract column (v2)


def test_the_code_column_is_not_the_patient_id_even_read_as_a_wide_file():
    headers = ["code", "value", "date"]
    assert "patient_id" not in mapping_suggestions(headers, "followups", layout="wide").chosen
