"""Who is using the app and what their role lets them see.

With an ``[auth]`` section in ``.streamlit/secrets.toml`` (OIDC), ``st.login`` gates the app and each signed-in
email gets a role from a ``[roles]`` table::

    [roles]
    "dana@clinic.org" = "admin"          # email = role
    analyst = ["sam@clinic.org"]         # or role = list of emails

Roles (anyone not listed is a ``director``):

* ``director``: aggregates only; the patient list ("Needing attention") and row previews are hidden and
  small-cell suppression cannot be turned off;
* ``clinician``: also sees the patient list for the clinical team's follow-up;
* ``analyst``: also may turn suppression off (internal use);
* ``admin``: also sees the audit log and may delete uploads and patients.

Without ``[auth]`` the app runs locally for one user, ``local``, with the ``admin`` role, and says so in the
sidebar.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import streamlit as st
from streamlit.errors import StreamlitSecretNotFoundError

from analytics.errors import OutcomesError

ROLES = ("director", "clinician", "analyst", "admin")
DEFAULT_ROLE = "director"
LOCAL_USER = ("local", "admin")
ROW_LEVEL_ROLES = ("clinician", "analyst", "admin")      # may see patient-level rows
UNSUPPRESS_ROLES = ("analyst", "admin")                  # may turn small-cell suppression off
ADMIN_ROLES = ("admin",)                                  # audit log, deletion
PAGE_ROLES = {"attention": ROW_LEVEL_ROLES}              # url_path → roles that see the page


def _section(name: str) -> Mapping[str, Any] | None:
    """A top-level secrets table, or None when there is none (or no secrets file at all)."""
    try:
        if name in st.secrets:
            value = st.secrets[name]
            return value if isinstance(value, Mapping) else None
    except (FileNotFoundError, StreamlitSecretNotFoundError):  # no (readable) secrets.toml: not configured
        return None
    return None


def auth_configured() -> bool:
    """True when the secrets configure OIDC sign-in (an ``[auth]`` section)."""
    return _section("auth") is not None


def role_for(email: str, table: Mapping[str, Any] | None) -> str:
    """The role of ``email`` in a ``[roles]`` table (either ``email = role`` or ``role = [emails]``).

    Emails compare case-insensitively; an unknown role name or an unlisted email gives ``director``.
    """
    key = email.strip().lower()
    if not key or not table:
        return DEFAULT_ROLE
    found: list[str] = []
    for k, v in table.items():
        if isinstance(v, str) and str(k).strip().lower() == key:
            found.append(v.strip().lower())
        elif isinstance(v, Sequence) and not isinstance(v, str) and \
                key in {str(e).strip().lower() for e in v}:
            found.append(str(k).strip().lower())
    valid = [r for r in found if r in ROLES]
    return max(valid, key=ROLES.index) if valid else DEFAULT_ROLE


def current_user() -> tuple[str, str]:
    """``(name, role)`` of whoever uses this session.

    ``("local", "admin")`` without ``[auth]``; a signed-out visitor under ``[auth]`` is ``("", "director")``.
    The name is the signed-in email (what the store's audit log records).
    """
    if not auth_configured():
        return LOCAL_USER
    if not st.user.is_logged_in:
        return "", DEFAULT_ROLE
    email = str(st.user.get("email") or "")
    name = email or str(st.user.get("name") or "unknown")
    return name, role_for(email, _section("roles"))


def require_login() -> tuple[str, str]:
    """The gate at the top of dashboard.py: sign-in when configured; who is here, in the sidebar.

    Also locks small-cell suppression on for roles that may not turn it off.
    """
    if auth_configured() and not st.user.is_logged_in:
        st.header("KAP Outcomes")
        st.write("This dashboard holds clinic data: sign in with your clinic account to continue.")
        st.button("Log in", type="primary", on_click=st.login, key="auth_login")
        st.stop()
    name, role = current_user()
    if role not in UNSUPPRESS_ROLES and st.session_state.get("suppress") is False:
        st.session_state["suppress"] = True  # pages._shared.Key.SUPPRESS: locked on for this role
    with st.sidebar:
        if auth_configured():
            st.caption(f"Signed in as **{name}** ({role}).")
            st.button("Log out", on_click=st.logout, key="auth_logout")
        else:
            st.caption("Local mode: no sign-in is configured, so this app runs for one user (local, admin role) "
                       "on this computer.")
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
