"""Session monitoring (issue 22): the sample clinic's monitoring values are recovered, absent columns say so, the
serious-event bound is exact, small cells are hidden, and the generator's earlier columns did not move."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analytics.outcomes import monitoring
from analytics.outcomes.cohort import build_cohort
from analytics.sample import (
    MONITORING_COLUMNS,
    ROUTES,
    SESSION_COLUMNS,
    TRUE_EFFECTS,
    generate_clinic,
    write_clinic,
)
from schemas.frames import ValidatedExports

ROOT = Path(__file__).resolve().parents[1]
fx = TRUE_EFFECTS


@pytest.fixture(scope="module")
def clinic() -> dict[str, pd.DataFrame]:
    return generate_clinic(5000)


@pytest.fixture(scope="module")
def cohort(clinic):
    return build_cohort(ValidatedExports.from_frames(clinic["sessions"], clinic["followups"], clinic["patients"]))


def _ci99(k: int, n: int) -> tuple[float, float]:
    return stats.binomtest(k, n).proportion_ci(confidence_level=0.99)


def test_columns_the_generator_wrote_before_issue_22_are_byte_identical(tmp_path):
    """The committed sample (written before the monitoring columns existed) equals the new generator's output on
    every column it has: the new values come from their own random stream."""
    write_clinic(tmp_path, 1500)
    for name in ("sessions", "followups", "patients"):
        old = pd.read_csv(ROOT / "sample_data" / f"{name}.csv", dtype=str, keep_default_na=False)
        new = pd.read_csv(tmp_path / f"{name}.csv", dtype=str, keep_default_na=False)
        pd.testing.assert_frame_equal(old, new[old.columns])
    assert SESSION_COLUMNS[-len(MONITORING_COLUMNS):] == MONITORING_COLUMNS


def test_systolic_rise_share_per_route_is_recovered(cohort):
    m = monitoring.session_monitoring(cohort)
    rise = m.blood_pressure[m.blood_pressure["measure"] == "rise"].set_index("route")
    for r, name in enumerate(ROUTES):
        lo, hi = _ci99(int(rise.loc[name, "numerator"]), int(rise.loc[name, "denominator"]))
        assert lo <= fx.bp_rise_40min_rate[r] <= hi, name
    assert rise.loc[monitoring.ALL, "shown"]


def test_minutes_to_discharge_median_per_route_is_recovered(cohort):
    m = monitoring.session_monitoring(cohort).minutes.set_index("route")
    for r, name in enumerate(ROUTES):
        n, med = int(m.loc[name, "n"]), float(m.loc[name, "median"])
        # 99% distribution-free interval of the median: order statistics from the binomial(n, 1/2)
        values = np.sort(pd.to_numeric(cohort.sessions.loc[(cohort.sessions["route"] == name)
                                                           & (cohort.sessions["session_type"] == "ketamine"),
                                                           "minutes_to_discharge"]).dropna().to_numpy())
        assert len(values) == n
        k = int(stats.binom.ppf(0.005, n, 0.5))
        assert values[k - 1] - 1 <= fx.minutes_to_discharge_median[r] <= values[n - k] + 1, (name, med)


def test_dissociation_and_sedation_follow_their_truth(cohort):
    k = cohort.sessions[cohort.sessions["session_type"] == "ketamine"]
    for r, name in enumerate(ROUTES):
        d = pd.to_numeric(k.loc[k["route"] == name, "dissociation_score"]).dropna()
        assert abs(d.mean() - fx.dissociation_mean[r]) < 4 * d.std() / np.sqrt(len(d)), name
    sed = monitoring.session_monitoring(cohort).sedation.set_index("score")
    total = int(sed["n"].sum())
    for score, share in fx.sedation_share.items():
        lo, hi = _ci99(int(sed.loc[score, "n"]), total)
        assert lo <= share <= hi, score


def test_serious_events_per_1000_sessions_are_recovered_with_an_exact_interval(cohort):
    b = monitoring.session_monitoring(cohort, conf_level=0.99).serious
    assert b is not None and b.events > 0
    lo, hi = stats.binomtest(b.events, b.sessions).proportion_ci(confidence_level=0.99, method="exact")
    assert b.ci_low == pytest.approx(1000 * lo, rel=1e-9) and b.ci_high == pytest.approx(1000 * hi, rel=1e-9)
    assert b.ci_low <= 1000 * fx.serious_event_rate <= b.ci_high


def _tiny(n_sessions: int, **columns: object) -> ValidatedExports:
    ids = [f"{i:03d}" for i in range(n_sessions)]
    s = pd.DataFrame({"patient_id": ids, "session_date": "2025-01-10", "session_type": "ketamine", "route": "iv",
                      **columns})
    f = pd.DataFrame({"patient_id": ids, "assessment_date": "2025-02-10"})
    return ValidatedExports.from_frames(s, f)


def test_no_serious_event_gives_the_exact_bound_and_the_rule_of_three():
    c = build_cohort(_tiny(300, event_severity="no_event"))
    m = monitoring.session_monitoring(c)
    assert m.serious is not None and m.serious.events == 0
    assert m.serious.upper_bound == pytest.approx(1000 * (1 - 0.05 ** (1 / 300)), rel=1e-12)
    assert m.serious.rule_of_three == pytest.approx(10.0)
    from analytics.report.plots.monitoring import serious_sentence
    assert "rule of three: 10.00" in serious_sentence(m)


def test_an_export_without_monitoring_columns_says_not_recorded_never_zero():
    c = build_cohort(_tiny(40))
    m = monitoring.session_monitoring(c)
    assert not any(m.recorded.values()) and m.serious is None and m.blood_pressure.empty
    from analytics.report.plots.monitoring import parts_sentence, serious_sentence
    assert "not recorded in this export" in serious_sentence(m)
    assert len(parts_sentence(m)) == 7


def test_small_counts_are_hidden_with_what_would_give_them_away():
    bp = {"bp_systolic_pre": [120] * 60, "bp_systolic_40min": [170] * 3 + [125] * 57}
    c = build_cohort(_tiny(60, **bp))
    rise = monitoring.session_monitoring(c).blood_pressure
    rise = rise[rise["measure"] == "rise"]
    assert rise["numerator"].tolist() == [3, 3] and not rise["shown"].any()


def test_a_sedation_score_out_of_range_is_set_aside_with_its_line_and_column(tmp_path):
    from schemas.validate import load_exports

    (tmp_path / "s.csv").write_text("patient_id,session_date,session_type,route,sedation_score\n"
                                    "1,2025-01-10,ketamine,iv,4\n1,2025-01-17,ketamine,iv,9\n")
    (tmp_path / "f.csv").write_text("patient_id,assessment_date\n1,2025-02-10\n")
    data = load_exports(tmp_path / "s.csv", tmp_path / "f.csv", upload_date=pd.Timestamp("2025-03-01").date())
    issue = data.issues[data.issues["column"] == "sedation_score"]
    assert issue["line"].tolist() == [3] and issue["value"].tolist() == ["9"]
    assert data.files["sessions"].accepted == 1


def test_written_sample_keeps_every_monitoring_value_through_the_reader(tmp_path):
    """'none' is a missing-value word of the reader: the values meaning 'nothing happened' are no_event, no_action
    and no_issue, so a written and re-read clinic keeps a severity on every ketamine session."""
    from schemas.validate import load_exports

    paths = write_clinic(tmp_path, 200)
    data = load_exports(paths["sessions"], paths["followups"], paths["patients"])
    k = data.sessions[data.sessions["session_type"] == "ketamine"]
    assert k["event_severity"].notna().all() and k["action_taken"].notna().all()
    assert set(k["event_severity"]) <= {"no_event", "mild", "moderate", "severe", "serious"}
    sub = k[k["route"] == "sublingual"]
    assert sub["take_home_issue"].notna().all() and (sub["take_home_issue"] == "no_issue").mean() > 0.9
