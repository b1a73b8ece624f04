"""No count from 1 to 10 reaches a chart (labels, hover cards, annotations, legend) when suppression is on.

Every figure builder of ``analytics/plots`` is run on a small simulated clinic (120 patients: months, clinicians,
sites, routes and subgroups with 1–10 patients or sessions), once with ``min_cell=11`` and once with suppression
off. An independent reader walks each figure the way a browser shows it: trace names, text labels, hover cards
(``hovertemplate`` rendered with the point's ``customdata``/``text``/``x``/``y``), heatmap cells, annotations and
axis labels, and collects every number printed as a count. With suppression on none may be 1–10; with it off some
must be (else the check could not fail). Points placed on a chart are checked too: a rate drawn at a known
denominator gives the numerator away, so drawn points must come from safe counts, and a hidden point must not be
recoverable from the total and the points drawn (property tests with hypothesis).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from signed_in import dashboard_as, upload_on_data_page
from streamlit.testing.v1 import AppTest

from analytics.outcomes import benchmarks, qi, safety, survival
from analytics.outcomes import trajectories as tr
from analytics.outcomes.cohort import build_cohort
from analytics.outcomes.settings import Settings
from analytics.outcomes.subgroups import who_benefits
from analytics.privacy.counts import is_small, rate_is_safe
from analytics.privacy.suppression import hidden_rate_points, suppress_flow
from analytics.report.plots import benchmarks as bplots
from analytics.report.plots import qi as qplots
from analytics.report.plots import safety as splots
from analytics.report.plots import subgroups as sgplots
from analytics.report.plots import survival as svplots
from analytics.report.plots import trajectories as tplots
from analytics.sample import generate_clinic
from schemas.frames import ValidatedExports

pytestmark = pytest.mark.xdist_group("privacy_charts")  # one worker builds the module's fixtures (seconds each), not both

ROOT = Path(__file__).resolve().parents[1]
SMALL = range(1, 11)

# --------------------------------------------------------------------------------------------------------------
# an independent reader of figures: what a browser prints, and which of it are counts
# --------------------------------------------------------------------------------------------------------------

PLACEHOLDER = re.compile(r"%\{([^}:|]+)(?:[:|]([^}]*))?\}")
NUM = r"(\d[\d,]*)"
COUNT_PATTERNS = [
    re.compile(rf"\({NUM} of {NUM}\)"),              # (12 of 30): numerator and denominator
    re.compile(rf"n = {NUM} of {NUM} eligible"),      # benchmark hover
    re.compile(rf"n = {NUM}\b"),
    re.compile(rf"{NUM} without data"),
    re.compile(rf"\({NUM} at risk\)"),
    re.compile(rf"sample of {NUM}\)"),
    re.compile(rf": {NUM} patients"),                 # heatmap hover
    re.compile(rf": {NUM}(?=<br>|$)"),                # flow hover lines "reason: 7"
]
LABEL = re.compile(rf"^{NUM}(?:  \(−{NUM}\))?$")      # a bare count as a label: heatmap cell, bar, risk table


def _missing(v: object) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _fmt(value: object, spec: str | None) -> str:
    """Plotly's d3 formats as Python formats (enough for ``.1f``, ``.0%``, ``,``, ``g`` and dates)."""
    if spec:
        try:
            return format(value, spec)
        except (ValueError, TypeError):
            pass
    return str(value)


def _get(arr: object, i: int | tuple[int, int]) -> object:
    if arr is None:
        return None
    if isinstance(arr, str):
        return arr
    a = list(arr) if not isinstance(arr, np.ndarray) else arr
    if isinstance(i, tuple):
        row = a[i[0]]
        return row[i[1]] if row is not None else None
    return a[i] if i < len(a) else None


def _render(template: str, point: dict[str, object]) -> str:
    def sub(m: re.Match[str]) -> str:
        key, spec = m.group(1), m.group(2)
        if key.startswith("customdata"):
            cd = point.get("customdata")
            idx = re.findall(r"\[(\d+)\]", key)
            v = cd
            for j in idx:
                v = None if v is None else list(v)[int(j)]
            return _fmt(v, spec)
        if key == "fullData.name":
            return str(point.get("name"))
        return _fmt(point.get(key), spec)

    return PLACEHOLDER.sub(sub, template)


def figure_strings(fig) -> Iterator[tuple[str, str]]:
    """(where, text) for every piece of text a user can see or hover over."""
    lay = fig.layout
    for a in lay.annotations or ():
        yield "annotation", str(a.text)
    if lay.title and lay.title.text:
        yield "title", str(lay.title.text)
    for ax in [k for k in lay.to_plotly_json() if k.startswith(("xaxis", "yaxis"))]:
        if getattr(lay, ax).title.text:
            yield f"{ax} title", str(getattr(lay, ax).title.text)
        for t in getattr(lay, ax).ticktext or ():
            yield f"{ax} tick", str(t)
    for k, trace in enumerate(fig.data):
        where = f"trace {k} ({trace.name})"
        if trace.name:
            yield where + " name", str(trace.name)
        if trace.type == "heatmap":
            z = np.asarray(trace.z, dtype=float)
            for r in range(z.shape[0]):
                for c in range(z.shape[1]):
                    point = {"text": _get(trace.text, (r, c)), "x": _get(trace.x, c), "y": _get(trace.y, r),
                             "z": z[r, c], "name": trace.name}
                    if trace.texttemplate:
                        yield where + " cell", _render(trace.texttemplate, point)
                    if trace.hovertemplate:
                        yield where + " hover", _render(trace.hovertemplate, point)
            continue
        n = max(len(trace.x) if trace.x is not None else 0, len(trace.y) if trace.y is not None else 0)
        for i in range(n):
            point = {"x": _get(trace.x, i), "y": _get(trace.y, i), "text": _get(trace.text, i),
                     "hovertext": _get(trace.hovertext, i), "customdata": _get(trace.customdata, i),
                     "name": trace.name}
            if point["text"] is not None and (trace.type == "bar" or "text" in (trace.mode or "")):
                yield where + " label", str(point["text"])
            if _missing(point["x"]) or _missing(point["y"]) or getattr(trace, "hoverinfo", None) == "skip":
                continue  # nothing drawn, nothing to hover
            if trace.hovertemplate:
                yield where + " hover", _render(trace.hovertemplate, point)
            elif point["hovertext"] is not None:
                yield where + " hover", str(point["hovertext"])


def shown_counts(fig) -> list[tuple[str, int, str]]:
    """Every number the figure prints as a count: (where, value, text)."""
    out = []
    for where, text in figure_strings(fig):
        found = [g for p in COUNT_PATTERNS for m in p.finditer(text) for g in m.groups() if g]
        if where.endswith((" label", " cell")):
            m = LABEL.match(text.strip())
            if m:
                found += [g for g in m.groups() if g]
        out += [(where, int(g.replace(",", "")), text) for g in found]
    return out


def small_shown(fig) -> list[tuple[str, int, str]]:
    return [c for c in shown_counts(fig) if c[1] in SMALL]


# --------------------------------------------------------------------------------------------------------------
# a small clinic: many groups, months and clinicians with 1–10 patients or sessions
# --------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clinic():
    frames = generate_clinic(120, seed=3)
    data = ValidatedExports.from_frames(frames["sessions"], frames["followups"], frames["patients"])
    return {"on": build_cohort(data, Settings()), "off": build_cohort(data, Settings(suppress=False)), "data": data}


def _figures(cohort, min_cell):
    """Every chart of the pages, built as the pages build them."""
    c = cohort
    figs = {}
    for kpi in ("induction_completion", "followup_90", "ae_sessions"):
        figs[f"control chart {kpi}"] = qplots.control_chart(qi.control_chart(c, kpi=kpi), min_cell=min_cell)
    for unit in ("clinician", "site"):
        figs[f"funnel {unit}"] = qplots.funnel_plot(qi.funnel(c, unit=unit, kpi="followup_90"), min_cell=min_cell)
    figs["flow"] = qplots.flow_diagram(qi.patient_flow(c, uploaded_rows=None), min_cell=min_cell)
    rates = safety.adverse_event_rates(c)
    for unit in ("session", "patient"):
        figs[f"adverse events {unit}"] = splots.adverse_events_chart(rates, unit_of_analysis=unit, min_cell=min_cell)
    figs["vital signs trend"] = splots.vital_signs_trend(safety.safety_trend(c), min_cell=min_cell)
    figs["published safety"] = splots.published_comparison_chart(safety.published_comparison(c), min_cell=min_cell)
    figs["benchmarks"] = bplots.forest(benchmarks.compare(c), domain=None, min_cell=min_cell)
    wb = who_benefits(c, treated="ketamine + therapy", control="ketamine only")
    for outcome in ("relapse_hr", "phq9_slope_difference"):
        figs[f"subgroups {outcome}"] = sgplots.subgroup_forest(wb, outcome=outcome, min_cell=min_cell)
    figs["km by site"] = svplots.km_figure(survival.relapse_curves(c, by="site"))
    figs["km by program"] = svplots.km_figure(survival.relapse_curves(c, by="program"))
    figs["response bars"] = tplots.response_remission_bars(tr.response_remission(c, by="site"), min_cell=min_cell)
    figs["band heatmap"] = tplots.band_transition_heatmap(tr.band_transitions(c), min_cell=min_cell)
    figs["durability"] = tplots.durability_curves(tr.response_durability(c), min_cell=min_cell)
    fit = tr.fit_trajectory(c, by="site")
    figs["mean trajectory"] = tplots.mean_trajectory(tr.predicted_means(fit), lines=tr.patient_lines(c, by="site"),
                                                     min_cell=min_cell)
    return figs


@pytest.fixture(scope="module")
def figures_on(clinic):
    return _figures(clinic["on"], 11)


@pytest.fixture(scope="module")
def figures_off(clinic):
    return _figures(clinic["off"], None)


CHARTS = ["control chart induction_completion", "control chart followup_90", "control chart ae_sessions",
          "funnel clinician", "funnel site", "flow", "adverse events session", "adverse events patient",
          "vital signs trend", "published safety", "benchmarks", "subgroups relapse_hr",
          "subgroups phq9_slope_difference", "km by site", "km by program", "response bars", "band heatmap",
          "durability", "mean trajectory"]
# charts whose unsuppressed version prints a count from 1 to 10 on this clinic (the others are checked too; on this
# clinic their small counts only occur at points that are not drawn anyway, or as positions: structural tests below)
LEAKY_WHEN_OFF = ["control chart induction_completion", "control chart followup_90", "funnel clinician", "flow",
                  "adverse events session", "adverse events patient", "vital signs trend", "benchmarks",
                  "subgroups phq9_slope_difference", "km by site", "response bars", "band heatmap", "durability"]


@pytest.mark.parametrize("name", CHARTS)
def test_no_count_from_1_to_10_in_any_label_hover_or_annotation_when_suppression_is_on(figures_on, name):
    fig = figures_on[name]
    assert list(figure_strings(fig)), f"{name}: nothing read from the figure"
    leaks = small_shown(fig)
    assert not leaks, f"{name} shows small counts: {leaks[:5]}"


@pytest.mark.parametrize("name", LEAKY_WHEN_OFF)
def test_with_suppression_off_the_same_reader_finds_small_counts(figures_off, name):
    assert small_shown(figures_off[name]), f"{name}: the reader finds no count from 1 to 10 even unsuppressed"


def test_the_reader_sees_counts_of_11_and_more_with_suppression_on(figures_on):
    # suppression hides small counts, not every count: the checks above are not passing on empty charts
    for name in ("control chart ae_sessions", "funnel site", "flow", "adverse events session",
                 "benchmarks", "km by site", "subgroups relapse_hr"):
        assert any(v >= 11 for _, v, _ in shown_counts(figures_on[name])), name


# --------------------------------------------------------------------------------------------------------------
# positions: a drawn rate at a known denominator gives its counts away
# --------------------------------------------------------------------------------------------------------------

def _trace(fig, name: str):
    return next(t for t in fig.data if t.name == name)


def test_control_chart_draws_only_months_with_safe_counts_and_no_limits_for_the_others(clinic):
    chart = qi.control_chart(clinic["on"], kpi="followup_90")
    t = chart.table
    assert any(not rate_is_safe(a, b) for a, b in zip(t["numerator"], t["denominator"])), "needs small months"
    fig = qplots.control_chart(chart, min_cell=11)
    month = _trace(fig, "Month")
    upper = fig.data[0]
    for (a, b), y, ucl in zip(zip(t["numerator"], t["denominator"]), month.y, upper.y):
        if y is not None:
            assert rate_is_safe(a, b), (a, b)
        else:
            assert ucl is None  # the limits at a month depend on its denominator
    assert "not drawn" in fig.layout.xaxis.title.text
    off = qplots.control_chart(chart)
    assert all(y is not None for y in _trace(off, "Month").y)


def test_funnel_draws_only_units_with_safe_counts_on_a_grid_that_ignores_hidden_units():
    # A: 5 of 40 (small numerator); B: 20 of 26 (complement 6); C–E safe; F: 60 of 400, the largest unit
    units = pd.DataFrame({"unit": list("ABCDEF"), "x": [5, 20, 30, 45, 25, 60], "n": [40, 26, 80, 90, 70, 400]})
    res = qi.funnel_from_counts(units["x"], units["n"], units=units["unit"], adjustment="none", kpi="followup_90",
                                label="Follow-up")
    hide = hidden_rate_points(res.units["numerator"], res.units["denominator"])
    assert list(res.units.loc[hide, "unit"])[:2] == ["A", "B"] and not hide.all()
    fig = qplots.funnel_plot(res, min_cell=11)
    pts = next(t for t in fig.data if t.mode == "markers+text")
    assert set(pts.text) == set(res.units.loc[~hide, "unit"])
    assert not any(is_small(x) for x in pts.x)
    assert not small_shown(fig)
    for name in res.units.loc[hide, "unit"]:
        assert name in fig.layout.xaxis.title.text
    # the limit curves neither hold a hidden unit's n nor end past the largest drawn unit
    grid = {float(x) for t in fig.data if t.mode == "lines" and "limits" in (t.name or "") for x in t.x}
    drawn = res.units.loc[~hide, "denominator"].astype(float)
    assert max(grid) <= 1.15 * drawn.max() + 1
    for n in res.units.loc[hide, "denominator"]:
        assert float(n) not in grid or float(n) in set(np.round(np.geomspace(1, 1.15 * drawn.max(), 150)))
    off = qplots.funnel_plot(res)
    assert small_shown(off) and 400.0 in {float(x) for t in off.data if t.mode == "lines" for x in t.x}


def test_flow_bars_of_hidden_steps_are_not_drawn_and_no_step_difference_is_small(clinic):
    flow = qi.patient_flow(clinic["on"], uploaded_rows=None)
    fig = qplots.flow_diagram(flow, min_cell=11)
    bars = [b for t in fig.data for b in zip(t.y, t.x, t.text)]
    drawn = {label: x for label, x, _ in bars}
    n_of = dict(zip(flow.steps["label"], flow.steps["n"]))
    parent = dict(zip(flow.steps["label"], flow.steps["parent"]))
    label_of = dict(zip(flow.steps["step"], flow.steps["label"]))
    for label, x in drawn.items():
        assert x == 0 or x == n_of[label]
        assert not is_small(x)
        p = parent[label]
        if p and x and drawn.get(label_of[p]):
            assert not is_small(drawn[label_of[p]] - x)  # two drawn bars never differ by 1–10


def test_km_curve_drops_pool_at_least_11_events_and_stop_before_fewer_than_11_are_at_risk(clinic):
    drops = 0
    for by in ("site", "program", None):
        curves = survival.relapse_curves(clinic["on"], by=by)
        fig = svplots.km_figure(curves)
        for g in curves.groups:
            label = g if by is not None else "All patients"
            line = next(t for t in fig.data if t.name == label and t.mode == "lines")
            km = curves.table[curves.table["group"] == g].sort_values("day")
            steps = list(zip(line.x, line.y))
            for (x0, y0), (x1, y1) in pairwise(steps):
                if y1 < y0:  # a drawn drop pools the events between the two drawn days
                    drops += 1
                    assert km.loc[(km["day"] > x0) & (km["day"] <= x1), "n_event"].sum() >= 11
            assert km.loc[km["day"] <= steps[-1][0], "n_risk"].min() >= 11
        raw = svplots.km_figure(survival.relapse_curves(clinic["off"], by=by))
        assert sum(len(t.x) for t in raw.data) > sum(len(t.x) for t in fig.data)
    assert drops >= 3


# --------------------------------------------------------------------------------------------------------------
# properties: whatever the counts, nothing small is shown or recoverable
# --------------------------------------------------------------------------------------------------------------

def _recover(equations: list[tuple[list[str], str]], values: dict[str, float], known: set[str]) -> set[str]:
    """An attacker: solve every equation parts = total with exactly one unknown, until nothing changes."""
    known = set(known)
    changed = True
    while changed:
        changed = False
        for parts, total in equations:
            cells = [*parts, total]
            unknown = [c for c in cells if c not in known]
            if len(unknown) == 1:
                known.add(unknown[0])
                changed = True
    return known


counts = st.integers(min_value=0, max_value=60)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(counts, counts), min_size=2, max_size=8))
def test_hidden_rate_points_leave_no_small_count_shown_or_recoverable_from_the_total(pairs):
    num = [a for a, _ in pairs]
    den = [a + b for a, b in pairs]  # numerator ≤ denominator
    hide = hidden_rate_points(num, den)
    values: dict[str, float] = {"X": sum(num), "N": sum(den), "C": sum(den) - sum(num)}
    eqs = [(["X", "C"], "N")]
    for i, (a, n) in enumerate(zip(num, den)):
        values |= {f"x{i}": a, f"n{i}": n, f"c{i}": n - a}
        eqs.append(([f"x{i}", f"c{i}"], f"n{i}"))
    eqs += [([f"{k}{i}" for i in range(len(num))], k.upper()) for k in "xnc"]
    # the reader knows the totals (published elsewhere) when their own rate may be shown, and both counts of every
    # drawn point
    known = {"X", "N"} if rate_is_safe(values["X"], values["N"]) else set()
    known |= {f"{k}{i}" for i in range(len(num)) if not hide[i] and den[i] > 0 for k in "xnc"}
    for cell in _recover(eqs, values, known) - {"X", "N", "C"}:
        assert not is_small(values[cell]), (cell, values[cell], list(zip(num, den)), hide)


@st.composite
def flows(draw) -> qi.FlowTable:
    started = draw(st.integers(min_value=0, max_value=80))
    base = started - draw(st.integers(min_value=0, max_value=started))
    steps = [{"step": "started", "label": "Started", "n": started, "unit": "patients", "parent": ""},
             {"step": "baseline", "label": "Baseline", "n": base, "unit": "patients", "parent": "started"}]
    losses = []
    if started - base:
        losses.append({"step": "baseline", "reason": "no baseline", "n": started - base})
    left = base
    for t in (30, 90):
        a = draw(st.integers(min_value=0, max_value=left))
        b = draw(st.integers(min_value=0, max_value=left - a))
        reached = base - a - b
        steps.append({"step": f"f{t}", "label": f"Day {t}", "n": reached, "unit": "patients", "parent": "baseline"})
        losses += [{"step": f"f{t}", "reason": r, "n": n} for r, n in (("not reached", a), ("missed", b)) if n]
    st_ = pd.DataFrame(steps)
    by = st_.set_index("step")
    st_["lost"] = [by.loc[p, "n"] - n if p else np.nan for p, n in zip(st_["parent"], st_["n"])]
    return qi.FlowTable(steps=st_, losses=pd.DataFrame(losses, columns=["step", "reason", "n"]),
                        as_of=pd.Timestamp("2026-01-01"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flows())
def test_flow_shows_no_small_step_loss_or_reason_and_none_is_recoverable(flow):
    cells = suppress_flow(flow.steps, flow.losses)
    values = {k: float(v) for k, v in cells.values.items()}
    eqs = []
    for s, parent in zip(flow.steps["step"], flow.steps["parent"]):
        if parent:
            eqs.append(([("step", s), ("lost", s)], ("step", parent)))
            reasons = [("loss", s, r) for r in flow.losses.loc[flow.losses["step"] == s, "reason"]]
            if reasons:
                eqs.append((reasons, ("lost", s)))
    known = {k for k in values if cells.shown(k)}
    for k in known:
        assert not is_small(values[k]), (k, values[k])
    for k in _recover(eqs, values, known):
        assert not is_small(values[k]), (k, values[k], flow.steps.to_dict("records"))
    # and the chart prints nothing small
    assert not small_shown(qplots.flow_diagram(flow, min_cell=11))


# --------------------------------------------------------------------------------------------------------------
# the Data page: a director sees aggregates only
# --------------------------------------------------------------------------------------------------------------

S = (b"patient_id,session_date,session_type,route,phq9\n"
     b"00123,2025-01-01,assessment,,20\n00123,2025-01-03,ketamine,iv,\n00124,2025-01-04,ketamine,,18\n"
     b"00125,2025-01-05,ketamine,zz,99\n")
F = b"patient_id,assessment_date,days_abstinent\n00123,2025-02-03,30\n00124,2025-02-04,30\n00125,2025-02-05,x\n"
ROLES = {"dana@clinic.org": "director", "cleo@clinic.org": "clinician"}


def _data_page(email: str | None) -> AppTest:
    at = dashboard_as(email, ROLES)
    at.run()
    upload_on_data_page(at, S, F)
    return at


def _page_text(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [str(m.value) for m in at.metric]
    for df in at.dataframe:
        parts.append(df.value.to_csv(index=False))
    return "\n".join(parts)


def test_director_on_the_data_page_sees_aggregate_counts_but_no_values_or_lines():
    at = _data_page("dana@clinic.org")
    frames = [df.value for df in at.dataframe]
    assert frames, "the director sees the aggregate table"
    for df in frames:
        assert "value" not in df.columns and "line" not in df.columns
    (aggregate,) = frames
    assert list(aggregate.columns) == ["file", "column", "reason", "problems"]
    text = _page_text(at)
    assert "zz" not in text and "99" not in text  # values of quarantined rows
    assert not [b for b in at.get("download_button")]
    # counts from 1 to 10 (rows read, accepted, problems) are suppressed for the director
    assert {m.label: m.value for m in at.metric}["sessions.csv rows read"] == "<11"
    assert set(aggregate["problems"]) <= {"<11", "*"}
    assert not any(re.fullmatch(r"\d+", str(v)) and 1 <= int(v) <= 10 for v in aggregate["problems"])


@pytest.mark.parametrize("email", [None, "cleo@clinic.org"])  # local admin, signed-in clinician
def test_admin_and_clinician_on_the_data_page_see_the_issue_list_with_values_lines_and_download(email):
    at = _data_page(email)
    issues = next(df.value for df in at.dataframe if "line" in df.value.columns)
    assert list(issues.columns) == ["file", "line", "column", "value", "reason"]
    assert "zz" in set(issues["value"].astype(str))
    assert len([b for b in at.get("download_button")]) == 1
    assert {m.label: m.value for m in at.metric}["sessions.csv rows read"] == "4"
