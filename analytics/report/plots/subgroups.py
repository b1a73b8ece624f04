"""Subgroup forest plots (who benefits).

Small cells: with ``min_cell`` (default 11; None = suppression off) the patients per program in each level show as
``"<11"`` when 1 to ``min_cell - 1`` (``"*"`` when hidden so that such a count cannot be worked out from the
variable's total), and a level whose smaller program has 1 to ``min_cell - 1`` patients gets no estimate
(:func:`subgroup_cells`, shared with the Who benefits page's table).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from analytics.formatting import escape_plotly
from analytics.outcomes.subgroups import LABELS, SubgroupForest
from analytics.privacy.suppression import SuppressedCells, suppress_cells
from analytics.report.plots import PALETTE, base_layout

TITLES = {"relapse_hr": ("Return to use: hazard ratio ({adj})",
                         "Hazard ratio, {t} vs {c} (log scale;<br>< 1: lower hazard of return to use with {t})"),
          "phq9_slope_difference": ("PHQ-9: difference in weekly change ({adj})",
                                    "PHQ-9 points per week, {t} minus {c}<br>(< 0: PHQ-9 falls faster with {t})")}
ARMS = ("n_treated", "n_control")


def subgroup_cells(result: SubgroupForest, *, min_cell: int | None = 11) -> SuppressedCells:
    """Patients per program in each (outcome, variable, level) after suppression.

    Keys ``(arm, outcome, variable, level)`` with ``arm`` in ``("n_treated", "n_control")``, and
    ``(arm, outcome, "all", "all")`` for the overall counts. The levels of a variable add up to the overall count
    (less patients without a value: a derived count, protected too).
    """
    values: dict[object, float | None] = {}
    sums: list[tuple[list[object], object]] = []
    overall = result.overall
    for arm in ARMS:
        for o, n in zip(overall["outcome"], overall[arm]):
            values[(arm, o, "all", "all")] = float(n)
        for (o, v), sub in result.table.groupby(["outcome", "variable"], sort=False):
            keys = [(arm, o, v, lv) for lv in sub["level"]]
            values.update({k: float(n) for k, n in zip(keys, sub[arm])})
            if (arm, o, "all", "all") in values:
                sums.append((keys, (arm, o, "all", "all")))
    return suppress_cells(values, sums=sums, min_cell=min_cell or 11, enabled=min_cell is not None)


def level_estimable(cells: SuppressedCells, row: pd.Series) -> bool:
    """False when either program has 1 to ``min_cell - 1`` patients in the level (no estimate is shown)."""
    return not any(cells.primary.get((arm, row["outcome"], row["variable"], row["level"]), False) for arm in ARMS)


def _p_label(row: pd.Series) -> str:
    """The interaction p printed beside the variable's first level drawn (the chart is read top down)."""
    p, holm = row.get("interaction_p"), row.get("interaction_p_holm")
    if not (isinstance(p, float) and np.isfinite(p)):
        return ""
    return f" (interaction p {p:.3f}; Holm {holm:.3f})" if isinstance(holm, float) and np.isfinite(holm) else ""


def subgroup_forest(result: SubgroupForest, *, outcome: str = "relapse_hr", min_cell: int | None = 11) -> go.Figure:
    """One row per subgroup level: estimate with CI, the overall estimate as a reference line.

    Levels whose smaller arm has 1 to ``min_cell - 1`` patients are not drawn (suppressed); the hover card gives
    the patients per program with the suppression marks of :func:`subgroup_cells`."""
    cells = subgroup_cells(result, min_cell=min_cell)
    t = result.table[result.table["outcome"] == outcome].iloc[::-1]
    overall = result.overall[result.overall["outcome"] == outcome]
    labels, est, lo, hi, text = [], [], [], [], []
    for _, r in t.iterrows():
        small = not level_estimable(cells, r)
        labels.append(escape_plotly(f"{LABELS.get(r['variable'], r['variable'])}: {r['level']}") + _p_label(r))
        est.append(np.nan if small else r["estimate"])
        lo.append(np.nan if small else r["ci_low"])
        hi.append(np.nan if small else r["ci_high"])
        p = r["interaction_p"]
        n = ", ".join(f"n = {cells.text((arm, outcome, r['variable'], r['level']))} ({escape_plotly(name)})"
                      for arm, name in zip(ARMS, (result.treated, result.control)))
        text.append(("suppressed (small group)" if small else
                     f"{r['estimate']:.2f} ({r['ci_low']:.2f} to {r['ci_high']:.2f})")
                    + f"; {n}" + (f"; interaction p = {p:.3f}" if np.isfinite(p) else ""))
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
    adj = "adjusted for case mix" if result.adjust else "unadjusted"
    base_layout(fig, title=title.format(adj=adj),
                x_title=x_title.format(t=escape_plotly(result.treated), c=escape_plotly(result.control)),
                height=max(380, 26 * len(labels) + 140))
    if outcome == "relapse_hr":
        fig.update_xaxes(type="log")
    fig.update_layout(showlegend=False)
    return fig
