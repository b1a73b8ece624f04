"""Who benefits: the program comparison within subgroups (exploratory)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from analytics import formatting as fmt
from analytics.errors import OutcomesError
from analytics.outcomes.subgroups import CAUTION, LABELS, page_arms, who_benefits
from analytics.report.plots.subgroups import level_estimable, subgroup_cells, subgroup_forest
from pages._shared import Key, chart, show_error, show_notes, show_table
from pages._sidebar import sidebar_settings, view_cohort

sidebar_settings()
cohort, filters = view_cohort()
st.header("Who benefits?")
st.write("Does adding therapy to ketamine go with better outcomes for some patients more than others? Each row "
         "compares the two programs **within** one subgroup; the interaction p-value asks whether the "
         "difference between programs varies across that variable's subgroups.")
st.warning(CAUTION, icon="⚠️")

programs, default_treated, _ = page_arms(cohort)
if len(programs) < 2:
    st.info("This page needs two programs to compare; the data has "
            f"{len(programs)}. Add a 'program' column to patients.csv.")
    st.stop()
c1, c2 = st.columns(2)
treated = c1.selectbox("Program", options=programs,
                       index=programs.index(default_treated),
                       key="sg_treated")
control = c2.selectbox("compared with", options=[p for p in programs if p != treated], key="sg_control")
# remembered per session (never in a shared cache) for the last few views: same upload (the very cohort object),
# settings, view filters and programs; narrowing the view and widening it again refits nothing
key = ("who_benefits", cohort.settings, filters, treated, control)
base = st.session_state.get(Key.COHORT)
kept = [e for e in st.session_state.get("sg_results", []) if e[1] is base]
result = next((r for k, _, r in kept if k == key), None)
if result is None:
    try:
        with st.spinner("Fitting a Cox model and a mixed model in every subgroup…"):
            result = who_benefits(cohort, treated=treated, control=control)
    except OutcomesError as err:
        show_error(err)
        st.stop()
    st.session_state["sg_results"] = [*kept, (key, base, result)][-4:]
min_cell = cohort.settings.min_cell if cohort.settings.suppress else None

tab1, tab2, tab3 = st.tabs(["Return to use", "PHQ-9 change", "Table"])
chart(subgroup_forest, result, outcome="relapse_hr", min_cell=min_cell, where=tab1)
chart(subgroup_forest, result, outcome="phq9_slope_difference", min_cell=min_cell, where=tab2)
t = result.table
cells = subgroup_cells(result, min_cell=min_cell)
keys = list(zip(t["outcome"], t["variable"], t["level"]))
show_table(pd.DataFrame({
    "outcome": t["outcome"].map({"relapse_hr": "return to use (HR)", "phq9_slope_difference": "PHQ-9 slope diff."}),
    "subgroup": [f"{LABELS.get(v, v)}: {lv}" for v, lv in zip(t["variable"], t["level"])],
    f"n {result.treated}": [cells.text(("n_treated", *k)) for k in keys],
    f"n {result.control}": [cells.text(("n_control", *k)) for k in keys],
    "estimate (95% CI)": [fmt.ci(e, lo, hi, 3) if level_estimable(cells, row) else "suppressed (small group)"
                          for (_, row), e, lo, hi in zip(t.iterrows(), t["estimate"], t["ci_low"], t["ci_high"])],
    "adjusted for": t["adjusted"],
    "interaction p": [fmt.p_value(p) for p in t["interaction_p"]],
    "Holm-adjusted p": [fmt.p_value(p) for p in t["interaction_p_holm"]],
    "BH-adjusted p": [fmt.p_value(p) for p in t["interaction_p_bh"]]}), where=tab3, hide_index=True, width="stretch")
show_notes(result.notes + (cells.notes if cohort.settings.suppress else ()))
