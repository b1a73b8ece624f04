"""Privacy hardening of reading and validation (issue #20): hostile files, written here byte by byte.

Set-aside rows never carry the raw text of a line nor the value of an identifier column; old Mac line endings,
unterminated quotes, NUL bytes and very long values each get an exact issue or sentence; every row is accounted
for (accepted + set aside = rows read).
"""

from __future__ import annotations

import csv
import tomllib
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from analytics.errors import UnusableExport
from schemas.columns import COLUMNS
from schemas.frames import HIDDEN_VALUE
from schemas.headers import looks_like_identifier
from schemas.mapping import Mapping, mapping_suggestions, preview
from schemas.presets import PRESET_DIR
from schemas.reader import read_export
from schemas.validate import load_exports

UPLOAD = date(2026, 11, 25)
ROOT = Path(__file__).resolve().parents[1]
FOLLOWUPS = b"patient_id,assessment_date\n00123,2025-02-01\n"
MORE = ("this line has 7 fields but the header has 6: a value contains the delimiter, a comma (,), without "
        "quotes (for example a name written as last name, first name); put double quotes around every value that "
        "contains the delimiter, or remove the extra delimiter, then export again")


def _balanced(data) -> None:
    for name, report in data.files.items():
        assert report.accepted + report.quarantined == report.rows, name


def _all_text(data) -> str:
    return data.issues.to_csv(index=False) + "\n".join(data.notes)


# 1. a set-aside row never carries the raw text of its line ---------------------------------------------------

@pytest.mark.parametrize("ending", [b"\n", b"\r\n"])
def test_a_row_with_an_unquoted_comma_in_a_name_is_set_aside_without_its_text(ending):
    lines = [b"patient_id,Patient Name,DOB,session_date,session_type,route",
             b"00123,Ann Smith,1980-04-05,2025-01-03,ketamine,iv",
             b"00123,Doe, Jane,1970-02-03,2025-01-05,ketamine,iv",
             b"00123,Ann Smith,1980-04-05,2025-01-07,ketamine,im"]
    sessions = ending.join(lines) + ending
    data = load_exports(sessions, FOLLOWUPS, upload_date=UPLOAD)
    assert data.issues[["file", "line", "column", "value", "reason"]].values.tolist() == [
        ["sessions.csv", 3, "(whole row)", "7 fields (header has 6)", MORE]]
    assert data.files["sessions"].rows == 3 and data.files["sessions"].accepted == 2
    _balanced(data)
    text = _all_text(data)
    assert not any(s in text for s in ("Jane", "1970", "Ann Smith", "1980")), text


def test_a_row_with_too_few_fields_names_its_counts_only():
    sessions = (b"patient_id;First Name;session_date;session_type;route\n"
                b"00123;Ann;2025-01-03;ketamine;iv\n"
                b"00123;\"Jane;2025-01-05\";ketamine\n")
    raw = read_export(sessions, kind="sessions")
    assert raw.issues == [{
        "line": 3, "column": "(whole row)", "value": "3 fields (header has 5)",
        "reason": "this line has 3 fields but the header has 5: some delimiters are missing (a cut-off line, or a "
                  "stray double quote that joined two values); complete the line or remove the stray quote, then "
                  "export again", "file": "sessions.csv"}]


def test_a_kept_identifier_column_never_shows_its_values_in_issues():
    """'MRN' mapped to patient_id on purpose: its values fill the column but never an issue."""
    headers = ["MRN", "Visit Date", "Visit Type", "Route"]
    mapping = Mapping.from_choices("sessions", {"patient_id": "MRN", "session_date": "Visit Date",
                                                "session_type": "Visit Type", "route": "Route"},
                                   headers, keep_identifiers=["MRN"])
    sessions = (b"MRN,Visit Date,Visit Type,Route\n"
                b"M-555-01,2025-01-03,ketamine,iv\n"
                b"M-555-01,2025-01-03,ketamine,iv\n")
    shown = preview(sessions, "sessions", mapping, upload_date=UPLOAD)
    assert shown.issues[["line", "column", "value"]].values.tolist() == [[3, "patient_id", HIDDEN_VALUE]]
    assert "M-555" not in shown.issues.to_csv(index=False)


# 2. old Mac line endings ----------------------------------------------------------------------------------------

def test_cr_only_line_endings_are_read_as_lines():
    sessions = (b"patient_id,session_date,session_type,route\r"
                b"00123,2025-01-03,ketamine,iv\r"
                b"00123,2025-01-04,ketamine\r"
                b"00123,2025-01-05,ketamine,im\r")
    raw = read_export(sessions, kind="sessions")
    assert raw.rows == 3 and raw.frame["line"].tolist() == [2, 4]
    assert raw.frame["route"].tolist() == ["iv", "im"]
    assert [(i["line"], i["value"]) for i in raw.issues] == [(3, "3 fields (header has 4)")]
    assert raw.notes == (("sessions.csv: read as UTF-8, delimiter ','; its line breaks are CR only (an old Mac "
                          "export), read as lines."),)


def test_a_large_cr_only_export_is_not_mistaken_for_one_long_line():
    rows = b"".join(b"%05d,2025-01-05,ketamine,iv,Dr %d\r" % (i, i) for i in range(6000))  # ~180 kB, 30k commas
    raw = read_export(b"patient_id,session_date,session_type,route,clinician\r" + rows, kind="sessions")
    assert raw.rows == 6000 and raw.frame["line"].iloc[-1] == 6001 and raw.frame["clinician"].iloc[-1] == "Dr 5999"
    assert raw.issues == []


# 3. an unterminated quote names the line that opened it ---------------------------------------------------------

def _unclosed(line: int) -> str:
    return (f'sessions.csv: the double quote (") opened on line {line} is never closed, so everything after it '
            f"would be read as one value; close or remove that quote on line {line} and save the file again.")


@pytest.mark.parametrize("data, line", [
    ((b'patient_id,session_date,session_type,route\n1,2025-01-05,ketamine,iv\n2,"2025-01-06,ketamine,im\n'
      b"3,2025-01-07,ketamine,im\n4,2025-01-08,ketamine,im\n"), 3),
    (b'patient_id,session_date,session_type,route\n1,2025-01-05,ketamine,iv\n2,2025-01-06,ketamine,"im\n', 3),
    (b'patient_id,session_date,session_type,route\r\n1,2025-01-05,ketamine,iv\r\n2,2025-01-06,ketamine,"im', 3),
    ((b'patient_id,session_date,session_type,route,clinician\n1,2025-01-05,ketamine,iv,"Dr A\nand B"\n'
      b'2,2025-01-06,ketamine,im,"Dr C\n3,2025-01-07,ketamine,im,x\n'), 4),
])
def test_an_unterminated_quote_names_the_line_that_opened_it(data, line):
    with pytest.raises(UnusableExport) as err:
        read_export(data, kind="sessions")
    assert str(err.value) == _unclosed(line)


def test_a_quote_that_swallows_a_million_characters_names_its_line():
    body = b"".join(b"x" * 90_000 + b"\n" for _ in range(12))
    data = (b"patient_id,session_date,session_type,route\n1,2025-01-05,ketamine,iv\n2,2025-01-06,ketamine,\"im\n"
            + body + b'"\n3,2025-01-07,ketamine,im\n')
    with pytest.raises(UnusableExport) as err:
        read_export(data, kind="sessions")
    assert str(err.value) == _unclosed(3).replace(
        "never closed,", "never closed (its value runs on for more than 1,000,000 characters),")


# 4. long values are cut ---------------------------------------------------------------------------------------

def test_a_five_thousand_character_value_is_cut_in_its_issue_and_in_reasons_quoting_it():
    long = "y" * 5000
    sessions = ("patient_id,session_date,session_type,route,program\n"
                f"00123,2025-01-03,ketamine,{long},{long}\n"
                "00123,2025-01-05,ketamine,iv,short\n").encode()
    data = load_exports(sessions, FOLLOWUPS, upload_date=UPLOAD)
    issues = data.issues[data.issues["file"] == "sessions.csv"].set_index("line")
    assert issues.loc[2, "column"] == "route" and issues.loc[2, "value"] == "y" * 60 + "\u2026"
    assert issues.loc[3, "column"] == "program" and issues.loc[3, "value"] == "short"
    assert issues.loc[3, "reason"] == ("program differs for the same patient (" + "y" * 60 + "\u2026 on line 2); "
                                       "make the patient's rows agree")
    assert data.issues["value"].str.len().max() <= 61 and data.issues["reason"].str.len().max() < 400
    _balanced(data)


def test_a_value_map_conflict_quotes_a_long_value_cut():
    mapping = Mapping.from_choices(
        "sessions", {"patient_id": "pid", "session_date": "day", "session_type": "type", "route": "route"},
        ["pid", "day", "type", "route"],
        values={"session_type": {"IV Ketamine": {"session_type": "ketamine", "route": "iv"}}})
    raw = read_export(f"pid,day,type,route\n1,2025-01-05,IV Ketamine,{'z' * 5000}\n".encode(), kind="sessions",
                      preset=mapping.to_preset())
    cut = "z" * 60 + "\u2026"
    assert raw.issues == [{"file": "sessions.csv", "line": 2, "column": "route", "value": cut,
                           "reason": f"'IV Ketamine' in session_type means route iv, but route says '{cut}'; "
                                     "correct one of the two"}]
    assert raw.rows == 1 and raw.frame.empty


# 5. a NUL byte in a patient id --------------------------------------------------------------------------------

@pytest.mark.parametrize("ending", [b"\n", b"\r\n"])  # the common (Arrow) path and the general path
def test_a_nul_byte_in_a_patient_id_sets_the_row_aside_with_a_sentence(ending):
    good = [b"%06d,2025-01-05,ketamine,iv" % i for i in range(3000)]  # past the 64 KiB sniffed for binary files
    lines = [b"patient_id,session_date,session_type,route", *good, b"00\x0012,2025-01-06,ketamine,iv"]
    sessions = ending.join(lines) + ending
    assert len(sessions) > 65536
    data = load_exports(sessions, b"patient_id,assessment_date\n000001,2025-02-01\n", upload_date=UPLOAD)
    assert data.issues[["file", "line", "column", "value", "reason"]].values.tolist() == [
        ["sessions.csv", 3002, "patient_id", "00\u240012",
         ("contains a NUL character (a zero byte, shown as \u2400), which no export value holds: the file is "
          "damaged on this line. Export the file again, or delete the character in a text editor, then upload "
          "again")]]
    assert data.files["sessions"].rows == 3001 and data.files["sessions"].accepted == 3000
    assert not data.sessions["patient_id"].str.contains("\x00", regex=False).any()
    _balanced(data)


# 6. identifier headers ----------------------------------------------------------------------------------------

IDENTIFIER_HEADERS = ["FNAME", "LNAME", "Name (Last, First)", "Patient", "Email1", "Tel", "Chart #", "Account Number",
                      "Birth Dt", "Soc Sec No", "Addr1", "Guardian", "Emergency Contact", "Notes", "dateOfBirth",
                      "PatientName", "Guardian Name", "Cell Phone", "Zip Code"]


@pytest.mark.parametrize("header", IDENTIFIER_HEADERS)
def test_common_identifier_headers_are_dropped_on_read(header):
    sessions = (f'patient_id,session_date,session_type,route,"{header}"\n'
                '00123,2025-01-05,ketamine,iv,"Doe, Jane 555-0100"\n').encode()
    raw = read_export(sessions, kind="sessions")
    assert raw.dropped_columns == (header,) and raw.extra_columns == ()
    assert "Doe, Jane 555-0100" not in raw.frame.to_numpy().ravel().tolist()


def _contract_headers() -> set[str]:
    names = {c for cols in COLUMNS.values() for c in cols}
    for path in PRESET_DIR.glob("*.toml"):
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        for kind in COLUMNS:
            section = data.get(kind, {})
            names.update(section.get("columns", {}))
            for spec in section.get("long", {}).values():
                names.update([spec] if isinstance(spec, str) else spec)
        for fields in data.get("fields", {}).values():  # _synonyms.toml: the spellings the mapping step offers
            for spellings in fields.values():
                names.update(s for s in spellings if s != "patient")  # a bare "Patient" holds the name
    for path in (ROOT / "sample_data").rglob("*.csv"):
        with path.open(encoding="utf-8", newline="") as handle:
            names.update(next(csv.reader(handle)))
    return names


def test_no_contract_preset_or_sample_header_looks_like_an_identifier():
    headers = _contract_headers()
    assert {"patient_id", "primary_substance", "site", "clinician", "program", "Patient Number", "Sex at Birth",
            "subjectId", "Client ID"} <= headers
    assert sorted(h for h in headers if looks_like_identifier(h)) == []
    assert not any(looks_like_identifier(h) for h in ("Patient ID", "PatientID", "Patient #", "patient no"))


def test_sample_exports_load_unchanged_with_nothing_dropped():
    folder = ROOT / "sample_data"
    data = load_exports(folder / "sessions.csv", folder / "followups.csv", folder / "patients.csv",
                        upload_date=UPLOAD)
    assert all(report.dropped_columns == () for report in data.files.values())
    for preset_dir in sorted(p for p in (folder / "presets").iterdir() if p.is_dir()):
        for kind in ("sessions", "followups", "patients"):
            raw = read_export(preset_dir / f"{kind}.csv", kind=kind, preset=preset_dir.name)
            assert raw.dropped_columns == (), (preset_dir.name, kind)


def test_identifier_headers_are_never_suggested_by_the_mapping_step():
    sugg = mapping_suggestions(["Patient", "Chart #", "Visit Date", "Visit Type", "Notes"], "sessions")
    assert "patient_id" not in sugg.chosen and sugg.identifiers == ("Patient", "Chart #", "Notes")
    with pytest.raises(UnusableExport, match="'Chart #' looks like a direct identifier"):
        Mapping.from_choices("sessions", {"patient_id": "Chart #", "session_date": "Visit Date",
                                          "session_type": "Visit Type"}, ["Chart #", "Visit Date", "Visit Type"])


def test_the_mapping_preview_hides_the_values_of_a_kept_identifier_column():
    from pages._mapping import _hide_values

    table = pd.DataFrame({"line": [2, 3], "patient_id": ["M-555-01", None], "route": ["iv", "im"]})
    shown = _hide_values(table, {"patient_id"})
    assert shown["patient_id"].tolist() == [HIDDEN_VALUE, ""] and shown["route"].tolist() == ["iv", "im"]
    assert table["patient_id"].iloc[0] == "M-555-01"  # the preview's own table is left as it was
