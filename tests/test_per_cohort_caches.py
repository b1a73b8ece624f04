"""Issue 21: tables derived once per cohort (analytics.outcomes.memo) give exactly the figures of plain computations.

Safety figures are counted on integer codes and boolean matrices, KPI frames and the expected PHQ-9 are kept per
cohort: each is checked against a fresh computation on a copy of the cohort (nothing kept) and, for the counts,
against plain pandas group-bys written here from the definitions.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass, replace

import numpy as np
import pandas as pd
import pytest

from analytics.outcomes import benchmarks as bm
from analytics.outcomes import memo, protocols, qi, safety
from analytics.outcomes.attention import expected_phq9
from analytics.outcomes.cohort import Cohort, build_cohort
from analytics.outcomes.filters import Filters, apply_filters
from analytics.sample import generate_clinic
from schemas.frames import ValidatedExports

THRESHOLDS = (safety.VitalThresholds(), safety.VitalThresholds(systolic_mmhg=140, diastolic_mmhg=90,
                                                                heart_rate_bpm=110))


@pytest.fixture(scope="module")
def clinic() -> Cohort:
    frames = generate_clinic(500, seed=11)
    return build_cohort(ValidatedExports.from_frames(frames["sessions"], frames["followups"], frames["patients"]))


def _copy(cohort: Cohort) -> Cohort:
    """The same cohort as a new object with new tables: nothing computed for ``cohort`` can be found for it."""
    return replace(cohort, patients=cohort.patients.copy(), sessions=cohort.sessions.copy(),
                   followups=cohort.followups.copy(), measures=cohort.measures.copy())


def _assert_same(a: object, b: object, where: str = "result") -> None:
    if is_dataclass(a) and not isinstance(a, type):
        assert type(a) is type(b), where
        for f in fields(a):
            _assert_same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, check_exact=True, obj=where)
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (tuple, list)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b or (pd.isna(a) and pd.isna(b)), (where, a, b)


def _safety_results(cohort: Cohort) -> dict[str, object]:
    end = cohort.data_end_date()
    period = (end - pd.Timedelta(days=150), end - pd.Timedelta(days=10))
    out: dict[str, object] = {
        "categories": safety.safety_categories(cohort),
        "categories_28": safety.safety_categories(cohort, patient_window_days=28),
        "rates": safety.adverse_event_rates(cohort),
        "rates_period": safety.adverse_event_rates(cohort, period=period, patient_window_days=28),
    }
    for i, th in enumerate(THRESHOLDS):
        out[f"vitals_{i}"] = safety.vital_sign_elevations(cohort, thresholds=th)
        out[f"vitals_28_{i}"] = safety.vital_sign_elevations(cohort, thresholds=th, patient_window_days=28)
        out[f"trend_{i}"] = safety.safety_trend(cohort, thresholds=th)
        out[f"published_{i}"] = safety.published_comparison(cohort, thresholds=th)
        out[f"flags_{i}"] = safety.session_safety_flags(cohort, thresholds=th)
        out[f"flags_period_{i}"] = safety.session_safety_flags(cohort, thresholds=th, period=period)
    return out


def test_safety_figures_asked_again_of_the_same_cohort_equal_a_fresh_computation(clinic):
    fresh = _safety_results(_copy(clinic))
    first = _safety_results(clinic)
    again = _safety_results(clinic)  # from what was kept for this cohort
    _assert_same(first, fresh)
    _assert_same(again, fresh)


def _plain_patient_counts(cohort: Cohort, window_days: int | None = None) -> pd.DataFrame:
    """Per (route, event type): patients with at least one such session, by plain pandas group-bys."""
    flags = safety.session_safety_flags(cohort)
    ket = cohort.sessions[cohort.sessions["session_type"] == "ketamine"]
    matrix = safety.adverse_event_matrix(ket).reset_index(drop=True)
    keep = np.ones(len(flags), dtype=bool)
    if window_days is not None:
        closed = cohort.patients.loc[cohort.window_closed(window_days), "patient_id"]
        keep = (flags["days"] < window_days).to_numpy() & flags["patient_id"].isin(set(closed)).to_numpy()
    keyed = matrix[keep].assign(patient_id=flags["patient_id"][keep], route=flags["route"][keep])
    keyed["any"] = matrix[keep].any(axis=1)
    pairs = keyed.groupby(["patient_id", "route"]).any()
    rows = []
    for route, sub in pairs.groupby(level="route"):
        for event_type in sub.columns:
            rows.append({"route": route, "event_type": event_type, "numerator": int(sub[event_type].sum()),
                         "denominator": len(sub)})
    per_patient = keyed.drop(columns="route").groupby("patient_id").any()
    for event_type in per_patient.columns:
        rows.append({"route": safety.ALL, "event_type": event_type, "numerator": int(per_patient[event_type].sum()),
                     "denominator": len(per_patient)})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("window_days", [None, 28])
def test_per_patient_adverse_event_counts_equal_plain_group_bys(clinic, window_days):
    rates = safety.adverse_event_rates(_copy(clinic), patient_window_days=window_days)
    got = rates.table[rates.table["unit_of_analysis"] == "patient"]
    expected = _plain_patient_counts(clinic, window_days)
    merged = expected.merge(got, on=["route", "event_type"], suffixes=("_plain", ""), validate="one_to_one")
    assert len(merged) == len(expected) == len(got)
    assert (merged["numerator"] == merged["numerator_plain"]).all()
    assert (merged["denominator"] == merged["denominator_plain"]).all()


def test_per_session_vital_counts_equal_plain_counts(clinic):
    th = THRESHOLDS[1]
    flags = safety.session_safety_flags(clinic, thresholds=th)
    table = safety.vital_sign_elevations(_copy(clinic), thresholds=th).table
    for (route, measure), row in table[table["unit_of_analysis"] == "session"].set_index(["route", "measure"]).iterrows():
        sub = flags if route == safety.ALL else flags[flags["route"] == route]
        values = sub[measure]
        assert row["numerator"] == int(values.fillna(False).sum())
        assert row["denominator"] == int(values.notna().sum())
        assert row["n_missing"] == int(values.isna().sum())


def test_a_filtered_cohort_never_gets_the_figures_kept_for_the_whole_cohort(clinic):
    whole = safety.adverse_event_rates(clinic)
    site = str(clinic.patients["site"].dropna().iloc[0])
    narrowed = apply_filters(clinic, Filters(site=(site,)))
    part = safety.adverse_event_rates(narrowed)
    assert part.table["denominator"].max() < whole.table["denominator"].max()
    _assert_same(part, safety.adverse_event_rates(_copy(narrowed)))
    _assert_same(qi.patient_kpi_frame(narrowed, "followup_30"), qi.patient_kpi_frame(_copy(narrowed), "followup_30"))


def test_a_kept_table_cannot_be_changed_through_what_a_caller_was_given(clinic):
    flags = safety.session_safety_flags(clinic)
    flags["has_ae"] = False
    flags.loc[0, "route"] = "changed"
    assert safety.session_safety_flags(clinic)["has_ae"].any()
    assert safety.session_safety_flags(clinic).loc[0, "route"] != "changed"
    frame = qi.patient_kpi_frame(clinic, "induction_completion")
    frame["success"] = True
    assert not qi.patient_kpi_frame(clinic, "induction_completion")["success"].all()


def test_forget_drops_what_was_kept_and_the_figures_stay_the_same(clinic):
    before = safety.safety_categories(clinic)
    memo.forget(clinic)
    assert "_derived_once" not in clinic.__dict__
    _assert_same(safety.safety_categories(clinic), before)


def test_kpi_tiles_control_charts_and_funnels_equal_those_of_a_fresh_cohort(clinic):
    periods = qi.default_periods(clinic)

    def results(cohort: Cohort) -> list[object]:
        out: list[object] = [qi.kpis(cohort, period_a=periods[0], period_b=periods[1])]
        out += [qi.patient_kpi_frame(cohort, k) for k in qi.PATIENT_KPIS]
        out += [qi.control_chart(cohort, kpi=k) for k in ("induction_completion", "followup_30", "ae_sessions")]
        out += [qi.funnel(cohort, unit="site", kpi=k) for k in ("induction_completion", "ae_sessions")]
        return out

    fresh = results(_copy(clinic))
    _assert_same(results(clinic), fresh)
    _assert_same(results(clinic), fresh)


def test_induction_sessions_on_distinct_dates_equal_a_plain_group_by(clinic):
    got = protocols.induction_completed(_copy(clinic))
    s = clinic.sessions
    ket = s[(s["session_type"] == "ketamine") & (s["days"] >= 0)]
    window = pd.Series(got["window_days"].to_numpy(), index=got["patient_id"])
    ket = ket[ket["days"] < ket["patient_id"].map(window)]
    plain = ket.groupby("patient_id")["session_date"].nunique()
    expected = got["patient_id"].map(plain).fillna(0).astype(int)
    assert (got["n_sessions"].to_numpy() == expected.to_numpy()).all()
    assert got["n_sessions"].max() >= 4


def test_attention_list_by_patient_joins_like_a_group_by():
    table = pd.DataFrame({"patient_id": pd.Series(["p2", "p1", "p2", "p10", "p1"], dtype="string"),
                          "reason": ["a", "b", "c", "d", "e"], "detail": ["x2", "y1", "z2", "w10", "v1"],
                          "date": pd.Timestamp("2025-01-01"), "value": np.nan, "expected": np.nan})
    got = qi.AttentionList(table=table, as_of=pd.Timestamp("2025-02-01")).by_patient
    plain = (table.groupby("patient_id", sort=True)
             .agg(reasons=("detail", "; ".join), n_reasons=("reason", "size")).reset_index())
    pd.testing.assert_frame_equal(got, plain, check_exact=True)
    assert got["reasons"].tolist() == ["y1; v1", "w10", "x2; z2"]


def test_attention_page_figures_equal_those_of_a_fresh_cohort(clinic):
    def results(cohort: Cohort) -> list[object]:
        expected, note = expected_phq9(cohort)
        attention = qi.patients_needing_attention(cohort, expected=expected, phq9_margin=5)
        return [expected, note, attention, attention.by_patient]

    fresh = results(_copy(clinic))
    _assert_same(results(clinic), fresh)
    _assert_same(results(clinic), fresh)


def test_benchmark_comparison_asked_again_equals_a_fresh_one(clinic):
    fresh = bm.compare(_copy(clinic), min_share=0.5)
    _assert_same(bm.compare(clinic, min_share=0.5), fresh)
    _assert_same(bm.compare(clinic, min_share=0.5), fresh)
