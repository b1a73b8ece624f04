"""Forest-style chart of published benchmarks beside the clinic's like-for-like figures.

One panel per (kind, unit): single-arm levels, between-arm differences and ratios never share an axis, so a
difference (e.g. KARE's ketamine-minus-placebo PDA) is never drawn as an absolute level. Within a panel rows are
grouped by substance/outcome. Published figures are diamonds (filled: verified; open: secondary source) with
their 95% CI, range bar or one-sided upper bound; the clinic's figure is a circle with its CI. Hovering shows
the citation, population, timepoint, cautions and the clinic's denominator, attrition or reason.

Small cells: with ``min_cell`` (pass ``settings.min_cell`` when suppression is on; the default None draws every
count, for internal use) the clinic's ``n``, eligible patients, attrition and events from 1 to ``min_cell - 1`` show
as ``"<11"`` (and a count that would give one away, e.g. ``n`` when eligible − n is small, as ``"*"``); a clinic
figure with a hidden count behind it is not drawn (:func:`clinic_cells`, shared with the Versus published page's
table).
"""

from __future__ import annotations

import textwrap
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analytics import formatting as fmt
from analytics.outcomes.benchmarks import GROUP_ORDER, BenchmarkComparison
from analytics.privacy.suppression import SuppressedCells, render_note, suppress_cells
from analytics.report.plots import base_layout, colour

KIND_ORDER = ("level", "difference", "ratio")
KIND_TITLES = {"level": "Levels", "difference": "Between-arm differences", "ratio": "Ratios"}
PUBLISHED_COLOUR, RANGE_COLOUR, CLINIC_COLOUR = colour(0), colour(4), colour(1)
OFFSET = 0.18
ROW_PX, GAP_PX = 54, 85  # pixels per benchmark row; gap between panels (axis labels and next title)


def _wrap(text: str, width: int = 90) -> str:
    """Plain ``text`` as plotly text: escaped (:func:`analytics.formatting.escape_plotly`), wrapped with ``<br>``."""
    lines = [line for part in str(text).split("\n") if part for line in textwrap.wrap(part, width)]
    return "<br>".join(fmt.escape_plotly(line) for line in lines)


def _num(x: Any) -> float | None:
    return None if x is None or pd.isna(x) else float(x)


def clinic_cells(table: pd.DataFrame, *, min_cell: int | None = None) -> SuppressedCells:
    """The clinic's counts of a comparison table after small-cell suppression.

    Keys ``("n", id)``, ``("attrition", id)``, ``("events", id)`` and ``("eligible", value)`` (rows with the same
    number of eligible patients share it: it is shown on each). Relations: n + attrition = eligible; events of n
    (its complement n − events is protected too).
    """
    values: dict[object, float | None] = {}
    sums: list[tuple[list[object], object]] = []
    rates: list[tuple[object, object]] = []
    for rid, n, elig, attr, ev in zip(table["id"], table["clinic_n"], table["clinic_n_eligible"],
                                      table["clinic_attrition"], table["clinic_events"]):
        if _num(n) is None:
            continue
        values[("n", rid)] = _num(n)
        if _num(attr) is not None:
            values[("attrition", rid)] = _num(attr)
        if _num(elig) is not None:
            values[("eligible", _num(elig))] = _num(elig)
            if _num(attr) is not None:
                sums.append(([("n", rid), ("attrition", rid)], ("eligible", _num(elig))))
        if _num(ev) is not None:
            values[("events", rid)] = _num(ev)
            rates.append((("events", rid), ("n", rid)))
    return suppress_cells(values, sums=sums, rates=rates, min_cell=min_cell or 11, enabled=min_cell is not None)


def clinic_shown(cells: SuppressedCells, row: pd.Series) -> bool:
    """May the clinic's figure of ``row`` be shown (no count behind it hidden)?"""
    rid = row["id"]
    return cells.shown(("n", rid)) and cells.shown(("events", rid))


def _clinic_text(row: pd.Series, cells: SuppressedCells) -> str:
    est = _num(row["clinic_estimate"])
    if est is None:
        reason = row["clinic_reason"] if isinstance(row["clinic_reason"], str) else "no clinic figure"
        return f"Clinic: no figure. {_wrap(render_note(reason, min_cell=cells.min_cell, enabled=cells.enabled))}"
    rid = row["id"]
    text = row["clinic_definition"] if isinstance(row["clinic_definition"], str) else ""
    definition = render_note(text, min_cell=cells.min_cell, enabled=cells.enabled)
    counts = (f"n = {cells.text(('n', rid))} of {cells.text(('eligible', _num(row['clinic_n_eligible'])))} "
              f"eligible, {cells.text(('attrition', rid))} without data")
    if not clinic_shown(cells, row):
        return (f"Clinic: figure suppressed (small-cell rule: a count from 1 to {cells.min_cell - 1} behind it), "
                f"{counts}<br>{_wrap(definition)}")
    unit = "%" if row["unit"] == "%" else f" {fmt.escape_plotly(row['unit'])}"
    value = fmt.ci(est, _num(row["clinic_ci_low"]), _num(row["clinic_ci_high"]), digits=1)
    return f"Clinic: {value}{unit}, {counts}<br>{_wrap(definition)}"


def hover_text(row: pd.Series, cells: SuppressedCells | None = None) -> str:
    """The hover card of one comparison row: metric, published figure, provenance, cautions, clinic figure."""
    esc = fmt.escape_plotly
    parts = [
        f"<b>{esc(row['id'])}</b>: {_wrap(row['metric'])}",
        f"Published: {esc(row['published_text'])} ({esc(row['status_label'])})",
        f"{_wrap(row['citation'])}<br>{esc(row['link'])}",
        f"Population: {_wrap(row['population'])}",
        f"Timepoint: {esc(row['timepoint'])}" + (f" · {esc(row['unit_of_analysis'])}"
                                                 if isinstance(row['unit_of_analysis'], str) else ""),
    ]
    if row["cautions"]:
        parts.append(f"Cautions: {_wrap(row['cautions'])}")
    if row["notes"]:
        parts.append(f"Notes: {_wrap(row['notes'])}")
    parts.append(_clinic_text(row, cells if cells is not None else clinic_cells(row.to_frame().T)))
    return "<br>".join(parts)


def _panels(table: pd.DataFrame) -> list[tuple[str, str]]:
    keys = table[["kind", "unit"]].drop_duplicates()
    keys = keys.assign(k=keys["kind"].map(KIND_ORDER.index), p=keys["unit"].ne("%")).sort_values(["k", "p", "unit"])
    return list(zip(keys["kind"], keys["unit"], strict=True))


def _panel_title(kind: str, unit: str) -> str:
    scale = ", log scale" if kind == "ratio" else ""
    return f"{KIND_TITLES[kind]} ({unit}{scale})"


def _error(sub: pd.DataFrame, centre: str, low: str, high: str) -> dict[str, Any]:
    c = sub[centre].astype(float)
    plus = (sub[high].astype(float) - c).fillna(0).clip(lower=0)
    minus = (c - sub[low].astype(float)).fillna(0).clip(lower=0)
    return {"type": "data", "symmetric": False, "array": plus.tolist(), "arrayminus": minus.tolist(), "width": 4}


def _published(fig: go.Figure, sub: pd.DataFrame, y: pd.Series, r: int, shown: set[str]) -> None:
    points = sub[sub["published"].notna()]
    for status, symbol, name in (("yes", "diamond", "Published (verified)"),
                                 ("secondary", "diamond-open", "Published (secondary source)")):
        s = points[points["status"] == status]
        if s.empty:
            continue
        fig.add_trace(go.Scatter(
            x=s["published"].astype(float), y=y[s.index] + OFFSET, mode="markers", name=name,
            legendgroup=name, showlegend=name not in shown,
            marker={"symbol": symbol, "size": 11, "color": PUBLISHED_COLOUR, "line": {"width": 2}},
            error_x=_error(s, "published", "published_low", "published_high"),
            customdata=s["_hover"], hovertemplate="%{customdata}<extra></extra>"), row=r, col=1)
        shown.add(name)
    ranges = sub[sub["published_interval"] == "range"]
    for status, dash in (("yes", "solid"), ("secondary", "dot")):
        rs = ranges[ranges["status"] == status]
        if rs.empty:
            continue
        name = "Published range"
        xs: list[float | None] = []
        ys: list[float | None] = []
        cards: list[str | None] = []
        for idx, row in rs.iterrows():  # one trace per status: segments separated by gaps
            xs += [row["published_low"], row["published_high"], None]
            ys += [y[idx] + OFFSET, y[idx] + OFFSET, None]
            cards += [row["_hover"], row["_hover"], None]
        fig.add_trace(go.Scatter(
            x=xs, y=ys, mode="lines+markers", name=name, legendgroup=name, showlegend=name not in shown,
            line={"color": RANGE_COLOUR, "width": 6, "dash": dash},
            marker={"symbol": "line-ns", "size": 12, "line": {"width": 2, "color": RANGE_COLOUR}},
            customdata=cards, hovertemplate="%{customdata}<extra></extra>"), row=r, col=1)
        shown.add(name)


def _clinic(fig: go.Figure, sub: pd.DataFrame, y: pd.Series, r: int, shown: set[str]) -> None:
    s = sub[sub["clinic_estimate"].notna()]
    if s.empty:
        return
    name = "This clinic"
    fig.add_trace(go.Scatter(
        x=s["clinic_estimate"].astype(float), y=y[s.index] - OFFSET, mode="markers", name=name, legendgroup=name,
        showlegend=name not in shown, marker={"symbol": "circle", "size": 10, "color": CLINIC_COLOUR},
        error_x={**_error(s, "clinic_estimate", "clinic_ci_low", "clinic_ci_high"), "color": CLINIC_COLOUR},
        customdata=s["_hover"], hovertemplate="%{customdata}<extra></extra>"), row=r, col=1)
    shown.add(name)


def counts_text(row: pd.Series, cells: SuppressedCells) -> str:
    """"clinic 45 of 60 eligible analysed, 15 missing" with the small-cell marks; "" without a clinic figure."""
    rid = row["id"]
    if _num(row["clinic_estimate"]) is None or ("n", rid) not in cells.values:
        return ""
    eligible = cells.text(("eligible", _num(row["clinic_n_eligible"])))
    missing = cells.text(("attrition", rid)) if ("attrition", rid) in cells.values else "?"
    return f"clinic {cells.text(('n', rid))} of {eligible} eligible analysed, {missing} missing"


def other_bound(row: pd.Series) -> tuple[str, float, float | None, float | None] | None:
    """The missing-data bound that is not the figure shown: (rule, estimate, ci_low, ci_high), or None."""
    est = _num(row.get("clinic_estimate"))
    if est is None:
        return None
    for k in (1, 2):
        b = _num(row.get(f"clinic_bound{k}_estimate"))
        if b is not None and abs(b - est) > 1e-9:
            return (str(row[f"clinic_bound{k}_rule"]), b, _num(row.get(f"clinic_bound{k}_ci_low")),
                    _num(row.get(f"clinic_bound{k}_ci_high")))
    return None


def _labels(sub: pd.DataFrame) -> list[str]:
    out = []
    for _, row in sub.iterrows():
        metric = fmt.escape_plotly(row["metric"] if len(row["metric"]) <= 48 else row["metric"][:47] + "…")
        mark = "" if pd.notna(row["clinic_estimate"]) else " †"
        counts = f"<br><span style='font-size:10px'>{row['_counts']}</span>" if row["_counts"] else ""
        out.append(f"<b>{fmt.escape_plotly(row['group'])}</b> · {fmt.escape_plotly(row['id'])}{mark}<br>"
                   f"<span style='font-size:11px'>{metric}</span>"
                   + counts)
    return out


def _bounds(fig: go.Figure, sub: pd.DataFrame, y: pd.Series, r: int, shown: set[str]) -> None:
    s = sub[sub["_bound"].notna()]
    if s.empty:
        return
    name = "This clinic, other missing-data rule"
    fig.add_trace(go.Scatter(
        x=[b[1] for b in s["_bound"]], y=y[s.index] - OFFSET, mode="markers", name=name, legendgroup=name,
        showlegend=name not in shown, marker={"symbol": "circle-open", "size": 10, "color": CLINIC_COLOUR,
                                              "line": {"width": 2}},
        customdata=[f"{fmt.escape_plotly(b[0])}: {fmt.ci(b[1], b[2], b[3], digits=1)}" for b in s["_bound"]],
        hovertemplate="%{customdata}<extra></extra>"), row=r, col=1)
    shown.add(name)


def forest(comparison: BenchmarkComparison, *, domain: str | None = "efficacy", only_with_clinic: bool = False,
           title: str = "Versus published benchmarks", min_cell: int | None = None) -> go.Figure:
    """Forest-style chart of clinic vs published figures, one panel per kind and unit.

    Parameters
    ----------
    comparison:
        Result of :func:`analytics.outcomes.benchmarks.compare`.
    domain:
        ``"efficacy"`` (default), ``"safety"``, or None for both.
    only_with_clinic:
        Keep only benchmarks for which the clinic has a figure.

    Returns
    -------
    plotly.graph_objects.Figure
        Rows grouped by substance/outcome, each labelled with the clinic's analysed / eligible / missing counts; where
        missing data decide the figure, an open circle draws the other missing-data bound (its rule in the hover
        card). ``†`` after an id marks a benchmark without a clinic figure (the
        reason is in the hover card). Differences and ratios have their own panels with a reference line at 0 or 1;
        ratio panels use a log axis. With ``min_cell``, a clinic figure with a count from 1 to ``min_cell - 1``
        behind it is not drawn (its hover card says so) and small counts show as ``"<11"``.
    """
    table = comparison.table
    cells = clinic_cells(table, min_cell=min_cell)
    if domain is not None:
        table = table[table["domain"] == domain]
    if only_with_clinic:
        table = table[table["clinic_estimate"].notna()]
    if table.empty:
        fig = go.Figure()
        fig.add_annotation(text="No benchmarks to show for this selection.", showarrow=False, x=0.5, y=0.5,
                           xref="paper", yref="paper")
        return base_layout(fig, title=title, height=300)
    shown = table.apply(lambda r: clinic_shown(cells, r), axis=1).astype(bool)
    table = table.assign(_hover=table.apply(hover_text, axis=1, cells=cells), _g=table["group"].map(GROUP_ORDER.index),
                         clinic_estimate=table["clinic_estimate"].where(shown))
    table = table.assign(_counts=[counts_text(r, cells) for _, r in table.iterrows()],
                         _bound=[other_bound(r) for _, r in table.iterrows()])
    table = table[["id", "metric", "group", "kind", "unit", "status", "published", "published_low", "published_high",
                   "published_interval", "clinic_estimate", "clinic_ci_low", "clinic_ci_high", "_hover", "_g",
                   "_counts", "_bound"]]
    panels = _panels(table)
    panel_px = [ROW_PX * int(((table["kind"] == k) & (table["unit"] == u)).sum()) + 30 for k, u in panels]
    plot_px = sum(panel_px) + GAP_PX * (len(panels) - 1)
    fig = make_subplots(rows=len(panels), cols=1, row_heights=panel_px,
                        vertical_spacing=GAP_PX / plot_px if len(panels) > 1 else 0.0,
                        subplot_titles=[_panel_title(k, u) for k, u in panels])
    shown: set[str] = set()
    shapes: list[dict[str, Any]] = []
    for r, (kind, unit) in enumerate(panels, start=1):
        sub = table[(table["kind"] == kind) & (table["unit"] == unit)].sort_values(["_g", "id"], kind="stable")
        y = pd.Series(range(len(sub) - 1, -1, -1), index=sub.index, dtype=float)
        _published(fig, sub, y, r, shown)
        _clinic(fig, sub, y, r, shown)
        _bounds(fig, sub, y, r, shown)
        fig.update_yaxes(tickvals=y.tolist(), ticktext=_labels(sub), range=[-0.7, len(sub) - 0.3], row=r, col=1)
        ax = "" if r == 1 else str(r)
        for boundary in y[sub["group"].ne(sub["group"].shift()).to_numpy()].iloc[1:]:
            shapes.append({"type": "line", "xref": f"x{ax} domain", "x0": 0, "x1": 1, "yref": f"y{ax}",
                           "y0": boundary + 0.5, "y1": boundary + 0.5, "line": {"color": "#bbb", "width": 1}})
        if kind == "ratio":
            fig.update_xaxes(type="log", row=r, col=1)
        if kind in ("difference", "ratio"):
            ref = 0 if kind == "difference" else 1
            shapes.append({"type": "line", "xref": f"x{ax}", "x0": ref, "x1": ref, "yref": f"y{ax} domain",
                           "y0": 0, "y1": 1, "line": {"color": "#888", "dash": "dash", "width": 1}})
    fig.update_layout(shapes=shapes)
    base_layout(fig, title=title, height=plot_px + 130)
    fig.update_layout(margin={"l": 330}, hoverlabel={"align": "left"})
    return fig
