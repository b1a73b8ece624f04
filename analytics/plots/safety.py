"""Figures of the safety panel: adverse events by type and route, raised BP/HR trend, clinic vs published.

Pure builders: a result of :mod:`analytics.safety` in, a ``go.Figure`` out. Shares are shown as % (0–100).
"""

from __future__ import annotations

from typing import Literal

import pandas as pd
import plotly.graph_objects as go

from analytics.plots import PALETTE, base_layout, colour, rgba
from analytics.safety import ALL, AdverseEventRates, SafetyComparison, SafetyTrend

METRIC_LABELS = {"ae_sessions": "Sessions with an adverse event", "ae_per_session": "Adverse events per 100 sessions",
                 "bp_raised": "Sessions with raised blood pressure", "hr_raised": "Sessions with raised heart rate"}


def adverse_events_chart(rates: AdverseEventRates, *, unit_of_analysis: Literal["session", "patient"] = "session",
                         include_all_routes: bool = True, hide_empty_types: bool = True,
                         title: str | None = None) -> go.Figure:
    """Grouped bars: share with each adverse event, by route, with CI error bars (Wilson).

    Per session the bar is sessions with the event per 100 ketamine sessions; per patient it is the % of patients
    with at least one session with the event. Event types never recorded are hidden unless asked.
    """
    t = rates.table[rates.table["unit_of_analysis"] == unit_of_analysis]
    if hide_empty_types:
        seen = t[(t["route"] == ALL) & (t["numerator"] > 0)]["event_type"]
        t = t[t["event_type"].isin(set(seen))]
    routes = [r for r in dict.fromkeys(t["route"]) if r != ALL] + ([ALL] if include_all_routes else [])
    order = [e for e in dict.fromkeys(t["event_type"]) if e != "any"] + ["any"]
    fig = go.Figure()
    for i, route in enumerate(routes):
        sub = t[t["route"] == route].set_index("event_type").reindex(order).dropna(subset=["denominator"])
        c = PALETTE[7] if route == ALL else colour(i)
        fig.add_trace(go.Bar(
            x=sub.index, y=100 * sub["estimate"], name="All routes" if route == ALL else route.upper()
            if len(route) <= 2 else route.capitalize(), marker={"color": rgba(c, 0.85)},
            error_y={"type": "data", "symmetric": False, "array": 100 * (sub["ci_high"] - sub["estimate"]),
                     "arrayminus": 100 * (sub["estimate"] - sub["ci_low"]), "color": "#333333", "thickness": 1},
            customdata=list(zip(sub["numerator"].astype(int), sub["denominator"].astype(int))),
            hovertemplate="%{x}: %{y:.1f}% (%{customdata[0]} of %{customdata[1]})<extra>%{fullData.name}</extra>"))
    if unit_of_analysis == "session":
        y = "Sessions with the event per 100 ketamine sessions"
        default = "Adverse events per 100 ketamine sessions, by type and route (per session)"
    else:
        window = (f" in the first {rates.patient_window_days} days" if rates.patient_window_days else "")
        y = f"Patients with ≥ 1 session with the event{window} (%)"
        default = "Patients with an adverse event, by type and route (per patient)"
    base_layout(fig, title=title or default, x_title="Adverse event", y_title=y)
    fig.update_layout(barmode="group")
    fig.update_yaxes(rangemode="tozero")
    return fig


def vital_signs_trend(trend: SafetyTrend, *, metrics: tuple[str, ...] = ("bp_raised", "hr_raised"),
                      title: str | None = None) -> go.Figure:
    """Monthly share of ketamine sessions with raised BP / heart rate (or any metric of the trend), with CI bands."""
    fig = go.Figure()
    for i, m in enumerate(metrics):
        sub = trend.table[(trend.table["metric"] == m) & (trend.table["denominator"] > 0)]
        c = colour(i)
        x = list(sub["month"]) + list(sub["month"])[::-1]
        fig.add_trace(go.Scatter(x=x, y=list(100 * sub["ci_high"]) + list(100 * sub["ci_low"])[::-1],
                                 fill="toself", fillcolor=rgba(c, 0.15), line={"width": 0}, hoverinfo="skip",
                                 showlegend=False, legendgroup=m))
        fig.add_trace(go.Scatter(
            x=sub["month"], y=100 * sub["estimate"], mode="lines+markers", name=METRIC_LABELS.get(m, m),
            line={"color": c, "width": 2}, legendgroup=m,
            customdata=list(zip(sub["numerator"].astype(int), sub["denominator"].astype(int))),
            hovertemplate="%{x|%b %Y}: %{y:.1f}% (%{customdata[0]} of %{customdata[1]})<extra></extra>"))
    y = ("Per 100 ketamine sessions" if metrics == ("ae_per_session",) else "Ketamine sessions (%)")
    base_layout(fig, title=title or "Raised blood pressure and heart rate by month (per session)",
                x_title="Month", y_title=y)
    fig.update_yaxes(rangemode="tozero")
    return fig


def published_comparison_chart(comp: SafetyComparison, *, title: str | None = None) -> go.Figure:
    """Clinic figure (with Wilson CI) beside the published figure, one row per metric, same unit of analysis."""
    t = comp.table.iloc[::-1]
    def label(frame: pd.DataFrame) -> list[str]:
        return [f"{m[:1].upper()}{m[1:]} [{pid}, per {u}]"
                for m, pid, u in zip(frame["metric"], frame["published_id"], frame["unit_of_analysis"])]

    labels = label(t)
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=100 * t["estimate"], y=labels, mode="markers", name="This clinic", marker={"color": PALETTE[0], "size": 9},
        error_x={"type": "data", "symmetric": False, "array": 100 * (t["ci_high"] - t["estimate"]),
                 "arrayminus": 100 * (t["estimate"] - t["ci_low"]), "color": PALETTE[0]},
        customdata=list(zip(t["numerator"].astype(int), t["denominator"].astype(int))),
        hovertemplate="%{y}: %{x:.1f}% (%{customdata[0]} of %{customdata[1]})<extra>This clinic</extra>"))
    pub = t[t["published"].notna()]
    qual = pub["published_qualifier"] if "published_qualifier" in pub.columns else pd.Series("=", index=pub.index)
    for name, sub, symbol, word in (("Published", pub[~qual.isin(["<", "<="])], "diamond", ""),
                                    ("Published upper bound", pub[qual.isin(["<", "<="])], "triangle-left",
                                     "below ")):
        if len(sub):
            fig.add_trace(go.Scatter(
                x=100 * sub["published"], y=label(sub), mode="markers", name=name,
                marker={"color": PALETTE[5], "size": 11, "symbol": symbol},
                text=[f"{word}{100 * v:.1f}%, verified: {st}" for v, st in
                      zip(sub["published"], sub["published_status"])],
                hovertemplate=f"%{{y}}: %{{text}}<extra>{name}</extra>"))
    units = set(t["unit_of_analysis"])
    unit = ("per patient" if units == {"patient"} else "per session" if units == {"session"}
            else "unit of analysis in brackets")
    x_title = {"per patient": "Patients with the event (%)", "per session": "Sessions with the event (%)"}.get(
        unit, "Patients or sessions with the event (%), as each row says")
    base_layout(fig, title=title or f"Safety: this clinic beside published figures ({unit})", x_title=x_title,
                height=max(360, 34 * len(t) + 160))
    fig.update_xaxes(range=[-2, 100])
    fig.update_layout(margin={"l": 330}, showlegend=True)
    return fig


__all__ = ["adverse_events_chart", "published_comparison_chart", "vital_signs_trend"]
