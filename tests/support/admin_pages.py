"""What the admin page tests share: signing an administrator in, the one-time message of an
admin page, a known password hash."""

from __future__ import annotations

import html
import re
import uuid

import httpx
from sqlalchemy import update

from core.db import SessionFactory
from core.models import Staff
from core.passwords import Hasher
from core.settings import Settings
from tests.support.accounts import PASSWORD, Browser, Person, redirected_to
from tests.support.harness import Stack

# The administrator the admin page tests sign in (their audit rows and pages name them).
AVERY = {"first_name": "Avery", "last_name": "Quill"}
FLASH = re.compile(r'<div class="(error|success)" role="(alert|status)"><p>(.*?)</p></div>', re.S)


def text_of(fragment: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def flash_of(page: httpx.Response) -> tuple[str, str] | None:
    """(kind, text) of the one-time message on an admin page, or None."""
    found = FLASH.findall(page.text)
    assert len(found) <= 1, found
    if not found:
        return None
    kind, role, text = found[0]
    assert role == ("alert" if kind == "error" else "status")
    return kind, text_of(text)


_HASHES: dict[tuple[int, int, int], str] = {}


def known_hash(settings: Settings) -> str:
    """PASSWORD hashed once per module: many people, one argon2 run."""
    key = (settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism)
    if key not in _HASHES:
        _HASHES[key] = Hasher(*key).hash(PASSWORD)
    return _HASHES[key]


async def set_admin(sessions: SessionFactory, staff_id: uuid.UUID, value: bool = True) -> None:
    async with sessions() as session:
        await session.execute(update(Staff).where(Staff.id == staff_id).values(is_admin=value))
        await session.commit()


async def sign_in_with_totp(browser: Browser, person: Person, return_to: str | None = None) -> httpx.Response:
    """Password, then the authenticator code: the answer to the code."""
    login = await browser.get("/sso/login", **({"return_to": return_to} if return_to else {}))
    assert login.status_code == 200, login.text
    sent = await browser.submit(login, "/sso/login", email=person.email, password=PASSWORD)
    assert redirected_to(sent, "/sso/login/mfa"), sent.text
    page = await browser.get("/sso/login/mfa")
    return await browser.submit(page, "/sso/login/mfa", code=person.totp_now())


async def make_org(stack: Stack, slug: str) -> tuple[str, dict[str, str]]:
    """An organisation and an admin key of it, made by the operator (bootstrap) key."""
    created = await stack.http.post(
        "/api/v1/orgs", json={"name": f"{slug.title()} Lettings", "slug": slug}, headers=stack.admin
    )
    assert created.status_code == 201, created.text
    org_id = created.json()["id"]
    key = await stack.http.post(
        f"/api/v1/orgs/{org_id}/keys", json={"name": f"{slug}-key"}, headers=stack.admin
    )
    assert key.status_code == 201, key.text
    assert key.json()["org_id"] == org_id
    return org_id, {"Authorization": f"Bearer {key.json()['key']}"}
