"""Trajectories page: does depression (and craving, anxiety, abstinence) improve, for whom, and does it last?"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from analytics import formatting as fmt
from analytics.errors import OutcomesError
from analytics.outcomes import trajectories as tr
from analytics.privacy.counts import mask_text
from analytics.report.plots import trajectories as tplots
from pages._shared import Key, chart, show_error, show_notes, show_table
from pages._sidebar import sidebar_settings, view_cohort

GROUPS = {None: "No grouping", "program": "Program", "primary_substance": "Primary substance",
          "index_route": "Route (first ketamine session)", "site": "Site", "baseline_band": "Baseline depression band"}

KEEP = 4  # views remembered per session: narrowing the view and widening it again costs no refit


def remembered(what: str, options: tuple, compute: Callable[[], Any]) -> Any:
    """``compute()``, or its result from an earlier run of this session for the same data, settings, view filters
    and ``options`` (session state only: patient data never enters a cache shared between sessions)."""
    key = (what, cohort.settings, filters, options)
    base = st.session_state.get(Key.COHORT)  # a new upload is a new object: never a stale result
    store = [e for e in st.session_state.get("traj_results", []) if e[1] is base]
    for k, _, value in store:
        if k == key:
            return value
    value = compute()
    st.session_state["traj_results"] = [*store, (key, base, value)][-KEEP * 8:]
    return value


sidebar_settings()
cohort, filters = view_cohort()
st.header("Symptom trajectories")
st.write("The average course of each measure over the weeks after the first ketamine session, from a linear mixed "
         "model (each patient has their own start and slope), with a sample of individual patients behind it.")

c1, c2, c3 = st.columns(3)
measure = c1.selectbox("Measure", options=list(tr.MEASURE_NAMES), format_func=tr.AXIS_TITLES.get, key="traj_measure")
by = c2.selectbox("Compare by", options=list(GROUPS), format_func=GROUPS.get, index=0, key="traj_by")
shape = c3.selectbox("Time shape", options=list(tr.TIME_CHOICES), key="traj_shape",
                     format_func={"auto": "chosen on the data (AIC)", "linear": "straight line",
                                  "piecewise": "bend at week 4", "spline": "natural spline"}.get)
try:
    with st.spinner("Fitting the mixed model…"):
        # PHQ-9 without grouping and with the automatic shape: the very model of the report and `analyze`
        fit = remembered("fit", (measure, by, shape), lambda: tr.phq9_model(cohort, time=shape, by=by)
                         if measure == "phq9" else tr.fit_trajectory(cohort, measure=measure, by=by, time=shape))
        pred = tr.predicted_means(fit)
        observed = remembered("observed", (measure, by), lambda: tr.observed_means(cohort, measure=measure, by=by))
        lines = remembered("lines", (measure, by), lambda: tr.patient_lines(cohort, measure=measure, by=by))
except OutcomesError as err:
    show_error(err)
    st.stop()

shown = cohort.settings.suppress
min_cell = cohort.settings.min_cell if shown else None
chart(tplots.mean_trajectory, pred, lines=lines, observed=observed, min_cell=min_cell)
r = fit.random
st.markdown(
    f"**Model:** `{fit.formula}` by {fit.method}; {mask_text(fit.n_patients, enabled=shown)} "
    f"patients, {mask_text(fit.n_obs, enabled=shown)} scores; {'converged' if fit.converged else '**did not converge**'}"
    f"{'; boundary fit' if fit.singular else ''}. Between-patient SD of the starting level "
    f"{fmt.num(r.get('sd_intercept'))}, of the weekly slope {fmt.num(r.get('sd_slope'), 3)}, residual SD "
    f"{fmt.num(r.get('sd_residual'))}.")
fixed = fit.fixed.assign(estimate_ci=[fmt.ci(e, lo, hi, 3) for e, lo, hi in
                                      zip(fit.fixed["estimate"], fit.fixed["ci_low"], fit.fixed["ci_high"])],
                         p_value=[fmt.p_value(p) for p in fit.fixed["p"]])
show_table(fixed[["term", "estimate_ci", "p_value"]], hide_index=True)
st.caption("'weeks' is the average change per week; a group × weeks term is how much faster or slower a group "
           "changes than the reference group. Observational: differences between groups are associations.")
show_notes(fit.notes + observed.notes)
if st.checkbox("Compare time shapes (straight line, bend, spline) by likelihood ratio", key="traj_compare"):
    try:
        comparison = fit.time_comparison or remembered(
            "shapes", (measure, by), lambda: tr.compare_time_shapes(cohort, measure=measure, by=by))
        show_table(comparison.table, hide_index=True)
        st.caption(f"Best by AIC: {comparison.best}. Models fitted by maximum likelihood for the comparison.")
    except OutcomesError as err:
        show_error(err)

if measure == "phq9":
    st.subheader("Response and remission")
    try:
        rr = remembered("response", (by,), lambda: tr.response_remission(cohort, by=by))
        chart(tplots.response_remission_bars, rr, min_cell=min_cell)
        st.caption(f"Response: PHQ-9 at least 50% below baseline; remission: PHQ-9 below 5; patients with a "
                   f"baseline PHQ-9 of at least {cohort.settings.phq9_min_baseline:g}. Score nearest each week within "
                   f"±{rr.window_days} days; the denominator is patients with such a baseline and a score in that "
                   "window. Bars show Wilson 95% CIs.")
        show_notes(rr.notes)
        bands = remembered("bands", (), lambda: tr.band_transitions(cohort))
        st.markdown("**Baseline severity band → latest band (patients)**")
        chart(tplots.band_transition_heatmap, bands, min_cell=min_cell)
    except OutcomesError as err:
        show_error(err)

    st.subheader("How long does a response last?")
    try:
        dur = remembered("durability", (), lambda: tr.response_durability(cohort))
        chart(tplots.durability_curves, dur, min_cell=min_cell)
        # read where fewer than min_cell are still in response: a step of a handful of patients, not shown
        ms = dur.milestones.assign(sustained=[
            "suppressed (<11)" if min_cell is not None and 0 <= n < min_cell else fmt.pct_ci(e, lo, hi)
            for n, e, lo, hi in zip(dur.milestones["n_risk"].fillna(0), dur.milestones["estimate"],
                                    dur.milestones["ci_low"], dur.milestones["ci_high"])])
        show_table(ms[["group", "weeks", "sustained"]], hide_index=True)
        if dur.maintenance_hr:
            h = dur.maintenance_hr
            st.markdown(f"Hazard of losing response after a maintenance ketamine session vs before: "
                        f"{fmt.ci(h['hr'], h['ci_low'], h['ci_high'])}, {fmt.p_value(h['p'])}.")
        st.caption("For comparison, McInnes 2022 (real-world IV ketamine for depression, not addiction) reported "
                   "about 80% still in response at 4 weeks and 60% at 8 weeks without maintenance.")
        show_notes(dur.notes)
    except OutcomesError as err:
        show_error(err)

st.subheader("Abstinence over time (population average)")
try:
    gee = remembered("gee", (by,), lambda: tr.abstinence_gee(cohort, by=by))
    chart(tplots.abstinence_over_time, gee)
    st.caption(f"Share of assessment windows fully abstinent, GEE (binomial, exchangeable working correlation "
               f"{fmt.num(gee.working_correlation)}), {mask_text(gee.n_obs, enabled=shown)} windows; robust 95% CIs.")
    show_notes(gee.notes)
except OutcomesError as err:
    show_error(err)
