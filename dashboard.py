"""KAP Outcomes: Streamlit entry point (navigation and layout only; every number comes from analytics/)."""

import streamlit as st

from analytics.outcomes import warmup
from pages import _preload  # noqa: F401  (starts importing the analysis libraries in the background, once)
from pages._auth import require_login, visible_pages
from pages._shared import start_pending_warmup

st.set_page_config(page_title="KAP Outcomes", page_icon="📈", layout="wide")

PAGES = [
    st.Page("pages/overview.py", title="Overview", icon=":material/dashboard:", url_path="overview", default=True),
    st.Page("pages/data.py", title="Data", icon=":material/upload_file:", url_path="data"),
    st.Page("pages/survival.py", title="Time to return to use", icon=":material/timeline:", url_path="survival"),
    st.Page("pages/trajectories.py", title="Symptom trajectories", icon=":material/show_chart:",
            url_path="trajectories"),
    st.Page("pages/substance_use.py", title="Substance use", icon=":material/local_bar:", url_path="substance-use"),
    st.Page("pages/benchmarks.py", title="Versus published", icon=":material/balance:", url_path="published"),
    st.Page("pages/safety.py", title="Session safety", icon=":material/health_and_safety:", url_path="safety"),
    st.Page("pages/retention.py", title="Retention", icon=":material/group_remove:", url_path="retention"),
    st.Page("pages/subgroups.py", title="Who benefits", icon=":material/groups:", url_path="who-benefits"),
    st.Page("pages/attention.py", title="Needing attention", icon=":material/notifications:", url_path="attention"),
    st.Page("pages/history.py", title="Upload history", icon=":material/history:", url_path="history"),
]

# Under [auth], a signed-out visitor gets only the sign-in page, at any of these addresses (and keeps no uploads or
# downloads); without [auth], it serves this computer only (a loopback server.address) and refuses any other.
require_login(PAGES)
with warmup.foreground():  # the background warm-up starts no new analysis while a page is being drawn
    st.navigation(visible_pages(PAGES)).run()
start_pending_warmup()  # after the page is drawn: the slow first views of a newly built cohort, in the background
