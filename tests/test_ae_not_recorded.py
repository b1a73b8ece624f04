"""A clinic whose exports record no adverse event (no adverse_events column) sees "not recorded", never "0 per 100":
Overview KPIs, the Safety page and the meeting pack (#18)."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

from streamlit.testing.v1 import AppTest

from analytics.outcomes import qi
from analytics.outcomes.cohort import build_cohort

sys.path.insert(0, str(Path(__file__).parent))
from test_app_honest_loads import _without

ROOT = Path(__file__).resolve().parents[1]
ZERO_RATE = re.compile(r"\b0(\.0+)? per 100\b")


def test_the_adverse_event_rate_kpi_is_not_recorded_not_zero():
    cohort = build_cohort(_without("adverse_events"))
    table = qi.kpis(cohort, period_a=(a := qi.default_periods(cohort))[0], period_b=a[1])
    ae = table.table[table.table["kpi"] == "ae_rate"]
    assert ae["denominator"].sum() > 0 and all(math.isnan(x) for x in ae["estimate"])
    assert qi.AE_NOT_RECORDED in table.notes
    recorded = build_cohort(_without("program"))  # adverse events recorded: a rate, no such note
    table = qi.kpis(recorded, period_a=(b := qi.default_periods(recorded))[0], period_b=b[1])
    assert table.table.loc[table.table["kpi"] == "ae_rate", "estimate"].notna().any()
    assert qi.AE_NOT_RECORDED not in table.notes


def test_meeting_pack_says_not_recorded_and_never_zero_per_100():
    from analytics.outcomes.settings import Settings
    from analytics.report.pack import build_report

    html = build_report(_without("adverse_events"), Settings())
    assert "not recorded" in html and not ZERO_RATE.search(html)


def test_overview_and_safety_pages_say_not_recorded_and_never_zero_per_100():
    for page in ("overview.py", "safety.py"):
        at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=240)
        at.session_state["exports"] = _without("adverse_events")
        at.session_state["source"] = "upload"
        at.run()
        at.switch_page(f"pages/{page}").run()
        assert not at.exception
        shown = " ".join(str(e.value) for kind in ("metric", "caption", "markdown", "info", "warning")
                         for e in at.get(kind))
        shown += " ".join(df.value.to_string() for df in at.dataframe)
        assert "not recorded" in shown, page
        assert not ZERO_RATE.search(shown), page
