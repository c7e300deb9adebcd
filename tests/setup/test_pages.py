"""The setup pages driven like a browser, in-process, against real workflows on the
time-skipping server with the real activities (outbox email), on SQLite and PostgreSQL.

Each test GETs a page, reads the `csrf` and `submission` hidden fields of the form it is about
to send, POSTs it and follows 303s by hand; every browser keeps its own cookies. Codes and
links are read from the outbox, as a person would read them from their email.
docs/security.md §1-14 and §19-21 are what these tests prove at the page level.
"""

from __future__ import annotations

import asyncio
import gc
import html
import json
import re
import threading
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pyotp
import pytest
import pytest_asyncio
from sqlalchemy import select
from temporalio.client import WorkflowHandle, WorkflowQueryFailedError
from temporalio.testing import WorkflowEnvironment

from activities.email_delivery import MeteredSender
from activities.setup import SetupStepActivities
from api.main import create_app
from api.services.flows import StepInDoubt
from api.services.setup import SetupSteps
from core.models import (
    AuditEvent,
    BrowserSession,
    SsoAccount,
)
from core.passwords import personal_words
from core.templating import RenderedEmail
from core.times import time_element
from tests.support.accounts import recovery_codes_in
from tests.support.config import make_settings
from tests.support.harness import Stack, running_stack
from tests.support.setup_pages import (
    CODE_SUBJECT,
    GUARD_SECONDS,
    PASSWORD,
    PUBLIC_URL,
    SESSION_COOKIE,
    Browser,
    another_code,
    assert_page_headers,
    at_code_step,
    choose_password,
    codes_sent_to,
    confirm_page_once_sent,
    db_state,
    hidden_fields,
    latest_code,
    manual_key,
    outbox,
    page_text,
    redirected_to,
    send_setup_email,
    settle,
)

pytestmark = [pytest.mark.pages, pytest.mark.asyncio(loop_scope="session")]

ARGON2_PREFIX = "$argon2id$v=19$m=19456,t=2,p=1$"
UNAVAILABLE = "We can't complete this right now, please try again in a minute"
FORM_PROBLEM = "This form has expired. Reload the page and try again."
CSRF_COOKIE = "__Host-sso_csrf"

QR = re.compile(r'<img src="data:image/svg\+xml;base64,[A-Za-z0-9+/=]+"')
RESENT_PAGE = "/sso/setup/confirm?sent=new"
SPENT = "This code can no longer be used: it was entered incorrectly too many times."
RESEND_BUTTON = re.compile(r'type="submit" id="resend"\s*([^>]*)>Send a new code')


def resend_button(page: httpx.Response) -> str:
    """The Send a new code button's attributes."""
    match = RESEND_BUTTON.search(page.text)
    assert match, page.text
    return " ".join(match.group(1).split())


def assert_code_spent(page: httpx.Response) -> None:
    """A spent code is said once, with when a new one can be sent, and nothing that
    contradicts it: no "valid until", no "0 attempts left", no second error."""
    text = " ".join(re.sub(r"<[^>]+>", "", page_text(page)).split())
    assert text.count(SPENT) == 1, text
    # In the deployment's zone (GMT or BST for the tests' Europe/London), never bare UTC.
    when = r"\d{1,2} \w{3} \d{4}, \d\d:\d\d:\d\d (GMT|BST)"
    assert re.search(rf"You can send a new code at {when}\.", text), text
    assert "valid until" not in text and "attempts left" not in text and "the next after" not in text
    assert page.text.count('role="alert"') == 1
    # Counted from the server's clock (the time-skipping test server's runs ahead of it).
    wait = re.fullmatch(r'disabled data-wait-seconds="(\d+)"', resend_button(page))
    assert wait and int(wait.group(1)) > 0, resend_button(page)


@pytest_asyncio.fixture(loop_scope="session")
async def browser(stack: Stack) -> AsyncIterator[Browser]:
    person = Browser(stack)
    yield person
    await person.aclose()


async def audit_actions(stack: Stack, staff_id: str) -> list[str]:
    async with stack.sessions() as session:
        return list(
            (
                await session.scalars(
                    select(AuditEvent.action)
                    .where(AuditEvent.target == staff_id)
                    .order_by(AuditEvent.occurred_at)
                )
            ).all()
        )


def set_cookie_headers(response: httpx.Response, name: str) -> list[str]:
    return [h for h in response.headers.get_list("set-cookie") if h.startswith(f"{name}=")]


def cookie_value(response: httpx.Response, name: str = SESSION_COOKIE) -> str:
    [header] = set_cookie_headers(response, name)
    return header.split(";", 1)[0].split("=", 1)[1]


# -- the whole path -----------------------------------------------------------------------


@pytest.mark.parametrize("mfa", [False, True], ids=["mfa-skipped", "mfa-enrolled"])
async def test_full_setup(stack: Stack, browser: Browser, mfa: bool) -> None:
    staff, token = await send_setup_email(stack)
    email = staff["external_email_1"]

    start = await browser.get(f"/sso/setup/{token}")
    assert start.status_code == 200
    assert "agentOS Single Sign-On" in page_text(start)
    assert email in page_text(start)
    assert re.search(
        rf'<a href="/sso/setup/{re.escape(token)}/password">Forgot your password\?</a>', start.text
    ), start.text

    form = await browser.get(f"/sso/setup/{token}/password")
    assert form.status_code == 200
    assert email in page_text(form) and 'type="password"' in form.text
    assert "onpaste" not in form.text  # docs/security.md §1: pasting from a password manager works
    # No maxlength: a browser would cut a long pasted password without a word; the server
    # refuses one over 256 characters and says so (docs/security.md §1: no truncation).
    assert not re.search(r'<input[^>]*type="password"[^>]*maxlength', form.text), form.text
    chosen = await browser.submit(form, f"/sso/setup/{token}/password", password=PASSWORD, confirm=PASSWORD)
    assert redirected_to(chosen, "/sso/setup/confirm"), chosen.text
    [cookie] = set_cookie_headers(chosen, SESSION_COOKIE)
    attributes = [part.strip().lower() for part in cookie.split(";")[1:]]
    assert "httponly" in attributes and "samesite=lax" in attributes
    assert "secure" in attributes and "path=/" in attributes  # __Host- rules
    assert not any(a.startswith("domain=") for a in attributes)
    assert len(cookie_value(chosen)) >= 22  # >= 128 bits, base64url
    assert PASSWORD not in chosen.text and token not in chosen.headers["location"]

    confirm = await confirm_page_once_sent(browser)
    text = page_text(confirm)
    assert email in text
    assert "spam" in text
    assert "Confirm account" in text and "Send a new code" in text
    code = await latest_code(stack, email)

    wrong = await browser.submit(confirm, "/sso/setup/confirm", code=another_code(code))
    assert wrong.status_code == 400
    assert "Incorrect code, 4 attempts left" in page_text(wrong)
    # The person types the code with a space in the middle, as some mail apps show it.
    right = await browser.submit(wrong, "/sso/setup/confirm", code=f"{code[:3]} {code[3:]}")
    assert redirected_to(right, "/sso/setup/mfa"), right.text

    mfa_page = await browser.get("/sso/setup/mfa")
    assert mfa_page.status_code == 200
    text = page_text(mfa_page)
    assert QR.search(mfa_page.text), mfa_page.text
    assert "Complete Setup" in text and "No thanks, I'll set it up later" in text
    secret = manual_key(mfa_page)
    assert len(secret) == 32  # 160 bits
    assert re.search(r'<code id="manual-key" class="key">(\w{4} ){7}\w{4}</code>', mfa_page.text)

    if mfa:
        totp = pyotp.TOTP(secret)
        bad = await browser.submit(mfa_page, "/sso/setup/mfa", code=another_code(totp.now()))
        assert bad.status_code == 400
        assert "didn't match" in page_text(bad)
        accepted = totp.now()
        finished = await browser.submit(bad, "/sso/setup/mfa", code=accepted)
    else:
        finished = await browser.submit(mfa_page, "/sso/setup/mfa/skip")
    assert redirected_to(finished, "/sso/setup/done"), finished.text

    done = await browser.get("/sso/setup/done")
    assert done.status_code == 200
    assert "Your Single Sign-On is now active" in page_text(done)
    assert email in page_text(done)
    # The recovery codes of the MFA just set up: made by the web app, shown once (§37).
    assert ("Show my recovery codes" in page_text(done)) is mfa
    if mfa:
        codes_page = await browser.submit(done, "/sso/setup/recovery-codes")
        assert codes_page.status_code == 200, codes_page.text
        assert len(recovery_codes_in(codes_page)) == 10
        again = await browser.submit(done, "/sso/setup/recovery-codes")
        assert redirected_to(again, "/sso/setup/done")
        assert "Show my recovery codes" not in page_text(await browser.get("/sso/setup/done"))

    status = await stack.status(staff["id"])
    assert status["state"] == "active"

    async with stack.sessions() as session:
        account = await session.scalar(
            select(SsoAccount).where(SsoAccount.staff_id == uuid.UUID(staff["id"]))
        )
        bound = (
            await session.scalars(
                select(BrowserSession).where(BrowserSession.staff_id == uuid.UUID(staff["id"]))
            )
        ).all()
    assert account is not None
    assert account.password_hash is not None
    assert account.password_hash.startswith(ARGON2_PREFIX)
    assert PASSWORD not in account.password_hash
    assert account.verified_at is not None
    assert account.status == "active" and account.login_email == email
    if mfa:
        assert account.mfa_enabled_at is not None
        assert account.totp_secret_encrypted is not None
        assert secret not in account.totp_secret_encrypted
        assert secret.lower() not in account.totp_secret_encrypted.lower()
        assert account.totp_last_step is not None
    else:
        assert account.mfa_enabled_at is None
        assert account.totp_secret_encrypted is None  # never enrolled: no secret kept
    # docs/security.md §10, §19: one server-side session, for this setup only; only its hash stored.
    [session_row] = bound
    assert session_row.purpose == "setup"
    assert browser.cookie() not in session_row.id_hash

    actions = await audit_actions(stack, staff["id"])
    enrolled, skipped = ("mfa.enrolled", "mfa.skipped") if mfa else ("mfa.skipped", "mfa.enrolled")
    for action in (
        "sso_setup.password_set",
        "code.issued",
        "sso_setup.email_confirmed",
        enrolled,
        "sso_setup.active",
    ):
        assert actions.count(action) == 1, (action, actions)
    assert skipped not in actions
    if not mfa:
        assert "mfa.code_failed" not in actions
    assert "code.failed" in actions

    # Every page of the walk sent the page headers (checked as each arrived), redirects too.
    assert {r.status_code for r in browser.responses} >= {200, 303, 400}

    if mfa:
        # docs/security.md §13: the code that completed the setup is spent, at sign-in too.
        signing_in = Browser(stack)
        try:
            login = await signing_in.get("/sso/login")
            needs_code = await signing_in.submit(login, "/sso/login", email=email, password=PASSWORD)
            assert redirected_to(needs_code, "/sso/login/mfa"), page_text(needs_code)
            code_page = await signing_in.get("/sso/login/mfa")
            replayed = await signing_in.submit(code_page, "/sso/login/mfa", code=accepted)
            assert replayed.status_code == 401, page_text(replayed)
            assert "already used" in page_text(replayed)
            assert signing_in.cookie("__Host-sso_session") is None
        finally:
            await signing_in.aclose()


async def test_bad_passwords_are_explained_and_change_nothing(stack: Stack, browser: Browser) -> None:
    staff, token = await send_setup_email(stack)
    email = staff["external_email_1"]
    before = await db_state(stack, staff["id"])
    cases = [
        ("short", None, "Use at least 15 characters (this has 5)."),
        # Counted in code points, not bytes: 14 emoji are 56 bytes of UTF-8.
        ("\U0001f511" * 14, None, "Use at least 15 characters (this has 14)."),
        ("x" * 257, None, "Use at most 256 characters (this has 257)."),
        ("password12345678", None, "This is similar to a commonly used password."),
        ("aaaaaaaaaaaaaaaa", None, 'Repeats like "aaa" are easy to guess.'),
        (
            "Bloggs.agentOS.2024",
            None,
            "Don't build your password from your name, email address or the company name.",
        ),
        (email + "!!", None, "Don't build your password from your name"),
        # Jo Bloggs: without the name, "jo jo jo" is left (the page's guidance says so too).
        ("jobloggs jobloggs jo", None, "Without them, what is left is too short."),
        (PASSWORD, PASSWORD + "x", "The two passwords don't match."),
    ]
    for password, confirm, message in cases:
        refused = await choose_password(browser, token, password, confirm)
        assert refused.status_code == 400, (password, refused.text)
        assert message in page_text(refused), (password, page_text(refused))
        assert 'role="alert"' in refused.text and 'aria-invalid="true"' in refused.text
        # The same form again, ready for another try; the password is never echoed back.
        hidden_fields(refused, f"/sso/setup/{token}/password")
        assert password not in refused.text and PASSWORD not in refused.text
        assert set_cookie_headers(refused, SESSION_COOKIE) == []
    # Opening the form told the flow the link was opened; nothing else changed.
    await stack.wait_for(staff["id"], lambda s: s["state"] == "link_opened")
    assert await db_state(stack, staff["id"]) == {**before, "setup_state": "link_opened"}
    assert "sso_setup.password_set" not in await audit_actions(stack, staff["id"])

    # The link still works.
    assert (await browser.get(f"/sso/setup/{token}")).status_code == 200
    assert redirected_to(await choose_password(browser, token), "/sso/setup/confirm")


async def test_the_password_page_judges_strength_off_the_event_loop(
    stack: Stack, browser: Browser, zxcvbn_threads: list[int]
) -> None:
    """zxcvbn (about 50 ms for 72 characters) never runs on the loop serving every page."""
    _staff, token = await send_setup_email(stack)
    refused = await choose_password(browser, token, "password12345678")
    assert refused.status_code == 400, refused.text
    assert "This is similar to a commonly used password." in page_text(refused)
    assert zxcvbn_threads and threading.get_ident() not in zxcvbn_threads


async def test_session_cookie_without_https(temporal_env: WorkflowEnvironment, sqlite_url: str) -> None:
    """Over plain http (development) the cookies keep HttpOnly and SameSite but cannot be
    Secure, so they carry no __Host- prefix."""
    public = "http://sso.example.test"
    # Plain http is for development only: asked for, as `sso dev` does.
    async with running_stack(temporal_env, sqlite_url, public_url=public, env="development") as stack:
        staff = await stack.create_staff()
        await stack.http.post(f"/api/v1/staff/{staff['id']}/sso-email", headers=stack.admin)
        await stack.wait_for(staff["id"], lambda s: s["state"] == "email_sent")
        [(_subject, body)] = await outbox(stack, staff["external_email_1"])
        match = re.search(rf"{re.escape(public)}/sso/setup/([A-Za-z0-9_-]+)", body)
        assert match, body
        browser = Browser(stack, base_url=public)
        try:
            chosen = await choose_password(browser, match.group(1))
            assert redirected_to(chosen, "/sso/setup/confirm"), chosen.text
            [cookie] = set_cookie_headers(chosen, "sso_setup")
            attributes = [part.strip().lower() for part in cookie.split(";")[1:]]
            assert "httponly" in attributes and "samesite=lax" in attributes
            assert "secure" not in attributes
            assert not set_cookie_headers(chosen, SESSION_COOKIE)
            assert browser.cookie("sso_csrf") is not None
            assert (await confirm_page_once_sent(browser)).status_code == 200
        finally:
            await browser.aclose()
    gc.collect()  # as in the stack fixture


# -- the link -----------------------------------------------------------------------------


async def test_link_is_consumed_by_the_first_post_only(stack: Stack, browser: Browser) -> None:
    staff, token = await send_setup_email(stack)
    other = Browser(stack)  # a second browser, or a mail scanner
    try:
        for _ in range(3):  # docs/security.md §6: a GET never consumes the link
            assert (await other.get(f"/sso/setup/{token}")).status_code == 200
            stale_form = await other.get(f"/sso/setup/{token}/password")
            assert stale_form.status_code == 200
        assert not (await db_state(stack, staff["id"]))["link_consumed"]

        assert redirected_to(await choose_password(browser, token), "/sso/setup/confirm")
        assert (await db_state(stack, staff["id"]))["link_consumed"]

        for path in (f"/sso/setup/{token}", f"/sso/setup/{token}/password"):
            gone = await other.get(path)
            assert gone.status_code == 410
            assert "no longer valid" in page_text(gone)
            assert "already been used" in page_text(gone)
            assert "administrator" in page_text(gone)  # what to do next
        # The form the other browser loaded before: refused, no session for it.
        late = await other.submit(
            stale_form, f"/sso/setup/{token}/password", password=PASSWORD, confirm=PASSWORD
        )
        assert late.status_code == 410
        assert "no longer valid" in page_text(late)
        assert other.cookie() is None

        # Without the cookie the other browser cannot continue the flow.
        for path in ("/sso/setup/confirm", "/sso/setup/mfa", "/sso/setup/done"):
            lost = await other.get(path)
            assert lost.status_code == 401, path
            assert "Open the link from your email" in page_text(lost)
        code = await latest_code(stack, staff["external_email_1"])
        posted = await other.post(
            "/sso/setup/confirm",
            {
                "code": code,
                "csrf": hidden_fields(stale_form, f"/sso/setup/{token}/password")["csrf"],
                "submission": "x" * 22,
            },
        )
        assert posted.status_code == 401
        assert "Open the link from your email" in page_text(posted)
        # A made-up session cookie is no better.
        other.http.cookies.set(SESSION_COOKIE, "A" * 43, domain="sso.example.test")
        assert (await other.get("/sso/setup/confirm")).status_code == 401
    finally:
        await other.aclose()

    # The browser that chose the password carries on.
    page = await confirm_page_once_sent(browser)
    assert redirected_to(await browser.submit(page, "/sso/setup/confirm", code=code), "/sso/setup/mfa")


async def test_opening_the_password_form_shows_link_opened(stack: Stack, browser: Browser) -> None:
    staff, token = await send_setup_email(stack)
    # The screen alone (what a mail scanner fetches) says nothing about the person.
    assert (await browser.get(f"/sso/setup/{token}")).status_code == 200
    # Following "Forgot your password?" does: the admin sees link_opened, once.
    for _ in range(2):
        assert (await browser.get(f"/sso/setup/{token}/password")).status_code == 200
        status = await stack.wait_for(staff["id"], lambda s: s["state"] == "link_opened")
    assert status["link_expires_at"] is not None
    assert not (await db_state(stack, staff["id"]))["link_consumed"]
    assert (await audit_actions(stack, staff["id"])).count("sso_setup.link_opened") == 1

    assert redirected_to(await choose_password(browser, token), "/sso/setup/confirm")
    await confirm_page_once_sent(browser)
    await stack.wait_for(staff["id"], lambda s: s["state"] == "code_sent")
    actions = await audit_actions(stack, staff["id"])
    assert actions.count("sso_setup.link_opened") == 1
    assert actions.index("sso_setup.link_opened") < actions.index("sso_setup.password_set")


async def test_the_email_link_again_in_the_same_browser_carries_on(stack: Stack, browser: Browser) -> None:
    """After choosing the password the person closes the tab; later they open the link in
    their email again: this browser is taken to its step, any other is told the link is used."""
    flow = await at_code_step(stack, browser)
    for path in (f"/sso/setup/{flow.token}", f"/sso/setup/{flow.token}/password"):
        again = await browser.get(path)
        assert redirected_to(again, "/sso/setup/confirm"), (path, again.status_code)
    assert redirected_to(
        await browser.submit(flow.page, "/sso/setup/confirm", code=flow.code), "/sso/setup/mfa"
    )
    # At the MFA step, the link leads (through the confirm page) to the MFA page.
    again = await browser.get(f"/sso/setup/{flow.token}")
    assert redirected_to(again, "/sso/setup/confirm")
    assert redirected_to(await browser.get("/sso/setup/confirm"), "/sso/setup/mfa")
    # Once the setup has finished, the link is just spent (test_steps_out_of_order).

    stranger = Browser(stack)
    try:
        used = await stranger.get(f"/sso/setup/{flow.token}")
        assert used.status_code == 410 and "already been used" in page_text(used)
        # A made-up session cookie does not pass for the real one.
        stranger.http.cookies.set(SESSION_COOKIE, "A" * 43, domain="sso.example.test")
        assert (await stranger.get(f"/sso/setup/{flow.token}")).status_code == 410
    finally:
        await stranger.aclose()


def hold_password_hashing(monkeypatch: pytest.MonkeyPatch) -> tuple[asyncio.Event, asyncio.Event]:
    """The worker's password hashing waits for `release` (and sets `held` when it starts):
    a slow worker, so a page can answer before its step is done."""
    held = asyncio.Event()
    release = asyncio.Event()
    real_hash = SetupStepActivities._hash

    async def slow_hash(self: SetupStepActivities, password: str) -> str:
        held.set()
        await release.wait()
        return await real_hash(self, password)

    monkeypatch.setattr(SetupStepActivities, "_hash", slow_hash)
    return held, release


async def test_a_password_step_that_answers_late_is_not_lost(
    temporal_env: WorkflowEnvironment, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker is slow to store the password (held here until the page has answered):
    the page says "please try again in a minute" within SSO_STEP_TIMEOUT, the step goes
    through once the worker gets to it, and the same browser carries on from the link."""
    held, release = hold_password_hashing(monkeypatch)
    async with running_stack(temporal_env, database_url, step_timeout=1) as running:
        person = Browser(running)
        try:
            staff, token = await send_setup_email(running)
            action = f"/sso/setup/{token}/password"
            form = await person.get(action)
            async with asyncio.timeout(GUARD_SECONDS):
                late = await person.submit(form, action, password=PASSWORD, confirm=PASSWORD)
            # The answer came while the step was still held on the worker.
            assert held.is_set() and not release.is_set()
            assert late.status_code == 503
            assert UNAVAILABLE in page_text(late)
            [cookie] = set_cookie_headers(late, SESSION_COOKIE)
            assert "httponly" in cookie.lower() and "secure" in cookie.lower()
            assert not (await db_state(running, staff["id"]))["link_consumed"]

            release.set()
            await running.wait_for(staff["id"], lambda s: s["state"] in ("password_set", "code_sent"))
            # "Try again": the link from the email takes this browser to the next step.
            again = await person.get(f"/sso/setup/{token}")
            assert redirected_to(again, "/sso/setup/confirm"), page_text(again)
            page = await confirm_page_once_sent(person)
            code = await latest_code(running, staff["external_email_1"])
            assert redirected_to(await person.submit(page, "/sso/setup/confirm", code=code), "/sso/setup/mfa")
            # Done once: one password, one session, one code.
            actions = await audit_actions(running, staff["id"])
            assert actions.count("sso_setup.password_set") == 1
            assert actions.count("code.issued") == 1
            assert (await db_state(running, staff["id"]))["sessions"] == 1
        finally:
            release.set()
            await person.aclose()
            await settle(running)
    gc.collect()


async def test_another_try_while_the_first_is_unanswered_keeps_the_browser_on_it(
    temporal_env: WorkflowEnvironment, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "Please try again in a minute", and the person does: they reload the form and post
    again while the first step is still unanswered, and this one gets no answer either (the
    worker is down). Whichever goes through, this browser holds the session it binds, so the
    link carries it on; before, the second try's cookie replaced the first's and never bound."""
    held, release = hold_password_hashing(monkeypatch)
    async with running_stack(temporal_env, database_url, step_timeout=1) as running:
        person = Browser(running)
        try:
            staff, token = await send_setup_email(running)
            action = f"/sso/setup/{token}/password"
            async with asyncio.timeout(GUARD_SECONDS):
                first = await person.submit(
                    await person.get(action), action, password=PASSWORD, confirm=PASSWORD
                )
            assert first.status_code == 503 and held.is_set()
            [first_cookie] = set_cookie_headers(first, SESSION_COOKIE)

            async def unanswered(*_args: Any, **_kwargs: Any) -> Any:
                raise StepInDoubt(UNAVAILABLE)

            with monkeypatch.context() as down:
                down.setattr(SetupSteps, "set_password", unanswered)
                form = await person.get(action)  # the reload: a new form, a new submission id
                assert form.status_code == 200
                second = await person.submit(form, action, password=PASSWORD, confirm=PASSWORD)
            assert second.status_code == 503
            assert UNAVAILABLE in page_text(second)
            assert set_cookie_headers(second, SESSION_COOKIE) == [first_cookie]

            release.set()
            await running.wait_for(staff["id"], lambda s: s["state"] in ("password_set", "code_sent"))
            again = await person.get(f"/sso/setup/{token}")
            assert redirected_to(again, "/sso/setup/confirm"), page_text(again)
            assert (await person.get("/sso/setup/confirm")).status_code == 200
            assert (await db_state(running, staff["id"]))["sessions"] == 1
            # Another browser, even with the form's fields, is not carried on.
            stranger = Browser(running)
            try:
                assert (await stranger.get(f"/sso/setup/{token}")).status_code == 410
            finally:
                await stranger.aclose()
        finally:
            release.set()
            await person.aclose()
            await settle(running)
    gc.collect()


# -- CSRF ---------------------------------------------------------------------------------


async def test_forms_without_a_valid_csrf_token_change_nothing(stack: Stack, browser: Browser) -> None:
    staff, token = await send_setup_email(stack)
    email = staff["external_email_1"]
    action = f"/sso/setup/{token}/password"
    form = await browser.get(action)
    assert browser.cookie(CSRF_COOKIE) is not None
    await stack.wait_for(staff["id"], lambda s: s["state"] == "link_opened")  # the form's GET
    before = await db_state(stack, staff["id"])

    def forged(fields: dict[str, str], csrf: str | None) -> dict[str, str]:
        data = dict(fields)
        if csrf is None:
            del data["csrf"]
        else:
            data["csrf"] = csrf
        return data

    good = {**hidden_fields(form, action), "password": PASSWORD, "confirm": PASSWORD}
    for csrf in (None, "", "wrong", "0" * 64, good["csrf"][:-1] + "x"):
        refused = await browser.post(action, forged(good, csrf))
        assert refused.status_code == 400, csrf
        assert FORM_PROBLEM in page_text(refused)
        assert set_cookie_headers(refused, SESSION_COOKIE) == []
    # A valid token from one browser is useless in another (it is tied to that browser's
    # CSRF cookie): what a cross-site form post would look like.
    attacker = Browser(stack)
    try:
        stolen = await attacker.post(action, good)
        assert stolen.status_code == 400
        assert FORM_PROBLEM in page_text(stolen)
    finally:
        await attacker.aclose()
    assert await db_state(stack, staff["id"]) == before

    chosen = await browser.post(action, good)
    assert redirected_to(chosen, "/sso/setup/confirm"), chosen.text

    # The code step: the right code with a bad token is not used up, and costs no attempt.
    page = await confirm_page_once_sent(browser)
    code = await latest_code(stack, email)
    fields = {**hidden_fields(page, "/sso/setup/confirm"), "code": code}
    for csrf in (None, "wrong"):
        refused = await browser.post("/sso/setup/confirm", forged(fields, csrf))
        assert refused.status_code == 400
        assert FORM_PROBLEM in page_text(refused)
        assert "attempts left for this code" not in page_text(refused)  # none used

    # Resend, once it would be allowed: a bad token sends nothing.
    await stack.env.sleep(timedelta(seconds=61))
    page = await browser.get("/sso/setup/confirm")
    resend = hidden_fields(page, "/sso/setup/resend")
    for csrf in (None, "wrong"):
        refused = await browser.post("/sso/setup/resend", forged(resend, csrf))
        assert refused.status_code == 400
        assert FORM_PROBLEM in page_text(refused)
    assert await codes_sent_to(stack, email) == [code]

    confirmed = await browser.submit(page, "/sso/setup/confirm", code=code)
    assert redirected_to(confirmed, "/sso/setup/mfa"), confirmed.text

    # The MFA step: neither the code nor the skip is taken with a bad token.
    mfa_page = await browser.get("/sso/setup/mfa")
    totp = pyotp.TOTP(manual_key(mfa_page))
    for action_path, extra in (("/sso/setup/mfa", {"code": totp.now()}), ("/sso/setup/mfa/skip", {})):
        fields = {**hidden_fields(mfa_page, action_path), **extra}
        for csrf in (None, "wrong"):
            refused = await browser.post(action_path, forged(fields, csrf))
            assert refused.status_code == 400, action_path
            assert FORM_PROBLEM in page_text(refused)
    state = await db_state(stack, staff["id"])
    assert state["setup_state"] == "mfa_pending"
    assert state["account"] is not None and state["account"][2] is None  # no mfa_enabled_at
    assert (await browser.get("/sso/setup/mfa")).status_code == 200

    # The same code, now with the right token: it was never used.
    finished = await browser.submit(mfa_page, "/sso/setup/mfa", code=totp.now())
    assert redirected_to(finished, "/sso/setup/done"), finished.text
    assert (await stack.status(staff["id"]))["state"] == "active"


# -- double submit ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "timing",
    [
        "at-once",
        "one-after-the-other",
    ],
)
async def test_double_submitted_password_form_runs_once(stack: Stack, browser: Browser, timing: str) -> None:
    staff, token = await send_setup_email(stack)
    action = f"/sso/setup/{token}/password"
    form = await browser.get(action)
    fields = {**hidden_fields(form, action), "password": PASSWORD, "confirm": PASSWORD}
    if timing == "at-once":
        first, second = await asyncio.gather(browser.post(action, fields), browser.post(action, fields))
    else:
        first = await browser.post(action, fields)
        second = await browser.post(action, fields)
    for response in (first, second):
        assert redirected_to(response, "/sso/setup/confirm"), (response.status_code, page_text(response))
    assert cookie_value(first) == cookie_value(second)

    page = await confirm_page_once_sent(browser)
    code = await latest_code(stack, staff["external_email_1"])
    assert await codes_sent_to(stack, staff["external_email_1"]) == [code]
    actions = await audit_actions(stack, staff["id"])
    assert actions.count("sso_setup.password_set") == 1
    assert actions.count("code.issued") == 1
    assert (await db_state(stack, staff["id"]))["sessions"] == 1
    assert redirected_to(await browser.submit(page, "/sso/setup/confirm", code=code), "/sso/setup/mfa")


# -- codes --------------------------------------------------------------------------------


async def test_resend_is_throttled_and_replaces_the_code(stack: Stack, browser: Browser) -> None:
    flow = await at_code_step(stack, browser)
    staff, first, page = flow.staff, flow.code, flow.page
    email = staff["external_email_1"]

    too_soon = await browser.submit(page, "/sso/setup/resend")
    assert too_soon.status_code == 409
    match = re.search(r"You can ask for a new code in (\d+) seconds?\.", page_text(too_soon))
    assert match, page_text(too_soon)
    assert 0 < int(match.group(1)) <= 60
    assert await codes_sent_to(stack, email) == [first]

    await stack.env.sleep(timedelta(seconds=61))
    page = await browser.get("/sso/setup/confirm")
    # Post, redirect, get: the address bar shows the step's own page, and reloading it
    # shows the page again rather than posting a second time.
    assert redirected_to(await browser.submit(page, "/sso/setup/resend"), RESENT_PAGE)
    accepted = await browser.get(RESENT_PAGE)
    assert accepted.status_code == 200
    assert "We've sent you a new code. Earlier codes no longer work." in page_text(accepted)
    second = await latest_code(stack, email, count=2)
    reloaded = await browser.get(RESENT_PAGE)
    assert reloaded.status_code == 200 and "Confirm Your Account" in page_text(reloaded)
    assert len(await codes_sent_to(stack, email)) == 2
    # And straight after, the next one is throttled again.
    again = await browser.submit(accepted, "/sso/setup/resend")
    assert again.status_code == 409
    assert "You can ask for a new code in" in page_text(again)

    page = await confirm_page_once_sent(browser)
    if first != second:
        old = await browser.submit(page, "/sso/setup/confirm", code=first)
        assert old.status_code == 400
        assert "Incorrect code, 4 attempts left" in page_text(old)
        page = old
    new = await browser.submit(page, "/sso/setup/confirm", code=second)
    assert redirected_to(new, "/sso/setup/mfa"), new.text
    assert len(await codes_sent_to(stack, email)) == 2


async def test_admin_status_and_the_page_follow_the_code_step(
    stack: Stack, browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GET /api/v1/staff/{id}/sso at the code step: the state, whether the code is still
    being sent, attempts left, new codes left and when the next may be asked for; the page
    says the same to the person."""
    release = asyncio.Event()
    real_send = MeteredSender.send

    async def held_send(self: MeteredSender, email: RenderedEmail) -> None:
        if email.subject == CODE_SUBJECT:
            await release.wait()
        await real_send(self, email)

    monkeypatch.setattr(MeteredSender, "send", held_send)
    staff, token = await send_setup_email(stack)
    address = staff["external_email_1"]
    try:
        assert redirected_to(await choose_password(browser, token), "/sso/setup/confirm")
        sending = await stack.status(staff["id"])
        assert sending["state"] == "password_set", sending
        assert sending["code"]["delivery"] == "sending" and sending["code"]["attempts_left"] == 0
        assert sending["setup_expires_at"] is not None and sending["mfa_enabled"] is False
        page = await browser.get("/sso/setup/confirm")
        assert "We're sending a verification code to" in page_text(page)
        assert "spam" in page_text(page)
    finally:
        release.set()

    page = await confirm_page_once_sent(browser)
    code = await latest_code(stack, address)
    sent = await stack.wait_for(staff["id"], lambda s: s["state"] == "code_sent")
    assert sent["code"]["delivery"] == "sent", sent
    assert (
        sent["code"]["attempts_left"],
        sent["code"]["resends_left"],
        sent["code"]["wrong_codes_total"],
    ) == (5, 5, 0)
    next_at = datetime.fromisoformat(sent["code"]["next_resend_at"])
    expires_at = datetime.fromisoformat(sent["code"]["expires_at"])
    # Asked for (the resend clock) no later than sent (the code's 10-minute clock).
    assert next_at - timedelta(seconds=60) <= expires_at - timedelta(minutes=10) < next_at
    assert f"the next after {time_element(next_at, stack.settings.zone, 'seconds')}" in page_text(page)
    assert "You can ask for 5 more codes" in page_text(page)

    wrong = await browser.submit(page, "/sso/setup/confirm", code=another_code(code))
    assert "Incorrect code, 4 attempts left" in page_text(wrong)
    assert page_text(wrong).count("attempts left") == 1, "said once, in the alert"
    assert "4 attempts left for this code." in page_text(await browser.get("/sso/setup/confirm"))
    after_wrong = (await stack.status(staff["id"]))["code"]
    assert (after_wrong["attempts_left"], after_wrong["wrong_codes_total"]) == (4, 1)

    await stack.env.sleep(timedelta(seconds=61))
    renewed = await browser.submit(await browser.get("/sso/setup/confirm"), "/sso/setup/resend")
    assert redirected_to(renewed, RESENT_PAGE), page_text(renewed)
    await latest_code(stack, address, count=2)
    resent = await stack.wait_for(
        staff["id"], lambda s: s["code"]["delivery"] == "sent" and s["code"]["resends_left"] == 4
    )
    assert datetime.fromisoformat(resent["code"]["next_resend_at"]) > next_at
    assert resent["code"]["wrong_codes_total"] == 1  # a new code never resets the count

    page = await confirm_page_once_sent(browser)
    right = await browser.submit(page, "/sso/setup/confirm", code=await latest_code(stack, address, count=2))
    assert redirected_to(right, "/sso/setup/mfa"), page_text(right)
    mfa = await stack.status(staff["id"])
    assert (mfa["state"], mfa["code"], mfa["mfa_enabled"]) == ("mfa_pending", None, False)


async def test_new_codes_are_capped_per_flow(stack: Stack, browser: Browser) -> None:
    flow = await at_code_step(stack, browser)
    email = flow.staff["external_email_1"]
    for sent in range(2, 7):  # five new codes after the first
        await stack.env.sleep(timedelta(seconds=61))
        page = await browser.get("/sso/setup/confirm")
        assert redirected_to(await browser.submit(page, "/sso/setup/resend"), RESENT_PAGE)
        await latest_code(stack, email, count=sent)
        await confirm_page_once_sent(browser)
    await stack.env.sleep(timedelta(seconds=61))
    page = await browser.get("/sso/setup/confirm")
    assert "You can't ask for more codes in this setup." in page_text(page)
    refused = await browser.submit(page, "/sso/setup/resend")
    assert refused.status_code == 409
    assert "You've asked for the most new codes we can send." in page_text(refused)
    assert "administrator" in page_text(refused)
    assert len(await codes_sent_to(stack, email)) == 6
    last = await latest_code(stack, email, count=6)
    assert redirected_to(await browser.submit(refused, "/sso/setup/confirm", code=last), "/sso/setup/mfa")


async def test_codes_expire_after_ten_minutes(stack: Stack, browser: Browser) -> None:
    flow = await at_code_step(stack, browser)
    await stack.env.sleep(timedelta(minutes=10, seconds=1))
    page = await browser.get("/sso/setup/confirm")
    expired = await browser.submit(page, "/sso/setup/confirm", code=flow.code)
    assert expired.status_code == 400
    assert "This code has expired. Click Send a new code." in page_text(expired)
    assert redirected_to(await browser.submit(expired, "/sso/setup/resend"), RESENT_PAGE)
    fresh = await latest_code(stack, flow.staff["external_email_1"], count=2)
    page = await confirm_page_once_sent(browser)
    assert redirected_to(await browser.submit(page, "/sso/setup/confirm", code=fresh), "/sso/setup/mfa")


async def test_five_wrong_codes_kill_the_code(stack: Stack, browser: Browser) -> None:
    flow = await at_code_step(stack, browser)
    staff, code, page = flow.staff, flow.code, flow.page
    wrong = another_code(code)
    for left in (4, 3, 2, 1):
        page = await browser.submit(page, "/sso/setup/confirm", code=wrong)
        assert page.status_code == 400
        plural = "s" if left != 1 else ""
        assert f"Incorrect code, {left} attempt{plural} left" in page_text(page)
    page = await browser.submit(page, "/sso/setup/confirm", code=wrong)
    assert page.status_code == 400
    assert_code_spent(page)

    for _ in range(2):  # even the right code, and trying it does not bring it back
        page = await browser.submit(page, "/sso/setup/confirm", code=code)
        assert page.status_code == 400
        assert_code_spent(page)
    actions = await audit_actions(stack, staff["id"])
    assert actions.count("code.failed") == 5
    assert "sso_setup.email_confirmed" not in actions

    await stack.env.sleep(timedelta(seconds=61))
    page = await browser.get("/sso/setup/confirm")
    assert redirected_to(await browser.submit(page, "/sso/setup/resend"), RESENT_PAGE)
    fresh = await latest_code(stack, staff["external_email_1"], count=2)
    page = await confirm_page_once_sent(browser)
    if fresh != code:
        stale = await browser.submit(page, "/sso/setup/confirm", code=code)
        assert stale.status_code == 400
        page = stale
    assert redirected_to(await browser.submit(page, "/sso/setup/confirm", code=fresh), "/sso/setup/mfa")


async def test_malformed_codes_are_explained_and_cost_nothing(stack: Stack, browser: Browser) -> None:
    flow = await at_code_step(stack, browser)
    code, page = flow.code, flow.page
    for typed in ("", "12345", "1234567", "abcdef"):
        page = await browser.submit(page, "/sso/setup/confirm", code=typed)
        assert page.status_code == 400
        assert "Enter the 6-digit code from the email." in page_text(page)
        assert "attempts left" not in page_text(page)
    assert redirected_to(await browser.submit(page, "/sso/setup/confirm", code=code), "/sso/setup/mfa")


# -- order of steps -----------------------------------------------------------------------


async def test_steps_out_of_order(stack: Stack, browser: Browser) -> None:
    flow = await at_code_step(stack, browser)
    staff, token, code, page = flow.staff, flow.token, flow.code, flow.page
    assert redirected_to(await browser.get("/sso/setup/mfa"), "/sso/setup/confirm")
    assert redirected_to(await browser.get("/sso/setup/done"), "/sso/setup/confirm")
    csrf = hidden_fields(page, "/sso/setup/confirm")["csrf"]
    for path, data in (("/sso/setup/mfa/skip", {}), ("/sso/setup/mfa", {"code": "123456"})):
        early = await browser.post(path, {"csrf": csrf, "submission": uuid.uuid4().hex, **data})
        assert early.status_code == 409, (path, early.text)
        assert "That step isn't available right now." in page_text(early)
        assert "Confirm account" in page_text(early)  # shown on the page the person is at
    assert (await db_state(stack, staff["id"]))["setup_state"] == "code_sent"

    confirmed = await browser.submit(page, "/sso/setup/confirm", code=code)
    assert redirected_to(confirmed, "/sso/setup/mfa")
    assert redirected_to(await browser.get("/sso/setup/confirm"), "/sso/setup/mfa")
    assert redirected_to(await browser.get("/sso/setup/done"), "/sso/setup/mfa")
    mfa_page = await browser.get("/sso/setup/mfa")
    for path, data in (("/sso/setup/confirm", {"code": code}), ("/sso/setup/resend", {})):
        late = await browser.post(path, {"csrf": csrf, "submission": uuid.uuid4().hex, **data})
        assert late.status_code == 409, (path, late.text)
        assert "That step isn't available right now." in page_text(late)
        assert "Complete Setup" in page_text(late)

    assert redirected_to(await browser.submit(mfa_page, "/sso/setup/mfa/skip"), "/sso/setup/done")
    # A finished flow takes no more steps.
    assert (await browser.get(f"/sso/setup/{token}")).status_code == 410
    for path, data in (
        ("/sso/setup/confirm", {"code": code}),
        ("/sso/setup/resend", {}),
        ("/sso/setup/mfa", {"code": "123456"}),
        ("/sso/setup/mfa/skip", {}),
    ):
        ended = await browser.post(path, {"csrf": csrf, "submission": uuid.uuid4().hex, **data})
        assert ended.status_code == 410, (path, ended.status_code, page_text(ended))
        assert "no longer valid" in page_text(ended)
    assert (await stack.status(staff["id"]))["state"] == "active"


async def test_stale_mfa_form_at_the_code_step(stack: Stack, browser: Browser) -> None:
    flow = await at_code_step(stack, browser)
    csrf = hidden_fields(flow.page, "/sso/setup/confirm")["csrf"]
    for path, data in (
        ("/sso/setup/mfa/skip", {"csrf": "stale"}),
        ("/sso/setup/mfa", {"csrf": "stale", "code": "123456"}),
        ("/sso/setup/mfa", {"csrf": csrf, "code": "12"}),
    ):
        response = await browser.post(path, {"submission": uuid.uuid4().hex, **data})
        assert response.status_code in (400, 409), (path, data, response.status_code)
        assert "Confirm account" in page_text(response)  # the page the person is at
    assert (await db_state(stack, flow.staff["id"]))["setup_state"] == "code_sent"


async def test_stale_forms_after_the_flow_finished(stack: Stack, browser: Browser) -> None:
    flow = await at_code_step(stack, browser)
    assert redirected_to(
        await browser.submit(flow.page, "/sso/setup/confirm", code=flow.code), "/sso/setup/mfa"
    )
    mfa_page = await browser.get("/sso/setup/mfa")
    assert redirected_to(await browser.submit(mfa_page, "/sso/setup/mfa/skip"), "/sso/setup/done")
    for path in ("/sso/setup/confirm", "/sso/setup/resend", "/sso/setup/mfa", "/sso/setup/mfa/skip"):
        response = await browser.post(
            path, {"csrf": "stale", "code": "123456", "submission": uuid.uuid4().hex}
        )
        assert response.status_code == 410 or redirected_to(response, "/sso/setup/done"), (
            path,
            response.status_code,
        )


async def test_the_done_page_answers_from_the_database_once_the_setup_ended(
    stack: Stack, browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A query on a finished flow replays its whole history, and a history the SDK cannot
    replay has no answer at all (docs/temporal.md §24): the done page must not need one."""
    flow = await at_code_step(stack, browser)
    assert redirected_to(
        await browser.submit(flow.page, "/sso/setup/confirm", code=flow.code), "/sso/setup/mfa"
    )
    mfa_page = await browser.get("/sso/setup/mfa")
    assert redirected_to(await browser.submit(mfa_page, "/sso/setup/mfa/skip"), "/sso/setup/done")

    async def unreplayable(*args: object) -> object:
        raise WorkflowQueryFailedError("[TMPRL1100] Nondeterminism error")

    monkeypatch.setattr(WorkflowHandle, "query", unreplayable)
    done = await browser.get("/sso/setup/done")
    assert done.status_code == 200, page_text(done)
    assert "Your Single Sign-On is now active" in page_text(done)
    assert redirected_to(await browser.get("/sso/setup/confirm"), "/sso/setup/done")


async def test_pages_of_a_cancelled_flow(stack: Stack, browser: Browser) -> None:
    flow = await at_code_step(stack, browser)
    cancelled = await stack.http.delete(f"/api/v1/staff/{flow.staff['id']}/sso-email", headers=stack.admin)
    assert cancelled.status_code == 200, cancelled.text
    link = await browser.get(f"/sso/setup/{flow.token}")
    assert link.status_code == 410
    assert "no longer valid" in page_text(link)
    # The flow's setup session ended with it: every page now says how to start again.
    for path in ("/sso/setup/confirm", "/sso/setup/mfa", "/sso/setup/done"):
        page = await browser.get(path)
        assert page.status_code in (401, 410), (path, page.status_code)
        assert "administrator" in page_text(page)
    refused = await browser.submit(flow.page, "/sso/setup/confirm", code=flow.code)
    assert refused.status_code in (401, 410)
    state = await db_state(stack, flow.staff["id"])
    assert state["setup_state"] == "cancelled"
    assert state["account"] is not None and state["account"][1] is None  # never verified


async def test_a_newer_email_ends_the_old_flow_and_its_session(stack: Stack, browser: Browser) -> None:
    """docs/security.md §5: a link, and the session it led to, belong to one flow."""
    flow = await at_code_step(stack, browser)
    email = flow.staff["external_email_1"]
    again = await stack.http.post(f"/api/v1/staff/{flow.staff['id']}/sso-email", headers=stack.admin)
    assert again.status_code == 202, again.text
    await stack.wait_for(flow.staff["id"], lambda s: s["state"] == "email_sent")
    links = [
        re.search(r"/sso/setup/([A-Za-z0-9_-]+)", text).group(1)  # type: ignore[union-attr]
        for subject, text in await outbox(stack, email)
        if subject != CODE_SUBJECT
    ]
    assert len(links) == 2 and links[0] == flow.token

    lost = await browser.get("/sso/setup/confirm")
    assert lost.status_code == 401
    assert "Open the link from your email" in page_text(lost)
    refused = await browser.submit(flow.page, "/sso/setup/confirm", code=flow.code)
    assert refused.status_code == 401
    assert (await browser.get(f"/sso/setup/{flow.token}")).status_code == 410
    assert (await browser.get(f"/sso/setup/{links[1]}")).status_code == 200
    assert redirected_to(await choose_password(browser, links[1]), "/sso/setup/confirm")
    assert (await confirm_page_once_sent(browser)).status_code == 200


# -- headers ------------------------------------------------------------------------------


async def test_every_setup_page_sends_the_page_headers(stack: Stack, browser: Browser) -> None:
    flow = await at_code_step(stack, browser)
    stranger = Browser(stack)
    try:
        responses = [
            await stranger.get(f"/sso/setup/{flow.token}"),  # used link, 410
            await stranger.get("/sso/setup/not-a-real-token"),  # unknown link, 404
            await stranger.get("/sso/setup/confirm"),  # no session, 401
            await browser.submit(flow.page, "/sso/setup/resend"),  # too soon, 409
            await browser.get("/sso/setup/mfa"),  # out of order, 303
        ]
    finally:
        await stranger.aclose()
    assert [r.status_code for r in responses] == [410, 404, 401, 409, 303]
    for response in responses:
        assert_page_headers(response)
        assert response.headers["x-frame-options"] == "DENY"


# -- Temporal down ------------------------------------------------------------------------


async def test_temporal_unreachable_gives_503_and_keeps_the_link(stack: Stack, browser: Browser) -> None:
    staff, token = await send_setup_email(stack)
    before = await db_state(stack, staff["id"])
    settings = make_settings(
        database_url=stack.settings.database_url,
        temporal_address="127.0.0.1:1",
        task_queue=stack.settings.task_queue,
    )
    app = create_app(settings)  # its TemporalGateway points at 127.0.0.1:1
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=PUBLIC_URL) as http,
    ):
        form = await http.get(f"/sso/setup/{token}/password")
        assert form.status_code == 200  # reading the link needs only the database
        action = f"/sso/setup/{token}/password"
        down = await http.post(
            action, data={**hidden_fields(form, action), "password": PASSWORD, "confirm": PASSWORD}
        )
        assert down.status_code == 503
        assert UNAVAILABLE in page_text(down)
        assert_page_headers(down)
        assert not set_cookie_headers(down, SESSION_COOKIE)
    assert await db_state(stack, staff["id"]) == before

    # Temporal back: the same link still works.
    assert (await browser.get(f"/sso/setup/{token}")).status_code == 200
    assert redirected_to(await choose_password(browser, token), "/sso/setup/confirm")
    assert (await confirm_page_once_sent(browser)).status_code == 200


async def test_the_spent_code_page_says_one_thing(stack: Stack, browser: Browser) -> None:
    """After five wrong codes: the code is spent and when a new one can be sent, once; Send a
    new code stays disabled until then (static/resend.js enables it), and the server still
    refuses it before then."""
    flow = await at_code_step(stack, browser)
    email, page = flow.staff["external_email_1"], flow.page
    assert 'data-wait-seconds="' in resend_button(page)  # just sent: not yet
    for _ in range(5):
        page = await browser.submit(page, "/sso/setup/confirm", code=another_code(flow.code))
    assert_code_spent(page)
    reloaded = await browser.get("/sso/setup/confirm")
    assert_code_spent(reloaded)
    assert '<script src="/static/resend.js" defer></script>' in reloaded.text
    script = await browser.http.get("/static/resend.js")
    assert script.status_code == 200 and "data-wait-seconds" in script.text

    forced = await browser.submit(reloaded, "/sso/setup/resend")  # the button bypassed
    assert forced.status_code == 409
    assert_code_spent(forced)
    assert await codes_sent_to(stack, email) == [flow.code]


async def test_a_finished_setups_link_offers_sign_in(stack: Stack, browser: Browser) -> None:
    """The person is active: the link says so and offers Sign in, not the administrator."""
    flow = await at_code_step(stack, browser)
    mfa = await browser.submit(flow.page, "/sso/setup/confirm", code=flow.code)
    assert redirected_to(mfa, "/sso/setup/mfa")
    skipped = await browser.submit(await browser.get("/sso/setup/mfa"), "/sso/setup/mfa/skip")
    assert redirected_to(skipped, "/sso/setup/done")
    for path in (f"/sso/setup/{flow.token}", f"/sso/setup/{flow.token}/password"):
        used = await browser.get(path)
        assert used.status_code == 410, path
        text = page_text(used)
        assert "You've already finished setting up Single Sign-On with this link" in text
        assert '<a class="button" href="/sso/login">Sign in</a>' in used.text
        assert "administrator" not in text


async def test_a_replaced_link_points_only_to_the_newer_email(stack: Stack) -> None:
    staff, old = await send_setup_email(stack)
    again = await stack.http.post(f"/api/v1/staff/{staff['id']}/sso-email", headers=stack.admin)
    assert again.status_code == 202, again.text
    person = Browser(stack)
    try:
        async with asyncio.timeout(GUARD_SECONDS):
            while len(await stack.links_sent_to(staff["external_email_1"])) < 2:
                await asyncio.sleep(0.05)
        replaced = await person.get(f"/sso/setup/{old}")
    finally:
        await person.aclose()
    assert replaced.status_code == 410, page_text(replaced)
    text = page_text(replaced)
    assert "Use the link in the newer email." in text
    assert "administrator" not in text and "cancelled" not in text


async def test_the_password_page_gives_its_guidance_the_servers_words(stack: Stack, browser: Browser) -> None:
    """static/password.js takes out the same words the server does before judging."""
    staff, token = await send_setup_email(stack)
    page = await browser.get(f"/sso/setup/{token}/password")
    match = re.search(r"data-personal='([^']*)'", page.text)
    assert match, page.text
    words = json.loads(html.unescape(match.group(1)))
    local = staff["external_email_1"].split("@")[0]
    assert {"bloggs", "agentos", local, staff["external_email_1"]} <= set(words), words
    assert words == personal_words("Jo", "Bloggs", staff["external_email_1"], stack.settings.brand_name)
