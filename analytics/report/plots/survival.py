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

from analytics.formatting import ci, escape_plotly, pct_ci
from analytics.outcomes.cohort import Cohort
from analytics.outcomes.survival import DropoutSensitivity, EventDating, GroupComparison, SurvivalCurves
from analytics.privacy.suppression import SuppressedCells, SuppressedTable, suppress_cells, suppress_km
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


TICK_PX = 9  # height of a censoring tick


def _tick_path(cens: pd.DataFrame, *, half: float) -> str:
    """The censoring ticks of one curve as one SVG path in data units: a vertical stroke ``2 * half`` high at each
    (``day``, ``estimate``). A marker per day made the browser draw ~1,200 of them at 50,000 patients (0.25 s of the
    figure's 0.4 s in chromium), and a broken line costs plotly about as much; one path costs next to nothing."""
    return "".join(f"M{day!r},{height - half!r}L{day!r},{height + half!r}"
                   for day, height in zip(cens["day"].tolist(), cens["estimate"].tolist(), strict=True))


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
    # the number-at-risk table gets ~24 px per group (a fixed share cramped six groups into 120 px)
    risk_px = 40 + 24 * max(len(groups), 1)
    height = max(height, 430 + risk_px)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        row_heights=[1 - risk_px / (height - 130), risk_px / (height - 130)])
    tick_half = TICK_PX / 2 * 1.03 / max(height - 130 - risk_px, 100)  # half a tick, in proportion units
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
        if len(cens):  # a shape in the curve's legend group: hidden with it from the legend
            fig.add_shape(type="path", path=_tick_path(cens, half=tick_half), line={"color": c, "width": 1.5},
                          name=f"{label}: censored", legendgroup=label, showlegend=False, row=1, col=1)
        in_group = (curves.risk_table["group"] == g).to_numpy()
        risk = curves.risk_table[in_group]
        fig.add_trace(go.Scatter(x=risk["day"], y=[label] * len(risk), mode="text",
                                 text=risk_text[in_group].tolist(),
                                 textfont={"color": c, "size": 12}, showlegend=False, hoverinfo="skip",
                                 legendgroup=label, cliponaxis=False),  # "1,411" at day 0: not cut at the axis
                      row=2, col=1)
    labels = [escape_plotly(g) if curves.by is not None else "All patients" for g in groups]
    base_layout(fig, title=title, height=height)
    ticks = curves.risk_table["day"].drop_duplicates().sort_values().tolist()
    fig.update_yaxes(title_text=Y_TITLE, range=[0, 1.03], tickformat=".0%", row=1, col=1)
    # the counts at day 0 are centred on the axis line: the group names stand off by half the widest of them, so
    # that "alcohol" and "18,623" do not run together
    first = [str(t) for t, d in zip(risk_text, curves.risk_table["day"], strict=True) if d == 0]
    fig.update_yaxes(title_text="At risk", type="category", categoryorder="array",
                     categoryarray=list(reversed(labels)), showgrid=False, zeroline=False,
                     ticklabelstandoff=4 + 4 * max(map(len, first), default=0), row=2, col=1)
    fig.update_xaxes(tickvals=ticks, row=1, col=1)
    fig.update_xaxes(title_text=X_TITLE, tickvals=ticks, showgrid=False, zeroline=False, row=2, col=1)
    xmax = max(ticks + [float(curves.table["day"].max()) if len(curves.table) else 0.0])
    fig.update_xaxes(range=[-0.02 * max(xmax, 1.0), 1.03 * max(xmax, 1.0)])
    return fig


def dropout_sensitivity_figure(sensitivity: DropoutSensitivity, *, height: int = 520) -> go.Figure:
    """The sensitivity figure of the dropout rule: one Kaplan–Meier curve with dropout censored, one with dropout
    (recorded, and early dropouts) counted as return to use, each with its number at risk; the small-cell rule as
    :func:`km_figure`. The truth usually lies between the two curves."""
    return km_figure(sensitivity.curves, title="Return to use under two dropout rules", height=height)


def event_dating_figure(dating: EventDating, *, height: int = 520) -> go.Figure:
    """Kaplan–Meier with returns to use dated as recorded and at the midpoint of their interval (events without a
    relapse date), as :func:`km_figure`."""
    return km_figure(dating.curves, title="Return to use: events dated at the visit vs the interval midpoint",
                     height=height)


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


# ----------------------------------------------------------------------------------------------------
# The sensitivity tables (dropout rule, event dating): the same cells on the pages and in the meeting pack
# ----------------------------------------------------------------------------------------------------

EARLY_REASON_PREFIX = "early dropout"


def sensitivity_cells(cohort: Cohort, sensitivity: DropoutSensitivity | None, dating: EventDating | None, *,
                      min_cell: int | None) -> SuppressedCells:
    """The counts of the two sensitivity tables after small-cell suppression (``min_cell`` None: off).

    Keys: ``("n", rule)``, ``("events", rule)``, ``("early",)`` (early dropouts counted as return to use),
    ``("dated", kind)`` for ``kind`` in ``relapse_date``, ``visit``, ``dropout``, ``all``. Relations: the as-event
    rule's patients are the censored rule's plus the early dropouts; its events are the censored rule's plus some
    (a derived count, protected); the dated events add up to all events. The censored rule's patients and the early
    dropouts are the patient flow's "Analysed: time to return to use" and its early-dropout loss: hidden here when
    the flow hides them, and never chosen to protect another cell.
    """
    from analytics.outcomes.qi import patient_flow
    from analytics.outcomes.survival import DROPOUT_CENSORED, DROPOUT_EVENT

    values: dict[object, float | None] = {}
    sums: list[tuple[list[object], object]] = []
    if sensitivity is not None:
        t = sensitivity.table.set_index("rule")
        for rule in t.index:
            values[("n", rule)] = float(t.at[rule, "n"])
            values[("events", rule)] = float(t.at[rule, "n_event"])
        values[("early",)] = float(sensitivity.n_early_dropout)
        if DROPOUT_CENSORED in t.index and DROPOUT_EVENT in t.index:
            sums += [([("n", DROPOUT_CENSORED), ("early",)], ("n", DROPOUT_EVENT)),
                     ([("events", DROPOUT_CENSORED)], ("events", DROPOUT_EVENT))]
    if dating is not None:
        total: object = ("dated", "all")
        if sensitivity is not None and not cohort.settings.dropout_as_relapse and ("events", DROPOUT_CENSORED) in values:
            total = ("events", DROPOUT_CENSORED)  # the same number: one cell
        values[total] = float(dating.counts["n_event"])
        for kind in ("relapse_date", "visit", "dropout"):
            values[("dated", kind)] = float(dating.counts[f"by_{kind}" if kind != "relapse_date" else "by_relapse_date"])
        sums.append(([("dated", k) for k in ("relapse_date", "visit", "dropout")], total))
        if total == ("dated", "all"):
            values[("dated", "n")] = float(dating.medians["n"].iloc[0])
            sums.append(([("dated", "all")], ("dated", "n")))
    known: list[object] = []
    hidden: list[object] = []
    if min_cell is not None and values:
        try:
            flow = patient_flow(cohort)
        except Exception:  # noqa: BLE001 - no flow, no ties
            flow = None
        if flow is not None:
            from analytics.privacy.suppression import suppress_flow

            fc = suppress_flow(flow.steps, flow.losses, min_cell=min_cell)
            early_keys = [k for k in fc.values if k[0] == "loss" and k[1] == "analysed_survival"
                          and str(k[2]).startswith(EARLY_REASON_PREFIX)]
            ties = {("n", DROPOUT_CENSORED): ("step", "analysed_survival")}
            if early_keys:
                ties[("early",)] = early_keys[0]
            for mine, theirs in ties.items():
                if mine in values and theirs in fc.values and values[mine] == fc.values[theirs]:
                    (known if fc.shown(theirs) else hidden).append(mine)
    return suppress_cells(values, sums=sums, known=known, hidden_elsewhere=hidden, pooled=True,
                          min_cell=min_cell or 11, enabled=min_cell is not None)


def _milestone_text(ms: pd.DataFrame, rule: str, day: float, *, hidden_n: bool, min_cell: int | None) -> str:
    row = ms[(ms["rule"] == rule) & (ms["day"] == day)]
    if row.empty:
        return ""
    r = row.iloc[0]
    risk = 0 if pd.isna(r["n_risk"]) else float(r["n_risk"])
    if min_cell is not None and (hidden_n or 0 <= risk < min_cell):
        return f"suppressed (<{min_cell})"
    return pct_ci(r["estimate"], r["ci_low"], r["ci_high"])


def rules_table(medians: pd.DataFrame, milestones: pd.DataFrame, cells: SuppressedCells, *,
                min_cell: int | None, keys: dict[str, tuple[object, object]],
                days: tuple[float, ...] = (30, 90, 180, 365), early: bool = False) -> pd.DataFrame:
    """One display row per rule: patients (n), returned to use, [early dropouts counted], median days (95% CI) and
    the proportion without return to use at ``days``.

    ``keys``: rule → (key of its n, key of its events) in ``cells`` (:func:`sensitivity_cells`). Counts as ``cells``
    shows them; a median or milestone of an n of 1 to ``min_cell - 1``, or one read where fewer than ``min_cell``
    are at risk, is suppressed (``min_cell`` None: suppression off)."""
    from analytics.outcomes.survival import DROPOUT_EVENT

    rows = []
    for r in medians.itertuples(index=False):
        n_key, e_key = keys[r.rule]
        # an estimate hides only behind a small n (1 to min_cell - 1): an n hidden as a complement ("*") still
        # describes a large group, and its median or milestones give no small count away
        hidden_n = bool(cells.primary.get(n_key, False)) if cells.enabled else False
        row: dict[str, object] = {"rule": r.rule, "patients": cells.text(n_key), "returned to use": cells.text(e_key)}
        if early:
            row["early dropouts counted"] = cells.text(("early",)) if r.rule == DROPOUT_EVENT else "—"
        row["median days (95% CI)"] = (f"suppressed (<{min_cell})" if min_cell is not None and hidden_n
                                       else ci(r.estimate, r.ci_low, r.ci_high, 0))
        for d in days:
            row[f"day {d:g}"] = _milestone_text(milestones, r.rule, d, hidden_n=hidden_n, min_cell=min_cell)
        rows.append(row)
    return pd.DataFrame(rows)


def dropout_keys(sensitivity: DropoutSensitivity) -> dict[str, tuple[object, object]]:
    """:func:`rules_table` keys of the dropout-rule table."""
    return {r: (("n", r), ("events", r)) for r in sensitivity.table["rule"]}


def dating_keys(cells: SuppressedCells, dating: EventDating) -> dict[str, tuple[object, object]]:
    """:func:`rules_table` keys of the event-dating table: both rows are the main analysis (same patients, same
    events), one cell with the dropout-censored rule's when that is the main rule (:func:`sensitivity_cells`)."""
    from analytics.outcomes.survival import DROPOUT_CENSORED

    keys: tuple[object, object] = ((("dated", "n"), ("dated", "all")) if ("dated", "n") in cells.values
                                   else (("n", DROPOUT_CENSORED), ("events", DROPOUT_CENSORED)))
    return {r: keys for r in dating.medians["rule"]}


def dating_counts_text(cells: SuppressedCells) -> str:
    """"Returns to use dated by relapse date: 167; by visit: 65; by a dropout status: 0", as ``cells`` shows them."""
    return (f"Returns to use dated by the follow-up's relapse date: {cells.text(('dated', 'relapse_date'))}; by the "
            f"assessment visit (no relapse date; interval-censored between the previous assessment and that visit): "
            f"{cells.text(('dated', 'visit'))}; by a dropout status counted as the event: "
            f"{cells.text(('dated', 'dropout'))}.")
