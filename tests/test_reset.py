"""'Forgot your password?' driven like a browser, against the real PasswordReset flow on the
time-skipping server with the real activities (outbox email), on SQLite and PostgreSQL.

Codes are read from the outbox as a person reads their email; the flow's own `progress` query
says when it holds the code it emailed. Every reset flow a test leaves running is ended once
its activities are done (the time-skipping server stops skipping after a flow is terminated
with an activity running, and later tests sleep). SECURITY.md items 7-11, 15-18 and 28.

Servers: once a reset has completed (the "password changed" notice goes out from an abandoned
child flow that closes after its parent), that time-skipping server was seen never to skip
time again (temporal-test-server 1.40: `env.sleep` hangs). So this module never touches the
session's shared `temporal_env`, on which later modules sleep: it has a server of its own,
and each test that skips time gets a fresh one.
"""

from __future__ import annotations

import asyncio
import gc
import re
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import select
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from api.services.reset import reset_workflow_id
from core.models import SsoAccount, utcnow
from core.passwords import Hasher
from tests.accounts_helpers import (
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
from tests.conftest import time_skipping_server
from tests.test_api import Stack, running_stack
from workflows.password_reset import ResetProgress

pytestmark = pytest.mark.asyncio(loop_scope="session")

CODE_SUBJECT = "Your agentOS password reset code"
CHANGED_SUBJECT = "Your agentOS password was changed"
SENT = "If an account exists for that address, we've sent a code"
NEED_TOTP = "Your account uses MFA: also enter the current code from your authenticator app."
WRONG_TOTP = "That authenticator code didn't match."
NEW_CODE_SENT = "We've sent you a new code. Earlier codes no longer work."
TOO_SOON = re.compile(r"You can ask for a new code in (\d+) seconds?\.")
KILLED = "Incorrect code. This code can no longer be used; click Send a new code."
TOO_MANY = "Too many incorrect codes. Click Send a new code."
FORM_PROBLEM = "This form has expired. Reload the page and try again."


@asynccontextmanager
async def reset_stack(env: WorkflowEnvironment, database_url: str,
                      **overrides: Any) -> AsyncIterator[Stack]:
    async with running_stack(env, database_url, **overrides) as running:
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
                if not busy and (await handle.query(
                        "progress", result_type=ResetProgress)).step != "completed":
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
            event.child_workflow_execution_started_event_attributes.workflow_execution
            .workflow_id)
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
    return [code_in(text) for subject, text in
            await outbox(stack.sessions, stack.settings, someone.email)
            if subject == CODE_SUBJECT]


async def code_delivered(stack: Stack, someone: Person, count: int = 1) -> str:
    """The newest code, once `count` reset codes were emailed and the flow holds the last."""
    bodies = await emails_with_subject(stack.sessions, stack.settings, someone.email,
                                       CODE_SUBJECT, count)
    resends_left = stack.settings.code_max_resends - (count - 1)
    async with asyncio.timeout(GUARD_SECONDS):
        while True:
            now = await progress(stack, someone)
            if now.code_delivery == "sent" and now.resends_left == resends_left:
                return code_in(bodies[-1])
            await asyncio.sleep(0.05)


async def start_reset(stack: Stack, browser: Browser, someone: Person) -> tuple[httpx.Response, str]:
    """Asks for a code; the reset page and the code once it has arrived."""
    response = await ask_for_code(browser, someone.email)
    assert redirected_to(response, "/sso/reset?sent=1"), response.text
    code = await code_delivered(stack, someone)
    page = await browser.get("/sso/reset", sent="1")
    assert page.status_code == 200 and SENT in page_text(page)
    return page, code


async def change_password(browser: Browser, page: httpx.Response, code: str,
                          password: str = NEW_PASSWORD, totp: str = "",
                          confirm: str | None = None) -> httpx.Response:
    """Sends the reset form of `page` (its own csrf and submission id)."""
    return await browser.submit(page, "/sso/reset", code=code, password=password,
                                confirm=password if confirm is None else confirm, totp=totp)


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
        await update_account(stack.sessions, someone, failed_sign_ins=7,
                             locked_until=utcnow() + timedelta(minutes=10))

        response = await ask_for_code(browser, someone.email)
        assert redirected_to(response, "/sso/reset?sent=1"), response.text
        assert cookie_attributes(response, RESET_COOKIE) >= {"httponly", "samesite=lax",
                                                              "secure"}
        page = await browser.get("/sso/reset", sent="1")
        assert page.status_code == 200
        assert SENT in page_text(page)
        [body] = await emails_with_subject(stack.sessions, stack.settings, someone.email,
                                           CODE_SUBJECT)
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

        [notice] = await emails_with_subject(stack.sessions, stack.settings, someone.email,
                                             CHANGED_SUBJECT)
        assert someone.email in notice and "signed out" in notice
        row = await account_row(stack.sessions, someone)
        assert (row.failed_sign_ins, row.locked_until) == (0, None)
        assert row.password_hash is not None
        assert Hasher().verify(row.password_hash, NEW_PASSWORD)
        # The session from before the reset has ended.
        assert redirected_to(await signed_in_page(before), "/sso/login?notice=expired")
        assert all(r.revoked_at is not None
                   for r in await session_rows(stack.sessions, someone, "signin"))

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
        CODE_SUBJECT, CHANGED_SUBJECT]


async def test_unknown_address_is_answered_alike(stack: Stack) -> None:
    someone = await person(stack)
    unknown = "nobody.at.all@example.com"
    async with browser_of(stack) as known_browser, browser_of(stack) as unknown_browser:
        answers = []
        for browser, email in ((known_browser, someone.email), (unknown_browser, unknown)):
            response = await ask_for_code(browser, email)
            answers.append((response.status_code, response.headers.get("location"),
                            set_cookies(response)))
        assert answers[0] == answers[1], answers
        assert answers[0][:2] == (303, "/sso/reset?sent=1")
        wrong_code = another(await code_delivered(stack, someone))
        browsers = (known_browser, unknown_browser)

        pages = [await b.get("/sso/reset", sent="1") for b in browsers]
        assert [p.status_code for p in pages] == [200, 200]
        assert without_tokens(pages[0].text) == without_tokens(pages[1].text)
        assert SENT in page_text(pages[0])

        for attempts_left in ("4 attempts", "3 attempts"):
            answered = [await change_password(b, p, wrong_code)
                        for b, p in zip(browsers, pages, strict=True)]
            for response in answered:
                assert_refused(response, f"Incorrect code, {attempts_left} left")
            assert without_tokens(answered[0].text) == without_tokens(answered[1].text)
            pages = answered

        resent = [await b.submit(p, "/sso/reset/resend")
                  for b, p in zip(browsers, pages, strict=True)]
        assert [r.status_code for r in resent] == [200, 200]
        assert all(TOO_SOON.search(page_text(r)) for r in resent), [page_text(r) for r in resent]
        assert (TOO_SOON.sub("", without_tokens(resent[0].text))
                == TOO_SOON.sub("", without_tokens(resent[1].text)))
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
        assert Hasher().verify((await account_row(stack.sessions, someone)).password_hash or "",
                               PASSWORD)

        assert_reset(await change_password(browser, wrong, code, totp=someone.totp_now()))
    assert Hasher().verify((await account_row(stack.sessions, someone)).password_hash or "",
                           NEW_PASSWORD)
    # The new password leads to the authenticator step, as before.
    async with browser_of(stack) as browser:
        assert redirected_to(await sign_in(browser, someone.email, NEW_PASSWORD),
                             "/sso/login/mfa")
    actions = [e.action for e in await audit_events(stack.sessions, someone)]
    assert actions.count("reset.totp_failed") == 1 and "reset.completed" in actions


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
        resent = await browser.submit(soon, "/sso/reset/resend")
        assert resent.status_code == 200 and NEW_CODE_SENT in page_text(resent)
        second = await code_delivered(stack, someone, count=2)
        assert second != first, "two codes in a row happened to be equal; run again"

        old = await change_password(browser, resent, first)
        assert_refused(old, "Incorrect code, 4 attempts left")
        assert_reset(await change_password(browser, old, second))
    assert await signs_in(stack, someone.email, NEW_PASSWORD)


async def test_five_wrong_codes_kill_the_code(stack: Stack) -> None:
    someone = await person(stack)
    async with browser_of(stack) as browser:
        page, code = await start_reset(stack, browser, someone)
        for message in ("Incorrect code, 4 attempts left", "Incorrect code, 3 attempts left",
                        "Incorrect code, 2 attempts left", "Incorrect code, 1 attempt left",
                        KILLED):
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
    people = [await person(stack, failed_sign_ins=7,
                           locked_until=utcnow() + timedelta(minutes=15)),
              await person(stack, failed_sign_ins=100)]
    for someone in people:
        assert not await signs_in(stack, someone.email, PASSWORD)
        async with browser_of(stack) as browser:
            page, code = await start_reset(stack, browser, someone)
            assert_reset(await change_password(browser, page, code))
        status = (await stack.http.get(f"/api/v1/staff/{someone.staff_id}/sso",
                                       headers=stack.admin)).json()
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
        personal = await change_password(browser, common, code,
                                         password="ZephyrineQuillfeatherZephyrineQuillfeather")
        assert_refused(personal, "Don't build your password from your name, email address "
                       "or the company name.")
        assert (await progress(stack, someone)).code_attempts_left == 5
        assert_reset(await change_password(browser, personal, code))
    assert await signs_in(stack, someone.email, NEW_PASSWORD)


async def test_the_reset_page_judges_strength_off_the_event_loop(
        stack: Stack, zxcvbn_threads: list[int]) -> None:
    """zxcvbn (about 50 ms for 72 characters) never runs on the loop serving every page."""
    async with browser_of(stack) as browser:
        assert redirected_to(await ask_for_code(browser, "nobody.here@example.com"),
                             "/sso/reset?sent=1")
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
        for action, data in (("/sso/reset", {"code": code, "password": NEW_PASSWORD,
                                             "confirm": NEW_PASSWORD}),
                             ("/sso/reset/resend", {})):
            assert_refused(await browser.post(action, {**data, **forged}), FORM_PROBLEM)
            assert_refused(await browser.post(action, data), FORM_PROBLEM)
        now = await progress(stack, someone)
        assert (now.code_attempts_left, now.resends_left) == (5, stack.settings.code_max_resends)
        assert Hasher().verify((await account_row(stack.sessions, someone)).password_hash or "",
                               PASSWORD)
        assert_reset(await change_password(browser, page, code))


# -- rate limit -------------------------------------------------------------------------


async def test_reset_requests_per_ip_are_limited(reset_env: WorkflowEnvironment,
                                                 database_url: str) -> None:
    async with reset_stack(reset_env, database_url, reset_request_ip_limit=2) as limited:
        someone = await person(limited)
        async with browser_of(limited) as browser:
            for n in range(2):
                response = await ask_for_code(browser, f"nobody{n}@example.com")
                assert redirected_to(response, "/sso/reset?sent=1")
            for email in ("nobody9@example.com", someone.email):
                refused = await ask_for_code(browser, email)
                assert refused.status_code == 429
                assert "Too many reset requests from your network. Try again in 60 minutes." \
                    in page_text(refused)
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
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
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
                response = await change_password(browser, await browser.get("/sso/reset"),
                                                 "123456")
                answers.append((response.status_code, without_tokens(response.text)))
            assert "Incorrect code, 4 attempts left" in answers[1][1]
            assert answers[0] == answers[1]
    finally:
        held.set()


async def test_asking_again_keeps_the_resend_clock_alike(
        sleeping_stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
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
