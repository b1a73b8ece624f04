"""Retention figures and display tables (results of :mod:`analytics.outcomes.retention` in).

The display tables are text (hidden cells as "suppressed (<11)"), shared by the Retention page and the meeting pack.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from analytics import formatting as fmt
from analytics.formatting import escape_plotly
from analytics.outcomes.retention import ALL, STEP_LABELS, Boosters, Dropout, RetentionCascade
from analytics.outcomes.survival import SurvivalCurves
from analytics.report.plots import PALETTE, base_layout, ci_error_y, colour, note_under_axis, rgba
from analytics.report.plots.survival import km_figure

HIDDEN = "suppressed (<11)"


def _group(g: object) -> str:
    return "All patients" if g == ALL else str(g)


def cascade_chart(cascade: RetentionCascade) -> go.Figure:
    """Grouped bars: share reaching each step of the cascade, per program, with Wilson 95% CIs."""
    t = cascade.table
    fig = go.Figure()
    hidden = 0
    groups = list(dict.fromkeys(t["group"]))
    for i, g in enumerate(groups):
        sub = t[t["group"] == g]
        keep = sub["shown"].to_numpy(bool)
        hidden += int((~keep).sum())
        est = (100 * sub["estimate"]).where(keep)
        c = PALETTE[7] if g == ALL else colour(i)
        fig.add_trace(go.Bar(
            x=[STEP_LABELS[s] for s in sub["step"]], y=est, name=escape_plotly(_group(g)),
            marker={"color": rgba(c, 0.85)},
            error_y=ci_error_y(est, 100 * sub["ci_low"], 100 * sub["ci_high"]),
            hovertemplate="%{x}: %{y:.0f}%<extra>%{fullData.name}</extra>"))
    base_layout(fig, title="Retention cascade: share of patients whose window has closed who reached each step",
                x_title="Step (window in days since the first ketamine session)", y_title="Patients (%)", height=470)
    fig.update_layout(barmode="group")
    fig.update_yaxes(range=[0, 105])
    if hidden:
        note_under_axis(fig, f"{hidden} bar{'s' if hidden != 1 else ''} not drawn (small-cell rule).")
    return fig


def cascade_table(cascade: RetentionCascade) -> pd.DataFrame:
    """One row per step, one column per program: "59% (56–62%) of 851" (reached, Wilson CI, patients judged), with
    the patients not yet judged in brackets when there are any."""
    t = cascade.table
    cells = []
    for e, lo, hi, n, wait, ok in zip(t["estimate"], t["ci_low"], t["ci_high"], t["judged"], t["not_yet"],
                                      t["shown"]):
        if not ok:
            cells.append(HIDDEN)
            continue
        text = f"{fmt.pct_ci(e, lo, hi)} of {fmt.count(int(n))}"
        cells.append(text + (f" ({fmt.count(int(wait))} not yet)" if wait else ""))
    wide = t.assign(cell=cells).pivot(index="step", columns="group", values="cell")
    order = [g for g in dict.fromkeys(t["group"]) if g != ALL] + ([ALL] if ALL in set(t["group"]) else [])
    wide = wide.reindex(index=list(dict.fromkeys(t["step"])), columns=order)
    wide.columns = [_group(g) for g in wide.columns]
    wide.insert(0, "step", [STEP_LABELS[s] for s in wide.index])
    return wide.reset_index(drop=True)


def rate_table(t: pd.DataFrame, *, label: str, numerator: str = "reached", first: str | None = None) -> pd.DataFrame:
    """A ``_rate_rows`` table (group, judged, reached/left, estimate, CIs, shown) as text."""
    out = pd.DataFrame({
        "group": [_group(g) for g in t["group"]],
        label: [fmt.pct_ci(e, lo, hi, 1) if ok else HIDDEN
                for e, lo, hi, ok in zip(t["estimate"], t["ci_low"], t["ci_high"], t["shown"])],
        "patients judged": [fmt.count(int(n)) if ok else HIDDEN for n, ok in zip(t["judged"], t["shown"])]})
    if first:
        out.insert(0, first, t[first].to_numpy())
    return out


def _relabel(fig: go.Figure, y_title: str, hover: str) -> go.Figure:
    fig.update_yaxes(title_text=y_title, row=1, col=1)
    for trace in fig.data:
        if trace.hovertemplate and "without return to use" in trace.hovertemplate:
            trace.hovertemplate = trace.hovertemplate.replace("without return to use", hover)
    return fig


def dropout_figure(d: Dropout) -> go.Figure:
    fig = km_figure(d.curves, title=f"Time to dropout (no contact for {d.gap_days} days), Kaplan–Meier with 95% CI")
    return _relabel(fig, "Proportion still in contact", "still in contact")


def booster_figure(curves: SurvivalCurves) -> go.Figure:
    fig = km_figure(curves, title="Time to the first booster session, Kaplan–Meier with 95% CI")
    return _relabel(fig, "Proportion not yet boosted", "not yet boosted")


def medians_table(curves: SurvivalCurves) -> pd.DataFrame:
    m = curves.medians
    min_cell = curves.min_cell
    ok = [min_cell is None or not (0 < n < min_cell) for n in m["n"]]
    return pd.DataFrame({
        "group": [_group(g) for g in m["group"]],
        "median days (95% CI)": [("not reached" if pd.isna(e) else fmt.ci(e, lo, hi, 0)) if o else HIDDEN
                                 for e, lo, hi, o in zip(m["estimate"], m["ci_low"], m["ci_high"], ok)],
        "patients": [fmt.count(int(n)) if o else HIDDEN for n, o in zip(m["n"], ok)]})


def phq9_booster_table(b: Boosters) -> pd.DataFrame:
    t = b.phq9
    return pd.DataFrame({
        "group": [_group(g) for g in t["group"]],
        "PHQ-9 before → after": [f"{fmt.num(x, 1)} → {fmt.num(y, 1)}" if ok else HIDDEN
                                 for x, y, ok in zip(t["before"], t["after"], t["shown"])],
        "change (95% CI)": [fmt.ci(e, lo, hi, 1) if ok else HIDDEN
                            for e, lo, hi, ok in zip(t["estimate"], t["ci_low"], t["ci_high"], t["shown"])],
        "patients": [fmt.count(int(n)) if ok else HIDDEN for n, ok in zip(t["n"], t["shown"])]})


def visit_table(t: pd.DataFrame, *, min_cell: int | None) -> pd.DataFrame:
    small = [min_cell is not None and 0 < r < min_cell for r in t["rows"]]
    return pd.DataFrame({"visit status": [s.replace("_", "-") for s in t["status"]],
                         "visits": [HIDDEN if sm else fmt.count(int(r)) for r, sm in zip(t["rows"], small)],
                         "share of booked visits": [HIDDEN if sm else fmt.pct(x, 1) for x, sm in zip(t["share"], small)]})


__all__ = ["booster_figure", "cascade_chart", "cascade_table", "dropout_figure", "medians_table",
           "phq9_booster_table", "rate_table", "visit_table"]
