"""AppTest of the mapping step (pages/_mapping.py) as the Data page uses it."""

from __future__ import annotations

import tomllib

from streamlit.testing.v1 import AppTest

WIDE = (b"Client ID,Visit Date,Appointment Date,Appointment Type,Route of Admin,PHQ-9 Total Score,MRN,Notes\n"
        b"C1,2025-01-01,2025-01-02,ketamine,iv,20,M1,first\nC1,2025-01-03,2025-01-03,psychotherapy,,,M1,\n"
        b"C2,2025-01-04,2025-01-04,ketamine,im,31,M2,\n")
LONG = (b"identifiers,subjectId,effectiveDate,code,valueInt,valueFloat,valueString\n"
        b"o1,001,2025-02-01T10:00:00Z,44261-6,12,,\no2,001,2025-02-01,70274-6,8,,\no3,001,2025-02-01,PCL-5,4,,\n"
        b"o4,002,2025-02-03,phq9,14,,\n")


def _script(kind: str, data: bytes, name: str) -> None:
    import streamlit as st

    from pages._mapping import mapping_step

    preset = mapping_step(kind, data, name)
    st.session_state["mapping_toml"] = None if preset is None else preset.to_toml()


def _app(kind: str, data: bytes) -> AppTest:
    at = AppTest.from_function(_script, args=(kind, data, f"{kind}.csv"), default_timeout=240)
    at.run()
    assert not at.exception
    return at


def _select(at: AppTest, label: str):
    return next(s for s in at.selectbox if s.label.startswith(label))


def test_wide_file_flags_the_ambiguous_date_and_completes_once_the_user_chooses():
    at = _app("sessions", WIDE)
    assert _select(at, "patient_id").value == "Client ID"
    assert _select(at, "session_type").value == "Appointment Type"
    assert _select(at, "session_date").value == "— not in this file —"  # two equally good dates: not chosen
    assert any("'Visit Date' and 'Appointment Date' fit equally well" in w.value for w in at.warning)
    assert at.session_state["mapping_toml"] is None
    assert any("session\\_date" in i.value for i in at.info)  # escaped: shown literally

    _select(at, "session_date").set_value("Visit Date").run()
    assert not at.exception
    saved = tomllib.loads(at.session_state["mapping_toml"])
    assert saved["sessions"]["columns"]["Visit Date"] == "session_date"
    assert "Appointment Date" not in saved["sessions"]["columns"]  # unmapped: read as an extra column
    preview = at.dataframe[0].value
    assert preview["patient_id"].tolist() == ["C1", "C1", "C2"]
    assert "extra:Notes" not in preview.columns and "MRN" not in preview.columns  # free-text notes: dropped
    issues = at.dataframe[1].value
    assert issues[["line", "column", "value"]].values.tolist() == [[4, "phq9", "31"]]
    assert len(at.get("download_button")) == 1


def test_identifier_column_is_used_only_after_the_user_confirms_it():
    at = _app("sessions", WIDE)
    _select(at, "session_date").set_value("Visit Date")
    _select(at, "patient_id").set_value("MRN").run()
    assert at.session_state["mapping_toml"] is None
    assert any("'MRN' looks like a direct identifier" in i.value for i in at.info)
    at.checkbox[0].check().run()
    saved = tomllib.loads(at.session_state["mapping_toml"])
    assert saved["sessions"]["keep_identifiers"] == ["MRN"]
    assert at.dataframe[0].value["patient_id"].tolist() == ["(not shown: direct identifier)"] * 3


def test_long_file_maps_codes_and_previews_followups_with_unknown_code_set_aside():
    at = _app("followups", LONG)
    assert at.radio[0].value == "long"
    assert _select(at, "Column with the instrument code").value == "code"
    assert at.multiselect[0].value == ["valueInt", "valueFloat", "valueString"]
    assert _select(at, "code 44261-6").value == "phq9" and _select(at, "code PCL-5").value.startswith("— not used")
    saved = tomllib.loads(at.session_state["mapping_toml"])
    assert saved["followups"]["codes"] == {"44261-6": "phq9", "70274-6": "gad7", "phq9": "phq9"}
    assert saved["followups"]["long"] == {"code": "code", "value": ["valueInt", "valueFloat", "valueString"]}
    preview = at.dataframe[0].value
    assert preview[["patient_id", "phq9", "gad7"]].values.tolist()[0] == ["001", 12.0, 8.0]
    issues = at.dataframe[1].value
    assert issues[["line", "value"]].values.tolist() == [[4, "PCL-5"]]


def test_data_page_offers_the_mapping_step_after_an_upload_that_fits_no_preset():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sessions = b"patient_id,session_date,session_type,route\n001,2025-01-01,ketamine,iv\n002,2025-01-02,ketamine,im\n"
    followups = (b"Client,When,Instrument,Result\n001,2025-02-01,PHQ-9,12\n001,2025-02-01,GAD-7,8\n"
                 b"001,2025-02-01,PHQ-9,12\n002,2025-02-03,PHQ-9,14\n002,2025-02-03,PCL-5,3\n")
    at = AppTest.from_file(str(root / "dashboard.py"), default_timeout=240)
    at.run()
    at.switch_page("pages/data.py").run()
    at.file_uploader(key="up_sessions").set_value(("sessions.csv", sessions, "text/csv"))
    at.file_uploader(key="up_followups").set_value(("followups.csv", followups, "text/csv"))
    at.button[0].click().run()
    assert any("has no 'patient\\_id' column" in e.value and "map them below" in e.value for e in at.error)
    at.toggle(key="map_open").set_value(True).run()
    at.multiselect(key="map_kinds").set_value(["followups"]).run()
    _select(at, "assessment_date").set_value("When").run()
    assert not at.exception
    next(b for b in at.button if b.key == "load_mapped").click().run()
    assert not at.exception and at.session_state["source"] == "upload"
    data = at.session_state["exports"]
    report = data.files["followups"]
    assert (report.rows, report.accepted, report.quarantined, report.merged) == (5, 4, 1, 2)
    assert data.followups["phq9"].tolist() == [12.0, 14.0] and data.followups["gad7"].iloc[0] == 8.0
    assert data.issues[["line", "value"]].values.tolist() == [[6, "PCL-5"]]


def test_mapping_step_opens_before_any_load_stays_open_and_previews_the_effect_on_every_row():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sessions = (b"Client,Seen,Visit Type,Route\n001,2025-01-01,Ketamine Infusion,\n002,2025-01-02,Spravato 56mg,\n"
                b"002,2025-01-09,Massage,\n")
    followups = b"Client,Seen,PHQ-9\n001,2025-02-01,12\n002,2025-02-03,14\n"
    at = AppTest.from_file(str(root / "dashboard.py"), default_timeout=240)
    at.run()
    at.switch_page("pages/data.py").run()
    at.file_uploader(key="up_sessions").set_value(("sessions.csv", sessions, "text/csv"))
    at.file_uploader(key="up_followups").set_value(("followups.csv", followups, "text/csv"))
    next(b for b in at.button if b.label == "Map columns first").click().run()
    assert not at.exception and at.toggle(key="map_open").value is True
    assert at.session_state["source"] != "upload"  # nothing loaded
    at.multiselect(key="map_kinds").set_value(["sessions", "followups"]).run()
    selects = [s for s in at.selectbox if s.label.startswith("session_date")]
    selects[0].set_value("Seen").run()
    next(s for s in at.selectbox if s.label.startswith("assessment_date")).set_value("Seen").run()
    assert at.toggle(key="map_open").value is True  # every choice reruns the page; the step stays open
    assert _select(at, "Spravato 56mg · 1 (suggested)").value == "session_type ketamine, route intranasal, dose_mg 56"
    next(b for b in at.button if b.key == "map_effect").click().run()
    assert not at.exception
    effect = next(d.value for d in at.dataframe if "set_aside" in d.value.columns)
    # Massage has no meaning (set aside); the infusion's route comes from its visit type
    assert effect[["file", "rows", "accepted", "set_aside"]].values.tolist() == [
        ["sessions", 3, 2, 1], ["followups", 2, 2, 0]]
    assert "session_type" in effect["most_common_problem"].iloc[0]
    assert at.session_state["source"] != "upload"
    next(b for b in at.button if b.key == "load_mapped").click().run()
    assert not at.exception and at.session_state["source"] == "upload"
    assert at.session_state["exports"].sessions["route"].tolist() == ["iv", "intranasal"]


def test_a_saved_mapping_loads_with_its_own_date_format():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sessions = b"Client,Seen,Visit Type\n001,25/01/2025,Spravato 84mg\n002,26/01/2025,Ketamine Infusion\n"
    followups = b"Client,Seen,PHQ-9\n001,25/02/2025,12\n002,27/02/2025,14\n"
    saved = (b'name = "clinic-mapping"\ndates = "dayfirst"\n[sessions.columns]\n"Client" = "patient_id"\n'
             b'"Seen" = "session_date"\n"Visit Type" = "session_type"\n[sessions.values.session_type]\n'
             b'"Spravato 84mg" = { session_type = "ketamine", route = "intranasal", dose_mg = "84" }\n'
             b'"Ketamine Infusion" = { session_type = "ketamine", route = "iv" }\n[followups.columns]\n'
             b'"Client" = "patient_id"\n"Seen" = "assessment_date"\n"PHQ-9" = "phq9"\n')
    at = AppTest.from_file(str(root / "dashboard.py"), default_timeout=240)
    at.run()
    at.switch_page("pages/data.py").run()
    at.file_uploader(key="up_sessions").set_value(("sessions.csv", sessions, "text/csv"))
    at.file_uploader(key="up_followups").set_value(("followups.csv", followups, "text/csv"))
    at.file_uploader(key="up_mapping").set_value(("mapping.toml", saved, "application/toml"))
    at.button[0].click().run()  # the radio still says ISO: the mapping's own format wins
    assert not at.exception and at.session_state["source"] == "upload"
    data = at.session_state["exports"]
    assert data.sessions["session_date"].dt.strftime("%Y-%m-%d").tolist() == ["2025-01-25", "2025-01-26"]
    assert data.sessions["dose_mg"].tolist()[0] == 84.0 and data.issues.empty
