"""Survival page: time to return to use, by group, with hazard ratios and a PH check."""

from __future__ import annotations

import streamlit as st

from analytics import formatting as fmt
from analytics.errors import OutcomesError
from analytics.outcomes import survival
from analytics.privacy.suppression import suppress_counts
from analytics.report.plots.survival import (
    dating_counts_text,
    dating_keys,
    dropout_keys,
    dropout_sensitivity_figure,
    forest_figure,
    km_figure,
    rules_table,
    sensitivity_cells,
)
from pages._shared import chart, show_error, show_notes, show_table
from pages._sidebar import sidebar_settings, view_cohort

GROUP_LABELS = {None: "No grouping (all patients)", "program": "Program", "primary_substance": "Primary substance",
                "index_route": "Route (first ketamine session)", "site": "Site",
                "baseline_band": "Baseline depression band (PHQ-9)", "sex": "Sex", "age_band": "Age band"}
ADJUST_LABELS = {"age": "Age", "sex": "Sex", "primary_substance": "Primary substance", "baseline_phq9": "Baseline PHQ-9"}

sidebar_settings()
cohort, filters = view_cohort()
st.header("Time to return to use")
st.write("How long patients stay without returning to use after their first ketamine session "
         "(Kaplan–Meier), and whether that differs between groups.")

c1, c2, c3 = st.columns([1, 1, 2])
group_options = [g for g in GROUP_LABELS if g is None or g in survival.GROUPING_COLUMNS]
default_by = survival.default_grouping(cohort)
by = c1.selectbox("Compare by", options=group_options, format_func=GROUP_LABELS.get,
                  index=group_options.index(default_by), key="surv_by",
                  help="Opens split by primary substance when the clinic treats several (return to use differs by "
                       "substance, and one curve over a mix hides it); otherwise by program.")
try:
    curves = survival.relapse_curves(cohort, by=by)
except OutcomesError as err:
    show_error(err)
    st.stop()

chart(km_figure, curves)
st.caption("Each step down is a return to use; ticks are patients censored (still without return to use at their "
           "last assessment). Shaded bands are 95% confidence intervals; the numbers under the chart are the "
           "patients still at risk.")

shown = cohort.settings.suppress
min_cell = cohort.settings.min_cell
# groups add up to all patients (shown when not grouped): suppress with that total as a margin row
counts = curves.medians[["group", "n", "n_event", "n_censor"]].reset_index(drop=True)
if len(counts) > 1:
    counts.loc[len(counts)] = ["\0all", *counts[["n", "n_event", "n_censor"]].sum()]
safe = suppress_counts(counts, count_columns=["n_event", "n_censor"], total_columns=["n"],
                       margin=("group", "\0all") if len(counts) > 1 else None, enabled=shown)
text = safe.text().iloc[: len(curves.medians)]
too_small = dict(zip(curves.medians["group"], safe.primary["n"].iloc[: len(curves.medians)]))
medians = curves.medians.assign(
    n=text["n"].to_numpy(), n_event=text["n_event"].to_numpy(),
    median=["suppressed (<11)" if too_small[g] else fmt.ci(m, lo, hi, 0) for g, m, lo, hi in zip(
        curves.medians["group"], curves.medians["estimate"], curves.medians["ci_low"], curves.medians["ci_high"])])
# a milestone read where fewer than min_cell are still at risk is a step of a handful of patients: not shown
milestones = curves.milestones.assign(
    without_return=["suppressed (<11)" if shown and (too_small[g] or 0 <= r < min_cell) else fmt.pct_ci(e, lo, hi)
                    for g, r, e, lo, hi in zip(curves.milestones["group"], curves.milestones["n_risk"].fillna(0),
                                               curves.milestones["estimate"], curves.milestones["ci_low"],
                                               curves.milestones["ci_high"])])
# one under the other, full width: the four milestone columns with their CIs do not fit half the page
st.markdown("**Median days to return to use (95% CI)**")
show_table(medians[["group", "n", "n_event", "median"]].rename(
    columns={"n": "patients", "n_event": "returned to use", "median": "median days"}), hide_index=True)
if shown:
    st.caption(fmt.escape_markdown(safe.notes[0]))
st.markdown("**Still without return to use at day 30 / 90 / 180 / 365 (95% CI)**")
if shown:
    st.caption(f"Suppressed where fewer than {min_cell} patients are still at risk (small-cell rule).")
show_table(milestones.pivot(index="group", columns="day", values="without_return")
             .rename(columns=lambda d: f"day {d:g}"), width="stretch")

# issue #19: the two dropout rules side by side, and how the events are dated (all patients in the view)
sens = dating = None
try:
    sens = survival.dropout_sensitivity(cohort)
    dating = survival.event_dating(cohort)
except OutcomesError as err:
    show_error(err)
cells = sensitivity_cells(cohort, sens, dating, min_cell=min_cell if shown else None)
if sens is not None:
    st.markdown("**Dropout censored vs dropout counted as return to use (all patients in the view)**")
    show_table(rules_table(sens.table, sens.milestones, cells, min_cell=min_cell if shown else None,
                           keys=dropout_keys(sens), early=True), hide_index=True, width="stretch")
    # drawn only while open (a rerun when it opens or closes): a closed expander's chart would be built and sent on
    # every rerun, a filter change included, for nobody to see
    with st.expander("Sensitivity figure and how the rules differ", key="surv_sens_open", on_change="rerun") as box:
        if box.open:
            chart(dropout_sensitivity_figure, sens)
            show_notes(sens.notes[1:])
if dating is not None:
    st.markdown("**How events are dated: at the visit, at the interval midpoint, or interval-censored (Turnbull)**")
    st.caption(fmt.escape_markdown(dating_counts_text(cells)))
    show_table(rules_table(dating.medians, dating.milestones, cells, min_cell=min_cell if shown else None,
                           keys=dating_keys(cells, dating)), hide_index=True, width="stretch")
    show_notes(dating.notes[3:])

if by is not None:
    st.subheader("Comparing groups")
    levels = curves.groups
    reference = c2.selectbox("Reference group", options=levels, index=levels.index(survival.largest_group(curves)),
                             key="surv_ref",
                             help="Hazard ratios compare each group with this one.")
    adjust = c3.multiselect("Adjust for", options=[a for a in ADJUST_LABELS if a != by],
                            format_func=ADJUST_LABELS.get, key="surv_adjust")
    try:
        comp = survival.compare_groups(cohort, by=by, reference=reference, adjust=tuple(adjust))
    except OutcomesError as err:
        show_error(err)
    else:
        lr = comp.logrank
        st.markdown(f"**Log-rank test:** χ² = {fmt.num(lr.chisq)} on {lr.df} df, {fmt.p_value(lr.p)}. "
                    f"**Proportional hazards:** {fmt.escape_markdown(comp.ph_verdict)}")
        if comp.hazard_ratios is not None:
            f1, f2 = st.columns([3, 2])
            chart(forest_figure, comp, where=f1)
            hr = comp.hazard_ratios.assign(
                hazard_ratio=[fmt.ci(e, lo, hi) for e, lo, hi in zip(comp.hazard_ratios["estimate"],
                                                                     comp.hazard_ratios["ci_low"],
                                                                     comp.hazard_ratios["ci_high"])],
                p_value=[fmt.p_value(p) for p in comp.hazard_ratios["p"]])
            show_table(hr[["term", "level", "hazard_ratio", "p_value"]], where=f2, hide_index=True)
            f2.caption("A hazard ratio below 1 means a lower rate of return to use than the reference group. "
                       "This is an observational comparison: groups may differ in ways the model does not adjust "
                       "for, so it shows association, not the effect of the program.")
        if comp.ph_holds is False or comp.hazard_ratios is None:
            st.markdown(f"**Restricted mean time without return to use, up to day {fmt.num(comp.horizon_days, 0)}** "
                        "(used instead of one hazard ratio when hazards are not proportional)")
            rm = comp.rmst_difference.assign(
                difference_days=[fmt.ci(e, lo, hi, 1) for e, lo, hi in zip(
                    comp.rmst_difference["estimate"], comp.rmst_difference["ci_low"],
                    comp.rmst_difference["ci_high"])])
            show_table(rm[["group", "difference_days"]], hide_index=True)
            md = comp.milestone_difference.assign(
                difference=[fmt.pct_ci(e, lo, hi, 1) for e, lo, hi in zip(
                    comp.milestone_difference["estimate"], comp.milestone_difference["ci_low"],
                    comp.milestone_difference["ci_high"])])
            show_table(md.pivot(index="group", columns="day", values="difference"))
        show_notes([n for n in comp.notes if not n.startswith("Excluded: ")])  # the exclusions are under Methods

with st.expander("Methods and exclusions", expanded=False):
    show_notes(curves.notes)
