"""Safety panel on hand-built sessions with known answers; intervals against R."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analytics.errors import InsufficientData
from analytics.outcomes import safety
from analytics.outcomes.cohort import build_cohort
from analytics.privacy.suppression import render_notes
from schemas.frames import ValidatedExports

REF = Path(__file__).parent / "reference" / "qi"
DAY0 = pd.Timestamp("2025-03-03")


def day(d: int) -> str:
    return (DAY0 + pd.Timedelta(days=d)).strftime("%Y-%m-%d")


def ket(pid: str, d: int, route: str = "iv", **extra: object) -> dict:
    return {"patient_id": pid, "session_date": day(d), "session_type": "ketamine", "route": route, **extra}


def cohort_of(sessions: list[dict]):
    followups = pd.DataFrame(columns=["patient_id", "assessment_date"])
    return build_cohort(ValidatedExports.from_frames(pd.DataFrame(sessions), followups))


# ---------------------------------------------------------------------------------------------------------------
# Intervals against R


@pytest.mark.parametrize("conf_level, low, high", [(0.95, "low95", "high95"), (0.90, "low90", "high90")])
def test_wilson_interval_matches_r_prop_test(conf_level, low, high):
    ref = pd.read_csv(REF / "wilson.csv")
    lo, hi = safety.wilson_ci(ref["x"], ref["n"], conf_level)
    np.testing.assert_allclose(lo, ref[low], rtol=0, atol=1e-12)
    np.testing.assert_allclose(hi, ref[high], rtol=0, atol=1e-12)


def test_exact_poisson_interval_matches_r_poisson_test():
    ref = pd.read_csv(REF / "poisson.csv")
    lo, hi = safety.poisson_exact_ci(ref["x"], ref["t"])
    np.testing.assert_allclose(lo, ref["low"], rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(hi, ref["high"], rtol=1e-10, atol=1e-15)


def test_intervals_are_missing_without_a_denominator():
    lo, hi = safety.wilson_ci([0], [0])
    assert np.isnan(lo[0]) and np.isnan(hi[0])
    lo, hi = safety.poisson_exact_ci([0], [0])
    assert np.isnan(lo[0]) and np.isnan(hi[0])


# ---------------------------------------------------------------------------------------------------------------
# Adverse events


def _ae_clinic():
    return cohort_of([
        ket("p1", 0, adverse_events="nausea;vomiting"), ket("p1", 7), ket("p1", 40, adverse_events="nausea"),
        ket("p2", 0, "im", adverse_events="dizziness;dizziness"), ket("p2", 3, "im", adverse_events="nausea"),
        ket("p3", 0), ket("p3", 2, adverse_events="Sedation ; other"),
        ket("p4", 60, "im"),
    ])


def test_adverse_events_per_session_and_per_patient_by_type_and_route():
    rates = safety.adverse_event_rates(_ae_clinic())
    t = rates.table.set_index(["unit_of_analysis", "event_type", "route"])
    # sessions: iv 5 (p1 ×3, p3 ×2), im 3 (p2 ×2, p4)
    assert t.loc[("session", "nausea", "iv"), ["numerator", "denominator"]].tolist() == [2, 5]
    assert t.loc[("session", "nausea", "im"), ["numerator", "denominator"]].tolist() == [1, 3]
    assert t.loc[("session", "nausea", "all"), ["numerator", "denominator"]].tolist() == [3, 8]
    assert t.loc[("session", "dizziness", "im"), "numerator"] == 1  # listed twice in one session
    assert t.loc[("session", "sedation", "iv"), "numerator"] == 1  # case and spaces normalised
    assert t.loc[("session", "any", "all"), ["numerator", "denominator"]].tolist() == [5, 8]
    # patients: iv p1, p3; im p2, p4
    assert t.loc[("patient", "nausea", "iv"), ["numerator", "denominator"]].tolist() == [1, 2]
    assert t.loc[("patient", "nausea", "all"), ["numerator", "denominator"]].tolist() == [2, 4]
    assert t.loc[("patient", "any", "all"), ["numerator", "denominator"]].tolist() == [3, 4]
    lo, hi = safety.wilson_ci(3, 8)
    assert t.loc[("session", "nausea", "all"), ["ci_low", "ci_high"]].tolist() == pytest.approx([lo[0], hi[0]])
    ev = rates.events.set_index("route")
    # all events: nausea, vomiting, nausea | dizziness, nausea | sedation, other = 7 events in 8 sessions
    assert ev.loc["all", ["n_events", "n_sessions"]].tolist() == [7, 8]
    assert ev.loc["all", "per_100_sessions"] == pytest.approx(87.5)
    plo, phi = safety.poisson_exact_ci(7, 8)
    assert ev.loc["all", ["ci_low", "ci_high"]].tolist() == pytest.approx([100 * plo[0], 100 * phi[0]])


def test_per_patient_window_counts_early_sessions_of_patients_followed_that_long():
    rates = safety.adverse_event_rates(_ae_clinic(), patient_window_days=28, as_of=day(70))
    t = rates.table.set_index(["unit_of_analysis", "event_type", "route"])
    # p1's day-40 nausea is outside days 0–28; p4 started on day 60 and is not followed 28 days by day 70
    assert t.loc[("patient", "nausea", "all"), ["numerator", "denominator"]].tolist() == [2, 3]
    assert t.loc[("session", "nausea", "all"), "numerator"] == 3  # per session unchanged
    assert any("1 more recent starters left out" in n for n in render_notes(rates.notes, enabled=False))


def test_adverse_event_rates_need_a_ketamine_session_in_the_period():
    with pytest.raises(InsufficientData, match="at least 1 ketamine session"):
        safety.adverse_event_rates(_ae_clinic(), period=("2020-01-01", "2020-12-31"))


# ---------------------------------------------------------------------------------------------------------------
# Blood pressure and heart rate


def _vitals_clinic():
    rows = [  # (systolic, diastolic, heart rate)
        ("a", 170, 80, 99), ("a", 164, 99, 100), ("b", 150, 100, None), ("b", None, 105, 80),
        ("c", 150, None, 120), ("c", 120, 70, 70), ("d", None, None, None)]
    return cohort_of([ket(pid, i, bp_systolic_max=s, bp_diastolic_max=dd, heart_rate_max=h)
                      for i, (pid, s, dd, h) in enumerate(rows)])


def test_raised_blood_pressure_and_heart_rate_at_the_default_thresholds():
    t = safety.vital_sign_elevations(_vitals_clinic()).table.set_index(["unit_of_analysis", "measure", "route"])
    # BP: 170/80 yes, 164/99 no, 150/100 yes (diastolic edge), –/105 yes, 150/– unknown, 120/70 no, –/– unknown
    assert t.loc[("session", "bp_raised", "all"), ["numerator", "denominator", "n_missing"]].tolist() == [3, 5, 2]
    # HR: 99 no, 100 yes (edge), – , 80 no, 120 yes, 70 no, –
    assert t.loc[("session", "hr_raised", "all"), ["numerator", "denominator", "n_missing"]].tolist() == [2, 5, 2]
    # either: decided when one reading is raised or all three are recorded and below
    assert t.loc[("session", "bp_or_hr_raised", "all"), ["numerator", "denominator"]].tolist() == [5, 6]
    # patients: a raised (both), b raised BP, c raised HR but BP of c: 150/– unknown, 120/70 no → not raised
    assert t.loc[("patient", "bp_raised", "all"), ["numerator", "denominator", "n_missing"]].tolist() == [2, 3, 1]
    assert t.loc[("patient", "hr_raised", "all"), ["numerator", "denominator"]].tolist() == [2, 3]


def test_thresholds_are_settings():
    low = safety.VitalThresholds(systolic_mmhg=140, diastolic_mmhg=90, heart_rate_bpm=110)
    t = safety.vital_sign_elevations(_vitals_clinic(), thresholds=low).table.set_index(
        ["unit_of_analysis", "measure", "route"])
    # 150/– now raised; 164/99 raised; 120/70 not
    assert t.loc[("session", "bp_raised", "all"), ["numerator", "denominator"]].tolist() == [5, 6]
    assert t.loc[("session", "hr_raised", "all"), ["numerator", "denominator"]].tolist() == [1, 5]
    assert "≥ 140 mmHg" in low.describe()


def test_rise_rule_is_refused_without_pre_dose_readings():
    with pytest.raises(InsufficientData, match="bp_systolic_pre"):
        safety.vital_sign_elevations(_vitals_clinic(), thresholds=safety.VitalThresholds(rule="rise"))


def test_monthly_trend_counts_sessions_per_month():
    c = cohort_of([ket("a", 0, adverse_events="nausea;vomiting", bp_systolic_max=170, bp_diastolic_max=90),
                   ket("a", 10, bp_systolic_max=130, bp_diastolic_max=80),
                   ket("b", 60, adverse_events="headache", heart_rate_max=130)])
    t = safety.safety_trend(c).table.set_index(["month", "metric"])
    mar, apr, may = (pd.Timestamp(f"2025-0{m}-01") for m in (3, 4, 5))
    assert t.loc[(mar, "ae_sessions"), ["numerator", "denominator"]].tolist() == [1, 2]
    assert t.loc[(mar, "ae_per_session"), ["numerator", "denominator"]].tolist() == [2, 2]
    assert t.loc[(mar, "bp_raised"), ["numerator", "denominator"]].tolist() == [1, 2]
    assert t.loc[(apr, "ae_sessions"), "denominator"] == 0 and np.isnan(t.loc[(apr, "ae_sessions"), "estimate"])
    assert t.loc[(may, "hr_raised"), ["numerator", "denominator"]].tolist() == [1, 1]
    assert t.loc[(may, "bp_raised"), "denominator"] == 0


# ---------------------------------------------------------------------------------------------------------------
# Published figures


def _published_clinic():
    sessions = []
    for i in range(10):  # 10 IV patients, first 4 weeks observed; 4 with dissociation in weeks 1–4
        sessions += [ket(f"iv{i}", 0, adverse_events="dissociation" if i < 4 else None,
                         bp_systolic_max=170 if i < 3 else 140, bp_diastolic_max=80),
                     ket(f"iv{i}", 35, adverse_events="dissociation" if i == 9 else None)]
    return cohort_of(sessions)


def test_published_figures_are_omitted_with_a_note_without_the_registry(tmp_path):
    comp = safety.published_comparison(_published_clinic(), registry_path=tmp_path / "missing.json")
    assert not comp.registry_found and comp.table["published"].isna().all()
    assert any("Published figures omitted" in n for n in comp.notes)
    t = comp.table.set_index(["published_id", "metric"])
    dis = t.loc[("SPR-AE", "patients with dissociation in the first 4 weeks")]
    assert (dis["unit_of_analysis"], dis["numerator"], dis["denominator"]) == ("patient", 4, 10)
    rod = t.loc[("ROD20", "IV patients with BP ≥ 165/100 in any session")]
    assert (rod["numerator"], rod["denominator"], rod["route"]) == (3, 10, "iv")
    rod_dis = t.loc[("ROD20", "IV patients with dissociation in any session")]
    assert rod_dis["numerator"] == 5  # whole course: patient 9's day-35 dissociation counts


def test_published_values_come_from_the_registry_when_verified(tmp_path):
    registry = {"benchmarks": [
        {"id": "SPR-AE", "metric": "Dissociation (adverse reaction, per patient)", "arm": "esketamine + oral AD",
         "value": 0.41, "verified": "yes", "citation": "SPRAVATO label"},
        {"id": "SPR-AE", "metric": "Dissociation (adverse reaction, per patient)", "arm": "placebo + oral AD",
         "value": 0.09, "verified": "yes"},
        {"id": "ROD20-HTN", "metric": "Treatment-emergent hypertension BP >= 165/100", "value": 44.3, "unit": "%",
         "verified": "yes", "citation": "Rodrigues 2020"},
        {"id": "SPR-AE", "metric": "Nausea", "arm": "esketamine", "value": 0.28, "verified": "UNVERIFIED"},
    ]}
    path = tmp_path / "benchmarks.json"
    path.write_text(json.dumps(registry), encoding="utf-8")
    comp = safety.published_comparison(_published_clinic(), registry_path=path)
    t = comp.table.set_index(["published_id", "metric"])
    dis = t.loc[("SPR-AE", "patients with dissociation in the first 4 weeks")]
    assert (dis["published"], dis["published_status"], dis["source"]) == (0.41, "yes", "SPRAVATO label")
    assert t.loc[("ROD20", "IV patients with BP ≥ 165/100 in any session"), "published"] == pytest.approx(0.443)
    assert np.isnan(t.loc[("SPR-AE", "patients with nausea in the first 4 weeks"), "published"])  # unverified
    assert any("not displayable" in n for n in comp.notes)


def test_published_values_are_read_from_the_toml_registry_by_figure_id(tmp_path):
    path = tmp_path / "benchmarks.toml"
    path.write_text("""
[studies.ROD20]
short = "Rodrigues et al. 2020"

[[figures]]
id = "ROD20/hypertension"
row = "ROD20"
study = "ROD20"
metric = "Treatment-emergent hypertension ≥165/100 mmHg over the IV course"
value = 44.3
unit = "%"
unit_of_analysis = "per patient"
status = "yes"

[[figures]]
id = "ROD20/hypertension-treated"
row = "ROD20"
study = "ROD20"
metric = "Hypertensive patients who needed antihypertensive drugs (165/100)"
value = 12
unit = "%"
unit_of_analysis = "per patient"
status = "yes"

[[figures]]
id = "HUL22/any-adverse-effect"
row = "HUL22"
metric = "Any adverse effect reported"
value = 5
qualifier = "<"
unit = "%"
unit_of_analysis = "per patient"
status = "secondary"

[[figures]]
id = "AHU22"
row = "AHU22"
metric = "IM treatments with an adverse event recorded"
value = 2.3
unit = "%"
unit_of_analysis = "per patient"
status = "yes"
""", encoding="utf-8")
    comp = safety.published_comparison(_published_clinic(), registry_path=path)
    t = comp.table.set_index("registry_id")
    rod = t.loc["ROD20/hypertension"]
    assert (rod["published"], rod["source"], rod["published_qualifier"]) == (pytest.approx(0.443),
                                                                          "Rodrigues et al. 2020", "=")
    hul = t.loc["HUL22/any-adverse-effect"]
    assert (hul["published"], hul["published_qualifier"], hul["published_status"]) == (0.05, "<", "secondary")
    assert np.isnan(t.loc["AHU22", "published"])  # per patient in this registry, per session in the clinic
    assert any("AHU22: the registry figure is per patient" in n for n in comp.notes)


def test_threshold_mismatch_is_called_out_beside_the_published_figure(tmp_path):
    comp = safety.published_comparison(_published_clinic(), registry_path=tmp_path / "none.json",
                                       thresholds=safety.VitalThresholds(systolic_mmhg=160, diastolic_mmhg=100))
    row = comp.table.set_index("published_id").loc["ROD20"].iloc[0]
    assert "Not like-for-like" in row["caution"] and row["numerator"] == 3


# ---------------------------------------------------------------------------------------------------------------
# Figures


def test_safety_figures_show_error_bars_trend_bands_and_both_sources(tmp_path):
    from analytics.report.plots import safety as plots

    fig = plots.adverse_events_chart(safety.adverse_event_rates(_ae_clinic()))
    iv = next(t for t in fig.data if t.name == "IV")
    assert "nausea" in list(iv.x) and "hypertension" not in list(iv.x)  # never-recorded types hidden
    assert iv.error_y.array is not None and fig.layout.yaxis.title.text.startswith("Sessions with the event")
    per_patient = plots.adverse_events_chart(safety.adverse_event_rates(_ae_clinic()), unit_of_analysis="patient")
    assert "per patient" in per_patient.layout.title.text
    trend = plots.vital_signs_trend(safety.safety_trend(_vitals_clinic()))
    assert {t.name for t in trend.data if t.name} == {"Sessions with raised blood pressure",
                                                      "Sessions with raised heart rate"}
    comp = safety.published_comparison(_published_clinic(), registry_path=tmp_path / "none.json")
    pc = plots.published_comparison_chart(comp)
    assert [t.name for t in pc.data] == ["This clinic"]
    assert "IM sessions with any adverse event [AHU22, per session]" in list(pc.data[0].y)
    assert "unit of analysis" in pc.layout.title.text
