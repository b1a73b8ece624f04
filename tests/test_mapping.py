"""The mapping step: suggestions, ambiguity, identifiers, the saved mapping file, preview and ``--mapping``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from analytics.errors import UnusableExport
from schemas.mapping import Mapping, mapping_suggestions, preview, suggest_codes, suggest_mapping
from schemas.presets import available_presets, combine_presets, dumps_toml, load_mapping_file, load_preset
from schemas.reader import read_export
from schemas.validate import load_exports

UPLOAD = date(2026, 11, 25)
# "Referral": an unmapped extra column (a free-text "Notes" column would be dropped as an identifier, issue #20)
S_HEADERS = ["Client ID", "MRN", "Patient Name", "Visit Date", "Appointment Type", "Route of Admin", "Dose (mg)",
             "PHQ-9 Total Score", "GAD7", "BP max", "Location", "phq9", "Referral"]
S_ROWS = ["C1,M001,Ann,2025-01-01,ketamine,iv,50,20,12,150,North,19,first",
          "C1,M001,Ann,2025-01-03,psychotherapy,,,,,,North,,",
          "C2,M002,Bob,2025-01-04,ketamine,im,60,18,9,140,South,,"]
F_TEXT = b"client,assessment date,days clean,phq9\nC1,2025-02-01,30,11\nC2,2025-02-04,20,15\n"


def _file(headers: list[str], rows: list[str]) -> bytes:
    return ("\n".join([",".join(headers), *rows]) + "\n").encode()


def _session_mapping(**kw) -> Mapping:
    choices = {"patient_id": "Client ID", "session_date": "Visit Date", "session_type": "Appointment Type",
               "route": "Route of Admin", "dose_mg": "Dose (mg)", "phq9": "PHQ-9 Total Score", "gad7": "GAD7",
               "bp_systolic_max": "BP max", "site": "Location"}
    choices.update(kw.pop("choices", {}))
    return Mapping.from_choices("sessions", choices, S_HEADERS, **kw)


def test_headers_are_suggested_by_name_similarity_and_synonyms():
    chosen = suggest_mapping(S_HEADERS, "sessions")
    assert {f: h for f, (h, _) in chosen.items()} == {
        "patient_id": "Client ID", "session_date": "Visit Date", "session_type": "Appointment Type",
        "route": "Route of Admin", "dose_mg": "Dose (mg)", "gad7": "GAD7", "site": "Location"}
    assert chosen["gad7"][1] == 1.0 and chosen["patient_id"][1] == 0.95 and 0.6 <= chosen["route"][1] < 0.7


def test_two_columns_that_both_mean_phq9_are_flagged_not_chosen():
    sugg = mapping_suggestions(S_HEADERS, "sessions")
    assert [a.headers for a in sugg.ambiguous if a.fields == ("phq9",)] == [("PHQ-9 Total Score", "phq9")]


def test_two_equally_good_headers_for_one_field_are_flagged_and_not_chosen():
    sugg = mapping_suggestions(["Patient Number", "Visit Date", "Appointment Date", "Visit Type"], "sessions")
    assert "session_date" not in sugg.chosen
    (amb,) = sugg.ambiguous
    assert amb.fields == ("session_date",) and amb.headers == ("Visit Date", "Appointment Date")
    assert sugg.table.set_index("field").loc["session_date", "status"] == "ambiguous"
    assert sugg.chosen["session_type"][0] == "Visit Type"


def test_one_header_equally_best_for_two_fields_is_flagged_for_both():
    sugg = mapping_suggestions(["Patient", "Date", "Type", "BP max"], "sessions")
    assert "bp_systolic_max" not in sugg.chosen and "bp_diastolic_max" not in sugg.chosen
    assert any(a.fields == ("bp_systolic_max", "bp_diastolic_max") and a.headers == ("BP max",)
               for a in sugg.ambiguous)


def test_a_header_clearly_better_for_one_field_goes_there_and_the_other_field_takes_its_next_best():
    sugg = mapping_suggestions(["patient_id", "assessment date", "date"], "followups")
    assert sugg.chosen["assessment_date"] == ("assessment date", 1.0)
    assert not sugg.ambiguous


def test_identifier_like_headers_are_never_suggested():
    sugg = mapping_suggestions(["MRN", "Visit Date", "Visit Type", "Email"], "sessions")
    assert "patient_id" not in sugg.chosen
    assert sugg.identifiers == ("MRN", "Email")


def test_instrument_codes_are_suggested_from_loinc_and_short_codes():
    assert suggest_codes(["44261-6", "70274-6", "PHQ-9", "Days abstinent", "AUDIT-C"]) == {
        "44261-6": ("phq9", 1.0), "70274-6": ("gad7", 1.0), "PHQ-9": ("phq9", 1.0),
        "Days abstinent": ("days_abstinent", 1.0), "AUDIT-C": ("audit_c", 1.0)}  # contract v2 column


def test_long_layout_is_detected_from_code_and_value_headers():
    sugg = mapping_suggestions(["subjectId", "effectiveDate", "code", "valueInt", "valueFloat", "note"], "followups",
                               codes_in_file=["44261-6", "gad7"])
    assert sugg.layout == "long" and sugg.code_column == "code" and sugg.value_columns == ("valueInt", "valueFloat")
    assert sugg.chosen == {"patient_id": ("subjectId", 0.95), "assessment_date": ("effectiveDate", 0.95)}
    assert sugg.codes == {"44261-6": ("phq9", 1.0), "gad7": ("gad7", 1.0)}


def test_mapping_an_identifier_must_be_confirmed_and_is_then_kept():
    with pytest.raises(UnusableExport, match="'MRN' looks like a direct identifier"):
        _session_mapping(choices={"patient_id": "MRN"})
    mapping = _session_mapping(choices={"patient_id": "MRN"}, keep_identifiers=["MRN"])
    raw = read_export(_file(S_HEADERS, S_ROWS), kind="sessions", preset=mapping.to_preset())
    assert raw.frame["patient_id"].tolist() == ["M001", "M001", "M002"]
    assert raw.dropped_columns == ("Patient Name",)
    text = mapping.to_toml()
    assert 'keep_identifiers = ["MRN"]' in text and '"MRN" = "patient_id"' in text
    with pytest.raises(UnusableExport, match="keep_identifiers"):  # a hand-edited file without the confirmation
        load_preset_from_text(text.replace('keep_identifiers = ["MRN"]', ""))


def load_preset_from_text(text: str):
    from schemas.presets import loads_mapping

    return loads_mapping(text)


def test_unmapped_columns_are_kept_as_extra_columns_never_dropped():
    mapping = _session_mapping()
    assert mapping.columns["phq9"] == "extra"  # same name as a field, but the user chose another column
    raw = read_export(_file(S_HEADERS, S_ROWS), kind="sessions", preset=mapping.to_preset())
    assert raw.frame["phq9"].fillna("").tolist() == ["20", "", "18"]
    assert raw.frame["extra:phq9"].fillna("").tolist() == ["19", "", ""]
    assert raw.frame["extra:Referral"].fillna("").tolist() == ["first", "", ""]
    assert set(raw.extra_columns) == {"phq9", "Referral"}
    assert set(raw.dropped_columns) == {"MRN", "Patient Name"}


@pytest.mark.parametrize("choices, message", [
    ({"session_date": None}, "holds session_date"),
    ({"gad7": "Dose (mg)"}, "chosen for both"),
    ({"gad7": "GAD-7"}, "no column 'GAD-7'"),
    ({"weight": "GAD7"}, "not a sessions column"),
])
def test_an_incomplete_or_contradictory_mapping_is_refused_with_a_sentence(choices, message):
    with pytest.raises(UnusableExport, match=message):
        _session_mapping(choices=choices)


def test_mapping_file_saves_and_loads_as_the_same_preset(tmp_path: Path):
    mapping = _session_mapping(values={"session_type": {"Spravato": {"session_type": "ketamine",
                                                                     "route": "intranasal"}}})
    path = mapping.save(tmp_path / "clinic.toml")
    loaded = load_mapping_file(path)
    assert loaded.columns["sessions"] == mapping.to_preset().columns["sessions"]
    assert loaded.columns["sessions"]["visit_date"] == "session_date"
    assert loaded.values["sessions"]["session_type"]["spravato"] == {"session_type": "ketamine", "route": "intranasal"}
    assert Mapping.from_preset(loaded, "sessions") == mapping
    assert tomllib.loads(path.read_text())["sessions"]["columns"]["BP max"] == "bp_systolic_max"


@pytest.mark.parametrize("name", sorted(available_presets()))
def test_every_preset_writes_back_to_the_same_toml(name):
    preset = load_preset(name)
    assert tomllib.loads(dumps_toml(preset.data)) == preset.data


def test_long_mapping_from_choices_reads_the_file():
    headers = ["Client", "When", "Measure", "Result"]
    mapping = Mapping.from_choices("followups", {"patient_id": "Client", "assessment_date": "When"}, headers,
                                   code_column="Measure", value_columns=["Result"],
                                   codes={"PHQ9": "phq9", "Days clean": "days_abstinent", "AUDIT": None})
    assert mapping.codes == {"PHQ9": "phq9", "Days clean": "days_abstinent"}
    raw = read_export(b"Client,When,Measure,Result\nA,2025-02-01,PHQ9,7\nA,2025-02-01,Days clean,30\n"
                      b"A,2025-02-01,AUDIT,3\n", kind="followups", preset=mapping.to_preset())
    assert raw.frame[["phq9", "days_abstinent"]].iloc[0].tolist() == ["7", "30"]
    assert [i["line"] for i in raw.issues] == [4]


def test_preview_shows_parsed_rows_with_canonical_names_and_their_issues():
    rows = S_ROWS + ["C3,M003,Cy,2025-13-01,ketamine,,50,30,,,East,,"]
    shown = preview(_file(S_HEADERS, rows), "sessions", _session_mapping(), n=10, upload_date=UPLOAD)
    t = shown.table
    assert list(t.columns[:3]) == ["line", "patient_id", "session_date"]
    assert t["session_date"].iloc[0] == pd.Timestamp("2025-01-01") and pd.isna(t["dose_mg"].iloc[1])
    assert t["phq9"].iloc[0] == 20.0 and t["extra:phq9"].iloc[0] == "19"
    assert "extra:Referral" in t.columns and "MRN" not in " ".join(t.columns)
    issues = shown.issues
    assert set(issues["line"]) == {5}
    assert set(issues["column"]) == {"session_date", "phq9", "route"}
    assert shown.rows == 4


def test_preview_of_a_long_file_shows_followups_and_the_source_issues_of_those_rows():
    data = (b"subjectId,effectiveDate,code,valueInt,valueFloat,valueString\n"
            b"1,2025-02-01,44261-6,12,,\n1,2025-02-01,XYZ,3,,\n1,2025-02-01,gad7,8,,\n2,2025-02-02,phq9,40,,\n"
            b"2,2025-02-02,gad7,5,,\n")
    shown = preview(data, "followups", "mirah-observations", n=1, upload_date=UPLOAD)
    assert shown.table[["phq9", "gad7"]].iloc[0].tolist() == [12.0, 8.0] and len(shown.table) == 1
    assert shown.issues["line"].tolist() == [3]  # line 5 belongs to a follow-up not shown
    everything = preview(data, "followups", "mirah-observations", n=10, upload_date=UPLOAD)
    assert everything.issues["line"].tolist() == [3, 5] and len(everything.table) == 2


def test_combined_preset_takes_each_files_section_from_its_mapping():
    followups = Mapping.from_choices("followups", {"patient_id": "client", "assessment_date": "assessment date",
                                                   "days_abstinent": "days clean"},
                                     ["client", "assessment date", "days clean", "phq9"]).to_preset()
    combined = combine_presets("ehr-encounters", {"followups": followups})
    assert combined.columns["sessions"] == load_preset("ehr-encounters").columns["sessions"]
    assert combined.columns["followups"] == {"client": "patient_id", "assessment_date": "assessment_date",
                                             "days_clean": "days_abstinent", "phq9": "extra"}
    s = b"Patient Number,Encounter Date,Visit Type,Route of Administration\nC1,2025-01-01,Ketamine Infusion,IV Infusion\n"
    data = load_exports(s, F_TEXT, preset=combined, upload_date=UPLOAD)
    assert data.followups["days_abstinent"].tolist() == [30.0]
    assert data.files["followups"].quarantined == 1  # C2 has no sessions


def _cli(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("kap-outcomes", path=str(Path(sys.executable).parent))
    cmd = [exe] if exe else [sys.executable, "-m", "analytics.cli"]
    return subprocess.run([*cmd, *args], check=False, capture_output=True, text=True, timeout=120)


def test_cli_reads_exports_with_a_saved_mapping_file(tmp_path: Path):
    sessions = tmp_path / "sessions.csv"
    sessions.write_bytes(_file(S_HEADERS, S_ROWS))
    followups = tmp_path / "followups.csv"
    followups.write_bytes(F_TEXT)
    f_map = Mapping.from_choices("followups", {"patient_id": "client", "assessment_date": "assessment date",
                                               "days_abstinent": "days clean", "phq9": "phq9"},
                                 ["client", "assessment date", "days clean", "phq9"]).to_preset()
    mapping = combine_presets(_session_mapping().to_preset(), {"followups": f_map}, name="clinic")
    path = tmp_path / "clinic.toml"
    path.write_text(mapping.to_toml(), encoding="utf-8")
    out = _cli("validate", "--sessions", str(sessions), "--followups", str(followups), "--mapping", str(path),
               "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["files"]["sessions"] == {"rows": 3, "accepted": 3, "quarantined": 0,
                                        "dropped_columns": ["MRN", "Patient Name"]}
    assert doc["files"]["followups"] == {"rows": 2, "accepted": 2, "quarantined": 0, "dropped_columns": []}
    assert doc["patients"] == 2


def test_cli_refuses_a_broken_mapping_file_with_one_sentence(tmp_path: Path, capsys):
    from analytics.cli import main

    broken = tmp_path / "broken.toml"
    broken.write_text('[sessions.columns]\n"Visit Date" = "visit_day"\n', encoding="utf-8")
    (tmp_path / "s.csv").write_bytes(_file(S_HEADERS, S_ROWS))
    (tmp_path / "f.csv").write_bytes(F_TEXT)
    code = main(["validate", "--sessions", str(tmp_path / "s.csv"), "--followups", str(tmp_path / "f.csv"),
                 "--mapping", str(broken)])
    err = capsys.readouterr().err
    assert code == 2 and "'Visit Date' maps to 'visit_day', which is not a sessions column" in err
    assert err.count("\n") == 1
