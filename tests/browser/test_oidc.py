"""Single sign-on in a real browser: an app sends a person to sign in and gets them back; a
second app then gets the same browser back with no screen at all; a person with an
authenticator gets tokens that say so. The apps are a route the browser answers itself
(their callback page); their token requests go to the stack over HTTP."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
import pytest_asyncio

from core.db import SessionFactory
from tests.support.accounts import PASSWORD, make_person
from tests.support.browser_steps import BRAND
from tests.support.config import make_settings
from tests.support.oidc import App, authorization, exchange, id_token_claims, register_with
from tests.support.screens import MARKS, Screen
from tests.support.stack import DevStack, free_port

pytestmark = MARKS


class Apps:
    """The apps' callback pages: a local HTTP server that records every callback it gets."""

    def __init__(self) -> None:
        self.arrived: list[str] = []
        arrived = self.arrived

        class Callback(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                arrived.append(self.path)
                body = b"<!doctype html><html lang=en><title>App</title><h1>Signed in</h1></html>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Callback)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def apps() -> Iterator[Apps]:
    served = Apps()
    yield served
    served.server.shutdown()
    served.server.server_close()


@pytest_asyncio.fixture(loop_scope="session")
async def app_http(stack: DevStack) -> AsyncIterator[httpx.AsyncClient]:
    """The apps' own calls to the provider (token, JWKS)."""
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        yield client


def code_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def test_one_sign_in_signs_the_browser_in_to_every_app(
    screen: Screen,
    database: SessionFactory,
    api: httpx.AsyncClient,
    app_http: httpx.AsyncClient,
    stack: DevStack,
    apps: Apps,
) -> None:
    who = await make_person(database, make_settings(), mfa=True, first_name="Sam", last_name="Okafor")
    crm: App = await register_with(api, {}, client_name="CRM", redirect_uris=[f"{apps.url}/crm/callback"])
    lettings = await register_with(
        api, {}, client_name="Lettings", redirect_uris=[f"{apps.url}/lettings/callback"]
    )
    arrived = apps.arrived

    first = authorization(crm, login_hint=who.email)
    await screen.goto(f"/oidc/authorize?{urlencode(first.params)}")
    await screen.check("oidc-login")
    assert await screen.heading() == f"{BRAND} Single Sign-On"
    assert await screen.field("Email address").input_value() == who.email
    await screen.field("Password").fill(PASSWORD)
    await screen.press("Sign in")
    await screen.check("oidc-login-mfa")
    await screen.field("Authenticator code").fill(who.totp_now())
    await screen.press("Sign in")
    await screen.page.wait_for_url(f"{apps.url}/crm/callback**")
    screen.checked.add(len(screen.visits) - 1)  # the refresh to the app: gone at once
    params = code_of(arrived[-1])
    assert params["state"] == first.state and params["iss"] == stack.base_url
    token = await exchange(app_http, first, params["code"])
    claims = await id_token_claims(app_http, first, token["id_token"])
    assert claims["sub"] == str(who.staff_id)
    assert claims["amr"] == ["pwd", "otp", "mfa"] and claims["acr"] == "mfa"

    # The second app: straight back, no screen of ours in between.
    second = authorization(lettings, prompt="none")
    visited = len(screen.visits)
    await screen.goto(f"{stack.base_url}/oidc/authorize?{urlencode(second.params)}")
    assert screen.page.url.startswith(f"{apps.url}/lettings/callback"), screen.page.url
    assert len(screen.visits) == visited, screen.visits[visited:]  # no page of ours shown
    params = code_of(arrived[-1])
    token = await exchange(app_http, second, params["code"])
    claims = await id_token_claims(app_http, second, token["id_token"])
    assert claims["sub"] == str(who.staff_id) and claims["aud"] == [lettings.client_id]


async def test_an_app_that_asks_for_consent_shows_what_it_will_see(
    screen: Screen,
    database: SessionFactory,
    api: httpx.AsyncClient,
    app_http: httpx.AsyncClient,
    stack: DevStack,
    apps: Apps,
) -> None:
    """docs/oidc.md, consent: the first sign-in to an app with require_consent asks; Allow is
    remembered (the next request gets its code with no screen); Cancel tells the app
    access_denied with its state."""
    who = await make_person(database, make_settings(), first_name="Priya", last_name="Natarajan")
    valuations = await register_with(
        api,
        {},
        client_name="Valuations",
        redirect_uris=[f"{apps.url}/valuations/callback"],
        require_consent=True,
    )
    portal = await register_with(
        api,
        {},
        client_name="Tenant portal",
        redirect_uris=[f"{apps.url}/portal/callback"],
        require_consent=True,
    )
    arrived = apps.arrived

    first = authorization(valuations, login_hint=who.email)
    await screen.goto(f"/oidc/authorize?{urlencode(first.params)}")
    screen.checked.add(len(screen.visits) - 1)  # the sign-in screen: checked in the test above
    await screen.field("Password").fill(PASSWORD)
    await screen.press("Sign in")
    await screen.check("oidc-consent")
    assert await screen.heading() == "Allow Valuations?"
    await screen.press("Allow")
    await screen.page.wait_for_url(f"{apps.url}/valuations/callback**")
    screen.checked.add(len(screen.visits) - 1)  # the app's own page
    params = code_of(arrived[-1])
    assert params["state"] == first.state
    token = await exchange(app_http, first, params["code"])
    claims = await id_token_claims(app_http, first, token["id_token"])
    assert claims["sub"] == str(who.staff_id)

    # Remembered: the same app is answered at once, even with prompt=none.
    again = authorization(valuations, prompt="none")
    visited = len(screen.visits)
    await screen.goto(f"{stack.base_url}/oidc/authorize?{urlencode(again.params)}")
    assert screen.page.url.startswith(f"{apps.url}/valuations/callback"), screen.page.url
    assert len(screen.visits) == visited, screen.visits[visited:]
    assert "code" in code_of(arrived[-1])

    # Another app asks on its own; Cancel sends the person back with access_denied.
    other = authorization(portal)
    await screen.goto(f"{stack.base_url}/oidc/authorize?{urlencode(other.params)}")
    assert await screen.heading() == "Allow Tenant portal?"
    screen.checked.add(len(screen.visits) - 1)  # the consent screen again, for another app
    await screen.press("Cancel")
    await screen.page.wait_for_url(f"{apps.url}/portal/callback**")
    screen.checked.add(len(screen.visits) - 1)
    params = code_of(arrived[-1])
    assert params["error"] == "access_denied" and params["state"] == other.state
    assert "code" not in params

    # The account page lists the app allowed (not the one cancelled); Remove access withdraws
    # the consent and ends its tokens, and the app asks again.
    await screen.goto(f"{stack.base_url}/sso/account")
    await screen.check("account-apps")
    shown = await screen.text()
    assert "Apps you've allowed" in shown and "Valuations" in shown and "Tenant portal" not in shown
    await screen.press("Remove access")
    await screen.check("account-apps-removed")
    assert "Valuations no longer has access to your account" in await screen.text()
    assert "No apps have access to your account." in await screen.text()
    refused = await app_http.post(
        "/oidc/userinfo", headers={"Authorization": f"Bearer {token['access_token']}"}
    )
    assert refused.status_code == 401
    await screen.goto(f"{stack.base_url}/oidc/authorize?{urlencode(authorization(valuations).params)}")
    assert await screen.heading() == "Allow Valuations?"
    screen.checked.add(len(screen.visits) - 1)
