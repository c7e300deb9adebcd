"""Change password from the account page: the current password first (throttled like a
sign-in), the setup's rules for the new one, then every other session ends, this browser gets
a new session id, and the person is emailed. docs/security.md §1, §2, §16, §18, §20, §26, §38.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from api.cookies import SIGNIN_SESSION, cookie_name
from core.models import AccountStatus
from core.passwords import Hasher
from tests.support.accounts import (
    PASSWORD,
    Browser,
    Person,
    account_row,
    audit_events,
    browsing,
    emails_with_subject,
    outbox,
    page_text,
    redirected_to,
    session_rows,
    sign_in,
    update_account,
)
from tests.support.harness import Stack
from tests.support.oidc import database_text

pytestmark = [pytest.mark.pages, pytest.mark.asyncio(loop_scope="session")]

NEW = "quiet harbour lanterns drift north"
CHANGED = "Your agentOS password was changed"


async def signed_in(browser: Browser, person: Person, password: str = PASSWORD) -> None:
    assert redirected_to(await sign_in(browser, person.email, password), "/sso/account")


async def change(browser: Browser, current: str, new: str, again: str | None = None) -> object:
    page = await browser.get("/sso/account/password")
    assert page.status_code == 200, page.text
    return await browser.submit(
        page, "/sso/account/password", current=current, password=new, confirm=new if again is None else again
    )


def password_works(stack: Stack, stored: str | None, password: str) -> bool:
    settings = stack.settings
    hasher = Hasher(settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism)
    return stored is not None and hasher.verify(stored, password)


async def test_changing_the_password_ends_the_other_sessions_and_tells_the_person(
    stack: Stack, browser: Browser, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    person = await stack.person()
    await signed_in(browser, person)
    async with browsing(stack.transport) as elsewhere:
        await signed_in(elsewhere, person)
        account = await browser.get("/sso/account")
        assert "Change password" in page_text(account)
        old_cookie = browser.cookie(cookie_name(stack.settings, SIGNIN_SESSION))

        done = await change(browser, PASSWORD, NEW)
        assert redirected_to(done, "/sso/account?notice=password_changed"), done.text  # type: ignore[attr-defined]
        page = await browser.get("/sso/account", notice="password_changed")
        assert page.status_code == 200
        assert "Your password was changed, and you were signed out everywhere else." in page_text(page)
        # This browser carries on with a new session id; the other browser is signed out.
        assert browser.cookie(cookie_name(stack.settings, SIGNIN_SESSION)) != old_cookie
        assert redirected_to(await elsewhere.get("/sso/account"), "/sso/login?notice=expired")

    row = await account_row(stack.sessions, person)
    assert password_works(stack, row.password_hash, NEW) and not password_works(
        stack, row.password_hash, PASSWORD
    )
    live = [r for r in await session_rows(stack.sessions, person, "signin") if r.revoked_at is None]
    assert len(live) == 1 and live[0].data["method"] == "password"

    [body] = await emails_with_subject(stack.sessions, stack.settings, person.email, CHANGED)
    assert "every other device that was signed in has been signed out" in body
    assert NEW not in body
    events = [e for e in await audit_events(stack.sessions, person) if e.action == "password.changed"]
    assert len(events) == 1 and events[0].details["sessions_revoked"] == 1

    # The new password signs in; the old one no longer does.
    async with browsing(stack.transport) as later:
        assert (await sign_in(later, person.email, PASSWORD)).status_code == 401
        await signed_in(later, person, NEW)
    # Neither password is stored or logged in the clear.
    text = await database_text(stack)
    for secret in (NEW, PASSWORD):
        assert secret not in text and secret not in caplog.text


@pytest.mark.parametrize(
    ("current", "new", "again", "says"),
    [
        ("not my password at all", NEW, NEW, "That isn't your current password."),
        (PASSWORD, NEW, NEW + "x", "The two new passwords don't match."),
        (PASSWORD, "short", "short", "Use at least 15 characters (this has 5)."),
        (PASSWORD, "password12345678", "password12345678", "similar to a commonly used password"),
        (
            PASSWORD,
            "robin ashcombe agentos",
            "robin ashcombe agentos",
            "Don't build your password from your name",
        ),
        (PASSWORD, PASSWORD, PASSWORD, "That is your current password."),
    ],
)
async def test_a_refused_change_says_why_and_changes_nothing(
    stack: Stack, browser: Browser, current: str, new: str, again: str, says: str
) -> None:
    person = await stack.person()
    await signed_in(browser, person)
    async with browsing(stack.transport) as elsewhere:
        await signed_in(elsewhere, person)
        answer = await change(browser, current, new, again)
        assert answer.status_code == 400  # type: ignore[attr-defined]
        assert says in page_text(answer)  # type: ignore[arg-type]
        assert new not in answer.text and current not in answer.text  # type: ignore[attr-defined]
        assert (await elsewhere.get("/sso/account")).status_code == 200
    row = await account_row(stack.sessions, person)
    assert password_works(stack, row.password_hash, PASSWORD)
    assert row.failed_sign_ins == (1 if says.startswith("That isn't") else 0)
    assert not [s for s, _ in await outbox(stack.sessions, stack.settings, person.email) if s == CHANGED]
    assert "password.changed" not in [e.action for e in await audit_events(stack.sessions, person)]


async def test_a_form_without_its_csrf_token_is_refused(stack: Stack, browser: Browser) -> None:
    person = await stack.person()
    await signed_in(browser, person)
    page = await browser.get("/sso/account/password")
    answer = await browser.submit(
        page, "/sso/account/password", csrf="forged", current=PASSWORD, password=NEW, confirm=NEW
    )
    assert answer.status_code == 400 and "This form has expired." in page_text(answer)
    assert password_works(stack, (await account_row(stack.sessions, person)).password_hash, PASSWORD)


async def test_wrong_current_passwords_are_throttled_like_sign_ins(stack: Stack, browser: Browser) -> None:
    person = await stack.person()
    await signed_in(browser, person)
    for _ in range(5):
        assert (await change(browser, "a wrong guess again", NEW)).status_code == 400  # type: ignore[attr-defined]
    row = await account_row(stack.sessions, person)
    assert row.failed_sign_ins == 5 and row.locked_until is not None
    # The fifth failure locks for one second, which a busy machine can spend before the next
    # request: the lock is held a minute (as later failures' doubled delays would) so the
    # right password below meets it rather than racing it.
    await update_account(stack.sessions, person, locked_until=row.locked_until + timedelta(minutes=1))
    # Locked: even the right password is refused until the delay has passed.
    answer = await change(browser, PASSWORD, NEW)
    assert "That isn't your current password." in page_text(answer)  # type: ignore[arg-type]
    assert password_works(stack, (await account_row(stack.sessions, person)).password_hash, PASSWORD)
    reasons = [e.details.get("reason") for e in await audit_events(stack.sessions, person)]
    assert reasons.count("wrong password") == 5 and "locked" in reasons


async def test_signed_out_or_without_a_password_there_is_nothing_to_change(
    stack: Stack, browser: Browser
) -> None:
    assert redirected_to(await browser.get("/sso/account/password"), "/sso/login")
    person = await stack.person()
    await signed_in(browser, person)
    await update_account(stack.sessions, person, password_hash=None, status=AccountStatus.active.value)
    assert redirected_to(await browser.get("/sso/account/password"), "/sso/account")
    assert "Change password" not in page_text(await browser.get("/sso/account"))
