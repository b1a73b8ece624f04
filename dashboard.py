"""KAP Outcomes: Streamlit entry point (layout only; every number comes from analytics/)."""

import streamlit as st

st.set_page_config(page_title="KAP Outcomes", page_icon="📈", layout="wide")
st.title("KAP Outcomes")
st.write("Outcomes dashboard for ketamine-assisted treatment of alcohol and drug use disorders.")
