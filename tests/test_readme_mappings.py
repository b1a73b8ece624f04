"""The README's worked mappings are real: they parse, and they load the exports they describe."""

from __future__ import annotations

import re
from pathlib import Path

from schemas.presets import loads_mapping
from schemas.validate import load_exports

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def _blocks() -> list[str]:
    at = README.index("### Worked mapping: an EHR appointment report")
    return re.findall(r"```toml\n(.*?)```", README[at:], re.S)[:2]


def test_the_appointment_report_mapping_loads_an_appointment_report():
    # the mapping's own date format applies (month first), as on the Data page and with `--mapping` on the CLI
    mapping = loads_mapping(_blocks()[0], source="README")
    sessions = ("Pt ID,Appt Date/Time,Appt Type,Appt Status,Dose (mg),Weight (lb),Side Effects,Location,Provider\n"
                "A1,03/09/2025 03:00 PM,Ketamine Infusion,Checked Out,50,176,nausea,North,C1\n"
                "A1,03/16/2025 10:00 AM,Spravato 84mg,Checked Out,,176,,North,C1\n"
                "A1,03/23/2025 10:00 AM,Massage,Checked Out,,,,North,C1\n").encode()
    followups = b"patient_id,assessment_date,phq9\nA1,2025-04-20,9\n"
    data = load_exports(sessions, followups, preset=mapping, names={"sessions": "appointments.csv"})
    s = data.sessions
    assert data.files["sessions"].accepted == 2 and data.files["sessions"].quarantined == 1  # Massage: no meaning
    assert s["route"].astype(str).tolist() == ["iv", "intranasal"]
    assert s["weight_kg"].round(1).tolist() == [79.8, 79.8]  # 176 lb
    assert s["dose_mg"].tolist()[1] == 84.0
    assert s["session_date"].dt.strftime("%Y-%m-%d").tolist() == ["2025-03-09", "2025-03-16"]


def test_the_questionnaire_item_mapping_sums_items_and_rescales_craving():
    mapping = loads_mapping(_blocks()[1], source="README")
    items = ",".join(f"phq9_{i}" for i in range(1, 10)) + "," + ",".join(f"gad7_{i}" for i in range(1, 8))
    followups = (f"record_id,date_assessed,{items},craving_vas_100,phq9_complete\n"
                 "R1,20/04/2025," + ",".join(["1"] * 9) + "," + ",".join(["2"] * 7) + ",70,2\n"
                 "R1,20/05/2025," + ",".join(["1"] * 8 + [""]) + "," + ",".join(["0"] * 7) + ",30,2\n").encode()
    sessions = b"patient_id,session_date,session_type,route\nR1,2025-04-01,ketamine,iv\n"
    data = load_exports(sessions, followups, preset=mapping)
    f = data.followups.sort_values("assessment_date")
    assert f["phq9"].tolist() == [9.0, 9.0]  # the second: 8 items of 1, one missing, prorated × 9/8
    assert f["gad7"].tolist() == [14.0, 0.0] and f["craving"].tolist() == [7.0, 3.0]


def test_the_command_line_uses_a_saved_mappings_date_format(tmp_path, capsys):
    from analytics.cli import main

    (tmp_path / "m.toml").write_text(_blocks()[0], encoding="utf-8")
    (tmp_path / "s.csv").write_text("Pt ID,Appt Date/Time,Appt Type,Appt Status\n"
                                    "A1,03/09/2025 03:00 PM,Ketamine Infusion,Checked Out\n", encoding="utf-8")
    (tmp_path / "f.csv").write_text("patient_id,assessment_date,phq9\nA1,2025-04-20,9\n", encoding="utf-8")
    args = ["validate", "--sessions", str(tmp_path / "s.csv"), "--followups", str(tmp_path / "f.csv"),
            "--mapping", str(tmp_path / "m.toml"), "--json"]
    assert main(args) == 0  # month-first from the mapping; every row accepted
    assert main([*args, "--dates", "iso"]) == 1  # an explicit --dates wins: the date is then unreadable
    capsys.readouterr()
