"""Retention: the cascade from starting ketamine to follow-up, time to dropout, initiation/engagement, boosters."""

from __future__ import annotations

import streamlit as st

from analytics.errors import OutcomesError
from analytics.outcomes import retention
from analytics.report.plots import retention as rplots
from pages._shared import chart, exports, show_error, show_notes, show_table
from pages._sidebar import sidebar_settings, view_cohort

sidebar_settings()
cohort, filters = view_cohort()
st.header("Retention")
st.write("How many patients who start ketamine complete induction, take part in integration or therapy, come to "
         "their follow-ups and stay in contact, by program. Every share counts only patients whose window has "
         "closed by the latest date in the data; patients still inside a window are 'not yet judged', never missing.")
by = retention.default_by(cohort)
gap = st.number_input("Dropout: no contact for this many days", 30, 365, cohort.settings.dropout_gap_days, step=15,
                      key="ret_gap", help="A patient drops out at the first contact followed by no contact (session "
                                          "or follow-up) in this many days.")
try:
    with st.spinner("Following every patient from the first session…"):
        summary = retention.retention_summary(cohort, by=by, gap_days=int(gap))
except OutcomesError as err:
    show_error(err)
    st.stop()

st.subheader("Retention cascade")
chart(rplots.cascade_chart, summary.cascade)
show_table(rplots.cascade_table(summary.cascade), hide_index=True, width="stretch")
st.markdown("**Induction completed, per protocol**")
show_table(rplots.rate_table(summary.protocols.drop(columns="group").rename(columns={"protocol": "group"}),
                             label="completed (95% CI)").assign(rule=summary.protocols["rule"].to_numpy()),
           hide_index=True, width="stretch")
show_notes(summary.cascade.notes)

st.subheader("Time to dropout")
d = summary.dropout
c1, c2 = st.columns([3, 2])
chart(rplots.dropout_figure, d, where=c1)
c2.markdown("**Median time to dropout**")
show_table(rplots.medians_table(d.curves), where=c2, hide_index=True)
c2.markdown(f"**Left after the first session** (no contact in the next {d.gap_days} days)")
show_table(rplots.rate_table(d.first_session, label="left (95% CI)"), where=c2, hide_index=True)
data = exports()
report = data.files.get("sessions") if data is not None else None
visits = retention.visit_status_rates(report.not_analysed if report else {},
                                      report.output_rows if report else 0)
if visits.empty:
    c2.caption("No-shows and cancellations: not recorded in this export (no visit status column).")
else:
    c2.markdown("**Booked visits not attended** (whole export, not filtered)")
    show_table(rplots.visit_table(visits, min_cell=cohort.settings.min_cell if cohort.settings.suppress else None),
               where=c2, hide_index=True)
show_notes(d.notes)

st.subheader("Initiation and engagement")
show_table(rplots.rate_table(summary.initiation, label="reached (95% CI)", first="measure"), hide_index=True,
           width="stretch")
st.caption(retention.INITIATION_NOTE)

st.subheader("Boosters after induction")
b = summary.boosters
if b.curves is not None:
    c3, c4 = st.columns([3, 2])
    chart(rplots.booster_figure, b.curves, where=c3)
    c4.markdown("**Boosted by day 180**")
    show_table(rplots.rate_table(b.share, label="boosted (95% CI)"), where=c4, hide_index=True)
    c4.markdown("**PHQ-9 in the 4 weeks before and after the first booster**")
    show_table(rplots.phq9_booster_table(b), where=c4, hide_index=True)
show_notes(b.notes)
