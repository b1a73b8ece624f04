"""Sign-in for real: the app under an ``[auth]`` secrets section, a local OpenID Connect provider, chromium.

No network: the provider (``oidc_provider.py``) runs on 127.0.0.1 in this process; the app is a real
``streamlit run dashboard.py`` reading a temporary secrets.toml (``--secrets.files``, never the repository's
``.streamlit/``) whose ``[auth]`` points at the provider and whose ``[roles]`` make one account a director and one
an admin. Each test signs in through the browser the way a user does: "Log in" → the provider's account chooser →
back to the app with a signed identity cookie.

What is asserted is what a person sees (page text, navigation, buttons), plus the provider's and the store's
records of what happened. Screenshots: ``tests/artifacts/login/``.
"""

from __future__ import annotations

import atexit
import importlib.util
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from e2e_harness import (
    ARTIFACTS,
    RUN_TIMEOUT_MS,
    StreamlitServer,
    discover_pages,
    free_port,
    go_to,
    main_text,
    new_page,
    open_app,
    page_problems,
    runs_finished,
    screenshot_full,
    tiny_exports,
    upload_exports,
    wait_for_run,
    wait_idle,
)
from oidc_provider import OIDCProvider

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

SHOTS = ARTIFACTS / "login"
CLIENT_ID = "kap-outcomes-e2e"
DIRECTOR = "director@clinic.test"
ADMIN = "admin@clinic.test"
USERS = {DIRECTOR: "Dana Director", ADMIN: "Ada Admin"}
GATE_TEXT = "sign in with your clinic account"
# Text that only appears once clinic data (or the app's tools) are on screen.
DATA_TEXT = ("Outcome definitions", "sample clinic", "Data-quality report", "Upload the clinic's exports",
             "Patients starting treatment", "Upload history", "Patients needing attention")
SIGN_IN_DEPENDENCY = (
    "Streamlit's st.login needs Authlib *and* httpx (its `auth` extra); this environment lacks {missing}, so "
    "nobody can sign in to the deployed app either. Add `httpx>=0.24.1` to [project].dependencies in "
    "pyproject.toml (or depend on `streamlit[auth]`), then `uv lock` and `uv sync`.")


@dataclass(frozen=True)
class SignInApp:
    """The dashboard under [auth], its identity provider, and what the very first visit (a deep link) showed."""

    url: str
    redirect_uri: str
    server: StreamlitServer
    provider: OIDCProvider
    browser: Any
    data_dir: Path
    first_visit_text: str
    first_visit_nav: int


def _secrets_toml(*, redirect_uri: str, metadata_url: str, client_secret: str) -> str:
    return f'''[auth]
redirect_uri = "{redirect_uri}"
cookie_secret = "{secrets.token_hex(32)}"
client_id = "{CLIENT_ID}"
client_secret = "{client_secret}"
server_metadata_url = "{metadata_url}"

[roles]
"{ADMIN}" = "admin"
director = ["{DIRECTOR}"]
'''


def _nav_links(page: Any) -> int:
    return page.locator('[data-testid="stSidebarNavLink"], [data-testid="stTopNavLink"]').count()


@pytest.fixture(scope="module")
def signin_app(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SignInApp]:
    """Provider + app under [auth] on free ports of 127.0.0.1; the first visit is a signed-out deep link to /data.

    That first visit is made here, before anything else reaches the new server, because Streamlit routes
    differently until some session has called ``st.navigation`` (see pages/_gate.py).
    """
    tmp = tmp_path_factory.mktemp("e2e-login")
    (tmp / "data").mkdir()
    port = free_port()
    redirect_uri = f"http://127.0.0.1:{port}/oauth2callback"
    client_secret = secrets.token_urlsafe(24)
    provider = OIDCProvider(client_id=CLIENT_ID, client_secret=client_secret, redirect_uris=[redirect_uri],
                            users=USERS)
    secrets_file = tmp / "secrets.toml"
    server = StreamlitServer(data_dir=tmp / "data", log_path=ARTIFACTS / "streamlit-server-login.log", port=port,
                             secrets_file=secrets_file)
    atexit.register(server.stop)
    atexit.register(provider.stop)
    try:
        _seed_store(tmp / "data", tmp / "seed")
        provider.start()
        secrets_file.write_text(_secrets_toml(redirect_uri=redirect_uri, metadata_url=provider.metadata_url,
                                              client_secret=client_secret), encoding="utf-8")
        server.start()
        first = new_page(browser)
        try:
            open_app(first, server.url + "data")
            SHOTS.mkdir(parents=True, exist_ok=True)
            first.screenshot(path=str(SHOTS / "signed-out-first-visit-data.png"))
            text, nav = main_text(first), _nav_links(first)
        finally:
            first.context.close()
        yield SignInApp(url=server.url, redirect_uri=redirect_uri, server=server, provider=provider,
                        browser=browser, data_dir=tmp / "data", first_visit_text=text, first_visit_nav=nav)
    finally:
        server.stop()
        provider.stop()


# ----------------------------------------------------------------------------------------------- helpers

def _seed_store(data_dir: Path, scratch: Path) -> None:
    """One earlier upload (by "seed") in the app's store, so the Upload history page has something to show."""
    from analytics.store import open_store
    from schemas.validate import load_exports

    files = {k: v.read_bytes() for k, v in tiny_exports(scratch).items() if k != "patients"}
    open_store(data_dir).save_validated(files, load_exports(files["sessions"], files["followups"]), user="seed")


def _assert_gate(page: Any, where: str, *, unknown_address: bool = False) -> None:
    """The page shows the sign-in page and nothing of the app: no navigation, no settings, no data.

    ``unknown_address``: the URL names no page of the app, so Streamlit's "Page not found" notice is expected.
    """
    text = main_text(page)
    assert GATE_TEXT in text, f"{where}: no sign-in page; the page shows:\n{text[:1500]}"
    shown = [t for t in DATA_TEXT if t.lower() in text.lower()]
    assert not shown, f"{where}: a signed-out visitor sees {shown}; the page shows:\n{text[:1500]}"
    assert _nav_links(page) == 0, f"{where}: a signed-out visitor sees the navigation"
    assert page.locator('[data-testid="stSidebar"]').filter(has_text="Signed in as").count() == 0
    problems = [p for p in page_problems(page) if not (unknown_address and "Page not found" in p)]
    assert problems == [], f"{where}: {problems}"
    missing = [m for m in ("authlib", "httpx") if importlib.util.find_spec(m) is None]
    if missing:  # the gate must then say so and stay locked (no button that ends in a server error)
        assert "cannot sign anyone in" in text and all(m in text for m in missing), text[:1500]
        assert page.get_by_role("button", name="Log in").count() == 0
    else:
        assert page.get_by_role("button", name="Log in").count() == 1, f"{where}: no 'Log in' button"


def _to_provider(page: Any, app: SignInApp) -> None:
    """Press "Log in" on the gate and arrive at the provider's account chooser."""
    missing = [m for m in ("authlib", "httpx") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.fail(SIGN_IN_DEPENDENCY.format(missing=" and ".join(missing)), pytrace=False)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(re.escape(app.provider.issuer) + r"/authorize\?"), timeout=RUN_TIMEOUT_MS)
    assert "Choose an account" in page.inner_text("body")


def _back_at_app(page: Any, app: SignInApp, before: int) -> None:
    """From the provider's page, wait for the redirect back to the app and its first script run."""
    page.wait_for_url(re.compile(re.escape(app.url) + r"($|\?|[a-z])"), timeout=RUN_TIMEOUT_MS)
    wait_for_run(page, after=before)


def _wait_for_gate(page: Any) -> None:
    page.get_by_text(GATE_TEXT).first.wait_for(state="visible", timeout=RUN_TIMEOUT_MS)
    wait_idle(page)


def sign_in(page: Any, app: SignInApp, email: str) -> float:
    """Sign in as ``email`` from the gate, like a user; seconds from "Log in" to the rendered app."""
    start = time.perf_counter()
    _to_provider(page, app)
    before = runs_finished(page)
    page.get_by_role("button", name=f"Sign in as {email}").click()
    _back_at_app(page, app, before)
    sidebar = page.locator('[data-testid="stSidebar"]')
    assert sidebar.count() and f"Signed in as {email}" in sidebar.inner_text(), (
        f"not signed in as {email} after the provider's redirect; the page shows:\n{main_text(page)[:1500]}\n"
        f"provider errors: {app.provider.errors}\nserver log:\n{app.server.log_tail(30)}")
    return time.perf_counter() - start


def _titles(page: Any) -> list[str]:
    return [p.title for p in discover_pages(page)]


def _page(page: Any, title: str) -> None:
    (nav,) = [p for p in discover_pages(page) if p.title == title]
    go_to(page, nav)
    assert page_problems(page) == [], f"{title}: {page_problems(page)}"


def _no_provider_errors(app: SignInApp) -> None:
    assert app.provider.errors == [], f"the provider refused requests: {app.provider.errors}"


@pytest.fixture()
def errors_before_login(signin_app: SignInApp) -> int:
    return len(signin_app.server.uncaught_errors())


# ----------------------------------------------------------------------------------------------- tests

def test_signed_out_visitor_gets_only_the_sign_in_page_at_every_address(signin_app, browser_page,
                                                                         errors_before_login):
    app = signin_app
    # the very first request to the new server was a deep link to the Data page
    assert GATE_TEXT in app.first_visit_text, (
        "a signed-out visitor's first visit to /data (a fresh server) did not get the sign-in page; it showed:\n"
        + app.first_visit_text[:1500])
    shown = [t for t in DATA_TEXT if t.lower() in app.first_visit_text.lower()]
    assert not shown and app.first_visit_nav == 0, f"the first visit to /data showed {shown} / navigation"

    page = browser_page
    open_app(page, app.url)
    _assert_gate(page, "/")
    assert "KAP Outcomes" in page.locator('[data-testid="stMain"] h1, [data-testid="stMain"] h2').first.inner_text()
    screenshot_full(page, SHOTS / "signed-out-gate.png")
    for path in ("data", "history", "attention", "no-such-page"):
        open_app(page, app.url + path)
        _assert_gate(page, f"/{path}", unknown_address=path == "no-such-page")

    # cancelling at the provider comes back to the gate, still signed out
    if importlib.util.find_spec("httpx") is not None:
        open_app(page, app.url)
        _to_provider(page, app)
        before = runs_finished(page)
        page.get_by_role("button", name="Cancel").click()
        _back_at_app(page, app, before)
        _wait_for_gate(page)
        _assert_gate(page, "after cancelling at the provider")
        assert any(e.path == "/approve" and e.params.get("cancel") == "1" for e in app.provider.events)
    _no_provider_errors(app)
    assert app.server.uncaught_errors(since=errors_before_login) == []


def test_director_signs_in_and_sees_aggregates_only(signin_app, browser_page, errors_before_login):
    app, page = signin_app, browser_page
    open_app(page, app.url)
    seconds = sign_in(page, app, DIRECTOR)
    print(f"director sign-in (Log in → app rendered): {seconds:.1f} s")
    sidebar = page.locator('[data-testid="stSidebar"]').inner_text()
    assert f"Signed in as {DIRECTOR} (director)" in sidebar, sidebar
    assert page.get_by_role("button", name="Log out").count() == 1

    titles = _titles(page)
    assert "Overview" in titles and "Data" in titles and "Upload history" in titles, titles
    assert "Needing attention" not in titles, f"a director sees the patient list in the navigation: {titles}"
    assert "Overview" in main_text(page) and page_problems(page) == []
    suppress = page.locator('[data-testid="stSidebar"] label').filter(has_text="Suppress counts").locator("input")
    assert suppress.count() == 1 and suppress.is_disabled() and suppress.is_checked(), (
        "a director can turn small-cell suppression off")
    screenshot_full(page, SHOTS / "signed-in-director-overview.png")

    _page(page, "Data")
    text = main_text(page)
    assert "Data-quality report" in text, text[:1500]
    assert "Preview of accepted rows" not in text, "a director sees the row preview on the Data page"
    assert page.locator('[data-testid="stDataFrame"]').count() == 0, (
        "a director sees a table on the Data page of the sample clinic (which has no problem rows)")
    screenshot_full(page, SHOTS / "signed-in-director-data.png")

    _page(page, "Upload history")
    text = main_text(page)
    assert "Reopen an upload" in text, f"the seeded upload is not listed: {text[:1500]}"
    assert "Audit log (admin)" not in text and "Delete (admin)" not in text, text[:1500]

    # the patient list by its address: not served to a director
    open_app(page, app.url + "attention")
    text = main_text(page)
    assert "Patients needing attention" not in text, "a director opened the patient list by its URL"
    assert f"Signed in as {DIRECTOR}" in page.locator('[data-testid="stSidebar"]').inner_text()

    # what the provider saw: one code exchanged (with the PKCE verifier), the keys fetched
    token_calls = [e for e in app.provider.events if e.path == "/token"]
    assert token_calls and all(e.status == 200 for e in token_calls), token_calls
    assert any(e.path == "/jwks" and e.status == 200 for e in app.provider.events)
    authorize = [e for e in app.provider.events if e.path == "/authorize"][-1]
    assert authorize.params["redirect_uri"] == app.redirect_uri and authorize.params["code_challenge_method"] == "S256"
    assert authorize.params.get("nonce"), "Streamlit sent no nonce"
    _no_provider_errors(app)
    assert app.server.uncaught_errors(since=errors_before_login) == []


def test_admin_uploads_sees_the_audit_log_and_signs_out(signin_app, browser_page, errors_before_login,
                                                        tmp_path):
    from analytics.store import open_store

    app, page = signin_app, browser_page
    open_app(page, app.url)
    sign_in(page, app, ADMIN)
    assert f"Signed in as {ADMIN} (admin)" in page.locator('[data-testid="stSidebar"]').inner_text()
    titles = _titles(page)
    assert "Needing attention" in titles and "Upload history" in titles, titles
    _page(page, "Needing attention")
    assert "Patients needing attention" in main_text(page)

    upload_exports(page, tiny_exports(tmp_path / "exports"))
    assert "Loaded" in main_text(page), main_text(page)[:1500]
    uploads = open_store(app.data_dir).list_uploads()
    assert [u.user for u in uploads] == ["seed", ADMIN], "the upload is not stored under the signed-in email"
    audit = open_store(app.data_dir).audit_log()
    assert ((audit["user"] == ADMIN) & (audit["action"].str.contains("upload"))).any(), audit.to_string()

    _page(page, "Upload history")
    text = main_text(page)
    assert "Audit log (admin)" in text and "Delete (admin)" in text, text[:1500]
    screenshot_full(page, SHOTS / "signed-in-admin-history.png")

    # sign out: the cookie goes, the provider's end-session endpoint is visited, the gate is back
    page.get_by_role("button", name="Log out").click()
    _wait_for_gate(page)  # via /auth/logout, the provider's end-session endpoint and /oauth2callback
    _assert_gate(page, "after signing out")
    logout = [e for e in app.provider.events if e.path == "/logout"]
    assert logout and logout[-1].params.get("post_logout_redirect_uri") == app.redirect_uri, logout
    assert logout[-1].params.get("id_token_hint") == "***", "no id_token_hint sent to the end-session endpoint"
    open_app(page, app.url + "history")  # a new session in the same browser: still signed out
    _assert_gate(page, "/history after signing out")
    cookies = {c["name"] for c in page.context.cookies(app.url)}
    assert not any(name.startswith("_streamlit_user") for name in cookies), cookies
    _no_provider_errors(app)
    assert app.server.uncaught_errors(since=errors_before_login) == []
