"""Safety panel: adverse events and raised vital signs, per session and per patient, beside published figures."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from analytics import formatting as fmt
from analytics.errors import OutcomesError
from analytics.outcomes import monitoring, safety
from analytics.report.plots import monitoring as mplots
from analytics.report.plots import safety as splots
from pages._shared import chart, show_error, show_notes, show_table
from pages._sidebar import sidebar_settings, view_cohort

sidebar_settings()
cohort, filters = view_cohort()
st.header("Session safety")
st.write("Side effects and raised blood pressure or heart rate in ketamine sessions, by route. Rates are given "
         "**per session** (share of sessions with the event) and **per patient** (share of patients with it at "
         "least once): published figures use one or the other, and they are only compared like with like.")

c1, c2, c3 = st.columns(3)
default = safety.VitalThresholds()  # the background warm-up computes the first view with these
systolic = c1.number_input("Raised BP: systolic ≥ (mmHg)", 120, 220, int(default.systolic_mmhg), step=5, key="sf_sys")
diastolic = c2.number_input("or diastolic ≥ (mmHg)", 70, 140, int(default.diastolic_mmhg), step=5, key="sf_dia")
heart = c3.number_input("Raised heart rate ≥ (bpm)", 80, 180, int(default.heart_rate_bpm), step=5, key="sf_hr")
thresholds = safety.VitalThresholds(systolic_mmhg=systolic, diastolic_mmhg=diastolic, heart_rate_bpm=heart)
shown = cohort.settings.suppress
min_cell = cohort.settings.min_cell if shown else None

try:
    cats = safety.safety_categories(cohort)
    rates = safety.adverse_event_rates(cohort)
    vitals = safety.vital_sign_elevations(cohort, thresholds=thresholds)
    trend = safety.safety_trend(cohort, thresholds=thresholds)
    published = safety.published_comparison(cohort, thresholds=thresholds)
except OutcomesError as err:
    show_error(err)
    st.stop()

unit = st.radio("Unit of analysis", options=["session", "patient"], horizontal=True, key="sf_unit",
                format_func={"session": "per session", "patient": "per patient"}.get)


def _pct_cell(ok: bool, e, lo, hi) -> str:
    return fmt.pct_ci(e, lo, hi, 1) if ok else "suppressed (<11)"


st.subheader("Expected effects, events needing action, serious events")
chart(splots.safety_categories_chart, cats, unit_of_analysis=unit, min_cell=min_cell)
c = cats.table[cats.table["unit_of_analysis"] == unit]
cc = splots.category_cells(cats, unit_of_analysis=unit, min_cell=min_cell)
shown_c = [r and cc.shown(("num", k, ro)) and cc.shown(("den", ro, float(d)))
           for r, k, ro, d in zip(c["recorded"], c["category"], c["route"], c["denominator"])]
value = [("not recorded" if not r else "suppressed (<11)" if not ok else
          fmt.ci(e, lo, hi, 1) if unit == "session" else fmt.pct_ci(e, lo, hi, 1))
         for r, ok, e, lo, hi in zip(c["recorded"], shown_c, c["estimate"], c["ci_low"], c["ci_high"])]
show_table(pd.DataFrame({"category": c["label"], "route": c["route"],
                         ("per 100 sessions (95% CI)" if unit == "session" else "patients (95% CI)"): value}),
           hide_index=True, width="stretch")
ser = cats.serious.set_index("route").loc[safety.ALL]
if not shown or ser["n_sessions"] >= min_cell:
    st.caption(f"Serious events per 1,000 sessions: not recorded in the export. If the clinic's own records confirm "
               f"none in these {fmt.count(ser['n_sessions'])} sessions, the exact one-sided 95% upper bound is "
               f"{fmt.num(ser['upper_bound_if_none'], 2)} per 1,000 (rule of three: {fmt.num(ser['rule_of_three'], 2)}).")
show_notes(cats.notes)

st.subheader("Side effects by type")
chart(splots.adverse_events_chart, rates, unit_of_analysis=unit, min_cell=min_cell)
st.caption("Bars: share with each side effect, by route of the ketamine session; lines: Wilson 95% CIs.")


v = vitals.table[vitals.table["unit_of_analysis"] == unit]
vc = splots.vital_sign_cells(vitals, unit_of_analysis=unit, min_cell=min_cell)
num_keys = [("num", m, r) for m, r in zip(v["measure"], v["route"])]
den_keys = [("den", r, float(d)) for r, d in zip(v["route"], v["denominator"])]
miss_keys = [("n_missing", r, float(m)) for r, m in zip(v["route"], v["n_missing"])]
vt = pd.DataFrame({
    "measure": v["measure"].map({"bp_raised": "raised blood pressure", "hr_raised": "raised heart rate",
                                 "bp_or_hr_raised": "either"}),
    "route": v["route"],
    "share (95% CI)": [_pct_cell(vc.shown(nk) and vc.shown(dk), e, lo, hi) for nk, dk, e, lo, hi in
                       zip(num_keys, den_keys, v["estimate"], v["ci_low"], v["ci_high"])],
    f"{unit}s with readings": [vc.text(k) for k in den_keys],
    "no readings": [vc.text(k) for k in miss_keys],
})
st.markdown(f"**Raised vital signs** ({thresholds.describe()})")
show_table(vt, hide_index=True, width="stretch")
show_notes(vitals.notes + (vc.notes if shown else ()))

st.subheader("Trend over time")
chart(splots.vital_signs_trend, trend, min_cell=min_cell)
show_notes(trend.notes)

st.subheader("Beside published safety figures")
chart(splots.published_comparison_chart, published, min_cell=min_cell)
pt = published.table
ok = splots.published_row_shown(splots.published_cells(published, min_cell=min_cell), published)
show_table(pd.DataFrame({
    "metric": pt["metric"], "unit": pt["unit_of_analysis"], "route": pt["published_route"],
    "clinic (95% CI)": [_pct_cell(*r) if cmp else "not compared: " + why for *r, cmp, why in
                        zip(ok, pt["estimate"], pt["ci_low"], pt["ci_high"], pt["comparable"], pt["reason"])],
    "published": [fmt.pct(p, 1) for p in pt["published"]], "status": pt["published_status"],
    "source": pt["source"], "caution": pt["caution"]}), hide_index=True, width="stretch")
show_notes(published.notes)
show_notes(rates.notes)

st.subheader("Session monitoring")
st.write("Blood pressure before dosing, at about 40 minutes and at discharge; minutes until the patient was ready to "
         "leave; sedation (MOAA/S 0–5, lower = deeper) and dissociation (CADSS-6, 0–24); the worst event's severity "
         "and what was done. Each part is shown where the export records it.")
try:
    mon = monitoring.session_monitoring(cohort)
except OutcomesError as err:
    show_error(err)
    st.stop()
st.markdown("**" + mplots.serious_sentence(mon) + "**")
for sentence in mplots.parts_sentence(mon):
    st.caption(sentence)
if len(mon.blood_pressure):
    chart(mplots.blood_pressure_chart, mon)
    show_table(mplots.blood_pressure_table(mon), hide_index=True, width="stretch")
m1, m2 = st.columns(2)
if mon.recorded["minutes"]:
    m1.markdown("**Minutes until ready to leave**")
    show_table(mplots.quantile_table(mon.minutes, "minutes"), where=m1, hide_index=True)
if mon.recorded["dissociation"]:
    m2.markdown("**Dissociation (CADSS-6, 0–24)**")
    show_table(mplots.quantile_table(mon.dissociation, "score"), where=m2, hide_index=True)
d1, d2, d3 = st.columns(3)
for where, rec, table, col, label in ((d1, "sedation", mon.sedation, "score", "MOAA/S"),
                                      (d2, "severity", mon.severity, "level", "worst event"),
                                      (d3, "action", mon.action, "level", "action taken")):
    if mon.recorded[rec]:
        show_table(mplots.distribution_table(table, col, label), where=where, hide_index=True)
show_notes(mon.notes)
