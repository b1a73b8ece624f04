"""Figures of the trajectories page: mean course with CI band, response/remission bars, band transitions,
durability of response, abstinence over time.

Pure builders: a result of :mod:`analytics.outcomes.trajectories` in, a ``go.Figure`` out. Proportions are shown as %.

Small cells: with ``min_cell`` (pass ``settings.min_cell`` when suppression is on; the default None draws every
count, for internal use) no count from 1 to ``min_cell - 1`` is in a label or hover card: response bars from small
counts are not drawn, heatmap cells show ``"<11"``, the durability curves go through
:func:`analytics.privacy.suppression.suppress_km` like the survival curves, and the individual-patient sample size in the legend
is masked.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from analytics.formatting import escape_plotly
from analytics.outcomes.cohort import PHQ9_BANDS
from analytics.outcomes.trajectories import (
    AXIS_TITLES,
    MEASURE_NAMES,
    AbstinenceGEE,
    BandTransitions,
    ObservedMeans,
    PredictedMeans,
    ResponseDurability,
    ResponseRemission,
)
from analytics.privacy.counts import mask_text
from analytics.privacy.suppression import suppress_km
from analytics.report.plots import PALETTE, base_layout, colour, rgba

WEEKS_TITLE = "Weeks since first ketamine session"
GREY = "#9A9A9A"


def _pct(conf_level: float) -> str:
    return f"{round(conf_level * 100)}%"


def mean_trajectory(pred: PredictedMeans, *, lines: pd.DataFrame | None = None,
                    observed: ObservedMeans | None = None, title: str | None = None,
                    y_title: str | None = None, min_cell: int | None = None) -> go.Figure:
    """Model-based mean per group with its confidence band, over thin grey individual courses, with the observed
    means per time bin beside it.

    ``lines`` is :func:`analytics.outcomes.trajectories.patient_lines` (columns ``line``, ``group``, ``weeks``, ``value``);
    it is drawn first, behind the means, as one trace per group (gaps between patients), hidden from hover.
    ``observed`` is :func:`analytics.outcomes.trajectories.observed_means`: points with CI error bars in the group's
    colour, so that a time shape that misses the data is visible. With ``min_cell``, a bin of fewer patients is not
    drawn (its mean would be a handful of patients' scores).
    """
    fig = go.Figure()
    if lines is not None and len(lines):
        xs: list[float | None] = []
        ys: list[float | None] = []
        for _, one in lines.groupby("line", sort=False):
            xs += one["weeks"].tolist() + [None]
            ys += one["value"].tolist() + [None]
        n_lines = mask_text(lines["line"].nunique(), min_cell=min_cell or 11, enabled=min_cell is not None)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"color": rgba(GREY, 0.45), "width": 0.8},
                                 name=f"Individual patients (sample of {n_lines})",
                                 hoverinfo="skip", connectgaps=False))
    t = pred.table
    for i, (group, sub) in enumerate(t.groupby("group", sort=False)):
        c, g = colour(i), escape_plotly(group)
        fig.add_trace(go.Scatter(x=np.r_[sub["weeks"], sub["weeks"][::-1]],
                                 y=np.r_[sub["ci_high"], sub["ci_low"][::-1]], fill="toself",
                                 fillcolor=rgba(c, 0.2), line={"width": 0}, hoverinfo="skip",
                                 legendgroup=str(g), showlegend=False, name=f"{g} {_pct(pred.conf_level)} CI"))
        fig.add_trace(go.Scatter(x=sub["weeks"], y=sub["estimate"], mode="lines", line={"color": c, "width": 3},
                                 name=str(g), legendgroup=str(g),
                                 customdata=np.c_[sub["ci_low"], sub["ci_high"]],
                                 hovertemplate="Week %{x:.1f}: %{y:.1f} (%{customdata[0]:.1f}–%{customdata[1]:.1f})"
                                               f"<extra>{g}</extra>"))
    if observed is not None:
        _observed_points(fig, observed, list(dict.fromkeys(t["group"])), min_cell)
    label = MEASURE_NAMES.get(pred.measure, pred.measure)
    base_layout(fig, title=title or f"Mean {label} over time (model-based, {_pct(pred.conf_level)} CI)",
                x_title=WEEKS_TITLE, y_title=y_title or AXIS_TITLES.get(pred.measure, label), height=560)
    # model lines, observed means and the patient sample make a long legend: below the plot, never over the title
    fig.update_layout(legend={"orientation": "h", "yanchor": "top", "y": -0.2, "x": 0}, margin={"b": 150})
    return fig


def _observed_points(fig: go.Figure, observed: ObservedMeans, groups: list[str], min_cell: int | None) -> None:
    """Observed means (markers, CI error bars) in the colour of each group's model line."""
    t = observed.table
    t = t[t["n_patients"] >= max(2, min_cell or 0)]
    for group, sub in t.groupby("group", sort=False):
        i = groups.index(group) if group in groups else len(groups)
        c, g = colour(i), escape_plotly(group)
        fig.add_trace(go.Scatter(
            x=sub["weeks"], y=sub["estimate"], mode="markers", name=f"{g}: observed mean ({_pct(observed.conf_level)} CI)",
            legendgroup=str(g), marker={"color": c, "size": 7, "symbol": "circle-open", "line": {"width": 2}},
            error_y={"type": "data", "symmetric": False, "array": sub["ci_high"] - sub["estimate"],
                     "arrayminus": sub["estimate"] - sub["ci_low"], "color": c, "thickness": 1.2},
            customdata=np.c_[sub["bin"], sub["ci_low"], sub["ci_high"], sub["n_patients"]],
            hovertemplate="Weeks %{customdata[0]}: observed %{y:.1f} (%{customdata[1]:.1f}–%{customdata[2]:.1f}), "
                          "%{customdata[3]} patients" f"<extra>{g}</extra>"))


def response_remission_bars(rr: ResponseRemission, *, title: str | None = None,
                            min_cell: int | None = None) -> go.Figure:
    """Response and remission (%) at each week, grouped bars with Wilson interval error bars and n in hover.

    With ``min_cell``, a bar whose numerator, denominator or complement is 1 to ``min_cell - 1`` is not drawn."""
    t = rr.table.copy()
    if min_cell is not None:
        def small(n: pd.Series) -> pd.Series:
            return (n > 0) & (n < min_cell)
        hide = small(t["n_event"]) | small(t["n"]) | small(t["n"] - t["n_event"])
        t.loc[hide, ["estimate", "ci_low", "ci_high", "n_event", "n"]] = np.nan
    fig = go.Figure()
    groups = list(dict.fromkeys(t["group"]))
    i = 0
    for g in groups:
        for outcome in ("response", "remission"):
            sub = t[(t["group"] == g) & (t["outcome"] == outcome)]
            est = 100 * sub["estimate"]
            name = outcome.capitalize() if len(groups) == 1 else f"{outcome.capitalize()}: {escape_plotly(g)}"
            fig.add_trace(go.Bar(
                x=[f"Week {w:g}" for w in sub["weeks"]], y=est, name=name, marker_color=colour(i),
                error_y={"type": "data", "symmetric": False, "array": 100 * sub["ci_high"] - est,
                         "arrayminus": est - 100 * sub["ci_low"], "color": "#333333"},
                customdata=np.c_[sub["n_event"], sub["n"]],
                hovertemplate="%{x}: %{y:.0f}% (%{customdata[0]} of %{customdata[1]})" f"<extra>{name}</extra>"))
            i += 1
    base_layout(fig, title=title or f"PHQ-9 response and remission ({_pct(rr.conf_level)} Wilson CI)",
                x_title=f"Weeks since first ketamine session (score within ±{rr.window_days} days)",
                y_title="Patients (%)")
    fig.update_layout(barmode="group", legend={"orientation": "h", "yanchor": "top", "y": -0.2, "x": 0},
                      margin={"b": 110}, height=520)
    fig.update_yaxes(range=[0, 100])
    return fig


def band_transition_heatmap(bt: BandTransitions, *, group: str | None = None,
                            title: str | None = None, min_cell: int | None = None) -> go.Figure:
    """Baseline band (rows) × latest band (columns) counts; cells below the diagonal improved.

    With ``min_cell``, counts from 1 to ``min_cell - 1`` show as ``<min_cell`` and are not coloured."""
    m = bt.matrix(group)
    order = [b[2] for b in PHQ9_BANDS]
    z = m.reindex(index=order, columns=order).to_numpy().astype(float)
    text = z.astype(int).astype(str).astype(object)
    if min_cell is not None:
        small = (z > 0) & (z < min_cell)
        text[small] = f"<{min_cell}"
        z[small] = np.nan
    fig = go.Figure(go.Heatmap(z=z, x=order, y=order, colorscale=[[0, "#F7FBFF"], [1, PALETTE[0]]],
                               text=text, texttemplate="%{text}", showscale=False,
                               hovertemplate="Baseline %{y} → latest %{x}: %{text} patients<extra></extra>"))
    base_layout(fig, title=title or "PHQ-9 severity band: baseline → latest score",
                x_title="Latest PHQ-9 band (points)", y_title="Baseline PHQ-9 band (points)", height=460)
    fig.update_yaxes(autorange="reversed")
    return fig


def durability_curves(dur: ResponseDurability, *, title: str | None = None, min_cell: int | None = None) -> go.Figure:
    """Kaplan–Meier probability of still being in response, by maintenance sessions (step curves, CI bands).

    With ``min_cell`` the curves are made safe like the survival curves (:func:`analytics.privacy.suppression.suppress_km`):
    drawn while at least ``min_cell`` are at risk, at points pooling at least ``min_cell`` losses of response, with
    the numbers at risk in the hover masked."""
    safe = suppress_km(dur.curves, counts_shown="drawn", min_cell=min_cell or 11, enabled=min_cell is not None)
    curves = dur.curves.assign(_draw=~safe.mask["estimate"].to_numpy(), _risk=safe.text()["n_risk"].to_numpy())
    fig = go.Figure()
    for i, (group, sub) in enumerate(curves.groupby("group", sort=False)):
        c, g = colour(i), escape_plotly(group)
        sub = sub[sub["_draw"]]
        if min_cell is not None and len(sub) and sub["day"].iloc[0] > 0:  # a step function from 100% at week 0
            sub = pd.concat([sub.iloc[:1].assign(day=0.0, estimate=1.0, ci_low=1.0, ci_high=1.0, _risk=""), sub])
        weeks = sub["day"] / 7.0
        fig.add_trace(go.Scatter(x=np.r_[weeks, weeks[::-1]], y=100 * np.r_[sub["ci_high"], sub["ci_low"][::-1]],
                                 fill="toself", fillcolor=rgba(c, 0.15), line={"width": 0, "shape": "hv"},
                                 hoverinfo="skip", showlegend=False, legendgroup=str(g)))
        fig.add_trace(go.Scatter(x=weeks, y=100 * sub["estimate"], mode="lines", name=str(g), legendgroup=str(g),
                                 line={"color": c, "width": 2.5, "shape": "hv"}, customdata=sub["_risk"],
                                 hovertemplate="Week %{x:.1f}: %{y:.0f}% still in response "
                                               "(%{customdata} at risk)" f"<extra>{g}</extra>"))
    base_layout(fig, title=title or f"Staying in response after a first PHQ-9 response "
                                    f"(Kaplan–Meier, {_pct(dur.conf_level)} CI)",
                x_title="Weeks since first response", y_title="Still in response (%)")
    fig.update_yaxes(range=[0, 100])
    return fig


def abstinence_over_time(gee: AbstinenceGEE, *, title: str | None = None) -> go.Figure:
    """Population-average probability of a fully abstinent assessment window (GEE) per group, with CI band."""
    fig = go.Figure()
    for i, (group, sub) in enumerate(gee.predicted.groupby("group", sort=False)):
        c, g = colour(i), escape_plotly(group)
        fig.add_trace(go.Scatter(x=np.r_[sub["weeks"], sub["weeks"][::-1]],
                                 y=100 * np.r_[sub["ci_high"], sub["ci_low"][::-1]], fill="toself",
                                 fillcolor=rgba(c, 0.2), line={"width": 0}, hoverinfo="skip", showlegend=False,
                                 legendgroup=str(g)))
        fig.add_trace(go.Scatter(x=sub["weeks"], y=100 * sub["estimate"], mode="lines", name=str(g),
                                 legendgroup=str(g), line={"color": c, "width": 3},
                                 hovertemplate="Week %{x:.0f}: %{y:.0f}%" f"<extra>{g}</extra>"))
    base_layout(fig, title=title or f"Abstinent assessment windows (GEE, {_pct(gee.conf_level)} CI)",
                x_title=WEEKS_TITLE, y_title="Windows fully abstinent (%)")
    fig.update_yaxes(range=[0, 100])
    return fig
