"""Substance-use outcomes (analytics/outcomes/substance_use.py): recovery on the sample clinic, hand-built rules."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analytics.errors import InsufficientData
from analytics.outcomes import substance_use as su
from analytics.outcomes.cohort import build_cohort
from analytics.sample import DEFAULT_SEED, TRUE_EFFECTS, generate_clinic
from schemas.frames import ValidatedExports
from schemas.validate import load_exports

SU = TRUE_EFFECTS.substance_use


@pytest.fixture(scope="module")
def clinic():
    return generate_clinic(2500, seed=DEFAULT_SEED, with_truth=True)


@pytest.fixture(scope="module")
def cohort(clinic):
    return build_cohort(ValidatedExports.from_frames(clinic["sessions"], clinic["followups"], clinic["patients"],
                                                     clinic["daily_use"]))


def test_therapy_keeps_more_days_abstinent_and_fewer_heavy_days_as_the_true_hazard_ratio_implies(cohort):
    pda = su.use_course(cohort, measure="pda")
    heavy = su.use_course(cohort, measure="heavy")
    assert pda.sources["daily log"] > 0 and pda.sources["follow-up"] > 0
    for course, better, apart in ((pda, np.greater, True), (heavy, np.less, False)):
        p = course.predicted
        at = p["weeks"] == p["weeks"].iloc[(p["weeks"] - 26).abs().argmin()]  # about 6 months
        ther = p[at & (p["group"] == "ketamine + therapy")].iloc[0]
        only = p[at & (p["group"] == "ketamine only")].iloc[0]
        assert better(ther["estimate"], only["estimate"])
        assert not apart or not (ther["ci_low"] <= only["estimate"] <= ther["ci_high"])
    assert heavy.formula.startswith("heavy_pct ~") and any("heavy-drinking" in n for n in heavy.notes)
    assert heavy.n_patients < pda.n_patients  # alcohol patients only


def test_urine_negative_share_excludes_prescribed_and_in_treatment_ketamine(clinic, cohort):
    ur = su.urine_results(cohort, by=None)
    t = ur.table.set_index(["substance", "window"])
    tests = su._urine_tests(cohort)
    tests = tests[tests["days"] <= 30]
    w = su.WINDOWS[1][0]
    # any non-prescribed substance: negative exactly when urine_tox is (the generator's use in the last 3 days)
    row = t.loc[("any non-prescribed substance", w)]
    assert row["n_tests"] == len(tests) and row["n_negative"] == int(tests["urine_tox"].eq("negative").sum())
    bup = t.loc[("buprenorphine", w)]
    assert bup["n_excluded"] > 0 and bup["n_negative"] == bup["n_tests"]  # found only in patients prescribed it
    ket = t.loc[("ketamine", w)]
    assert ket["n_excluded"] > 0 and ur.n_excluded >= bup["n_excluded"] + ket["n_excluded"]
    assert 0 <= row["ci_low"] <= row["estimate"] <= row["ci_high"] <= 100


def test_urine_by_substance_not_recorded_falls_back_to_urine_tox(clinic):
    f = clinic["followups"].drop(columns=["urine_substances"])
    c = build_cohort(ValidatedExports.from_frames(clinic["sessions"], f, clinic["patients"]))
    ur = su.urine_results(c, by=None)
    assert not ur.by_substance and set(ur.table["substance"]) == {"any substance (urine_tox)"}
    assert any("not recorded in this export" in n for n in ur.notes)


S = b"patient_id,session_date,session_type,route\n" + b"".join(
    f"{i},2024-01-01,ketamine,iv\n".encode() for i in range(1, 6))
F = (b"patient_id,assessment_date,window_days,days_abstinent,any_use,relapse_date\n"
     b"1,2024-06-29,30,30,no,\n"          # day 180, days 151-180 abstinent: covered
     b"2,2024-06-29,30,20,yes,\n"         # use inside 151-180
     b"3,2024-07-09,30,30,no,\n"          # day 190 covers 161-190 only: missing
     b"4,2024-05-01,90,90,no,\n")         # day 121: does not reach the window: missing
D = b"patient_id,date,substance,used,amount\n" + b"".join(
    f"5,{(pd.Timestamp('2024-01-01') + pd.Timedelta(days=d)).date()},alcohol,{'yes' if d == 170 else 'no'},"
    f"{6 if d == 170 else 0}\n".encode() for d in range(0, 200))


def test_30_day_continuous_abstinence_has_both_bounds_with_their_counts():
    c = build_cohort(load_exports(S, F, daily_use=D, upload_date=pd.Timestamp("2025-03-01").date()))
    status = su.window_status(c, 151, 180)
    assert status.to_dict() == {"1": "abstinent", "2": "use", "3": "missing", "4": "missing", "5": "use"}
    t = su.continuous_abstinence(c, by=None).table.set_index("month")
    six = t.loc[6]
    assert (six["n_eligible"], six["n_abstinent"], six["n_use"], six["n_missing"]) == (5, 1, 2, 2)
    assert six["missing_as_use_pct"] == pytest.approx(20.0) and six["completers_pct"] == pytest.approx(100 / 3)
    assert 12 not in t.index  # the data end (day 199 of the log) is before day 365: nobody is eligible yet
    assert "missing counted as use" in su.continuous_abstinence(c, by=None).definition


def test_courses_say_not_recorded_when_a_measure_is_absent(clinic, cohort):
    full = su.courses(cohort)
    assert set(full.table["measure"]) == set(su.COURSES) and not full.missing
    t = full.table[full.table["measure"] == "bam_risk"].set_index(["group", "window_order"])
    diff = t.loc[("ketamine only", 3), "estimate"] - t.loc[("ketamine + therapy", 3), "estimate"]
    assert abs(diff - (-SU.bam_risk[2])) < 0.8  # therapy lowers BAM risk by 2 points
    f = clinic["followups"].drop(columns=["audit_c", "bam_use", "bam_risk", "bam_protective"])
    c = build_cohort(ValidatedExports.from_frames(clinic["sessions"], f, clinic["patients"]))
    part = su.courses(c)
    assert "AUDIT-C (0–12): not recorded in this export." in part.notes
    assert set(part.table["measure"]) == {"craving", "gad7"}


def test_no_use_data_is_a_sentence_not_an_exception():
    f = b"patient_id,assessment_date,phq9\n1,2024-02-01,10\n"
    c = build_cohort(load_exports(S, f, upload_date=pd.Timestamp("2025-03-01").date()))
    with pytest.raises(InsufficientData, match="not recorded in this export"):
        su.use_course(c, measure="pda")
    with pytest.raises(InsufficientData, match="not recorded in this export"):
        su.urine_results(c)


def test_shown_tables_hide_counts_of_1_to_10_and_what_would_reveal_them():
    t = pd.DataFrame({"group": ["a", "b", "All patients"], "month": 6, "mark_day": 180, "n_eligible": [60, 40, 100],
                      "n_abstinent": [30, 5, 35], "n_use": [20, 20, 40], "n_missing": [10, 15, 25]})
    for name in ("missing_as_use", "completers"):
        for part in ("pct", "low", "high"):
            t[f"{name}_{part}"] = 50.0
    cab = su.ContinuousAbstinence(table=t, definition="", conf_level=0.95)
    shown = su.abstinence_table(cab).set_index("group")
    assert shown.loc["b", "abstinent"] == "<11" and shown.loc["a", "missing"] == "<11"
    assert "hidden" in shown.loc["b", "missing = use, % (95% CI)"]
    assert "hidden" in shown.loc["b", "completers only, % (95% CI)"]
    # the margin row must not give the hidden cells away: a complementary cell is hidden too
    assert (shown.loc[["a", "All patients"], "abstinent"] == "*").any()
    off = su.abstinence_table(cab, enabled=False).set_index("group")
    assert off.loc["b", "abstinent"] == "5"


def test_pack_section_shows_every_part_on_the_sample_clinic(cohort):
    from analytics.report.pack import _Pack, _substance_use

    pack = _Pack(parts=[], suppress=True, min_cell=11)
    _substance_use(pack, cohort)
    html = "\n".join(pack.parts)
    for text in ("Percent days abstinent (PDA)", "heavy-drinking", "30-day continuous abstinence at 6 / 12 months",
                 "missing = use, % (95% CI)", "Urine tests negative", "AUDIT-C (0–12)", "excluded as prescribed"):
        assert text in html, text
    assert 'class="warn"' not in html


def test_list_membership_is_item_membership():
    """An item is found in a ';' list exactly when it is one of the list's items (not a part of one)."""
    from analytics.outcomes.substance_use import _lists_have, _padded
    lists = pd.Series(["cocaine;opioids", "opioid", None, "", "benzodiazepines;cannabis", "ketamine", "x;;cocaine"],
                      dtype="string")
    padded = _padded(lists)
    for item in ("cocaine", "opioids", "opioid", "cannabis", "ketamine", "benzo"):
        expected = [item in (v.split(";") if isinstance(v, str) else []) for v in lists.astype(object)]
        assert _lists_have(padded, item).tolist() == expected, item
