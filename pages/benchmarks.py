"""Versus published: each published figure beside the clinic's figure with the same definition and window."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from analytics import formatting as fmt
from analytics.errors import OutcomesError
from analytics.outcomes import benchmarks
from analytics.report.plots.benchmarks import clinic_cells, clinic_shown, forest
from pages._shared import show_notes, shown_text, sidebar_settings, view_cohort

sidebar_settings()
cohort, filters = view_cohort()
st.header("Versus published")
st.write("Are we getting what the trials and real-world clinics got? Each published figure is shown beside the "
         "clinic's own figure computed **with the same definition and window**, or a sentence saying why the "
         "clinic's data cannot give a like-for-like figure. Trials enrolled selected patients; read every row "
         "with its population and cautions.")

c1, c2 = st.columns(2)
substance = c1.selectbox("Clinic subpopulation", options=[None, "alcohol", "cocaine", "opioids", "methamphetamine",
                                                          "cannabis"],
                         format_func=lambda s: "each benchmark's own population" if s is None else f"{s} only",
                         key="bm_substance",
                         help="By default each benchmark is matched to its own population (e.g. alcohol patients "
                              "for KARE). Choose a substance to restrict every clinic figure to it.")
view = c2.radio("View", options=["chart", "table"], horizontal=True, key="bm_view")
try:
    with st.spinner("Computing like-for-like clinic figures…"):
        comp = benchmarks.compare(cohort, substance=substance)
except OutcomesError as err:
    st.warning(shown_text(str(err)))
    st.stop()

table = comp.table[comp.table["domain"] == "efficacy"]
shown = cohort.settings.suppress
min_cell = cohort.settings.min_cell if shown else None
cells = clinic_cells(comp.table, min_cell=min_cell)
if view == "chart":
    st.plotly_chart(forest(comp, domain="efficacy", min_cell=min_cell), width="stretch")
    st.caption("Dots are point estimates, lines their 95% confidence intervals (published CIs where the source "
               "gives one). Differences between trial arms (KARE) are drawn on their own axis: they are not "
               "levels a clinic can reach on its own.")
else:
    ok = [clinic_shown(cells, row) for _, row in table.iterrows()]
    out = pd.DataFrame({
        "benchmark": table["id"], "metric": table["metric"], "group": table["group"],
        "published": table["published_text"],
        "clinic": ["suppressed (<11)" if not k else fmt.num(e, 2) if lo is None or pd.isna(lo) else fmt.ci(e, lo, hi)
                   for e, lo, hi, k in zip(table["clinic_estimate"], table["clinic_ci_low"], table["clinic_ci_high"],
                                           ok)],
        "clinic n": [cells.text(("n", i)) if ("n", i) in cells.values else "—" for i in table["id"]],
        "why no clinic figure": [shown_text(r) for r in table["clinic_reason"].fillna("")],
        "source": table["status_label"],
    })
    st.dataframe(out, hide_index=True, width="stretch")

def _text(value: object) -> str:
    return "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)


st.subheader("Sources, populations and cautions")
for _, row in table.iterrows():
    label = f"{row['id']}: {row['metric']} ({row['short_citation']})"
    with st.expander(label):
        st.markdown(f"**Published:** {row['published_text']} · **status:** {row['status_label']}")
        st.markdown(f"**Definition:** {row['definition']}  \n**Timepoint:** {row['timepoint']}  \n"
                    f"**Population:** {row['population']}")
        if _text(row["link"]):
            st.markdown(f"**Source:** [{row['citation']}]({row['link']})")
        else:
            st.markdown(f"**Source:** {row['citation']}")
        if _text(row["clinic_definition"]):
            st.markdown(f"**Clinic figure:** {shown_text(row['clinic_definition'])}")
        if _text(row["clinic_reason"]):
            st.info(shown_text(row["clinic_reason"]))
        for caution in _text(row["cautions"]).split("\n"):
            if caution.strip():
                st.caption(f"Caution: {caution}")
show_notes(comp.notes)
