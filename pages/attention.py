"""Patients needing attention: active patients off their own expected PHQ-9 course, with a missed follow-up, a
recent safety flag or a ketamine misuse signal, ranked."""

from __future__ import annotations

import streamlit as st

from analytics import formatting as fmt
from analytics.errors import OutcomesError
from analytics.outcomes.attention import REASON_WORDS, attention_counts, misuse_counts, needing_attention
from analytics.privacy.safe_export import to_safe_csv
from pages._auth import audit_export, require_role
from pages._shared import show_error, show_notes, show_table
from pages._sidebar import sidebar_settings, view_cohort

require_role("admin", "analyst", "clinician")
sidebar_settings()
cohort, filters = view_cohort()
st.header("Patients needing attention")
st.write("For the clinical team's own follow-up, most urgent first: active patients whose latest PHQ-9 is well "
         "above their **own** expected course, who missed a follow-up, who had a very high blood pressure or a "
         "severe event in a recent session, or with a sign of ketamine misuse. Patients are listed by their clinic "
         "patient number only.")
c1, c2 = st.columns(2)
margin = c1.slider("Flag a PHQ-9 this many points above the patient's own expected course", 3, 10, 5,
                   key="att_margin", help="5 points is the minimal clinically important change of the PHQ-9 "
                                          "(Löwe 2004); the score must also lie above the course's 95% prediction "
                                          "interval.")
active = c2.number_input("Active = a session or assessment in the last (days)", 30, 365,
                         cohort.settings.attention_active_days, step=15, key="att_active")
try:
    with st.spinner("Comparing each patient with their own expected course…"):
        attention = needing_attention(cohort, phq9_margin=margin, active_days=int(active))
except OutcomesError as err:
    show_error(err)
    st.stop()

s = cohort.settings
total, counts = attention_counts(attention.table, min_cell=s.min_cell, enabled=s.suppress)
m1, m2 = st.columns(2)
m1.metric("Patients flagged", total)
share_ok = not s.suppress or attention.n_flagged == 0 or attention.n_flagged >= s.min_cell
m2.metric(f"Share of the {fmt.count(attention.n_active)} active patients",
          fmt.pct(attention.flagged_share, 1) if share_ok else "suppressed")
show_table(counts.assign(reason=counts["reason"].map(REASON_WORDS).fillna(counts["reason"])), hide_index=True)
bp = attention.by_patient
if bp.empty:
    st.info(f"No active patient needs attention by these rules (of {fmt.count(attention.n_active)} active patients).")
table = bp[["rank", "patient_id", "reasons", "priority"]].assign(latest=bp["latest"].dt.strftime("%Y-%m-%d"))
show_table(table, hide_index=True, width="stretch", height=420,
           column_config={"reasons": st.column_config.TextColumn(width="large"),
                          "patient_id": st.column_config.TextColumn("patient")})
st.download_button("Download the list (CSV) for the clinic's follow-up",
                   data=lambda: to_safe_csv(table),  # made on the click only (runs on another thread)
                   file_name="kap-outcomes-attention.csv", mime="text/csv",
                   on_click=audit_export, args=("patients needing attention (CSV)",))
st.markdown("**Ketamine misuse watch** (patients with each signal, whole view)")
show_table(misuse_counts(cohort), hide_index=True)
show_notes(attention.notes)
