"""Helpers of the OpenID Connect provider tests: apps registered through the admin API, an
authorization request driven through a test browser, and authlib's OAuth 2 client for the
token endpoint (a relying party the provider's code did not write)."""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from authlib.integrations.httpx_client import AsyncOAuth2Client
from joserfc import jwt
from joserfc.jwk import KeySet

from core.models import Base
from tests.support.accounts import PUBLIC_URL, Browser, Person, redirected_to, sign_in
from tests.support.admin_pages import sign_in_with_totp
from tests.support.harness import Stack

APP_CALLBACK = "https://crm.example.test/callback"
REFRESH = re.compile(r'<meta http-equiv="refresh" content="0;url=([^"]+)">')
SCOPE = "openid email profile"


@dataclass
class App:
    """A registered client app and what it knows (its id, its secret if any)."""

    client_id: str
    client_secret: str | None
    redirect_uri: str
    auth_method: str
    registration: dict[str, Any]

    def oauth(self, stack: Stack) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self.client_id,
            client_secret=self.client_secret,
            token_endpoint_auth_method=self.auth_method,
            redirect_uri=self.redirect_uri,
            scope=SCOPE,
            code_challenge_method="S256",
            transport=stack.transport,
            base_url=PUBLIC_URL,
        )


async def register(stack: Stack, **metadata: Any) -> App:
    return await register_with(stack.http, stack.admin, **metadata)


async def register_with(http: httpx.AsyncClient, headers: dict[str, str], **metadata: Any) -> App:
    """An app registered through the admin API (`http`, with an admin key in `headers`)."""
    body = {"client_name": "agentOS CRM", "redirect_uris": [APP_CALLBACK], **metadata}
    response = await http.post("/api/v1/clients", json=body, headers=headers)
    assert response.status_code == 201, response.text
    data = response.json()
    return App(
        data["client_id"],
        data.get("client_secret"),
        data["redirect_uris"][0],
        data["token_endpoint_auth_method"],
        data,
    )


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


@dataclass
class Authorization:
    """One authorization request as the app sends it: its state, nonce and PKCE verifier."""

    app: App
    state: str
    nonce: str
    verifier: str
    params: dict[str, str]


def authorization(app: App, **extra: str) -> Authorization:
    verifier, challenge = pkce_pair()
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    params = {
        "response_type": "code",
        "client_id": app.client_id,
        "redirect_uri": app.redirect_uri,
        "scope": SCOPE,
        "state": state,
        "nonce": nonce,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }
    return Authorization(app, state, nonce, verifier, {k: v for k, v in params.items() if v != ""})


def sent_back_to(response: httpx.Response) -> str:
    """Where the provider sent the browser: a redirect, or (after the sign-in form) the page
    that refreshes to the app."""
    if response.status_code in (302, 303):
        return response.headers["location"]
    refresh = REFRESH.search(response.text)
    assert response.status_code == 200 and refresh, (response.status_code, response.text[:500])
    return html.unescape(refresh.group(1))


def callback_params(response: httpx.Response, redirect_uri: str) -> dict[str, str]:
    """The query the provider sent the browser back to the app with."""
    location = sent_back_to(response)
    assert location.startswith(redirect_uri + "?"), location
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def code_for(browser: Browser, request: Authorization) -> str:
    """The code a signed-in browser gets at once, checked to come with the state and `iss`."""
    response = await browser.get("/oidc/authorize", **request.params)
    params = callback_params(response, request.app.redirect_uri)
    assert params["state"] == request.state and params["iss"] == PUBLIC_URL, params
    return params["code"]


async def signed_in_browser(stack: Stack, email: str, **extra: str) -> Browser:
    browser = stack.browser()
    response = await sign_in(browser, email, **extra)
    assert response.status_code == 303, response.text
    return browser


async def signed_in_admin(stack: Stack, **options: Any) -> tuple[Person, Browser]:
    """An admin (with an authenticator, as admins sign in) signed in on the admin pages;
    `options` as `make_person` takes them (names, a known password hash). The browser is the
    caller's to close, if it cares to."""
    admin = await stack.person(mfa=True, is_admin=True, **options)
    browser = stack.browser()
    assert redirected_to(await sign_in_with_totp(browser, admin), "/sso/account")
    return admin, browser


async def signed_in_with_app(stack: Stack, **metadata: Any) -> tuple[Person, App, Browser]:
    """A person signed in in a browser of their own, and an app registered with `metadata`."""
    person = await stack.person()
    app = await register(stack, **metadata)
    return person, app, await signed_in_browser(stack, person.email)


async def redeem(stack: Stack, request: Authorization, code: str, **extra: Any) -> dict[str, Any]:
    """The token endpoint's answer to authlib's client (raises on an error answer)."""
    async with request.app.oauth(stack) as client:
        token = await client.fetch_token(
            f"{PUBLIC_URL}/oidc/token",
            grant_type="authorization_code",
            code=code,
            code_verifier=request.verifier,
            **extra,
        )
    return dict(token)


def token_form(request: Authorization, code: str, **extra: str) -> dict[str, str]:
    """The app's token request for `code`, with fields added, changed or ("") left out."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": request.app.redirect_uri,
        "code_verifier": request.verifier,
        **extra,
    }
    return {k: v for k, v in form.items() if v != ""}


async def token_error(
    stack: Stack, form: dict[str, str], auth: tuple[str, str] | None = None
) -> httpx.Response:
    """A raw token request, for the answers authlib's client would raise on."""
    async with httpx.AsyncClient(transport=stack.transport, base_url=PUBLIC_URL) as http:
        return await http.post("/oidc/token", data=form, auth=auth)


async def exchange(http: httpx.AsyncClient, request: Authorization, code: str) -> dict[str, Any]:
    """The app's token request for `code` (client_secret_basic), answered 200."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": request.app.redirect_uri,
        "code_verifier": request.verifier,
    }
    assert request.app.client_secret is not None
    response = await http.post(
        "/oidc/token", data=form, auth=(request.app.client_id, request.app.client_secret)
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def keys(http: httpx.AsyncClient) -> KeySet:
    """The provider's JWKS, from `http` (a client whose base URL is the provider)."""
    response = await http.get("/oidc/jwks")
    assert response.status_code == 200
    return KeySet.import_key_set(response.json())


async def id_token_claims(http: httpx.AsyncClient, request: Authorization, id_token: str) -> dict[str, Any]:
    """The ID token checked as a relying party must: signature by a published key, issuer,
    audience, expiry and nonce."""
    decoded = jwt.decode(id_token, await keys(http))
    claims = decoded.claims
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": str(http.base_url).rstrip("/")},
        aud={"essential": True, "value": request.app.client_id},
        exp={"essential": True},
        nonce={"essential": True, "value": request.nonce},
    ).validate(claims)
    return {**claims, "_header": decoded.header}


async def userinfo(stack: Stack, access_token: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=stack.transport, base_url=PUBLIC_URL) as http:
        return await http.get("/oidc/userinfo", headers={"Authorization": f"Bearer {access_token}"})


def remove_action(page: httpx.Response, name: str) -> str:
    """The Remove access form of the app called `name` on the account page."""
    text = page.text
    at = text.index(f"<strong>{name}</strong>")
    start = text.index('action="', at) + len('action="')
    return text[start : text.index('"', start)]


async def client_post(stack: Stack, app: App, path: str, **form: str) -> httpx.Response:
    """A confidential app's POST (client_secret_basic), or a public one's with its client_id."""
    async with httpx.AsyncClient(transport=stack.transport, base_url=PUBLIC_URL) as http:
        if app.client_secret is None:
            return await http.post(path, data={**form, "client_id": app.client_id})
        return await http.post(path, data=form, auth=(app.client_id, app.client_secret))


async def database_text(stack: Stack) -> str:
    """Every row of every table, as text: for proving what is never stored."""
    async with stack.sessions() as session:
        dump = []
        for table in Base.metadata.sorted_tables:
            dump += [repr(tuple(row)) for row in (await session.execute(table.select())).all()]
    return "\n".join(dump)


Received = list[dict[str, list[str]]]


@contextmanager
def logout_receiver() -> Iterator[tuple[str, Received]]:
    """An app's back-channel logout endpoint on a loopback port: its URI, and what it was sent."""
    received: Received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            received.append(parse_qs(self.rfile.read(length).decode()))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/backchannel-logout", received
    finally:
        server.shutdown()


async def told_sids(stack: Stack, received: Received) -> list[str]:
    """The sessions the logout tokens an app received name, each token checked."""
    sids = []
    for sent in received:
        decoded = jwt.decode(sent["logout_token"][0], await keys(stack.http))
        assert decoded.header["typ"] == "logout+jwt" and "nonce" not in decoded.claims
        sids.append(str(decoded.claims["sid"]))
    return sorted(sids)


async def refresh_refused(stack: Stack, app: App, refresh_token: str) -> bool:
    async with httpx.AsyncClient(transport=stack.transport, base_url=PUBLIC_URL) as http:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        if app.client_secret is None:
            answer = await http.post("/oidc/token", data={**form, "client_id": app.client_id})
        else:
            answer = await http.post("/oidc/token", data=form, auth=(app.client_id, app.client_secret))
    return answer.status_code == 400 and answer.json().get("error") == "invalid_grant"
