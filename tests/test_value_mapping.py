"""The value step of the mapping (schemas/value_map.py, pages/_value_map.py): every distinct value of a category
column with its count and a suggested meaning; one value can set several columns; the saved mapping keeps what the
user changed and removed, the date format and unit conversions."""

from __future__ import annotations

import tomllib
from datetime import date

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from schemas.mapping import Mapping
from schemas.presets import combine_presets, loads_mapping
from schemas.reader import read_table
from schemas.validate import load_exports
from schemas.value_map import mapped_text, suggest_value, value_table, values_section

SESSIONS = (b"Client ID,Visit Date,Visit Type,Weight (lb),Status,Side effects\n"
            b"C1,2025-01-02,Spravato 84mg,150,Arrived,drowsy; dizziness\n"
            b"C1,2025-01-09,Spravato 84mg,150,No Show,\n"
            b"C1,2025-01-10,KAP Session,151,Arrived,\"nausea, headache\"\n"
            b"C2,2025-01-03,Ketamine Infusion,200,Arrived,itchy\n"
            b"C2,2025-01-04,G2083,200,Arrived,\n"
            b"C2,2025-01-05,Individual Therapy,,Arrived,\n"
            b"C2,2025-01-06,Massage,,Arrived,\n")
FOLLOWUPS = b"Client ID,Assessment Date,PHQ-9\nC1,2025-02-01,12\nC2,2025-02-02,9\n"
COLUMNS = {"Client ID": "patient_id", "Visit Date": "session_date", "Visit Type": "session_type",
           "Status": "status", "Side effects": "adverse_events"}


@pytest.mark.parametrize(("column", "value", "meaning"), [
    ("session_type", "Spravato 84mg", {"session_type": "ketamine", "route": "intranasal", "dose_mg": "84"}),
    ("session_type", "KAP Session", {"session_type": "ketamine", "also": "psychotherapy"}),
    ("session_type", "Ketamine-assisted psychotherapy (IM)", {"session_type": "ketamine", "route": "im",
                                                              "also": "psychotherapy"}),
    ("session_type", "Ketamine Infusion", {"session_type": "ketamine", "route": "iv"}),
    ("session_type", "G2082", {"session_type": "ketamine", "route": "intranasal", "dose_mg": "56"}),
    ("session_type", "90837", {"session_type": "psychotherapy"}),
    ("session_type", "Massage", None),
    ("route", "IN", {"route": "intranasal"}),
    ("status", "No Show", {"status": "no_show"}),
    ("adverse_events", "drowsy", {"adverse_events": "sedation"}),
    ("sex", "F", {"sex": "female"}),
])
def test_values_are_suggested_from_their_own_words_only(column, value, meaning):
    assert suggest_value("sessions", column, value) == meaning


@pytest.mark.parametrize("value", ["Non-negative", "Inconclusive"])
def test_an_urine_result_read_either_way_is_left_to_the_user(value):
    assert suggest_value("followups", "urine_tox", value) is None


def test_every_distinct_value_is_listed_with_its_count_and_a_suggestion():
    table = read_table(SESSIONS)
    listed = value_table(mapped_text(table.frame, COLUMNS), "sessions")
    types = listed[listed["column"] == "session_type"].set_index("value")
    assert types["count"].to_dict() == {"Spravato 84mg": 2, "KAP Session": 1, "Ketamine Infusion": 1, "G2083": 1,
                                        "Individual Therapy": 1, "Massage": 1}
    assert types.loc["Massage", "status"] == "unknown" and types.loc["G2083", "status"] == "suggested"
    events = listed[listed["column"] == "adverse_events"].set_index("value")
    assert events["count"].to_dict() == {"drowsy": 1, "dizziness": 1, "nausea": 1, "headache": 1, "itchy": 1}
    assert events.loc["dizziness", "status"] == "canonical" and events.loc["itchy", "status"] == "unknown"
    statuses = listed[listed["column"] == "status"].set_index("value")
    assert statuses["count"].to_dict() == {"Arrived": 6, "No Show": 1}


def _mapping(values: dict | None = None, **kw) -> Mapping:
    choices = {"patient_id": "Client ID", "session_date": "Visit Date", "session_type": "Visit Type",
               "status": "Status", "adverse_events": "Side effects", "weight_kg": "Weight (lb)"}
    headers = read_table(SESSIONS).headers
    if values is None:
        values = values_section(value_table(mapped_text(read_table(SESSIONS).frame, COLUMNS), "sessions"))
    return Mapping.from_choices("sessions", choices, headers, values=values, **kw)


def test_one_value_sets_several_columns_and_pounds_are_converted_when_asked():
    mapping = _mapping(scale={"weight_kg": 0.45359237}, dates="iso")
    followups = Mapping.from_choices("followups", {"patient_id": "Client ID", "assessment_date": "Assessment Date",
                                                   "phq9": "PHQ-9"}, ["Client ID", "Assessment Date", "PHQ-9"])
    preset = combine_presets(mapping.to_preset(), {"followups": followups.to_preset()})
    data = load_exports(SESSIONS, FOLLOWUPS, preset=preset, upload_date=date(2026, 1, 1))
    report = data.files["sessions"]
    # 7 rows: Massage has no meaning and KAP Session says ketamine without a route (both set aside); the no-show
    # is accepted and not a session; 'itchy' is read as 'other' and its session kept
    assert (report.rows, report.accepted, report.quarantined) == (7, 5, 2)
    assert data.issues[["line", "column", "value"]].values.tolist() == [[4, "route", ""],
                                                                       [8, "session_type", "Massage"]]
    s = data.sessions.sort_values("session_date").reset_index(drop=True)
    assert s["session_type"].tolist() == ["ketamine", "ketamine", "ketamine", "psychotherapy"]
    assert s["adverse_events"].tolist()[1] == "other"
    spravato = s[s["session_date"] == pd.Timestamp("2025-01-02")].iloc[0]
    assert (spravato["route"], spravato["dose_mg"]) == ("intranasal", 84.0)
    assert spravato["weight_kg"] == pytest.approx(150 * 0.45359237, abs=1e-6)
    assert s.loc[s["session_date"] == pd.Timestamp("2025-01-03"), "route"].item() == "iv"
    g2083 = s[s["session_date"] == pd.Timestamp("2025-01-04")].iloc[0]
    assert (g2083["route"], g2083["dose_mg"], g2083["weight_kg"]) == ("intranasal", 84.0,
                                                                      pytest.approx(200 * 0.45359237))
    assert s.loc[s["session_date"] == pd.Timestamp("2025-01-02"), "adverse_events"].item() == "sedation;dizziness"


def test_reopening_a_saved_mapping_keeps_removed_and_changed_values_and_the_date_format():
    listed = value_table(mapped_text(read_table(SESSIONS).frame, COLUMNS), "sessions")
    listed.loc[listed["value"] == "KAP Session", ["target", "status"]] = [{}, "kept"]  # the user removed it
    at = listed.index[listed["value"] == "Massage"][0]
    listed.at[at, "target"], listed.at[at, "status"] = {"session_type": "psychotherapy"}, "saved"  # changed
    text = _mapping(values_section(listed), dates="dayfirst").to_toml()
    saved = tomllib.loads(text)
    assert saved["dates"] == "dayfirst"
    assert saved["sessions"]["values"]["session_type"]["KAP Session"] == ""
    assert saved["sessions"]["values"]["session_type"]["Spravato 84mg"] == {
        "session_type": "ketamine", "route": "intranasal", "dose_mg": "84"}
    reopened = loads_mapping(text)
    assert reopened.dates == "dayfirst"
    again = value_table(mapped_text(read_table(SESSIONS).frame, COLUMNS), "sessions",
                        reopened.data["sessions"]["values"]).set_index("value")
    assert again.loc["KAP Session", "status"] == "kept" and again.loc["KAP Session", "target"] == {}
    assert again.loc["Massage", "target"] == {"session_type": "psychotherapy"}
    assert Mapping.from_preset(reopened, "sessions").dates == "dayfirst"


def test_a_value_kept_as_written_is_read_as_written():
    mapping = _mapping({"session_type": {"KAP Session": "", "Spravato 84mg": "ketamine"}})
    frame, _ = mapping.to_preset().apply_values("sessions", pd.DataFrame(
        {"session_type": pd.Series(["KAP Session", "Spravato 84mg"], dtype="string")}))
    assert frame["session_type"].tolist() == ["KAP Session", "ketamine"]


def _step(data: bytes, base: str | None) -> None:
    import streamlit as st

    from pages._mapping import mapping_step
    from schemas.presets import loads_mapping

    preset = mapping_step("sessions", data, "visits.csv", base=loads_mapping(base) if base else None)
    st.session_state["toml"] = None if preset is None else preset.to_toml()


def _select(at: AppTest, label: str):
    return next(s for s in at.selectbox if s.label.startswith(label))


def test_mapping_step_lists_values_and_a_reopened_mapping_keeps_the_users_changes():
    at = AppTest.from_function(_step, args=(SESSIONS, None), default_timeout=240)
    at.run()
    assert not at.exception
    spravato = _select(at, "Spravato 84mg · 2 (suggested)")
    assert spravato.value == "session_type ketamine, route intranasal, dose_mg 84"
    assert _select(at, "Massage · 1 (no suggestion)").value == "kept as written"
    assert any("pounds" in c.label for c in at.checkbox)  # offered as a conversion, never mapped as kg
    assert _select(at, "weight_kg").value == "— not in this file —"
    _select(at, "KAP Session").set_value("kept as written")
    _select(at, "Massage").set_value("session_type psychotherapy").run()
    next(c for c in at.checkbox if "pounds" in c.label).check().run()
    assert not at.exception
    saved = tomllib.loads(at.session_state["toml"])
    assert saved["sessions"]["values"]["session_type"]["KAP Session"] == ""
    assert saved["sessions"]["values"]["session_type"]["Massage"] == "psychotherapy"
    assert saved["sessions"]["scale"] == {"weight_kg": 0.45359237}
    assert saved["sessions"]["columns"]["Weight (lb)"] == "weight_kg"

    again = AppTest.from_function(_step, args=(SESSIONS, at.session_state["toml"]), default_timeout=240)
    again.run()
    assert not again.exception
    assert _select(again, "KAP Session · 1 (kept as written)").value == "kept as written"
    assert _select(again, "Massage · 1 (saved)").value == "session_type psychotherapy"
    assert _select(again, "weight_kg").value == "Weight (lb)"  # the saved choice, with its conversion
    assert tomllib.loads(again.session_state["toml"])["sessions"]["values"] == saved["sessions"]["values"]


def test_adverse_events_written_as_lists_are_split_and_an_unknown_item_never_sets_the_session_aside():
    sessions = (b"patient_id,session_date,session_type,route,adverse_events\n"
                b"P1,2025-01-02,ketamine,iv,drowsy; dizziness\nP1,2025-01-09,ketamine,iv,\"nausea, headache\"\n"
                b"P2,2025-01-03,ketamine,iv,itchy\nP2,2025-01-10,ketamine,iv,rash; Nausea\n")
    followups = b"patient_id,assessment_date,phq9\nP1,2025-02-01,12\nP2,2025-02-02,9\n"
    data = load_exports(sessions, followups, upload_date=date(2026, 1, 1))
    assert (data.files["sessions"].accepted, data.files["sessions"].quarantined) == (4, 0)
    assert data.sessions["adverse_events"].tolist() == ["sedation;dizziness", "nausea;headache", "other",
                                                        "other;nausea"]
    note = next(n for n in data.notes if "not on the list" in n)
    assert "'itchy' (line 4)" in note and "'rash' (line 5)" in note and "read as 'other'" in note


def test_a_kap_session_is_a_ketamine_session_and_also_a_psychotherapy_contact():
    sessions = (b"Client ID,Visit Date,Visit Type,Dose\nC1,2025-01-02,KAP Session IM,60\n"
                b"C1,2025-01-09,KAP Session IM,70\nC1,2025-01-16,Individual Therapy,\n")
    followups = b"Client ID,Assessment Date\nC1,2025-02-01\n"
    table = read_table(sessions)
    columns = {"Client ID": "patient_id", "Visit Date": "session_date", "Visit Type": "session_type",
               "Dose": "dose_mg"}
    values = values_section(value_table(mapped_text(table.frame, columns), "sessions"))
    assert values["session_type"]["KAP Session IM"] == {"session_type": "ketamine", "route": "im",
                                                        "also": "psychotherapy"}
    mapping = Mapping.from_choices("sessions", {f: h for h, f in columns.items()}, table.headers, values=values)
    fu = Mapping.from_choices("followups", {"patient_id": "Client ID", "assessment_date": "Assessment Date"},
                              ["Client ID", "Assessment Date"])
    data = load_exports(sessions, followups, preset=combine_presets(mapping.to_preset(), {"followups": fu.to_preset()}),
                        upload_date=date(2026, 1, 1))
    report = data.files["sessions"]
    assert (report.rows, report.accepted, report.quarantined) == (3, 3, 0)
    s = data.sessions
    assert list(zip(s["line"], s["session_type"], s["dose_mg"].fillna(0))) == [
        (2, "ketamine", 60.0), (2, "psychotherapy", 0), (3, "ketamine", 70.0), (3, "psychotherapy", 0),
        (4, "psychotherapy", 0)]
    assert s.loc[s["session_type"] == "psychotherapy", "route"].isna().all()
    assert any("2 session row(s) also count as another contact, as the mapping says (2 psychotherapy)" in n
               for n in data.notes)
    text = mapping.to_toml()
    assert 'also = "psychotherapy"' in text and loads_mapping(text).values["sessions"]["session_type"][
        "kap session im"]["also"] == "psychotherapy"


def test_also_outside_a_visit_type_or_naming_no_session_type_is_refused():
    bad = ('name = "x"\n[sessions.values.session_type]\n"KAP" = { session_type = "ketamine", also = "massage" }\n')
    with pytest.raises(Exception, match="'also' belongs to a sessions visit type"):
        loads_mapping(bad)
