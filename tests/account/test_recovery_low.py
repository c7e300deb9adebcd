"""Every factor change is emailed, and so is running low on recovery codes: when using one
leaves two or fewer, the person is told once per set, and the email holds no code; enrolling
MFA during setup emails the person as the account page's enrolment does. docs/security.md §37,
§38."""

from __future__ import annotations

import pyotp
import pytest

from core import recovery
from core.models import utcnow
from tests.support.accounts import (
    Browser,
    Person,
    emails_with_subject,
    outbox,
    page_text,
    redirected_to,
    sign_in,
)
from tests.support.harness import Stack
from tests.support.setup_pages import Browser as SetupBrowser
from tests.support.setup_pages import at_code_step, manual_key

pytestmark = [pytest.mark.pages, pytest.mark.asyncio(loop_scope="session")]

NOTICE = "Your agentOS Multi-Factor Authentication was changed"
LOW = "two or fewer are left"


async def codes_left(stack: Stack, person: Person, left: int) -> list[str]:
    """A new set for the person with all but `left` of its codes used up; the unused ones."""
    secret = stack.settings.secret_key.get_secret_value()
    async with stack.sessions() as session:
        codes = await recovery.issue(session, secret, person.account_id, utcnow())
        for code in codes[left:]:
            assert await recovery.redeem(session, secret, person.account_id, code, utcnow())
        await session.commit()
    return codes[:left]


async def signed_in_with(browser: Browser, person: Person, code: str) -> None:
    assert redirected_to(await sign_in(browser, person.email), "/sso/login/mfa")
    page = await browser.get("/sso/login/mfa", recovery="1")
    assert redirected_to(await browser.submit(page, "/sso/login/mfa", code=code), "/sso/account")
    signed_out = await browser.submit(await browser.get("/sso/account"), "/sso/logout")
    assert redirected_to(signed_out, "/sso/login?notice=signed_out")


async def notices(stack: Stack, person: Person) -> list[str]:
    return [
        body
        for subject, body in await outbox(stack.sessions, stack.settings, person.email)
        if subject == NOTICE
    ]


async def test_using_a_code_that_leaves_two_tells_the_person_once_per_set(
    stack: Stack, browser: Browser
) -> None:
    person = await stack.person(mfa=True)
    codes = await codes_left(stack, person, 4)
    await signed_in_with(browser, person, codes[0])  # three left: nothing yet
    await signed_in_with(browser, person, codes[1])  # two left
    [body] = await emails_with_subject(stack.sessions, stack.settings, person.email, NOTICE)
    assert LOW in body and "account page" in body
    assert not any(code in body or code.replace("-", "") in body for code in codes)
    await signed_in_with(browser, person, codes[2])  # one left: told already for this set

    # A new set, run down too, is told of again; the notice of the new set itself comes first.
    fresh = await codes_left(stack, person, 3)
    await signed_in_with(browser, person, fresh[0])
    bodies = await emails_with_subject(stack.sessions, stack.settings, person.email, NOTICE, count=2)
    assert [LOW in b for b in bodies] == [True, True]
    assert len(await notices(stack, person)) == 2


async def test_an_authenticator_code_sends_nothing(stack: Stack, browser: Browser) -> None:
    person = await stack.person(mfa=True)
    await codes_left(stack, person, 1)
    assert redirected_to(await sign_in(browser, person.email), "/sso/login/mfa")
    page = await browser.get("/sso/login/mfa")
    assert redirected_to(await browser.submit(page, "/sso/login/mfa", code=person.totp_now()), "/sso/account")
    assert "Recovery codes left: 1 of 10." in page_text(await browser.get("/sso/account"))
    assert await notices(stack, person) == []


async def test_setting_up_mfa_during_setup_emails_the_person(stack: Stack) -> None:
    browser = SetupBrowser(stack)
    try:
        at = await at_code_step(stack, browser)
        confirmed = await browser.submit(at.page, "/sso/setup/confirm", code=at.code)
        assert redirected_to(confirmed, "/sso/setup/mfa"), confirmed.text
        mfa_page = await browser.get("/sso/setup/mfa")
        secret = manual_key(mfa_page)
        finished = await browser.submit(mfa_page, "/sso/setup/mfa", code=pyotp.TOTP(secret).now())
        assert redirected_to(finished, "/sso/setup/done"), finished.text
        # The same form again (a double submit): the step ran once, and so does the email.
        again = await browser.submit(mfa_page, "/sso/setup/mfa", code=pyotp.TOTP(secret).now())
        assert again.status_code in (303, 409), again.text
    finally:
        await browser.aclose()
    address = at.staff["external_email_1"]
    [body] = await emails_with_subject(stack.sessions, stack.settings, address, NOTICE)
    assert "an authenticator app was set up" in body and secret not in body
