"""RP-initiated logout 1.0 in-process: an app's ID token as the hint, its registered
post-logout address matched exactly, its state sent back, and a confirmation page when the
hint is missing or names another session."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import pytest_asyncio
from authlib.integrations.base_client import OAuthError

from tests.support.accounts import PUBLIC_URL, Browser, hidden_fields, page_text
from tests.support.harness import Stack, running_app
from tests.support.oidc import App, authorization, code_for, redeem, signed_in_browser, signed_in_with_app

pytestmark = [pytest.mark.pages, pytest.mark.asyncio(loop_scope="session")]
SIGNED_OUT = "https://crm.example.test/signed-out"
METADATA = {
    "post_logout_redirect_uris": [SIGNED_OUT],
    "grant_types": ["authorization_code", "refresh_token"],
}


@pytest_asyncio.fixture(loop_scope="session")
async def app_stack(database_url: str) -> AsyncIterator[Stack]:
    async with running_app(database_url) as stack:
        yield stack


async def tokens(stack: Stack, app: App, browser: Browser) -> dict[str, Any]:
    request = authorization(app, scope="openid email profile offline_access")
    return await redeem(stack, request, await code_for(browser, request))


async def signed_in(browser: Browser) -> bool:
    return (await browser.get("/sso/account")).status_code == 200


async def refresh_works(stack: Stack, app: App, refresh_token: str) -> bool:
    try:
        async with app.oauth(stack) as client:
            await client.refresh_token(f"{PUBLIC_URL}/oidc/token", refresh_token=refresh_token)
    except OAuthError:
        return False
    return True


def query(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def test_discovery_names_the_end_session_endpoint(app_stack: Stack) -> None:
    document = (await app_stack.http.get("/.well-known/openid-configuration")).json()
    assert document["end_session_endpoint"] == f"{PUBLIC_URL}/oidc/logout"
    assert document["backchannel_logout_supported"] is True
    assert document["backchannel_logout_session_supported"] is True


async def test_a_hint_for_this_session_signs_out_at_once_and_returns_with_state(app_stack: Stack) -> None:
    _person, app, browser = await signed_in_with_app(app_stack, **METADATA)
    token = await tokens(app_stack, app, browser)
    response = await browser.get(
        "/oidc/logout", id_token_hint=token["id_token"], post_logout_redirect_uri=SIGNED_OUT, state="s-1"
    )
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert location.startswith(SIGNED_OUT + "?") and query(location) == {"state": "s-1"}
    assert not await signed_in(browser)
    assert not await refresh_works(app_stack, app, token["refresh_token"])


async def test_without_a_hint_the_person_confirms(app_stack: Stack) -> None:
    _person, app, browser = await signed_in_with_app(app_stack, **METADATA)
    token = await tokens(app_stack, app, browser)
    page = await browser.get(
        "/oidc/logout", client_id=app.client_id, post_logout_redirect_uri=SIGNED_OUT, state="s-2"
    )
    assert page.status_code == 200 and "Sign out of agentOS Single Sign-On?" in page_text(page)
    assert await signed_in(browser)
    forged = {**hidden_fields(page, "/oidc/logout/confirm"), "csrf": "x"}
    refused = await browser.post("/oidc/logout/confirm", forged)
    assert refused.status_code == 400 and await signed_in(browser)
    done = await browser.submit(page, "/oidc/logout/confirm")
    assert done.status_code == 200 and "You have signed out" in page_text(done)
    assert f'content="0;url={SIGNED_OUT}?state=s-2"' in done.text
    assert not await signed_in(browser)
    assert not await refresh_works(app_stack, app, token["refresh_token"])


async def test_a_hint_from_another_session_is_stale_and_asks(app_stack: Stack) -> None:
    person, app, first_browser = await signed_in_with_app(app_stack, **METADATA)
    old = await tokens(app_stack, app, first_browser)
    browser = await signed_in_browser(app_stack, person.email)
    page = await browser.get(
        "/oidc/logout", id_token_hint=old["id_token"], post_logout_redirect_uri=SIGNED_OUT
    )
    assert page.status_code == 200 and "Sign out of agentOS Single Sign-On?" in page_text(page)
    assert await signed_in(browser) and await signed_in(first_browser)
    assert "id_token_hint" not in hidden_fields(page, "/oidc/logout/confirm")
    done = await browser.submit(page, "/oidc/logout/confirm")
    assert f'content="0;url={SIGNED_OUT}"' in done.text
    assert not await signed_in(browser) and await signed_in(first_browser)


async def test_an_unregistered_return_address_is_a_page_not_a_redirect(app_stack: Stack) -> None:
    _person, app, browser = await signed_in_with_app(app_stack, **METADATA)
    token = await tokens(app_stack, app, browser)
    hint = token["id_token"]
    for params in (
        {"id_token_hint": hint, "post_logout_redirect_uri": "https://evil.example.test/"},
        {"id_token_hint": hint, "post_logout_redirect_uri": SIGNED_OUT + "/"},
        {"post_logout_redirect_uri": SIGNED_OUT},  # no way to know the app
        {"client_id": "someone-else", "id_token_hint": hint, "post_logout_redirect_uri": SIGNED_OUT},
    ):
        response = await browser.get("/oidc/logout", **params)
        assert response.status_code == 400 and "location" not in response.headers, params
        assert "hasn't registered" in page_text(response) or "different app" in page_text(response)
    assert await signed_in(browser)


async def test_without_a_session_it_goes_straight_back(app_stack: Stack) -> None:
    _person, app, browser = await signed_in_with_app(app_stack, **METADATA)
    token = await tokens(app_stack, app, browser)
    stranger = app_stack.browser()
    response = await stranger.get(
        "/oidc/logout", id_token_hint=token["id_token"], post_logout_redirect_uri=SIGNED_OUT, state="s"
    )
    assert response.status_code == 303 and response.headers["location"] == f"{SIGNED_OUT}?state=s"
    alone = await stranger.get("/oidc/logout")
    assert alone.status_code == 200 and "You have signed out" in page_text(alone)
    assert await signed_in(browser)


async def test_an_app_may_post_its_logout_request(app_stack: Stack) -> None:
    _person, app, browser = await signed_in_with_app(app_stack, **METADATA)
    token = await tokens(app_stack, app, browser)
    response = await browser.http.post(
        "/oidc/logout", data={"id_token_hint": token["id_token"], "post_logout_redirect_uri": SIGNED_OUT}
    )
    assert response.status_code == 303 and response.headers["location"] == SIGNED_OUT
    assert not await signed_in(browser)
