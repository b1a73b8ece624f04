"""Text that comes from the data is shown literally: in Markdown (pages), in plotly figures, and in tables whose
toolbar "Download as CSV" a spreadsheet opens.

A clinic's upload names its programs, sites and clinicians; whoever else opens the dashboard sees those names. A
name like ``![x](https://evil.example/p.png)`` must not make their browser fetch an image, ``<a href=...>`` must not
become a link in a chart, and ``=HYPERLINK(...)`` must not run when the table is opened in a spreadsheet.
"""

from __future__ import annotations

import dataclasses
import html
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from analytics.formatting import escape_markdown, escape_plotly
from analytics.sample import generate_clinic
from schemas.frames import ValidatedExports

ROOT = Path(__file__).resolve().parents[1]
HOSTILE = ("![x](https://evil.example/p.png) **b** $x$ <img src=x onerror=alert(1)> [l](javascript:alert(1)) "
           "<a href=https://evil.example>a</a> <b>b</b> %{meta}")
# what Streamlit's Markdown gives a meaning (CommonMark, GFM, LaTeX, Streamlit directives, raw HTML)
MD_SPECIAL = set("\\`*_[]()<>#|~$!&@")


def _unescaped(text: str) -> str:
    """``text`` with every backslash escape (``\\x``) removed: what is left is read as Markdown."""
    return re.sub(r"\\.", "", text, flags=re.DOTALL)


# --------------------------------------------------------------------------------------------------------------
# the helpers
# --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [HOSTILE, "a\\*b", "- list\n1. item\n= setext\n# heading", "www.evil.example",
                                  "mail a@b.example", "https://evil.example/p.png", ":red[x] :material/home:"])
def test_escaped_markdown_has_no_unescaped_markup_and_reads_back_as_the_text(text):
    escaped = escape_markdown(text)
    left = _unescaped(escaped)
    assert not (set(left) & MD_SPECIAL), (escaped, set(left) & MD_SPECIAL)
    assert not re.search(r"^[ \t]*([-+=]|\d+[.)])", left, flags=re.MULTILINE)  # no list, no setext heading
    assert "://" not in left and "www." not in left.lower()  # no GFM autolink literal
    assert re.sub(r"\\(.)", r"\1", escaped, flags=re.DOTALL) == text  # CommonMark shows exactly the text


def test_a_hostile_name_loses_its_image_link_bold_and_latex_in_markdown():
    escaped = escape_markdown(HOSTILE)
    assert "![" not in escaped and "](" not in escaped and "**" not in escaped
    assert "\\!\\[x\\]\\(https\\://evil.example/p.png\\)" in escaped
    assert "\\$x\\$" in escaped and "\\<img src=x" in escaped


def test_plain_text_is_left_readable():
    assert escape_markdown("Harbor, ketamine only; 12 patients. p = 0.03") == "Harbor, ketamine only; 12 patients. p = 0.03"
    assert escape_plotly("Harbor, ketamine only: 50% (12 of 24)") == "Harbor, ketamine only: 50% (12 of 24)"


def test_escaped_plotly_text_has_no_tag_and_no_template_and_reads_back_as_the_text():
    escaped = escape_plotly(HOSTILE + " A & B &lt;")
    assert "<" not in escaped and ">" not in escaped and "%{" not in escaped
    assert re.fullmatch(r"([^&]|&(amp|lt|gt|#123);)*", escaped)  # every & starts an entity plotly decodes
    assert html.unescape(escaped) == HOSTILE + " A & B &lt;"


# --------------------------------------------------------------------------------------------------------------
# a clinic whose programs, sites and clinicians are named with markup
# --------------------------------------------------------------------------------------------------------------

def _hostile_frames(n: int = 300, seed: int = 5) -> ValidatedExports:
    frames = generate_clinic(n, seed=seed)
    sessions, followups, patients = frames["sessions"].copy(), frames["followups"], frames["patients"].copy()
    programs = {p: f"{HOSTILE} {p}" for p in patients["program"].dropna().unique()}
    sites = {s: f"{HOSTILE} {s}" for s in pd.concat([patients["site"], sessions["site"]]).dropna().unique()}
    patients["program"] = patients["program"].map(lambda v: programs.get(v, v))
    for frame in (patients, sessions):
        frame["site"] = frame["site"].map(lambda v: sites.get(v, v))
    sessions["clinician"] = sessions["clinician"].map(lambda v: v if pd.isna(v) else f"{HOSTILE} {v}")
    return ValidatedExports.from_frames(sessions, followups, patients)


@pytest.fixture(scope="module")
def hostile_exports() -> ValidatedExports:
    return _hostile_frames()


@pytest.fixture(scope="module")
def cohort(hostile_exports):
    from analytics.outcomes.cohort import build_cohort

    return build_cohort(hostile_exports)


def _markdown_parts(at: AppTest) -> list[str]:
    parts = [*at.markdown, *at.caption, *at.info, *at.warning, *at.error, *at.success]
    return [str(p.value) for p in parts]


def _hostile_app(hostile_exports) -> AppTest:
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=240)
    at.session_state["exports"], at.session_state["source"] = hostile_exports, "upload"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_a_site_named_with_markup_is_shown_escaped_in_the_page_text(hostile_exports):
    at = _hostile_app(hostile_exports)
    site = next(o for o in at.multiselect(key="f_site").options if "evil.example" in o)
    at.multiselect(key="f_site").set_value([site]).run()
    assert not at.exception, [e.value for e in at.exception]
    parts = _markdown_parts(at)
    quoting = [p for p in parts if "evil.example" in p]
    assert quoting, "the filter caption names the chosen site"
    for part in parts:
        assert "![" not in part and "](" not in part and "**b**" not in part, part
        assert not re.search(r"(?<!\\)(<img|<a |<b>|\$x\$)", part), part
    assert any("\\!\\[x\\]\\(https\\://evil.example/p.png\\)" in p for p in quoting)


@pytest.mark.parametrize("page", ["survival", "subgroups"])
def test_pages_comparing_programs_named_with_markup_render_no_markup_from_them(hostile_exports, page):
    at = _hostile_app(hostile_exports)
    at.switch_page(f"pages/{page}.py").run()
    if page == "survival":  # the page opens split by substance where there are several: compare the programs
        at.selectbox(key="surv_by").set_value("program").run()
    assert not at.exception, [e.value for e in at.exception]
    for part in _markdown_parts(at):
        assert "![" not in part and "](" not in part, part
        assert not re.search(r"(?<!\\)(<img|<a |<b>)", part), part
    frames = [df.value for df in at.dataframe]
    assert any(frame.astype(str).apply(lambda c: c.str.contains("evil.example", regex=False)).any().any()
               for frame in frames), "the programs are named in a table"


# --------------------------------------------------------------------------------------------------------------
# every figure builder
# --------------------------------------------------------------------------------------------------------------

def _figure_text(fig) -> str:
    """Every string of the figure, as plotly.js receives it (``to_json`` writes ``<`` as ``\\u003c``)."""
    return json.dumps(json.loads(fig.to_json()), ensure_ascii=False)


def _hostile_rows(frame: pd.DataFrame, column: str, keep: tuple[str, ...] = ()) -> pd.DataFrame:
    """``frame`` with the values of ``column`` named with markup (but those in ``keep``: keys the builder reads)."""
    return frame.assign(**{column: [v if v in keep else f"{HOSTILE} {v}" for v in frame[column]]})


def _figures(cohort) -> dict[str, tuple[object, bool]]:
    """name → (figure, whether the figure names something from the data)."""
    from analytics.outcomes import benchmarks, qi, safety, survival
    from analytics.outcomes import trajectories as tr
    from analytics.outcomes.subgroups import who_benefits
    from analytics.report.plots import benchmarks as bplots
    from analytics.report.plots import qi as qplots
    from analytics.report.plots import safety as splots
    from analytics.report.plots import subgroups as gplots
    from analytics.report.plots import survival as vplots
    from analytics.report.plots import trajectories as tplots

    programs = sorted(cohort.patients["program"].dropna().unique())
    curves = survival.relapse_curves(cohort, by="program")
    comparison = survival.compare_groups(cohort, by="program", reference=programs[0])
    fit = tr.fit_trajectory(cohort, measure="phq9", by="program", time="linear")
    rates = safety.adverse_event_rates(cohort)
    rates = dataclasses.replace(rates, table=_hostile_rows(_hostile_rows(rates.table, "event_type", ("any",)),
                                                           "route", (safety.ALL,)))
    trend = safety.safety_trend(cohort)
    published = safety.published_comparison(cohort)
    published = dataclasses.replace(published, table=_hostile_rows(published.table, "metric"))
    chart = qi.control_chart(cohort, kpi=qi.SPC_KPIS[0])
    chart = dataclasses.replace(chart, table=_hostile_rows(chart.table, "label"))
    flow = qi.patient_flow(cohort)
    flow = dataclasses.replace(flow, steps=_hostile_rows(flow.steps, "label"),
                               losses=_hostile_rows(flow.losses, "reason"))
    bench = benchmarks.compare(cohort)
    bench = dataclasses.replace(bench, table=_hostile_rows(_hostile_rows(bench.table, "metric"), "population"))
    forest = who_benefits(cohort, treated=programs[1], control=programs[0])
    out = {}
    for min_cell in (None, 11):
        out |= {
            f"km {min_cell}": (vplots.km_figure(dataclasses.replace(curves, min_cell=min_cell)), True),
            f"mean trajectory {min_cell}": (tplots.mean_trajectory(
                tr.predicted_means(fit), lines=tr.patient_lines(cohort, measure="phq9", by="program"),
                min_cell=min_cell), True),
            f"response {min_cell}": (tplots.response_remission_bars(tr.response_remission(cohort, by="program"),
                                                                    min_cell=min_cell), True),
            f"adverse events {min_cell}": (splots.adverse_events_chart(rates, min_cell=min_cell), True),
            f"published safety {min_cell}": (splots.published_comparison_chart(published, min_cell=min_cell), True),
            f"control chart {min_cell}": (qplots.control_chart(chart, min_cell=min_cell), True),
            f"funnel {min_cell}": (qplots.funnel_plot(qi.funnel(cohort, unit="clinician"), min_cell=min_cell), True),
            f"flow {min_cell}": (qplots.flow_diagram(flow, min_cell=min_cell), True),
            f"benchmarks {min_cell}": (bplots.forest(bench, domain=None, min_cell=min_cell), True),
            f"who benefits {min_cell}": (gplots.subgroup_forest(forest, min_cell=min_cell), True),
            f"band heatmap {min_cell}": (tplots.band_transition_heatmap(tr.band_transitions(cohort),
                                                                        min_cell=min_cell), False),
            f"durability {min_cell}": (tplots.durability_curves(tr.response_durability(cohort),
                                                                min_cell=min_cell), False),
            f"vital signs trend {min_cell}": (splots.vital_signs_trend(trend, min_cell=min_cell), False),
        }
    out["forest"] = (vplots.forest_figure(comparison), True)
    out["abstinence"] = (tplots.abstinence_over_time(tr.abstinence_gee(cohort, by="program")), True)
    return out


@pytest.fixture(scope="module")
def figures(cohort):
    return _figures(cohort)


def test_no_figure_carries_markup_from_the_data_and_each_names_it_escaped(figures):
    for name, (fig, names_data) in figures.items():
        text = _figure_text(fig)
        for markup in ("<img", "<a ", "<b>b</b>", "%{meta}"):
            assert markup not in text, (name, markup, text[text.find(markup) - 80: text.find(markup) + 80])
        if names_data:
            assert "&lt;img src=x onerror=alert(1)&gt;" in text, f"{name}: the data's names are not in the figure"
            assert "&lt;a href=https://evil.example&gt;" in text and "%&#123;meta}" in text, name


def test_the_builders_own_markup_is_kept_around_escaped_values(figures):
    fig, _ = figures["benchmarks 11"]
    ticks = [t for ax in ("yaxis", "yaxis2", "yaxis3") if ax in fig.layout for t in (fig.layout[ax].ticktext or ())]
    assert ticks and all(t.startswith("<b>") and "<br><span style='font-size:11px'>" in t for t in ticks)
    assert any("&lt;img" in t for t in ticks)


# --------------------------------------------------------------------------------------------------------------
# tables: the toolbar's "Download as CSV"
# --------------------------------------------------------------------------------------------------------------

def test_the_table_helper_neutralises_formula_like_text_cells_column_names_and_index_labels():
    from analytics.privacy.safe_export import screen_table

    table = pd.DataFrame({
        "group": ['=HYPERLINK("https://evil.example","x")', "-1+2", "@SUM(A1:A9)", "+1+cmd|' /C calc'!A0",
                  "\t=1", " =1+1", "Harbor"],
        "estimate (95% CI)": ["-0.51 (-0.64–-0.38)", "-5% (-9%–-1%)", "0.62 (0.41–0.93)", "-12.5", "+1", "—", None],
        "n": [1, 2, 3, 4, 5, 6, 7],
        "=bad header": pd.Categorical(["=A1"] * 7),
    }, index=pd.Index(["=x", "b", "c", "d", "e", "f", "g"], name="@who"))
    shown = screen_table(table)
    assert list(shown["group"]) == ["'=HYPERLINK(\"https://evil.example\",\"x\")", "'-1+2", "'@SUM(A1:A9)",
                                    "'+1+cmd|' /C calc'!A0", "'\t=1", "' =1+1", "Harbor"]
    # numbers as the app writes them, and text cells that are just a number, cannot run: kept as they are
    assert list(shown["estimate (95% CI)"])[:6] == ["-0.51 (-0.64–-0.38)", "-5% (-9%–-1%)", "0.62 (0.41–0.93)",
                                                    "-12.5", "+1", "—"]
    assert shown["n"].tolist() == table["n"].tolist() and shown["n"].dtype == table["n"].dtype
    assert "'=bad header" in shown.columns and set(shown["'=bad header"]) == {"'=A1"}
    assert list(shown.index) == ["'=x", "b", "c", "d", "e", "f", "g"] and shown.index.name == "'@who"
    assert table["group"].iloc[0].startswith("=")  # the caller's frame is not changed


def test_a_pivot_table_keeps_its_numeric_columns_and_neutralises_its_group_labels():
    from analytics.privacy.safe_export import screen_table

    pivot = pd.DataFrame({"group": ["=evil", "=evil", "ok", "ok"], "day": [30, 90, 30, 90],
                          "value": ["@x", "1%", "2%", "3%"]}).pivot(index="group", columns="day", values="value")
    shown = screen_table(pivot)
    assert list(shown.columns) == [30, 90] and list(shown.index) == ["'=evil", "ok"]
    assert shown.loc["'=evil", 30] == "'@x"


def test_every_table_of_the_pages_goes_through_the_helper():
    """The pages of this change call ``show_table`` (never ``st.dataframe`` directly)."""
    for page in ("overview", "survival", "trajectories", "safety", "subgroups", "benchmarks"):
        source = (ROOT / "pages" / f"{page}.py").read_text(encoding="utf-8")
        assert not re.search(r"\.dataframe\(", source), page
