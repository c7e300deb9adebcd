"""A signed-in person's own page: MFA set up later with the setup's QR step, recovery codes
shown once and accepted once in place of the authenticator code, and the email each change of
a factor sends. Driven like a browser against the app and a real worker (the notice is a flow).

docs/security.md §12, §13, §37 and §38 are what these prove.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyotp
import pytest
from sqlalchemy import select

from core.models import AuditEvent, RecoveryCode, SsoAccount
from tests.support.accounts import (
    PASSWORD,
    Browser,
    Person,
    account_row,
    audit_events,
    browsing,
    emails_with_subject,
    hidden_fields,
    page_text,
    recovery_codes_in,
    redirected_to,
    sign_in,
    wrong_totp,
)
from tests.support.harness import Stack
from tests.support.setup_pages import manual_key

pytestmark = [pytest.mark.pages, pytest.mark.asyncio(loop_scope="session")]

NOTICE = "Your agentOS Multi-Factor Authentication was changed"
SET_UP = "Set up Multi-Factor Authentication"


async def signed_in(stack: Stack, browser: Browser, person: Person, second: str | None = None) -> None:
    response = await sign_in(browser, person.email)
    if second is not None:
        assert redirected_to(response, "/sso/login/mfa"), response.text
        page = await browser.get("/sso/login/mfa")
        response = await browser.submit(page, "/sso/login/mfa", code=second)
    assert redirected_to(response, "/sso/account"), response.text


async def sign_out(browser: Browser) -> None:
    page = await browser.get("/sso/account")
    assert redirected_to(await browser.submit(page, "/sso/logout"), "/sso/login?notice=signed_out")


async def enrol(stack: Stack, browser: Browser, person: Person) -> tuple[str, list[str]]:
    """From the account page, through the setup's QR step: the secret and the codes shown."""
    account = await browser.get("/sso/account")
    assert SET_UP in page_text(account)
    page = await browser.get("/sso/account/mfa")
    assert page.status_code == 200, page.text
    # The setup flow's step, word for word, with a way back instead of the skip.
    for words in (SET_UP, "This step is optional.", "Complete Setup", "Can't scan it?"):
        assert words in page_text(page)
    assert "No thanks, I'll set it up later" not in page_text(page)
    assert page.headers["cache-control"] == "no-store"
    secret = manual_key(page)
    wrong = await browser.submit(page, "/sso/account/mfa", code=wrong_totp(secret))
    assert wrong.status_code == 400 and "didn't match" in page_text(wrong)
    assert manual_key(wrong) == secret  # the same key until the person finishes
    done = await browser.submit(wrong, "/sso/account/mfa", code=pyotp.TOTP(secret).now())
    assert done.status_code == 200, done.text
    assert "Save your recovery codes" in page_text(done)
    codes = recovery_codes_in(done)
    assert len(codes) == 10 and len(set(codes)) == 10
    return secret, codes


async def test_mfa_set_up_later_from_the_account_page(stack: Stack, browser: Browser) -> None:
    person = await stack.person()
    await signed_in(stack, browser, person)
    secret, codes = await enrol(stack, browser, person)

    row = await account_row(stack.sessions, person)
    assert row.mfa_enabled_at is not None
    assert row.totp_secret_encrypted is not None and secret not in row.totp_secret_encrypted
    async with stack.sessions() as session:
        stored = (await session.scalars(select(RecoveryCode).where(RecoveryCode.account_id == row.id))).all()
    assert len(stored) == 10
    plain = {c.replace("-", "") for c in codes} | set(codes)
    assert not any(code in r.digest for r in stored for code in plain)

    account = await browser.get("/sso/account")
    assert SET_UP not in page_text(account)
    assert "Recovery codes left: 10 of 10." in page_text(account)
    assert redirected_to(await browser.get("/sso/account/mfa"), "/sso/account")

    [body] = await emails_with_subject(stack.sessions, stack.settings, person.email, NOTICE)
    assert "an authenticator app was set up" in body
    assert secret not in body and not any(code in body for code in codes)
    actions = [e.action for e in await audit_events(stack.sessions, person)]
    assert "mfa.code_failed" in actions and "mfa.enrolled" in actions

    # From now on the sign-in asks for the second factor (the next code: enrolling used this one).
    await sign_out(browser)
    await signed_in(stack, browser, person, pyotp.TOTP(secret).at(datetime.now(UTC) + timedelta(seconds=30)))


async def test_a_recovery_code_signs_in_once(stack: Stack, browser: Browser) -> None:
    person = await stack.person()
    other = await stack.person(first_name="Dee")
    await signed_in(stack, browser, person)
    _, codes = await enrol(stack, browser, person)
    async with browsing(stack.transport) as theirs:
        await signed_in(stack, theirs, other)
        _, other_codes = await enrol(stack, theirs, other)
    await sign_out(browser)

    # Typed as a person copies it: upper case, spaces instead of the hyphen.
    await signed_in(stack, browser, person, codes[0].upper().replace("-", " "))
    assert "Recovery codes left: 9 of 10." in page_text(await browser.get("/sso/account"))
    await sign_out(browser)

    for refused in (codes[0], other_codes[1]):  # used already; another person's
        assert redirected_to(await sign_in(browser, person.email), "/sso/login/mfa")
        page = await browser.get("/sso/login/mfa", recovery="1")
        assert "Enter a recovery code" in page_text(page)
        answer = await browser.submit(page, "/sso/login/mfa", code=refused)
        assert answer.status_code == 401
        assert "That recovery code didn't match, or it was already used." in page_text(answer)
    async with stack.sessions() as session:
        events = (
            await session.scalars(
                select(AuditEvent).where(
                    AuditEvent.target == str(person.staff_id), AuditEvent.action == "mfa.recovery_code_used"
                )
            )
        ).all()
    assert [e.details["left"] for e in events] == [9]
    # The other person's code still works for them.
    async with browsing(stack.transport) as theirs:
        await signed_in(stack, theirs, other, other_codes[1])


async def test_a_new_set_voids_the_old_one(stack: Stack, browser: Browser) -> None:
    person = await stack.person()
    await signed_in(stack, browser, person)
    _, old = await enrol(stack, browser, person)
    account = await browser.get("/sso/account")
    fresh = await browser.submit(account, "/sso/account/recovery-codes")
    new = recovery_codes_in(fresh)
    assert len(new) == 10 and not set(new) & set(old)
    bodies = await emails_with_subject(stack.sessions, stack.settings, person.email, NOTICE, count=2)
    assert any("a new set of recovery codes was made" in body for body in bodies)
    await sign_out(browser)

    assert redirected_to(await sign_in(browser, person.email), "/sso/login/mfa")
    page = await browser.get("/sso/login/mfa")
    assert (await browser.submit(page, "/sso/login/mfa", code=old[0])).status_code == 401
    await signed_in(stack, browser, person, new[0])


TURN_OFF = "Turn off multi-factor authentication"


async def test_turning_mfa_off_needs_the_password_and_removes_both_factors(
    stack: Stack, browser: Browser
) -> None:
    person = await stack.person()
    await signed_in(stack, browser, person)
    secret, codes = await enrol(stack, browser, person)
    account = await browser.get("/sso/account")
    assert TURN_OFF in page_text(account)

    wrong = await browser.submit(account, "/sso/account/mfa/off", password="not the password at all")
    assert wrong.status_code == 400
    assert "That password didn't match, so Multi-Factor Authentication is still on." in page_text(wrong)
    row = await account_row(stack.sessions, person)
    assert row.mfa_enabled_at is not None and row.totp_secret_encrypted is not None
    assert row.failed_sign_ins == 1  # counted like a sign-in: a stolen session can't guess freely
    async with stack.sessions() as session:
        stored = (await session.scalars(select(RecoveryCode).where(RecoveryCode.account_id == row.id))).all()
    assert len(stored) == 10
    assert "mfa.remove_failed" in [e.action for e in await audit_events(stack.sessions, person)]

    done = await browser.submit(wrong, "/sso/account/mfa/off", password=PASSWORD)
    assert redirected_to(done, "/sso/account?notice=mfa_off"), done.text
    page = await browser.get("/sso/account", notice="mfa_off")
    assert "Multi-Factor Authentication is off." in page_text(page)
    assert SET_UP in page_text(page) and TURN_OFF not in page_text(page)
    row = await account_row(stack.sessions, person)
    assert row.mfa_enabled_at is None and row.totp_secret_encrypted is None and row.totp_last_step is None
    assert row.failed_sign_ins == 1  # the right password takes back only its own attempt
    async with stack.sessions() as session:
        left = await session.scalar(select(RecoveryCode.id).where(RecoveryCode.account_id == row.id))
    assert left is None
    bodies = await emails_with_subject(stack.sessions, stack.settings, person.email, NOTICE, count=2)
    assert any("Multi-Factor Authentication was turned off" in body for body in bodies)
    assert "mfa.removed" in [e.action for e in await audit_events(stack.sessions, person)]

    # The password alone signs in now; the old codes are nothing.
    await sign_out(browser)
    await signed_in(stack, browser, person)
    assert secret not in (await browser.get("/sso/account")).text and codes


async def test_an_administrator_cannot_turn_mfa_off(stack: Stack, browser: Browser) -> None:
    person = await stack.person(mfa=True, is_admin=True)
    await signed_in(stack, browser, person, person.totp_now())
    account = await browser.get("/sso/account")
    assert TURN_OFF not in page_text(account)
    assert "As an administrator, you keep Multi-Factor Authentication on." in page_text(account)
    answer = await browser.post(
        "/sso/account/mfa/off", {**hidden_fields(account, "/sso/logout"), "password": PASSWORD}
    )
    assert redirected_to(answer, "/sso/account")
    row = await account_row(stack.sessions, person)
    assert row.mfa_enabled_at is not None and row.totp_secret_encrypted is not None


async def test_forms_without_a_csrf_token_change_nothing(stack: Stack, browser: Browser) -> None:
    person = await stack.person(mfa=True)
    await signed_in(stack, browser, person, person.totp_now())
    answer = await browser.post("/sso/account/recovery-codes", {"csrf": "forged"})
    assert redirected_to(answer, "/sso/account")
    off = await browser.post("/sso/account/mfa/off", {"csrf": "forged", "password": PASSWORD})
    assert off.status_code == 400 and "This form has expired" in page_text(off)
    async with stack.sessions() as session:
        assert (await session.scalar(select(RecoveryCode.id).limit(1))) is None
        row = await session.scalar(select(SsoAccount).where(SsoAccount.staff_id == person.staff_id))
    assert row is not None and row.totp_secret_encrypted is not None and row.mfa_enabled_at is not None


async def test_the_account_pages_need_a_sign_in(stack: Stack, browser: Browser) -> None:
    for path in ("/sso/account", "/sso/account/mfa"):
        assert redirected_to(await browser.get(path), "/sso/login")
    for action in ("/sso/account/recovery-codes", "/sso/account/mfa/off"):
        assert redirected_to(await browser.post(action, {}), "/sso/login")
