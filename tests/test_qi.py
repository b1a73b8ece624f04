"""Quality-improvement measures on hand-built clinics with known answers, and SPC/funnel limits against R."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analytics.errors import InsufficientData, OutcomesError
from analytics.outcomes import qi
from analytics.outcomes.cohort import build_cohort
from schemas.frames import ValidatedExports

REF = Path(__file__).parent / "reference" / "qi"
DAY0 = pd.Timestamp("2025-01-06")
AS_OF = "2025-12-31"


def day(d: int) -> str:
    return (DAY0 + pd.Timedelta(days=d)).strftime("%Y-%m-%d")


def ket(pid: str, d: int, **extra: object) -> dict:
    return {"patient_id": pid, "session_date": day(d), "session_type": "ketamine", "route": "iv", **extra}


def fu(pid: str, d: int, **extra: object) -> dict:
    return {"patient_id": pid, "assessment_date": day(d), **extra}


def cohort_of(sessions: list[dict], followups: list[dict] | None = None, patients: list[dict] | None = None):
    f = pd.DataFrame(followups) if followups else pd.DataFrame(columns=["patient_id", "assessment_date"])
    p = pd.DataFrame(patients) if patients else None
    return build_cohort(ValidatedExports.from_frames(pd.DataFrame(sessions), f, p))


def frame_row(frame: pd.DataFrame, pid: str) -> pd.Series:
    return frame.set_index("patient_id").loc[pid]


# ---------------------------------------------------------------------------------------------------------------
# KPI definitions at their window edges


def test_induction_counts_distinct_session_days_within_the_first_28_days():
    sessions = ([ket("done", d) for d in (0, 7, 14, 27)] + [ket("late", d) for d in (0, 7, 14, 28)]
                + [ket("sameday", d) for d in (0, 0, 7, 14)] + [ket("fresh", d) for d in (300, 301, 302, 303)])
    frame = qi.patient_kpi_frame(cohort_of(sessions), "induction_completion", as_of=day(320))
    assert frame_row(frame, "done")["success"]
    assert frame_row(frame, "late")["counted"] and not frame_row(frame, "late")["success"]
    assert not frame_row(frame, "sameday")["success"]  # 3 distinct days
    fresh = frame_row(frame, "fresh")  # its day 27 is day 327 > 320: window still open
    assert not fresh["assessable"] and not fresh["counted"] and "window still open" in fresh["reason"]


@pytest.mark.parametrize("assessment_day, met", [(68, False), (69, True), (111, True), (112, False)])
def test_followup_at_90_days_counts_assessments_within_plus_minus_21_days(assessment_day, met):
    c = cohort_of([ket("p", 0)], [fu("p", assessment_day)])
    row = frame_row(qi.patient_kpi_frame(c, "followup_90", as_of=AS_OF), "p")
    assert row["counted"] and row["success"] == met


def test_followup_is_not_judged_before_its_window_closes():
    c = cohort_of([ket("p", 0)], [fu("p", 30)])
    assert not frame_row(qi.patient_kpi_frame(c, "followup_90", as_of=day(110)), "p")["assessable"]
    assert frame_row(qi.patient_kpi_frame(c, "followup_90", as_of=day(111)), "p")["counted"]


def test_abstinence_at_90_days_uses_known_status_only():
    full = {"days_abstinent": 30, "window_days": 30}
    sessions = [ket(p, 0) for p in ("early", "after", "short", "lost", "dated")]
    followups = [fu("early", 60, any_use="yes"),                       # returned to use on day 60
                 fu("after", 45, **full), fu("after", 100, any_use="yes"),  # day 100: after day 90
                 fu("short", 69, **full),                                # followed to 69 = 90 − 21: known
                 fu("lost", 68, **full),                                 # lost before day 69: unknown
                 fu("dated", 120, any_use="yes", relapse_date=day(85))]  # relapse date 85 reported later
    frame = qi.patient_kpi_frame(cohort_of(sessions, followups), "abstinence_90", as_of=AS_OF).set_index(
        "patient_id")
    assert frame.loc[["early", "after", "short", "lost", "dated"], "counted"].tolist() == [True, True, True, False,
                                                                                            True]
    assert frame.loc[["early", "after", "short", "dated"], "success"].tolist() == [False, True, True, False]


def test_phq9_response_uses_score_closest_to_day_28_and_a_baseline_of_at_least_10():
    base = lambda pid, s: {"patient_id": pid, "session_date": day(-2), "session_type": "assessment", "phq9": s}
    sessions = [base("half", 20), ket("half", 0), base("more", 20), ket("more", 0), base("low", 8), ket("low", 0),
                base("far", 20), ket("far", 0), base("tie", 20), ket("tie", 0)]
    followups = [fu("half", 28, phq9=10), fu("more", 28, phq9=11), fu("low", 28, phq9=1), fu("far", 43, phq9=2),
                 fu("tie", 21, phq9=5), fu("tie", 35, phq9=15)]
    frame = qi.patient_kpi_frame(cohort_of(sessions, followups), "phq9_response_4w", as_of=AS_OF).set_index(
        "patient_id")
    assert frame.loc["half", "success"] and not frame.loc["more", "success"]
    assert not frame.loc["low", "counted"] and not frame.loc["far", "counted"]
    assert frame.loc["tie", "counted"] and not frame.loc["tie", "success"]  # tie → later score (15)


# ---------------------------------------------------------------------------------------------------------------
# KPI table


def _quarter_clinic():
    # index dates: a1, a2 in Q2 2025; b1 in Q3 2025. AE: 3 events over 4 sessions in Q3.
    s = [{"patient_id": "a1", "session_date": "2025-04-10", "session_type": "ketamine", "route": "iv"},
         {"patient_id": "a1", "session_date": "2025-04-14", "session_type": "ketamine", "route": "iv"},
         {"patient_id": "a1", "session_date": "2025-04-17", "session_type": "ketamine", "route": "iv"},
         {"patient_id": "a1", "session_date": "2025-04-21", "session_type": "ketamine", "route": "iv"},
         {"patient_id": "a2", "session_date": "2025-05-20", "session_type": "ketamine", "route": "im"},
         {"patient_id": "b1", "session_date": "2025-07-01", "session_type": "ketamine", "route": "iv",
          "adverse_events": "nausea;vomiting"},
         {"patient_id": "b1", "session_date": "2025-07-03", "session_type": "ketamine", "route": "iv",
          "adverse_events": "nausea;nausea"},
         {"patient_id": "b1", "session_date": "2025-07-08", "session_type": "ketamine", "route": "iv"},
         {"patient_id": "b1", "session_date": "2025-07-10", "session_type": "ketamine", "route": "iv"}]
    f = [{"patient_id": "a1", "assessment_date": "2025-05-10"}, {"patient_id": "b1", "assessment_date": "2025-09-30"}]
    return cohort_of(s, f)


def test_default_periods_are_the_last_complete_quarter_and_the_one_before():
    c = _quarter_clinic()
    assert qi.default_periods(c) == ((date(2025, 4, 1), date(2025, 6, 30)), (date(2025, 7, 1), date(2025, 9, 30)))
    assert qi.default_periods(c, as_of="2025-09-29") == ((date(2025, 1, 1), date(2025, 3, 31)),
                                                        (date(2025, 4, 1), date(2025, 6, 30)))


def test_kpi_table_counts_starters_induction_and_adverse_events_per_period():
    c = _quarter_clinic()
    pa, pb = qi.default_periods(c)
    t = qi.kpis(c, period_a=pa, period_b=pb)
    tab = t.table.set_index(["kpi", "period"])
    assert tab.loc[("patients_started", "a"), "numerator"] == 2
    assert tab.loc[("patients_started", "b"), "numerator"] == 1
    # induction due on day 27: a1 (due 2025-05-07) completes, a2 (due 2025-06-16) does not; b1 due 2025-07-28
    assert (tab.loc[("induction_completion", "a"), ["numerator", "denominator"]].tolist() == [1, 2])
    assert (tab.loc[("induction_completion", "b"), ["numerator", "denominator"]].tolist() == [1, 1])
    # 3 distinct events (nausea twice in one session counts once) over 4 sessions = 75 per 100
    ae = tab.loc[("ae_rate", "b")]
    assert (ae["numerator"], ae["denominator"], ae["estimate"]) == (3, 4, 75.0)
    # R: poisson.test(3, 4)$conf.int = 0.154668030724, 2.191818267436
    assert ae["ci_low"] == pytest.approx(100 * 0.154668030724, abs=1e-9)
    assert ae["ci_high"] == pytest.approx(100 * 2.191818267436, abs=1e-9)
    ch = t.changes.set_index("kpi")
    assert ch.loc["patients_started", "change"] == -1
    assert ch.loc["induction_completion", "change"] == pytest.approx(0.5)
    assert list(t.table["kpi"].unique()) == list(qi.KPI_ORDER)


def test_followup_kpi_leaves_out_patients_whose_window_is_still_open_and_says_so():
    c = _quarter_clinic()
    t = qi.kpis(c, period_a=("2025-04-01", "2025-06-30"), period_b=("2025-07-01", "2025-09-30"),
                options=qi.KpiOptions(assign_by="start"))
    row = t.table.set_index(["kpi", "period"]).loc[("followup_90", "b")]
    assert (row["denominator"], row["not_yet_assessable"]) == (0, 1)
    assert any("could not be assessed yet" in n for n in t.notes)


def test_induction_shortcut_changes_the_definition():
    c = _quarter_clinic()
    t = qi.kpis(c, period_a=("2025-04-01", "2025-06-30"), period_b=("2025-07-01", "2025-09-30"),
                induction_sessions=1)
    assert t.options.induction_sessions == 1
    assert t.table.set_index(["kpi", "period"]).loc[("induction_completion", "a"), "numerator"] == 2


def test_reversed_period_is_refused_in_plain_language():
    with pytest.raises(OutcomesError, match="before it starts"):
        qi.kpis(_quarter_clinic(), period_a=("2025-06-30", "2025-04-01"), period_b=("2025-07-01", "2025-09-30"))


def test_newcombe_difference_interval_matches_r():
    ref = pd.read_csv(REF / "newcombe.csv")
    for r in ref.itertuples():
        lo, hi = qi.newcombe_ci(r.x1, r.n1, r.x2, r.n2)
        assert (lo, hi) == pytest.approx((r.low, r.high), abs=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# Patient flow


def test_patient_flow_counts_each_step_and_names_the_losses():
    base = lambda pid: {"patient_id": pid, "session_date": day(-1), "session_type": "assessment", "phq9": 15}
    sessions = [base("a"), ket("a", 0), base("b"), ket("b", 0), ket("c", 0),
                {**base("d"), "session_date": day(299)}, ket("d", 300),
                {"patient_id": "x", "session_date": day(0), "session_type": "psychotherapy"}]
    followups = [fu("a", 30, phq9=5), fu("a", 90), fu("b", 20, status="lost_to_follow_up")]
    issues = pd.DataFrame({"file": ["sessions", "sessions", "followups"], "line": [4, 4, 2],
                           "column": ["route", "dose_mg", "phq9"], "value": ["xx", "-1", "99"],
                           "reason": ["unknown route", "dose out of range", "score out of range"]})
    flow = qi.patient_flow(cohort_of(sessions, followups), uploaded_rows=13, quarantined=issues, as_of=day(320))
    n = flow.steps.set_index("step")["n"]
    assert n[["uploaded", "valid", "patients", "started", "baseline"]].tolist() == [13, 11, 5, 4, 3]
    assert n[["followup_30", "followup_90", "followup_180"]].tolist() == [2, 1, 0]  # b's day 20 is in 16–44
    assert n[["analysed_survival", "analysed_phq9"]].tolist() == [2, 1]
    lost = flow.losses.set_index(["step", "reason"])["n"]
    assert lost[("started", "no ketamine session in the export")] == 1
    assert lost[("followup_180", f"window not reached by {day(320)}")] == 1  # d: day 300 + 210 > 320
    assert lost[("followup_180", "recorded as lost to follow-up or withdrew before the window closed")] == 1  # b
    assert lost[("followup_180", "no assessment in the window")] == 1  # a
    assert lost[("valid", "unknown route")] == 1 and len(lost.loc["valid"]) == 3


# ---------------------------------------------------------------------------------------------------------------
# Control charts


def test_p_chart_limits_match_the_formula_computed_in_r():
    ref = pd.read_csv(REF / "pchart_reference.csv")
    cc = qi.p_chart(ref["x"], ref["n"], labels=ref["month"], chart="p")
    np.testing.assert_allclose(cc.table["lcl"], ref["lcl_p"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(cc.table["ucl"], ref["ucl_p"], rtol=0, atol=1e-12)
    assert cc.centre == pytest.approx(ref["centre"][0], abs=1e-14)
    assert cc.sigma_z == pytest.approx(ref["sigma_z"][0], abs=1e-12)
    assert cc.dispersion_chi2 == pytest.approx(ref["chi2"][0], abs=1e-10)
    assert cc.dispersion_p == pytest.approx(ref["chi2_p"][0], abs=1e-12)
    prime = qi.p_chart(ref["x"], ref["n"], labels=ref["month"], chart="p_prime")
    np.testing.assert_allclose(prime.table["ucl"], ref["ucl_pp"], rtol=0, atol=1e-12)
    # σz < 1 and no over-dispersion: the automatic choice stays with the p-chart
    assert qi.p_chart(ref["x"], ref["n"], labels=ref["month"]).chart == "p"


def test_laney_p_prime_reproduces_qicharts2_on_the_nhs_accidents_data():
    data = pd.read_csv(REF / "nhs_accidents.csv")
    cc = qi.p_chart(data["r"], data["n"], labels=data["i"])
    assert cc.chart == "p_prime"  # weekly n ≈ 280,000: massive over-dispersion
    r_ref = pd.read_csv(REF / "laney_nhs_reference.csv")
    q_ref = pd.read_csv(REF / "qicharts2_nhs_pp.csv")
    np.testing.assert_allclose(cc.table["lcl"], r_ref["lcl_pp"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(cc.table["lcl"], q_ref["lcl"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(cc.table["ucl"], q_ref["ucl"], rtol=0, atol=1e-12)
    assert cc.sigma_z == pytest.approx(10.6404218634965, abs=1e-10)
    assert not cc.table["outside"].any()
    p_only = qi.p_chart(data["r"], data["n"], labels=data["i"], chart="p").table
    r_outside = (r_ref["p"] > r_ref["ucl_p"]) | (r_ref["p"] < r_ref["lcl_p"])
    assert p_only["outside"].tolist() == r_outside.tolist() and r_outside.sum() == 16


@pytest.mark.parametrize("n_above, flagged", [(7, 0), (8, 8)])
def test_shift_rule_needs_eight_points_on_one_side(n_above, flagged):
    y = [0.6, 0.4] * 3 + [0.6] * n_above + [0.4, 0.6, 0.4]
    shift, _ = qi.run_rules(y, 0.5)
    assert shift.sum() == flagged
    if flagged:
        assert shift[6:14].all()


def test_point_on_the_centre_line_breaks_a_shift():
    y = [0.6] * 4 + [0.5] + [0.6] * 4
    shift, _ = qi.run_rules(y, 0.5)
    assert not shift.any()


@pytest.mark.parametrize("y, flagged", [
    ([5, 1, 2, 3, 4, 5, 6, 2], [False, True, True, True, True, True, True, False]),  # 6 rising
    ([5, 1, 2, 3, 4, 5, 2, 2], [False] * 8),                                        # only 5
    ([9, 8, 7, 6, 6, 5, 4, 3], [False] * 8),                                        # a tie breaks it
    ([9, 8, 7, 6, 5, 4, 9, 9], [True] * 6 + [False] * 2),                           # 6 falling
])
def test_trend_rule_needs_six_points_steadily_rising_or_falling(y, flagged):
    _, trend = qi.run_rules(y, 5.0)
    assert trend.tolist() == flagged


def test_point_beyond_a_limit_is_a_signal_with_its_rule():
    x = [8, 16] * 5 + [12, 30]
    n = [50] * 12
    cc = qi.p_chart(x, n, labels=[f"m{i}" for i in range(12)], chart="p")
    assert cc.table["outside"].tolist() == [False] * 11 + [True]
    assert cc.signals["label"].tolist() == ["m11"]


def test_months_without_data_are_dropped_and_too_few_points_refused():
    cc = qi.p_chart([1, 0, 2], [5, 0, 6], labels=["a", "b", "c"])
    assert cc.table["label"].tolist() == ["a", "c"]
    assert any("not plotted" in n for n in cc.notes)
    with pytest.raises(InsufficientData, match="at least 2 months"):
        qi.p_chart([1, 0], [5, 0], labels=["a", "b"])


def test_monthly_series_puts_patients_in_the_month_their_measure_fell_due():
    # induction due on day 27: index 2025-01-06 → due 2025-02-02; index 2025-02-20 → due 2025-03-19
    sessions = ([ket("a", d) for d in (0, 3, 7, 10)] + [ket("b", 45)] + [ket("c", 46)]
                + [ket("d", 46 + d) for d in (0, 2, 4, 6)])
    c = cohort_of(sessions)
    s = qi.monthly_rate(c, kpi="induction_completion", as_of=AS_OF)
    assert s.table["label"].tolist() == ["2025-02", "2025-03"]
    assert s.table["numerator"].tolist() == [1, 1]
    assert s.table["denominator"].tolist() == [1, 3]
    chart = qi.control_chart(c, kpi="induction_completion", as_of=AS_OF)
    assert chart.kpi == "induction_completion" and chart.centre == pytest.approx(0.5)


def test_adverse_event_series_counts_sessions_with_any_event():
    c = _quarter_clinic()
    s = qi.monthly_rate(c, kpi="ae_rate")
    assert s.table.set_index("label").loc["2025-07", ["numerator", "denominator"]].tolist() == [2, 4]
    with pytest.raises(ValueError, match="count"):
        qi.monthly_rate(c, kpi="patients_started")


# ---------------------------------------------------------------------------------------------------------------
# Funnel plots


def _funnel_ref(name: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    units = pd.read_csv(REF / name)
    lim = pd.read_csv(REF / "funnel_limits.csv")
    disp = pd.read_csv(REF / "funnel_dispersion.csv").set_index("file").loc[name]
    return units, lim[lim["file"] == name], disp


@pytest.mark.parametrize("adjustment, low, high", [("none", "exact_low", "exact_high"),
                                                   ("multiplicative", "mult_low", "mult_high"),
                                                   ("additive", "add_low", "add_high")])
def test_funnel_limits_match_spiegelhalter_formulas_computed_in_r(adjustment, low, high):
    units, lim, disp = _funnel_ref("funnel_input.csv")
    res = qi.funnel_from_counts(units["x"], units["n"], units=units["unit"], adjustment=adjustment)
    assert res.adjustment == adjustment  # over-dispersed on purpose, so the adjustment is applied
    assert res.target == pytest.approx(disp["theta"], abs=1e-14)
    assert (res.phi, res.phi_p, res.tau2) == pytest.approx((disp["phi"], disp["phi_p"], disp["tau2"]), rel=1e-10)
    got = res.flags.merge(lim, on=["unit", "conf_level"])
    assert len(got) == 24
    np.testing.assert_allclose(got["lower"], got[low], rtol=0, atol=1e-12)
    np.testing.assert_allclose(got["upper"], got[high], rtol=0, atol=1e-12)


def test_funnel_without_over_dispersion_keeps_exact_limits_and_flags_nobody():
    units, lim, disp = _funnel_ref("funnel_input_plain.csv")
    res = qi.funnel_from_counts(units["x"], units["n"], units=units["unit"])
    assert res.adjustment == "none" and res.phi == pytest.approx(disp["phi"], rel=1e-10)
    got = res.flags.merge(lim, on=["unit", "conf_level"])
    # the interpolated exact limit can fall below 0 for small n (R: -0.037 for n = 12); proportions are clipped
    np.testing.assert_allclose(got["lower"], got["exact_low"].clip(0, 1), rtol=0, atol=1e-12)
    np.testing.assert_allclose(got["upper"], got["exact_high"].clip(0, 1), rtol=0, atol=1e-12)
    assert (got["exact_low"] < 0).sum() == 1
    assert res.outliers.empty
    assert any("not needed" in n for n in res.notes)


def test_over_dispersion_adjustment_removes_spurious_outliers():
    units, lim, _ = _funnel_ref("funnel_input.csv")
    raw = qi.funnel_from_counts(units["x"], units["n"], units=units["unit"], adjustment="none")
    adj = qi.funnel_from_counts(units["x"], units["n"], units=units["unit"])
    outer = lim[lim["conf_level"] == 0.998].merge(units, on=["unit", "n"])
    p = outer["x"] / outer["n"]
    expected = set(outer.loc[(p > outer["exact_high"]) | (p < outer["exact_low"]), "unit"])
    assert set(raw.outliers["unit"]) == expected == {"H"}
    inner = lim[lim["conf_level"] == 0.95].merge(units, on=["unit", "n"])
    p = inner["x"] / inner["n"]
    expected_inner = set(inner.loc[(p > inner["exact_high"]) | (p < inner["exact_low"]), "unit"])
    got_inner = raw.flags[(raw.flags["conf_level"] == 0.95) & (raw.flags["position"] != "within")]
    assert set(got_inner["unit"]) == expected_inner and len(expected_inner) == 7
    assert adj.outliers.empty


def test_funnel_by_clinician_flags_the_clinician_whose_patients_never_finish_induction():
    sessions = []
    for clin, n_done in (("dr_low", 2), ("dr_a", 16), ("dr_b", 16), ("dr_c", 16)):
        for i in range(20):
            days = (0, 3, 7, 10) if i < n_done else (0,)
            sessions += [ket(f"{clin}{i}", d + i, clinician=clin) for d in days]
    res = qi.funnel(cohort_of(sessions), unit="clinician", kpi="induction_completion", adjustment="none",
                    as_of=AS_OF)
    pos = res.flags[res.flags["conf_level"] == 0.998].set_index("unit")["position"]
    assert pos["dr_low"] == "below"
    assert (pos.drop("dr_low") == "within").all()
    assert res.units.set_index("unit").loc["dr_low", ["numerator", "denominator"]].tolist() == [2, 20]


def test_funnel_needs_two_units():
    with pytest.raises(InsufficientData, match="at least 2 sites"):
        qi.funnel(cohort_of([ket("a", 0, site="north")]), unit="site", kpi="ae_sessions")


# ---------------------------------------------------------------------------------------------------------------
# Patients needing attention


def test_attention_list_flags_worse_phq9_missed_followups_and_recent_safety_events():
    base = lambda pid, s: {"patient_id": pid, "session_date": day(-1), "session_type": "assessment", "phq9": s}
    sessions = [base("worse", 10), ket("worse", 0), base("same", 10), ket("same", 0), ket("missed", 0),
                ket("overdue", 20), ket("unsafe", 0), ket("unsafe", 100, bp_systolic_max=170), ket("gone", 0)]
    followups = [fu("worse", 30), fu("worse", 100, phq9=15), fu("same", 30), fu("same", 100, phq9=14),
                 fu("missed", 20), fu("overdue", 40), fu("unsafe", 30), fu("unsafe", 90),
                 fu("gone", 20, status="withdrew")]
    al = qi.patients_needing_attention(cohort_of(sessions, followups), as_of=day(115))
    reasons = al.table.groupby("patient_id")["reason"].apply(set).to_dict()
    assert reasons == {"worse": {"phq9_above_expected"},      # 15 is 5 above baseline 10
                       "missed": {"followup_missed"},         # day-90 window closed on day 111
                       "overdue": {"followup_overdue"},       # due day 110, window open until day 131
                       "unsafe": {"safety_flag"}}             # BP 170 on day 100
    assert "raised blood pressure" in al.table.set_index("patient_id").loc["unsafe", "detail"]
    assert al.by_patient["patient_id"].tolist() == ["missed", "overdue", "unsafe", "worse"]


def test_attention_followup_status_changes_from_overdue_to_missed_when_the_window_closes():
    c = cohort_of([ket("p", 0)], [fu("p", 30)])
    overdue = qi.patients_needing_attention(c, as_of=day(95))
    assert overdue.table["reason"].tolist() == ["followup_overdue"]
    missed = qi.patients_needing_attention(c, as_of=day(112))
    assert missed.table["reason"].tolist() == ["followup_missed"]
    # day 302: the day-90 (closed day 111) and day-180 (closed day 210) misses are older than the 90-day lookback
    assert qi.patients_needing_attention(c, as_of=day(302)).table.empty


def test_attention_uses_a_trajectory_prediction_when_given():
    base = {"patient_id": "p", "session_date": day(-1), "session_type": "assessment", "phq9": 20}
    c = cohort_of([base, ket("p", 0)], [fu("p", 30, phq9=12)])
    assert qi.patients_needing_attention(c, as_of=day(40)).table.empty  # 12 is below baseline 20
    expected = pd.DataFrame({"patient_id": ["p"], "days": [30], "expected_phq9": [6.0]})
    al = qi.patients_needing_attention(c, expected=expected, as_of=day(40))
    row = al.table.iloc[0]
    assert (row["reason"], row["value"], row["expected"]) == ("phq9_above_expected", 12.0, 6.0)
    assert "6 above the expected 6" in row["detail"]


# ---------------------------------------------------------------------------------------------------------------
# Figures and layering


def test_qi_figures_carry_limits_signals_labels_and_flow_counts():
    from analytics.report.plots import qi as plots

    data = pd.read_csv(REF / "pchart_input.csv")
    x = data["x"].tolist()
    x[-1] = 30
    cc = qi.p_chart(x, data["n"], labels=data["month"], chart="p")
    fig = plots.control_chart(cc)
    names = [t.name for t in fig.data]
    assert "Signal" in names and fig.layout.yaxis.title.text.endswith("(%)")
    signal = next(t for t in fig.data if t.name == "Signal")
    assert list(signal.x) == ["2026-02"]
    units, _, _ = _funnel_ref("funnel_input.csv")
    ff = plots.funnel_plot(qi.funnel_from_counts(units["x"], units["n"], units=units["unit"], adjustment="none",
                                                 kpi="induction_completion", label="Induction"))
    pts = next(t for t in ff.data if t.mode == "markers+text")
    assert list(pts.text) == units["unit"].tolist()
    flow = qi.patient_flow(_quarter_clinic(), uploaded_rows=20, quarantined=1)
    fd = plots.flow_diagram(flow)
    assert sum(len(t.x) for t in fd.data) == len(flow.steps)


def test_computation_modules_import_neither_streamlit_nor_plotly():
    # static check of the import statements (a fresh interpreter per test would cost seconds)
    import ast

    for module in ("qi", "safety"):
        tree = ast.parse((Path(qi.__file__).parent / f"{module}.py").read_text(encoding="utf-8"))
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not any(n.split(".")[0] in ("streamlit", "plotly") or n.startswith("analytics.report.plots")
                       for n in names), module
