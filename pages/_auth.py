"""Who is using the app and what their role lets them see.

With an ``[auth]`` section in ``.streamlit/secrets.toml`` (OIDC), ``st.login`` gates the app (:mod:`pages._gate`: the
sign-in page, and what a signed-out session loses) and each signed-in email gets a role from the ``[roles]`` table (the
roles and their rights: :mod:`analytics.privacy.access`). Without ``[auth]`` the app runs locally for one user,
``local``, with the ``admin`` role, and says so in the sidebar; it then serves only an address of this computer and
refuses to serve any other (:func:`pages._gate.serving_refusal`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import streamlit as st

from analytics.errors import OutcomesError
from analytics.formatting import escape_markdown
from analytics.privacy.access import LOCAL_USER, PAGE_ROLES, ROLES, UNSUPPRESS_ROLES, role_for
from pages._gate import (
    auth_configured,
    gate_was_bypassed,
    refuse_network_without_sign_in,
    secrets_table,
    server_address,
    show_sign_in_gate,
)


def current_user() -> tuple[str, str]:
    """``(name, role)`` of whoever uses this session.

    ``("local", "admin")`` without ``[auth]``, on an address of this computer only (elsewhere the run is
    stopped with :func:`serving_refusal`'s sentence). The name is the signed-in email (what the store's audit log
    records). A signed-out visitor under ``[auth]`` never gets here through dashboard.py; if a page asks anyway
    (it was run without dashboard.py's gate), the run is restarted through dashboard.py, or stopped.
    """
    if not auth_configured():
        refuse_network_without_sign_in()
        return LOCAL_USER
    if not st.user.is_logged_in:
        gate_was_bypassed()
    email = str(st.user.get("email") or "")
    name = email or str(st.user.get("name") or "unknown")
    return name, role_for(email, secrets_table("roles"))


def require_login(pages: Sequence[Any] = ()) -> tuple[str, str]:
    """The gate at the top of dashboard.py: sign-in when configured; who is here, in the sidebar.

    ``pages`` are dashboard.py's ``st.Page`` objects: a signed-out visitor following a link to one of them gets
    the sign-in page at that address (no "page not found"), and no navigation. Without sign-in, on an address other
    than this computer's, every visitor gets only the refusal. Also locks small-cell suppression on for roles that
    may not turn it off.
    """
    refuse_network_without_sign_in(pages)
    if auth_configured() and not st.user.is_logged_in:
        show_sign_in_gate(pages)
    name, role = current_user()
    if role not in UNSUPPRESS_ROLES and st.session_state.get("suppress") is False:
        st.session_state["suppress"] = True  # pages._shared.Key.SUPPRESS: locked on for this role
    with st.sidebar:
        if auth_configured():
            st.caption(f"Signed in as **{escape_markdown(name)}** ({role}).")
            st.button("Log out", on_click=st.logout, key="auth_logout")
        else:
            st.caption(f"Local mode: no sign-in is configured, so this app is served to this computer only "
                       f"({server_address()}) and whoever opens it here is its one user (local, admin role).")
    return name, role


def require_role(*roles: str) -> tuple[str, str]:
    """Stop the page with a sentence unless the user's role is one of ``roles``; else ``(name, role)``."""
    name, role = current_user()
    if role not in roles:
        st.header("Not available for your role")
        st.warning(f"This page is for the {', '.join(roles)} role(s); you are signed in as {role}. Ask an "
                   f"admin to change your role in the app's settings if you need it.")
        st.stop()
    return name, role


def has_role(*roles: str) -> bool:
    """True when the current user's role is one of ``roles`` (for hiding a part of a page)."""
    return current_user()[1] in roles


def visible_pages(pages: Sequence[Any]) -> list[Any]:
    """The navigation pages the current role may open (pages listed in ``PAGE_ROLES`` are hidden otherwise)."""
    role = current_user()[1]
    return [p for p in pages if role in PAGE_ROLES.get(getattr(p, "url_path", ""), ROLES)]


def audit_export(what: str) -> None:
    """Write an export (report, CSV) to the store's audit log: who, when, what (never patient values).

    An unavailable store never blocks the export; the audit entry is then missing and nothing else changes.
    """
    from analytics.store import open_store

    try:
        open_store().log_export(current_user()[0], what)
    except OutcomesError:
        pass
