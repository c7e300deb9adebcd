"""'Forgot your password?' driven like a browser, against the real PasswordReset flow on the
time-skipping server with the real activities (outbox email), on SQLite and PostgreSQL.

Codes are read from the outbox as a person reads their email; the flow's own `progress` query
says when it holds the code it emailed. Every reset flow a test leaves running is ended once
its activities are done (the time-skipping server stops skipping after a flow is terminated
with an activity running, and later tests sleep). docs/security.md §7-11, §15-17, §19 and §30.

Servers: once a reset has completed (the "password changed" notice goes out from an abandoned
child flow that closes after its parent), that time-skipping server was seen never to skip
time again (temporal-test-server 1.40: `env.sleep` hangs). So this module never touches the
session's shared `temporal_env`, on which later modules sleep: it has a server of its own,
and each test that skips time gets a fresh one.
"""

from __future__ import annotations

import asyncio
import gc
import json
import re
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from joserfc import jwt
from sqlalchemy import select
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from api.services.reset import reset_workflow_id
from core import recovery
from core.crypto import token_hash
from core.models import (
    AuditEvent,
    BrowserSession,
    LogoutOutbox,
    ResetCodeFailure,
    ResetLink,
    SsoAccount,
    utcnow,
)
from core.passkeys import PROOF_PURPOSE
from core.passwords import Hasher
from core.reset_caps import CODES_STOPPED
from tests.support.accounts import (
    GUARD_SECONDS,
    NEW_PASSWORD,
    PASSWORD,
    REFUSED,
    RESET_COOKIE,
    SESSION_COOKIE,
    Browser,
    Person,
    account_row,
    audit_events,
    browsing,
    code_in,
    cookie_attributes,
    emails_with_subject,
    hidden_fields,
    make_person,
    outbox,
    page_text,
    redirected_to,
    session_rows,
    set_cookies,
    sign_in,
    signed_in_page,
    update_account,
    without_tokens,
)
from tests.support.config import time_skipping_server
from tests.support.harness import Stack, running_stack
from tests.support.oidc import (
    authorization,
    code_for,
    keys,
    logout_receiver,
    redeem,
    refresh_refused,
    register,
    signed_in_browser,
    told_sids,
)
from tests.support.passkey_key import soft_key, store_passkey
from worker import LogoutSweeper
from workflows.logout import logout_workflow_id
from workflows.reset import ResetProgress

pytestmark = [pytest.mark.pages, pytest.mark.asyncio(loop_scope="session")]

CODE_SUBJECT = "Your agentOS password reset code"
CHANGED_SUBJECT = "Your agentOS password was changed"
SENT = "If an account exists for that address, we've sent a code"
NEED_TOTP = "Your account uses MFA: also enter the current code from your authenticator app."
NEED_PASSKEY = (
    "Your account uses a passkey: also confirm it's you with your passkey, or enter a recovery code."
)
WRONG_TOTP = "That authenticator code didn't match."
NEW_CODE_SENT = "We've sent you a new code. Earlier codes no longer work."
TOO_SOON = re.compile(r"You can ask for a new code in (\d+) seconds?\.")
KILLED = "Incorrect code. This code can no longer be used; click Send a new code."
TOO_MANY = "Too many incorrect codes. Click Send a new code."
FORM_PROBLEM = "This form has expired. Reload the page and try again."


@asynccontextmanager
async def reset_stack(
    temporal: WorkflowEnvironment, database_url: str, **overrides: Any
) -> AsyncIterator[Stack]:
    async with running_stack(temporal, database_url, **overrides) as running:
        try:
            yield running
        finally:
            await end_reset_flows(running)
    # build_worker's engine is never disposed: collect it here rather than on a later
    # workflow activation thread.
    gc.collect()


async def end_reset_flows(stack: Stack) -> None:
    """Let each reset flow finish what it is doing (a code or a notice being emailed, a
    finished reset closing), then end the flows still waiting: a timer left behind would
    wake with no worker in a later test, and the time-skipping server stops skipping for
    good when a flow is terminated with a task of it in flight."""
    async with stack.sessions() as session:
        account_ids = (await session.scalars(select(SsoAccount.id))).all()
    async with asyncio.timeout(GUARD_SECONDS):
        for account_id in account_ids:
            handle = stack.env.client.get_workflow_handle(reset_workflow_id(account_id))
            while True:
                try:
                    described = await handle.describe()
                except RPCError as exc:
                    if exc.status != RPCStatusCode.NOT_FOUND:
                        raise
                    break
                if described.status != WorkflowExecutionStatus.RUNNING:
                    break
                raw = described.raw_description
                busy = bool(raw.pending_activities) or raw.HasField("pending_workflow_task")
                if (
                    not busy
                    and (await handle.query("progress", result_type=ResetProgress)).step != "completed"
                ):
                    await handle.terminate("test finished")
                    break
                await asyncio.sleep(0.05)
            await end_notices(stack, handle)


async def end_notices(stack: Stack, handle: WorkflowHandle[Any, Any]) -> None:
    """The "password changed" notices a flow started (abandoned children): let them finish
    while the worker is up, so none is left waiting for a worker that is gone."""
    try:
        history = await handle.fetch_history()
    except RPCError:
        return
    for event in history.events:
        if event.event_type != EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED:
            continue
        child = stack.env.client.get_workflow_handle(
            event.child_workflow_execution_started_event_attributes.workflow_execution.workflow_id
        )
        while (await child.describe()).status == WorkflowExecutionStatus.RUNNING:
            await asyncio.sleep(0.05)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def reset_env() -> AsyncIterator[WorkflowEnvironment]:
    async with time_skipping_server() as env:
        yield env


@pytest_asyncio.fixture(loop_scope="session")
async def stack(reset_env: WorkflowEnvironment, database_url: str) -> AsyncIterator[Stack]:
    async with reset_stack(reset_env, database_url) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="session")
async def sleeping_stack(database_url: str) -> AsyncIterator[Stack]:
    """For a test that skips time: a server no completed reset has touched."""
    async with time_skipping_server() as env, reset_stack(env, database_url) as running:
        yield running


@asynccontextmanager
async def browser_of(stack: Stack) -> AsyncIterator[Browser]:
    async with browsing(stack.http._transport) as browser:
        yield browser


async def person(stack: Stack, **options: Any) -> Person:
    return await make_person(stack.sessions, stack.settings, **options)


def flow(stack: Stack, someone: Person) -> WorkflowHandle[Any, Any]:
    return stack.env.client.get_workflow_handle(reset_workflow_id(someone.account_id))


async def progress(stack: Stack, someone: Person) -> ResetProgress:
    return await flow(stack, someone).query("progress", result_type=ResetProgress)  # type: ignore[no-any-return]


async def ask_for_code(browser: Browser, email: str) -> httpx.Response:
    """Forgot your password? → the address → Reset my password."""
    page = await browser.get("/sso/forgot")
    assert page.status_code == 200 and "Reset my password" in page_text(page)
    return await browser.submit(page, "/sso/forgot", email=email)


async def codes(stack: Stack, someone: Person) -> list[str]:
    return [
        code_in(text)
        for subject, text in await outbox(stack.sessions, stack.settings, someone.email)
        if subject == CODE_SUBJECT
    ]


async def code_delivered(stack: Stack, someone: Person, count: int = 1) -> str:
    """The newest code, once `count` reset codes were emailed and the flow holds the last.
    The emails are read once the flow says its code went out: read before, a second reset's
    code could still be on its way and the first reset's email would pass for it."""
    resends_left = stack.settings.code_max_resends - (count - 1)
    async with asyncio.timeout(GUARD_SECONDS):
        while True:
            now = await progress(stack, someone)
            if now.code_delivery == "sent" and now.resends_left == resends_left:
                break
            await asyncio.sleep(0.05)
    bodies = await emails_with_subject(stack.sessions, stack.settings, someone.email, CODE_SUBJECT, count)
    return code_in(bodies[-1])


async def start_reset(stack: Stack, browser: Browser, someone: Person) -> tuple[httpx.Response, str]:
    """Asks for a code; the reset page and the code once it has arrived."""
    response = await ask_for_code(browser, someone.email)
    assert redirected_to(response, "/sso/reset?sent=1"), response.text
    code = await code_delivered(stack, someone)
    page = await browser.get("/sso/reset", sent="1")
    assert page.status_code == 200 and SENT in page_text(page)
    return page, code


async def change_password(
    browser: Browser,
    page: httpx.Response,
    code: str,
    password: str = NEW_PASSWORD,
    totp: str = "",
    confirm: str | None = None,
) -> httpx.Response:
    """Sends the reset form of `page` (its own csrf and submission id)."""
    return await browser.submit(
        page,
        "/sso/reset",
        code=code,
        password=password,
        confirm=password if confirm is None else confirm,
        totp=totp,
    )


async def resend(browser: Browser, page: httpx.Response) -> httpx.Response:
    """ "Send a new code" when one is due: it redirects back to the reset page's own
    address (post/redirect/get), which then says a code was sent."""
    answer = await browser.submit(page, "/sso/reset/resend")
    assert redirected_to(answer, "/sso/reset?sent=new"), (answer.status_code, answer.headers)
    return await browser.get("/sso/reset", sent="new")


def another(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def assert_reset(response: httpx.Response) -> None:
    assert redirected_to(response, "/sso/login?notice=reset"), page_text(response)
    assert "max-age=0" in cookie_attributes(response, RESET_COOKIE)
    # An emailed code alone never signs anyone in.
    assert SESSION_COOKIE not in set_cookies(response)


def assert_refused(response: httpx.Response, message: str) -> None:
    assert response.status_code == 400, page_text(response)
    assert message in page_text(response), page_text(response)


async def signs_in(stack: Stack, email: str, password: str) -> bool:
    async with browser_of(stack) as browser:
        response = await sign_in(browser, email, password)
        if redirected_to(response, "/sso/account"):
            assert (await signed_in_page(browser)).status_code == 200
            return True
        assert response.status_code == 401 and REFUSED in page_text(response)
        return False


# -- the whole way through -------------------------------------------------------------


async def test_reset_happy_path(stack: Stack) -> None:
    someone = await person(stack)
    async with browser_of(stack) as before, browser_of(stack) as browser:
        # Signed in somewhere before the reset; then a run of failures and a lock.
        assert redirected_to(await sign_in(before, someone.email), "/sso/account")
        await update_account(
            stack.sessions, someone, failed_sign_ins=7, locked_until=utcnow() + timedelta(minutes=10)
        )

        response = await ask_for_code(browser, someone.email)
        assert redirected_to(response, "/sso/reset?sent=1"), response.text
        assert cookie_attributes(response, RESET_COOKIE) >= {"httponly", "samesite=lax", "secure"}
        page = await browser.get("/sso/reset", sent="1")
        assert page.status_code == 200
        assert SENT in page_text(page)
        [body] = await emails_with_subject(stack.sessions, stack.settings, someone.email, CODE_SUBJECT)
        assert f"Hello {someone.first_name}" in body
        code = await code_delivered(stack, someone)
        # The reset browser session is not a signed-in one.
        async with browser_of(stack) as other:
            other.set_cookie(SESSION_COOKIE, browser.cookie(RESET_COOKIE) or "")
            assert redirected_to(await signed_in_page(other), "/sso/login?notice=expired")

        wrong = await change_password(browser, page, another(code))
        assert_refused(wrong, "Incorrect code, 4 attempts left")
        assert_reset(await change_password(browser, wrong, code))
        assert browser.cookie(RESET_COOKIE) is None
        login = await browser.get("/sso/login", notice="reset")
        assert "Your password was changed. Sign in with your new password." in page_text(login)

        [notice] = await emails_with_subject(stack.sessions, stack.settings, someone.email, CHANGED_SUBJECT)
        assert someone.email in notice and "signed out" in notice
        row = await account_row(stack.sessions, someone)
        assert (row.failed_sign_ins, row.locked_until) == (0, None)
        assert row.password_hash is not None
        assert Hasher().verify(row.password_hash, NEW_PASSWORD)
        # The session from before the reset has ended.
        assert redirected_to(await signed_in_page(before), "/sso/login?notice=expired")
        assert all(r.revoked_at is not None for r in await session_rows(stack.sessions, someone, "signin"))

    assert not await signs_in(stack, someone.email, PASSWORD)
    assert await signs_in(stack, someone.email, NEW_PASSWORD)
    async with asyncio.timeout(GUARD_SECONDS):
        while (await flow(stack, someone).describe()).status == WorkflowExecutionStatus.RUNNING:
            await asyncio.sleep(0.05)
    assert (await flow(stack, someone).describe()).status == WorkflowExecutionStatus.COMPLETED
    events = await audit_events(stack.sessions, someone)
    actions = [e.action for e in events]
    assert actions.count("code.issued") == 1 and actions.count("code.failed") == 1
    [done] = [e for e in events if e.action == "reset.completed"]
    assert done.details["sessions_revoked"] == 1 and done.ip == "127.0.0.1"
    # One code, one notice: nothing else was emailed.
    assert [s for s, _ in await outbox(stack.sessions, stack.settings, someone.email)] == [
        CODE_SUBJECT,
        CHANGED_SUBJECT,
    ]


async def test_unknown_address_is_answered_alike(stack: Stack) -> None:
    someone = await person(stack)
    unknown = "nobody.at.all@example.com"
    async with browser_of(stack) as known_browser, browser_of(stack) as unknown_browser:
        answers = []
        for browser, email in ((known_browser, someone.email), (unknown_browser, unknown)):
            response = await ask_for_code(browser, email)
            answers.append((response.status_code, response.headers.get("location"), set_cookies(response)))
        assert answers[0] == answers[1], answers
        assert answers[0][:2] == (303, "/sso/reset?sent=1")
        wrong_code = another(await code_delivered(stack, someone))
        browsers = (known_browser, unknown_browser)

        pages = [await b.get("/sso/reset", sent="1") for b in browsers]
        assert [p.status_code for p in pages] == [200, 200]
        assert without_tokens(pages[0].text) == without_tokens(pages[1].text)
        assert SENT in page_text(pages[0])

        for attempts_left in ("4 attempts", "3 attempts"):
            answered = [await change_password(b, p, wrong_code) for b, p in zip(browsers, pages, strict=True)]
            for response in answered:
                assert_refused(response, f"Incorrect code, {attempts_left} left")
            assert without_tokens(answered[0].text) == without_tokens(answered[1].text)
            pages = answered

        resent = [await b.submit(p, "/sso/reset/resend") for b, p in zip(browsers, pages, strict=True)]
        assert [r.status_code for r in resent] == [200, 200]
        assert all(TOO_SOON.search(page_text(r)) for r in resent), [page_text(r) for r in resent]
        assert TOO_SOON.sub("", without_tokens(resent[0].text)) == TOO_SOON.sub(
            "", without_tokens(resent[1].text)
        )
    assert len(await codes(stack, someone)) == 1
    assert await outbox(stack.sessions, stack.settings, unknown) == []


# -- MFA --------------------------------------------------------------------------------


async def test_reset_with_mfa_needs_the_authenticator_code(stack: Stack) -> None:
    someone = await person(stack, mfa=True)
    async with browser_of(stack) as browser:
        page, code = await start_reset(stack, browser, someone)
        missing = await change_password(browser, page, code)
        assert_refused(missing, NEED_TOTP)
        assert (await progress(stack, someone)).code_attempts_left == 5

        wrong = await change_password(browser, missing, code, totp=someone.wrong_totp())
        assert_refused(wrong, WRONG_TOTP)
        assert (await progress(stack, someone)).code_attempts_left == 4  # it counted
        assert Hasher().verify((await account_row(stack.sessions, someone)).password_hash or "", PASSWORD)

        assert_reset(await change_password(browser, wrong, code, totp=someone.totp_now()))
    assert Hasher().verify((await account_row(stack.sessions, someone)).password_hash or "", NEW_PASSWORD)
    # The new password leads to the authenticator step, as before.
    async with browser_of(stack) as browser:
        assert redirected_to(await sign_in(browser, someone.email, NEW_PASSWORD), "/sso/login/mfa")
    actions = [e.action for e in await audit_events(stack.sessions, someone)]
    assert actions.count("reset.totp_failed") == 1 and "reset.completed" in actions


async def test_a_recovery_code_stands_in_for_the_authenticator_code_once(stack: Stack) -> None:
    """A lost phone: the reset's authenticator field takes a recovery code (§11, §37)."""
    someone = await person(stack, mfa=True)
    async with stack.sessions() as session:
        codes = await recovery.issue(
            session, stack.settings.secret_key.get_secret_value(), someone.account_id, utcnow()
        )
        await session.commit()
    async with browser_of(stack) as browser:
        page, code = await start_reset(stack, browser, someone)
        asked = await change_password(browser, page, code)
        assert_refused(asked, NEED_TOTP)
        assert_reset(await change_password(browser, asked, code, totp=codes[3]))
    assert Hasher().verify((await account_row(stack.sessions, someone)).password_hash or "", NEW_PASSWORD)
    async with browser_of(stack) as browser:
        page, code = await start_reset(stack, browser, someone)
        asked = await change_password(browser, page, code)
        assert_refused(await change_password(browser, asked, code, totp=codes[3]), WRONG_TOTP)
    actions = [e.action for e in await audit_events(stack.sessions, someone)]
    assert actions.count("mfa.recovery_code_used") == 1


async def test_a_reset_that_leaves_two_recovery_codes_tells_the_person(stack: Stack) -> None:
    """Running low is emailed from the reset too (§37), without the codes."""
    someone = await person(stack, mfa=True)
    secret = stack.settings.secret_key.get_secret_value()
    async with stack.sessions() as session:
        codes = await recovery.issue(session, secret, someone.account_id, utcnow())
        for used in codes[3:]:
            assert await recovery.redeem(session, secret, someone.account_id, used, utcnow())
        await session.commit()
    async with browser_of(stack) as browser:
        page, code = await start_reset(stack, browser, someone)
        asked = await change_password(browser, page, code)
        assert_reset(await change_password(browser, asked, code, totp=codes[0]))
    [body] = await emails_with_subject(
        stack.sessions, stack.settings, someone.email, "Your agentOS Multi-Factor Authentication was changed"
    )
    assert "two or fewer are left" in body and not any(c in body for c in codes)


TOTP_FIELD = re.compile(r'<input class="field code" id="totp" name="totp"[^>]*>')


async def passkey_options(browser: Browser, page: httpx.Response) -> dict[str, Any]:
    csrf = hidden_fields(page, "/sso/reset")["csrf"]
    answer = await browser.post("/sso/passkeys/options", {"csrf": csrf, "ceremony": "reset"})
    assert answer.status_code == 200, answer.text
    return dict(json.loads(answer.text))


async def test_reset_with_only_a_passkey_asks_for_it_after_the_emailed_code(stack: Stack) -> None:
    """The passkey is checked in the web app; the flow hears only of a one-time proof, which
    its activity spends with the change (§11, §36)."""
    someone = await person(stack)
    stranger = await person(stack, first_name="Sid")
    key, strangers_key = (
        soft_key(stack.settings, someone.staff_id),
        soft_key(stack.settings, stranger.staff_id),
    )
    await store_passkey(stack.sessions, someone.account_id, key)
    await store_passkey(stack.sessions, stranger.account_id, strangers_key)
    async with browser_of(stack) as browser:
        page, code = await start_reset(stack, browser, someone)
        assert "data-passkey" not in page.text  # nothing said of the account before the code
        asked = await change_password(browser, page, code)
        assert_refused(asked, NEED_PASSKEY)
        assert 'data-passkey="reset"' in asked.text

        # Someone else's passkey is refused, and counts for nothing.
        theirs = await browser.submit(
            asked,
            "/sso/reset",
            code=code,
            password=NEW_PASSWORD,
            confirm=NEW_PASSWORD,
            credential=strangers_key.sign_in(await passkey_options(browser, asked)),
        )
        assert_refused(theirs, "That passkey didn't work.")
        options = await passkey_options(browser, theirs)
        done = await browser.submit(
            theirs,
            "/sso/reset",
            code=code,
            password=NEW_PASSWORD,
            confirm=NEW_PASSWORD,
            credential=key.sign_in(options),
        )
        assert_reset(done)
    assert Hasher().verify((await account_row(stack.sessions, someone)).password_hash or "", NEW_PASSWORD)
    events = await audit_events(stack.sessions, someone)
    [completed] = [e for e in events if e.action == "reset.completed"]
    assert completed.details["second_factor"] == "passkey"
    async with stack.sessions() as session:
        proofs = (
            await session.scalars(select(BrowserSession).where(BrowserSession.purpose == PROOF_PURPOSE))
        ).all()
    assert proofs and all(p.revoked_at is not None for p in proofs)
    # Nothing of the ceremony reached the flow: only the proof's key.
    history = json.dumps([str(e) for e in (await flow(stack, someone).fetch_history()).events])
    assert options["challenge"] not in history and key.sign_in(options) not in history


async def test_reset_with_only_a_passkey_takes_a_recovery_code_instead(stack: Stack) -> None:
    someone = await person(stack)
    await store_passkey(stack.sessions, someone.account_id, soft_key(stack.settings, someone.staff_id))
    async with stack.sessions() as session:
        codes = await recovery.issue(
            session, stack.settings.secret_key.get_secret_value(), someone.account_id, utcnow()
        )
        await session.commit()
    async with browser_of(stack) as browser:
        page, code = await start_reset(stack, browser, someone)
        asked = await change_password(browser, page, code)
        assert_refused(asked, NEED_PASSKEY)
        wrong = await change_password(browser, asked, code, totp="123456")
        assert_refused(wrong, WRONG_TOTP)
        assert_reset(await change_password(browser, wrong, code, totp=codes[0]))
    assert Hasher().verify((await account_row(stack.sessions, someone)).password_hash or "", NEW_PASSWORD)


def typed_back(page: httpx.Response, field: str) -> str | None:
    """The value the page puts back into a field, or None when the field isn't there."""
    match = re.search(rf'<input [^>]*id="{field}" name="{field}"[^>]*>', page.text)
    if match is None:
        return None
    value = re.search(r'value="([^"]*)"', match.group(0))
    return value.group(1) if value else ""


async def test_the_authenticator_field_comes_once_the_emailed_code_proved_the_mailbox(stack: Stack) -> None:
    """The first form is the same for everyone (no authenticator field to tell who has
    MFA); the flow asks for it only after the right emailed code, and from then on a
    refused password keeps both codes and clears only the passwords."""
    someone = await person(stack, mfa=True)
    async with browser_of(stack) as browser:
        page, code = await start_reset(stack, browser, someone)
        assert TOTP_FIELD.search(page.text) is None
        assert "only if you set up MFA" not in page_text(page)

        asked = await change_password(browser, page, code)
        assert_refused(asked, NEED_TOTP)
        assert TOTP_FIELD.search(asked.text) and 'name="mfa" value="1"' in asked.text
        assert typed_back(asked, "code") == code
        assert NEW_PASSWORD not in asked.text

        totp = someone.totp_now()
        mismatched = await browser.submit(
            asked, "/sso/reset", code=code, password=NEW_PASSWORD, confirm=NEW_PASSWORD + "x", totp=totp
        )
        assert_refused(mismatched, "The two passwords don't match.")
        assert (typed_back(mismatched, "code"), typed_back(mismatched, "totp")) == (code, totp)
        assert typed_back(mismatched, "password") == "" and typed_back(mismatched, "confirm") == ""
        assert NEW_PASSWORD not in mismatched.text
        assert (await progress(stack, someone)).code_attempts_left == 5  # nothing counted

        assert_reset(await change_password(browser, mismatched, code, totp=totp))


async def test_a_mismatch_without_mfa_keeps_the_emailed_code(stack: Stack) -> None:
    someone = await person(stack)
    async with browser_of(stack) as browser:
        page, code = await start_reset(stack, browser, someone)
        mismatched = await change_password(browser, page, code, confirm=NEW_PASSWORD + "x")
        assert_refused(mismatched, "The two passwords don't match.")
        assert typed_back(mismatched, "code") == code
        assert TOTP_FIELD.search(mismatched.text) is None
        wrong = await change_password(browser, mismatched, another(code))
        assert_refused(wrong, "Incorrect code")
        assert typed_back(wrong, "code") == ""  # the field the message is about starts again
        assert_reset(await change_password(browser, wrong, code))


async def test_the_reset_guidance_takes_out_the_brand(stack: Stack) -> None:
    """The page doesn't know whose address it is: its live guidance leaves out only the
    brand, as the check before the flow does."""
    someone = await person(stack)
    async with browser_of(stack) as browser:
        page, _code = await start_reset(stack, browser, someone)
    match = re.search(r"data-personal='([^']*)'", page.text)
    assert match and "agentos" in match.group(1), page.text
    assert someone.last_name.lower() not in match.group(1).lower()
    assert '<script src="/static/password.js" defer></script>' in page.text


# -- new codes --------------------------------------------------------------------------


async def test_new_codes_are_throttled(sleeping_stack: Stack) -> None:
    stack = sleeping_stack
    someone = await person(stack)
    async with browser_of(stack) as browser:
        _, first = await start_reset(stack, browser, someone)
        run_id = (await flow(stack, someone).describe()).run_id

        # "Reset my password" again within the minute: the open flow, no second email.
        again = await ask_for_code(browser, someone.email)
        assert redirected_to(again, "/sso/reset?sent=1")
        described = await flow(stack, someone).describe()
        assert described.run_id == run_id
        assert described.status == WorkflowExecutionStatus.RUNNING
        assert not described.raw_description.pending_activities
        assert (await progress(stack, someone)).resends_left == stack.settings.code_max_resends
        assert await codes(stack, someone) == [first]

        page = await browser.get("/sso/reset")
        soon = await browser.submit(page, "/sso/reset/resend")
        assert soon.status_code == 200
        match = TOO_SOON.search(page_text(soon))
        assert match, page_text(soon)
        assert 1 <= int(match.group(1)) <= 60
        assert await codes(stack, someone) == [first]

        await stack.env.sleep(timedelta(seconds=61))
        resent = await resend(browser, soon)
        assert resent.status_code == 200 and NEW_CODE_SENT in page_text(resent)
        second = await code_delivered(stack, someone, count=2)
        assert second != first, "two codes in a row happened to be equal; run again"
        # A reload of the page it landed on asks for nothing more.
        reloaded = await browser.get("/sso/reset", sent="new")
        assert reloaded.status_code == 200 and NEW_CODE_SENT in page_text(reloaded)
        assert await codes(stack, someone) == [first, second]

        old = await change_password(browser, resent, first)
        assert_refused(old, "Incorrect code, 4 attempts left")
        assert_reset(await change_password(browser, old, second))
    assert await signs_in(stack, someone.email, NEW_PASSWORD)


async def test_five_wrong_codes_kill_the_code(stack: Stack) -> None:
    someone = await person(stack)
    async with browser_of(stack) as browser:
        page, code = await start_reset(stack, browser, someone)
        for message in (
            "Incorrect code, 4 attempts left",
            "Incorrect code, 3 attempts left",
            "Incorrect code, 2 attempts left",
            "Incorrect code, 1 attempt left",
            KILLED,
        ):
            page = await change_password(browser, page, another(code))
            assert_refused(page, message)
        right = await change_password(browser, page, code)
        assert_refused(right, TOO_MANY)
        assert (await progress(stack, someone)).code_attempts_left == 0
    assert await signs_in(stack, someone.email, PASSWORD)
    assert not await signs_in(stack, someone.email, NEW_PASSWORD)


# -- locked accounts --------------------------------------------------------------------


async def test_a_locked_account_can_still_reset(stack: Stack) -> None:
    """A person locked out by someone else's guesses is never locked out of reset."""
    people = [
        await person(stack, failed_sign_ins=7, locked_until=utcnow() + timedelta(minutes=15)),
        await person(stack, failed_sign_ins=100),
    ]
    for someone in people:
        assert not await signs_in(stack, someone.email, PASSWORD)
        async with browser_of(stack) as browser:
            page, code = await start_reset(stack, browser, someone)
            assert_reset(await change_password(browser, page, code))
        status = (await stack.http.get(f"/api/v1/staff/{someone.staff_id}/sso", headers=stack.admin)).json()
        assert status["failed_sign_ins"] == 0 and status["locked_until"] is None
        assert status["needs_reset"] is False
        assert await signs_in(stack, someone.email, NEW_PASSWORD)


# -- the new password -------------------------------------------------------------------


async def test_weak_password_keeps_the_code(stack: Stack) -> None:
    someone = await person(stack, first_name="Zephyrine", last_name="Quillfeather")
    async with browser_of(stack) as browser:
        page, code = await start_reset(stack, browser, someone)
        short = await change_password(browser, page, code, password="tulip-garden")
        assert_refused(short, "Use at least 15 characters (this has 12).")
        mismatch = await change_password(browser, short, code, confirm=f"{NEW_PASSWORD}!")
        assert_refused(mismatch, "The two passwords don't match.")
        common = await change_password(browser, mismatch, code, password="passwordpassword123")
        assert_refused(common, "Repeats like")
        # Personal rules are the flow's: the code was checked, and still not used up.
        personal = await change_password(
            browser, common, code, password="ZephyrineQuillfeatherZephyrineQuillfeather"
        )
        assert_refused(
            personal, "Don't build your password from your name, email address or the company name."
        )
        assert (await progress(stack, someone)).code_attempts_left == 5
        assert_reset(await change_password(browser, personal, code))
    assert await signs_in(stack, someone.email, NEW_PASSWORD)


async def test_the_reset_page_judges_strength_off_the_event_loop(
    stack: Stack, zxcvbn_threads: list[int]
) -> None:
    """zxcvbn (about 50 ms for 72 characters) never runs on the loop serving every page."""
    async with browser_of(stack) as browser:
        assert redirected_to(await ask_for_code(browser, "nobody.here@example.com"), "/sso/reset?sent=1")
        page = await browser.get("/sso/reset", sent="1")
        common = await change_password(browser, page, "123456", password="passwordpassword123")
        assert_refused(common, "Repeats like")
    assert zxcvbn_threads and threading.get_ident() not in zxcvbn_threads


async def test_reset_forms_need_the_csrf_token(stack: Stack) -> None:
    someone = await person(stack)
    async with browser_of(stack) as browser:
        await browser.get("/sso/forgot")
        refused = await browser.post("/sso/forgot", {"email": someone.email})
        assert_refused(refused, FORM_PROBLEM)
        assert RESET_COOKIE not in set_cookies(refused)
        with pytest.raises(RPCError):
            await flow(stack, someone).describe()

        page, code = await start_reset(stack, browser, someone)
        forged = {"csrf": "forged", "submission": "x"}
        for action, data in (
            ("/sso/reset", {"code": code, "password": NEW_PASSWORD, "confirm": NEW_PASSWORD}),
            ("/sso/reset/resend", {}),
        ):
            assert_refused(await browser.post(action, {**data, **forged}), FORM_PROBLEM)
            assert_refused(await browser.post(action, data), FORM_PROBLEM)
        now = await progress(stack, someone)
        assert (now.code_attempts_left, now.resends_left) == (5, stack.settings.code_max_resends)
        assert Hasher().verify((await account_row(stack.sessions, someone)).password_hash or "", PASSWORD)
        assert_reset(await change_password(browser, page, code))


# -- rate limit -------------------------------------------------------------------------


async def test_reset_requests_per_ip_are_limited(reset_env: WorkflowEnvironment, database_url: str) -> None:
    async with reset_stack(reset_env, database_url, reset_request_ip_limit=2) as limited:
        someone = await person(limited)
        async with browser_of(limited) as browser:
            for n in range(2):
                response = await ask_for_code(browser, f"nobody{n}@example.com")
                assert redirected_to(response, "/sso/reset?sent=1")
            for email in ("nobody9@example.com", someone.email):
                refused = await ask_for_code(browser, email)
                assert refused.status_code == 429
                assert "Too many reset requests from your network. Try again in 60 minutes." in page_text(
                    refused
                )
        with pytest.raises(RPCError) as missing:
            await flow(limited, someone).describe()
        assert missing.value.status == RPCStatusCode.NOT_FOUND
        assert await outbox(limited.sessions, limited.settings, someone.email) == []


async def test_a_form_sent_twice_is_answered_alike(stack: Stack) -> None:
    """A double-submitted form (a double click, a browser resend) with a wrong code."""
    someone = await person(stack)
    async with browser_of(stack) as known, browser_of(stack) as unknown:
        await ask_for_code(known, someone.email)
        await ask_for_code(unknown, "nobody.at.all@example.com")
        wrong_code = another(await code_delivered(stack, someone))
        answers = []
        for browser in (known, unknown):
            page = await browser.get("/sso/reset")
            first = await change_password(browser, page, wrong_code)
            again = await change_password(browser, page, wrong_code)  # the same submission id
            assert_refused(first, "Incorrect code, 4 attempts left")
            answers.append((again.status_code, without_tokens(again.text)))
        assert "Incorrect code, 4 attempts left" in answers[0][1]
        assert answers[0] == answers[1]


async def test_a_code_tried_before_the_email_is_out_is_answered_alike(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from activities.email_delivery import OutboxSender

    held = asyncio.Event()
    send = OutboxSender.send

    async def slow_send(self: OutboxSender, email: Any) -> None:
        await held.wait()  # a slow mail server: the code is on its way
        await send(self, email)

    monkeypatch.setattr(OutboxSender, "send", slow_send)
    someone = await person(stack)
    try:
        async with browser_of(stack) as known, browser_of(stack) as unknown:
            await ask_for_code(known, someone.email)
            await ask_for_code(unknown, "nobody.at.all@example.com")
            assert (await progress(stack, someone)).code_delivery == "sending"
            answers = []
            for browser in (known, unknown):
                response = await change_password(browser, await browser.get("/sso/reset"), "123456")
                answers.append((response.status_code, without_tokens(response.text)))
            assert "Incorrect code, 4 attempts left" in answers[1][1]
            assert answers[0] == answers[1]
    finally:
        held.set()


async def test_asking_again_keeps_the_resend_clock_alike(
    sleeping_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = sleeping_stack
    import api.services.reset as reset_service

    moved = timedelta(0)

    def clock() -> datetime:  # the web app's clock, `moved` ahead of the real one
        return utcnow() + moved

    monkeypatch.setattr(reset_service, "utcnow", clock)
    someone = await person(stack)
    async with browser_of(stack) as known, browser_of(stack) as unknown:
        for browser, email in ((known, someone.email), (unknown, "nobody.at.all@example.com")):
            assert redirected_to(await ask_for_code(browser, email), "/sso/reset?sent=1")
        await code_delivered(stack, someone)
        # Half a minute later (the flow's clock and the web app's), both ask again.
        await stack.env.sleep(timedelta(seconds=30))
        moved = timedelta(seconds=30)
        for browser, email in ((known, someone.email), (unknown, "nobody.at.all@example.com")):
            assert redirected_to(await ask_for_code(browser, email), "/sso/reset?sent=1")
        waits = []
        for browser in (known, unknown):
            response = await browser.submit(await browser.get("/sso/reset"), "/sso/reset/resend")
            match = TOO_SOON.search(page_text(response))
            assert match, page_text(response)
            waits.append(int(match.group(1)))
        assert waits[0] <= 31
        assert abs(waits[0] - waits[1]) <= 5, waits


# -- issue 11: lock-out, capped guessing, enumeration, limits (docs/security.md §15-18) --------

LINK_SUBJECT = "Your agentOS password reset link"
LINK_PATH = re.compile(r"(/sso/reset/link/[A-Za-z0-9_-]+)")
BROWSER_COOKIE = "__Host-sso_reset_browser"
EXPIRED = "This code has expired. Click Send a new code."


def browser_key(stack: Stack, browser: Browser) -> str:
    return token_hash(
        stack.settings.secret_key.get_secret_value(), "reset-browser", browser.cookie(BROWSER_COOKIE) or ""
    )


async def browser_code(stack: Stack, someone: Person, browser: Browser, count: int) -> str:
    """The newest code, once `count` reset codes were emailed and this browser's code in the
    flow is the one that was emailed last."""
    bodies = await emails_with_subject(stack.sessions, stack.settings, someone.email, CODE_SUBJECT, count)
    async with asyncio.timeout(GUARD_SECONDS):
        while (
            await flow(stack, someone).query(
                "progress", browser_key(stack, browser), result_type=ResetProgress
            )
        ).code_delivery != "sent":
            await asyncio.sleep(0.05)
    return code_in(bodies[-1])


async def link_in_mailbox(stack: Stack, someone: Person, count: int = 1) -> str:
    bodies = await emails_with_subject(stack.sessions, stack.settings, someone.email, LINK_SUBJECT, count)
    match = LINK_PATH.search(bodies[-1])
    assert match, bodies[-1]
    return match.group(1)


async def test_an_attacker_who_used_up_a_browsers_codes_cannot_lock_the_person_out(
    sleeping_stack: Stack,
) -> None:
    """Issue 11, Medium 1: the attacker asks for the first code and five new ones and burns
    the last code's tries. The person's own "Forgot your password?" still emails a code at
    once, and it resets."""
    stack = sleeping_stack
    someone = await person(stack)
    async with browser_of(stack) as attacker, browser_of(stack) as own:
        page, code = await start_reset(stack, attacker, someone)
        for number in range(2, 7):
            await stack.env.sleep(timedelta(seconds=61))
            page = await resend(attacker, page)
            assert NEW_CODE_SENT in page_text(page)
            code = await browser_code(stack, someone, attacker, number)
        await stack.env.sleep(timedelta(seconds=61))
        page = await attacker.submit(page, "/sso/reset/resend")
        assert "You've asked for the most new codes we can send." in page_text(page)
        for _ in range(5):
            page = await change_password(attacker, page, another(code))
        assert_refused(page, KILLED)

        assert redirected_to(await ask_for_code(own, someone.email), "/sso/reset?sent=1")
        mine = await browser_code(stack, someone, own, 7)
        assert mine not in (code,)
        assert_reset(await change_password(own, await own.get("/sso/reset"), mine))
    assert await signs_in(stack, someone.email, NEW_PASSWORD)


async def test_ten_wrong_codes_across_browsers_stop_codes_and_the_emailed_link_resets(stack: Stack) -> None:
    """Issue 11, Medium 2: new codes no longer bring fresh tries without end. The flow's
    tenth wrong code stops codes for every browser (the right one too) and emails the person
    a single-use link; opening it changes nothing, sending it (with the authenticator code,
    MFA being on) resets, and it works once."""
    someone = await person(stack, mfa=True)
    async with browser_of(stack) as own, browser_of(stack) as first, browser_of(stack) as second:
        own_page, own_code = await start_reset(stack, own, someone)
        answers = []
        for number, attacker in ((2, first), (3, second)):
            assert redirected_to(await ask_for_code(attacker, someone.email), "/sso/reset?sent=1")
            code = await browser_code(stack, someone, attacker, number)
            page = await attacker.get("/sso/reset")
            for _ in range(5):
                page = await change_password(attacker, page, another(code))
                answers.append(page_text(page))
        assert CODES_STOPPED in answers[-1] and CODES_STOPPED not in answers[-2]
        # The right code no longer works either: codes are not guesses any more.
        assert_refused(await change_password(own, own_page, own_code, totp=someone.totp_now()), CODES_STOPPED)
        failures = await failures_of(stack, str(someone.account_id))
        assert failures == 10

        path = await link_in_mailbox(stack, someone)
        async with browser_of(stack) as phone:
            opened = await phone.get(path)
            assert opened.status_code == 200 and "Change Password" in page_text(opened)
            assert (await phone.get(path)).status_code == 200  # a GET never consumes it
            missing = await phone.submit(opened, path, password=NEW_PASSWORD, confirm=NEW_PASSWORD)
            assert_refused(missing, NEED_TOTP)
            done = await phone.submit(
                missing, path, password=NEW_PASSWORD, confirm=NEW_PASSWORD, totp=someone.totp_now()
            )
            assert redirected_to(done, "/sso/login?notice=reset"), page_text(done)
            assert SESSION_COOKIE not in set_cookies(done)
            again = await phone.get(path)
            assert again.status_code == 410 and "no longer valid" in page_text(again)
    assert Hasher().verify((await account_row(stack.sessions, someone)).password_hash or "", NEW_PASSWORD)
    events = await audit_events(stack.sessions, someone)
    [done_event] = [e for e in events if e.action == "reset.completed"]
    assert done_event.details.get("via") == "link"
    assert [e.action for e in events].count("reset.link_issued") == 1
    # The token is nowhere but in the email.
    token = path.rsplit("/", 1)[1]
    async with stack.sessions() as session:
        [row] = (await session.scalars(select(ResetLink))).all()
    assert row.token_hash != token and row.consumed_at is not None


async def failures_of(stack: Stack, subject: str) -> int:
    async with stack.sessions() as session:
        return len(
            (await session.scalars(select(ResetCodeFailure).where(ResetCodeFailure.subject == subject))).all()
        )


async def test_the_account_cap_spans_flows_and_unlock_sign_in_clears_it(stack: Stack) -> None:
    """20 wrong codes in the last 24 hours (earlier flows): the next reset email carries a
    link instead of a code; the admin's Unlock sign-in clears the count, and codes return."""
    someone = await person(stack)
    earlier = utcnow() - timedelta(hours=23)
    async with stack.sessions() as session:
        session.add_all(
            [
                ResetCodeFailure(subject=str(someone.account_id), flow=f"old-{n % 3}", failed_at=earlier)
                for n in range(20)
            ]
        )
        await session.commit()
    async with browser_of(stack) as browser:
        response = await ask_for_code(browser, someone.email)
        assert redirected_to(response, "/sso/reset?sent=1")
        await link_in_mailbox(stack, someone)
        assert await codes(stack, someone) == []

    unlocked = await stack.http.post(f"/api/v1/staff/{someone.staff_id}/unlock", headers=stack.admin)
    assert unlocked.status_code == 200
    assert await failures_of(stack, str(someone.account_id)) == 0
    [event] = [e for e in await audit_events(stack.sessions, someone) if e.action == "account.unlock"]
    assert event.details["wrong_reset_codes"] == 20
    async with browser_of(stack) as browser:
        page, code = await start_reset(stack, browser, someone)
        assert_reset(await change_password(browser, page, code))


async def test_expired_and_stopped_codes_are_answered_alike_for_unknown_addresses(
    sleeping_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 11, Medium 3: after the code's lifetime both answer "expired"; past the flow's
    cap both answer that codes have stopped."""
    stack = sleeping_stack
    import api.services.reset as reset_service

    moved = timedelta(0)

    def clock() -> datetime:
        return utcnow() + moved

    monkeypatch.setattr(reset_service, "utcnow", clock)
    someone = await person(stack)
    unknown = "nobody.at.all@example.com"
    async with browser_of(stack) as known, browser_of(stack) as stranger:
        for browser, email in ((known, someone.email), (stranger, unknown)):
            assert redirected_to(await ask_for_code(browser, email), "/sso/reset?sent=1")
        wrong = another(await code_delivered(stack, someone))
        await stack.env.sleep(timedelta(minutes=11))
        moved = timedelta(minutes=11)
        answers = []
        for browser in (known, stranger):
            response = await change_password(browser, await browser.get("/sso/reset"), wrong)
            assert_refused(response, EXPIRED)
            answers.append(without_tokens(response.text))
        assert answers[0] == answers[1]

        stopped = []
        for email in (someone.email, unknown):
            texts = []
            for _ in range(2):
                async with browser_of(stack) as browser:
                    await ask_for_code(browser, email)
                    page = await browser.get("/sso/reset")
                    for _ in range(5):
                        page = await change_password(browser, page, wrong)
                        texts.append(without_tokens(page.text))
                    last = page_text(page)
            stopped.append(texts)
            assert CODES_STOPPED in last
        assert stopped[0] == stopped[1]


async def test_a_wrong_code_takes_the_same_steps_for_known_and_unknown_addresses(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 11, Medium 3: the same functions, the same number of times, and one Temporal
    round trip each (timings: `make bench`)."""
    from temporalio.service import _BridgeServiceClient

    import activities.reset as reset_activities
    import api.services.reset as reset_service

    calls: list[str] = []

    def counted(name: str, function: Any) -> Any:
        if asyncio.iscoroutinefunction(function):

            async def wrapper_async(*args: Any, **kwargs: Any) -> Any:
                calls.append(name)
                return await function(*args, **kwargs)

            return wrapper_async

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return function(*args, **kwargs)

        return wrapper

    for module, name in (
        (reset_service, "seal"),
        (reset_service, "code_digest"),
        (reset_service, "count_wrong_code"),
        (reset_activities, "count_wrong_code"),
    ):
        monkeypatch.setattr(
            module,
            name,
            counted("count_wrong_code" if name.startswith("count") else name, getattr(module, name)),
        )
    rpc = _BridgeServiceClient._rpc_call

    async def counted_rpc(self: Any, *args: Any, **kwargs: Any) -> Any:
        name = str(kwargs.get("rpc", args[0] if args else ""))
        if kwargs.get("service") == "workflow" and not name.startswith("poll_"):
            calls.append("temporal")
        return await rpc(self, *args, **kwargs)

    someone = await person(stack)
    steps = []
    async with browser_of(stack) as known, browser_of(stack) as unknown:
        await ask_for_code(known, someone.email)
        await ask_for_code(unknown, "nobody.at.all@example.com")
        wrong = another(await code_delivered(stack, someone))
        monkeypatch.setattr(_BridgeServiceClient, "_rpc_call", counted_rpc)
        for browser in (known, unknown):
            page = await browser.get("/sso/reset")
            calls.clear()
            assert_refused(
                await change_password(browser, page, wrong, totp="123456"), "Incorrect code, 4 attempts left"
            )
            steps.append(sorted(calls))
    assert steps[0] == steps[1] == sorted(["code_digest", "seal", "seal", "temporal", "count_wrong_code"]), (
        steps
    )


async def test_change_password_posts_are_limited_per_ip_and_per_session(
    reset_env: WorkflowEnvironment, database_url: str
) -> None:
    """Issue 11, Low: POST /sso/reset is rate-limited even while a reset session is held."""
    async with reset_stack(
        reset_env, database_url, reset_submit_session_limit=3, reset_submit_ip_limit=5
    ) as limited:
        async with browser_of(limited) as browser:
            await ask_for_code(browser, "nobody.at.all@example.com")
            page = await browser.get("/sso/reset")
            for _ in range(3):
                page = await change_password(browser, page, "123456")
                assert page.status_code == 400
            page = await change_password(browser, page, "123456")
            assert page.status_code == 429 and "Too many attempts" in page_text(page)
            # A new session from the same address: the per-IP count still holds.
            await ask_for_code(browser, "nobody.else@example.com")
            page = await browser.get("/sso/reset")
            statuses = []
            for _ in range(2):
                page = await change_password(browser, page, "123456")
                statuses.append(page.status_code)
            assert statuses == [400, 429]


async def test_reset_requests_and_new_codes_are_audited_for_every_address(stack: Stack) -> None:
    """Issue 11, Low: "Forgot your password?" and "Send a new code" are in the audit log,
    with the IP and the outcome, and the target when there is an account."""
    someone = await person(stack)
    unknown = "nobody.at.all@example.com"
    async with browser_of(stack) as known, browser_of(stack) as stranger:
        pages = []
        for browser, email in ((known, someone.email), (stranger, unknown)):
            await ask_for_code(browser, email)
            pages.append(await browser.submit(await browser.get("/sso/reset"), "/sso/reset/resend"))
        await code_delivered(stack, someone)
        assert TOO_SOON.sub("", without_tokens(pages[0].text)) == TOO_SOON.sub(
            "", without_tokens(pages[1].text)
        )
    async with stack.sessions() as session:
        events = (
            await session.scalars(
                select(AuditEvent)
                .where(AuditEvent.action.in_(["reset.requested", "reset.resend"]))
                .order_by(AuditEvent.occurred_at)
            )
        ).all()
    assert [(e.action, e.outcome, e.target, e.ip) for e in events] == [
        ("reset.requested", "sent", str(someone.staff_id), "127.0.0.1"),
        ("reset.resend", "refused", str(someone.staff_id), "127.0.0.1"),
        ("reset.requested", "unknown_address", None, "127.0.0.1"),
        ("reset.resend", "unknown_address", None, "127.0.0.1"),
    ]


async def test_a_reset_tells_the_apps_and_ends_their_refresh_tokens(
    reset_env: WorkflowEnvironment, database_url: str
) -> None:
    # Development: the app's receiver listens over plain http on loopback.
    with logout_receiver() as (uri, got):
        async with reset_stack(reset_env, database_url, env="development") as dev:
            someone = await person(dev)
            refreshing = ["authorization_code", "refresh_token"]
            app = await register(dev, backchannel_logout_uri=uri, internal=True, grant_types=refreshing)
            signed_in = await signed_in_browser(dev, someone.email)
            request = authorization(app, scope="openid offline_access")
            token = await redeem(dev, request, await code_for(signed_in, request))
            sid = jwt.decode(token["id_token"], await keys(dev.http)).claims["sid"]
            async with browser_of(dev) as browser:
                page, code = await start_reset(dev, browser, someone)
                assert_reset(await change_password(browser, page, code))
            logout = dev.env.client.get_workflow_handle(logout_workflow_id(sid))
            assert await asyncio.wait_for(logout.result(), GUARD_SECONDS) == {app.client_id: "delivered"}
            assert await told_sids(dev, got) == [sid]
            assert await refresh_refused(dev, app, token["refresh_token"])
            # The reset owed it in the outbox too: the sweeper finds it started, and tells
            # no app again.
            async with dev.sessions() as session:
                [owed] = (await session.scalars(select(LogoutOutbox))).all()
                assert owed.sid == sid
                owed.created_at = utcnow() - timedelta(minutes=1)
                await session.commit()
            assert await LogoutSweeper(dev.env.client, dev.settings, dev.sessions).sweep() == 0
            async with dev.sessions() as session:
                assert (await session.scalars(select(LogoutOutbox))).all() == []
            assert await told_sids(dev, got) == [sid]
