"""Helpers shared by the sign-in and password reset tests.

A browser (its own cookie jar, no automatic redirects, forms sent with the hidden fields of
the page they came from), people with an active Single Sign-On account written straight to
the database (the setup pages are tested elsewhere), and the outbox read as a person reads
their email. The web app they run against is tests/support/harness.py's stack.
"""

from __future__ import annotations

import asyncio
import html
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pyotp
from sqlalchemy import select, update

from core.codec import keyring_from_settings
from core.db import SessionFactory
from core.models import (
    AccountStatus,
    AuditEvent,
    BrowserSession,
    OutboxEmail,
    SsoAccount,
    Staff,
    utcnow,
)
from core.orgs import DEFAULT_ORG_ID
from core.passwords import Hasher
from core.settings import Settings
from core.totp import totp_aad

PUBLIC_URL = "https://sso.example.test"  # make_settings' public URL
PASSWORD = "Velvet-Orbit-Lantern-Pixel-42"
NEW_PASSWORD = "Quartz-Meadow-Harbor-Tulip-97"
ADMIN_KEY_NAME = "test-admin"
ADMIN_ACTOR = f"admin-key:{ADMIN_KEY_NAME}"
SESSION_COOKIE = "__Host-sso_session"
PENDING_COOKIE = "__Host-sso_pending"
RESET_COOKIE = "__Host-sso_reset"
CSRF_COOKIE = "__Host-sso_csrf"
REFUSED = "Incorrect email or password"
GUARD_SECONDS = 20  # real-time guard for polling; never an assertion about durations

FORM = re.compile(r'<form\b[^>]*\baction="([^"]+)"[^>]*>(.*?)</form>', re.S)
HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')
TOKENS = re.compile(r'(name="(?:csrf|submission)" value=")[^"]*(")')
TAG = re.compile(r"<[^>]+>")
CODE_LINE = re.compile(r"^\s+(\d{6})\s*$", re.M)
RECOVERY_CODE = re.compile(r"<code>([a-z2-7]{5}-[a-z2-7]{5})</code>")


# -- pages ------------------------------------------------------------------------------


def page_text(response: httpx.Response) -> str:
    """The page as a person reads it: no tags, entities decoded, whitespace collapsed."""
    return " ".join(html.unescape(TAG.sub(" ", response.text)).split())


def hidden_fields(response: httpx.Response, action: str) -> dict[str, str]:
    for match in FORM.finditer(response.text):
        if html.unescape(match.group(1)) == action:
            return {name: html.unescape(value) for name, value in HIDDEN.findall(match.group(2))}
    raise AssertionError(f"no form posting to {action} on the page:\n{response.text}")


def without_tokens(body: str, *echoed: str) -> str:
    """The page with its per-browser csrf and per-page submission values blanked, and what
    the person typed (echoed back into the form) replaced by a placeholder."""
    body = TOKENS.sub(r"\1\2", body)
    for value in echoed:
        body = body.replace(html.escape(value, quote=True), "TYPED")
    return body


def set_cookies(response: httpx.Response) -> dict[str, str]:
    """Set-Cookie headers of a response by cookie name: the whole header, value blanked."""
    found = {}
    for header in response.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        _, _, attributes = rest.partition(";")
        found[name] = attributes.strip()
    return found


def cookie_attributes(response: httpx.Response, name: str) -> set[str]:
    attributes = set_cookies(response).get(name)
    assert attributes is not None, (name, response.headers.get_list("set-cookie"))
    return {part.strip().lower() for part in attributes.split(";") if part.strip()}


def redirected_to(response: httpx.Response, location: str) -> bool:
    return response.status_code == 303 and response.headers.get("location") == location


class Browser:
    """One browser: its own cookie jar, no automatic redirects."""

    def __init__(self, transport: httpx.AsyncBaseTransport, base_url: str = PUBLIC_URL) -> None:
        # Secure cookies are only sent back over https: the browser talks to the public URL.
        self.base_url = base_url
        self.http = httpx.AsyncClient(transport=transport, base_url=base_url)

    async def get(self, path: str, **params: str) -> httpx.Response:
        return await self.http.get(path, params=params or None)

    async def post(self, path: str, data: dict[str, str]) -> httpx.Response:
        return await self.http.post(path, data=data)

    async def submit(self, page: httpx.Response, action: str, **fields: str) -> httpx.Response:
        """Send the form of `page` that posts to `action`, with its hidden fields."""
        return await self.post(action, {**hidden_fields(page, action), **fields})

    def cookie(self, name: str) -> str | None:
        return self.http.cookies.get(name)

    def set_cookie(self, name: str, value: str) -> None:
        host = httpx.URL(self.base_url).host
        self.http.cookies.set(name, value, domain=host, path="/")

    async def aclose(self) -> None:
        await self.http.aclose()


@asynccontextmanager
async def browsing(transport: httpx.AsyncBaseTransport, base_url: str = PUBLIC_URL) -> AsyncIterator[Browser]:
    browser = Browser(transport, base_url)
    try:
        yield browser
    finally:
        await browser.aclose()


async def sign_in(browser: Browser, email: str, password: str = PASSWORD, **extra: str) -> httpx.Response:
    """The login page, then its form with this email and password (and any field given)."""
    page = await browser.get("/sso/login")
    assert page.status_code == 200, page.text
    return await browser.submit(page, "/sso/login", email=email, password=password, **extra)


def recovery_codes_in(page: httpx.Response) -> list[str]:
    """The recovery codes a page shows (once)."""
    return RECOVERY_CODE.findall(page.text)


async def signed_in_page(browser: Browser) -> httpx.Response:
    return await browser.get("/sso/account")


# -- people -----------------------------------------------------------------------------


@dataclass
class Person:
    staff_id: uuid.UUID
    account_id: uuid.UUID
    email: str
    first_name: str
    last_name: str
    totp_secret: str | None = None

    def totp_now(self) -> str:
        assert self.totp_secret is not None
        return pyotp.TOTP(self.totp_secret).now()

    def wrong_totp(self) -> str:
        assert self.totp_secret is not None
        return wrong_totp(self.totp_secret)


def wrong_totp(secret: str) -> str:
    """Six digits that match no step inside the accepted window."""
    totp = pyotp.TOTP(secret)
    step = totp.timecode(datetime.now(UTC))
    near = {totp.generate_otp(s) for s in range(step - 2, step + 3)}
    candidate = int(totp.now())
    while f"{candidate:06d}" in near:
        candidate = (candidate + 1) % 1_000_000
    return f"{candidate:06d}"


async def make_person(
    sessions: SessionFactory,
    settings: Settings,
    *,
    mfa: bool = False,
    status: str = AccountStatus.active.value,
    password: str = PASSWORD,
    password_hash: str | None = None,
    first_name: str = "Robin",
    last_name: str = "Ashcombe",
    is_admin: bool = False,
    org_id: uuid.UUID = DEFAULT_ORG_ID,
    **account: Any,
) -> Person:
    """A staff member with a Single Sign-On account, as setup would have left it."""
    email = f"{first_name}.{last_name}.{uuid.uuid4().hex[:8]}@example.com".lower()
    staff = Staff(
        org_id=org_id,
        id=uuid.uuid4(),
        first_name=first_name,
        last_name=last_name,
        external_email_1=email,
        is_admin=is_admin,
    )
    now = utcnow()
    secret = pyotp.random_base32(length=32) if mfa else None
    row = SsoAccount(
        id=uuid.uuid4(),
        staff_id=staff.id,
        login_email=email,
        password_hash=password_hash
        or Hasher(settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism).hash(
            password
        ),
        verified_at=now,
        status=status,
        activated_at=now if status == AccountStatus.active.value else None,
        totp_secret_encrypted=keyring_from_settings(settings).seal(secret.encode(), totp_aad(staff.id))
        if secret
        else None,
        mfa_enabled_at=now if secret else None,
        **account,
    )
    async with sessions() as session:
        session.add(staff)
        await session.flush()
        session.add(row)
        await session.commit()
    return Person(staff.id, row.id, email, first_name, last_name, secret)


async def account_row(sessions: SessionFactory, person: Person) -> SsoAccount:
    async with sessions() as session:
        row = await session.scalar(select(SsoAccount).where(SsoAccount.staff_id == person.staff_id))
    assert row is not None
    return row


async def update_account(sessions: SessionFactory, person: Person, **values: Any) -> None:
    async with sessions() as session:
        await session.execute(
            update(SsoAccount).where(SsoAccount.staff_id == person.staff_id).values(**values)
        )
        await session.commit()


async def session_rows(
    sessions: SessionFactory, person: Person, purpose: str | None = None
) -> list[BrowserSession]:
    query = select(BrowserSession).where(BrowserSession.staff_id == person.staff_id)
    if purpose is not None:
        query = query.where(BrowserSession.purpose == purpose)
    async with sessions() as session:
        return list((await session.scalars(query.order_by(BrowserSession.created_at))).all())


async def move_session(sessions: SessionFactory, id_hash: str, back: timedelta, *columns: str) -> None:
    """Moves the given time columns of one session row `back` into the past."""
    async with sessions() as session:
        row = await session.get(BrowserSession, id_hash)
        assert row is not None
        for column in columns:
            setattr(row, column, getattr(row, column) - back)
        await session.commit()


async def audit_events(sessions: SessionFactory, person: Person) -> list[AuditEvent]:
    async with sessions() as session:
        return list(
            (
                await session.scalars(
                    select(AuditEvent)
                    .where(AuditEvent.target == str(person.staff_id))
                    .order_by(AuditEvent.occurred_at)
                )
            ).all()
        )


# -- the outbox (the person's inbox) ----------------------------------------------------


async def outbox(sessions: SessionFactory, settings: Settings, address: str) -> list[tuple[str, str]]:
    """(subject, text body) of every email to `address`, oldest first."""
    keyring = keyring_from_settings(settings)
    async with sessions() as session:
        rows = (
            await session.scalars(
                select(OutboxEmail).where(OutboxEmail.to_address == address).order_by(OutboxEmail.created_at)
            )
        ).all()
    return [(r.subject, keyring.unseal(r.body_encrypted, b"outbox").decode().split("\0")[0]) for r in rows]


async def emails_with_subject(
    sessions: SessionFactory, settings: Settings, address: str, subject: str, count: int = 1
) -> list[str]:
    """Text bodies of the emails with this subject, once at least `count` have arrived."""
    async with asyncio.timeout(GUARD_SECONDS):
        while True:
            bodies = [text for s, text in await outbox(sessions, settings, address) if s == subject]
            if len(bodies) >= count:
                return bodies
            await asyncio.sleep(0.05)


def code_in(text: str) -> str:
    match = CODE_LINE.search(text)
    assert match, text
    return match.group(1)
