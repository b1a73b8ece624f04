"""Overview (landing page): KPI tiles with period-over-period change, patient flow, control charts, funnels."""

from __future__ import annotations

import math

import streamlit as st

from analytics import formatting as fmt
from analytics.errors import OutcomesError
from analytics.outcomes import qi, survival
from analytics.outcomes.memo import once
from analytics.privacy.counts import mask_text, rate_is_safe
from analytics.privacy.suppression import fraction_text
from analytics.report.plots import qi as qplots
from analytics.report.plots.survival import dropout_keys, rules_table, sensitivity_cells
from pages._auth import audit_export
from pages._shared import chart, exports, show_error, show_notes, show_table
from pages._sidebar import sidebar_settings, view_cohort

sidebar_settings()
cohort, filters = view_cohort()
st.header("Overview")
st.caption(fmt.escape_markdown(filters.describe() + ". " + cohort.settings.describe()))  # names of sites, programs

r1, r2 = st.columns([1, 3])
if r1.button("Prepare meeting report", icon=":material/description:", key="report_build",
             help="One self-contained HTML file with every chart and table, for the QI meeting."):
    from analytics.report.pack import build_report

    bar = r2.progress(0.0, text="Building the report…")
    try:
        html_text = build_report(exports(), cohort.settings, filters=filters,
                                 progress=lambda f, name: bar.progress(min(f, 1.0), text=f"Building: {name}"))
        st.session_state["report_html"] = html_text.encode("utf-8")
        st.session_state["report_view"] = (cohort.settings, filters)
        state = "on" if cohort.settings.suppress else "OFF"
        audit_export(f"meeting report ({filters.describe()}; suppression {state})")
    except OutcomesError as err:
        show_error(err)
    bar.empty()
if st.session_state.get("report_html") and st.session_state.get("report_view") == (cohort.settings, filters):
    # the pack is already built (in this session only): plain bytes, registered for this session and removed on
    # sign-out; a callable here made the browser's download depend on a second round trip that could stall
    r2.download_button("Download meeting report (HTML)", data=st.session_state["report_html"],
                       file_name="kap-outcomes-meeting-report.html", mime="text/html", key="report_download",
                       type="primary")

(a_start, a_end), (b_start, b_end) = qi.default_periods(cohort)
with st.expander(f"Periods compared: {a_start:%d %b %Y}–{a_end:%d %b %Y} vs {b_start:%d %b %Y}–{b_end:%d %b %Y}"):
    c1, c2 = st.columns(2)
    pa = c1.date_input("Earlier period", value=(a_start, a_end), key="ov_period_a")
    pb = c2.date_input("Later period", value=(b_start, b_end), key="ov_period_b")
    if len(pa) == 2 and len(pb) == 2:
        (a_start, a_end), (b_start, b_end) = tuple(pa), tuple(pb)

try:
    table = qi.kpis(cohort, period_a=(a_start, a_end), period_b=(b_start, b_end))
except OutcomesError as err:
    show_error(err)
    st.stop()

shown = cohort.settings.suppress
min_cell = cohort.settings.min_cell if shown else None


def _value(row) -> str:
    if row["scale"] == "count":
        return mask_text(row["estimate"], enabled=shown)
    if shown and not rate_is_safe(row["numerator"], row["denominator"], complement=row["scale"] == "proportion"):
        return "suppressed (<11)"
    if row["scale"] == "per_100_sessions":
        return "not recorded" if math.isnan(float(row["estimate"])) else f"{fmt.num(row['estimate'], 1)} per 100"
    return fmt.pct(row["estimate"])


later = table.table[table.table["period"] == "b"].set_index("kpi")
earlier = table.table[table.table["period"] == "a"].set_index("kpi")
changes = table.changes.set_index("kpi")
cols = st.columns(4)
for i, kpi in enumerate(later.index):
    row, before = later.loc[kpi], earlier.loc[kpi]
    change = changes.loc[kpi]
    delta = None
    if _value(row) not in ("suppressed (<11)", "<11") and _value(before) not in ("suppressed (<11)", "<11"):
        delta = (fmt.num(change["change"], 0) if row["scale"] == "count" else
                 f"{fmt.num(change['change'], 1)} per 100" if row["scale"] == "per_100_sessions" else
                 f"{100 * change['change']:+.0f} points")
    with cols[i % 4]:
        st.metric(row["label"], _value(row), delta=delta, delta_color="off" if kpi == "ae_rate" else "normal",
                  help=row["definition"])
        if row["scale"] != "count":
            num, den = fraction_text(row["numerator"], row["denominator"], min_cell=cohort.settings.min_cell,
                                     enabled=shown)
            st.caption(f"{num} of {den} · before: {_value(before)}")
st.caption("Each tile: the later period, its change from the earlier period, and its numerator and denominator. "
           "Whether a change is signal or noise: see the control charts below.")
show_notes(table.notes)

st.markdown("**Return to use, two dropout rules side by side** (Kaplan–Meier, all patients in the view)")
try:
    sens = survival.dropout_sensitivity(cohort)
    cells = once(sens, ("cells", min_cell), lambda: sensitivity_cells(cohort, sens, None, min_cell=min_cell))
    show_table(rules_table(sens.table, sens.milestones, cells, min_cell=min_cell, keys=dropout_keys(sens),
                           days=(90,), early=True), hide_index=True, width="stretch")
    st.caption(fmt.escape_markdown(sens.rule.describe()) + " Dropout censored: what the observed returns to use "
               "say; dropout = return to use: every dropout counted as a return to use (early dropouts on day "
               f"{sens.rule.first_followup_day}, or their last session if later), a pessimistic bound. Details on "
               "the Time to return to use page.")
except OutcomesError as err:
    show_error(err)

st.subheader("Patient flow")
try:
    flow = qi.load_flow(cohort, exports())  # kept with the cohort (the warm-up may have drawn it already)
    chart(qplots.flow_diagram, flow, min_cell=min_cell)
    cells = qplots.flow_cells(flow, min_cell=min_cell)
    losses = flow.losses.assign(n=[cells.text(("loss", s, r)) for s, r in zip(flow.losses["step"],
                                                                             flow.losses["reason"])])
    show_table(losses, hide_index=True)
    show_notes(cells.notes if shown else ())
except OutcomesError as err:
    show_error(err)

st.subheader("Signal or noise? Control chart")
labels = {k: qi.kpi_label(k) for k in qi.SPC_KPIS}
kpi = st.selectbox("Rate", options=list(labels), format_func=labels.get, key="ov_spc_kpi")
try:
    spc = qi.control_chart(cohort, kpi=kpi)
    chart(qplots.control_chart, spc, min_cell=min_cell)
    point = spc.interval  # "month", or "quarter" when most months are too small to show
    st.caption(("By quarter: most months have too few patients to show under the small-cell rule. "
                if point == "quarter" else "") + "3-sigma limits around the centre line. Flagged points break a run "
               "rule (outside the limits, 8 in a row on one side, 6 rising or falling): look for a cause. Points "
               "inside the limits are ordinary variation: do not react to them."
               + (f" {point.capitalize()}s with a count from 1 to 10 behind the rate (or hidden to protect one) are "
                  "left out (small-cell rule)." if shown else ""))
    show_notes(spc.notes)
except OutcomesError as err:
    show_error(err)

st.subheader("Funnel plots: clinicians and sites")
f1, f2 = st.columns(2)
unit = f1.radio("Compare", options=["clinician", "site"], horizontal=True, key="ov_funnel_unit")
fkpi = f2.selectbox("Rate", options=list(qi.PATIENT_KPIS), format_func=labels.get, key="ov_funnel_kpi")
try:
    result = qi.funnel(cohort, unit=unit, kpi=fkpi)
    chart(qplots.funnel_plot, result, min_cell=min_cell)
    st.caption("Each point is one unit; the funnel is where units would fall by chance alone (95% dashed, 99.8% "
               "solid), wider for smaller units. Use it instead of a ranking table: only points outside the "
               "funnel deserve a closer look."
               + (" Units with a count from 1 to 10 behind the rate (or hidden to protect one) are left out and "
                  "named under the chart (small-cell rule)." if shown else ""))
    show_notes(result.notes)
except OutcomesError as err:
    show_error(err)

