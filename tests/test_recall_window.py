"""Recall windows set per file in the mapping (#18): with a 28-day window, 29 days abstinent is an error, 28 is never
a return to use, 27 is one (when the whole window lies after day 0)."""

from __future__ import annotations

import tomllib
from datetime import date

from streamlit.testing.v1 import AppTest

from analytics.outcomes.cohort import build_cohort
from schemas.mapping import Mapping
from schemas.reader import read_table
from schemas.validate import load_exports

SESSIONS = (b"patient_id,session_date,session_type,route\n"
            b"P1,2025-01-01,ketamine,iv\nP2,2025-01-01,ketamine,iv\nP3,2025-01-01,ketamine,iv\n")
FOLLOWUPS = (b"Client,Date,Abstinent days\n"
             b"P1,2025-02-15,28\nP2,2025-02-15,27\nP3,2025-02-15,29\nP3,2025-03-15,28\n")


def _mapping(window: int | None) -> Mapping:
    return Mapping.from_choices("followups", {"patient_id": "Client", "assessment_date": "Date",
                                              "days_abstinent": "Abstinent days"},
                                read_table(FOLLOWUPS).headers, window_days=window)


def test_a_28_day_window_set_for_the_file_makes_28_days_abstinent_no_return_and_29_an_error():
    assert tomllib.loads(_mapping(28).to_toml())["followups"]["window_days"] == 28
    data = load_exports(SESSIONS, FOLLOWUPS, preset=_mapping(28).to_preset(), upload_date=date(2026, 1, 1))
    assert data.issues[["line", "column", "value"]].values.tolist() == [[4, "days_abstinent", "29"]]
    assert "window_days 28" in data.issues["reason"].iloc[0]
    assert data.followups["window_days"].tolist() == [28, 28, 28]
    cohort = build_cohort(data)
    events = cohort.patients.set_index("patient_id")["relapsed"].to_dict()
    assert events == {"P1": False, "P2": True, "P3": False}


def test_without_the_window_the_contract_default_of_30_days_reads_28_as_a_return_to_use():
    data = load_exports(SESSIONS, FOLLOWUPS, preset=_mapping(None).to_preset(), upload_date=date(2026, 1, 1))
    assert len(data.issues) == 0
    assert build_cohort(data).patients.set_index("patient_id")["relapsed"].to_dict() == {
        "P1": True, "P2": True, "P3": True}


def _step(data: bytes) -> None:
    import streamlit as st

    from pages._mapping import mapping_step

    preset = mapping_step("followups", data, "followups.csv")
    st.session_state["toml"] = None if preset is None else preset.to_toml()


def test_the_recall_window_is_set_on_the_data_page_mapping_step():
    at = AppTest.from_function(_step, args=(FOLLOWUPS,), default_timeout=240)
    at.run()
    assert "window_days" not in tomllib.loads(at.session_state["toml"])["followups"]  # 30: the contract default
    at.number_input(key=next(n.key for n in at.number_input if "recall window" in n.label)).set_value(28).run()
    assert not at.exception
    assert tomllib.loads(at.session_state["toml"])["followups"]["window_days"] == 28
