"""Round trip for every preset: canonical sample clinic → the preset's layout → read back → same data, same cohort."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from analytics.outcomes.cohort import build_cohort
from analytics.sample import generate_clinic
from schemas.mapping import to_preset_layout
from schemas.presets import available_presets, load_preset
from schemas.validate import load_exports

UPLOAD = date(2026, 11, 25)
SAMPLES = Path(__file__).resolve().parents[1] / "sample_data" / "presets"
KEYS = {"sessions": ["patient_id", "session_date", "session_type", "route"],
        "followups": ["patient_id", "assessment_date"]}
COHORT_COLUMNS = ["relapsed", "days_to_event", "baseline_phq9", "index_date", "index_route", "n_followups"]


@pytest.fixture(scope="module")
def clinic() -> dict[str, pd.DataFrame]:
    return generate_clinic(120, seed=10)


@pytest.fixture(scope="module")
def reference(clinic):
    files = {k: v.to_csv(index=False).encode() for k, v in clinic.items()}
    data = load_exports(files["sessions"], files["followups"], files["patients"], upload_date=UPLOAD)
    assert data.issues.empty
    return data, build_cohort(data)


def _sorted(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return frame.drop(columns=["line"]).sort_values(keys, kind="stable").reset_index(drop=True)


@pytest.mark.parametrize("preset", sorted(available_presets()))
def test_preset_layout_reads_back_to_identical_accepted_data_and_cohort(preset, clinic, reference):
    ref, ref_cohort = reference
    files = to_preset_layout(clinic, preset)
    data = load_exports(files["sessions"], files["followups"], files["patients"], preset=preset, upload_date=UPLOAD)
    assert data.issues.empty, data.issues.head().to_string()
    for kind, keys in KEYS.items():
        pd.testing.assert_frame_equal(_sorted(getattr(data, kind), keys), _sorted(getattr(ref, kind), keys))
    pd.testing.assert_frame_equal(data.patients, ref.patients)
    cohort = build_cohort(data)
    pd.testing.assert_frame_equal(cohort.patients[COHORT_COLUMNS], ref_cohort.patients[COHORT_COLUMNS])
    assert cohort.patients["relapsed"].sum() == ref_cohort.patients["relapsed"].sum() > 10
    for kind, report in data.files.items():
        assert report.accepted + report.quarantined == report.rows and report.quarantined == 0
    followups = data.files["followups"]
    if load_preset(preset).long_layout("followups") is not None:
        long_rows = files["followups"].decode().count("\n") - 1
        assert followups.long_format and followups.rows == long_rows > 3 * len(ref.followups)
        assert followups.output_rows == len(ref.followups) and followups.merged == long_rows - len(ref.followups)
    else:
        assert followups.rows == len(ref.followups) and followups.merged == 0


def test_layouts_use_the_presets_own_names_and_values(clinic):
    enc = to_preset_layout(clinic, "encounter-export")
    sessions = pd.read_csv(pd.io.common.BytesIO(enc["sessions"]), dtype=str, keep_default_na=False)
    assert list(sessions.columns[:4]) == ["Client ID", "Appointment Date", "Appointment Type", "Route"]
    ketamine = clinic["sessions"]["session_type"].eq("ketamine").to_numpy()
    nasal = clinic["sessions"]["route"].eq("intranasal").fillna(False).to_numpy()
    assert set(sessions.loc[ketamine & nasal, "Appointment Type"]) == {"Spravato"}
    assert set(sessions.loc[ketamine, "Route"]) == {""}  # the appointment type carries the route
    assert set(sessions.loc[~ketamine, "Appointment Type"]) == {"Intake assessment", "Psychotherapy", "Integration"}
    mirah = pd.read_csv(pd.io.common.BytesIO(to_preset_layout(clinic, "mirah-observations")["followups"]),
                        dtype=str, keep_default_na=False)
    assert list(mirah.columns) == ["identifiers", "subjectId", "effectiveDate", "code", "valueInt", "valueFloat",
                                   "valueString"]
    phq = mirah[mirah["code"] == "44261-6"]
    assert len(phq) == clinic["followups"]["phq9"].notna().sum() and (phq["valueInt"] != "").all()
    assert set(mirah.loc[mirah["code"] == "any_use", "valueString"]) == {"yes", "no"}


@pytest.mark.parametrize("preset", sorted(p for p in available_presets() if p != "canonical"))
def test_bundled_sample_files_of_each_preset_read_cleanly(preset):
    folder = SAMPLES / preset
    data = load_exports(folder / "sessions.csv", folder / "followups.csv", folder / "patients.csv", preset=preset,
                        upload_date=UPLOAD)
    assert data.issues.empty, data.issues.head().to_string()
    assert data.n_patients > 150
