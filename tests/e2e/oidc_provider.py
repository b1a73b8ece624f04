"""A minimal OpenID Connect provider on 127.0.0.1, for signing in to the dashboard in a real browser offline.

It speaks the authorization-code flow the way Streamlit's ``st.login`` (Authlib's Starlette client) uses it:

* ``GET /.well-known/openid-configuration``: the metadata (issuer, endpoints, RS256, PKCE S256);
* ``GET /authorize``: checks the request (client_id, exact redirect_uri, ``openid`` scope, state, nonce, a PKCE
  S256 challenge) and shows an account chooser: one button per test user, and "Cancel";
* ``POST /approve``: redirects back to the app with a one-time ``code`` and the ``state`` (or, for "Cancel",
  ``error=access_denied``);
* ``POST /token``: exchanges the code (client secret by HTTP Basic or form, same redirect_uri, PKCE verifier)
  for an access token and an ``id_token`` signed RS256 with a key generated at start, carrying the ``nonce``;
* ``GET /jwks``: the public key; ``GET /userinfo``: the claims for a bearer access token;
* ``GET /logout``: the end-session endpoint; redirects to ``post_logout_redirect_uri`` when it is the app's.

Anything malformed gets a 400 with a sentence saying what was wrong (shown in the browser, and kept in
:attr:`OIDCProvider.errors` for the test to report). Every request is recorded in :attr:`OIDCProvider.events`.

Usage::

    with OIDCProvider(client_id="app", client_secret="s3cret", redirect_uris=["http://127.0.0.1:8501/oauth2callback"],
                      users={"ada@clinic.test": "Ada"}) as idp:
        idp.metadata_url  # -> server_metadata_url of the app's [auth] secrets
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from joserfc import jwt
from joserfc.jwk import RSAKey

CODE_LIFETIME_S = 60
TOKEN_LIFETIME_S = 3600


@dataclass(frozen=True)
class Event:
    """One request the provider answered: method, path, query/form parameters (secrets masked), status."""

    method: str
    path: str
    params: dict[str, str]
    status: int


@dataclass
class _Grant:
    email: str
    client_id: str
    redirect_uri: str
    nonce: str
    code_challenge: str
    scope: str
    expires: float
    used: bool = False


@dataclass
class _State:
    pending: dict[str, dict[str, str]] = field(default_factory=dict)   # request id -> authorize params
    grants: dict[str, _Grant] = field(default_factory=dict)            # code -> grant
    tokens: dict[str, str] = field(default_factory=dict)               # access token -> email
    lock: threading.Lock = field(default_factory=threading.Lock)


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def pkce_challenge(verifier: str) -> str:
    """The S256 code challenge of a PKCE ``verifier`` (RFC 7636)."""
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


class OIDCProvider:
    """The provider; a context manager that serves on a free port of 127.0.0.1 in a background thread.

    Parameters
    ----------
    client_id, client_secret
        The one registered client (the app's ``[auth]`` ``client_id`` / ``client_secret``).
    redirect_uris
        The redirect URIs registered for the client (exact match, as real providers do).
    users
        Test accounts: email -> display name. All are "verified" and may sign in.
    """

    def __init__(self, *, client_id: str, client_secret: str, redirect_uris: Iterable[str],
                 users: Mapping[str, str]) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uris = tuple(redirect_uris)
        self.users = dict(users)
        self.kid = "kap-e2e-" + secrets.token_hex(4)
        self.key = RSAKey.generate_key(2048, parameters={"kid": self.kid, "use": "sig", "alg": "RS256"},
                                       private=True)
        self.events: list[Event] = []
        self.errors: list[str] = []
        self._state = _State()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # ------------------------------------------------------------------------------------------- lifecycle

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metadata_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    def start(self) -> Self:
        provider = self

        class Handler(_Handler):
            idp = provider

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="oidc-provider", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------------- protocol

    def metadata(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "userinfo_endpoint": f"{self.issuer}/userinfo",
            "end_session_endpoint": f"{self.issuer}/logout",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "email", "profile"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "code_challenge_methods_supported": ["S256"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nonce", "email", "email_verified", "name"],
        }

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.key.as_dict(private=False)]}

    def claims_for(self, email: str) -> dict[str, Any]:
        return {"sub": "user-" + hashlib.sha256(email.encode()).hexdigest()[:16], "email": email,
                "email_verified": True, "name": self.users[email]}

    def check_authorize(self, params: Mapping[str, str]) -> str | None:
        """Why an authorization request is refused, or None when it is acceptable."""
        if params.get("response_type") != "code":
            return f"response_type must be 'code' (got {params.get('response_type')!r})."
        if params.get("client_id") != self.client_id:
            return f"unknown client_id {params.get('client_id')!r}."
        if params.get("redirect_uri") not in self.redirect_uris:
            return (f"redirect_uri {params.get('redirect_uri')!r} is not registered for this client "
                    f"(registered: {', '.join(self.redirect_uris)}).")
        if "openid" not in params.get("scope", "").split():
            return f"the scope must include 'openid' (got {params.get('scope')!r})."
        for name in ("state", "nonce", "code_challenge"):
            if not params.get(name):
                return f"the request has no {name}."
        if params.get("code_challenge_method") != "S256":
            return f"code_challenge_method must be S256 (got {params.get('code_challenge_method')!r})."
        return None

    def new_pending(self, params: Mapping[str, str]) -> str:
        request_id = secrets.token_urlsafe(16)
        with self._state.lock:
            self._state.pending[request_id] = dict(params)
        return request_id

    def approve(self, request_id: str, email: str | None) -> str:
        """The redirect back to the app for a pending request: a code for ``email``, or access_denied."""
        with self._state.lock:
            params = self._state.pending.pop(request_id, None)
        if params is None:
            raise _Refused("this sign-in request is unknown or was already answered; start again from the app.")
        back: dict[str, str] = {"state": params["state"]}
        if email is None:
            back.update(error="access_denied", error_description="The user cancelled the sign-in.")
        else:
            if email not in self.users:
                raise _Refused(f"no test account {email!r}.")
            code = secrets.token_urlsafe(24)
            with self._state.lock:
                self._state.grants[code] = _Grant(email=email, client_id=params["client_id"],
                                                  redirect_uri=params["redirect_uri"], nonce=params["nonce"],
                                                  code_challenge=params["code_challenge"], scope=params["scope"],
                                                  expires=time.time() + CODE_LIFETIME_S)
            back["code"] = code
        separator = "&" if "?" in params["redirect_uri"] else "?"
        return params["redirect_uri"] + separator + urlencode(back)

    def token(self, form: Mapping[str, str], authorization: str | None) -> dict[str, Any]:
        """Exchange an authorization code (RFC 6749 §4.1.3 with PKCE) for tokens."""
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if authorization and authorization.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(authorization[6:]).decode()
            except (ValueError, UnicodeDecodeError):
                raise _Refused("malformed HTTP Basic credentials.", error="invalid_client") from None
            client_id, _, client_secret = (unquote(part) for part in decoded.partition(":"))
        if client_id != self.client_id or client_secret != self.client_secret:
            raise _Refused("wrong client credentials.", error="invalid_client")
        if form.get("grant_type") != "authorization_code":
            raise _Refused(f"grant_type {form.get('grant_type')!r} is not supported.",
                           error="unsupported_grant_type")
        with self._state.lock:
            grant = self._state.grants.get(form.get("code", ""))
            if grant is None or grant.used or grant.expires < time.time():
                raise _Refused("the code is unknown, expired or already used.", error="invalid_grant")
            grant.used = True
        if form.get("redirect_uri") != grant.redirect_uri:
            raise _Refused("redirect_uri differs from the authorization request.", error="invalid_grant")
        if pkce_challenge(form.get("code_verifier", "")) != grant.code_challenge:
            raise _Refused("the PKCE code_verifier does not match the code_challenge.", error="invalid_grant")
        access_token = secrets.token_urlsafe(32)
        with self._state.lock:
            self._state.tokens[access_token] = grant.email
        now = int(time.time())
        claims = dict(self.claims_for(grant.email), iss=self.issuer, aud=self.client_id, iat=now,
                      exp=now + TOKEN_LIFETIME_S, nonce=grant.nonce, auth_time=now,
                      at_hash=_b64url(hashlib.sha256(access_token.encode()).digest()[:16]))
        id_token = jwt.encode({"alg": "RS256", "kid": self.kid, "typ": "JWT"}, claims, self.key)
        return {"access_token": access_token, "token_type": "Bearer", "expires_in": TOKEN_LIFETIME_S,
                "scope": grant.scope, "id_token": id_token}

    def userinfo(self, authorization: str | None) -> dict[str, Any]:
        token = (authorization or "")[7:] if (authorization or "").lower().startswith("bearer ") else ""
        with self._state.lock:
            email = self._state.tokens.get(token)
        if email is None:
            raise _Refused("unknown or missing bearer token.", error="invalid_token", status=401)
        return self.claims_for(email)

    def logout_redirect(self, params: Mapping[str, str]) -> str | None:
        """Where the end-session endpoint sends the browser (None: show a 'signed out' page)."""
        with self._state.lock:
            self._state.tokens.clear()
        target = params.get("post_logout_redirect_uri")
        if target and target not in self.redirect_uris:
            raise _Refused(f"post_logout_redirect_uri {target!r} is not registered for this client.")
        if params.get("client_id") not in (None, self.client_id):
            raise _Refused(f"unknown client_id {params.get('client_id')!r}.")
        return target

    def account_chooser(self, request_id: str) -> str:
        buttons = "\n".join(
            f'<button type="submit" name="email" value="{html.escape(email)}">Sign in as {html.escape(email)}'
            f"</button><br>" for email in self.users)
        return f"""<!doctype html><html><head><meta charset="utf-8"><title>Test identity provider</title>
<style>body{{font-family:sans-serif;margin:3em}} button{{margin:.3em 0;padding:.5em 1em;font-size:1em}}</style>
</head><body><h1>Test identity provider</h1><p>Choose an account to sign in to <b>{html.escape(self.client_id)}</b>
</p><form method="post" action="/approve"><input type="hidden" name="request" value="{html.escape(request_id)}">
{buttons}<button type="submit" name="cancel" value="1">Cancel</button></form></body></html>"""


class _Refused(Exception):
    def __init__(self, message: str, *, error: str = "invalid_request", status: int = 400) -> None:
        super().__init__(message)
        self.error = error
        self.status = status


_SECRET_FIELDS = frozenset({"code", "client_secret", "code_verifier", "id_token_hint", "access_token"})


class _Handler(BaseHTTPRequestHandler):
    idp: OIDCProvider
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: events are recorded instead
        return

    # ------------------------------------------------------------------------------------------- plumbing

    def _query(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}

    def _form(self) -> dict[str, str]:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        return {k: v[-1] for k, v in parse_qs(body).items()}

    def _record(self, params: Mapping[str, str], status: int) -> None:
        shown = {k: ("***" if k in _SECRET_FIELDS else v) for k, v in params.items()}
        self.idp.events.append(Event(self.command, urlsplit(self.path).path, shown, status))

    def _send(self, status: int, body: str | bytes, content_type: str,
              headers: Mapping[str, str] | None = None) -> None:
        data = body.encode("utf-8") if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _json(self, status: int, payload: Mapping[str, Any], params: Mapping[str, str]) -> None:
        self._record(params, status)
        self._send(status, json.dumps(payload), "application/json")

    def _redirect(self, location: str, params: Mapping[str, str]) -> None:
        self._record(params, 302)
        self._send(302, "", "text/plain", {"Location": location})

    def _refuse(self, err: _Refused, params: Mapping[str, str], *, as_json: bool) -> None:
        path = urlsplit(self.path).path
        self.idp.errors.append(f"{self.command} {path}: {err}")
        if as_json:
            self._json(err.status, {"error": err.error, "error_description": str(err)}, params)
        else:
            self._record(params, err.status)
            self._send(err.status, f"<!doctype html><h1>Sign-in refused</h1><p>{html.escape(str(err))}</p>",
                       "text/html; charset=utf-8")

    # ------------------------------------------------------------------------------------------- routes

    def do_GET(self) -> None:  # http.server's naming
        path, params, idp = urlsplit(self.path).path, self._query(), self.idp
        try:
            if path == "/.well-known/openid-configuration":
                self._json(200, idp.metadata(), params)
            elif path == "/jwks":
                self._json(200, idp.jwks(), params)
            elif path == "/authorize":
                problem = idp.check_authorize(params)
                if problem:
                    raise _Refused(problem)
                self._record(params, 200)
                self._send(200, idp.account_chooser(idp.new_pending(params)), "text/html; charset=utf-8")
            elif path == "/userinfo":
                self._json(200, idp.userinfo(self.headers.get("Authorization")), params)
            elif path == "/favicon.ico":
                self._send(204, b"", "image/x-icon")
            elif path == "/logout":
                target = idp.logout_redirect(params)
                if target:
                    self._redirect(target, params)
                else:
                    self._record(params, 200)
                    self._send(200, "<!doctype html><h1>Signed out</h1>", "text/html; charset=utf-8")
            else:
                self._refuse(_Refused(f"no such endpoint {path!r}.", status=404), params, as_json=True)
        except _Refused as err:
            self._refuse(err, params, as_json=path not in ("/authorize", "/logout"))

    def do_POST(self) -> None:  # http.server's naming
        path, form, idp = urlsplit(self.path).path, self._form(), self.idp
        try:
            if path == "/approve":
                email = None if form.get("cancel") else form.get("email", "")
                self._redirect(idp.approve(form.get("request", ""), email), form)
            elif path == "/token":
                self._json(200, idp.token(form, self.headers.get("Authorization")), form)
            elif path == "/userinfo":
                self._json(200, idp.userinfo(self.headers.get("Authorization")), form)
            else:
                self._refuse(_Refused(f"no such endpoint {path!r}.", status=404), form, as_json=True)
        except _Refused as err:
            self._refuse(err, form, as_json=path != "/approve")
