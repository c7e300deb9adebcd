"""People going through the pages over HTTP, as browsers would, timing each page step."""

from __future__ import annotations

import asyncio
import html
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pyotp

from bench.measure import Latencies
from tests.support.stack import SmtpSink

HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')
LINK = re.compile(r"/sso/setup/([A-Za-z0-9_\-]{32,128})")
CODE = re.compile(r"^\s+(\d{6})\s*$", re.MULTILINE)
KEY = re.compile(r'<code id="manual-key" class="key">([^<]*)</code>')
SENT = "We've sent a 6-digit verification code"
CODE_SUBJECT = "Your agentOS verification code"
WELCOME_SUBJECT = "Welcome to agentOS Single Sign-On"
EMAIL_DEADLINE = 300.0


def fields(page: httpx.Response, action: str) -> dict[str, str]:
    """The hidden fields of the form on `page` that posts to `action`."""
    start = page.text.find(f'action="{action}"')
    if start < 0:
        raise RuntimeError(f"no form posting to {action} on {page.url} ({page.status_code})")
    end = page.text.find("</form>", start)
    return {k: html.unescape(v) for k, v in HIDDEN.findall(page.text[start:end])}


async def email_to(smtp: SmtpSink, address: str, subject: str, count: int = 1) -> str:
    """The text part of the `count`-th email with `subject` to `address`."""
    deadline = time.monotonic() + EMAIL_DEADLINE
    while time.monotonic() < deadline:
        mine = [m for m in smtp.messages if address in m.rcpt_tos and m.message["Subject"] == subject]
        if len(mine) >= count:
            part = mine[count - 1].message.get_body(preferencelist=("plain",))
            assert part is not None
            return str(part.get_content())
        await asyncio.sleep(0.05)
    raise TimeoutError(f"no email '{subject}' #{count} to {address}")


@dataclass
class Stackside:
    base_url: str
    admin: httpx.AsyncClient
    smtp: SmtpSink
    latencies: Latencies

    async def new_person(self, label: str = "bench") -> dict[str, Any]:
        answer = await self.admin.post(
            "/api/v1/staff",
            json={
                "first_name": "Bench",
                "last_name": label.title(),
                "external_email_1": f"{label}.{uuid.uuid4().hex[:12]}@example.com",
            },
        )
        answer.raise_for_status()
        return answer.json()  # type: ignore[no-any-return]

    async def send_email(self, staff_id: str) -> None:
        with self.latencies.timed("admin: send SSO email (API)"):
            answer = await self.admin.post(f"/api/v1/staff/{staff_id}/sso-email")
        answer.raise_for_status()

    async def onboard(self, mfa: bool) -> None:
        """One person from "Send Single Sign-On Email" to an active account."""
        staff = await self.new_person("onboard")
        address = staff["external_email_1"]
        await self.send_email(staff["id"])
        async with httpx.AsyncClient(base_url=self.base_url, timeout=60) as browser:
            await self.to_code_step(browser, address)
            await self.confirm(browser, address)
            if mfa:
                await self.complete_mfa(browser)
            else:
                page = await browser.get("/sso/setup/mfa")
                with self.latencies.timed("page: skip MFA"):
                    answer = await browser.post(
                        "/sso/setup/mfa/skip", data=fields(page, "/sso/setup/mfa/skip")
                    )
                expect(answer, "/sso/setup/done")

    async def to_code_step(self, browser: httpx.AsyncClient, address: str) -> None:
        token_text = await email_to(self.smtp, address, WELCOME_SUBJECT)
        match = LINK.search(token_text)
        assert match is not None
        token = match.group(1)
        with self.latencies.timed("page: open link (GET)"):
            start = await browser.get(f"/sso/setup/{token}")
        assert start.status_code == 200, start.text[:500]
        with self.latencies.timed("page: password form (GET)"):
            form = await browser.get(f"/sso/setup/{token}/password")
        password = f"Bench {uuid.uuid4().hex[:12]} lantern quartz"
        with self.latencies.timed("page: set password (argon2 hash)"):
            answer = await browser.post(
                f"/sso/setup/{token}/password",
                data={
                    **fields(form, f"/sso/setup/{token}/password"),
                    "password": password,
                    "confirm": password,
                },
            )
        expect(answer, "/sso/setup/confirm")

    async def confirm(self, browser: httpx.AsyncClient, address: str) -> None:
        text = await email_to(self.smtp, address, CODE_SUBJECT)
        codes = CODE.findall(text)
        assert len(codes) == 1
        deadline = time.monotonic() + EMAIL_DEADLINE
        while True:
            with self.latencies.timed("page: confirm page (GET, queries the flow)"):
                page = await browser.get("/sso/setup/confirm")
            if SENT in html.unescape(page.text) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        with self.latencies.timed("page: confirm code"):
            answer = await browser.post(
                "/sso/setup/confirm", data={**fields(page, "/sso/setup/confirm"), "code": codes[0]}
            )
        expect(answer, "/sso/setup/mfa")

    async def complete_mfa(self, browser: httpx.AsyncClient) -> None:
        with self.latencies.timed("page: MFA page (GET, QR code)"):
            page = await browser.get("/sso/setup/mfa")
        key = KEY.findall(page.text)[0].replace(" ", "")
        with self.latencies.timed("page: complete MFA"):
            answer = await browser.post(
                "/sso/setup/mfa", data={**fields(page, "/sso/setup/mfa"), "code": pyotp.TOTP(key).now()}
            )
        expect(answer, "/sso/setup/done")


def expect(answer: httpx.Response, location: str) -> None:
    if answer.status_code != 303 or answer.headers.get("location") != location:
        raise RuntimeError(
            f"expected a redirect to {location}, got {answer.status_code}: "
            f"{html.unescape(re.sub(r'<[^>]+>', ' ', answer.text))[:400]}"
        )
