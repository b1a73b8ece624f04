"""Time to return to use: hand-checked small cases, guard-rails, JSON shape, figures, and recovery."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analytics.errors import InsufficientData, OutcomesError
from analytics.formatting import SUPPRESSED
from analytics.outcomes import survival as sv
from analytics.outcomes.cohort import Cohort, build_cohort
from analytics.outcomes.settings import Settings
from analytics.privacy.suppression import render_notes
from analytics.report.plots.survival import X_TITLE, Y_TITLE, forest_figure, km_figure
from schemas.frames import ValidatedExports

DAY0 = pd.Timestamp("2024-01-01")


def make_cohort(days, relapsed, settings: Settings | None = None, **patient_columns) -> Cohort:
    """One patient per element: first ketamine session on DAY0, one follow-up ``days`` later.

    ``relapsed`` True → the follow-up reports use (event on that day); False → no use (censored).
    ``program=None`` values become missing.
    """
    n = len(days)
    ids = [f"{i:05d}" for i in range(n)]
    phq9 = patient_columns.pop("baseline_phq9", None)
    sessions = pd.DataFrame({"patient_id": ids, "session_date": DAY0, "session_type": "ketamine", "route": "iv",
                             "phq9": phq9 if phq9 is not None else np.nan})
    followups = pd.DataFrame({"patient_id": ids,
                              "assessment_date": DAY0 + pd.to_timedelta(np.asarray(days, float), unit="D"),
                              "any_use": np.where(np.asarray(relapsed, bool), "yes", "no")})
    patients = pd.DataFrame({"patient_id": ids, **{k: list(v) for k, v in patient_columns.items()}})
    return build_cohort(ValidatedExports.from_frames(sessions, followups, patients), settings)


def two_programs(n_each: int = 40, *, hr: float = 0.5, seed: int = 7, crossing: bool = False):
    """Two programs with exponential times to return to use (or crossing hazards) and censoring at day 400."""
    rng = np.random.default_rng(seed)
    a = rng.exponential(120, n_each)
    b = rng.exponential(120 / hr, n_each)
    if crossing:  # b: early events for a third, then almost none -> hazards cross
        early = rng.random(n_each) < 0.45
        b = np.where(early, rng.uniform(1, 25, n_each), rng.exponential(3000, n_each))
    t = np.ceil(np.r_[a, b])
    cens = np.ceil(rng.uniform(150, 400, 2 * n_each))
    days = np.minimum(t, cens)
    return days, t <= cens, ["ketamine only"] * n_each + ["ketamine + therapy"] * n_each


# ---- Kaplan–Meier by hand ------------------------------------------------------------------------------

def test_kaplan_meier_by_hand_with_an_event_and_a_censoring_tied_on_one_day():
    km = sv.kaplan_meier([1, 2, 2, 3, 4], [1, 1, 0, 1, 0])
    assert km["day"].tolist() == [1, 2, 3, 4]
    assert km["n_risk"].tolist() == [5, 4, 2, 1]  # the patient censored on day 2 is at risk on day 2
    assert km["n_event"].tolist() == [1, 1, 1, 0]
    assert km["n_censor"].tolist() == [0, 1, 0, 1]
    np.testing.assert_allclose(km["estimate"], [0.8, 0.6, 0.3, 0.3])
    greenwood = np.sqrt(np.cumsum([1 / (5 * 4), 1 / (4 * 3), 1 / (2 * 1), 0]))
    np.testing.assert_allclose(km["std_err"], greenwood)
    z = stats.norm.ppf(0.975)
    np.testing.assert_allclose(km["ci_low"], km["estimate"] * np.exp(-z * greenwood))
    np.testing.assert_allclose(km["ci_high"], np.minimum(1, km["estimate"] * np.exp(z * greenwood)))


def test_fractional_days_give_the_same_estimates_as_whole_days():
    # whole days take a counting shortcut, other times a sort: both must agree
    rng = np.random.default_rng(5)
    t = np.ceil(rng.exponential(50, 300))
    e = rng.random(300) < 0.7
    x = pd.DataFrame({"x": rng.normal(size=300)})
    whole, frac = sv.kaplan_meier(t, e), sv.kaplan_meier(t + 0.25, e)
    np.testing.assert_allclose(frac["day"], whole["day"] + 0.25)
    np.testing.assert_allclose(frac["estimate"], whole["estimate"], rtol=1e-14)
    np.testing.assert_allclose(sv.cox_ph(t + 0.25, e, x).table["coef"], sv.cox_ph(t, e, x).table["coef"], rtol=1e-12)
    assert sv.logrank(t + 0.25, e, t > 40).chisq == pytest.approx(sv.logrank(t, e, t > 40).chisq, rel=1e-12)


def test_events_on_day_zero_lower_survival_at_day_zero():
    km = sv.kaplan_meier([0, 0, 0, 5, 9, 9], [1, 1, 0, 1, 0, 0])
    assert km["day"].iloc[0] == 0 and km["n_risk"].iloc[0] == 6
    assert km["estimate"].iloc[0] == pytest.approx(4 / 6)
    assert sv.km_at(km, [0])["estimate"].iloc[0] == pytest.approx(4 / 6)


def test_median_is_midpoint_when_survival_is_exactly_one_half_and_none_when_not_reached():
    km = sv.kaplan_meier([1, 2, 3, 4, 5, 6], [1, 1, 1, 0, 1, 0])
    assert sv.km_median(km)[0] == 4.0  # S = 0.5 on days 3-4, next event day 5
    # not reached; the lower CI limit still falls below 0.5 on day 1 (R prints NA, 1, NA too)
    assert sv.km_median(sv.kaplan_meier([1, 2, 3, 4], [1, 0, 0, 0])) == (None, 1.0, None)


def test_survival_reaching_zero_has_no_confidence_interval():
    km = sv.kaplan_meier([1, 2, 3], [1, 1, 1])
    assert km["estimate"].iloc[-1] == 0
    assert np.isnan(km["ci_low"].iloc[-1]) and np.isnan(km["ci_high"].iloc[-1])


def test_milestone_past_last_follow_up_is_missing_not_carried_forward():
    ms = sv.km_at(sv.kaplan_meier([10, 20, 30], [1, 0, 0]), [5, 30, 31])
    assert ms["estimate"].iloc[0] == 1.0 and ms["estimate"].iloc[1] == pytest.approx(2 / 3)
    assert np.isnan(ms["estimate"].iloc[2]) and ms["n_risk"].tolist() == [3, 1, 0]


def test_rmst_is_the_area_under_the_step_curve():
    km = sv.kaplan_meier([2, 4, 6, 8], [1, 1, 0, 1])
    est, se = sv.rmst(km, tau=5)
    assert est == pytest.approx(2 * 1 + 2 * 0.75 + 1 * 0.5)
    assert se > 0


# ---- log-rank and Cox -----------------------------------------------------------------------------------

def test_logrank_p_uses_the_survival_function_and_stays_positive_for_large_chisq():
    rng = np.random.default_rng(3)
    t = np.r_[rng.exponential(10, 300), rng.exponential(100, 300)]
    lr = sv.logrank(t, np.ones(600, bool), ["a"] * 300 + ["b"] * 300)
    assert lr.chisq > 100
    assert (1 - stats.chi2.cdf(lr.chisq, 1)) == 0.0  # the trap: 1 - cdf rounds to 0
    assert lr.p > 0 and lr.p == pytest.approx(stats.chi2.sf(lr.chisq, 1), rel=1e-12)


def test_logrank_leaves_out_a_group_without_expected_events_like_r():
    # group "early" is all censored before the first event: expected 0, df counts only the other two
    lr = sv.logrank([1, 1, 5, 6, 7, 8, 9, 10], [0, 0, 1, 0, 1, 1, 0, 1], list("eeaaabbb"),
                    groups=["a", "b", "e"])
    assert lr.table.set_index("group").loc["e", "expected"] == 0
    assert lr.df == 1 and lr.chisq is not None


def test_cox_handles_heavy_ties_like_statsmodels_efron():
    from statsmodels.duration.hazard_regression import PHReg

    rng = np.random.default_rng(11)
    x = rng.normal(size=(400, 2))
    t = np.ceil(rng.exponential(np.exp(-x @ [0.5, -0.3])) * 5)  # days 1..~30: many ties
    e = rng.random(400) < 0.8
    fit = sv.cox_ph(t, e, pd.DataFrame(x, columns=["x1", "x2"]), ph_transform=None)
    sm = PHReg(t, x, status=e.astype(float), ties="efron").fit()
    np.testing.assert_allclose(fit.table["coef"], sm.params, rtol=1e-7)
    np.testing.assert_allclose(fit.table["se"], sm.bse, rtol=1e-7)


# ---- cohort level -----------------------------------------------------------------------------------------

def test_curves_by_program_count_patients_and_drop_missing_program_with_a_note():
    days, rel, prog = two_programs(20)
    prog[0] = None
    cohort = make_cohort(days, rel, program=prog)
    curves = sv.relapse_curves(cohort, by="program")
    assert curves.groups == ["ketamine + therapy", "ketamine only"]
    assert curves.medians["n"].sum() == 39
    assert any("1 patient(s) without a program value" in n for n in render_notes(curves.notes, enabled=False))
    assert any(n.startswith("Kaplan–Meier") for n in curves.notes)
    assert cohort.settings.describe() in curves.notes
    assert list(curves.table.columns) == ["group", "day", "estimate", "ci_low", "ci_high", "n_risk", "n_event",
                                          "n_censor"]
    first = curves.risk_table[curves.risk_table["day"] == 0]
    assert first.set_index("group")["n_risk"].to_dict() == {"ketamine + therapy": 20, "ketamine only": 19}


def test_default_reference_is_the_largest_group():
    days, rel, prog = two_programs(30)
    prog = prog + ["ketamine only"] * 10
    cohort = make_cohort(np.r_[days, np.full(10, 100.0)], np.r_[rel, np.zeros(10, bool)], program=prog)
    cmp = sv.compare_groups(cohort, by="program")
    assert cmp.reference == "ketamine only"
    assert cmp.hazard_ratios["level"].tolist() == ["ketamine + therapy"]


def test_a_group_without_events_gets_no_hazard_ratio_but_a_logrank_and_rmst():
    days, rel, prog = two_programs(30)
    rel = np.asarray(rel)
    rel[30:] = False  # nobody in therapy returns to use
    cmp = sv.compare_groups(make_cohort(days, rel, program=prog), by="program", reference="ketamine only")
    assert cmp.hazard_ratios is None and cmp.ph_holds is None
    assert any("nobody in ketamine + therapy has returned to use" in n for n in cmp.notes)
    assert cmp.logrank.p is not None and cmp.logrank.p < 0.001
    assert cmp.rmst_difference["estimate"].iloc[0] > 0


def test_only_one_group_or_no_events_raise_insufficient_data_in_plain_words():
    days, rel, _ = two_programs(10)
    with pytest.raises(InsufficientData, match=r"at least 2 groups .* \(got 1: solo\)"):
        sv.compare_groups(make_cohort(days, rel, program=["solo"] * 20), by="program")
    with pytest.raises(InsufficientData, match=r"0 events among 20 patients"):
        sv.compare_groups(make_cohort(days, np.zeros(20, bool), program=["a"] * 10 + ["b"] * 10), by="program")


def test_tiny_groups_are_left_out_of_the_comparison_with_a_note():
    days, rel, prog = two_programs(20)
    prog[:3] = ["pilot"] * 3
    cmp = sv.compare_groups(make_cohort(days, rel, program=prog), by="program")
    assert "pilot" not in cmp.groups["group"].tolist()
    assert any("pilot" in n and f"fewer than {sv.MIN_GROUP_PATIENTS} patients" in n
               for n in render_notes(cmp.notes, enabled=False))


def test_few_events_per_coefficient_are_flagged():
    days, rel, prog = two_programs(12)
    cohort = make_cohort(days, rel, program=prog, age=list(np.linspace(20, 70, 24)),
                         sex=["female", "male"] * 12)
    cmp = sv.compare_groups(cohort, by="program", adjust=("age", "sex"))
    assert cmp.hazard_ratios is not None and len(cmp.hazard_ratios) == 3
    assert any("events for 3 model coefficients (fewer than 10 per coefficient)" in n
               for n in render_notes(cmp.notes, enabled=False))


def test_rare_adjustment_levels_are_left_out_of_the_adjusted_model_with_a_note():
    days, rel, prog = two_programs(30)
    sex = ["female", "male"] * 29 + ["other", "unknown"]
    cmp = sv.compare_groups(make_cohort(days, rel, program=prog, sex=sex), by="program", adjust=("sex",))
    assert cmp.n_model == 58
    assert cmp.hazard_ratios["level"].tolist()[1:] == ["male"] or cmp.hazard_ratios["level"].tolist()[1:] == [
        "female"]
    assert any("2 patient(s) with sex other, unknown are left out" in n
               for n in render_notes(cmp.notes, enabled=False))


def test_depression_bands_keep_their_clinical_order():
    days, rel, _ = two_programs(10)
    cohort = make_cohort(days, rel, baseline_phq9=[12] * 10 + [7] * 5 + [22] * 5)
    assert sv.relapse_curves(cohort, by="depression_band").groups == ["5–9 mild", "10–14 moderate", "20–27 severe"]


def test_unknown_grouping_reference_or_adjustment_is_a_plain_error():
    days, rel, prog = two_programs(10)
    cohort = make_cohort(days, rel, program=prog)
    with pytest.raises(OutcomesError, match="Use one of: program"):
        sv.relapse_curves(cohort, by="shoe_size")
    with pytest.raises(OutcomesError, match="'placebo' is not one of the program groups"):
        sv.compare_groups(cohort, by="program", reference="placebo")
    with pytest.raises(OutcomesError, match="Cannot adjust for 'weight'"):
        sv.compare_groups(cohort, by="program", adjust=("weight",))


def test_no_follow_up_at_all_is_insufficient_data():
    sessions = pd.DataFrame({"patient_id": ["1"], "session_date": [DAY0], "session_type": ["ketamine"]})
    cohort = build_cohort(ValidatedExports.from_frames(sessions, pd.DataFrame(
        {"patient_id": pd.Series(dtype=str), "assessment_date": pd.Series(dtype=str)})))
    with pytest.raises(InsufficientData, match="0 patients with follow-up"):
        sv.relapse_curves(cohort)


def test_proportional_hazards_hold_for_a_constant_hazard_ratio():
    days, rel, prog = two_programs(150, hr=0.5, seed=1)
    cmp = sv.compare_groups(make_cohort(days, rel, program=prog), by="program", reference="ketamine only")
    assert cmp.ph_holds is True and "No evidence against proportional hazards" in cmp.ph_verdict
    assert cmp.hazard_ratios["estimate"].iloc[0] == pytest.approx(0.5, abs=0.15)


def test_crossing_hazards_fail_the_ph_check_and_point_to_rmst():
    days, rel, prog = two_programs(150, crossing=True, seed=2)
    cmp = sv.compare_groups(make_cohort(days, rel, program=prog), by="program", reference="ketamine only",
                            horizon_days=150)
    assert cmp.ph_holds is False
    assert "not proportional" in cmp.ph_verdict and "up to day 150" in cmp.ph_verdict
    assert cmp.horizon_days == 150
    assert list(cmp.milestone_difference["day"]) == [30.0, 90.0, 180.0, 365.0]
    early = cmp.milestone_difference.set_index("day").loc[30.0]
    assert early["estimate"] < 0 and early["ci_high"] < 0  # therapy worse early on


def test_dropout_as_relapse_setting_changes_events_and_is_described():
    days, rel, prog = two_programs(10)
    cohort = make_cohort(days, rel, Settings(dropout_as_relapse=True), program=prog)
    notes = sv.relapse_curves(cohort).notes
    assert any("dropping out (lost to follow-up or withdrew) counts as return to use" in n for n in notes)


# ---- JSON (cli.md) ------------------------------------------------------------------------------------------

def test_survival_json_without_by_has_one_group_all_and_null_tests():
    days, rel, prog = two_programs(10)
    out = sv.survival_json(make_cohort(days, rel, program=prog))
    assert set(out) == {"groups", "logrank", "cox"} and out["logrank"] is None and out["cox"] is None
    (group,) = out["groups"]
    assert group["group"] == "all" and group["n"] == 20 and group["events"] == int(np.sum(rel))
    assert set(group) == {"group", "n", "events", "median_days", "median_lower", "median_upper", "km"}
    assert set(group["km"][0]) == {"time", "survival", "lower", "upper", "at_risk"}
    json.dumps(out, allow_nan=False)


def test_survival_json_with_by_has_the_cli_shape_and_plain_types():
    days, rel, prog = two_programs(30)
    out = sv.survival_json(make_cohort(days, rel, program=prog), by="program")
    assert set(out["logrank"]) == {"chisq", "df", "p"} and isinstance(out["logrank"]["df"], int)
    cox = out["cox"]
    assert cox["ties"] == "efron" and cox["reference"] in ("ketamine only", "ketamine + therapy")
    assert set(cox["terms"][0]) == {"term", "level", "coef", "se", "hr", "hr_lower", "hr_upper", "p"}
    assert set(cox["ph_test"]) == {"p"}
    text = json.dumps(out, allow_nan=False)
    assert "NaN" not in text
    assert all(type(v) in (float, int, type(None)) for g in out["groups"] for row in g["km"]
               for k, v in row.items())


def test_survival_json_uses_null_where_the_median_is_not_reached():
    out = sv.survival_json(make_cohort([10, 20, 30, 40], [1, 0, 0, 0]))
    assert out["groups"][0]["median_days"] is None and out["groups"][0]["median_upper"] is None


def test_cohort_json_counts_patients_followup_events_and_censored():
    days, rel, prog = two_programs(10)
    cohort = make_cohort(days, rel, program=prog)
    assert sv.cohort_json(cohort) == {"patients": 20, "with_followup": 20, "events": int(np.sum(rel)),
                                      "censored": 20 - int(np.sum(rel))}


# ---- figures ---------------------------------------------------------------------------------------------

def test_km_figure_has_curves_ci_bands_censor_marks_and_an_aligned_risk_table():
    days, rel, prog = two_programs(30)
    fig_curves = sv.relapse_curves(make_cohort(days, rel, program=prog), by="program")
    fig = km_figure(fig_curves)
    lines = [t for t in fig.data if t.mode == "lines" and t.showlegend is not False]
    assert [t.name for t in lines] == ["ketamine + therapy", "ketamine only"]
    assert all(t.line.shape == "hv" and t.x[0] == 0 and t.y[0] == 1 for t in lines)
    assert sum(t.fill == "tonexty" for t in fig.data) == 2
    # without the small-cell rule (which stops the ticks where the curve stops): a tick at every censoring, drawn
    # as one path per curve (in the curve's legend group: hidden with it)
    whole = km_figure(dataclasses.replace(fig_curves, min_cell=None))
    ticks = [s for s in whole.layout.shapes if s.name and s.name.endswith(": censored")]
    assert len(ticks) == 2 and all(t.type == "path" and t.xref == "x" and t.yref == "y" for t in ticks)
    for tick in ticks:
        group = tick.name.removesuffix(": censored")
        assert tick.legendgroup == group and tick.showlegend is False
        # one vertical stroke per day with a censoring, centred on the curve's height that day
        strokes = np.array([[float(v) for p in seg.split("L") for v in p.split(",")]
                            for seg in tick.path.split("M")[1:]])  # x0, y0, x1, y1
        table = fig_curves.table[(fig_curves.table["group"] == group) & (fig_curves.table["n_censor"] > 0)]
        assert strokes[:, 0].tolist() == table["day"].tolist() == strokes[:, 2].tolist()
        assert (strokes[:, 1] + strokes[:, 3]) / 2 == pytest.approx(table["estimate"].to_numpy(float))
        assert np.all((strokes[:, 3] - strokes[:, 1] > 0) & (strokes[:, 3] - strokes[:, 1] < 0.05))
    for tick in (s for s in fig.layout.shapes if s.name and s.name.endswith(": censored")):  # small-cell rule on
        curve = next(t for t in lines if t.name == tick.name.removesuffix(": censored"))
        days = [float(seg.split(",")[0]) for seg in tick.path.split("M")[1:]]
        assert days and max(days) <= max(curve.x)  # the ticks stop where the drawn curve stops
    table = [t for t in fig.data if t.mode == "text"]
    assert len(table) == 2 and all(t.yaxis == "y2" and t.xaxis == "x2" for t in table)
    assert all(t.cliponaxis is False for t in table)  # a count at day 0 ("1,411") is drawn whole, not cut at the axis
    day0 = [str(s) for t in table for s, x in zip(t.text, t.x, strict=True) if x == 0]
    assert fig.layout.yaxis2.ticklabelstandoff >= 4 * max(map(len, day0))  # ... and clear of the group names
    assert fig.layout.xaxis.matches == "x2" or fig.layout.xaxis2.matches == "x"  # shared x-axis
    assert fig.layout.xaxis2.title.text == X_TITLE and fig.layout.yaxis.title.text == Y_TITLE


def test_km_figure_suppresses_small_numbers_at_risk():
    days, rel, prog = two_programs(12)
    curves = sv.relapse_curves(make_cohort(days, rel, program=prog), by="program")
    texts = [s for t in km_figure(curves).data if t.mode == "text" for s in t.text]
    assert "12" in texts and SUPPRESSED in texts
    assert not any(s.isdigit() and 0 < int(s) < 11 for s in texts)


def test_forest_figure_plots_hazard_ratios_on_a_log_axis_with_a_line_at_one():
    days, rel, prog = two_programs(40)
    cmp = sv.compare_groups(make_cohort(days, rel, program=prog), by="program", reference="ketamine only")
    fig = forest_figure(cmp)
    assert fig.layout.xaxis.type == "log"
    assert fig.data[0].y == ("ketamine + therapy vs ketamine only",)
    assert fig.data[0].x[0] == pytest.approx(cmp.hazard_ratios["estimate"].iloc[0])
    assert any(s.x0 == 1 and s.x1 == 1 for s in fig.layout.shapes)


def test_computation_never_imports_streamlit():
    code = "import analytics.outcomes.survival, analytics.report.plots.survival, sys; assert 'streamlit' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- recovery ------------------------------------------------------------------------------------------------

def test_relapse_hazard_ratio_is_recovered_from_sample_clinic():
    from analytics.sample import KETAMINE_ONLY, TRUE_EFFECTS, generate_clinic

    exports = generate_clinic(3000, seed=2)
    cohort = build_cohort(ValidatedExports.from_frames(exports["sessions"], exports["followups"],
                                                       exports["patients"]))
    cmp = sv.compare_groups(cohort, by="program", reference=KETAMINE_ONLY,
                            adjust=("primary_substance", "sex", "age"))
    therapy = cmp.hazard_ratios.iloc[0]
    assert therapy["level"] == "ketamine + therapy"
    assert therapy["ci_low"] < TRUE_EFFECTS.hr_therapy < therapy["ci_high"]
    assert abs(np.log(therapy["estimate"] / TRUE_EFFECTS.hr_therapy)) < 0.1
    assert cmp.ph_holds is True  # the sample's hazards are proportional by construction


def test_the_page_opens_split_by_substance_where_the_clinic_treats_several():
    from dataclasses import replace
    from pathlib import Path

    from analytics.outcomes.cohort import build_cohort as _build
    from analytics.outcomes.survival import default_grouping
    from schemas.validate import load_exports

    root = Path(__file__).resolve().parents[1] / "sample_data"

    cohort = _build(load_exports(root / "sessions.csv", root / "followups.csv", root / "patients.csv"))
    assert default_grouping(cohort) == "primary_substance"
    one = cohort.patients["primary_substance"].value_counts().index[0]
    only = replace(cohort, patients=cohort.patients[cohort.patients["primary_substance"] == one])
    assert default_grouping(only) == "program"
    single = replace(only, patients=only.patients[only.patients["program"] == only.patients["program"].iloc[0]])
    assert default_grouping(single) is None
