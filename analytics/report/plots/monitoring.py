"""Session monitoring figure and display tables (result of :mod:`analytics.outcomes.monitoring` in).

The display tables are text (numbers formatted, hidden cells written as "suppressed (<11)"), shared by the Session
safety page and the meeting pack so both say the same thing.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from analytics import formatting as fmt
from analytics.formatting import escape_plotly
from analytics.outcomes.monitoring import ALL, MEASURE_WORDS, NOT_RECORDED, SessionMonitoring
from analytics.report.plots import PALETTE, base_layout, ci_error_y, colour, note_under_axis, rgba

HIDDEN = "suppressed (<11)"


def _finding(m: SessionMonitoring, key: str) -> str:
    th = m.thresholds
    return {"rise": f"systolic rise ≥ {th.rise_mmhg:.0f} mmHg at ~40 min",
            "very_high_40min": f"> {th.severe_systolic_mmhg:.0f}/{th.severe_diastolic_mmhg:.0f} mmHg at ~40 min",
            "raised_discharge": f"≥ {th.discharge_systolic_mmhg:.0f}/{th.discharge_diastolic_mmhg:.0f} mmHg at "
                                "discharge"}.get(key, MEASURE_WORDS.get(key, key))


def _route(r: str) -> str:
    return "All routes" if r == ALL else r.upper() if len(r) <= 2 else r.capitalize()


def blood_pressure_chart(m: SessionMonitoring) -> go.Figure:
    """Grouped bars: share of ketamine sessions with each blood-pressure finding, by route, Wilson 95% CIs."""
    t = m.blood_pressure
    fig = go.Figure()
    hidden = 0
    for i, (route, sub) in enumerate(t.groupby("route", sort=False)):
        keep = sub["shown"].to_numpy(bool)
        hidden += int((~keep).sum())
        est = (100 * sub["estimate"]).where(keep)
        c = PALETTE[7] if route == ALL else colour(i)
        fig.add_trace(go.Bar(
            x=[_finding(m, x) for x in sub["measure"]], y=est, name=escape_plotly(_route(str(route))),
            marker={"color": rgba(c, 0.85)},
            error_y=ci_error_y(est, 100 * sub["ci_low"], 100 * sub["ci_high"]),
            hovertemplate="%{x}: %{y:.1f}%<extra>%{fullData.name}</extra>"))
    base_layout(fig, title="Blood pressure in ketamine sessions, by route (share of sessions with the readings)",
                x_title="Finding", y_title="Sessions (%)", height=420)
    fig.update_layout(barmode="group")
    fig.update_yaxes(rangemode="tozero")
    if hidden:
        note_under_axis(fig, f"{hidden} bar{'s' if hidden != 1 else ''} not drawn (small-cell rule).")
    return fig


def blood_pressure_table(m: SessionMonitoring) -> pd.DataFrame:
    """One row per finding, one column per route: "4.6% (3.7–5.8%) of 1,451" (share, Wilson CI, sessions with the
    readings)."""
    t = m.blood_pressure
    cells = [f"{fmt.pct_ci(e, lo, hi, 1)} of {fmt.count(int(n))}" if ok else HIDDEN
             for e, lo, hi, n, ok in zip(t["estimate"], t["ci_low"], t["ci_high"], t["denominator"], t["shown"])]
    wide = t.assign(cell=cells).pivot(index="measure", columns="route", values="cell")
    order = [r for r in dict.fromkeys(t["route"]) if r != ALL] + [ALL]
    wide = wide.reindex(index=list(dict.fromkeys(t["measure"])), columns=order)
    wide.columns = [_route(r) for r in wide.columns]
    wide.insert(0, "finding", [_finding(m, x) for x in wide.index])
    return wide.reset_index(drop=True)


def quantile_table(q: pd.DataFrame, unit: str, digits: int = 0) -> pd.DataFrame:
    return pd.DataFrame({
        "route": [_route(r) for r in q["route"]],
        f"median {unit} (IQR)": [f"{fmt.num(md, digits)} ({fmt.num(a, digits)}–{fmt.num(b, digits)})" if ok else HIDDEN
                                 for md, a, b, ok in zip(q["median"], q["q1"], q["q3"], q["shown"])],
        "sessions": [fmt.count(int(n)) if ok else HIDDEN for n, ok in zip(q["n"], q["shown"])]})


def distribution_table(d: pd.DataFrame, column: str, label: str) -> pd.DataFrame:
    return pd.DataFrame({label: [str(x).replace("_", " ") for x in d[column]],
                         "sessions": [fmt.count(int(n)) if ok else HIDDEN for n, ok in zip(d["n"], d["shown"])],
                         "share": [fmt.pct(s, 1) if ok else HIDDEN for s, ok in zip(d["share"], d["shown"])]})


def serious_sentence(m: SessionMonitoring) -> str:
    """Serious events per 1,000 sessions with the exact bound, or why it is not shown."""
    b = m.serious
    if b is None:
        return f"Serious events (event_severity): {NOT_RECORDED}."
    if not m.serious_shown:
        return "Serious events per 1,000 sessions: suppressed (fewer than 11 events or sessions)."
    pct = round(100 * m.conf_level)
    if b.events == 0:
        return (f"No serious event in {fmt.count(b.sessions)} ketamine sessions with a severity recorded: exact "
                f"one-sided {pct}% upper bound {fmt.num(b.upper_bound, 2)} per 1,000 sessions (rule of three: "
                f"{fmt.num(b.rule_of_three, 2)}).")
    return (f"Serious events: {fmt.num(b.per_1000, 2)} per 1,000 ketamine sessions (exact {pct}% CI "
            f"{fmt.num(b.ci_low, 2)}–{fmt.num(b.ci_high, 2)}; one-sided upper bound {fmt.num(b.upper_bound, 2)}), "
            f"{fmt.count(b.events)} in {fmt.count(b.sessions)} sessions with a severity recorded.")


def parts_sentence(m: SessionMonitoring) -> list[str]:
    """One sentence per part the export does not record."""
    words = {"bp": "Blood pressure before dosing and at ~40 min", "discharge": "Blood pressure at discharge",
             "minutes": "Minutes until ready to leave", "sedation": "Sedation score (MOAA/S)",
             "dissociation": "Dissociation score (CADSS-6)", "severity": "Event severity",
             "action": "Action taken"}
    return [f"{words[p]}: {NOT_RECORDED}." for p, ok in m.recorded.items() if not ok]


__all__ = ["blood_pressure_chart", "blood_pressure_table", "distribution_table", "parts_sentence", "quantile_table",
           "serious_sentence"]
