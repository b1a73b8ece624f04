"""The early-dropout window is a setting (Settings.dropout_rule): the flow, the dropout sensitivity analysis and
the key indicators follow it; counts checked against a hand-built clinic."""

from __future__ import annotations

import pandas as pd
import pytest

from analytics.outcomes import qi, survival
from analytics.outcomes.cohort import build_cohort, early_dropouts
from analytics.outcomes.settings import DropoutRule, Settings
from schemas.frames import ValidatedExports

END = pd.Timestamp("2025-06-30")
# days between each patient's first (only) ketamine session and the data end date; none has a follow-up
STARTED_DAYS_BEFORE_END = {"a": 10, "b": 29, "c": 30, "d": 43, "e": 44, "f": 59, "g": 60, "h": 120}


def _cohort(rule: DropoutRule | None) -> object:
    day = lambda k: (END - pd.Timedelta(days=k)).strftime("%Y-%m-%d")
    sessions = [{"patient_id": pid, "session_date": day(k), "session_type": "ketamine", "route": "iv"}
                for pid, k in STARTED_DAYS_BEFORE_END.items()]
    sessions.append({"patient_id": "z", "session_date": day(200), "session_type": "ketamine", "route": "iv"})
    followups = pd.DataFrame([{"patient_id": "z", "assessment_date": day(0), "any_use": "no"}])  # sets the data end
    settings = Settings(suppress=False) if rule is None else Settings(suppress=False, dropout_rule=rule)
    return build_cohort(ValidatedExports.from_frames(pd.DataFrame(sessions), followups), settings)


# A patient is an early dropout when index + first_followup_day + grace_days <= data end, i.e. when they started
# at least (first_followup_day + grace_days) days before it: counted by hand from STARTED_DAYS_BEFORE_END.
@pytest.mark.parametrize(("rule", "expected"), [
    (None, {"e", "f", "g", "h"}),                                       # default: day 30 + 14 → 44 days
    (DropoutRule(first_followup_day=30, grace_days=0), {"c", "d", "e", "f", "g", "h"}),
    (DropoutRule(first_followup_day=45, grace_days=15), {"g", "h"}),    # 60 days
    (DropoutRule(first_followup_day=90, grace_days=30), {"h"}),         # 120 days
])
def test_changing_the_dropout_window_changes_the_dropout_count_as_counted_by_hand(rule, expected):
    cohort = _cohort(rule)
    early = set(cohort.patients.loc[early_dropouts(cohort).to_numpy(), "patient_id"])
    assert early == expected
    r = cohort.settings.dropout_rule
    # the flow: early dropouts apart from "no follow-up yet"
    flow = qi.patient_flow(cohort, as_of=END)
    losses = flow.losses[flow.losses["step"] == "analysed_survival"].set_index("reason")["n"]
    early_reason = [k for k in losses.index if k.startswith("early dropout")]
    assert early_reason and str(r.closes_day) in early_reason[0]
    assert losses[early_reason[0]] == len(expected)
    assert losses.get("no follow-up assessment yet (first window still open)", 0) == 8 - len(expected)
    # the sensitivity figure / key indicators: every early dropout is an event under "dropout = return to use"
    sens = survival.dropout_sensitivity(cohort)
    assert sens.n_early_dropout == len(expected)
    assert sens.rule == r
    table = sens.table.set_index("rule")
    assert table.at[survival.DROPOUT_EVENT, "n"] == 1 + len(expected)
    assert table.at[survival.DROPOUT_CENSORED, "n"] == 1
    # and every caption says which window was used
    assert f"by day {r.closes_day}" in cohort.settings.describe()
    assert f"day {r.first_followup_day} + {r.grace_days} days' grace" in r.describe()


def test_a_dropout_window_that_cannot_be_used_is_refused_with_what_to_do():
    with pytest.raises(ValueError, match="at least 1"):
        DropoutRule(first_followup_day=0)


def test_the_dropout_window_is_changed_in_the_sidebar_and_used_by_the_pages():
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "dashboard.py"), default_timeout=240)
    at.run()
    at.number_input(key="w_dropout_day").set_value(60).run()
    at.number_input(key="w_dropout_grace").set_value(0).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["dropout_first_followup_day"] == 60 and at.session_state["dropout_grace_days"] == 0
    shown = " ".join(c.value for c in at.caption)
    assert "day 60 + 0 days' grace, i.e. day 60" in shown
    at.switch_page("pages/survival.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.number_input(key="w_dropout_day").value == 60
