"""Driving the setup pages in-process like a browser: the cookie jar, the steps to the code
and the MFA pages, the emailed codes in the outbox."""

from __future__ import annotations

import asyncio
import html
import re
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import func, select
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from core.codec import keyring_from_settings
from core.models import (
    BrowserSession,
    OutboxEmail,
    SetupLink,
    SsoAccount,
    SsoSetup,
)
from tests.support.accounts import GUARD_SECONDS, PASSWORD, PUBLIC_URL, hidden_fields
from tests.support.harness import Stack, long_lived_flow_ids

CODE_SUBJECT = "Your agentOS verification code"

SENT = "We've sent a 6-digit verification code"

SESSION_COOKIE = "__Host-sso_setup"

CODE_LINE = re.compile(r"^\s+(\d{6})\s*$", re.M)

MANUAL_KEY = re.compile(r'<code id="manual-key" class="key">([A-Z2-7 ]+)</code>')


def page_text(response: httpx.Response) -> str:
    """The page as a person reads it (messages are HTML-escaped in the markup)."""
    return html.unescape(response.text)


def assert_page_headers(response: httpx.Response) -> None:
    """docs/security.md §6 and §12: setup pages are never cached, never leak a Referer, never framed."""
    assert response.headers["cache-control"] == "no-store", response.url
    assert response.headers["referrer-policy"] == "no-referrer", response.url
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"], response.url


class Browser:
    """One browser: its own cookie jar, no automatic redirects, every response kept."""

    def __init__(self, stack: Stack, base_url: str = PUBLIC_URL) -> None:
        # The same in-process app as stack.http, but a separate cookie jar and the public
        # origin (Secure cookies are only sent back over https).
        self.http = httpx.AsyncClient(transport=stack.http._transport, base_url=base_url)
        self.responses: list[httpx.Response] = []

    async def get(self, path: str) -> httpx.Response:
        return self._seen(await self.http.get(path))

    async def post(self, path: str, data: dict[str, str]) -> httpx.Response:
        return self._seen(await self.http.post(path, data=data))

    async def submit(self, page: httpx.Response, action: str, **fields: str) -> httpx.Response:
        """Send the form of `page` that posts to `action`, with its hidden fields."""
        return await self.post(action, {**hidden_fields(page, action), **fields})

    def _seen(self, response: httpx.Response) -> httpx.Response:
        self.responses.append(response)
        if response.url.path.startswith("/sso/setup"):
            assert_page_headers(response)
        return response

    def cookie(self, name: str = SESSION_COOKIE) -> str | None:
        return self.http.cookies.get(name)

    async def aclose(self) -> None:
        await self.http.aclose()


def redirected_to(response: httpx.Response, path: str) -> bool:
    return response.status_code == 303 and response.headers["location"] == path


async def outbox(stack: Stack, address: str) -> list[tuple[str, str]]:
    """(subject, text body) of every email to `address`, oldest first."""
    keyring = keyring_from_settings(stack.settings)
    async with stack.sessions() as session:
        rows = (
            await session.scalars(
                select(OutboxEmail).where(OutboxEmail.to_address == address).order_by(OutboxEmail.created_at)
            )
        ).all()
    return [(r.subject, keyring.unseal(r.body_encrypted, b"outbox").decode().split("\0")[0]) for r in rows]


async def codes_sent_to(stack: Stack, address: str) -> list[str]:
    codes = []
    for subject, text in await outbox(stack, address):
        if subject == CODE_SUBJECT:
            match = CODE_LINE.search(text)
            assert match, text
            codes.append(match.group(1))
    return codes


async def latest_code(stack: Stack, address: str, count: int = 1) -> str:
    """The code in the newest verification email, once `count` of them have arrived."""
    async with asyncio.timeout(GUARD_SECONDS):
        while True:
            codes = await codes_sent_to(stack, address)
            if len(codes) >= count:
                return codes[-1]
            await asyncio.sleep(0.05)


def another_code(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


async def settle(stack: Stack) -> None:
    """Let activities still in flight (a code being emailed) finish before the flows are
    terminated: the time-skipping server never skips time again after a flow is terminated
    with an activity running, and later tests sleep."""
    workflow_ids = await long_lived_flow_ids(stack.sessions)
    async with stack.sessions() as session:
        # The "MFA set up" email a setup's MFA step starts from the web app: it must be out too.
        bound = (
            await session.execute(select(BrowserSession).where(BrowserSession.purpose == "setup"))
        ).scalars()
        notices = {f"mfa-changed-{row.staff_id}-setup-{row.workflow_id}-{row.run_id or ''}" for row in bound}
    async with asyncio.timeout(GUARD_SECONDS):
        for notice in notices:
            try:
                await stack.env.client.get_workflow_handle(notice).result()
            except RPCError as missing:  # no such email was asked for
                if missing.status != RPCStatusCode.NOT_FOUND:
                    raise
        for workflow_id in workflow_ids:
            handle = stack.env.client.get_workflow_handle(workflow_id)
            while True:
                try:
                    described = await handle.describe()
                except RPCError as exc:
                    if exc.status != RPCStatusCode.NOT_FOUND:
                        raise
                    break
                if (
                    described.status != WorkflowExecutionStatus.RUNNING
                    or not described.raw_description.pending_activities
                ):
                    break
                await asyncio.sleep(0.05)


async def send_setup_email(stack: Stack) -> tuple[dict[str, Any], str]:
    """A new staff member and the token of the link in their setup email."""
    staff = await stack.create_staff()
    sent = await stack.http.post(f"/api/v1/staff/{staff['id']}/sso-email", headers=stack.admin)
    assert sent.status_code == 202, sent.text
    await stack.wait_for(staff["id"], lambda s: s["state"] == "email_sent")
    [token] = await stack.links_sent_to(staff["external_email_1"])
    return staff, token


async def choose_password(
    browser: Browser, token: str, password: str = PASSWORD, confirm: str | None = None
) -> httpx.Response:
    form = await browser.get(f"/sso/setup/{token}/password")
    assert form.status_code == 200, form.text
    return await browser.submit(
        form,
        f"/sso/setup/{token}/password",
        password=password,
        confirm=password if confirm is None else confirm,
    )


async def confirm_page_once_sent(browser: Browser) -> httpx.Response:
    """The confirm page, once the flow has the code it emailed (delivery runs beside it)."""
    async with asyncio.timeout(GUARD_SECONDS):
        while True:
            page = await browser.get("/sso/setup/confirm")
            assert page.status_code == 200, page.text
            if SENT in page_text(page):
                return page
            await asyncio.sleep(0.05)


@dataclass
class AtCodeStep:
    staff: dict[str, Any]
    token: str
    code: str
    page: httpx.Response  # the confirm page, code delivered


async def at_code_step(stack: Stack, browser: Browser) -> AtCodeStep:
    """Email sent, password chosen, code delivered."""
    staff, token = await send_setup_email(stack)
    assert redirected_to(await choose_password(browser, token), "/sso/setup/confirm")
    page = await confirm_page_once_sent(browser)
    return AtCodeStep(staff, token, await latest_code(stack, staff["external_email_1"]), page)


def manual_key(mfa_page: httpx.Response) -> str:
    match = MANUAL_KEY.search(mfa_page.text)
    assert match, mfa_page.text
    return match.group(1).replace(" ", "")


async def db_state(stack: Stack, staff_id: str) -> dict[str, Any]:
    """What a step could have changed: link, setup row, account, sessions, code emails."""
    sid = uuid.UUID(staff_id)
    async with stack.sessions() as session:
        link = await session.scalar(select(SetupLink).where(SetupLink.staff_id == sid))
        setup = await session.scalar(select(SsoSetup).where(SsoSetup.staff_id == sid))
        account = await session.scalar(select(SsoAccount).where(SsoAccount.staff_id == sid))
        sessions = await session.scalar(
            select(func.count()).select_from(BrowserSession).where(BrowserSession.staff_id == sid)
        )
    assert link is not None and setup is not None
    return {
        "link_consumed": link.consumed_at is not None,
        "setup_state": setup.state,
        "account": None
        if account is None
        else (account.password_hash, account.verified_at, account.mfa_enabled_at, account.status),
        "sessions": sessions,
    }
