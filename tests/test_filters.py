from datetime import date

import pandas as pd

from analytics.outcomes.cohort import build_cohort
from analytics.outcomes.filters import Filters, apply_filters, filter_options
from schemas.frames import ValidatedExports


def _cohort():
    s = pd.DataFrame({"patient_id": ["a", "b", "c"], "session_date": ["2025-01-05", "2025-03-01", "2025-06-01"],
                      "session_type": "ketamine", "route": ["iv", "im", "iv"], "site": ["N", "S", "N"]})
    f = pd.DataFrame({"patient_id": ["a", "b", "c"], "assessment_date": ["2025-02-05", "2025-04-01", "2025-07-01"],
                      "days_abstinent": 30})
    p = pd.DataFrame({"patient_id": ["a", "b", "c"], "program": ["x", "y", "x"]})
    return build_cohort(ValidatedExports.from_frames(s, f, p))


def test_filters_restrict_every_table_and_count_the_exclusion():
    cohort = apply_filters(_cohort(), Filters(site=("N",), start=date(2025, 2, 1)))
    assert cohort.patients["patient_id"].tolist() == ["c"]
    assert set(cohort.followups["patient_id"]) == {"c"} and set(cohort.sessions["patient_id"]) == {"c"}
    assert cohort.exclusions["patients outside the view filters"] == 2


def test_query_round_trip_ignores_values_not_in_the_allow_list():
    f = Filters(start=date(2025, 1, 1), program=("x",), route=("iv", "im"))
    allowed = {k: set(v) for k, v in filter_options(_cohort()).items()}
    assert Filters.from_query(f.to_query(), allowed=allowed) == f
    hostile = Filters.from_query({"program": "x,<script>", "from": "notadate", "site": "Q"}, allowed=allowed)
    assert hostile == Filters(program=("x",))


def test_view_widgets_give_filters_with_bounds_at_the_data_edges_left_open():
    lo, hi, mid = date(2025, 1, 1), date(2025, 12, 31), date(2025, 6, 1)
    assert Filters.from_view((lo, hi), lo, hi) == Filters()
    assert Filters.from_view(None, lo, hi) == Filters()
    assert Filters.from_view((mid, hi), lo, hi, site=["Harbor"]) == Filters(start=mid, site=("Harbor",))
    assert Filters.from_view(mid, lo, hi) == Filters(start=mid)  # one date picked so far: from it to the end
    assert Filters.from_view((lo, mid), lo, hi, program=None) == Filters(end=mid)
