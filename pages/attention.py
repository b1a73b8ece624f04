"""Patients needing attention: off their expected PHQ-9 course, a missed follow-up, or a safety flag."""

from __future__ import annotations

import streamlit as st

from analytics.errors import OutcomesError
from analytics.outcomes import qi
from analytics.outcomes.attention import attention_counts, expected_phq9
from analytics.privacy.safe_export import to_safe_csv
from pages._auth import audit_export, require_role
from pages._shared import show_error, show_notes, show_table, shown_markdown, sidebar_settings, view_cohort

require_role("admin", "analyst", "clinician")
sidebar_settings()
cohort, filters = view_cohort()
st.header("Patients needing attention")
st.write("For the clinical team's own follow-up: patients whose latest PHQ-9 is well above where the model "
         "expects them, who missed a follow-up that fell due recently, or who had a safety flag in a recent "
         "session. Patients are listed by their clinic patient number only.")
margin = st.slider("Flag a PHQ-9 this many points above expected", 3, 10, 5, key="att_margin",
                   help="5 points is the minimal clinically important change of the PHQ-9 (Löwe 2004).")
try:
    with st.spinner("Comparing each patient with the expected course…"):
        expected, note = expected_phq9(cohort)
        attention = qi.patients_needing_attention(cohort, expected=expected, phq9_margin=margin)
except OutcomesError as err:
    show_error(err)
    st.stop()

table = attention.by_patient
total, counts = attention_counts(attention.table, min_cell=cohort.settings.min_cell, enabled=cohort.settings.suppress)
st.metric("Patients flagged", total)
show_table(counts, hide_index=True)
show_table(table, hide_index=True, width="stretch", height=420)
st.download_button("Download the list (CSV) for the clinic's follow-up",
                   data=lambda: to_safe_csv(table),  # made on the click only (runs on another thread)
                   file_name="kap-outcomes-attention.csv", mime="text/csv",
                   on_click=audit_export, args=("patients needing attention (CSV)",))
st.caption(shown_markdown(note))
show_notes(attention.notes)
