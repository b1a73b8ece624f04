"""Issue #19: expected effects vs events needing action vs serious events, like-for-like safety benchmarks by route,
and induction completion per program/route protocol. Hand-built clinics with known answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.proportion import proportion_confint

from analytics.errors import InsufficientData, OutcomesError
from analytics.outcomes import benchmarks as bm
from analytics.outcomes import protocols, qi, safety
from analytics.outcomes.cohort import build_cohort
from analytics.outcomes.protocols import InductionProtocol
from analytics.outcomes.settings import Settings
from schemas.frames import ValidatedExports

DAY0 = pd.Timestamp("2025-03-03")


def day(d: int) -> str:
    return (DAY0 + pd.Timedelta(days=d)).strftime("%Y-%m-%d")


def ket(pid: str, d: int, route: str = "iv", **extra: object) -> dict:
    return {"patient_id": pid, "session_date": day(d), "session_type": "ketamine", "route": route, **extra}


def cohort_of(sessions: list[dict], patients: list[dict] | None = None, settings: Settings | None = None):
    followups = pd.DataFrame(columns=["patient_id", "assessment_date"])
    p = pd.DataFrame(patients) if patients else None
    return build_cohort(ValidatedExports.from_frames(pd.DataFrame(sessions), followups, p), settings)


# ---------------------------------------------------------------------------------------------------------------
# Categories


def _category_clinic():
    # IV: 3 sessions; expected events 3 (dissociation, nausea, hypertension), other 2 (vomiting, headache)
    # IM: 2 sessions; expected 2 (sedation, dizziness), other 0; intranasal: 1 session without events
    return cohort_of([
        ket("a", 0, adverse_events="dissociation;nausea;vomiting"), ket("a", 7, adverse_events="hypertension"),
        ket("b", 0, adverse_events="headache"),
        ket("c", 0, "im", adverse_events="sedation;dizziness"), ket("c", 3, "im"),
        ket("d", 0, "intranasal"),
    ])


def _row(table: pd.DataFrame, category: str, unit: str, route: str) -> pd.Series:
    return table.set_index(["category", "unit_of_analysis", "route"]).loc[(category, unit, route)]


def test_expected_effects_and_other_events_are_counted_per_100_sessions_and_per_patient_by_route():
    cats = safety.safety_categories(_category_clinic())
    t = cats.table
    iv = _row(t, "expected", "session", "iv")
    assert (iv["numerator"], iv["denominator"], iv["estimate"]) == (3, 3, 100.0)
    lo, hi = safety.poisson_exact_ci(3, 3)
    assert (iv["ci_low"], iv["ci_high"]) == (pytest.approx(100 * lo[0]), pytest.approx(100 * hi[0]))
    assert _row(t, "not_classifiable", "session", "iv")["numerator"] == 2
    assert _row(t, "expected", "session", "im")[["numerator", "denominator"]].tolist() == [2, 2]
    assert _row(t, "not_classifiable", "session", "im")["numerator"] == 0
    everyone = _row(t, "expected", "session", "all")
    assert (everyone["numerator"], everyone["denominator"]) == (5, 6)
    assert everyone["estimate"] == pytest.approx(500 / 6) and everyone["scale"] == "per_100_sessions"
    # per patient: a and c had an expected effect, b only a headache, d nothing
    pat = _row(t, "expected", "patient", "all")
    assert (pat["numerator"], pat["denominator"], pat["scale"]) == (2, 4, "proportion")
    lo, hi = proportion_confint(2, 4, alpha=0.05, method="wilson")
    assert (pat["ci_low"], pat["ci_high"]) == (pytest.approx(lo), pytest.approx(hi))
    assert _row(t, "not_classifiable", "patient", "iv")[["numerator", "denominator"]].tolist() == [2, 2]
    assert _row(t, "expected", "patient", "intranasal")[["numerator", "denominator"]].tolist() == [0, 1]


def test_needed_action_and_serious_are_reported_as_not_recorded_never_as_zero():
    cats = safety.safety_categories(_category_clinic())
    missing = cats.table[cats.table["category"].isin(["needed_action", "serious"])]
    assert len(missing) == 2 * 2 * 4  # 2 categories × 2 units × (3 routes + all)
    assert not missing["recorded"].any() and missing["numerator"].isna().all() and missing["estimate"].isna().all()
    assert (missing["denominator"] > 0).all()
    assert any("needed a clinical response" in n and "not recorded, not zero" in n for n in cats.notes)
    assert any("serious" in n and "not recorded" in n for n in cats.notes)
    assert cats.expected_types == ("dizziness", "nausea", "hypertension", "dissociation", "sedation")


def test_expected_effects_are_a_choice_of_contract_types():
    cats = safety.safety_categories(_category_clinic(), expected=("dissociation",))
    assert _row(cats.table, "expected", "session", "all")["numerator"] == 1
    assert _row(cats.table, "not_classifiable", "session", "all")["numerator"] == 6
    with pytest.raises(ValueError, match="vertigo"):
        safety.safety_categories(_category_clinic(), expected=("vertigo",))


def test_categories_need_a_ketamine_session_in_the_period():
    with pytest.raises(InsufficientData, match="at least 1 ketamine session"):
        safety.safety_categories(_category_clinic(), period=(day(100), day(200)))


# ---------------------------------------------------------------------------------------------------------------
# Serious events per 1,000 sessions: exact bound, rule of three


@pytest.mark.parametrize("sessions, published_pct", [(1985, 0.15), (1779, 0.17), (206, 1.44), (296, 1.01)])
def test_zero_event_upper_bound_reproduces_the_published_escalation_audit(sessions, published_pct):
    """JPN-AUD (published-benchmarks-2.md): 0 events; one-sided 95% upper bounds 0.15% (1,985 sessions), IV 0.17%,
    IM 1.44%, per patient 1.01% (296): exact binomial, which the rule of three (3/n) approximates."""
    b = safety.event_bound(0, sessions)
    assert b.per_1000 == 0 and b.ci_low == 0
    assert round(b.upper_bound / 10, 2) == published_pct  # per 1,000 → %
    assert b.upper_bound == pytest.approx(1000 * (1 - 0.05 ** (1 / sessions)))
    assert b.rule_of_three == pytest.approx(3000 / sessions)
    assert abs(b.upper_bound - b.rule_of_three) / b.rule_of_three < 0.01


def test_event_bound_with_events_is_clopper_pearson():
    b = safety.event_bound(2, 1000)
    lo, hi = proportion_confint(2, 1000, alpha=0.05, method="beta")
    assert (b.per_1000, b.ci_low, b.ci_high) == (2.0, pytest.approx(1000 * lo), pytest.approx(1000 * hi))
    _, one_sided = proportion_confint(2, 1000, alpha=0.10, method="beta")
    assert b.upper_bound == pytest.approx(1000 * one_sided) and b.rule_of_three is None
    with pytest.raises(InsufficientData, match="at least 1 session"):
        safety.event_bound(0, 0)


def test_serious_events_are_not_recorded_but_the_bound_for_none_is_given_per_route():
    s = safety.safety_categories(_category_clinic()).serious.set_index("route")
    assert not s["recorded"].any() and s["n_sessions_with_event"].isna().all() and s["upper_bound"].isna().all()
    assert s.loc["all", "n_sessions"] == 6 and s.loc["iv", "n_sessions"] == 3
    assert s.loc["all", "upper_bound_if_none"] == pytest.approx(safety.event_bound(0, 6).upper_bound)
    assert s.loc["iv", "rule_of_three"] == pytest.approx(1000.0)


# ---------------------------------------------------------------------------------------------------------------
# Published safety figures: same route, unit and kind of event


def _iv_im_clinic():
    sessions = []
    for i in range(12):
        sessions += [ket(f"iv{i}", 0, adverse_events="dissociation" if i < 5 else None),
                     ket(f"im{i}", 0, "im", adverse_events="nausea" if i < 2 else None)]
    return cohort_of(sessions)


def _with_intranasal():
    sessions = [ket(f"in{i}", d, "intranasal", adverse_events="dissociation" if (i < 3 and d == 0) else None)
                for i in range(12) for d in (0, 40)]
    sessions += [ket(f"iv{i}", 0, adverse_events="dissociation") for i in range(12)]
    return cohort_of(sessions)


def test_each_safety_benchmark_row_is_compared_only_on_its_route_and_kind_of_event(tmp_path):
    comp = safety.published_comparison(_iv_im_clinic(), registry_path=tmp_path / "none.toml")
    t = comp.table
    for _, r in t.iterrows():
        b = next(b for b in safety.SAFETY_BENCHMARKS if b.metric == r["metric"])
        assert r["published_route"] == b.route
        if b.published_id in ("SPR-AE", "SLL23", "HUL22"):  # intranasal / sublingual: none in this clinic
            assert not r["comparable"] and r["route"] == "all"
            assert f"no {b.route} ketamine sessions (routes recorded: im, iv)" in r["reason"]
        elif b.published_id == "AHU22":  # IM sessions exist, but it counts events that needed action
            assert not r["comparable"] and r["route"] == "im" and "needed a clinical response" in r["reason"]
        else:  # ROD20: IV
            assert b.published_id == "ROD20" and r["comparable"] and r["route"] == "iv" and r["reason"] == ""
    assert set(t["published_id"]) == {"SPR-AE", "ROD20", "AHU22", "SLL23", "HUL22"}
    assert any("not compared" in n for n in comp.notes)


def test_spravato_rows_count_intranasal_patients_only_when_the_clinic_has_them(tmp_path):
    comp = safety.published_comparison(_with_intranasal(), registry_path=tmp_path / "none.toml", as_of=day(60))
    dis = comp.table.set_index("metric").loc["patients with dissociation in the first 4 weeks"]
    assert dis["comparable"] and dis["route"] == "intranasal"
    assert (dis["numerator"], dis["denominator"]) == (3, 12)  # the 12 IV patients with dissociation are not counted


def test_chart_draws_the_clinic_point_only_for_comparable_rows(tmp_path):
    from analytics.report.plots import safety as plots

    comp = safety.published_comparison(_iv_im_clinic(), registry_path=tmp_path / "none.toml")
    fig = plots.published_comparison_chart(comp)
    clinic = fig.data[0]
    drawn = {y for x, y in zip(clinic.x, clinic.y) if x is not None and not math.isnan(x)}
    assert drawn and all("[ROD20" in y for y in drawn)
    assert "not compared" in fig.layout.xaxis.title.text.replace("<br>", " ")


def test_registry_safety_specs_name_the_route_and_kind_of_event_of_their_source():
    expected_route = {"SPR-AE": "intranasal", "SPR-DIS": "intranasal", "ROD20": "iv", "AHU22": "im",
                      "HUL22": "sublingual", "SLL23": "sublingual"}
    specs = [b for b in bm.load_registry() if b.domain == "safety" and b.clinic is not None]
    assert {b.row for b in specs} == set(expected_route)
    for b in specs:
        kw = b.clinic.kwargs()
        assert kw.get("route") == expected_route[b.row], b.id
        assert kw.get("category", "any") == ("needed_action" if b.row == "AHU22" else "any"), b.id
        assert b.unit_of_analysis == f"per {kw.get('per', 'patient')}", b.id
    by_id = {b.registry_id: b for b in safety.SAFETY_BENCHMARKS}
    for b in specs:  # the safety page's mapping agrees with the registry
        if b.id in by_id:
            assert by_id[b.id].route == b.clinic.kwargs()["route"], b.id
            assert (by_id[b.id].category == "needed_action") == (b.row == "AHU22"), b.id


def test_a_clinic_without_intranasal_sessions_gets_a_reason_for_every_spravato_row():
    cohort = _iv_im_clinic()
    t = bm.compare(cohort, as_of=day(60)).table.set_index("id")
    spr = [b.id for b in bm.load_registry() if b.row in ("SPR-AE", "SPR-DIS") and b.clinic is not None]
    assert len(spr) == 11
    for i in spr:
        assert np.isnan(t.loc[i, "clinic_estimate"])
        assert "no intranasal ketamine sessions (routes found: im, iv)" in t.loc[i, "clinic_reason"], i
    assert "needed a clinical response" in t.loc["AHU22", "clinic_reason"]
    assert t.loc["ROD20/dissociation", "clinic_estimate"] == pytest.approx(100 * 5 / 12)
    fig = bm.bp_elevation_rate(cohort, route="sublingual")
    assert fig.estimate is None and "no sublingual ketamine sessions" in fig.reason


def test_expected_category_counts_expected_effects_only():
    fig = bm.adverse_event_rate(_category_clinic(), category="expected", per="session", route="iv")
    assert (fig.n, fig.events) == (3, 2)  # sessions a/0 and a/7; b's headache is not expected
    assert bm.adverse_event_rate(_category_clinic(), category="serious").reason.startswith("The exports have no")


# ---------------------------------------------------------------------------------------------------------------
# Induction completion per program/route protocol


def _protocol_clinic(settings: Settings | None = None):
    sessions = (
        [ket("kare_done", d) for d in (0, 7, 14)] + [ket("kare_late", d) for d in (0, 7, 21)]
        + [ket("spr_done", d, "intranasal") for d in (0, 3, 7, 10, 14, 17, 21, 24)]
        + [ket("spr_short", d, "intranasal") for d in (0, 3, 7, 10, 14, 17, 21)]
        + [ket("dep_done", d) for d in (0, 2, 4, 7, 9, 11)] + [ket("dep_im", d, "im") for d in (0, 7, 14, 21)]
        + [ket("other", d) for d in (0, 7, 14, 21)] + [ket("none", d) for d in (0, 7, 14)]
        + [ket("fresh", 100, "intranasal")]
    )
    patients = [{"patient_id": "kare_done", "program": "KARE"}, {"patient_id": "kare_late", "program": " kare "},
                {"patient_id": "spr_done", "program": "ketamine + therapy"}, {"patient_id": "spr_short"},
                {"patient_id": "dep_done", "program": "depression"}, {"patient_id": "dep_im", "program": "Depression"},
                {"patient_id": "other", "program": "ketamine only"}, {"patient_id": "none"},
                {"patient_id": "fresh"}]
    return cohort_of(sessions, patients, settings)


def test_induction_is_completed_against_each_patients_program_or_route_protocol():
    ind = protocols.induction_completed(_protocol_clinic(), protocols.DEFAULT_INDUCTION_PROTOCOLS,
                                        as_of=day(110)).set_index("patient_id")
    expect = {  # protocol, required, window, sessions counted, completed
        "kare_done": ("KARE", 3, 21, 3, True), "kare_late": ("KARE", 3, 21, 2, False),
        "spr_done": ("Spravato label", 8, 28, 8, True), "spr_short": ("Spravato label", 8, 28, 7, False),
        "dep_done": ("IV depression (Oliver 2022)", 6, 21, 6, True),
        "dep_im": ("default", 4, 28, 4, True),  # depression program, but IM: not Oliver's IV protocol
        "other": ("default", 4, 28, 4, True), "none": ("default", 4, 28, 3, False),
    }
    for pid, (name, required, window, n, done) in expect.items():
        row = ind.loc[pid]
        assert (row["protocol"], row["required"], row["window_days"], row["n_sessions"], row["completed"]) == (
            name, required, window, n, done), pid
        assert row["window_closed"]
    assert not ind.loc["fresh", "window_closed"]  # day 100 + 27 is after day 110


def test_induction_protocols_come_from_the_settings_and_need_a_default():
    own = (InductionProtocol("twice", 2, 10, programs=("ketamine only",)), InductionProtocol("default", 5, 28))
    ind = protocols.induction_completed(_protocol_clinic(Settings(induction_protocols=own))).set_index("patient_id")
    assert ind.loc["other", ["protocol", "n_sessions", "completed"]].tolist() == ["twice", 2, True]
    assert ind.loc["kare_done", ["protocol", "completed"]].tolist() == ["default", False]
    with pytest.raises(OutcomesError, match="must end with a default entry"):
        protocols.check_protocols(own[:1])
    with pytest.raises(OutcomesError, match="cannot be met"):
        protocols.check_protocols((InductionProtocol("x", 5, 3),))
    text = protocols.describe_protocols(protocols.DEFAULT_INDUCTION_PROTOCOLS)
    for part in ("KARE (program 'kare'): ≥ 3", "Spravato label (first ketamine session intranasal): ≥ 8",
                 ("IV depression (Oliver 2022) (program 'iv depression' or 'depression' or 'trd', first ketamine "
                  "session IV): ≥ 6"),
                 "default (any other program or route): ≥ 4 ketamine sessions on different days in days 0–27"):
        assert part in text


def test_overview_kpi_uses_the_protocol_of_each_patient_and_its_own_window():
    frame = qi.patient_kpi_frame(_protocol_clinic(), "induction_completion", as_of=day(110)).set_index("patient_id")
    assert frame.loc["kare_done", "success"] and not frame.loc["kare_late", "success"]
    assert frame.loc["spr_done", "success"] and not frame.loc["spr_short", "success"]
    assert frame.loc["dep_done", "success"] and frame.loc["other", "success"] and not frame.loc["none", "success"]
    assert frame.loc["kare_done", "due_date"] == pd.Timestamp(day(20))  # 21-day window: due on day 20
    assert frame.loc["spr_done", "due_date"] == pd.Timestamp(day(27))
    assert not frame.loc["fresh", "assessable"]
    # the KPI options' shortcut sets the default protocol only
    short = qi.patient_kpi_frame(_protocol_clinic(), "induction_completion", as_of=day(110),
                                 options=qi.KpiOptions(induction_sessions=3)).set_index("patient_id")
    assert short.loc["none", "success"] and not short.loc["spr_short", "success"]


# ---------------------------------------------------------------------------------------------------------------
# Figure


def test_category_chart_names_what_is_not_recorded_and_hides_small_counts():
    from analytics.report.plots import safety as plots

    cats = safety.safety_categories(_category_clinic())
    fig = plots.safety_categories_chart(cats)
    assert {t.name for t in fig.data} == {"IM", "Intranasal", "IV", "All routes"}
    assert "expected acute effects recorded" in fig.data[0].x
    assert "adverse events that needed action" not in fig.data[0].x
    note = fig.layout.xaxis.title.text.replace("<br>", " ")
    assert "Not recorded" in note and "serious adverse events" in note
    hidden = plots.safety_categories_chart(cats, min_cell=11)  # every count here is 1–10
    assert all(np.isnan(np.asarray(t.y, dtype=float)).all() for t in hidden.data)
    assert all(c is None for t in hidden.data for c in t.customdata)
    per_patient = plots.safety_categories_chart(cats, unit_of_analysis="patient")
    assert per_patient.layout.yaxis.title.text.endswith("(%)")
