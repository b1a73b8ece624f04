"""An AppTest of dashboard.py as a given signed-in user (OIDC configured, st.user faked), for role tests."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
AUTH = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "test-secret",
        "client_id": "kap", "client_secret": "kap", "server_metadata_url": "https://id.example.org/.well-known"}


def dashboard_as(email: str | None, roles: Mapping[str, Any], *, timeout: float = 240) -> AppTest:
    """dashboard.py (not yet run) with ``[auth]`` and ``[roles]`` set and ``email`` signed in; local mode when None."""
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=timeout)
    if email is not None:
        at.secrets["auth"] = AUTH
        at.secrets["roles"] = dict(roles)
        at.user = {"is_logged_in": True, "email": email, "name": email.split("@")[0]}
    return at


def upload_on_data_page(at: AppTest, sessions: bytes, followups: bytes) -> None:
    """Open the Data page of ``at``, upload the two exports and accept them."""
    at.switch_page("pages/data.py").run()
    at.file_uploader(key="up_sessions").set_value(("sessions.csv", sessions, "text/csv"))
    at.file_uploader(key="up_followups").set_value(("followups.csv", followups, "text/csv"))
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["source"] == "upload"
