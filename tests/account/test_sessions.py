"""Where you're signed in: the person's own live sessions in plain words, Sign out for each
other one and Sign out everywhere else, each ending the refresh tokens apps got in the
session and audited. docs/security.md §18, §20, §32, §34."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from authlib.integrations.base_client import OAuthError

from core.oidc.claims import session_claims
from tests.support.accounts import (
    PUBLIC_URL,
    Browser,
    Person,
    audit_events,
    browsing,
    hidden_fields,
    page_text,
    redirected_to,
    session_rows,
    sign_in,
)
from tests.support.harness import Stack
from tests.support.oidc import App, authorization, code_for, redeem, register

pytestmark = [pytest.mark.pages, pytest.mark.asyncio(loop_scope="session")]

FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1"
)


@pytest_asyncio.fixture(loop_scope="session")
async def browser(stack: Stack) -> AsyncIterator[Browser]:
    async with browsing(stack.transport) as person:
        person.http.headers["user-agent"] = FIREFOX
        yield person


async def signed_in(browser: Browser, person: Person) -> None:
    assert redirected_to(await sign_in(browser, person.email), "/sso/account")


async def test_the_page_lists_each_live_session_in_plain_words(stack: Stack, browser: Browser) -> None:
    person = await stack.person()
    await signed_in(browser, person)
    async with browsing(stack.transport) as phone:
        phone.http.headers["user-agent"] = IPHONE
        await signed_in(phone, person)
        account = await browser.get("/sso/account")
        assert "Where you're signed in" in page_text(account)
        page = await browser.get("/sso/account/sessions")
        assert page.status_code == 200, page.text
        text = page_text(page)
        assert "Firefox on Windows (This browser)" in text
        assert "Safari on iPhone" in text and "Safari on iPhone (This browser)" not in text
        assert text.count("with: Password.") == 2
        assert "Sign out everywhere else" in text
    # Only the label is kept, never the whole header.
    rows = await session_rows(stack.sessions, person, "signin")
    assert {r.data["browser"] for r in rows} == {"Firefox on Windows", "Safari on iPhone"}
    assert not any(IPHONE in str(r.data) or FIREFOX in str(r.data) for r in rows)


async def test_sign_out_one_other_session(stack: Stack, browser: Browser) -> None:
    person = await stack.person()
    await signed_in(browser, person)
    async with browsing(stack.transport) as phone, browsing(stack.transport) as laptop:
        phone.http.headers["user-agent"] = IPHONE
        await signed_in(phone, person)
        await signed_in(laptop, person)
        page = await browser.get("/sso/account/sessions")
        # One Sign out form per other session, none for this browser's.
        assert page.text.count('action="/sso/account/sessions/sign-out"') == 2
        handle = _handle_of(page, "Safari on iPhone")
        done = await browser.post(
            "/sso/account/sessions/sign-out",
            {**hidden_fields(page, "/sso/account/sessions/sign-out"), "session": handle},
        )
        assert redirected_to(done, "/sso/account/sessions?notice=signed_out_other"), done.text
        assert redirected_to(await phone.get("/sso/account"), "/sso/login?notice=expired")
        assert (await laptop.get("/sso/account")).status_code == 200
        assert (await browser.get("/sso/account")).status_code == 200
        after = await browser.get("/sso/account/sessions", notice="signed_out_other")
        assert "That browser is signed out." in page_text(after) and "Safari on iPhone" not in page_text(
            after
        )
        # The same again: already gone, said so, nothing else changes.
        again = await browser.post(
            "/sso/account/sessions/sign-out",
            {**hidden_fields(after, "/sso/account/sessions/sign-out"), "session": handle},
        )
        assert again.status_code == 400 and "That browser is already signed out." in page_text(again)
        assert (await laptop.get("/sso/account")).status_code == 200
    events = [e for e in await audit_events(stack.sessions, person) if e.action == "sessions.signed_out_one"]
    assert len(events) == 1 and events[0].details["sid"] == handle


async def test_another_persons_session_or_this_browsers_cannot_be_signed_out_here(
    stack: Stack, browser: Browser
) -> None:
    person, other = await stack.person(), await stack.person(first_name="Dee")
    await signed_in(browser, person)
    async with browsing(stack.transport) as theirs:
        await signed_in(theirs, other)
        [their_handle] = await _handles(stack, other)
        [mine] = await _handles(stack, person)
        page = await browser.get("/sso/account/sessions")
        fields = hidden_fields(page, "/sso/logout")  # the page's CSRF token
        for handle in (their_handle, mine, "", "x" * 64):
            answer = await browser.post("/sso/account/sessions/sign-out", {**fields, "session": handle})
            assert answer.status_code == 400 and "That browser is already signed out." in page_text(answer)
        assert (await theirs.get("/sso/account")).status_code == 200
        assert (await browser.get("/sso/account")).status_code == 200
    assert not [e for e in await audit_events(stack.sessions, other) if e.action.startswith("sessions.")]


async def test_a_form_without_its_csrf_token_signs_nothing_out(stack: Stack, browser: Browser) -> None:
    person = await stack.person()
    await signed_in(browser, person)
    async with browsing(stack.transport) as phone:
        phone.http.headers["user-agent"] = IPHONE
        await signed_in(phone, person)
        page = await browser.get("/sso/account/sessions")
        handle = _handle_of(page, "Safari on iPhone")
        one = await browser.post("/sso/account/sessions/sign-out", {"csrf": "forged", "session": handle})
        others = await browser.post("/sso/account/sessions/sign-out-others", {"csrf": ""})
        for answer in (one, others):
            assert answer.status_code == 400 and "This form has expired." in page_text(answer)
        assert (await phone.get("/sso/account")).status_code == 200


async def test_signed_out_the_page_sends_you_to_sign_in(stack: Stack) -> None:
    async with browsing(stack.transport) as nobody:
        assert redirected_to(await nobody.get("/sso/account/sessions"), "/sso/login")
        answer = await nobody.post("/sso/account/sessions/sign-out-others", {"csrf": ""})
        assert redirected_to(answer, "/sso/login")


async def test_sign_out_everywhere_else_ends_the_others_and_their_apps_tokens(
    stack: Stack, browser: Browser
) -> None:
    person = await stack.person()
    app = await register(stack, grant_types=["authorization_code", "refresh_token"])
    await signed_in(browser, person)
    async with browsing(stack.transport) as phone, browsing(stack.transport) as laptop:
        await signed_in(phone, person)
        await signed_in(laptop, person)
        mine = await _refresh_token(stack, app, browser)
        theirs = await _refresh_token(stack, app, phone)
        page = await browser.get("/sso/account/sessions")
        done = await browser.submit(page, "/sso/account/sessions/sign-out-others")
        assert redirected_to(done, "/sso/account/sessions?notice=signed_out_others"), done.text
        for gone in (phone, laptop):
            assert redirected_to(await gone.get("/sso/account"), "/sso/login?notice=expired")
        after = await browser.get("/sso/account/sessions", notice="signed_out_others")
        assert "You're signed out everywhere else." in page_text(after)
        assert "Sign out everywhere else" not in page_text(after).replace(
            "You're signed out everywhere else.", ""
        )
    # The app signed in through the ended session loses its refresh token; this browser's keeps it.
    with pytest.raises(OAuthError):
        await _refreshed(stack, app, theirs)
    await _refreshed(stack, app, mine)
    [event] = [
        e for e in await audit_events(stack.sessions, person) if e.action == "sessions.signed_out_others"
    ]
    assert event.details["sessions_revoked"] == 2


def _handle_of(page: object, label: str) -> str:
    """The session handle in the Sign out form under the heading naming `label`."""
    text = page.text  # type: ignore[attr-defined]
    start = text.index(f">{label}")
    form = text.index('name="session" value="', start) + len('name="session" value="')
    return str(text[form : text.index('"', form)])


async def _handles(stack: Stack, person: Person) -> list[str]:
    """The handles of the person's live sessions (a page never offers this browser's in a
    form): their `sid`s, from the rows."""
    rows = await session_rows(stack.sessions, person, "signin")
    return [session_claims(stack.settings, row)["sid"] for row in rows if row.revoked_at is None]


async def _refresh_token(stack: Stack, app: App, browser: Browser) -> str:
    request = authorization(app, scope="openid email profile offline_access")
    token = await redeem(stack, request, await code_for(browser, request))
    return str(token["refresh_token"])


async def _refreshed(stack: Stack, app: App, refresh_token: str) -> None:
    async with app.oauth(stack) as client:
        await client.refresh_token(f"{PUBLIC_URL}/oidc/token", refresh_token=refresh_token)
