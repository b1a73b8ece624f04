"""The sign-in gate: what a session that is not signed in (or not allowed on this address) sees, and what it loses.

With an ``[auth]`` section in ``.streamlit/secrets.toml`` (OIDC), a signed-out visitor gets only the sign-in page, at
any of the app's addresses. Without ``[auth]`` the app serves only an address of this computer (``server.address``
127.0.0.1, as ``make run`` and ``.streamlit/config.toml`` set it) and refuses any other (:func:`serving_refusal`).
Either way, a session that is not signed in keeps nothing: its session state, the files it uploaded and the download
files it made are dropped on each of its runs (:func:`_forget_session`).

Routing is dashboard.py's ``st.navigation`` only. Streamlit would otherwise serve the files of this ``pages/``
folder by URL (``/data`` runs ``pages/data.py`` without dashboard.py, hence without the sign-in gate) until some
session first calls ``st.navigation``; see :func:`_route_through_dashboard_only`. Who is signed in and what their role
may see: :mod:`pages._auth`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

import streamlit as st
from streamlit import runtime
from streamlit.errors import StreamlitAuthError, StreamlitSecretNotFoundError
from streamlit.runtime.scriptrunner import get_script_run_ctx

from analytics.formatting import escape_markdown
from analytics.privacy.access import missing_sign_in_packages, serves_this_computer_only

_LOGIN_ERROR = "auth_login_error"                        # session-state key: why the last sign-in did not start
_GATE_KEYS = frozenset({_LOGIN_ERROR, "auth_login"})      # what a signed-out session may keep: the gate's own
_refusal_logged = False


def _route_through_dashboard_only() -> bool:
    """Make every script run go through dashboard.py (and its gate), never straight to a file in ``pages/``.

    Streamlit keeps a process-wide flag, set when the first session starts, that a ``pages/`` folder next to
    the entry script means "old-style multipage app": a run for ``/data`` then executes ``pages/data.py`` on
    its own, skipping dashboard.py's sign-in gate, until any session calls ``st.navigation`` (which clears the
    flag). This module is imported by every page (through pages._auth), so clearing the flag here closes that
    window from the first run of a new server on. Returns True when routing is (now) through dashboard.py.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # another Streamlit layout: the gate in pages._auth.current_user() still fails closed
        return False
    PagesManager.uses_pages_directory = False
    return PagesManager.uses_pages_directory is False


_route_through_dashboard_only()


def secrets_table(name: str) -> Mapping[str, Any] | None:
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
    return secrets_table("auth") is not None


def serving_refusal(address: str | None) -> str | None:
    """The sentence refusing to serve on ``address`` (``server.address``), or None when the app may serve there.

    Without sign-in the app serves this computer only: an address other than loopback needs ``[auth]``.
    """
    if auth_configured() or serves_this_computer_only(address):
        return None
    where = address.strip() if address and address.strip() else "every network interface (no server.address)"
    return (f"KAP Outcomes refuses to serve on {where} without sign-in: configure sign-in (an [auth] section and a "
            f"[roles] table in .streamlit/secrets.toml, see the README's \"Sign-in and roles\"), or serve this "
            f"computer only with `make run` (server.address 127.0.0.1).")


def check_serving_address(address: str | None) -> None:
    """``make run``'s check before the server starts: exit with :func:`serving_refusal`'s sentence, if any."""
    if (sentence := serving_refusal(address)) is not None:
        raise SystemExit(sentence)


def server_address() -> str | None:
    value = st.get_option("server.address")
    return None if value is None else str(value)


def refuse_network_without_sign_in(pages: Sequence[Any] = ()) -> None:
    """Without sign-in on an address other than this computer's: only the refusal, at any address; stop the run."""
    sentence = serving_refusal(server_address())
    if sentence is None:
        return
    global _refusal_logged
    if not _refusal_logged:  # once, for whoever started the server
        print(sentence, file=sys.stderr, flush=True)
        _refusal_logged = True
    _forget_session()
    ctx = get_script_run_ctx()
    if not pages and ctx is not None and ctx.main_script_path.endswith("dashboard.py") \
            and _route_through_dashboard_only():
        st.rerun()  # a page ran without dashboard.py (a fresh server's first deep link): again, through it

    def _refusal_page() -> None:
        st.header("KAP Outcomes")
        st.error(sentence)

    if pages:
        _show_only(_refusal_page, pages, title="Not served", url_path="not-served")
    _refusal_page()
    st.stop()


def _forget_session() -> None:
    """Drop what a session that is not signed in may still hold, on each of its runs.

    Its session state (loaded exports, uploader values, settings; a session that signs out keeps its state
    until the browser leaves), the files uploaded to it (Streamlit keeps them per session until the session
    ends), and the download files it made: references cleared and one clean-up pass now, so Streamlit's own pass
    at the end of this run deletes them (a download file is deleted on the second pass that finds it unused).
    """
    held = [key for key in st.session_state if key not in _GATE_KEYS]
    for key in held:
        del st.session_state[key]
    ctx = get_script_run_ctx()
    if ctx is None:
        return
    ctx.uploaded_file_mgr.remove_session_files(ctx.session_id)
    if held and runtime.exists():  # this session was in use: its downloads go now, not after two more runs
        media = runtime.get_instance().media_file_mgr
        media.clear_session_refs(ctx.session_id)
        media.remove_orphaned_files()


def show_sign_in_gate(pages: Sequence[Any]) -> NoReturn:
    """Only the sign-in page, at whichever of the app's addresses was asked for; then stop the run.

    Whatever the session held (uploads, data, downloads) is dropped first: a signed-out session cannot upload.
    """
    _forget_session()
    _show_only(_sign_in_page, pages, title="Sign in", url_path="sign-in")


def _show_only(render: Callable[[], None], pages: Sequence[Any], *, title: str, url_path: str) -> NoReturn:
    """``render`` as the only page, at its own ``url_path`` and at each of ``pages``' addresses; stop the run."""
    urls = {str(getattr(p, "url_path", "") or "") for p in pages} - {"", url_path}
    only = [st.Page(render, title=title, url_path=url_path, default=True)]
    only += [st.Page(render, title=title, url_path=url) for url in sorted(urls)]
    st.navigation(only, position="hidden").run()
    st.stop()


def _start_login() -> None:
    """The "Log in" button: start the OIDC flow, or keep a sentence saying why it cannot start."""
    st.session_state.pop(_LOGIN_ERROR, None)
    try:
        st.login()
    except StreamlitAuthError as err:
        st.session_state[_LOGIN_ERROR] = " ".join(str(err).split())


def _sign_in_page() -> None:
    st.header("KAP Outcomes")
    st.write("This dashboard holds clinic data: sign in with your clinic account to continue.")
    missing = missing_sign_in_packages()
    if missing:  # st.login would fail with a bare server error: say what to install, and stay locked
        st.error(f"Sign-in is configured (an [auth] section in .streamlit/secrets.toml) but this installation "
                 f"cannot sign anyone in: it lacks {' and '.join(missing)}, which sign-in needs. Install Streamlit's "
                 f"sign-in support (`pip install \"streamlit[auth]\"`, or add Authlib and httpx to the project's "
                 f"dependencies and run `uv sync`), then restart the app. Until then the app stays locked.")
        return
    st.button("Log in", type="primary", on_click=_start_login, key="auth_login")
    if reason := st.session_state.get(_LOGIN_ERROR):
        st.error(f"Sign-in could not start: {escape_markdown(reason)} Ask whoever runs this app to check the [auth] "
                 f"section of .streamlit/secrets.toml.")


def gate_was_bypassed() -> NoReturn:
    """A page asked who is here for a signed-out visitor: it ran without dashboard.py's gate. Fail closed."""
    if _route_through_dashboard_only():
        st.rerun()  # this time through dashboard.py, which shows the sign-in page
    st.stop()
