"""A person going through the setup pages of a FaultStack, one step at a time, so a test can
break something between (or during) any two steps. Built on tests/support/e2e.py's page helpers."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import httpx

from tests.support.e2e import (
    CODE_SUBJECT,
    SUBJECT,
    World,
    create_staff,
    eventually,
    links_of,
    new_browser,
    open_link,
    press,
    send_email,
    sign_in,
    status,
    submit,
    text_of,
    wait_for_code_email,
    wait_for_email,
)
from tests.support.faults import FaultStack
from tests.support.stack import ReceivedEmail, SmtpSink

__all__ = [
    "CODE_SUBJECT",
    "SUBJECT",
    "UNAVAILABLE",
    "Person",
    "admin_api",
    "emails_to",
    "eventually",
    "follow",
    "new_browser",
    "press",
    "send_email",
    "sign_in",
    "status",
    "submit",
    "text_of",
    "wait_for_code_email",
    "wait_for_email",
    "words",
]

UNAVAILABLE = "We can't complete this right now, please try again in a minute."
RECOVERY = 240.0  # seconds: a guard; a killed worker's activity times out (10-15 s), is retried


@asynccontextmanager
async def admin_api(stack: FaultStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=stack.base_url, timeout=60, headers={"Authorization": f"Bearer {stack.admin_key}"}
    ) as api:
        yield api


def words(page: httpx.Response) -> str:
    """The page's text without its tags, whitespace collapsed: what a person reads."""
    return " ".join(re.sub(r"<[^>]+>", " ", text_of(page)).split()).replace(" .", ".")


async def get_page(browser: httpx.AsyncClient, url: str, timeout: float = 60) -> httpx.Response:
    """A page, asked for again while it answers "please try again in a minute" (a page that
    needs the flow can, for a few seconds after a worker died, until Temporal hands the flow
    to the new one)."""

    async def answered() -> httpx.Response | None:
        page = await browser.get(url)
        assert page.status_code != 500, page.text
        if page.status_code == 503:
            assert UNAVAILABLE in text_of(page), text_of(page)[:2000]
            return None
        return page

    return await eventually(
        answered,
        timeout,
        interval=1,  # type: ignore[no-any-return]
        what=f"{url} to answer",
    )


async def follow(person: httpx.AsyncClient, response: httpx.Response, to: str) -> httpx.Response:
    """tests/support/e2e.py's `follow`: a 303 to `to`, then that page (asked again while 503)."""
    assert response.status_code == 303, (response.status_code, text_of(response)[:2000])
    assert response.headers["location"] == to, response.headers["location"]
    page = await get_page(person, urljoin(str(response.url), to))
    assert page.status_code == 200, (to, page.status_code, text_of(page)[:2000])
    assert page.headers["cache-control"] == "no-store"
    return page


def emails_to(smtp: SmtpSink, to: str, subject: str) -> list[ReceivedEmail]:
    return [m for m in smtp.messages if to in m.rcpt_tos and m.message["Subject"] == subject]


def link_token(received: ReceivedEmail, base_url: str) -> str:
    """The token of the Set Up Single Sign-On link in an email (any link lifetime)."""
    text_part = received.message.get_body(preferencelist=("plain",))
    assert text_part is not None
    found = re.findall(
        re.escape(f"{base_url}/sso/setup/") + r"([A-Za-z0-9_\-]{32,128})", text_part.get_content()
    )
    assert len(set(found)) == 1, found
    return found[0]


@dataclass
class Person:
    """One staff member and their own browser."""

    world: World
    api: httpx.AsyncClient
    staff: dict[str, Any]
    browser: httpx.AsyncClient
    password: str = field(
        default_factory=lambda: f"{secrets.token_urlsafe(12)} lantern {secrets.token_urlsafe(9)}"
    )
    token: str | None = None
    codes: list[str] = field(default_factory=list)

    @classmethod
    async def create(cls, world: World, api: httpx.AsyncClient, label: str, first: str = "Jo") -> Person:
        staff = await create_staff(api, world, label, first=first)
        return cls(world=world, api=api, staff=staff, browser=new_browser())

    async def close(self) -> None:
        await self.browser.aclose()

    @property
    def id(self) -> str:
        return str(self.staff["id"])

    @property
    def to(self) -> str:
        return str(self.staff["external_email_1"])

    @property
    def workflow_id(self) -> str:
        return f"sso-setup-{self.id}"

    @property
    def base(self) -> str:
        return str(self.world.stack.base_url)

    def setup_emails(self) -> list[ReceivedEmail]:
        return emails_to(self.world.smtp, self.to, SUBJECT)

    def code_emails(self) -> list[ReceivedEmail]:
        return emails_to(self.world.smtp, self.to, CODE_SUBJECT)

    async def status(self) -> dict[str, Any]:
        return await status(self.api, self.id)

    async def wait_for_state(self, state: str, timeout: float = 60) -> dict[str, Any]:
        async def reached() -> dict[str, Any] | None:
            body = await self.status()
            return body if body["state"] == state else None

        return await eventually(
            reached,
            timeout,
            interval=0.5,  # type: ignore[no-any-return]
            what=f"{self.staff['first_name']}'s setup to be {state}",
        )

    # -- the steps ------------------------------------------------------------------------

    async def send(self) -> None:
        await send_email(self.api, self.world, self.id)

    async def read_setup_email(self, count: int = 1) -> str:
        received = await wait_for_email(self.world, self.to, count=count)
        assert received.message["Subject"] == SUBJECT
        self.token = link_token(received, self.base)
        return self.token

    async def password_page(self) -> httpx.Response:
        """The link, then "Forgot your password?": the page that sets it."""
        assert self.token is not None
        start = await open_link(self.browser, self.world, self.token)
        assert start.status_code == 200, text_of(start)[:2000]
        forgot = [href for label, href in links_of(start) if label == "Forgot your password?"]
        assert len(forgot) == 1, links_of(start)
        page = await self.browser.get(urljoin(str(start.url), forgot[0]))
        assert page.status_code == 200 and "Set your password" in text_of(page), text_of(page)
        return page

    async def set_password(self, page: httpx.Response) -> httpx.Response:
        return await press(self.browser, page, "Set password", password=self.password, confirm=self.password)

    async def read_code(self, count: int = 1) -> str:
        code = await wait_for_code_email(self.world, self.to, count=count)
        self.codes.append(code)
        return code

    async def confirm_page(self, timeout: float = 60) -> httpx.Response:
        """The confirm page once it says the code was sent."""

        async def sent() -> httpx.Response | None:
            page = await get_page(self.browser, f"{self.base}/sso/setup/confirm")
            assert page.status_code == 200, text_of(page)[:2000]
            return page if "We've sent a 6-digit verification code" in text_of(page) else None

        return await eventually(
            sent,
            timeout,
            interval=0.5,  # type: ignore[no-any-return]
            what="the confirm page to say the code was sent",
        )

    async def confirm(self, page: httpx.Response, code: str) -> httpx.Response:
        return await press(self.browser, page, "Confirm account", code=code)

    async def mfa_page(self) -> httpx.Response:
        page = await get_page(self.browser, f"{self.base}/sso/setup/mfa")
        assert page.status_code == 200, text_of(page)[:2000]
        assert "Multi-Factor Authentication" in text_of(page)
        return page

    async def skip_mfa(self, page: httpx.Response) -> httpx.Response:
        return await press(self.browser, page, "No thanks, I'll set it up later")

    async def to_confirm_page(self) -> httpx.Response:
        """From the setup email to the confirm page showing a sent code."""
        await self.read_setup_email()
        response = await self.set_password(await self.password_page())
        await follow(self.browser, response, "/sso/setup/confirm")
        await self.read_code()
        return await self.confirm_page()

    async def to_mfa_page(self) -> httpx.Response:
        page = await self.to_confirm_page()
        return await follow(self.browser, await self.confirm(page, self.codes[-1]), "/sso/setup/mfa")

    async def finish(self, mfa_page: httpx.Response) -> None:
        """No thanks to MFA, and the done page."""
        done = await follow(self.browser, await self.skip_mfa(mfa_page), "/sso/setup/done")
        assert "Your Single Sign-On is now active" in text_of(done)


async def repost(
    person: Person,
    response: httpx.Response,
    timeout: float = RECOVERY,
) -> httpx.Response:
    """The same form again (same fields, same submission id), as a person pressing the button
    again after "please try again in a minute", until the answer is not that any more."""
    request = response.request
    assert request.method == "POST"
    content = request.content

    async def answered() -> httpx.Response | None:
        again = await person.browser.post(
            str(request.url), content=content, headers={"Content-Type": request.headers["Content-Type"]}
        )
        assert again.status_code != 500, again.text
        if again.status_code == 503:
            assert UNAVAILABLE in text_of(again), text_of(again)[:2000]
            await asyncio.sleep(2)
            return None
        return again

    return await eventually(
        answered,
        timeout,
        interval=0.5,  # type: ignore[no-any-return]
        what=f"an answer to {request.url.path} other than 503",
    )


async def settled(person: Person, response: httpx.Response) -> httpx.Response:
    """The step's answer: pressed again while it says "please try again in a minute"."""
    return await repost(person, response) if response.status_code == 503 else response
