"""AppTest: every page renders on the sample clinic without an exception, and the filters round-trip the URL."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(p.name for p in (ROOT / "pages").glob("*.py") if not p.name.startswith("_"))


def _at() -> AppTest:
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=240)
    at.run()
    assert not at.exception, at.exception
    return at


@pytest.fixture(scope="module")
def sample_session(module_app_env):
    """One app session on the sample clinic shared by the pages' render tests on a worker (a user moves between the
    pages of one session too)."""
    return _at()


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_on_sample_data_with_a_header_and_no_exception(page, sample_session):
    at = sample_session
    at.switch_page(f"pages/{page}").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.header, f"{page} has no header"


def test_filter_choice_goes_into_the_url_and_a_pasted_link_restores_it():
    at = _at()
    at.multiselect(key="f_site").set_value(["Harbor"]).run()
    assert not at.exception
    assert at.query_params["site"] in ("Harbor", ["Harbor"])
    fresh = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=240)
    fresh.query_params["site"] = "Harbor"
    fresh.query_params["program"] = "not-a-program"
    fresh.run()
    assert fresh.multiselect(key="f_site").value == ["Harbor"]
    assert fresh.multiselect(key="f_program").value == []  # unknown values are ignored


def test_filters_survive_a_visit_to_the_data_page():
    at = _at()
    at.multiselect(key="f_site").set_value(["Harbor"]).run()
    at.switch_page("pages/data.py").run()
    at.switch_page("pages/survival.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.multiselect(key="f_site").value == ["Harbor"]


def test_the_survival_sensitivity_figure_is_built_only_while_its_expander_is_open():
    at = _at()
    at.switch_page("pages/survival.py").run()
    box = next(e for e in at.expander if e.label.startswith("Sensitivity figure"))
    assert at.session_state["surv_sens_open"] is False and not box.get("plotly_chart") and not box.caption
    shown = len(at.get("plotly_chart"))
    at.session_state["surv_sens_open"] = True  # what opening it in the browser sets
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    box = next(e for e in at.expander if e.label.startswith("Sensitivity figure"))
    assert len(box.get("plotly_chart")) == 1 and len(at.get("plotly_chart")) == shown + 1
    assert any("early dropout" in c.value for c in box.caption)


def test_outcome_settings_survive_a_page_change():
    at = _at()
    at.radio(key="w_relapse").set_value("heavy").run()
    at.switch_page("pages/survival.py").run()
    assert not at.exception
    assert at.radio(key="w_relapse").value == "heavy"
    assert at.session_state["relapse"] == "heavy"


def test_preparing_the_meeting_report_offers_the_download_and_is_audited():
    from analytics.store import open_store

    at = _at()
    at.button(key="report_build").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["report_html"].startswith(b"<!DOCTYPE html>")
    log = open_store().audit_log()
    exports = log[log["action"] == "export"]
    assert len(exports) == 1 and exports["detail"].iloc[0].startswith("meeting report (All patients")
    assert exports["user"].iloc[0] == "local"


def test_a_rerun_under_the_same_filter_reuses_the_filtered_cohort_and_its_results():
    from analytics.outcomes import memo

    at = _at()
    at.multiselect(key="f_site").set_value(["Harbor"]).run()
    base, views = at.session_state["filtered_views"]
    assert base is at.session_state["cohort"]
    (filters, view), = [(f, c) for f, c in views.items() if f.site == ("Harbor",)]
    assert set(view.patients["site"].astype(str)) == {"Harbor"}
    kept = len(view.__dict__[memo._SLOT])  # the Overview's results (and figures) on the filtered cohort
    from analytics.outcomes import qi

    at.session_state["ov_spc_kpi"] = list(qi.SPC_KPIS)[1]
    at.run()  # another widget's choice: the same view
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["filtered_views"][1][filters] is view
    assert len(view.__dict__[memo._SLOT]) > kept  # the second control chart joined the same cohort's
    at.multiselect(key="f_site").set_value([]).run()  # widened again: the unfiltered cohort's kept results
    assert at.session_state["filtered_views"][1][filters] is view


def test_after_the_warmup_a_page_first_view_computes_and_builds_nothing(monkeypatch):
    """Every analysis the Overview draws, and every analysis and default figure of each other page, was made by the
    warm-up: the page only draws them.

    One session visits the pages in turn (a warm-up per page cost the suite a minute): a page's first view may only
    read what the warm-up kept, whatever page came before it."""
    from analytics.outcomes import memo, warmup

    at = _at()
    cohort = at.session_state["cohort"]
    memo.forget(cohort)  # what the first run of the Overview computed
    warmup.run(cohort)
    keys = set(cohort.__dict__[memo._SLOT])
    at.run()  # the Overview again
    assert not at.exception, [e.value for e in at.exception]
    new = [k for k in set(cohort.__dict__[memo._SLOT]) - keys if k[0] != "figure" and k[0] in (
        "analytics.outcomes.qi", "analytics.outcomes.survival")]
    assert new == [], new  # every analysis the Overview draws was already there (same options as the warm-up's)
    built = []
    original = memo.once

    def watch(owner, key, compute):
        return original(owner, key, lambda: built.append(key[:3]) or compute())

    monkeypatch.setattr(memo, "once", watch)
    for page in ("survival", "trajectories", "substance_use", "benchmarks", "safety", "retention", "subgroups"):
        keys = set(cohort.__dict__[memo._SLOT])
        at.switch_page(f"pages/{page}.py")
        at.run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert [k for k in built if k[0] == "figure"] == [], page
        assert [k for k in set(cohort.__dict__[memo._SLOT]) - keys] == [], page
