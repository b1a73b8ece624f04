"""Subgroup forest plots (who benefits)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from analytics.plots import PALETTE, base_layout
from analytics.subgroups import LABELS, SubgroupForest

TITLES = {"relapse_hr": ("Return to use: hazard ratio", "Hazard ratio, {t} vs {c} (log scale; < 1 favours {t})"),
          "phq9_slope_difference": ("PHQ-9: difference in weekly change",
                                    "PHQ-9 points per week, {t} minus {c} (< 0 favours {t})")}


def subgroup_forest(result: SubgroupForest, *, outcome: str = "relapse_hr", min_cell: int | None = 11) -> go.Figure:
    """One row per subgroup level: estimate with CI, the overall estimate as a reference line.

    Levels whose smaller arm has 1 to ``min_cell - 1`` patients are not drawn (suppressed)."""
    t = result.table[result.table["outcome"] == outcome].iloc[::-1]
    overall = result.overall[result.overall["outcome"] == outcome]
    labels, est, lo, hi, text = [], [], [], [], []
    for _, r in t.iterrows():
        small = min_cell is not None and 0 < min(r["n_treated"], r["n_control"]) < min_cell
        labels.append(f"{LABELS.get(r['variable'], r['variable'])}: {r['level']}")
        est.append(np.nan if small else r["estimate"])
        lo.append(np.nan if small else r["ci_low"])
        hi.append(np.nan if small else r["ci_high"])
        p = r["interaction_p"]
        text.append(("suppressed (small group)" if small else
                     f"{r['estimate']:.2f} ({r['ci_low']:.2f} to {r['ci_high']:.2f})")
                    + (f"; interaction p = {p:.3f}" if np.isfinite(p) else ""))
    est_a, lo_a, hi_a = np.array(est, float), np.array(lo, float), np.array(hi, float)
    fig = go.Figure(go.Scatter(
        x=est_a, y=labels, mode="markers", marker={"color": PALETTE[0], "size": 9, "symbol": "square"},
        error_x={"type": "data", "symmetric": False, "array": hi_a - est_a, "arrayminus": est_a - lo_a,
                 "color": PALETTE[0]},
        hovertext=text, hoverinfo="text+y", name="within subgroup"))
    null = 1.0 if outcome == "relapse_hr" else 0.0
    fig.add_vline(x=null, line={"color": "#444", "width": 1})
    if len(overall) and np.isfinite(overall["estimate"].iloc[0]):
        fig.add_vline(x=float(overall["estimate"].iloc[0]), line={"color": PALETTE[1], "dash": "dash"},
                      annotation_text="all patients", annotation_position="top")
    title, x_title = TITLES[outcome]
    base_layout(fig, title=title, x_title=x_title.format(t=result.treated, c=result.control),
                height=max(380, 26 * len(labels) + 140))
    if outcome == "relapse_hr":
        fig.update_xaxes(type="log")
    fig.update_layout(showlegend=False)
    return fig
