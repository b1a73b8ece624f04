"""Safety panel: adverse events and raised vital signs, per session and per patient, beside published figures."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from analytics import formatting as fmt
from analytics.errors import OutcomesError
from analytics.outcomes import safety
from analytics.report.plots import safety as splots
from pages._shared import show_error, show_notes, show_table, sidebar_settings, view_cohort

sidebar_settings()
cohort, filters = view_cohort()
st.header("Session safety")
st.write("Side effects and raised blood pressure or heart rate in ketamine sessions, by route. Rates are given "
         "**per session** (share of sessions with the event) and **per patient** (share of patients with it at "
         "least once): published figures use one or the other, and they are only compared like with like.")

c1, c2, c3 = st.columns(3)
systolic = c1.number_input("Raised BP: systolic ≥ (mmHg)", 120, 220, 165, step=5, key="sf_sys")
diastolic = c2.number_input("or diastolic ≥ (mmHg)", 70, 140, 100, step=5, key="sf_dia")
heart = c3.number_input("Raised heart rate ≥ (bpm)", 80, 180, 100, step=5, key="sf_hr")
thresholds = safety.VitalThresholds(systolic_mmhg=systolic, diastolic_mmhg=diastolic, heart_rate_bpm=heart)
shown = cohort.settings.suppress
min_cell = cohort.settings.min_cell if shown else None

try:
    rates = safety.adverse_event_rates(cohort)
    vitals = safety.vital_sign_elevations(cohort, thresholds=thresholds)
    trend = safety.safety_trend(cohort, thresholds=thresholds)
    published = safety.published_comparison(cohort, thresholds=thresholds)
except OutcomesError as err:
    show_error(err)
    st.stop()

unit = st.radio("Unit of analysis", options=["session", "patient"], horizontal=True, key="sf_unit",
                format_func={"session": "per session", "patient": "per patient"}.get)
st.plotly_chart(splots.adverse_events_chart(rates, unit_of_analysis=unit, min_cell=min_cell), width="stretch")
st.caption("Bars: share with each side effect, by route of the ketamine session; lines: Wilson 95% CIs.")


def _pct_cell(ok: bool, e, lo, hi) -> str:
    return fmt.pct_ci(e, lo, hi, 1) if ok else "suppressed (<11)"


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
st.plotly_chart(splots.vital_signs_trend(trend, min_cell=min_cell), width="stretch")
show_notes(trend.notes)

st.subheader("Beside published safety figures")
st.plotly_chart(splots.published_comparison_chart(published, min_cell=min_cell), width="stretch")
pt = published.table
ok = splots.published_row_shown(splots.published_cells(published, min_cell=min_cell), published)
show_table(pd.DataFrame({
    "metric": pt["metric"], "unit": pt["unit_of_analysis"], "route": pt["route"],
    "clinic (95% CI)": [_pct_cell(*r) for r in zip(ok, pt["estimate"], pt["ci_low"], pt["ci_high"])],
    "published": [fmt.pct(p, 1) for p in pt["published"]], "status": pt["published_status"],
    "source": pt["source"], "caution": pt["caution"]}), hide_index=True, width="stretch")
show_notes(published.notes)
show_notes(rates.notes)
