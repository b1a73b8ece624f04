"""Figures of the substance-use page and pack section: PDA / heavy days over time, urine-negative share by substance,
30-day continuous abstinence with both bounds, and the AUDIT-C / BAM / craving / GAD-7 courses.

Pure builders: a result of :mod:`analytics.outcomes.substance_use` in, a ``go.Figure`` out (percentages 0–100).
Small cells: with ``min_cell`` (``settings.min_cell`` when suppression is on; None draws everything, internal use) a
point whose count, or the complement of its count in its denominator, is 1 to ``min_cell - 1`` is not drawn, and the
note under the axis says how many were left out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from analytics.formatting import escape_plotly
from analytics.outcomes.substance_use import WINDOWS, ContinuousAbstinence, Courses, UrineResults, UseCourse
from analytics.report.plots import base_layout, colour, note_under_axis, rgba

WEEKS_TITLE = "Weeks since first ketamine session"
# where an observed window is drawn on the weeks axis: its middle day (the open last window at day 420)
WINDOW_WEEKS = {name: (max(lo, -30) + (hi if np.isfinite(hi) else 475)) / 2 / 7 for name, lo, hi in WINDOWS}
WINDOW_ORDER = [w[0] for w in WINDOWS]


def _small(n: pd.Series | np.ndarray, min_cell: int | None) -> np.ndarray:
    n = np.asarray(n, dtype=float)
    return np.zeros(len(n), dtype=bool) if min_cell is None else (n > 0) & (n < min_cell)


def _pct(conf_level: float) -> str:
    return f"{round(conf_level * 100)}%"


def use_course_chart(course: UseCourse, *, min_cell: int | None = None) -> go.Figure:
    """Model line with its CI band per group, observed means per time window (open circles, t intervals)."""
    fig = go.Figure()
    groups = list(dict.fromkeys(course.predicted["group"]))
    for i, (group, sub) in enumerate(course.predicted.groupby("group", sort=False)):
        c, g = colour(i), escape_plotly(group)
        fig.add_trace(go.Scatter(x=np.r_[sub["weeks"], sub["weeks"][::-1]], y=np.r_[sub["ci_high"], sub["ci_low"][::-1]],
                                 fill="toself", fillcolor=rgba(c, 0.18), line={"width": 0}, hoverinfo="skip",
                                 legendgroup=str(g), showlegend=False))
        fig.add_trace(go.Scatter(x=sub["weeks"], y=sub["estimate"], mode="lines", line={"color": c, "width": 3},
                                 name=f"{g} (model)", legendgroup=str(g),
                                 hovertemplate="Week %{x:.0f}: %{y:.1f}%" f"<extra>{g}</extra>"))
    obs = course.observed
    hidden = _small(obs["n"], min_cell)
    for group, sub in obs[~hidden].groupby("group", sort=False):
        i = groups.index(group) if group in groups else len(groups)
        c, g = colour(i), escape_plotly(group)
        fig.add_trace(go.Scatter(
            x=sub["window"].map(WINDOW_WEEKS), y=sub["estimate"], mode="markers", legendgroup=str(g),
            name=f"{g}: observed ({_pct(course.conf_level)} CI)",
            marker={"color": c, "size": 8, "symbol": "circle-open", "line": {"width": 2}},
            error_y={"type": "data", "symmetric": False, "array": sub["ci_high"] - sub["estimate"],
                     "arrayminus": sub["estimate"] - sub["ci_low"], "color": c, "thickness": 1.2},
            customdata=np.c_[sub["window"], sub["n"]],
            hovertemplate="%{customdata[0]}: %{y:.1f}%, %{customdata[1]} patients" f"<extra>{g}</extra>"))
    what = "Days abstinent" if course.measure == "pda" else "Heavy-drinking days (alcohol patients)"
    base_layout(fig, title=f"{what}: % of days, model-based mean ({_pct(course.conf_level)} CI) and observed means",
                x_title=WEEKS_TITLE, y_title=f"{what.split(' (')[0]} (% of days)", height=520)
    fig.update_layout(legend={"orientation": "h", "yanchor": "top", "y": -0.22, "x": 0}, margin={"b": 150})
    if hidden.any():
        note_under_axis(fig, f"{int(hidden.sum())} observed point(s) of fewer than {min_cell} patients not drawn.")
    return fig


def urine_chart(urine: UrineResults, *, group: str, min_cell: int | None = None) -> go.Figure:
    """Percent of urine tests negative per substance over time windows (Wilson CIs), one group. Substances never
    found (after the exclusions) are left out of the chart (they are 100% negative; the table lists them)."""
    t = urine.table[urine.table["group"] == group]
    found = t.groupby("substance")["n_negative"].sum() < t.groupby("substance")["n_tests"].sum()
    t = t[t["substance"].map(found).fillna(False).astype(bool) | t["substance"].str.startswith("any")]
    hidden = _small(t["n_tests"], min_cell) | _small(t["n_negative"], min_cell) | \
        _small(t["n_tests"] - t["n_negative"], min_cell)
    fig = go.Figure()
    for i, (substance, sub) in enumerate(t[~hidden & (t["n_tests"] > 0)].groupby("substance", sort=False)):
        c = colour(i)
        dash = "dash" if substance.startswith("any") else "solid"
        fig.add_trace(go.Scatter(
            x=sub["window"], y=sub["estimate"], mode="lines+markers", name=escape_plotly(substance),
            line={"color": c, "width": 3 if dash == "dash" else 2, "dash": dash},
            error_y={"type": "data", "symmetric": False, "array": sub["ci_high"] - sub["estimate"],
                     "arrayminus": sub["estimate"] - sub["ci_low"], "color": c, "thickness": 1},
            customdata=np.c_[sub["n_negative"], sub["n_tests"], sub["n_excluded"]],
            hovertemplate="%{x}: %{y:.1f}% negative (%{customdata[0]} of %{customdata[1]} tests; %{customdata[2]} "
                          "excluded)" f"<extra>{escape_plotly(substance)}</extra>"))
    base_layout(fig, title=f"Urine tests negative, by substance: {escape_plotly(group)} ({_pct(urine.conf_level)} CI)",
                x_title="Time since first ketamine session", y_title="Tests negative (%)", height=500)
    fig.update_xaxes(categoryorder="array", categoryarray=WINDOW_ORDER)
    fig.update_layout(legend={"orientation": "h", "yanchor": "top", "y": -0.25, "x": 0}, margin={"b": 150})
    if hidden.any():
        note_under_axis(fig, f"{int(hidden.sum())} point(s) with counts of 1–{min_cell - 1} not drawn (small-cell rule)."
                        if min_cell else "")
    return fig


def abstinence_chart(cab: ContinuousAbstinence, *, min_cell: int | None = None) -> go.Figure:
    """30-day continuous abstinence at 6 and 12 months per group: both bounds (filled: missing = use; open:
    completers only) with Wilson CIs."""
    t = cab.table
    fig = go.Figure()
    hidden_n = 0
    for b, (bound, symbol, label) in enumerate((("missing_as_use", "circle", "missing counted as use"),
                                                ("completers", "circle-open", "completers only"))):
        den = t["n_eligible"] if bound == "missing_as_use" else t["n_abstinent"] + t["n_use"]
        hide = _small(den, min_cell) | _small(t["n_abstinent"], min_cell) | _small(den - t["n_abstinent"], min_cell)
        hidden_n += int(hide.sum())
        sub = t[~hide & (den > 0)]
        x = [f"month {m}<br>{escape_plotly(g)}" for m, g in zip(sub["month"], sub["group"])]
        c = colour(b)
        fig.add_trace(go.Scatter(
            x=x, y=sub[f"{bound}_pct"], mode="markers", name=label,
            marker={"color": c, "size": 11, "symbol": symbol, "line": {"width": 2}},
            error_y={"type": "data", "symmetric": False, "array": sub[f"{bound}_high"] - sub[f"{bound}_pct"],
                     "arrayminus": sub[f"{bound}_pct"] - sub[f"{bound}_low"], "color": c},
            customdata=np.c_[sub["n_abstinent"], den[sub.index]],
            hovertemplate="%{y:.1f}% (%{customdata[0]} of %{customdata[1]})" f"<extra>{label}</extra>"))
    base_layout(fig, title=f"30-day continuous abstinence at 6 and 12 months, both missing-data bounds "
                           f"({_pct(cab.conf_level)} CI)", x_title="", y_title="Abstinent (%)", height=460)
    fig.update_yaxes(range=[0, 100])
    if hidden_n:
        note_under_axis(fig, f"{hidden_n} estimate(s) with counts of 1–{min_cell - 1} not drawn (small-cell rule).")
    return fig


def course_chart(courses: Courses, measure: str, *, min_cell: int | None = None) -> go.Figure:
    """Observed mean per time window and group for one measure, with t intervals."""
    t = courses.table[courses.table["measure"] == measure]
    label = t["label"].iloc[0] if len(t) else measure
    hidden = _small(t["n"], min_cell)
    fig = go.Figure()
    for i, (group, sub) in enumerate(t[~hidden].groupby("group", sort=False)):
        c, g = colour(i), escape_plotly(group)
        fig.add_trace(go.Scatter(
            x=sub["window"], y=sub["estimate"], mode="lines+markers", name=str(g), line={"color": c, "width": 2},
            error_y={"type": "data", "symmetric": False, "array": sub["ci_high"] - sub["estimate"],
                     "arrayminus": sub["estimate"] - sub["ci_low"], "color": c, "thickness": 1},
            customdata=sub["n"], hovertemplate="%{x}: %{y:.2f}, %{customdata} patients" f"<extra>{g}</extra>"))
    base_layout(fig, title=f"{escape_plotly(label)}: observed mean per time window ({_pct(courses.conf_level)} CI)",
                x_title="Time since first ketamine session", y_title=f"{escape_plotly(label.split(' (')[0])} score",
                height=420)
    fig.update_xaxes(categoryorder="array", categoryarray=WINDOW_ORDER)
    if hidden.any():
        note_under_axis(fig, f"{int(hidden.sum())} window(s) of fewer than {min_cell} patients not drawn.")
    return fig
