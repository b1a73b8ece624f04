"""Substance use page: days abstinent and heavy days over time, 30-day continuous abstinence at 6 and 12 months,
urine results by substance, and the AUDIT-C / BAM / craving / GAD-7 courses (numbers from
analytics/outcomes/substance_use.py)."""

from __future__ import annotations

import streamlit as st

from analytics.errors import OutcomesError
from analytics.outcomes import substance_use as su
from analytics.report.plots import substance_use as splots
from pages._shared import chart, show_error, show_notes, show_table
from pages._sidebar import sidebar_settings, view_cohort

sidebar_settings()
cohort, filters = view_cohort()
st.header("Substance use")
st.write("How much patients use after their first ketamine session (day 0): the share of days without any use and "
         "of heavy-drinking days, abstinence over the 30 days before the 6- and 12-month marks, urine results by "
         "substance, and the AUDIT-C, Brief Addiction Monitor, craving and anxiety scores. Where a patient keeps a "
         "daily use log, it is used instead of the follow-up answers (it records each day, not a recall).")
min_cell = cohort.settings.min_cell if cohort.settings.suppress else None
kw = {"min_cell": cohort.settings.min_cell, "enabled": cohort.settings.suppress}
by = st.radio("Compare by", options=list(su.GROUPINGS), format_func=lambda g: su.GROUPINGS[g].capitalize(),
              horizontal=True, key="su_by")

st.subheader("Days abstinent over time")
try:
    with st.spinner("Fitting the mixed model…"):
        pda = su.use_course(cohort, measure="pda", by=by)
    chart(splots.use_course_chart, pda, min_cell=min_cell)
    st.caption(pda.definition + " Lines: model-based mean with 95% band; circles: observed means per time window.")
    show_notes(pda.notes)
except OutcomesError as err:
    show_error(err)

st.subheader("Heavy-drinking days (alcohol patients)")
try:
    with st.spinner("Fitting the mixed model…"):
        heavy = su.use_course(cohort, measure="heavy", by=by)
    chart(splots.use_course_chart, heavy, min_cell=min_cell)
    st.caption(heavy.definition)
    show_notes(heavy.notes)
except OutcomesError as err:
    show_error(err)

st.subheader("30-day continuous abstinence at 6 and 12 months")
try:
    cab = su.continuous_abstinence(cohort, by=by)
    if cab.table.empty:
        st.info("No patient has been followed to day 180 yet.")
    else:
        chart(splots.abstinence_chart, cab, min_cell=min_cell)
        show_table(su.abstinence_table(cab, **kw), hide_index=True, width="stretch")
    st.caption(cab.definition + " 'Missing' = neither abstinence nor use can be confirmed for all 30 days: the two "
               "bounds differ most when many are missing, and the truth lies between them.")
    show_notes(cab.notes)
except OutcomesError as err:
    show_error(err)

st.subheader("Urine results by substance")
try:
    ur = su.urine_results(cohort, by=by)
    group = st.selectbox("Group", options=ur.groups, key="su_urine_group")
    chart(splots.urine_chart, ur, group=group, min_cell=min_cell)
    show_table(su.urine_table(ur, group=group, **kw), hide_index=True, width="stretch")
    st.caption(ur.definition + " The chart leaves out substances never found in this group (100% negative); the table "
               "lists every substance. 'Hidden' cells: the small-cell rule (a count of 1–10, or the positives "
               "left when it is subtracted).")
    show_notes(ur.notes)
except OutcomesError as err:
    show_error(err)

st.subheader("AUDIT-C, Brief Addiction Monitor, craving and anxiety")
try:
    cs = su.courses(cohort, by=by)
    if cs.recorded:
        measure = st.selectbox("Measure", options=cs.recorded, format_func=su.COURSES.get, key="su_course")
        chart(splots.course_chart, cs, measure=measure, min_cell=min_cell)
    st.caption(cs.definition)
    show_notes(cs.notes)
except OutcomesError as err:
    show_error(err)
