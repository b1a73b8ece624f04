"""Real clinic exports load and mean what they say (issue #18): hand-built files in three realistic layouts.

Each file is small enough that its truth is computed by hand in the comments: which rows are accepted, which are set
aside and why, and what the cohort derives (index dates, baselines, events). ``accepted + set aside = rows read``
always holds; banner lines, empty rows and report totals are not rows.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from analytics.outcomes.cohort import build_cohort
from schemas.presets import loads_mapping
from schemas.validate import load_exports

UPLOAD = date(2026, 11, 30)


def _balanced(data) -> None:
    for report in data.files.values():
        assert report.accepted + report.quarantined == report.rows
    for name, report in data.files.items():
        lines = data.issues[data.issues["file"] == f"{name}.csv"]["line"].nunique()
        assert lines == report.quarantined


def _note(data, *words: str) -> str:
    found = [n for n in data.notes if all(w in n for w in words)]
    assert len(found) == 1, data.notes
    return found[0]


def _patient(cohort, pid: str) -> pd.Series:
    return cohort.patients.set_index("patient_id").loc[pid]


# ---------------------------------------------------------------------------------------------------------------
# 1. An EHR appointment report: banner lines, 12-hour month-first date-times, a status column, an empty row, a
#    "Total:" line (preset ehr-encounters)
# ---------------------------------------------------------------------------------------------------------------

EHR_SESSIONS = """Appointment report \u2014 printed 11/30/2026
Clinic: Main Street
Patient Number,Encounter Date,Visit Type,Route of Administration,Ketamine Dose (mg),PHQ-9 Total Score,Adverse Events,Status
A01,09/01/2025 09:00 AM,Intake Assessment,,,20,,Arrived
A01,09/03/2025 03:00 PM,Ketamine Infusion,Intravenous,50,,"drowsy; dizziness",Arrived
A01,09/10/2025 03:00 PM,Ketamine Infusion,Intravenous,50,,,No Show
A02,09/02/2025 10:30 AM,Ketamine Infusion,Intravenous,60,18,,Cancelled
A02,09/09/2025 10:30 AM,Ketamine Infusion,Intravenous,60,17,"nausea, headache",Arrived
,,,,,,,
A02,12/15/2026 10:30 AM,Ketamine Infusion,Intravenous,60,,,Scheduled
A03,09/31/2025 10:00 AM,Ketamine Infusion,Intravenous,60,,,Arrived
A03,10/01/2025 11:00 AM,Ketamine Infusion,Intravenous,55,,"itchy; nausea",Arrived
Total: 9 appointments
"""
# records: lines 4-8, 10-12 (8 rows); line 9 is empty, line 13 the report's total; line 11 (31 September) is set
# aside. Attended: lines 4, 5, 8, 12. Index dates: A01 2025-09-03, A02 2025-09-09 (the cancelled 09/02 visit is
# not a session), A03 2025-10-01.
EHR_FOLLOWUPS = """Patient Number,Assessment Date,Days Abstinent,Any Use Since Last Visit,PHQ-9 Total Score
A01,10/03/2025 02:00 PM,30,No,12
A01,11/02/2025 02:00 PM,25,No,10
A02,10/09/2025 09:15 AM,30,No,14
A03,09/20/2025 10:00 AM,5,Yes,16
A03,10/31/2025 10:00 AM,30,No,9
"""
# A01 returns to use on 2025-11-02 (25 of 30 days abstinent, the window lies after day 0): day 60.
# A02 is censored at day 30. A03's 09/20 assessment is pre-treatment (11 days before day 0): its PHQ-9 of 16 is the
# baseline, its "Yes" (use before treatment) is no return to use; censored at day 30.


@pytest.fixture(scope="module")
def ehr():
    return load_exports(EHR_SESSIONS.encode(), EHR_FOLLOWUPS.encode(), preset="ehr-encounters", dates="monthfirst",
                        upload_date=UPLOAD)


def test_ehr_report_banner_empty_row_and_total_line_are_one_note_each_not_rows(ehr):
    s = ehr.files["sessions"]
    assert (s.rows, s.accepted, s.quarantined) == (8, 7, 1)
    assert "Appointment report" in _note(ehr, "sessions.csv", "banner") and "line 3" in _note(ehr, "banner")
    assert "line 9" in _note(ehr, "sessions.csv", "empty row")
    assert "line 13" in _note(ehr, "sessions.csv", "footer")
    _balanced(ehr)


def test_ehr_twelve_hour_date_times_are_read_as_their_dates_and_a_bad_day_is_named(ehr):
    issue = ehr.issues[ehr.issues["file"] == "sessions.csv"].iloc[0]
    assert issue["line"] == 11 and issue["column"] == "session_date"
    assert "day 31 in a 30-day month (September 2025)" in issue["reason"]
    assert sorted(ehr.sessions["session_date"].dt.strftime("%Y-%m-%d")) == [
        "2025-09-01", "2025-09-03", "2025-09-09", "2025-10-01"]


def test_ehr_only_attended_rows_are_sessions_and_the_others_are_counted(ehr):
    assert ehr.files["sessions"].not_analysed == {"no_show": 1, "cancelled": 1, "scheduled": 1}
    assert ehr.files["sessions"].output_rows == len(ehr.sessions) == 4
    assert "1 scheduled" in _note(ehr, "not attended")
    assert not ehr.issues["reason"].str.contains("after the upload date").any()  # the scheduled visit in Dec 2026


def test_ehr_adverse_event_lists_are_split_mapped_and_an_unknown_item_keeps_its_session(ehr):
    events = dict(zip(ehr.sessions["line"], ehr.sessions["adverse_events"]))
    assert events[5] == "sedation;dizziness" and events[8] == "nausea;headache" and events[12] == "other;nausea"
    assert "'itchy' (line 12)" in _note(ehr, "not on the list")  # read as 'other', named, the session kept


def test_ehr_cohort_index_dates_baselines_and_events_match_hand_computed_truth(ehr):
    cohort = build_cohort(ehr)
    a01, a02, a03 = (_patient(cohort, p) for p in ("A01", "A02", "A03"))
    assert [str(p["index_date"].date()) for p in (a01, a02, a03)] == ["2025-09-03", "2025-09-09", "2025-10-01"]
    assert (a01["n_ketamine_sessions"], a02["n_ketamine_sessions"], a03["n_ketamine_sessions"]) == (1, 1, 1)
    assert (a01["baseline_phq9"], a02["baseline_phq9"], a03["baseline_phq9"]) == (20, 17, 16)
    assert bool(a01["relapsed"]) and a01["days_to_event"] == 60
    assert not a02["relapsed"] and a02["days_to_event"] == 30
    assert not a03["relapsed"] and a03["days_to_event"] == 30 and a03["n_followups"] == 1
    assert len(cohort.pretreatment) == 1 and not cohort.pretreatment["use_any"].any()
    assert (cohort.followups["days"] >= 0).all()
    assert "pre-treatment" in _note(ehr, "followups.csv", "pre-treatment")


# ---------------------------------------------------------------------------------------------------------------
# 2. A FHIR-flattened export: Encounter rows with `Patient/<uuid>` references and UTC date-times, Observation-like
#    follow-ups with bare ids, amended and entered-in-error rows, a 28-day recall window set in the mapping
# ---------------------------------------------------------------------------------------------------------------

U1 = "8f3c2a1e-0b6d-4c57-9a0e-1f2d3c4b5a60"
U2 = "1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d"
FHIR_SESSIONS = f"""id,subject.reference,period.start,type,route,status
e1,Patient/{U1},2025-03-05T02:30:00Z,ketamine,iv,finished
e2,Patient/{U1},2025-03-12T15:00:00Z,ketamine,iv,finished
e3,Patient/{U2},2025-03-01T16:00:00Z,ketamine,im,entered-in-error
e4,Patient/{U2},2025-03-06T16:00:00+00:00,ketamine,im,finished
e5,Patient/{U2},2025-03-07T16:00:00Z,ketamine,im,cancelled
"""
# U1's first session is 2025-03-05 02:30 UTC = 4 March 21:30 in New York. U2's index is 2025-03-06 (the 03-01 row
# was entered in error, the 03-07 visit cancelled).
FHIR_FOLLOWUPS = f"""id,subject,effectiveDateTime,status,phq9,days_abstinent,any_use
o1,{U1},2025-04-04T15:00:00Z,final,12,28,no
o2,{U1},2025-04-04T18:00:00Z,amended,10,,
o3,{U1},2025-05-02T15:00:00-04:00,entered-in-error,3,0,yes
o4,{U1},2025-05-03T15:00:00Z,final,9,20,no
o5,{U2},2025-04-05T15:00:00Z,final,11,29,no
o6,{U2},2025-05-03T15:00:00Z,final,8,28,no
"""
# o2 amends o1 (same patient and day): PHQ-9 10, days abstinent 28 kept. o3 is dropped. The window is 28 days
# (mapping): o1 28 of 28 is no return to use; o4 (20 of 28) is: U1 returns to use on 2025-05-03. o5 (29 > 28) is
# set aside. U2 is censored at o6.
FHIR_MAPPING = """name = "fhir-flat"
[sessions.columns]
"subject.reference" = "patient_id"
"period.start" = "session_date"
"type" = "session_type"
"id" = "extra"
[followups]
window_days = 28
[followups.columns]
"subject" = "patient_id"
"effectiveDateTime" = "assessment_date"
"status" = "observation_status"
"id" = "extra"
"""


def _fhir(**kw):
    mapping = loads_mapping(kw.pop("mapping", FHIR_MAPPING))
    return load_exports(FHIR_SESSIONS.encode(), FHIR_FOLLOWUPS.encode(), preset=mapping, upload_date=UPLOAD, **kw)


def test_fhir_prefix_is_suggested_and_nothing_matches_until_it_is_removed():
    data = _fhir()
    note = _note(data, "Patient/", "strip_prefix")
    assert "sessions.csv" in note and "would match" in note
    assert data.files["followups"].accepted == 1  # only the entered-in-error row: nothing else has a session
    assert data.issues["reason"].str.contains("no ketamine session").sum() == 5
    _balanced(data)


@pytest.mark.parametrize("how", ["mapping", "apply"])
def test_fhir_prefix_removed_by_the_mapping_or_automatically_lets_ids_match(how):
    mapping = FHIR_MAPPING.replace("[sessions.columns]", '[sessions]\nstrip_prefix = "Patient/"\n[sessions.columns]')
    data = _fhir(mapping=mapping) if how == "mapping" else _fhir(prefixes="apply")
    assert set(data.sessions["patient_id"]) == {U1, U2}
    assert "removed" in _note(data, "Patient/", "removed")
    f = data.files["followups"]
    assert (f.rows, f.accepted, f.quarantined, f.merged) == (6, 5, 1, 1)
    assert f.not_analysed == {"entered_in_error": 1} and f.output_rows == len(data.followups) == 3
    issue = data.issues[data.issues["file"] == "followups.csv"].iloc[0]
    assert issue["line"] == 6 and issue["column"] == "days_abstinent" and "window_days 28" in issue["reason"]
    s = data.files["sessions"]
    assert (s.rows, s.accepted, s.quarantined) == (5, 5, 0) and s.not_analysed == {"entered_in_error": 1,
                                                                                   "cancelled": 1}
    _balanced(data)


def test_fhir_amended_value_replaces_the_earlier_one_and_a_full_window_is_no_return_to_use():
    data = _fhir(prefixes="apply")
    first = data.followups[data.followups["line"] == 2].iloc[0]
    assert first["phq9"] == 10 and first["days_abstinent"] == 28 and first["window_days"] == 28
    cohort = build_cohort(data)
    u1, u2 = _patient(cohort, U1), _patient(cohort, U2)
    assert str(u1["index_date"].date()) == "2025-03-05" and str(u2["index_date"].date()) == "2025-03-06"
    assert bool(u1["relapsed"]) and str(u1["event_date"].date()) == "2025-05-03" and u1["days_to_event"] == 59
    assert not u2["relapsed"] and u2["n_followups"] == 1 and u1["n_followups"] == 2
    assert "were read as their UTC date" in _note(data, "sessions.csv", "UTC")


def test_fhir_utc_date_times_take_the_clinic_timezone_when_it_is_set():
    data = _fhir(prefixes="apply", timezone="America/New_York")
    cohort = build_cohort(data)
    assert str(_patient(cohort, U1)["index_date"].date()) == "2025-03-04"  # 02:30 UTC = 21:30 the evening before
    assert "converted to the clinic timezone America/New_York" in _note(data, "sessions.csv", "UTC")
    assert _patient(cohort, U1)["days_to_event"] == 60


def test_an_unknown_timezone_is_one_sentence():
    from analytics.errors import UnusableExport

    with pytest.raises(UnusableExport, match="IANA"):
        _fhir(timezone="Mars/Olympus")


# ---------------------------------------------------------------------------------------------------------------
# 3. A spreadsheet visit list: day-first dates (some with times), placeholders for dates, a "Grand total" row
# ---------------------------------------------------------------------------------------------------------------

SHEET_SESSIONS = """patient_id;session_date;session_type;route;dose_mg
P1;5/4/2026 14:05;ketamine;sublingual;100
P1;12/4/2026;ketamine;sublingual;100
P2;31/04/2026;ketamine;sublingual;100
P2;01/05/2026;ketamine;sublingual;100
P3;31/12/9999;ketamine;sublingual;100
P3;01/01/0001;assessment;;
P3;13/13/2026;ketamine;sublingual;100
;;;;
Grand total;;;;600
"""
# rows: lines 2-8 (7); line 9 is empty, line 10 a total. Set aside: line 4 (31 April), 6 and 7 (placeholders, out
# of range), 8 (month 13). Index dates: P1 2026-04-05 (day-first), P2 2026-05-01; P3 has no session left.
SHEET_FOLLOWUPS = """patient_id;assessment_date;days_abstinent;phq9
P1;5/5/2026;30;8
P2;31/05/2026 09:00;30;7
"""


@pytest.fixture(scope="module")
def sheet():
    return load_exports(SHEET_SESSIONS.encode(), SHEET_FOLLOWUPS.encode(), dates="dayfirst", upload_date=UPLOAD)


def test_sheet_day_first_dates_and_placeholders_are_read_or_set_aside_with_a_sentence(sheet):
    s = sheet.files["sessions"]
    assert (s.rows, s.accepted, s.quarantined) == (7, 3, 4)
    reasons = sheet.issues[sheet.issues["file"] == "sessions.csv"].set_index("line")["reason"]
    assert "day 31 in a 30-day month (April 2026)" in reasons[4]
    assert "outside the dates" in reasons[6] and "outside the dates" in reasons[7]
    assert "month 13 does not exist" in reasons[8]
    assert "line 10" in _note(sheet, "sessions.csv", "footer") and "line 9" in _note(sheet, "empty row")
    cohort = build_cohort(sheet)
    assert str(_patient(cohort, "P1")["index_date"].date()) == "2026-04-05"
    assert str(_patient(cohort, "P2")["index_date"].date()) == "2026-05-01"
    assert _patient(cohort, "P1")["days_to_event"] == 30 and _patient(cohort, "P2")["days_to_event"] == 30
    _balanced(sheet)


def test_a_placeholder_date_never_fails_the_upload_in_any_column():
    s = b"patient_id,session_date,session_type,route\n1,2025-01-05,ketamine,iv\n"
    f = b"patient_id,assessment_date,relapse_date\n1,2025-02-05,9999-12-31\n1,0001-01-01,\n"
    data = load_exports(s, f, upload_date=UPLOAD)
    assert data.files["followups"].quarantined == 2
    assert data.issues["reason"].str.contains("outside the dates the dashboard can hold").all()


# ---------------------------------------------------------------------------------------------------------------
# The command line: the same files, prefixes removed by itself (with a note), notes printed
# ---------------------------------------------------------------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analytics.cli", *args], capture_output=True, text=True,
                          timeout=120, check=False)


def test_cli_validate_reads_the_fhir_export_and_removes_the_prefix_with_a_note(tmp_path: Path):
    (tmp_path / "s.csv").write_text(FHIR_SESSIONS)
    (tmp_path / "f.csv").write_text(FHIR_FOLLOWUPS)
    (tmp_path / "m.toml").write_text(FHIR_MAPPING)
    common = ["validate", "--sessions", str(tmp_path / "s.csv"), "--followups", str(tmp_path / "f.csv"),
              "--mapping", str(tmp_path / "m.toml")]
    out = _cli(*common, "--json")
    assert out.returncode == 1, out.stderr
    files = json.loads(out.stdout)["files"]
    assert files["followups"] == {"rows": 6, "accepted": 5, "quarantined": 1, "dropped_columns": []}
    text = _cli(*common, "--timezone", "America/New_York")
    assert "prefix 'Patient/' was removed" in text.stdout and "America/New_York" in text.stdout
    kept = _cli(*common, "--keep-prefixes", "--json")
    assert json.loads(kept.stdout)["files"]["followups"]["quarantined"] == 5


def test_cli_validate_reads_the_ehr_report_with_its_banner_and_footer(tmp_path: Path):
    (tmp_path / "s.csv").write_text(EHR_SESSIONS, encoding="utf-8")
    (tmp_path / "f.csv").write_text(EHR_FOLLOWUPS)
    out = _cli("validate", "--sessions", str(tmp_path / "s.csv"), "--followups", str(tmp_path / "f.csv"),
               "--preset", "ehr-encounters", "--dates", "monthfirst")
    assert out.returncode == 1, out.stderr
    assert "sessions: 8 rows read, 7 accepted, 1 set aside" in out.stdout
    assert "report banner" in out.stdout and "footer" in out.stdout


# ---------------------------------------------------------------------------------------------------------------
# 4. A generated clinic written in three layouts clinic systems produce, loaded through the mapping step's logic
#    (suggestions, value step, conversions, items, prefixes: no preset, no hand-written TOML): the same accepted
#    rows and the same cohort as the canonical files, so the true hazard ratio and PHQ-9 change are recovered alike
# ---------------------------------------------------------------------------------------------------------------

from analytics.sample import DEFAULT_UPLOAD, TRUE_EFFECTS, generate_clinic
from schemas.mapping import Mapping, mapping_suggestions
from schemas.presets import combine_presets
from schemas.reader import read_table
from schemas.value_map import mapped_text, value_table, values_section

N_LAYOUT = 1200
ROUTE_TEXT = {"iv": "Ketamine Infusion", "im": "IM Ketamine", "sublingual": "Ketamine troche (sublingual)",
              "intranasal": "Spravato", "oral": "Oral ketamine"}
OTHER_TEXT = {"psychotherapy": "Individual Therapy", "integration": "Integration Session",
              "assessment": "Intake Assessment"}


def _csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False, lineterminator="\n").encode()


def _us_datetime(iso: pd.Series, hour: str) -> pd.Series:
    d = pd.to_datetime(iso)
    return d.dt.strftime("%m/%d/%Y ") + hour


def _items(total: pd.Series, n: int) -> pd.DataFrame:
    """Item answers 0-3 that sum to each total (3s first, the remainder next, then 0s; missing stays missing)."""
    t = total.astype("Float64")
    cols = {}
    for i in range(n):
        item = (t - 3 * i).clip(lower=0, upper=3)
        cols[i + 1] = item.astype("Int64")
    return pd.DataFrame(cols)


def _layout_ehr(c: dict[str, pd.DataFrame]) -> dict[str, bytes]:
    """EHR appointment report: month-first 12-hour date-times, visit-type text carrying route, weight in pounds,
    appointment statuses (plus a no-show and a cancelled visit per 100 patients, not sessions), UDS words."""
    s = c["sessions"]
    visit = s["session_type"].map(OTHER_TEXT).where(s["session_type"] != "ketamine", s["route"].map(ROUTE_TEXT))
    out = pd.DataFrame({"Pt ID": s["patient_id"], "Appt Date/Time": _us_datetime(s["session_date"], "09:30 AM"),
                        "Appt Type": visit, "Appt Status": "Checked Out", "Dose (mg)": s["dose_mg"],
                        "Weight (lb)": (s["weight_kg"].astype("Float64") / 0.45359237).round(6),
                        "PHQ-9 Total": s["phq9"], "GAD-7 Total": s["gad7"], "Craving (0-10)": s["craving"],
                        "Max Systolic BP": s["bp_systolic_max"], "Max Diastolic BP": s["bp_diastolic_max"],
                        "Max Heart Rate": s["heart_rate_max"],
                        "Side Effects": s["adverse_events"].str.replace(";", ", "), "Location": s["site"],
                        "Provider": s["clinician"]})
    extra = out.iloc[::150].copy()
    extra["Appt Status"] = ["No Show", "Cancelled"] * (len(extra) // 2) + ["No Show"] * (len(extra) % 2)
    out = pd.concat([out, extra], ignore_index=True)
    f = c["followups"]
    fu = pd.DataFrame({"Pt ID": f["patient_id"], "Assessment Date": _us_datetime(f["assessment_date"], "02:00 PM"),
                       "Recall Window (days)": f["window_days"], "Days Abstinent": f["days_abstinent"],
                       "Heavy Use Days": f["heavy_days"], "Any Use Since Last Visit": f["any_use"].str.title(),
                       "Date of Relapse": f["relapse_date"], "PHQ-9 Total": f["phq9"], "GAD-7 Total": f["gad7"],
                       "Craving (0-10)": f["craving"],
                       "UDS Result": f["urine_tox"].map({"positive": "Detected", "negative": "Not Detected",
                                                         "not_done": "Not Done"}),
                       "Episode Status": f["status"].str.replace("_", " ").str.title()})
    fu["Date of Relapse"] = _us_datetime(f["relapse_date"], "12:00 PM").where(f["relapse_date"].notna())
    return {"sessions": _csv_bytes(out), "followups": _csv_bytes(fu), "patients": _layout_patients(c)}


def _layout_patients(c: dict[str, pd.DataFrame], prefix: str = "") -> bytes:
    p = c["patients"]
    return _csv_bytes(pd.DataFrame({
        "Pt ID": prefix + p["patient_id"], "Primary Substance": p["primary_substance"].str.title(),
        "Program": p["program"], "Sex": p["sex"].str[0].str.upper(), "Age": p["age"], "Location": p["site"],
        "Prior Treatments": p["prior_treatments"]}))


def _layout_redcap(c: dict[str, pd.DataFrame]) -> dict[str, bytes]:
    """REDCap record: day-first dates, radio labels for visit type (route inside), PHQ-9 and GAD-7 as items, a
    0-100 craving scale, 1/0 answers and the instruments' completion-status columns."""
    s = c["sessions"]
    visit = s["session_type"].str.title().where(s["session_type"] != "ketamine", "Ketamine - " + s["route"].map(
        {"iv": "IV", "im": "IM", "sublingual": "Sublingual", "intranasal": "Intranasal", "oral": "Oral"}))
    dates = pd.to_datetime(s["session_date"]).dt.strftime("%d/%m/%Y")
    ses = pd.DataFrame({"record_id": s["patient_id"], "visit_date": dates, "visit_type": visit,
                        "dose_mg": s["dose_mg"], "weight_kg": s["weight_kg"], "phq9_total": s["phq9"],
                        "gad7_total": s["gad7"], "craving": s["craving"], "bp_systolic_max": s["bp_systolic_max"],
                        "bp_diastolic_max": s["bp_diastolic_max"], "heart_rate_max": s["heart_rate_max"],
                        "adverse_events": s["adverse_events"], "site": s["site"], "clinician": s["clinician"],
                        "session_complete": 2})
    f = c["followups"]
    fu = pd.DataFrame({"record_id": f["patient_id"],
                       "date_assessed": pd.to_datetime(f["assessment_date"]).dt.strftime("%d/%m/%Y"),
                       "window_days": f["window_days"], "days_abstinent": f["days_abstinent"],
                       "heavy_days": f["heavy_days"], "any_use": f["any_use"].map({"yes": 1, "no": 0}),
                       "relapse_date": pd.to_datetime(f["relapse_date"]).dt.strftime("%d/%m/%Y")})
    phq, gad = _items(f["phq9"], 9), _items(f["gad7"], 7)
    for i in range(1, 10):
        fu[f"phq9_{i}"] = phq[i]
    for i in range(1, 8):
        fu[f"gad7_{i}"] = gad[i]
    fu["craving_vas_100"] = f["craving"].astype("Float64") * 10
    fu["urine_tox"] = f["urine_tox"]
    fu["treatment_status"] = f["status"]
    fu["phq9_complete"] = 2
    return {"sessions": _csv_bytes(ses), "followups": _csv_bytes(fu), "patients": _layout_patients(c)}


def _layout_fhir(c: dict[str, pd.DataFrame]) -> dict[str, bytes]:
    """FHIR resources flattened to CSV: 'Patient/<id>' references, ISO date-times in UTC, visits as Encounters with a
    status, assessments as one Observation per row with LOINC codes for the PHQ-9 and GAD-7 totals."""
    s = c["sessions"]
    enc = pd.DataFrame({"id": [f"enc-{i}" for i in range(len(s))], "status": "finished",
                        "subject.reference": "Patient/" + s["patient_id"],
                        "period.start": s["session_date"] + "T15:00:00Z", "period.end": s["session_date"] + "T16:00:00Z",
                        "type.text": s["session_type"], "route": s["route"], "dose_mg": s["dose_mg"],
                        "weight_kg": s["weight_kg"], "phq9": s["phq9"], "gad7": s["gad7"], "craving": s["craving"],
                        "bp_systolic_max": s["bp_systolic_max"], "bp_diastolic_max": s["bp_diastolic_max"],
                        "heart_rate_max": s["heart_rate_max"], "adverse_events": s["adverse_events"],
                        "site": s["site"], "clinician": s["clinician"]})
    f = c["followups"]
    codes = {"phq9": "44261-6", "gad7": "70274-6", "window_days": "window_days", "days_abstinent": "days_abstinent",
             "heavy_days": "heavy_days", "any_use": "any_use", "relapse_date": "relapse_date", "craving": "craving",
             "urine_tox": "urine_tox", "status": "status"}
    parts = []
    for col, code in codes.items():
        have = f[f[col].notna()]
        numeric = col in ("phq9", "gad7", "window_days", "days_abstinent", "heavy_days", "craving")
        parts.append(pd.DataFrame({"row": have.index, "subject.reference": "Patient/" + have["patient_id"],
                                   "effectiveDateTime": have["assessment_date"] + "T10:00:00Z",
                                   "code.coding.0.code": code,
                                   "valueQuantity.value": have[col] if numeric else pd.NA,
                                   "valueString": pd.NA if numeric else have[col]}))
    obs = pd.concat(parts).sort_values("row", kind="stable").drop(columns="row").reset_index(drop=True)
    obs.insert(0, "status", "final")
    obs.insert(0, "id", [f"obs-{i}" for i in range(len(obs))])
    return {"sessions": _csv_bytes(enc), "followups": _csv_bytes(obs), "patients": _layout_patients(c, "Patient/")}


def _through_the_mapping(files: dict[str, bytes], *, dates: str, overrides: dict[str, dict[str, str]],
                         prefix: str = "") -> tuple[object, dict[str, dict[str, str]]]:
    """What a user does in the mapping step: take the suggested columns (choosing where the step leaves a field
    open), accept the offered conversions and item sums and the suggested value meanings."""
    sections, picked = {}, {}
    for kind, data in files.items():
        table = read_table(data)
        samples = {h: table.frame[h].dropna().unique()[:50].tolist() for h in table.headers if "status" in h.lower()}
        sugg = mapping_suggestions(table.headers, kind, samples=samples, codes_in_file=(
            table.frame[detect].dropna().unique().tolist() if (detect := _code_column(table.headers, kind)) else ()))
        choices = {f: h for f, (h, _) in sugg.chosen.items()}
        scale = {}
        for f, (h, factor, _why) in sugg.conversions.items():
            choices[f], scale[f] = h, factor
        choices.update(overrides.get(kind, {}))
        picked[kind] = choices
        columns = {h: f for f, h in choices.items()}
        values = values_section(value_table(mapped_text(table.frame, columns), kind))
        codes = {c: m for c, (m, _) in sugg.codes.items()} if sugg.layout == "long" else None
        mapping = Mapping.from_choices(kind, choices, table.headers, values=values, scale=scale, dates=dates,
                                       items=sugg.items, code_column=sugg.code_column if codes else None,
                                       value_columns=sugg.value_columns if codes else (), codes=codes,
                                       strip_prefix=(prefix,) if prefix else ())
        sections[kind] = mapping.to_preset()
    preset = combine_presets(None, sections, name="clinic-mapping")
    return load_exports(files["sessions"], files["followups"], files["patients"], preset=preset, dates=dates,
                        upload_date=DEFAULT_UPLOAD), picked


def _code_column(headers, kind):
    from schemas.mapping import detect_long

    return detect_long(headers, kind)[0]


@pytest.fixture(scope="module")
def generated():
    clinic = generate_clinic(N_LAYOUT)
    canonical = load_exports(*(_csv_bytes(clinic[k]) for k in ("sessions", "followups", "patients")),
                             upload_date=DEFAULT_UPLOAD)
    return clinic, canonical, build_cohort(canonical)


LAYOUTS = {
    "ehr": (_layout_ehr, "monthfirst", {}, ""),
    "redcap": (_layout_redcap, "dayfirst", {}, ""),
    "fhir": (_layout_fhir, "iso", {}, "Patient/"),
}


def _therapy_hr(cohort) -> tuple[float, float]:
    from statsmodels.duration.hazard_regression import PHReg

    p = cohort.survival_patients
    x = pd.DataFrame({"therapy": (p["program"] == "ketamine + therapy").astype(float)})
    for s in ("opioids", "cocaine", "methamphetamine", "cannabis", "other"):
        x[s] = (p["primary_substance"] == s).astype(float)
    fit = PHReg(p["days_to_event"].to_numpy(), x.to_numpy(), status=p["relapsed"].astype(float).to_numpy(),
                ties="efron").fit()
    return float(fit.params[0]), float(fit.bse[0])


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_generated_clinic_in_a_real_layout_loads_through_the_mapping_and_keeps_its_truth(generated, layout):
    import math

    clinic, canonical, truth_cohort = generated
    write, dates, overrides, prefix = LAYOUTS[layout]
    data, _picked = _through_the_mapping(write(clinic), dates=dates, overrides=overrides, prefix=prefix)
    assert not overrides  # the suggestions found every column
    _balanced(data)
    s, f = data.files["sessions"], data.files["followups"]
    extra = len(clinic["sessions"].iloc[::150]) if layout == "ehr" else 0  # the no-shows and cancellations
    assert (s.rows, s.accepted, s.quarantined) == (len(clinic["sessions"]) + extra, len(clinic["sessions"]) + extra, 0)
    assert s.output_rows == len(clinic["sessions"]) == len(data.sessions)
    assert f.quarantined == 0 and len(data.followups) == len(clinic["followups"])
    assert data.issues.empty, data.issues.head().to_string()
    cohort = build_cohort(data)
    key = ["patient_id", "index_date", "relapsed", "days_to_event", "baseline_phq9", "program", "index_route"]
    pd.testing.assert_frame_equal(cohort.patients[key].sort_values("patient_id").reset_index(drop=True),
                                  truth_cohort.patients[key].sort_values("patient_id").reset_index(drop=True),
                                  check_dtype=False)
    phq = ["patient_id", "weeks", "value"]
    mine = cohort.measures[cohort.measures["measure"] == "phq9"][phq].sort_values(phq).reset_index(drop=True)
    true = truth_cohort.measures[truth_cohort.measures["measure"] == "phq9"][phq].sort_values(phq)
    pd.testing.assert_frame_equal(mine, true.reset_index(drop=True), check_dtype=False)
    coef, se = _therapy_hr(cohort)
    assert coef == pytest.approx(_therapy_hr(truth_cohort)[0], rel=1e-9)
    assert abs(coef - math.log(TRUE_EFFECTS.hr_therapy)) <= 2.576 * se, math.exp(coef)
    assert data.sessions["weight_kg"].round(6).tolist() == pytest.approx(
        canonical.sessions["weight_kg"].round(6).tolist(), nan_ok=True, abs=1e-6)
