"""The monthly meeting pack: one self-contained HTML file from the same results the pages show.

Opens offline (plotly.js is embedded once), carries the data-quality summary, the view filters, the outcome
definitions, every chart and table, the published benchmarks with their sources, methods notes and software
versions. Small-cell suppression is applied to every count unless the analyst setting turned it off, in which
case the report says so on its first line.
"""

from __future__ import annotations

import html
import platform
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from analytics import formatting as fmt
from analytics.errors import OutcomesError
from analytics.outcomes import benchmarks, qi, safety, survival, trajectories
from analytics.outcomes.cohort import Cohort, build_cohort
from analytics.outcomes.filters import Filters, apply_filters
from analytics.outcomes.pipeline import count_cells, group_column
from analytics.outcomes.settings import Settings
from analytics.outcomes.subgroups import who_benefits
from analytics.privacy.counts import mask_text, rate_is_safe
from analytics.privacy.suppression import render_note, suppress_cells
from analytics.report.parallel import run_all
from analytics.report.plots import benchmarks as bplots
from analytics.report.plots import qi as qplots
from analytics.report.plots import safety as splots
from analytics.report.plots import survival as svplots
from analytics.report.plots import trajectories as tplots
from analytics.report.plots.subgroups import subgroup_forest
from schemas.frames import ValidatedExports

PACKAGES = ("pandas", "numpy", "scipy", "statsmodels", "pandera", "plotly", "streamlit", "pyarrow")
SECTIONS = ("Data quality", "Key indicators", "Patient flow", "Retention", "Time to return to use",
            "Symptom trajectories", "Substance use", "Versus published", "Session safety", "Session monitoring",
            "Who benefits", "Control charts and funnels", "Methods")

CSS = """
body{font-family:'DejaVu Sans',Arial,sans-serif;max-width:1150px;margin:24px auto;padding:0 18px;color:#1a1a1a}
h1{font-size:26px;margin-bottom:4px}h2{border-bottom:2px solid #0072B2;padding-bottom:4px;margin-top:40px}
table{border-collapse:collapse;margin:10px 0;font-size:13px}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f0f4f8}.note{color:#555;font-size:12.5px;margin:4px 0}.warn{background:#fff4e5;border-left:4px solid #E69F00;
padding:8px 12px}.info{background:#eef6fc;border-left:4px solid #0072B2;padding:8px 12px}
nav a{margin-right:12px;font-size:13px}td.n{text-align:right}
"""


@dataclass
class _Pack:
    """Accumulates the HTML parts of one section (plotly.js is embedded once, by :func:`build_report`)."""

    parts: list[str]
    suppress: bool
    min_cell: int

    def h2(self, title: str) -> None:
        anchor = title.lower().replace(" ", "-")
        self.parts.append(f'<h2 id="{anchor}">{html.escape(title)}</h2>')

    @property
    def chart_min_cell(self) -> int | None:
        """The ``min_cell`` a chart builder takes: the threshold when suppression is on, None when it is off."""
        return self.min_cell if self.suppress else None

    def text(self, text: str) -> str:
        """Counts marked in a note (privacy.note_n) as this pack shows them."""
        return render_note(text, min_cell=self.min_cell, enabled=self.suppress)

    def p(self, text: str, cls: str = "") -> None:
        self.parts.append(f'<p class="{cls}">{html.escape(self.text(text))}</p>')

    def notes(self, notes: Iterable[str]) -> None:
        for n in notes:
            self.p(n, "note")

    def figure(self, fig: go.Figure) -> None:
        self.parts.append(fig.to_html(full_html=False, include_plotlyjs=False,
                                      config={"displaylogo": False, "responsive": True}))

    def count(self, n: object) -> str:
        return mask_text(n, enabled=self.suppress, min_cell=self.min_cell)  # type: ignore[arg-type]

    def table(self, frame: pd.DataFrame, *, counts: Iterable[str] = ()) -> None:
        counts = set(counts)
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
        rows = []
        for rec in frame.itertuples(index=False):
            cells = []
            for col, value in zip(frame.columns, rec):
                if col in counts:
                    cells.append(f'<td class="n">{html.escape(self.count(value))}</td>')
                else:
                    text = "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)
                    cells.append(f"<td>{html.escape(self.text(text))}</td>")
            rows.append("<tr>" + "".join(cells) + "</tr>")
        self.parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")

    def rate(self, numerator: object, denominator: object, text: str) -> str:
        if self.suppress and not rate_is_safe(numerator, denominator, min_cell=self.min_cell):  # type: ignore[arg-type]
            return "suppressed"
        return text

    def section(self, title: str, body: Callable[[], None]) -> None:
        self.h2(title)
        try:
            body()
        except OutcomesError as err:
            self.p(str(err), "warn")


def _versions() -> str:
    found = []
    for name in ("kap-outcomes", *PACKAGES):
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return f"Python {platform.python_version()}; " + ", ".join(found)


def _flow_totals(pack: _Pack, cohort: Cohort, data: ValidatedExports, keys: dict[object, object]
                 ) -> tuple[dict[object, float | None], list[object], list[object]]:
    """Totals that the patient-flow section prints (``keys``: cell here → flow key), as the flow shows them.

    Returns their values, those the flow shows (known to a reader of the pack: never hidden here to protect
    another cell) and those it hides (hidden here too, and protected), so that a table whose rows add up to a
    flow step gives nothing away that the flow hides, nor the flow what the table hides.
    """
    try:
        flow_cells = qplots.flow_cells(qi.load_flow(cohort, data), min_cell=pack.chart_min_cell)
    except OutcomesError:
        return {}, [], []
    values = {k: flow_cells.values.get(f) for k, f in keys.items() if f in flow_cells.values}
    known = [k for k in values if flow_cells.shown(keys[k])]
    hidden = [k for k in values if not flow_cells.shown(keys[k])]
    return values, known, hidden


def _data_quality(pack: _Pack, data: ValidatedExports, cohort: Cohort) -> None:
    # rows read = accepted + set aside per file, and over the files the flow's "Rows uploaded" / "Rows accepted"
    values: dict[object, float | None] = {}
    sums: list[tuple[list[object], object]] = []
    for k, r in data.files.items():
        values.update({("rows", k): r.rows, ("accepted", k): r.accepted, ("aside", k): r.quarantined})
        sums.append(([("accepted", k), ("aside", k)], ("rows", k)))
    totals, known, hidden = _flow_totals(pack, cohort, data, {("rows",): ("step", "uploaded"),
                                                              ("accepted",): ("step", "valid"),
                                                              ("aside",): ("lost", "valid")})
    values.update(totals)
    for what in ("rows", "accepted", "aside"):
        if (what,) in totals:
            sums.append(([(what, k) for k in data.files], (what,)))
    cells = suppress_cells(values, sums=sums, known=known, hidden_elsewhere=hidden, pooled=True,
                           min_cell=pack.min_cell, enabled=pack.suppress)
    rows = pd.DataFrame([{"file": f"{k}.csv", "rows read": cells.text(("rows", k)),
                          "accepted": cells.text(("accepted", k)), "set aside": cells.text(("aside", k)),
                          "identifier columns dropped": ", ".join(r.dropped_columns)}
                         for k, r in data.files.items()])
    pack.table(rows)
    if len(data.issues):
        pack.p("Problems by file and column (the full list with line numbers is on the Data page and in "
               "`kap-outcomes validate`):")
        pack.table(_problem_counts(pack, data.issues))
    pack.notes(data.notes)


def _problem_counts(pack: _Pack, issues: pd.DataFrame) -> pd.DataFrame:
    """Problems per (file, column), with a total per file and one for all files, suppressed together."""
    g = issues.groupby(["file", "column"], sort=True).size()
    values: dict[object, float | None] = {("cell", *k): float(n) for k, n in g.items()}  # type: ignore[misc]
    files = list(dict.fromkeys(k[0] for k in g.index))
    sums: list[tuple[list[object], object]] = []
    for f in files:
        values[("file", f)] = float(g.loc[f].sum())
        sums.append(([("cell", *k) for k in g.index if k[0] == f], ("file", f)))
    values[("all",)] = float(g.sum())
    sums.append(([("file", f) for f in files], ("all",)))
    cells = suppress_cells(values, sums=sums, pooled=True, min_cell=pack.min_cell, enabled=pack.suppress)
    rows = []
    for f in files:
        rows += [(f, c, cells.text(("cell", f, c))) for ff, c in g.index if ff == f]
        rows.append((f, "(all columns)", cells.text(("file", f))))
    rows.append(("(all files)", "", cells.text(("all",))))
    return pd.DataFrame(rows, columns=["file", "column", "problems"])


def _kpis(pack: _Pack, cohort: Cohort) -> None:
    (a, b) = qi.default_periods(cohort)
    table = qi.kpis(cohort, period_a=a, period_b=b)
    t = table.table
    out = []
    for kpi in t["kpi"].unique():
        rows = t[t["kpi"] == kpi].set_index("period")
        entry = {"indicator": rows.loc["b", "label"]}
        for per, name in (("a", f"{a[0]:%b %Y}–{a[1]:%b %Y}"), ("b", f"{b[0]:%b %Y}–{b[1]:%b %Y}")):
            r = rows.loc[per]
            if r["scale"] == "count":
                entry[name] = pack.count(r["estimate"])
            elif r["scale"] == "per_100_sessions" and pd.isna(r["estimate"]) and r["kpi"] == "ae_rate":
                entry[name] = "not recorded"
            elif r["scale"] == "per_100_sessions":
                entry[name] = pack.rate(r["numerator"], r["denominator"],
                                        f"{fmt.num(r['estimate'], 1)} per 100 ({pack.count(r['numerator'])} events / "
                                        f"{pack.count(r['denominator'])} sessions)")
            else:
                entry[name] = pack.rate(r["numerator"], r["denominator"],
                                        f"{fmt.pct(r['estimate'])} ({pack.count(r['numerator'])} of "
                                        f"{pack.count(r['denominator'])})")
        entry["definition"] = rows.loc["b", "definition"]
        out.append(entry)
    pack.table(pd.DataFrame(out))
    pack.notes(table.notes)
    _sensitivity(pack, cohort, days=(90,), figure=False)


def _flow(pack: _Pack, cohort: Cohort, data: ValidatedExports) -> None:
    flow = qi.load_flow(cohort, data)
    cells = qplots.flow_cells(flow, min_cell=pack.chart_min_cell)  # one suppression: the diagram and both tables
    pack.figure(qplots.flow_diagram(flow, min_cell=pack.chart_min_cell))
    st = flow.steps
    pack.table(pd.DataFrame({
        "label": st["label"], "n": [cells.text(("step", s)) for s in st["step"]],
        "lost": [cells.text(("lost", s)) if ("lost", s) in cells.values else "" for s in st["step"]],
        "unit": st["unit"]}))
    pack.table(pd.DataFrame({"step": flow.losses["step"], "reason": flow.losses["reason"],
                             "n": [cells.text(("loss", s, r)) for s, r in zip(flow.losses["step"],
                                                                              flow.losses["reason"])]},
                            columns=["step", "reason", "n"]))
    pack.notes(flow.notes)
    if pack.suppress:
        pack.notes(cells.notes)


def _survival(pack: _Pack, cohort: Cohort, by: str | None, reference: str | None) -> None:
    curves = survival.relapse_curves(cohort, by=by)
    pack.figure(svplots.km_figure(curves))
    med = curves.medians
    # the same cells as `kap-outcomes analyze`: the groups add up to the flow's "Analysed: time to return to use"
    cells = count_cells(cohort, list(zip(med["group"], med["n"], med["n_event"])))
    too_small = {g: pack.suppress and cells.primary.get(("n", g), False) for g in med["group"]}
    pack.table(pd.DataFrame({"group": med["group"], "patients": [cells.text(("n", g)) for g in med["group"]],
                             "returned to use": [cells.text(("events", g)) for g in med["group"]],
                             "median days (95% CI)": [f"suppressed (<{pack.min_cell})" if too_small[g] else
                                                      fmt.ci(m, lo, hi, 0) for g, m, lo, hi in
                                                      zip(med["group"], med["estimate"], med["ci_low"],
                                                          med["ci_high"])]}))
    if pack.suppress:
        pack.notes(cells.notes)
    ms = curves.milestones
    # a milestone read where fewer than min_cell are still at risk is a step of a handful of patients
    pack.table(pd.DataFrame({"group": ms["group"], "day": ms["day"], "without return to use (95% CI)": [
        f"suppressed (<{pack.min_cell})" if pack.suppress and (too_small[g] or 0 <= r < pack.min_cell)
        else fmt.pct_ci(e, lo, hi) for g, r, e, lo, hi in zip(ms["group"], ms["n_risk"].fillna(0), ms["estimate"],
                                                              ms["ci_low"], ms["ci_high"])]}))
    _sensitivity(pack, cohort)
    comp = None
    if by is not None:
        try:  # a comparison that cannot be made leaves the curves above in place
            comp = survival.compare_groups(cohort, by=by, reference=reference)
        except OutcomesError as err:
            pack.p(f"No comparison between groups: {err} The Kaplan–Meier curves per group above are kept.", "warn")
    if comp is not None:
        pack.p(f"Log-rank: chi-square {fmt.num(comp.logrank.chisq)} on {comp.logrank.df} df, "
               f"{fmt.p_value(comp.logrank.p)}. {comp.ph_verdict}")
        if comp.hazard_ratios is not None:
            pack.figure(svplots.forest_figure(comp))
            hr = comp.hazard_ratios
            pack.table(pd.DataFrame({"term": hr["term"], "level": hr["level"],
                                     "hazard ratio (95% CI)": [fmt.ci(e, lo, hi) for e, lo, hi in
                                                               zip(hr["estimate"], hr["ci_low"], hr["ci_high"])],
                                     "p": [fmt.p_value(p) for p in hr["p"]]}))
        if comp.ph_holds is False:
            rd = comp.rmst_difference
            pack.p(f"Restricted mean time without return to use up to day {fmt.num(comp.horizon_days, 0)}:")
            pack.table(pd.DataFrame({"group": rd["group"], "difference in days (95% CI)": [
                fmt.ci(e, lo, hi, 1) for e, lo, hi in zip(rd["estimate"], rd["ci_low"], rd["ci_high"])]}))
        pack.notes(comp.notes)
    pack.p("Observational data: differences between groups are associations, not effects of a program.", "info")
    pack.notes(curves.notes)


def _sensitivity(pack: _Pack, cohort: Cohort, *, days: tuple[float, ...] = (30, 90, 180, 365),
                 figure: bool = True) -> None:
    """Issue #19: return to use with dropout censored and counted as return to use, each with its n (and the
    figure), then how events are dated (visit vs relapse date) with the midpoint rule beside the main one."""
    min_cell = pack.chart_min_cell
    sens = dating = None
    try:
        sens = survival.dropout_sensitivity(cohort)
        dating = survival.event_dating(cohort) if figure else None
    except OutcomesError as err:
        pack.p(str(err), "warn")
    cells = svplots.sensitivity_cells(cohort, sens, dating, min_cell=min_cell)
    if sens is not None:
        pack.p("Return to use, dropout censored vs dropout counted as return to use (all patients in the view):")
        pack.table(svplots.rules_table(sens.table, sens.milestones, cells, min_cell=min_cell,
                                       keys=svplots.dropout_keys(sens), days=days, early=True))
        if figure:
            pack.figure(svplots.dropout_sensitivity_figure(sens))
        pack.notes(sens.notes[2:] if figure else sens.notes[2:3])
    if dating is not None:
        pack.p("How returns to use are dated: at the assessment visit (as recorded) vs the midpoint of the interval "
               "since the previous assessment, and the Turnbull estimate for interval-censored dates (no CI):")
        pack.p(svplots.dating_counts_text(cells), "note")
        pack.table(svplots.rules_table(dating.medians, dating.milestones, cells, min_cell=min_cell,
                                       keys=svplots.dating_keys(cells, dating), days=days))
        pack.notes(dating.notes[3:])


def _trajectories(pack: _Pack, cohort: Cohort, time: str = "auto") -> None:
    fit = trajectories.phq9_model(cohort, time=time)  # type: ignore[arg-type]  # the model of `analyze`
    observed = trajectories.observed_means(cohort, measure="phq9")
    pack.figure(tplots.mean_trajectory(trajectories.predicted_means(fit), observed=observed,
                                       lines=trajectories.patient_lines(cohort, measure="phq9"),
                                       min_cell=pack.chart_min_cell))
    r = fit.random
    pack.p(f"Model {fit.formula} by {fit.method}: {pack.count(fit.n_patients)} patients, "
           f"{pack.count(fit.n_obs)} scores, {'converged' if fit.converged else 'did not converge'}; SD of "
           f"starting level {fmt.num(r.get('sd_intercept'))}, of weekly slope {fmt.num(r.get('sd_slope'), 3)}, "
           f"residual {fmt.num(r.get('sd_residual'))}.")
    fx = fit.fixed
    pack.table(pd.DataFrame({"term": fx["term"], "estimate (95% CI)": [
        fmt.ci(e, lo, hi, 3) for e, lo, hi in zip(fx["estimate"], fx["ci_low"], fx["ci_high"])],
        "p": [fmt.p_value(p) for p in fx["p"]]}))
    pack.notes(fit.notes + observed.notes)
    rr = trajectories.response_remission(cohort)
    pack.figure(tplots.response_remission_bars(rr, min_cell=pack.chart_min_cell))
    t = rr.table
    pack.table(pd.DataFrame({"week": t["weeks"], "outcome": t["outcome"], "patients with a score": t["n"],
                             "rate (95% CI)": [pack.rate(k, n, fmt.pct_ci(e, lo, hi)) for k, n, e, lo, hi in
                                               zip(t["n_event"], t["n"], t["estimate"], t["ci_low"], t["ci_high"])]}),
               counts=("patients with a score",))
    pack.notes(rr.notes)
    dur = trajectories.response_durability(cohort)
    pack.figure(tplots.durability_curves(dur, min_cell=pack.chart_min_cell))
    pack.notes(dur.notes)


def _substance_use(pack: _Pack, cohort: Cohort) -> None:
    """Days abstinent and heavy days over time, 30-day continuous abstinence at 6/12 months (both bounds), urine
    results by substance, and the AUDIT-C / BAM / craving / GAD-7 courses (analytics/outcomes/substance_use.py)."""
    from analytics.outcomes import substance_use as su
    from analytics.report.plots import substance_use as suplots

    mc, kw = pack.chart_min_cell, {"min_cell": pack.min_cell, "enabled": pack.suppress}
    for measure in ("pda", "heavy"):
        try:
            course = su.use_course(cohort, measure=measure)
        except OutcomesError as err:
            pack.p(str(err), "warn")
            continue
        pack.figure(suplots.use_course_chart(course, min_cell=mc))
        pack.notes((course.definition, *course.notes))
    cab = su.continuous_abstinence(cohort)
    if len(cab.table):
        pack.figure(suplots.abstinence_chart(cab, min_cell=mc))
        pack.table(su.abstinence_table(cab, **kw))
    pack.notes((cab.definition, *cab.notes))
    try:
        ur = su.urine_results(cohort, by=None)
        pack.figure(suplots.urine_chart(ur, group="All patients", min_cell=mc))
        pack.table(su.urine_table(ur, group="All patients", **kw))
        pack.notes((ur.definition, *ur.notes))
    except OutcomesError as err:
        pack.p(str(err), "warn")
    cs = su.courses(cohort)
    t = cs.table
    pack.table(pd.DataFrame({"measure": t["label"], "group": t["group"], "time window": t["window"],
                             "patients": [pack.count(n) for n in t["n"]],
                             "mean (95% CI)": [fmt.ci(e, lo, hi, 2) if not (pack.suppress and 0 < n < pack.min_cell)
                                               else "suppressed" for e, lo, hi, n in
                                               zip(t["estimate"], t["ci_low"], t["ci_high"], t["n"])]}))
    pack.notes((cs.definition, *cs.notes))


def _benchmarks(pack: _Pack, cohort: Cohort) -> None:
    """Rows with a like-for-like clinic figure first (chart and table, both missing-data bounds and the eligible /
    analysed / missing counts); the others folded away with the reason for each."""
    comp = benchmarks.compare(cohort)
    pack.figure(bplots.forest(comp, domain="efficacy", min_cell=pack.chart_min_cell, only_with_clinic=True))
    t = comp.table[comp.table["domain"] == "efficacy"]
    cells = bplots.clinic_cells(comp.table, min_cell=pack.chart_min_cell)
    with_fig, without = t[t["clinic_estimate"].notna()], t[t["clinic_estimate"].isna()]
    shown = [bplots.clinic_shown(cells, row) for _, row in with_fig.iterrows()]

    def other(row: pd.Series, ok: bool) -> str:
        b = bplots.other_bound(row) if ok else None
        return "—" if b is None else f"{fmt.ci(b[1], b[2], b[3]) if b[2] is not None else fmt.num(b[1], 1)} ({b[0]})"

    def count(key: tuple[str, object]) -> str:
        return cells.text(key) if key in cells.values else "—"

    pack.table(pd.DataFrame({
        "id": with_fig["id"], "metric": with_fig["metric"], "published": with_fig["published_text"],
        "status": with_fig["status_label"],
        "clinic (95% CI)": [fmt.ci(e, lo, hi) if ok else "suppressed" for e, lo, hi, ok in zip(
            with_fig["clinic_estimate"], with_fig["clinic_ci_low"], with_fig["clinic_ci_high"], shown)],
        "other missing-data bound": [other(r, ok) for (_, r), ok in zip(with_fig.iterrows(), shown)],
        "eligible": [count(("eligible", float(e))) if pd.notna(e) else "—" for e in with_fig["clinic_n_eligible"]],
        "analysed": [count(("n", i)) for i in with_fig["id"]],
        "missing": [count(("attrition", i)) for i in with_fig["id"]],
        "population": with_fig["population"], "timepoint": with_fig["timepoint"], "source": with_fig["citation"],
        "cautions": with_fig["cautions"]}))
    pack.parts.append(f"<details><summary>{len(without)} published figures without a like-for-like clinic figure, "
                      "and why</summary>")
    pack.table(pd.DataFrame({
        "id": without["id"], "metric": without["metric"], "published": without["published_text"],
        "status": without["status_label"], "why no clinic figure": without["clinic_reason"],
        "population": without["population"], "timepoint": without["timepoint"], "source": without["citation"]}))
    pack.parts.append("</details>")
    pack.notes(comp.notes)


def _safety(pack: _Pack, cohort: Cohort) -> None:
    rates = safety.adverse_event_rates(cohort)
    pack.figure(splots.adverse_events_chart(rates, unit_of_analysis="session", min_cell=pack.chart_min_cell))
    vit = safety.vital_sign_elevations(cohort)
    v = vit.table
    pack.table(pd.DataFrame({"unit": v["unit_of_analysis"], "measure": v["measure"], "route": v["route"],
                             "with readings": v["denominator"],
                             "share (95% CI)": [pack.rate(k, n, fmt.pct_ci(e, lo, hi, 1)) for k, n, e, lo, hi in
                                                zip(v["numerator"], v["denominator"], v["estimate"], v["ci_low"],
                                                    v["ci_high"])]}), counts=("with readings",))
    pack.notes(vit.notes)
    pub = safety.published_comparison(cohort)
    pack.figure(splots.published_comparison_chart(pub, min_cell=pack.chart_min_cell))
    pack.notes(pub.notes)


def _retention(pack: _Pack, cohort: Cohort, data: ValidatedExports) -> None:
    """Issue 22: retention cascade per program and protocol, time to dropout, initiation/engagement, boosters."""
    from analytics.outcomes import retention
    from analytics.report.plots import retention as rplots

    by = "program" if "program" in cohort.patients and cohort.patients["program"].notna().any() else None
    summary = retention.retention_summary(cohort, by=by)
    pack.figure(rplots.cascade_chart(summary.cascade))
    pack.table(rplots.cascade_table(summary.cascade))
    pack.p("Induction completed, per protocol")
    prot = summary.protocols
    pack.table(rplots.rate_table(prot.drop(columns="group").rename(columns={"protocol": "group"}),
                                 label="completed (95% CI)").assign(rule=prot["rule"].to_numpy()))
    pack.notes(summary.cascade.notes)
    d = summary.dropout
    pack.figure(rplots.dropout_figure(d))
    pack.table(rplots.medians_table(d.curves))
    pack.p(f"Left after the first session (no contact in the next {d.gap_days} days)")
    pack.table(rplots.rate_table(d.first_session, label="left (95% CI)"))
    report = data.files.get("sessions")
    visits = retention.visit_status_rates(report.not_analysed if report else {}, report.output_rows if report else 0)
    if visits.empty:
        pack.p("No-shows and cancellations: not recorded in this export (no visit status column).", "note")
    else:
        pack.table(rplots.visit_table(visits, min_cell=pack.chart_min_cell))
    pack.notes(d.notes)
    pack.p("Initiation and engagement")
    pack.table(rplots.rate_table(summary.initiation, label="reached (95% CI)", first="measure"))
    pack.p(retention.INITIATION_NOTE, "note")
    b = summary.boosters
    if b.curves is not None:
        pack.figure(rplots.booster_figure(b.curves))
    pack.table(rplots.rate_table(b.share, label="boosted by day 180 (95% CI)"))
    pack.table(rplots.phq9_booster_table(b))
    pack.notes(b.notes)


def _monitoring(pack: _Pack, cohort: Cohort) -> None:
    """Issue 22: BP before/at ~40 min/at discharge, minutes to discharge, sedation, dissociation, severity, action,
    serious events per 1,000 sessions, and the ketamine misuse watch counts."""
    from analytics.outcomes import monitoring
    from analytics.report.plots import monitoring as mplots

    mon = monitoring.session_monitoring(cohort)
    pack.p(mplots.serious_sentence(mon))
    for sentence in mplots.parts_sentence(mon):
        pack.p(sentence, "note")
    if len(mon.blood_pressure):
        pack.figure(mplots.blood_pressure_chart(mon))
        pack.table(mplots.blood_pressure_table(mon))
    if mon.recorded["minutes"]:
        pack.p("Minutes until ready to leave")
        pack.table(mplots.quantile_table(mon.minutes, "minutes"))
    if mon.recorded["dissociation"]:
        pack.p("Dissociation (CADSS-6, 0–24)")
        pack.table(mplots.quantile_table(mon.dissociation, "score"))
    for rec, table, col, label in (("sedation", mon.sedation, "score", "MOAA/S sedation"),
                                   ("severity", mon.severity, "level", "worst event"),
                                   ("action", mon.action, "level", "action taken")):
        if mon.recorded[rec]:
            pack.table(mplots.distribution_table(table, col, label))
    pack.notes(mon.notes)
    from analytics.outcomes.attention import MISUSE_REASONS, misuse_counts

    pack.p("Ketamine misuse watch: patients with each signal (a patient may have several; the list by patient number "
           "is on the dashboard's Needing attention page, never in this pack)")
    pack.table(misuse_counts(cohort))
    pack.p("Signals: " + "; ".join(MISUSE_REASONS.values()) + ". Ketamine-positive urine reads followups.csv "
           "urine_substances; take-home issues and urinary symptoms read the sessions columns take_home_issue and "
           "urinary_symptoms.", "note")


def _subgroups(pack: _Pack, cohort: Cohort) -> None:
    result = who_benefits(cohort)
    pack.figure(subgroup_forest(result, outcome="relapse_hr", min_cell=pack.chart_min_cell))
    pack.figure(subgroup_forest(result, outcome="phq9_slope_difference", min_cell=pack.chart_min_cell))
    pack.notes(result.notes)


def _spc(pack: _Pack, cohort: Cohort) -> None:
    for kpi in ("induction_completion", "followup_90"):
        chart = qi.control_chart(cohort, kpi=kpi)
        pack.figure(qplots.control_chart(chart, min_cell=pack.chart_min_cell))
        pack.notes(chart.notes)
    for unit in ("site", "clinician"):
        result = qi.funnel(cohort, unit=unit, kpi="induction_completion")
        pack.figure(qplots.funnel_plot(result, min_cell=pack.chart_min_cell))
        pack.notes(result.notes)


# sections in the order of the pack; the number is its typical share of the work (longest first when run in parallel)
_Section = tuple[str, Callable[["_Pack"], None], float]


def _section_html(section: _Section, pack: _Pack) -> list[str]:
    name, body, _ = section
    one = replace(pack, parts=[])
    one.section(name, lambda: body(one))
    return one.parts


def _run_sections(sections: list[_Section], pack: _Pack, workers: int,
                  progress: Callable[[float, str], None] | None) -> list[list[str]]:
    """HTML of each section, in order. One process: ``progress`` names each section as it starts. With ``workers``
    > 1 the sections run in forked processes, longest first (:func:`analytics.report.parallel.run_all`), and ``progress``
    names each as it finishes. The pack is the same either way."""
    n = len(sections)
    if workers <= 1:
        out = []
        for i, section in enumerate(sections):
            if progress:
                progress(i / (n + 1), section[0])
            out.append(_section_html(section, pack))
        return out
    order = sorted(range(n), key=lambda i: -sections[i][2])
    finished = 0

    def tick(k: int) -> None:
        nonlocal finished
        finished += 1
        if progress:
            progress(finished / (n + 1), f"{sections[order[k]][0]} (done)")

    if progress:
        progress(0.0, f"{n} sections in {workers} processes")
    parts = run_all([lambda i=i: _section_html(sections[i], pack) for i in order], workers=workers, on_done=tick)
    by_section = dict(zip(order, parts))
    return [by_section[i] for i in range(n)]


def build_report(data: ValidatedExports, settings: Settings, *, filters: Filters | None = None,
                 by: str | None = "program", reference: str | None = None, time: str = "auto",
                 title: str = "KAP Outcomes: quality-improvement meeting pack",
                 progress: Callable[[float, str], None] | None = None, workers: int = 1) -> str:
    """The whole meeting pack as one HTML string (every section; a section that cannot be computed says why).

    ``workers`` > 1 computes the sections in that many forked processes (the command line does; the app, a
    threaded server, does not fork).
    """
    filters = filters or Filters()
    cohort = apply_filters(build_cohort(data, settings), filters)
    column = group_column(by)
    reference = survival.check_reference(cohort, by=column, reference=reference)  # --reference: a group, or exit 2
    pack = _Pack(parts=[], suppress=settings.suppress, min_cell=settings.min_cell)
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    pack.parts.append(f"<h1>{html.escape(title)}</h1>")
    if not settings.suppress:
        pack.p("SUPPRESSION OFF: counts from 1 to 10 are visible. Internal analyst use only; do not share.", "warn")
    pack.p(f"Generated {now}. {filters.describe()}. {settings.describe()} Small cells: counts from 1 to "
           f"{settings.min_cell - 1} are shown as <{settings.min_cell}"
           f"{'' if settings.suppress else ' (OFF in this report)'}.", "info")
    pack.parts.append("<nav>" + "".join(f'<a href="#{s.lower().replace(" ", "-")}">{html.escape(s)}</a>'
                                         for s in SECTIONS) + "</nav>")
    sections: list[_Section] = [
        ("Data quality", lambda p: _data_quality(p, data, cohort), 0.0),
        ("Key indicators", lambda p: _kpis(p, cohort), 0.4),
        ("Patient flow", lambda p: _flow(p, cohort, data), 0.3),
        ("Retention", lambda p: _retention(p, cohort, data), 0.4),
        ("Time to return to use", lambda p: _survival(p, cohort, column, reference), 0.5),
        ("Symptom trajectories", lambda p: _trajectories(p, cohort, time), 2.3),
        ("Substance use", lambda p: _substance_use(p, cohort), 1.0),
        ("Versus published", lambda p: _benchmarks(p, cohort), 1.9),
        ("Session safety", lambda p: _safety(p, cohort), 1.2),
        ("Session monitoring", lambda p: _monitoring(p, cohort), 0.3),
        ("Who benefits", lambda p: _subgroups(p, cohort), 1.4),
        ("Control charts and funnels", lambda p: _spc(p, cohort), 0.5),
    ]
    for parts in _run_sections(sections, pack, workers, progress):
        pack.parts.extend(parts)
    pack.h2("Methods")
    pack.notes(cohort.notes)
    for reason, n in cohort.exclusions.items():
        pack.p(f"Excluded: {reason}: {pack.count(n)}", "note")
    pack.p(f"Software: {_versions()}. Survival estimates are checked against R's survival package and mixed "
           "models against lme4 (tests/reference/ in the source).", "note")
    if progress:
        progress(1.0, "done")
    body = "\n".join(pack.parts)
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style><script type=\"text/javascript\">{get_plotlyjs()}</script></head>"
            f"<body>{body}</body></html>")


def write_report(data: ValidatedExports, settings: Settings, out: Path, *, filters: Filters | None = None,
                 by: str | None = "program", reference: str | None = None, workers: int = 1,
                 time: str = "auto") -> Path:
    """Write :func:`build_report` to ``out`` (UTF-8)."""
    text = build_report(data, settings, filters=filters, by=by, reference=reference, workers=workers, time=time)
    out = Path(out)
    out.write_text(text, encoding="utf-8")
    return out
