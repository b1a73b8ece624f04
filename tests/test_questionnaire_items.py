"""Questionnaire items summed into totals (#18): PHQ-9 items 1-9 and GAD-7 items 1-7, each 0-3; one missing item is
prorated (sum x 9/8 or x 7/6, rounded half up, as the PHQ scoring guidance does), two or more leave the total
missing and are counted; a 0-100 craving scale is rescaled to 0-10 and the conversion stated."""

from __future__ import annotations

import tomllib
from datetime import date

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from schemas.mapping import Mapping, detect_items, mapping_suggestions
from schemas.presets import loads_mapping
from schemas.reader import read_table
from schemas.validate import load_exports

SESSIONS = b"patient_id,session_date,session_type,route\nP1,2025-01-01,ketamine,iv\nP2,2025-01-01,ketamine,iv\n"
PHQ = [f"PHQ-9 Item {i}" for i in range(1, 10)]
GAD = [f"gad7_q{i}" for i in range(1, 8)]
FOLLOWUPS = ("Record ID,Survey Date," + ",".join(PHQ + GAD) + ",Craving (0-100)\n"
             # all answered: 9 and 7
             "P1,2025-02-01,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,40\n"
             # PHQ item 8 missing: 8 x 3 = 24 -> 27; GAD item 2 missing: 6 x 2 = 12 -> 14
             "P1,2025-03-01,3,3,3,3,3,3,3,,3,2,,2,2,2,2,2,55\n"
             # two PHQ items missing: no total; GAD 1+0+...: 5 x 1 + 2 x 0 = 5
             "P2,2025-02-01,1,,1,1,1,1,1,1,,1,1,1,1,1,0,0,\n"
             # an item outside 0-3: set aside, named
             "P2,2025-03-01,1,5,1,1,1,1,1,1,1,0,0,0,0,0,0,0,10\n"
             # PHQ 9 x 2 = 18 minus item 9 at 1: 17; one missing of 7 at 1 each, 6 -> 7
             "P2,2025-04-01,2,2,2,2,2,2,2,2,1,1,1,1,1,1,1,,100\n").encode()


def test_item_columns_are_found_in_the_usual_spellings_and_never_taken_for_the_total():
    assert detect_items(["id", *PHQ, *GAD]) == {"phq9": tuple(PHQ), "gad7": tuple(GAD)}
    assert detect_items([f"phq9_{i}" for i in range(1, 10)])["phq9"][0] == "phq9_1"
    assert detect_items([f"PHQ9 Q{i}" for i in range(1, 9)]) == {}  # item 9 missing: not a full set
    sugg = mapping_suggestions(["Record ID", "Survey Date", *PHQ, *GAD], "followups")
    assert "phq9" not in sugg.chosen and "gad7" not in sugg.chosen and sugg.items["phq9"] == tuple(PHQ)


def _load():
    mapping = Mapping.from_choices(
        "followups", {"patient_id": "Record ID", "assessment_date": "Survey Date", "craving": "Craving (0-100)"},
        read_table(FOLLOWUPS).headers, items={"phq9": PHQ, "gad7": GAD}, scale={"craving": 0.1})
    text = mapping.to_toml()
    assert tomllib.loads(text)["followups"]["items"] == {"phq9": PHQ, "gad7": GAD}
    return load_exports(SESSIONS, FOLLOWUPS, preset=loads_mapping(text), upload_date=date(2026, 1, 1))


def test_items_are_summed_with_one_missing_item_prorated_and_two_missing_left_out():
    data = _load()
    f = data.followups.sort_values(["patient_id", "assessment_date"])
    assert f["phq9"].tolist()[:2] == [9.0, 27.0] and f["phq9"].isna().tolist() == [False, False, True, False]
    assert f["phq9"].tolist()[3] == 17.0
    assert f["gad7"].tolist() == [7.0, 14.0, 5.0, 7.0]
    assert f["craving"].tolist()[:2] == [4.0, 5.5] and f["craving"].tolist()[3] == 10.0
    report = data.files["followups"]
    assert (report.rows, report.accepted, report.quarantined) == (5, 4, 1)
    assert data.issues[["line", "column", "value"]].values.tolist() == [[5, "PHQ-9 Item 2", "5"]]
    phq = next(n for n in data.notes if "phq9 totals computed" in n)
    assert "for 3 row(s)" in phq and "1 with one item missing prorated: sum x 9/8" in phq
    assert "1 row(s) with two or more items missing have no phq9 total" in phq
    gad = next(n for n in data.notes if "gad7 totals computed" in n)
    assert "for 5 row(s)" in gad and "2 with one item missing prorated: sum x 7/6" in gad
    assert any("craving read x 0.1" in n for n in data.notes)


def test_a_total_written_in_the_file_is_kept_and_items_fill_only_empty_totals():
    followups = ("id,date,phq9," + ",".join(f"phq9_q{i}" for i in range(1, 10)) + "\n"
                 "P1,2025-02-01,20,1,1,1,1,1,1,1,1,1\nP1,2025-03-01,,2,2,2,2,2,2,2,2,2\n").encode()
    mapping = Mapping.from_choices("followups", {"patient_id": "id", "assessment_date": "date", "phq9": "phq9"},
                                   read_table(followups).headers,
                                   items={"phq9": [f"phq9_q{i}" for i in range(1, 10)]})
    data = load_exports(SESSIONS, followups, preset=mapping.to_preset(), upload_date=date(2026, 1, 1))
    assert data.followups["phq9"].tolist() == [20.0, 18.0]


@pytest.mark.parametrize("items", [["a"] * 8, "phq9_q1"])
def test_an_item_list_of_the_wrong_length_is_refused_with_a_sentence(items):
    text = ('name = "x"\n[followups.columns]\n"id" = "patient_id"\n"d" = "assessment_date"\n[followups.items]\n'
            f"phq9 = {items!r}\n".replace("'", '"'))
    with pytest.raises(Exception, match="list the 9 item columns in order|must be a list"):
        loads_mapping(text)


def _step(data: bytes) -> None:
    import streamlit as st

    from pages._mapping import mapping_step

    preset = mapping_step("followups", data, "survey.csv")
    st.session_state["toml"] = None if preset is None else preset.to_toml()


def test_mapping_step_offers_to_sum_the_items_and_saves_the_choice():
    at = AppTest.from_function(_step, args=(FOLLOWUPS,), default_timeout=240)
    at.run()
    assert not at.exception
    boxes = [c for c in at.checkbox if c.label.startswith("Sum the")]
    assert [b.value for b in boxes] == [True, True]
    assert tomllib.loads(at.session_state["toml"])["followups"]["items"]["phq9"] == PHQ
    next(b for b in boxes if "gad7" in b.label).uncheck().run()
    assert "gad7" not in tomllib.loads(at.session_state["toml"])["followups"]["items"]


PHQ_LOINC = ["44250-9", "44255-8", "44259-0", "44254-1", "44251-7", "44258-2", "44252-5", "44253-3", "44260-8"]


def test_item_rows_of_a_long_file_are_summed_into_the_total_with_the_same_rule():
    rows = ["client_id,date,code,value"]
    rows += [f"P1,2025-02-01,{c},2" for c in PHQ_LOINC]  # 18
    rows += [f"P1,2025-03-01,{c},1" for c in PHQ_LOINC[:8]]  # item 9 missing: 8 -> 9
    rows += [f"P2,2025-02-01,PHQ-9 Item {i},1" for i in range(1, 8)]  # two missing: no total
    rows += ["P2,2025-02-01,70274-6,6", "P2,2025-03-01,PHQ-9 Item 1,4", "P2,2025-03-01,44261-6,12"]
    data_bytes = ("\n".join(rows) + "\n").encode()
    table = read_table(data_bytes)
    sugg = mapping_suggestions(table.headers, "followups", codes_in_file=table.frame["code"].unique().tolist())
    codes = {c: m for c, (m, _) in sugg.codes.items()}
    assert codes["44250-9"] == "phq9_item1" and codes["44260-8"] == "phq9_item9" and codes["PHQ-9 Item 3"] == \
        "phq9_item3" and codes["44261-6"] == "phq9"
    mapping = Mapping.from_choices("followups", {"patient_id": "client_id", "assessment_date": "date"}, table.headers,
                                   code_column="code", value_columns=["value"], codes=codes)
    data = load_exports(SESSIONS, data_bytes, preset=mapping.to_preset(), upload_date=date(2026, 1, 1))
    f = data.followups.sort_values(["patient_id", "assessment_date"]).reset_index(drop=True)
    assert f["phq9"].tolist()[:2] == [18.0, 9.0] and pd.isna(f["phq9"].iloc[2]) and f["gad7"].iloc[2] == 6.0
    # line 27: an item scored 4 is set aside with its line; the day's written total (12) stays
    assert data.issues[["line", "column", "value"]].values.tolist() == [[27, "phq9_item1", "4"]]
    assert f["phq9"].iloc[3] == 12.0
    note = next(n for n in data.notes if "phq9 totals computed from items coded one per row" in n)
    assert "for 2 row(s)" in note and "1 with one item missing prorated" in note
    assert "1 row(s) with two or more items missing have no phq9 total" in note
