"""The consent screen of an app registered with require_consent: asked on the first
authorization for that app (Allow remembers it for the person and app, Cancel tells the app
access_denied), asked again for prompt=consent, and never shown for prompt=none, which gets
consent_required. In-process, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import select

from core.models import OidcConsent
from tests.support.accounts import PASSWORD, PUBLIC_URL, Browser, hidden_fields, page_text
from tests.support.harness import Stack, running_app
from tests.support.oidc import (
    App,
    Authorization,
    authorization,
    callback_params,
    code_for,
    redeem,
    signed_in_with_app,
)

pytestmark = [pytest.mark.pages, pytest.mark.asyncio(loop_scope="session")]

CONSENT = "/sso/authorize/consent"
ASKS = (
    "agentOS CRM wants to sign you in with agentOS Single Sign-On: "
    "it will see your name, email address and roles"
)


@pytest_asyncio.fixture(loop_scope="session")
async def app_stack(database_url: str) -> AsyncIterator[Stack]:
    async with running_app(database_url) as stack:
        yield stack


async def asked(browser: Browser, app: App, **extra: str) -> tuple[httpx.Response, dict[str, str]]:
    """An authorization request that lands on the consent page: the page, and the request."""
    request = authorization(app, **extra)
    return await consent_page_for(browser, request), request.params


async def consent_page_for(browser: Browser, request: Authorization) -> httpx.Response:
    sent = await browser.get("/oidc/authorize", **request.params)
    assert sent.status_code == 303 and sent.headers["location"] == CONSENT, sent.text
    page = await browser.get(CONSENT)
    assert page.status_code == 200, page.text
    assert ASKS in page_text(page)
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    return page


async def consents(stack: Stack) -> list[OidcConsent]:
    async with stack.sessions() as db:
        return list((await db.scalars(select(OidcConsent))).all())


async def test_allow_gives_the_app_its_code_and_is_remembered(app_stack: Stack) -> None:
    person, app, browser = await signed_in_with_app(app_stack, require_consent=True)
    page, params = await asked(browser, app)
    allowed = await browser.submit(page, CONSENT, decision="allow")
    back = callback_params(allowed, app.redirect_uri)  # through the refresh page (CSP form-action)
    assert back["state"] == params["state"] and back["iss"] == PUBLIC_URL and back["code"]
    [consent] = await consents(app_stack)
    assert consent.staff_id == person.staff_id and consent.client_id == app.client_id
    assert consent.scope == "openid email profile"

    # The next time: straight back with a code, no page.
    again = authorization(app)
    token = await redeem(app_stack, again, await code_for(browser, again))
    assert token["id_token"]
    # prompt=none now gets a code too.
    assert await code_for(browser, authorization(app, prompt="none"))


async def test_cancel_answers_access_denied_with_state_and_iss(app_stack: Stack) -> None:
    _person, app, browser = await signed_in_with_app(app_stack, require_consent=True)
    page, params = await asked(browser, app)
    cancelled = await browser.submit(page, CONSENT, decision="cancel")
    back = callback_params(cancelled, app.redirect_uri)
    assert back["error"] == "access_denied" and "code" not in back
    assert back["state"] == params["state"] and back["iss"] == PUBLIC_URL
    assert await consents(app_stack) == []
    # Answered once: the same pending request can't be allowed afterwards.
    late = await browser.submit(page, CONSENT, decision="allow")
    assert late.status_code == 400 and "location" not in late.headers


async def test_prompt_consent_asks_again(app_stack: Stack) -> None:
    _person, app, browser = await signed_in_with_app(app_stack, require_consent=True)
    page, _ = await asked(browser, app)
    await browser.submit(page, CONSENT, decision="allow")
    page, _ = await asked(browser, app, prompt="consent")
    allowed = await browser.submit(page, CONSENT, decision="allow")
    assert callback_params(allowed, app.redirect_uri)["code"]
    assert len(await consents(app_stack)) == 1  # the same grant, renewed


async def test_prompt_none_when_consent_is_needed_answers_consent_required(app_stack: Stack) -> None:
    _person, app, browser = await signed_in_with_app(app_stack, require_consent=True)
    request = authorization(app, prompt="none")
    response = await browser.get("/oidc/authorize", **request.params)
    back = callback_params(response, app.redirect_uri)
    assert back["error"] == "consent_required" and "code" not in back
    assert back["state"] == request.state and back["iss"] == PUBLIC_URL


async def test_the_consent_form_needs_its_csrf_token(app_stack: Stack) -> None:
    _person, app, browser = await signed_in_with_app(app_stack, require_consent=True)
    page, _ = await asked(browser, app)
    forged = await browser.post(CONSENT, {"csrf": "forged", "decision": "allow"})
    assert forged.status_code == 400 and "location" not in forged.headers
    assert "That form had expired" in page_text(forged)
    assert await consents(app_stack) == []
    # The real form still works afterwards.
    assert hidden_fields(page, CONSENT)["csrf"]
    allowed = await browser.submit(page, CONSENT, decision="allow")
    assert callback_params(allowed, app.redirect_uri)["code"]


async def test_an_app_without_require_consent_is_not_asked(app_stack: Stack) -> None:
    _person, app, browser = await signed_in_with_app(app_stack)
    assert await code_for(browser, authorization(app))
    assert await consents(app_stack) == []


async def test_consent_after_signing_in_then_back_to_the_app(app_stack: Stack) -> None:
    """No session yet: the sign-in screen, then the consent page, then the app."""
    person, app, _ = await signed_in_with_app(app_stack, require_consent=True)
    browser = app_stack.browser()
    request = authorization(app, prompt="login")
    to_login = await browser.get("/oidc/authorize", **request.params)
    login = await browser.http.get(to_login.headers["location"])
    signed_in = await browser.submit(login, "/sso/login", email=person.email, password=PASSWORD)
    resumed = await browser.get(signed_in.headers["location"])
    assert resumed.status_code == 303 and resumed.headers["location"] == CONSENT
    page = await browser.get(CONSENT)
    allowed = await browser.submit(page, CONSENT, decision="allow")
    back = callback_params(allowed, app.redirect_uri)
    assert back["state"] == request.state and back["code"]


OFFLINE_SCOPE = "openid email profile offline_access"
OFFLINE_LINE = "It also wants to keep you signed in while you're away (offline access)"
REFRESHING = {"grant_types": ["authorization_code", "refresh_token"]}


async def test_offline_access_is_its_own_line_and_a_refresh_token_only_once_allowed(app_stack: Stack) -> None:
    """OpenID Connect Core §11: offline access needs consent, unless something else permits
    it. For an app that asks for consent, the person's consent must cover it."""
    _person, app, browser = await signed_in_with_app(app_stack, require_consent=True, **REFRESHING)
    page, _ = await asked(browser, app)
    assert OFFLINE_LINE not in page_text(page)
    await browser.submit(page, CONSENT, decision="allow")
    # Allowed without offline access: asking for it asks again, and prompt=none can't have it.
    request = authorization(app, scope=OFFLINE_SCOPE, prompt="none")
    back = callback_params(await browser.get("/oidc/authorize", **request.params), app.redirect_uri)
    assert back["error"] == "consent_required" and "code" not in back
    request = authorization(app, scope=OFFLINE_SCOPE)
    page = await consent_page_for(browser, request)
    assert OFFLINE_LINE in page_text(page)
    allowed = await browser.submit(page, CONSENT, decision="allow")
    code = callback_params(allowed, app.redirect_uri)["code"]
    [consent] = await consents(app_stack)
    assert consent.scope == OFFLINE_SCOPE
    token = await redeem(app_stack, request, code)
    assert token["refresh_token"].startswith("ssort_")
    # Covered now: straight back with a code (and a refresh token) next time.
    again = authorization(app, scope=OFFLINE_SCOPE)
    assert (await redeem(app_stack, again, await code_for(browser, again)))["refresh_token"]


async def test_offline_access_cancelled_gives_nothing(app_stack: Stack) -> None:
    _person, app, browser = await signed_in_with_app(app_stack, require_consent=True, **REFRESHING)
    page, _ = await asked(browser, app, scope=OFFLINE_SCOPE)
    assert OFFLINE_LINE in page_text(page)
    back = callback_params(await browser.submit(page, CONSENT, decision="cancel"), app.redirect_uri)
    assert back["error"] == "access_denied" and await consents(app_stack) == []


async def test_an_app_registered_for_refresh_tokens_without_require_consent_is_not_asked(
    app_stack: Stack,
) -> None:
    """Its registration by an administrator, with the refresh_token grant, is what permits it."""
    _person, app, browser = await signed_in_with_app(app_stack, **REFRESHING)
    request = authorization(app, scope=OFFLINE_SCOPE)
    assert (await redeem(app_stack, request, await code_for(browser, request)))["refresh_token"]
    assert await consents(app_stack) == []
