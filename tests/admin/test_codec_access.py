"""docs/security.md §26: payloads decode for an authorised operator only. Besides an admin API key,
an administrator signed in with a second factor may decode from the Temporal UI (which sends
the sign-in cookie along); everyone else gets 401 and sees ciphertext."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import update

from core.models import Staff
from tests.support.accounts import SESSION_COOKIE, Person, sign_in
from tests.support.harness import Stack, running_app

BODY = {"payloads": [{"metadata": {"encoding": "anNvbi9wbGFpbg=="}, "data": "IngiCg=="}]}


@pytest.fixture
async def app(sqlite_url: str) -> AsyncIterator[Stack]:
    async with running_app(sqlite_url) as running:
        yield running


async def make_admin(app: Stack, person: Person) -> None:
    async with app.sessions() as session:
        await session.execute(update(Staff).where(Staff.id == person.staff_id).values(is_admin=True))
        await session.commit()


async def encoded(app: Stack) -> dict[str, object]:
    answer = await app.http.post("/codec/encode", json=BODY, headers=app.admin)
    assert answer.status_code == 200
    return answer.json()  # type: ignore[no-any-return]


async def test_an_admin_signed_in_with_mfa_can_decode(app: Stack) -> None:
    person = await app.person(mfa=True)
    await make_admin(app, person)
    browser = app.browser()
    await sign_in(browser, person.email)
    page = await browser.get("/sso/login/mfa")
    answer = await browser.submit(page, "/sso/login/mfa", code=person.totp_now())
    assert answer.status_code == 303
    decoded = await browser.http.post("/codec/decode", json=await encoded(app))
    assert decoded.status_code == 200 and decoded.json() == BODY


@pytest.mark.parametrize("kind", ["anonymous", "staff-with-mfa", "admin-password-only", "wrong-key"])
async def test_anyone_else_is_refused(app: Stack, kind: str) -> None:
    browser = app.browser()
    headers = {}
    if kind == "staff-with-mfa":
        person = await app.person(mfa=True)
        await sign_in(browser, person.email)
        page = await browser.get("/sso/login/mfa")
        await browser.submit(page, "/sso/login/mfa", code=person.totp_now())
        assert browser.cookie(SESSION_COOKIE)
    elif kind == "admin-password-only":
        person = await app.person()
        await make_admin(app, person)
        assert (await sign_in(browser, person.email)).status_code == 303
        assert browser.cookie(SESSION_COOKIE)
    elif kind == "wrong-key":
        headers = {"Authorization": "Bearer ssoak_not-a-real-key"}
    ciphertext = await encoded(app)
    refused = await browser.http.post("/codec/decode", json=ciphertext, headers=headers)
    assert refused.status_code == 401, refused.text
    assert "admin API key" in refused.json()["message"]


async def test_failed_key_checks_are_limited_like_the_admin_api(sqlite_url: str) -> None:
    """Wrong keys at /codec count against the address as at the admin API (one count for
    both): past SSO_AUTH_FAILURE_LIMIT a minute the answer is 429, while a real key still
    decodes."""
    async with running_app(sqlite_url, auth_failure_limit=3) as app:
        ciphertext = await encoded(app)
        wrong = {"Authorization": "Bearer ssoak_not-a-real-key"}
        answers = [await app.http.post("/codec/decode", json=ciphertext, headers=wrong) for _ in range(4)]
        assert [a.status_code for a in answers] == [401, 401, 401, 429]
        assert int(answers[-1].headers["Retry-After"]) >= 1
        assert (await app.http.post("/codec/encode", json=BODY)).status_code == 429
        assert (await app.http.get("/api/v1/staff", headers=wrong)).status_code == 429
        decoded = await app.http.post("/codec/decode", json=ciphertext, headers=app.admin)
        assert decoded.status_code == 200 and decoded.json() == BODY


async def test_decode_shows_unauthenticated_payloads_as_such(app: Stack) -> None:
    """A payload not encrypted with the keyring (what a client without the key sends) is
    shown as a plain statement, not passed through as if it were ours."""
    forged = {
        "payloads": [
            {"metadata": {"encoding": "anNvbi9wbGFpbg=="}, "data": "eyJhY3RvciI6ImFkbWluLWtleTpmb3JnZWQifQ=="}
        ]
    }
    answer = await app.http.post("/codec/decode", json=forged, headers=app.admin)
    assert answer.status_code == 200
    [shown] = answer.json()["payloads"]
    text = base64.b64decode(shown["data"]).decode()
    assert text.startswith('"unauthenticated payload: not encrypted with this deployment')
    assert "forged" not in text
    assert base64.b64decode(shown["metadata"]["encoding"]) == b"json/plain"
