"""Figures of the quality-improvement overview: control chart, funnel plot, patient flow.

Pure builders: a result of :mod:`analytics.outcomes.qi` in, a ``go.Figure`` out. Percentages are shown as % (0–100).

Small cells: with ``min_cell`` (pass ``settings.min_cell`` when suppression is on; the default None draws every
count, for internal use) no count from 1 to ``min_cell - 1`` reaches a label, a hover card or a point's position. A
rate placed on a chart gives its counts away (a control chart's limits and a funnel plot's x-axis show the
denominator), so such points are not drawn at all, nor are the points hidden to protect them
(:func:`analytics.privacy.suppression.hidden_rate_points`); the figure says how many.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analytics.formatting import escape_plotly
from analytics.outcomes.qi import ControlChart, FlowTable, FunnelResult
from analytics.privacy.counts import rate_is_safe
from analytics.privacy.suppression import SuppressedCells, hidden_rate_points, suppress_flow
from analytics.report.plots import NOTE_GREY, PALETTE, base_layout, note_under_axis, rgba

BLUE, ORANGE, GREEN, VERMILLION, GREY = PALETTE[0], PALETTE[1], PALETTE[2], PALETTE[5], NOTE_GREY


def _y_title(kpi: str | None) -> str:
    if kpi in ("ae_rate", "ae_sessions"):
        return "Ketamine sessions with an adverse event (%)"
    return "Patients meeting the measure (%)"


def control_chart(chart: ControlChart, *, title: str | None = None, y_title: str | None = None,
                  min_cell: int | None = None) -> go.Figure:
    """Monthly (or quarterly) p- or p′-chart: points, centre line, control limits, signals highlighted.

    A chart aggregated by quarter (``chart.interval``, chosen when monthly counts would be suppressed) says so in its
    title and on its x-axis.

    Signal points (outside a limit, a shift, or a trend) are drawn as large vermillion diamonds whose hover text
    names the rule. With ``min_cell``, a month whose numerator, denominator or complement is 1 to
    ``min_cell - 1`` (or that is hidden so that such a month cannot be worked out from the total) is not drawn:
    no point, no limits (they depend on the month's denominator), no hover; a note under the chart says how many.
    """
    t = chart.table.reset_index(drop=True)
    x = [escape_plotly(v) for v in t["label"]]
    hide = (hidden_rate_points(t["numerator"], t["denominator"], min_cell=min_cell) if min_cell is not None
            else np.zeros(len(t), dtype=bool))

    def keep(values: object) -> list[float | None]:
        return [None if h else float(v) for v, h in zip(values, hide)]  # type: ignore[call-overload]

    fig = go.Figure()
    fig.add_trace(go.Scatter(x=x, y=keep(100 * t["ucl"]), mode="lines",
                             line={"color": GREY, "width": 1.5, "dash": "dash", "shape": "hvh"},
                             name=f"Control limits ({chart.limits_sigma:g} sigma)", legendgroup="limits",
                             hovertemplate="Upper limit %{y:.1f}%<extra></extra>"))
    fig.add_trace(go.Scatter(x=x, y=keep(100 * t["lcl"]), mode="lines",
                             line={"color": GREY, "width": 1.5, "dash": "dash", "shape": "hvh"},
                             showlegend=False, legendgroup="limits",
                             hovertemplate="Lower limit %{y:.1f}%<extra></extra>"))
    total_safe = min_cell is None or rate_is_safe(t["numerator"].sum(), t["denominator"].sum(), min_cell=min_cell)
    if total_safe:
        fig.add_trace(go.Scatter(x=x, y=[100 * chart.centre] * len(x), mode="lines",
                                 line={"color": PALETTE[7], "width": 1.5}, name=f"Centre {100 * chart.centre:.1f}%",
                                 hoverinfo="skip"))
    custom = [None if h else (int(a), int(b)) for a, b, h in zip(t["numerator"], t["denominator"], hide)]
    fig.add_trace(go.Scatter(x=x, y=keep(100 * t["estimate"]), mode="lines+markers", name="Month",
                             line={"color": BLUE, "width": 2}, marker={"size": 7, "color": BLUE},
                             customdata=custom,
                             hovertemplate="%{x}: %{y:.1f}% (%{customdata[0]} of %{customdata[1]})<extra></extra>"))
    sig = t[t["signal"].to_numpy(dtype=bool) & ~hide]
    if len(sig):
        why = [", ".join(name for name, on in (("outside the limits", r.outside), ("shift", r.shift),
                                                ("trend", r.trend)) if on) for r in sig.itertuples()]
        fig.add_trace(go.Scatter(x=[escape_plotly(v) for v in sig["label"]], y=100 * sig["estimate"], mode="markers",
                                 name="Signal", marker={"size": 13, "color": VERMILLION, "symbol": "diamond",
                                                        "line": {"color": "white", "width": 1}},
                                 text=why, hovertemplate="%{x}: %{y:.1f}% — %{text}<extra></extra>"))
    kind = "Laney p′ chart" if chart.chart == "p_prime" else "p-chart"
    quarterly = getattr(chart, "interval", "month") == "quarter"
    if quarterly:
        kind += ", by quarter (monthly counts would be suppressed)"
    unit = "quarter" if quarterly else "month"
    base_layout(fig, title=title or escape_plotly(f"{chart.label or 'Monthly rate'}: {kind}"),
                x_title=unit.capitalize(), y_title=y_title or _y_title(chart.kpi))
    if hide.any():
        k = int(hide.sum())
        note_under_axis(fig, f"{k} {unit}{'s' if k != 1 else ''} not drawn (small-cell rule: a count from 1 to "
                             f"{min_cell - 1} behind the rate, or hidden so that one cannot be worked out)."
                        + ("" if total_safe else " Centre line not shown: its counts are small."))
    fig.update_yaxes(rangemode="tozero")
    fig.update_xaxes(type="category")
    return fig


def _grid(shown_n: np.ndarray) -> np.ndarray:
    """Where to draw the limit curves when units are hidden: a grid that depends only on the units drawn (the
    result's own grid holds every unit's denominator and ends past the largest one, giving a hidden unit away)."""
    top = max(float(shown_n.max()) * 1.15, 2.0) if len(shown_n) else 2.0
    return np.unique(np.concatenate([np.round(np.geomspace(1, top, 150)), shown_n.astype(float)]))


def funnel_plot(result: FunnelResult, *, title: str | None = None, y_title: str | None = None,
                min_cell: int | None = None) -> go.Figure:
    """Rate against denominator per unit, with the target line and funnel limits.

    The widest limits are solid, the inner ones dashed; units outside the widest limits are vermillion, outside
    the inner ones orange, others blue; each point is labelled with its unit. With ``min_cell``, a unit whose
    numerator, denominator or complement is 1 to ``min_cell - 1`` (or that is hidden so that such a unit cannot be
    worked out from the total) is not drawn (its x position is its denominator); a note under the chart names the
    units left out, and the limit curves are drawn on a grid that does not depend on them.
    """
    u = result.units.reset_index(drop=True)
    hide = (hidden_rate_points(u["numerator"], u["denominator"], min_cell=min_cell) if min_cell is not None
            else np.zeros(len(u), dtype=bool))
    shown = u[~hide]
    fig = go.Figure()
    levels = sorted(result.conf_levels)
    grid = _grid(shown["denominator"].to_numpy(dtype=float)) if hide.any() else None
    for i, cl in enumerate(levels):
        cur = result.limits[result.limits["conf_level"] == cl].sort_values("n")
        dash = "solid" if cl == levels[-1] else "dash"
        name = f"{100 * cl:g}% limits"
        for side, show in (("upper", True), ("lower", False)):
            if grid is None:
                xs, ys = cur["n"].to_numpy(float), cur[side].to_numpy(float)
            else:  # re-read on the grid of drawn units (log-linear interpolation of the computed curve)
                xs = grid
                ys = np.interp(np.log(grid), np.log(cur["n"].to_numpy(float)), cur[side].to_numpy(float))
            fig.add_trace(go.Scatter(x=xs, y=100 * ys, mode="lines", name=name, legendgroup=name,
                                     showlegend=show, line={"color": GREY if i == 0 else PALETTE[7],
                                                            "dash": dash, "width": 1.3},
                                     hovertemplate=f"{name}, n=%{{x}}: %{{y:.1f}}%<extra></extra>"))
    n_max = float(result.limits["n"].max()) if grid is None else float(grid.max())
    total_safe = min_cell is None or rate_is_safe(u["numerator"].sum(), u["denominator"].sum(), min_cell=min_cell)
    if total_safe:
        fig.add_trace(go.Scatter(x=[0, n_max], y=[100 * result.target] * 2, mode="lines",
                                 name=f"Overall {100 * result.target:.1f}%", line={"color": GREEN, "width": 1.5},
                                 hoverinfo="skip"))
    widest = result.flags[result.flags["conf_level"] == levels[-1]].set_index("unit")["position"]
    inner = result.flags[result.flags["conf_level"] == levels[0]].set_index("unit")["position"]
    colour = [VERMILLION if widest[k] != "within" else (ORANGE if inner[k] != "within" else BLUE)
              for k in shown["unit"]]
    status = [f"outside {100 * levels[-1]:g}% limits ({widest[k]})" if widest[k] != "within" else
              (f"outside {100 * levels[0]:g}% limits ({inner[k]})" if inner[k] != "within" else "within limits")
              for k in shown["unit"]]
    fig.add_trace(go.Scatter(
        x=shown["denominator"], y=100 * shown["estimate"], mode="markers+text",
        text=[escape_plotly(v) for v in shown["unit"]],
        textposition="top center", marker={"size": 10, "color": colour, "line": {"color": "white", "width": 1}},
        name=result.unit.capitalize(), customdata=list(zip(shown["numerator"], status)),
        hovertemplate="%{text}: %{y:.1f}% (%{customdata[0]} of %{x}) — %{customdata[1]}<extra></extra>"))
    unit_word = "sessions" if result.kpi in ("ae_rate", "ae_sessions") else "patients"
    base_layout(fig, title=title or escape_plotly(f"{result.label} by {result.unit}: funnel plot"),
                x_title=f"Number of {unit_word} (n)", y_title=y_title or _y_title(result.kpi))
    if hide.any():
        names = ", ".join(str(v) for v in u.loc[hide, "unit"])
        note_under_axis(fig, f"Not drawn (small-cell rule: a count from 1 to {min_cell - 1} behind the rate, "  # type: ignore[operator]
                             f"or hidden so that one cannot be worked out): {names}."
                        + ("" if total_safe else " Overall line not shown: its counts are small."))
    fig.update_yaxes(range=[0, 100])
    fig.update_xaxes(rangemode="tozero")
    return fig


def flow_cells(flow: FlowTable, *, min_cell: int | None = None) -> SuppressedCells:
    """The flow's counts after small-cell suppression (None: off); see :func:`analytics.privacy.suppression.suppress_flow`.

    The Overview page shows the losses table from the same cells as the chart, so both hide the same numbers.
    """
    return suppress_flow(flow.steps, flow.losses, min_cell=min_cell or 11, enabled=min_cell is not None)


def flow_diagram(flow: FlowTable, *, title: str = "Patient flow", min_cell: int | None = None) -> go.Figure:
    """CONSORT-style flow as horizontal bars, top to bottom, with the losses and their reasons.

    Row counts (uploaded, accepted) get their own panel above the patient steps, since their scale differs.
    With ``min_cell``, a step, loss or reason from 1 to ``min_cell - 1`` (or one that would give such a count away:
    two bars whose difference is small) shows as ``"<11"`` (or ``"*"``) and its bar is not drawn.
    """
    cells = flow_cells(flow, min_cell=min_cell)
    steps = flow.steps
    losses = flow.losses
    rows_part = steps[steps["unit"] == "rows"]
    pat_part = steps[steps["unit"] == "patients"]
    n_panels = 2 if len(rows_part) else 1
    heights = [len(rows_part), len(pat_part)] if n_panels == 2 else [1]
    fig = make_subplots(rows=n_panels, cols=1, row_heights=heights, vertical_spacing=0.08,
                        subplot_titles=(["Rows of the uploaded files", "Patients"] if n_panels == 2 else None))

    def hover(step: str) -> str:
        sub = losses[losses["step"] == step]
        return "<br>".join(f"{escape_plotly(r)}: {cells.text(('loss', step, r))}" for r in sub["reason"])

    def label(step: str) -> str:
        text = cells.text(("step", step))
        lost = ("lost", step)
        if lost in cells.values and (cells.values[lost] or 0) > 0:
            text += f"  (−{cells.text(lost)})"
        return text

    any_hidden = False
    for panel, part, colour in ((1, rows_part, PALETTE[4]), (n_panels, pat_part, BLUE)):
        if part.empty:
            continue
        names = part["step"].tolist()[::-1]
        labels = [escape_plotly(v) for v in part["label"].tolist()[::-1]]
        ns = [cells.value(("step", s)) for s in names]
        any_hidden |= any(v is None for v in ns)
        card = [f"{lab}: {cells.text(('step', s))}" + (f"<br>{hover(s)}" if hover(s) else "")
                for lab, s in zip(labels, names)]
        fig.add_trace(go.Bar(y=labels, x=[0 if v is None else v for v in ns], orientation="h",
                             marker={"color": rgba(colour, 0.85)}, text=[label(s) for s in names],
                             textposition="outside", cliponaxis=False, showlegend=False,
                             customdata=card, hovertemplate="%{customdata}<extra></extra>"), row=panel, col=1)
        top = max([v for v in ns if v is not None], default=1.0)
        fig.update_xaxes(title_text=None if part is rows_part else "Patients", rangemode="tozero",
                         range=[0, top * 1.25], row=panel, col=1)
    base_layout(fig, title=title, height=max(320, 48 * len(steps) + 140))
    if any_hidden:
        fig.update_xaxes(title_text=f"Patients<br><span style='font-size:11px;color:{GREY}'>Bars marked "
                                    f"<{min_cell} or * are not drawn (small-cell rule).</span>", row=n_panels, col=1)
    fig.update_layout(bargap=0.35)
    return fig


__all__ = ["control_chart", "flow_cells", "flow_diagram", "funnel_plot"]
