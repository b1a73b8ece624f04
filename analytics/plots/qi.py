"""Figures of the quality-improvement overview: control chart, funnel plot, patient flow.

Pure builders: a result of :mod:`analytics.qi` in, a ``go.Figure`` out. Percentages are shown as % (0–100).
"""

from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analytics.plots import PALETTE, base_layout, rgba
from analytics.qi import ControlChart, FlowTable, FunnelResult

BLUE, ORANGE, GREEN, VERMILLION, GREY = PALETTE[0], PALETTE[1], PALETTE[2], PALETTE[5], "#6E6E6E"


def _y_title(kpi: str | None) -> str:
    if kpi in ("ae_rate", "ae_sessions"):
        return "Ketamine sessions with an adverse event (%)"
    return "Patients meeting the measure (%)"


def control_chart(chart: ControlChart, *, title: str | None = None, y_title: str | None = None) -> go.Figure:
    """Monthly p- or p′-chart: points, centre line, control limits, signals highlighted.

    Signal points (outside a limit, a shift, or a trend) are drawn as large vermillion diamonds whose hover text
    names the rule.
    """
    t = chart.table
    x = [str(v) for v in t["label"]]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=x, y=100 * t["ucl"], mode="lines", line={"color": GREY, "width": 1.5, "dash": "dash",
                                                                        "shape": "hvh"},
                             name=f"Control limits ({chart.limits_sigma:g} sigma)", legendgroup="limits",
                             hovertemplate="Upper limit %{y:.1f}%<extra></extra>"))
    fig.add_trace(go.Scatter(x=x, y=100 * t["lcl"], mode="lines", line={"color": GREY, "width": 1.5, "dash": "dash",
                                                                        "shape": "hvh"},
                             showlegend=False, legendgroup="limits",
                             hovertemplate="Lower limit %{y:.1f}%<extra></extra>"))
    fig.add_trace(go.Scatter(x=x, y=[100 * chart.centre] * len(x), mode="lines",
                             line={"color": PALETTE[7], "width": 1.5}, name=f"Centre {100 * chart.centre:.1f}%",
                             hoverinfo="skip"))
    custom = list(zip(t["numerator"].astype(int), t["denominator"].astype(int)))
    fig.add_trace(go.Scatter(x=x, y=100 * t["estimate"], mode="lines+markers", name="Month",
                             line={"color": BLUE, "width": 2}, marker={"size": 7, "color": BLUE},
                             customdata=custom,
                             hovertemplate="%{x}: %{y:.1f}% (%{customdata[0]} of %{customdata[1]})<extra></extra>"))
    sig = t[t["signal"]]
    if len(sig):
        why = [", ".join(name for name, on in (("outside the limits", r.outside), ("shift", r.shift),
                                                ("trend", r.trend)) if on) for r in sig.itertuples()]
        fig.add_trace(go.Scatter(x=[str(v) for v in sig["label"]], y=100 * sig["estimate"], mode="markers",
                                 name="Signal", marker={"size": 13, "color": VERMILLION, "symbol": "diamond",
                                                        "line": {"color": "white", "width": 1}},
                                 text=why, hovertemplate="%{x}: %{y:.1f}% — %{text}<extra></extra>"))
    kind = "Laney p′ chart" if chart.chart == "p_prime" else "p-chart"
    base_layout(fig, title=title or f"{chart.label or 'Monthly rate'}: {kind}", x_title="Month",
                y_title=y_title or _y_title(chart.kpi))
    fig.update_yaxes(rangemode="tozero")
    fig.update_xaxes(type="category")
    return fig


def funnel_plot(result: FunnelResult, *, title: str | None = None, y_title: str | None = None) -> go.Figure:
    """Rate against denominator per unit, with the target line and funnel limits.

    The widest limits are solid, the inner ones dashed; units outside the widest limits are vermillion, outside
    the inner ones orange, others blue; each point is labelled with its unit.
    """
    fig = go.Figure()
    levels = sorted(result.conf_levels)
    for i, cl in enumerate(levels):
        cur = result.limits[result.limits["conf_level"] == cl]
        dash = "solid" if cl == levels[-1] else "dash"
        name = f"{100 * cl:g}% limits"
        for side, show in (("upper", True), ("lower", False)):
            fig.add_trace(go.Scatter(x=cur["n"], y=100 * cur[side], mode="lines", name=name, legendgroup=name,
                                     showlegend=show, line={"color": GREY if i == 0 else PALETTE[7],
                                                            "dash": dash, "width": 1.3},
                                     hovertemplate=f"{name}, n=%{{x}}: %{{y:.1f}}%<extra></extra>"))
    n_max = float(result.limits["n"].max())
    fig.add_trace(go.Scatter(x=[0, n_max], y=[100 * result.target] * 2, mode="lines",
                             name=f"Overall {100 * result.target:.1f}%", line={"color": GREEN, "width": 1.5},
                             hoverinfo="skip"))
    widest = result.flags[result.flags["conf_level"] == levels[-1]].set_index("unit")["position"]
    inner = result.flags[result.flags["conf_level"] == levels[0]].set_index("unit")["position"]
    u = result.units
    colour = [VERMILLION if widest[k] != "within" else (ORANGE if inner[k] != "within" else BLUE) for k in u["unit"]]
    status = [f"outside {100 * levels[-1]:g}% limits ({widest[k]})" if widest[k] != "within" else
              (f"outside {100 * levels[0]:g}% limits ({inner[k]})" if inner[k] != "within" else "within limits")
              for k in u["unit"]]
    fig.add_trace(go.Scatter(
        x=u["denominator"], y=100 * u["estimate"], mode="markers+text", text=u["unit"], textposition="top center",
        marker={"size": 10, "color": colour, "line": {"color": "white", "width": 1}}, name=result.unit.capitalize(),
        customdata=list(zip(u["numerator"], status)),
        hovertemplate="%{text}: %{y:.1f}% (%{customdata[0]} of %{x}) — %{customdata[1]}<extra></extra>"))
    unit_word = "sessions" if result.kpi in ("ae_rate", "ae_sessions") else "patients"
    base_layout(fig, title=title or f"{result.label} by {result.unit}: funnel plot",
                x_title=f"Number of {unit_word} (n)", y_title=y_title or _y_title(result.kpi))
    fig.update_yaxes(range=[0, 100])
    fig.update_xaxes(rangemode="tozero")
    return fig


def flow_diagram(flow: FlowTable, *, title: str = "Patient flow") -> go.Figure:
    """CONSORT-style flow as horizontal bars, top to bottom, with the losses and their reasons.

    Row counts (uploaded, accepted) get their own panel above the patient steps, since their scale differs.
    """
    steps = flow.steps
    losses = flow.losses
    rows_part = steps[steps["unit"] == "rows"]
    pat_part = steps[steps["unit"] == "patients"]
    n_panels = 2 if len(rows_part) else 1
    heights = [len(rows_part), len(pat_part)] if n_panels == 2 else [1]
    fig = make_subplots(rows=n_panels, cols=1, row_heights=heights, vertical_spacing=0.08,
                        subplot_titles=(["Rows of the uploaded files", "Patients"] if n_panels == 2 else None))

    def hover(step: str, lost: float) -> str:
        sub = losses[losses["step"] == step]
        if sub.empty:
            return ""
        lines = [f"{r.reason}: {int(r.n):,}" for r in sub.itertuples()]
        return "<br>".join(lines)

    for panel, part, colour in ((1, rows_part, PALETTE[4]), (n_panels, pat_part, BLUE)):
        if part.empty:
            continue
        labels = part["label"].tolist()[::-1]
        ns = part["n"].tolist()[::-1]
        lost = part["lost"].tolist()[::-1]
        text = [f"{n:,}" + (f"  (−{int(ll):,})" if not math.isnan(ll) and ll > 0 else "") for n, ll in zip(ns, lost)]
        fig.add_trace(go.Bar(y=labels, x=ns, orientation="h", marker={"color": rgba(colour, 0.85)}, text=text,
                             textposition="outside", cliponaxis=False, showlegend=False,
                             customdata=[hover(s, ll) for s, ll in zip(part["step"].tolist()[::-1], lost)],
                             hovertemplate="%{y}: %{x:,}<br>%{customdata}<extra></extra>"), row=panel, col=1)
        fig.update_xaxes(title_text=None if part is rows_part else "Patients", rangemode="tozero",
                         range=[0, max(ns) * 1.25 if ns else 1], row=panel, col=1)
    base_layout(fig, title=title, height=max(320, 48 * len(steps) + 140))
    fig.update_layout(bargap=0.35)
    return fig


__all__ = ["control_chart", "flow_diagram", "funnel_plot"]
