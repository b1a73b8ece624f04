"""Versus published: each published figure beside the clinic's figure with the same definition and window."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from analytics import formatting as fmt
from analytics.errors import OutcomesError
from analytics.outcomes import benchmarks
from analytics.report.plots.benchmarks import clinic_cells, clinic_shown, forest, other_bound
from pages._shared import chart, show_error, show_notes, show_table, shown_markdown, shown_text
from pages._sidebar import sidebar_settings, view_cohort

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
coverage = st.slider("Coverage a clinic figure needs (% of eligible patients whose assessments cover the window)",
                     min_value=0, max_value=100, value=70, step=5, key="bm_coverage",
                     help="Below it, the row says why there is no like-for-like figure: the figure would be decided "
                          "by who happened to be assessed inside the benchmark's window.")
try:
    with st.spinner("Computing like-for-like clinic figures…"):
        comp = benchmarks.compare(cohort, substance=substance, min_share=coverage / 100)
except OutcomesError as err:
    show_error(err)
    st.stop()

everything = comp.table[comp.table["domain"] == "efficacy"]
shown = cohort.settings.suppress
min_cell = cohort.settings.min_cell if shown else None
cells = clinic_cells(comp.table, min_cell=min_cell)
has_figure = everything["clinic_estimate"].notna()
table, without = everything[has_figure], everything[~has_figure]
st.caption(f"{len(table)} of {len(everything)} published figures have a like-for-like clinic figure; they come first. "
           "The others, with the reason for each, are folded away below.")


def _bound_text(row: pd.Series) -> str:
    other = other_bound(row)
    if other is None:
        return "—"
    rule, est, lo, hi = other
    return f"{fmt.ci(est, lo, hi, 1) if lo is not None else fmt.num(est, 1)} ({rule})"


if view == "chart":
    chart(forest, comp, domain="efficacy", min_cell=min_cell, only_with_clinic=True)
    st.caption("Diamonds are published figures, filled circles the clinic's figure computed the same way, each with "
               "its 95% confidence interval; an open circle is the clinic's figure under the other missing-data rule "
               "(both bounds). Under each row: patients analysed of those eligible, and those without the data. "
               "Differences between trial arms (KARE) are drawn on their own axis: they are not levels a clinic can "
               "reach on its own.")
else:
    ok = [clinic_shown(cells, row) for _, row in table.iterrows()]
    show_table(pd.DataFrame({
        "benchmark": table["id"], "metric": table["metric"], "group": table["group"],
        "published": table["published_text"],
        "clinic": ["suppressed (<11)" if not k else fmt.num(e, 2) if lo is None or pd.isna(lo) else fmt.ci(e, lo, hi)
                   for e, lo, hi, k in zip(table["clinic_estimate"], table["clinic_ci_low"], table["clinic_ci_high"],
                                           ok)],
        "other missing-data bound": [_bound_text(r) if k else "—" for (_, r), k in zip(table.iterrows(), ok)],
        "eligible": [cells.text(("eligible", float(e))) if pd.notna(e) else "—" for e in table["clinic_n_eligible"]],
        "analysed": [cells.text(("n", i)) if ("n", i) in cells.values else "—" for i in table["id"]],
        "missing": [cells.text(("attrition", i)) if ("attrition", i) in cells.values else "—" for i in table["id"]],
        "source": table["status_label"],
    }), hide_index=True, width="stretch")
with st.expander(f"{len(without)} published figures without a like-for-like clinic figure, and why"):
    show_table(pd.DataFrame({
        "benchmark": without["id"], "metric": without["metric"], "published": without["published_text"],
        "why no clinic figure": [shown_text(r) for r in without["clinic_reason"].fillna("")],
        "source": without["status_label"]}), hide_index=True, width="stretch")

def _text(value: object) -> str:
    return "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)


def _source_text(row: pd.Series) -> str:
    """One benchmark's source, population and cautions as one markdown text: one element per expander (the page
    has about 80 of them; an element each for every line made ~550 elements for the browser to draw)."""
    parts = [f"**Published:** {row['published_text']} · **status:** {row['status_label']}",
             f"**Definition:** {row['definition']}  \n**Timepoint:** {row['timepoint']}  \n"
             f"**Population:** {row['population']}",
             f"**Source:** [{row['citation']}]({row['link']})" if _text(row["link"]) else
             f"**Source:** {row['citation']}"]
    if _text(row["clinic_definition"]):
        parts.append(f"**Clinic figure:** {shown_markdown(row['clinic_definition'])}")
    if _text(row["clinic_reason"]):
        parts.append(f"**Comparison with the clinic:** {shown_markdown(row['clinic_reason'])}")
    parts += [f"**Caution:** {caution}" for caution in _text(row["cautions"]).split("\n") if caution.strip()]
    return "\n\n".join(parts)


st.subheader("Sources, populations and cautions")
for _, row in everything.iterrows():
    with st.expander(f"{row['id']}: {row['metric']} ({row['short_citation']})"):
        st.markdown(_source_text(row))
show_notes(comp.notes)
