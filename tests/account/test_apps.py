"""Apps you've allowed, on the account page: the apps a person consented to and those holding
live refresh tokens for them, and Remove access, which withdraws the consent and ends every
token that app holds for the person at once (the app asks for consent again next time).
In-process, on SQLite and PostgreSQL. docs/security.md §20 and §32 are what these prove."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import select

from core.models import AuditEvent, OidcConsent, OidcGrant
from tests.support.accounts import Browser, hidden_fields, page_text
from tests.support.harness import Stack, running_app
from tests.support.oidc import (
    App,
    authorization,
    callback_params,
    code_for,
    redeem,
    refresh_refused,
    remove_action,
    signed_in_browser,
    signed_in_with_app,
    userinfo,
)

pytestmark = [pytest.mark.pages, pytest.mark.asyncio(loop_scope="session")]

OFFLINE = {"grant_types": ["authorization_code", "refresh_token"]}
CONSENT = "/sso/authorize/consent"
HEADING = "Apps you've allowed"


@pytest_asyncio.fixture(loop_scope="session")
async def app_stack(database_url: str) -> AsyncIterator[Stack]:
    async with running_app(database_url) as stack:
        yield stack


async def allowed(stack: Stack, browser: Browser, app: App) -> dict[str, Any]:
    """The app's tokens after the person allows it on the consent screen (offline_access)."""
    request = authorization(app, scope="openid email profile offline_access")
    sent = await browser.get("/oidc/authorize", **request.params)
    assert sent.headers["location"] == CONSENT, sent.text
    page = await browser.get(CONSENT)
    answer = await browser.submit(page, CONSENT, decision="allow")
    return await redeem(stack, request, callback_params(answer, app.redirect_uri)["code"])


async def signed_in(stack: Stack, **metadata: Any) -> tuple[App, Browser]:
    _person, app, browser = await signed_in_with_app(stack, **{**OFFLINE, **metadata})
    return app, browser


async def live_grants(stack: Stack, client_id: str) -> int:
    async with stack.sessions() as db:
        rows = await db.scalars(
            select(OidcGrant).where(OidcGrant.client_id == client_id, OidcGrant.revoked_at.is_(None))
        )
        return len(rows.all())


async def held(stack: Stack, client_id: str) -> tuple[int, int]:
    """The app's consents and live grants."""
    return await consent_count(stack, client_id), await live_grants(stack, client_id)


async def consent_count(stack: Stack, client_id: str) -> int:
    async with stack.sessions() as db:
        return len((await db.scalars(select(OidcConsent).where(OidcConsent.client_id == client_id))).all())


async def test_remove_access_withdraws_consent_and_ends_the_apps_tokens(app_stack: Stack) -> None:
    app, browser = await signed_in(app_stack, require_consent=True, client_name="Team Wiki")
    tokens = await allowed(app_stack, browser, app)

    page = await browser.get("/sso/account")
    text = page_text(page)
    assert HEADING in text and "Team Wiki Allowed" in text and "Last used" in text
    assert "Remove access signs the app out of your account at once" in text

    done = await browser.submit(page, remove_action(page, "Team Wiki"))
    assert done.status_code == 200, done.text
    assert (
        "Team Wiki no longer has access to your account: it was signed out, and it will ask for your "
        "permission again the next time you use it."
    ) in page_text(done)
    assert "No apps have access to your account." in page_text(done)

    # The refresh token family and the access token are dead, the consent is gone.
    assert await refresh_refused(app_stack, app, tokens["refresh_token"])
    assert (await userinfo(app_stack, tokens["access_token"])).status_code == 401
    assert await held(app_stack, app.client_id) == (0, 0)
    # ... so the app gets the consent screen again.
    again = await browser.get("/oidc/authorize", **authorization(app).params)
    assert again.headers["location"] == CONSENT

    async with app_stack.sessions() as db:
        removed = select(AuditEvent).where(AuditEvent.action == "oidc.access_removed")
        [event] = (await db.scalars(removed)).all()
    assert event.details == {"client_id": app.client_id, "consent_withdrawn": True, "grants_revoked": 1}
    assert event.actor == f"staff:{event.target}" and event.outcome == "success"


async def test_an_app_without_consent_is_listed_while_it_holds_refresh_tokens(app_stack: Stack) -> None:
    app, browser = await signed_in(app_stack, client_name="Rota Planner")
    request = authorization(app, scope="openid email profile offline_access")
    tokens = await redeem(app_stack, request, await code_for(browser, request))
    page = await browser.get("/sso/account")
    assert "Rota Planner Last used" in page_text(page)

    done = await browser.submit(page, remove_action(page, "Rota Planner"))
    assert "you'll sign in to it again the next time you use it" in page_text(done)
    assert "Rota Planner" not in page_text(done).split("signed out")[-1]
    assert await refresh_refused(app_stack, app, tokens["refresh_token"])
    assert await live_grants(app_stack, app.client_id) == 0
    # Without require_consent, the app signs the person in again without asking.
    assert await code_for(browser, authorization(app))


async def test_an_app_holding_no_tokens_and_no_consent_is_not_listed(app_stack: Stack) -> None:
    app, browser = await signed_in(app_stack, client_name="Canteen Menu")
    request = authorization(app)  # no offline_access: an access token only
    await redeem(app_stack, request, await code_for(browser, request))
    page = await browser.get("/sso/account")
    assert "Canteen Menu" not in page_text(page)
    assert "No apps have access to your account." in page_text(page)


async def test_another_persons_grant_is_not_found_and_left_alone(app_stack: Stack) -> None:
    app, browser = await signed_in(app_stack, require_consent=True, client_name="Team Wiki")
    tokens = await allowed(app_stack, browser, app)
    theirs = remove_action(await browser.get("/sso/account"), "Team Wiki")

    other = await app_stack.person()
    intruder = await signed_in_browser(app_stack, other.email)
    own_page = await intruder.get("/sso/account")
    answer = await intruder.post(theirs, {"csrf": _csrf(own_page)})
    assert answer.status_code == 404
    for ref in ("not-a-grant", "00000000-0000-0000-0000-000000000000"):
        missing = await intruder.post(f"/sso/account/apps/{ref}/remove", {"csrf": _csrf(own_page)})
        assert missing.status_code == 404
    assert await held(app_stack, app.client_id) == (1, 1)
    assert not await refresh_refused(app_stack, app, tokens["refresh_token"])


async def test_a_bad_csrf_token_changes_nothing(app_stack: Stack) -> None:
    app, browser = await signed_in(app_stack, require_consent=True, client_name="Team Wiki")
    tokens = await allowed(app_stack, browser, app)
    page = await browser.get("/sso/account")
    answer = await browser.post(remove_action(page, "Team Wiki"), {"csrf": "forged"})
    assert answer.status_code == 400
    assert "This form has expired. Reload the page and try again." in page_text(answer)
    assert "Team Wiki Allowed" in page_text(answer)
    assert await held(app_stack, app.client_id) == (1, 1)
    assert not await refresh_refused(app_stack, app, tokens["refresh_token"])


async def test_signed_out_it_goes_to_the_sign_in_page(app_stack: Stack) -> None:
    app, browser = await signed_in(app_stack, require_consent=True, client_name="Team Wiki")
    await allowed(app_stack, browser, app)
    action = remove_action(await browser.get("/sso/account"), "Team Wiki")
    stranger = app_stack.browser()
    answer = await stranger.post(action, {"csrf": "x"})
    assert answer.status_code == 303 and answer.headers["location"].startswith("/sso/login")
    assert await consent_count(app_stack, app.client_id) == 1


def _csrf(page: httpx.Response) -> str:
    return hidden_fields(page, "/sso/logout")["csrf"]
