"""Figures of the safety panel: adverse events by type and route, raised BP/HR trend, clinic vs published.

Pure builders: a result of :mod:`analytics.outcomes.safety` in, a ``go.Figure`` out. Shares are shown as % (0–100).

Small cells: with ``min_cell`` (pass ``settings.min_cell`` when suppression is on; the default None draws every
count, for internal use) a bar or point whose numerator, denominator or complement is 1 to ``min_cell - 1`` is not
drawn and its counts are not in any hover card; nor is one hidden so that such a count cannot be worked out from the
routes' total (``*_cells`` functions, shared with the Safety page's tables). The figure says how many were left out.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from analytics.formatting import escape_plotly
from analytics.outcomes.safety import (
    ALL,
    CATEGORY_LABELS,
    AdverseEventRates,
    SafetyCategories,
    SafetyComparison,
    SafetyTrend,
    VitalSignShares,
)
from analytics.privacy.suppression import SuppressedCells, hidden_rate_points, suppress_cells
from analytics.report.plots import PALETTE, base_layout, ci_error_y, colour, note_under_axis, rgba

METRIC_LABELS = {"ae_sessions": "Sessions with an adverse event", "ae_per_session": "Adverse events per 100 sessions",
                 "bp_raised": "Sessions with raised blood pressure", "hr_raised": "Sessions with raised heart rate"}


def _small_note(k: int, what: str, min_cell: int | None) -> str:
    return (f"{k} {what}{'s' if k != 1 else ''} not drawn (small-cell rule: a count from 1 to {(min_cell or 11) - 1} "
            "behind the rate, or hidden so that one cannot be worked out from the total).")


def route_rate_cells(table: pd.DataFrame, *, by: str, extra: str | None = None,
                     min_cell: int | None = None) -> SuppressedCells:
    """Suppress a table of rates by route (one row per ``by`` × route, route ``"all"`` the total of the routes).

    Keys: ``("num", by_value, route)`` and ``("den", route, value)`` (rows that share a route and a denominator
    value share one cell), and with ``extra`` (e.g. ``"n_missing"``) ``(extra, route, value)`` plus the total
    ``("total", route, value)`` = denominator + extra. Routes add up to ``"all"`` where they do numerically (a
    patient seen on two routes makes them overlap: then there is no equation).
    """
    values: dict[object, float | None] = {}
    sums: list[tuple[list[object], object]] = []
    rates: list[tuple[object, object]] = []
    for b, sub in table.groupby(by, sort=False):
        routes = [r for r in sub["route"] if r != ALL]
        keys: dict[str, dict[str, object]] = {"num": {}, "den": {}, "extra": {}, "total": {}}
        for r, num, den, *more in zip(sub["route"], sub["numerator"], sub["denominator"],
                                      *([sub[extra]] if extra else [])):
            nk, dk = ("num", b, r), ("den", r, float(den))
            values[nk], values[dk] = float(num), float(den)
            keys["num"][r], keys["den"][r] = nk, dk
            rates.append((nk, dk))
            if extra:
                ek, tk = (extra, r, float(more[0])), ("total", r, float(den) + float(more[0]))
                values[ek], values[tk] = float(more[0]), float(den) + float(more[0])
                keys["extra"][r], keys["total"][r] = ek, tk
                sums.append(([dk, ek], tk))
        for parts in keys.values():
            if ALL in parts and routes:
                sums.append(([parts[r] for r in routes if r in parts], parts[ALL]))
    return suppress_cells(values, sums=sums, rates=rates, min_cell=min_cell or 11, enabled=min_cell is not None)


def adverse_event_cells(rates: AdverseEventRates, *, unit_of_analysis: Literal["session", "patient"] = "session",
                        min_cell: int | None = None) -> SuppressedCells:
    """The counts of :func:`adverse_events_chart` after suppression (keys as in :func:`route_rate_cells`)."""
    t = rates.table[rates.table["unit_of_analysis"] == unit_of_analysis]
    return route_rate_cells(t, by="event_type", min_cell=min_cell)


def vital_sign_cells(vitals: VitalSignShares, *, unit_of_analysis: Literal["session", "patient"] = "session",
                     min_cell: int | None = None) -> SuppressedCells:
    """The Safety page's raised-vital-signs table after suppression: numerator, denominator (with readings) and
    ``n_missing`` (no readings) per measure and route; with readings + no readings = all sessions (or patients)."""
    t = vitals.table[vitals.table["unit_of_analysis"] == unit_of_analysis]
    return route_rate_cells(t, by="measure", extra="n_missing", min_cell=min_cell)


def adverse_events_chart(rates: AdverseEventRates, *, unit_of_analysis: Literal["session", "patient"] = "session",
                         include_all_routes: bool = True, hide_empty_types: bool = True,
                         title: str | None = None, min_cell: int | None = None) -> go.Figure:
    """Grouped bars: share with each adverse event, by route, with CI error bars (Wilson).

    Per session the bar is sessions with the event per 100 ketamine sessions; per patient it is the % of patients
    with at least one session with the event. Event types never recorded are hidden unless asked. With
    ``min_cell``, bars with a hidden count (:func:`adverse_event_cells`) are not drawn.
    """
    cells = adverse_event_cells(rates, unit_of_analysis=unit_of_analysis, min_cell=min_cell)
    t = rates.table[rates.table["unit_of_analysis"] == unit_of_analysis]
    if hide_empty_types:
        seen = t[(t["route"] == ALL) & (t["numerator"] > 0)]["event_type"]
        t = t[t["event_type"].isin(set(seen))]
    routes = [r for r in dict.fromkeys(t["route"]) if r != ALL] + ([ALL] if include_all_routes else [])
    order = [e for e in dict.fromkeys(t["event_type"]) if e != "any"] + ["any"]
    fig = go.Figure()
    n_hidden = 0
    for i, route in enumerate(routes):
        sub = t[t["route"] == route].set_index("event_type").reindex(order).dropna(subset=["denominator"])
        hide = np.array([not (cells.shown(("num", e, route)) and cells.shown(("den", route, float(d))))
                         for e, d in zip(sub.index, sub["denominator"])], dtype=bool)
        n_hidden += int(hide.sum())
        est = (100 * sub["estimate"]).mask(hide)
        c = PALETTE[7] if route == ALL else colour(i)
        name = "All routes" if route == ALL else route.upper() if len(route) <= 2 else route.capitalize()
        fig.add_trace(go.Bar(
            x=[escape_plotly(e) for e in sub.index], y=est, name=escape_plotly(name), marker={"color": rgba(c, 0.85)},
            error_y=ci_error_y(est, 100 * sub["ci_low"], 100 * sub["ci_high"]),
            customdata=[None if h else (int(a), int(b)) for a, b, h in zip(sub["numerator"], sub["denominator"], hide)],
            hovertemplate="%{x}: %{y:.1f}% (%{customdata[0]} of %{customdata[1]})<extra>%{fullData.name}</extra>"))
    if unit_of_analysis == "session":
        y = "Sessions with the event per 100 ketamine sessions"
        default = "Adverse events per 100 ketamine sessions, by type and route (per session)"
    else:
        window = (f" in the first {rates.patient_window_days} days" if rates.patient_window_days else "")
        y = f"Patients with ≥ 1 session with the event{window} (%)"
        default = "Patients with an adverse event, by type and route (per patient)"
    base_layout(fig, title=title or default, x_title="Adverse event", y_title=y)
    if n_hidden:
        note_under_axis(fig, _small_note(n_hidden, "bar", min_cell))
    fig.update_layout(barmode="group")
    fig.update_yaxes(rangemode="tozero")
    return fig


def category_cells(cats: SafetyCategories, *, unit_of_analysis: Literal["session", "patient"] = "session",
                   min_cell: int | None = None) -> SuppressedCells:
    """The recorded categories' counts after suppression (keys ``("num", category, route)`` and
    ``("den", route, value)``, as in :func:`route_rate_cells`).

    Per patient the counts are patients with / without (a share: its complement is protected too). Per session the
    numerator counts events, not sessions, so there is no complement; routes still add up to ``"all"``.
    """
    t = cats.table[(cats.table["unit_of_analysis"] == unit_of_analysis) & cats.table["recorded"]]
    t = t.assign(numerator=t["numerator"].astype(int))
    if unit_of_analysis == "patient":
        return route_rate_cells(t, by="category", min_cell=min_cell)
    values: dict[object, float | None] = {}
    sums: list[tuple[list[object], object]] = []
    for cat, sub in t.groupby("category", sort=False):
        parts = {r: (("num", cat, r), ("den", r, float(d))) for r, d in zip(sub["route"], sub["denominator"])}
        for r, n in zip(sub["route"], sub["numerator"]):
            values[parts[r][0]] = float(n)
            values[parts[r][1]] = float(parts[r][1][2])
        routes = [r for r in parts if r != ALL]
        if ALL in parts and routes:
            for k in (0, 1):
                sums.append(([parts[r][k] for r in routes], parts[ALL][k]))
    return suppress_cells(values, sums=sums, min_cell=min_cell or 11, enabled=min_cell is not None)


def safety_categories_chart(cats: SafetyCategories, *, unit_of_analysis: Literal["session", "patient"] = "session",
                            title: str | None = None, min_cell: int | None = None) -> go.Figure:
    """Grouped bars by route: expected acute effects and other recorded events, per 100 sessions (exact Poisson
    interval) or % of patients (Wilson). Categories the export does not record (needed action, serious) are named
    under the axis, never drawn as zero. With ``min_cell``, bars with a hidden count (:func:`category_cells`) are
    not drawn."""
    cells = category_cells(cats, unit_of_analysis=unit_of_analysis, min_cell=min_cell)
    t = cats.table[cats.table["unit_of_analysis"] == unit_of_analysis]
    rec = t[t["recorded"]]
    scale = 1.0 if unit_of_analysis == "session" else 100.0
    routes = [r for r in dict.fromkeys(rec["route"]) if r != ALL] + [ALL]
    fig = go.Figure()
    n_hidden = 0
    for i, route in enumerate(routes):
        sub = rec[rec["route"] == route]
        hide = np.array([not (cells.shown(("num", c, route)) and cells.shown(("den", route, float(d))))
                         for c, d in zip(sub["category"], sub["denominator"])], dtype=bool)
        n_hidden += int(hide.sum())
        est = (scale * sub["estimate"]).mask(hide)
        c = PALETTE[7] if route == ALL else colour(i)
        name = "All routes" if route == ALL else route.upper() if len(route) <= 2 else route.capitalize()
        fig.add_trace(go.Bar(
            x=[escape_plotly(CATEGORY_LABELS[k]) for k in sub["category"]], y=est, name=escape_plotly(name),
            marker={"color": rgba(c, 0.85)},
            error_y=ci_error_y(est, scale * sub["ci_low"], scale * sub["ci_high"]),
            customdata=[None if h else (int(a), int(b)) for a, b, h in
                        zip(sub["numerator"], sub["denominator"], hide)],
            hovertemplate="%{x}: %{y:.1f} (%{customdata[0]} of %{customdata[1]})<extra>%{fullData.name}</extra>"))
    if unit_of_analysis == "session":
        y, default = "Events per 100 ketamine sessions", "Recorded events per 100 ketamine sessions, by route"
    else:
        window = f" in the first {cats.patient_window_days} days" if cats.patient_window_days else ""
        y, default = f"Patients with ≥ 1 such event{window} (%)", "Patients with recorded events, by route"
    base_layout(fig, title=title or default, x_title="Category", y_title=y)
    missing = [CATEGORY_LABELS[k] for k in dict.fromkeys(t.loc[~t["recorded"], "category"])]
    if missing:
        note_under_axis(fig, f"Not recorded in the export (no column), so not drawn; not zero: {', '.join(missing)}."
                        + (" " + _small_note(n_hidden, "bar", min_cell) if n_hidden else ""))
    elif n_hidden:
        note_under_axis(fig, _small_note(n_hidden, "bar", min_cell))
    fig.update_layout(barmode="group")
    fig.update_yaxes(rangemode="tozero")
    return fig


def trend_hidden_months(trend: SafetyTrend, *, metrics: tuple[str, ...] = ("bp_raised", "hr_raised"),
                        min_cell: int | None = None) -> set[pd.Timestamp]:
    """Months not drawn by :func:`vital_signs_trend`: for any of ``metrics``, a count from 1 to ``min_cell - 1``
    behind the month's rate, or hidden so that one cannot be worked out from the total over months. A month hidden
    for one metric is hidden for all (they share the month's sessions)."""
    out: set[pd.Timestamp] = set()
    if min_cell is None:
        return out
    for m in metrics:
        sub = trend.table[(trend.table["metric"] == m) & (trend.table["denominator"] > 0)]
        hide = hidden_rate_points(sub["numerator"], sub["denominator"], min_cell=min_cell)
        out |= set(sub.loc[hide, "month"])
    return out


def vital_signs_trend(trend: SafetyTrend, *, metrics: tuple[str, ...] = ("bp_raised", "hr_raised"),
                      title: str | None = None, min_cell: int | None = None) -> go.Figure:
    """Monthly share of ketamine sessions with raised BP / heart rate (or any metric of the trend), with CI bands.

    With ``min_cell``, months of :func:`trend_hidden_months` are left out (points, band and hover)."""
    hidden = trend_hidden_months(trend, metrics=metrics, min_cell=min_cell)
    fig = go.Figure()
    for i, m in enumerate(metrics):
        sub = trend.table[(trend.table["metric"] == m) & (trend.table["denominator"] > 0)]
        sub = sub[~sub["month"].isin(hidden)]
        c = colour(i)
        x = list(sub["month"]) + list(sub["month"])[::-1]
        fig.add_trace(go.Scatter(x=x, y=list(100 * sub["ci_high"]) + list(100 * sub["ci_low"])[::-1],
                                 fill="toself", fillcolor=rgba(c, 0.15), line={"width": 0}, hoverinfo="skip",
                                 showlegend=False, legendgroup=m))
        fig.add_trace(go.Scatter(
            x=sub["month"], y=100 * sub["estimate"], mode="lines+markers", name=escape_plotly(METRIC_LABELS.get(m, m)),
            line={"color": c, "width": 2}, legendgroup=m,
            customdata=list(zip(sub["numerator"].astype(int), sub["denominator"].astype(int))),
            hovertemplate="%{x|%b %Y}: %{y:.1f}% (%{customdata[0]} of %{customdata[1]})<extra></extra>"))
    y = ("Per 100 ketamine sessions" if metrics == ("ae_per_session",) else "Ketamine sessions (%)")
    base_layout(fig, title=title or "Raised blood pressure and heart rate by month (per session)",
                x_title="Month", y_title=y)
    if hidden:
        note_under_axis(fig, _small_note(len(hidden), "month", min_cell))
    fig.update_yaxes(rangemode="tozero")
    return fig


def published_cells(comp: SafetyComparison, *, min_cell: int | None = None) -> SuppressedCells:
    """The clinic counts of :func:`published_comparison_chart` after suppression. Keys ``("num", row)`` and
    ``("den", unit_of_analysis, route, value)`` (rows with the same population share their denominator)."""
    t = comp.table
    values: dict[object, float | None] = {}
    rates = []
    for i, (u, r, num, den) in enumerate(zip(t["unit_of_analysis"], t["route"], t["numerator"], t["denominator"])):
        values[("num", i)], values[("den", u, r, float(den))] = float(num), float(den)
        rates.append((("num", i), ("den", u, r, float(den))))
    return suppress_cells(values, rates=rates, min_cell=min_cell or 11, enabled=min_cell is not None)


def published_row_shown(cells: SuppressedCells, comp: SafetyComparison) -> list[bool]:
    """Per row of ``comp.table``: may the clinic's rate be shown?"""
    t = comp.table
    return [cells.shown(("num", i)) and cells.shown(("den", u, r, float(d)))
            for i, (u, r, d) in enumerate(zip(t["unit_of_analysis"], t["route"], t["denominator"]))]


def published_comparison_chart(comp: SafetyComparison, *, title: str | None = None,
                               min_cell: int | None = None) -> go.Figure:
    """Clinic figure (with Wilson CI) beside the published figure, one row per metric, same unit of analysis.

    Only rows that are ``comparable`` (same route, unit of analysis and kind of event) get a clinic point; the other
    rows show the published figure alone and the figure says how many were not compared. With ``min_cell``, a
    clinic figure with a hidden count (:func:`published_cells`) is not drawn either (the published figure still
    is)."""
    small_ok = np.array(published_row_shown(published_cells(comp, min_cell=min_cell), comp), dtype=bool)
    comparable = (comp.table["comparable"].to_numpy(bool) if "comparable" in comp.table
                  else np.ones(len(comp.table), dtype=bool))
    ok = small_ok & comparable
    t = comp.table.assign(_ok=ok).iloc[::-1]
    est = (100 * t["estimate"]).where(t["_ok"])
    def label(frame: pd.DataFrame) -> list[str]:
        return [escape_plotly(f"{m[:1].upper()}{m[1:]} [{pid}, per {u}]")
                for m, pid, u in zip(frame["metric"], frame["published_id"], frame["unit_of_analysis"])]

    labels = label(t)
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=est, y=labels, mode="markers", name="This clinic", marker={"color": PALETTE[0], "size": 9},
        error_x={"type": "data", "symmetric": False, "array": (100 * t["ci_high"] - est).tolist(),
                 "arrayminus": (est - 100 * t["ci_low"]).tolist(), "color": PALETTE[0]},
        customdata=[(int(a), int(b)) if k else None for a, b, k in zip(t["numerator"], t["denominator"], t["_ok"])],
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
                text=[escape_plotly(f"{word}{100 * v:.1f}%, verified: {st}"
                                    + ("" if cmp else " (not compared with this clinic)"))
                      for v, st, cmp in zip(sub["published"], sub["published_status"],
                                            sub["comparable"] if "comparable" in sub else [True] * len(sub))],
                hovertemplate=f"%{{y}}: %{{text}}<extra>{name}</extra>"))
    units = set(t["unit_of_analysis"])
    unit = ("per patient" if units == {"patient"} else "per session" if units == {"session"}
            else "unit of analysis in brackets")
    x_title = {"per patient": "Patients with the event (%)", "per session": "Sessions with the event (%)"}.get(
        unit, "Patients or sessions with the event (%), as each row says")
    base_layout(fig, title=title or f"Safety: this clinic beside published figures ({unit})", x_title=x_title,
                height=max(360, 34 * len(t) + 160))
    below = []
    if not comparable.all():
        k = int((~comparable).sum())
        below.append(f"{k} published figure{'s' if k != 1 else ''} not compared (route, unit or kind of event "
                     "differs: see the table).")
    if not small_ok[comparable].all():
        below.append(_small_note(int((~small_ok[comparable]).sum()), "clinic figure", min_cell))
    if below:
        note_under_axis(fig, " ".join(below))
    fig.update_xaxes(range=[-2, 100])
    fig.update_layout(margin={"l": 330}, showlegend=True)
    return fig


__all__ = ["adverse_event_cells", "adverse_events_chart", "category_cells", "published_cells",
           "published_comparison_chart", "published_row_shown", "route_rate_cells", "safety_categories_chart",
           "trend_hidden_months", "vital_sign_cells", "vital_signs_trend"]
