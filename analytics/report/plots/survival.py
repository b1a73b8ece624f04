"""Figures for time to return to use: Kaplan–Meier curves with a number-at-risk table, and a forest plot.

Pure builders: a result of :mod:`analytics.outcomes.survival` in, a ``plotly.graph_objects.Figure`` out.

Small cells: when ``curves.min_cell`` is set (suppression on), the curves and the number-at-risk table go through
:func:`analytics.privacy.suppression.suppress_km`: a curve is drawn only while at least ``min_cell`` patients are at risk and
only at days where at least ``min_cell`` events have accrued since the previous drawn point (every drawn drop pools
at least 11 returns to use), censoring ticks (which show a day, never how many) sit on the drawn steps and stop
where the curve stops, and numbers at risk from 1 to ``min_cell - 1``, or whose difference from the next shown one
would be, show as ``"<11"``/``"*"``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analytics.formatting import ci, escape_plotly
from analytics.outcomes.survival import GroupComparison, SurvivalCurves
from analytics.privacy.suppression import SuppressedTable, suppress_km
from analytics.report.plots import base_layout, colour, rgba

X_TITLE = "Days since first ketamine session"
Y_TITLE = "Proportion without return to use"


def _step_points(km: pd.DataFrame, column: str) -> tuple[list[float], list[float]]:
    """Curve from day 0 at 1.0, then the value of ``column`` at each day (drawn as steps, shape 'hv')."""
    days = km["day"].tolist()
    values = km[column].tolist()
    return [0.0] + days, [1.0] + values


def safe_curves(table: pd.DataFrame, *, min_cell: int | None) -> SuppressedTable:
    """KM points that may be drawn (``mask["estimate"]`` False); see :func:`analytics.privacy.suppression.suppress_km`
    (``min_cell`` None: nothing hidden). The chart prints no count at its points (its numbers at risk come from
    :func:`safe_risk_table`), so the per-event-time counts are checked as a chart's, not as a table's."""
    return suppress_km(table, counts_shown="drawn", min_cell=min_cell or 11, enabled=min_cell is not None)


def safe_risk_table(risk_table: pd.DataFrame, *, min_cell: int | None) -> SuppressedTable:
    """The number-at-risk table (cumulative events and censorings) after :func:`analytics.privacy.suppression.suppress_km`."""
    return suppress_km(risk_table, cumulative=True, min_cell=min_cell or 11, enabled=min_cell is not None)


def _censor_ticks(km_all: pd.DataFrame, km: pd.DataFrame, min_cell: int | None) -> pd.DataFrame:
    """Days with a censoring (``day``, ``estimate`` = height of the tick). With ``min_cell``: only before the tail
    (fewer than ``min_cell`` at risk) and at the height of the drawn, pooled steps ``km`` (a tick shows a day,
    never how many, and never the exact curve)."""
    cens = km_all[km_all["n_censor"] > 0]
    if min_cell is None:
        return cens
    small = km_all["n_risk"].to_numpy(float) < min_cell
    tail_day = float(km_all["day"].to_numpy(float)[small.argmax()]) if small.any() else np.inf
    cens = cens[cens["day"] < tail_day]
    step_x, step_y = _step_points(km, "estimate")
    return cens.assign(estimate=[step_y[int(np.searchsorted(step_x, d, side="right")) - 1] for d in cens["day"]])


def km_figure(curves: SurvivalCurves, *, title: str = "Time to return to use", show_ci: bool = True,
              height: int = 560) -> go.Figure:
    """Kaplan–Meier step curves with CI bands, censor marks and a number-at-risk table under the x-axis.

    Parameters
    ----------
    curves:
        Result of :func:`analytics.outcomes.survival.relapse_curves`.
    title:
        Figure title.
    show_ci:
        Draw the pointwise CI as a shaded band.
    height:
        Figure height in pixels.

    Returns
    -------
    plotly.graph_objects.Figure
        Two rows sharing the x-axis (the survminer/ggsurvfit layout): the curves on top, the number at risk
        per group at the ``risk_table`` days below. With ``curves.min_cell`` set, only the points and counts of
        :func:`safe_curves` / :func:`safe_risk_table` are drawn (censoring ticks on the drawn steps).
    """
    groups = curves.groups
    safe = safe_curves(curves.table, min_cell=curves.min_cell)
    risk_safe = safe_risk_table(curves.risk_table, min_cell=curves.min_cell)
    risk_text = risk_safe.text()["n_risk"]
    table = curves.table.assign(_draw=~safe.mask["estimate"], _band=~(safe.mask["ci_low"] | safe.mask["ci_high"]))
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.78, 0.22], vertical_spacing=0.06)
    for i, g in enumerate(groups):
        km_all = table[table["group"] == g]
        km = km_all[km_all["_draw"]]
        c = colour(i)
        label = escape_plotly(g) if curves.by is not None else "All patients"
        if show_ci:
            band = km_all[km_all["_band"]].dropna(subset=["ci_low", "ci_high"])
            x_hi, y_hi = _step_points(band, "ci_high")
            x_lo, y_lo = _step_points(band, "ci_low")
            fig.add_trace(go.Scatter(x=x_hi, y=y_hi, mode="lines", line={"width": 0, "shape": "hv"},
                                     hoverinfo="skip", showlegend=False, legendgroup=label), row=1, col=1)
            fig.add_trace(go.Scatter(x=x_lo, y=y_lo, mode="lines", line={"width": 0, "shape": "hv"},
                                     fill="tonexty", fillcolor=rgba(c, 0.15), hoverinfo="skip",
                                     showlegend=False, legendgroup=label, name=f"{label} {curves.conf_level:.0%} CI"),
                          row=1, col=1)
        x, y = _step_points(km, "estimate")
        cens = _censor_ticks(km_all, km, curves.min_cell)
        if curves.min_cell is not None and len(cens) and float(cens["day"].max()) > x[-1]:
            x, y = [*x, float(cens["day"].max())], [*y, y[-1]]  # the drawn steps run on, flat, to the last tick
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", line={"color": c, "width": 2.5, "shape": "hv"},
                                 name=label, legendgroup=label,
                                 hovertemplate=f"{label}<br>Day %{{x:g}}<br>%{{y:.0%}} without return to use"
                                               "<extra></extra>"),
                      row=1, col=1)
        if len(cens):
            fig.add_trace(go.Scatter(x=cens["day"], y=cens["estimate"], mode="markers",
                                     marker={"symbol": "line-ns-open", "size": 9, "color": c,
                                             "line": {"width": 1.5, "color": c}},
                                     name=f"{label}: censored", legendgroup=label, showlegend=False,
                                     hovertemplate=f"{label}<br>Censored on day %{{x:g}}<extra></extra>"),
                          row=1, col=1)
        in_group = (curves.risk_table["group"] == g).to_numpy()
        risk = curves.risk_table[in_group]
        fig.add_trace(go.Scatter(x=risk["day"], y=[label] * len(risk), mode="text",
                                 text=risk_text[in_group].tolist(),
                                 textfont={"color": c, "size": 12}, showlegend=False, hoverinfo="skip",
                                 legendgroup=label),
                      row=2, col=1)
    labels = [escape_plotly(g) if curves.by is not None else "All patients" for g in groups]
    base_layout(fig, title=title, height=height)
    ticks = curves.risk_table["day"].drop_duplicates().sort_values().tolist()
    fig.update_yaxes(title_text=Y_TITLE, range=[0, 1.03], tickformat=".0%", row=1, col=1)
    fig.update_yaxes(title_text="At risk", type="category", categoryorder="array",
                     categoryarray=list(reversed(labels)), showgrid=False, zeroline=False, row=2, col=1)
    fig.update_xaxes(tickvals=ticks, row=1, col=1)
    fig.update_xaxes(title_text=X_TITLE, tickvals=ticks, showgrid=False, zeroline=False, row=2, col=1)
    xmax = max(ticks + [float(curves.table["day"].max()) if len(curves.table) else 0.0])
    fig.update_xaxes(range=[-0.02 * max(xmax, 1.0), 1.03 * max(xmax, 1.0)])
    return fig


def forest_figure(comparison: GroupComparison, *, title: str | None = None, height: int | None = None) -> go.Figure:
    """Hazard ratios with CIs on a log axis, with the no-difference line at 1.

    Parameters
    ----------
    comparison:
        Result of :func:`analytics.outcomes.survival.compare_groups`.
    title:
        Figure title; default names the grouping and the reference.
    height:
        Figure height; default grows with the number of rows.

    Returns
    -------
    plotly.graph_objects.Figure
        One row per Cox coefficient, labelled ``level vs reference`` for the grouping and ``term (unit)`` for a
        numeric adjustment. Without a Cox model the figure says so.
    """
    hr = comparison.hazard_ratios
    title = title or escape_plotly(f"Hazard of return to use by {comparison.by} (reference: {comparison.reference})")
    fig = go.Figure()
    if hr is None or hr.empty:
        fig.add_annotation(text="Hazard ratios could not be estimated; see the notes.", showarrow=False,
                           x=0.5, y=0.5, xref="paper", yref="paper")
        fig.update_xaxes(visible=False)
        fig.update_yaxes(visible=False)
        return base_layout(fig, title=title, height=height or 240)
    rows = hr.iloc[::-1]
    labels = [escape_plotly(f"{r.level} vs {comparison.reference}" if r.term == comparison.by
                            else f"{r.term} ({r.level})" if r.level and r.level.startswith("per ")
                            else f"{r.term}: {r.level}")
              for r in rows.itertuples(index=False)]
    colours = [colour(0) if r.term == comparison.by else colour(7) for r in rows.itertuples(index=False)]
    est = rows["estimate"].to_numpy(float)
    fig.add_trace(go.Scatter(
        x=est, y=labels, mode="markers", marker={"symbol": "square", "size": 10, "color": colours},
        error_x={"type": "data", "symmetric": False, "array": rows["ci_high"].to_numpy(float) - est,
                 "arrayminus": est - rows["ci_low"].to_numpy(float), "thickness": 2, "width": 0},
        text=[ci(r.estimate, r.ci_low, r.ci_high) for r in rows.itertuples(index=False)],
        hovertemplate="%{y}<br>HR %{text}<extra></extra>", showlegend=False))
    fig.add_vline(x=1.0, line_dash="dash", line_color="#555555")
    low = float(np.nanmin(rows["ci_low"].to_numpy(float)))
    high = float(np.nanmax(rows["ci_high"].to_numpy(float)))
    span = [math.log10(min(low, 1.0)) - 0.1, math.log10(max(high, 1.0)) + 0.1]
    base_layout(fig, title=title, height=height or 180 + 40 * len(rows),
                x_title=f"Hazard ratio, {comparison.conf_level:.0%} CI (log scale)<br>"
                        "below 1 = lower hazard of return to use")  # two lines: fits a half-width column
    fig.update_xaxes(type="log", range=span)
    fig.update_layout(margin={"b": 80})  # room for the two-line axis title
    return fig
