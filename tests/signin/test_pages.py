"""Signing in, sessions and signing out, driven like a browser against the app in-process, on
SQLite and PostgreSQL.

Accounts are written straight to the database (active, argon2id hash, optionally a sealed
TOTP secret); the setup pages that normally make them are tested elsewhere. Throttling delays
are checked by moving a clock that only the sign-in service reads, or by editing rows: never
by sleeping. docs/security.md §3, §13, §15, §16, §19-21, §23 and §30 are what these prove.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import httpx
import pytest
import pytest_asyncio
from argon2 import PasswordHasher, Type
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import select

import api.services.signin as signin_service
from api.services.sessions import session_hash
from core.models import BrowserSession, RateCounter, SsoAccount, utcnow
from core.passwords import Hasher
from core.throttle import RedisCounter
from tests.support.accounts import (
    ADMIN_ACTOR,
    CSRF_COOKIE,
    PASSWORD,
    PENDING_COOKIE,
    REFUSED,
    SESSION_COOKIE,
    Browser,
    account_row,
    audit_events,
    browsing,
    cookie_attributes,
    hidden_fields,
    move_session,
    page_text,
    redirected_to,
    session_rows,
    set_cookies,
    sign_in,
    signed_in_page,
    without_tokens,
)
from tests.support.config import worker_number
from tests.support.harness import Stack, running_app

pytestmark = [pytest.mark.pages, pytest.mark.asyncio(loop_scope="session")]

APP_PREFIX = "https://app.example.test/"
INTRANET = "https://intranet.example.test/home"
WRONG = "Not-The-Right-Password-1"
MFA_REFUSED = "That code didn't match, or it was already used."
# A Redis database of this test process's own (the suite runs on several processes).
REDIS_URL = f"redis://127.0.0.1:6379/{15 - worker_number()}"
# The per-account delays after the 5th, 6th, ... 16th failure in a row, in seconds.
DELAYS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900]


@pytest_asyncio.fixture(loop_scope="session")
async def app(database_url: str) -> AsyncIterator[Stack]:
    # A high per-IP limit: these tests are about the account, and come from one address.
    async with running_app(
        database_url, allowed_return_urls=[APP_PREFIX, INTRANET], signin_ip_limit=1000
    ) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="session")
async def browser(app: Stack) -> AsyncIterator[Browser]:
    async with browsing(app.transport) as person:
        yield person


class Clock:
    """utcnow() for the sign-in service only: lock times are exact and can be passed."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(signin_service, "utcnow", fake)
    return fake


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert REFUSED in page_text(response)
    assert SESSION_COOKIE not in set_cookies(response)


async def signed_in_cookie(app: Stack, browser: Browser, email: str) -> str:
    response = await sign_in(browser, email)
    assert redirected_to(response, "/sso/account"), response.text
    cookie = browser.cookie(SESSION_COOKIE)
    assert cookie
    return cookie


async def row_for(app: Stack, cookie: str) -> BrowserSession:
    async with app.sessions() as session:
        row = await session.get(BrowserSession, session_hash(app.settings, cookie))
    assert row is not None
    return row


async def replayed(app: Stack, cookie: str) -> httpx.Response:
    """The account page, in a browser that only has this session cookie."""
    async with browsing(app.transport) as other:
        other.set_cookie(SESSION_COOKIE, cookie)
        return await signed_in_page(other)


# -- signing in -------------------------------------------------------------------------


async def test_sign_in_without_mfa(app: Stack, browser: Browser) -> None:
    person = await app.person()
    assert (await signed_in_page(browser)).headers["location"] == "/sso/login"
    response = await sign_in(browser, f"  {person.email.upper()} ")
    assert redirected_to(response, "/sso/account"), response.text
    assert cookie_attributes(response, SESSION_COOKIE) >= {
        "httponly",
        "samesite=lax",
        "secure",
        "path=/",
        f"max-age={int(app.settings.session_max_ttl.total_seconds())}",
    }
    cookie = browser.cookie(SESSION_COOKIE)
    assert cookie and len(cookie) >= 43  # 256 random bits, url-safe

    page = await signed_in_page(browser)
    assert page.status_code == 200, page.text
    text = page_text(page)
    assert "You're signed in" in text
    assert f"Signed in as {person.first_name} {person.last_name} ({person.email})" in text
    assert hidden_fields(page, "/sso/logout")["csrf"]
    assert ">Sign out</button>" in page.text

    # The table holds only the keyed hash of the cookie's value.
    [row] = await session_rows(app.sessions, person)
    assert row.purpose == "signin" and row.revoked_at is None
    assert row.id_hash == session_hash(app.settings, cookie) != cookie
    async with app.sessions() as session:
        everything = (await session.scalars(select(BrowserSession))).all()
    for stored in everything:
        for column in BrowserSession.__table__.columns:
            assert cookie not in str(getattr(stored, column.key)), column.key

    status = await app.status(person)
    assert status["state"] == "active" and status["last_sign_in_at"] is not None
    assert status["failed_sign_ins"] == 0 and status["locked_until"] is None
    assert status["needs_reset"] is False
    actions = [e.action for e in await audit_events(app.sessions, person)]
    assert actions == ["sign_in.success"]


async def test_cookies_without_https(database_url: str) -> None:
    """Over plain http (development) the cookie has no __Host- prefix and no Secure flag."""
    # Plain http is for development only: asked for, as `sso dev` does.
    async with running_app(database_url, public_url="http://sso.example.test", env="development") as local:
        person = await local.person()
        async with browsing(local.transport, "http://sso.example.test") as browser:
            page = await browser.get("/sso/login")
            assert cookie_attributes(page, "sso_csrf") >= {"httponly", "samesite=lax"}
            response = await browser.submit(page, "/sso/login", email=person.email, password=PASSWORD)
            assert redirected_to(response, "/sso/account"), response.text
            attributes = cookie_attributes(response, "sso_session")
            assert {"httponly", "samesite=lax", "path=/"} <= attributes
            assert "secure" not in attributes
            assert SESSION_COOKIE not in set_cookies(response)
            assert (await signed_in_page(browser)).status_code == 200


async def test_second_sign_in_gets_a_new_id_and_ends_the_first(app: Stack, browser: Browser) -> None:
    person = await app.person()
    first = await signed_in_cookie(app, browser, person.email)
    second = await signed_in_cookie(app, browser, person.email)
    assert first != second
    assert (await row_for(app, first)).revoked_at is not None
    assert (await row_for(app, second)).revoked_at is None
    assert (await signed_in_page(browser)).status_code == 200
    assert redirected_to(await replayed(app, first), "/sso/login?notice=expired")
    assert (await replayed(app, second)).status_code == 200


async def test_return_to_only_to_configured_places(app: Stack) -> None:
    person = await app.person()
    allowed = f"{APP_PREFIX}reports?id=7"
    async with browsing(app.transport) as browser:
        page = await browser.get("/sso/login", return_to=allowed)
        assert hidden_fields(page, "/sso/login")["return_to"] == allowed
        response = await browser.submit(page, "/sso/login", email=person.email, password=PASSWORD)
        assert redirected_to(response, allowed), response.text
    async with browsing(app.transport) as browser:
        response = await sign_in(browser, person.email, return_to=INTRANET)
        assert redirected_to(response, INTRANET)
    for target in (
        "//evil.example",
        "https://evil.example/",
        "https://app.example.test",
        "https://app.example.test.evil.example/",
        f"{APP_PREFIX}../../evil",
        f"{INTRANET}/extra",
        "javascript:alert(1)",
        "/sso/account/../x",
    ):
        async with browsing(app.transport) as browser:
            page = await browser.get("/sso/login", return_to=target)
            assert hidden_fields(page, "/sso/login")["return_to"] == "", target
            # Sent straight in the form (a crafted page) it is ignored all the same.
            response = await sign_in(browser, person.email, return_to=target)
            assert redirected_to(response, "/sso/account"), target


async def test_sign_in_with_mfa(app: Stack, browser: Browser) -> None:
    person = await app.person(mfa=True)
    response = await sign_in(browser, person.email, return_to=INTRANET)
    assert redirected_to(response, "/sso/login/mfa"), response.text
    assert SESSION_COOKIE not in set_cookies(response)
    assert cookie_attributes(response, PENDING_COOKIE) >= {"httponly", "samesite=lax", "secure"}
    pending = browser.cookie(PENDING_COOKIE)
    assert pending
    # The password alone signs nobody in, not even with the pending id sent as a session.
    assert redirected_to(await signed_in_page(browser), "/sso/login")
    assert await session_rows(app.sessions, person, "signin") == []
    assert redirected_to(await replayed(app, pending), "/sso/login?notice=expired")

    page = await browser.get("/sso/login/mfa")
    assert page.status_code == 200 and "Enter your authenticator code" in page_text(page)
    wrong = await browser.submit(page, "/sso/login/mfa", code=person.wrong_totp())
    assert wrong.status_code == 401
    assert MFA_REFUSED in page_text(wrong)
    assert browser.cookie(SESSION_COOKIE) is None
    assert (await account_row(app.sessions, person)).failed_sign_ins == 1

    code = person.totp_now()
    right = await browser.submit(wrong, "/sso/login/mfa", code=f"{code[:3]} {code[3:]}")
    assert redirected_to(right, INTRANET), right.text
    session_id = browser.cookie(SESSION_COOKIE)
    assert session_id and session_id != pending
    assert browser.cookie(PENDING_COOKIE) is None
    [mfa_row] = await session_rows(app.sessions, person, "mfa")
    assert mfa_row.id_hash == session_hash(app.settings, pending)
    assert mfa_row.revoked_at is not None
    [signin_row] = await session_rows(app.sessions, person, "signin")
    assert signin_row.id_hash == session_hash(app.settings, session_id)
    assert (await signed_in_page(browser)).status_code == 200
    row = await account_row(app.sessions, person)
    assert row.failed_sign_ins == 0 and row.last_sign_in_at is not None
    success = [e for e in await audit_events(app.sessions, person) if e.action == "sign_in.success"]
    assert [e.details.get("mfa") for e in success] == [True]

    # The same code again, in a new sign-in: refused as a replay.
    async with browsing(app.transport) as attacker:
        assert redirected_to(await sign_in(attacker, person.email), "/sso/login/mfa")
        page = await attacker.get("/sso/login/mfa")
        replay = await attacker.submit(page, "/sso/login/mfa", code=code)
        assert replay.status_code == 401
        assert MFA_REFUSED in page_text(replay)
        assert attacker.cookie(SESSION_COOKIE) is None
        assert redirected_to(await signed_in_page(attacker), "/sso/login")
    reasons = [
        e.details.get("reason")
        for e in await audit_events(app.sessions, person)
        if e.action == "sign_in.totp_failed"
    ]
    assert reasons == ["wrong", "replayed"]


async def test_every_refusal_looks_the_same(app: Stack, browser: Browser) -> None:
    """Unknown address, wrong password, locked and not-yet-active accounts: one answer."""
    active = await app.person()
    locked = await app.person(failed_sign_ins=5, locked_until=utcnow() + timedelta(hours=1))
    pending = await app.person(status="pending")
    attempts = {
        "unknown": ("nobody.here@example.com", PASSWORD),
        "wrong password": (active.email, WRONG),
        "locked": (locked.email, PASSWORD),
        "pending": (pending.email, PASSWORD),
    }
    answers = {}
    for name, (email, password) in attempts.items():
        response = await sign_in(browser, email, password)
        assert_refused(response)
        answers[name] = (
            response.status_code,
            without_tokens(response.text, email),
            sorted(set_cookies(response)),
        )
    assert len(set(map(str, answers.values()))) == 1, answers
    assert (await account_row(app.sessions, active)).failed_sign_ins == 1
    assert (await account_row(app.sessions, locked)).failed_sign_ins == 5
    assert (await account_row(app.sessions, pending)).failed_sign_ins == 0


async def test_every_refusal_does_the_same_work(
    app: Stack, browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Comparable time, shown by the work done rather than by a stopwatch: every refusal
    (unknown address, wrong password, locked, not yet active) and a success run exactly one
    argon2id verification at the app's parameters; without a hash of its own, the address is
    checked against the stand-in hash made at start-up."""
    assert isinstance(app.transport, httpx.ASGITransport)
    hashing: signin_service.Hashing = app.transport.app.state.hashing  # type: ignore[attr-defined]
    params = f"$argon2id$v=19$m={app.settings.argon2_memory_kib},t={app.settings.argon2_time_cost}"
    assert hashing.stand_in.startswith(params)
    checked: list[str] = []
    real_verify = hashing.hasher.verify

    def verify(stored: str, password: str) -> bool:
        checked.append(stored)
        return real_verify(stored, password)

    monkeypatch.setattr(hashing.hasher, "verify", verify)
    active = await app.person()
    locked = await app.person(failed_sign_ins=5, locked_until=utcnow() + timedelta(hours=1))
    needs_reset = await app.person(failed_sign_ins=100)
    pending = await app.person(status="pending")
    async with app.sessions() as session:
        pending_row = await session.get(SsoAccount, pending.account_id)
        assert pending_row is not None
        pending_row.password_hash = None  # setup not finished: no password yet
        await session.commit()
    cases = [
        ("nobody.here@example.com", WRONG, hashing.stand_in, False),
        (active.email, WRONG, (await account_row(app.sessions, active)).password_hash, False),
        (locked.email, PASSWORD, (await account_row(app.sessions, locked)).password_hash, False),
        (needs_reset.email, PASSWORD, (await account_row(app.sessions, needs_reset)).password_hash, False),
        (pending.email, PASSWORD, hashing.stand_in, False),
        (active.email, PASSWORD, (await account_row(app.sessions, active)).password_hash, True),
    ]
    for email, password, stored, signs_in in cases:
        checked.clear()
        response = await sign_in(browser, email, password)
        if signs_in:
            assert redirected_to(response, "/sso/account"), response.text
        else:
            assert_refused(response)
        assert checked == [stored], email
        assert stored is not None and stored.startswith(params)


# -- throttling -------------------------------------------------------------------------


async def test_failures_lock_with_a_growing_delay(app: Stack, browser: Browser, clock: Clock) -> None:
    person = await app.person()
    wrong_answer = None
    for failures in range(1, 5):
        response = await sign_in(browser, person.email, WRONG)
        assert_refused(response)
        wrong_answer = without_tokens(response.text)
        row = await account_row(app.sessions, person)
        assert (row.failed_sign_ins, row.locked_until) == (failures, None)

    for failures, seconds in enumerate(DELAYS, start=5):
        assert_refused(await sign_in(browser, person.email, WRONG))
        row = await account_row(app.sessions, person)
        assert row.failed_sign_ins == failures
        assert row.locked_until == clock.now + timedelta(seconds=seconds), failures
        if failures in (5, 6, 15):
            # Locked: even the right password gets the same answer, and counts for nothing.
            clock.now = row.locked_until - timedelta(milliseconds=1)
            for password in (PASSWORD, WRONG):
                locked = await sign_in(browser, person.email, password)
                assert_refused(locked)
                assert without_tokens(locked.text) == wrong_answer
            again = await account_row(app.sessions, person)
            assert (again.failed_sign_ins, again.locked_until) == (failures, row.locked_until)
        status = await app.status(person)
        assert status["failed_sign_ins"] == failures and status["needs_reset"] is False
        clock.now = row.locked_until  # the lock has passed

    response = await sign_in(browser, person.email)
    assert redirected_to(response, "/sso/account"), response.text
    row = await account_row(app.sessions, person)
    assert (row.failed_sign_ins, row.locked_until) == (0, None)
    assert row.last_sign_in_at == clock.now
    failed = [e for e in await audit_events(app.sessions, person) if e.action == "sign_in.failed"]
    assert len(failed) == 4 + len(DELAYS) + 6


async def test_audit_tells_a_wrong_password_from_a_locked_account(
    app: Stack, browser: Browser, clock: Clock
) -> None:
    person = await app.person(failed_sign_ins=4)
    assert_refused(await sign_in(browser, person.email, WRONG))  # the 5th: starts a lock
    assert_refused(await sign_in(browser, person.email))  # refused: locked
    reasons = [
        e.details.get("reason")
        for e in await audit_events(app.sessions, person)
        if e.action == "sign_in.failed"
    ]
    assert reasons == ["wrong_password", "locked"]


async def test_each_temporary_lock_is_audited_once_with_the_ip(
    app: Stack, browser: Browser, clock: Clock
) -> None:
    person = await app.person(failed_sign_ins=3)
    assert_refused(await sign_in(browser, person.email, WRONG))  # the 4th: no delay yet
    assert_refused(await sign_in(browser, person.email, WRONG))  # the 5th: locks for 1 s
    for password in (WRONG, PASSWORD):  # refused while it lasts: no new lock, no new event
        assert_refused(await sign_in(browser, person.email, password))
    clock.now += timedelta(seconds=1)
    assert_refused(await sign_in(browser, person.email, WRONG))  # the 6th: locks for 2 s
    locks = [
        (e.actor, e.outcome, e.ip, e.details["failures"], e.details["seconds"])
        for e in await audit_events(app.sessions, person)
        if e.action == "sign_in.locked_temporarily"
    ]
    assert locks == [("system", "locked", "127.0.0.1", 5, 1), ("system", "locked", "127.0.0.1", 6, 2)]

    # Guesses sent together set one lock between them, and it is recorded once.
    other = await app.person(failed_sign_ins=4)
    for response in await guess_at_once([app], other.email, 6):
        assert_refused(response)
    assert [e.action for e in await audit_events(app.sessions, other)].count(
        "sign_in.locked_temporarily"
    ) == 1


async def test_a_hundred_failures_need_an_unlock(app: Stack, browser: Browser, clock: Clock) -> None:
    person = await app.person(failed_sign_ins=98)
    assert_refused(await sign_in(browser, person.email, WRONG))
    row = await account_row(app.sessions, person)
    assert row.failed_sign_ins == 99
    assert row.locked_until == clock.now + timedelta(minutes=15)
    status = await app.status(person)
    assert status["needs_reset"] is False and status["locked_until"] is not None

    clock.now = row.locked_until
    assert_refused(await sign_in(browser, person.email, WRONG))
    status = await app.status(person)
    assert status["failed_sign_ins"] == 100 and status["needs_reset"] is True
    assert "sign_in.locked_out" in [e.action for e in await audit_events(app.sessions, person)]

    clock.now += timedelta(days=2)  # no delay lifts this
    assert_refused(await sign_in(browser, person.email))
    assert (await account_row(app.sessions, person)).failed_sign_ins == 100

    unlocked = await app.http.post(f"/api/v1/staff/{person.staff_id}/unlock", headers=app.admin)
    assert unlocked.status_code == 200, unlocked.text
    assert unlocked.json() == {"failed_sign_ins": 0, "locked_until": None}
    status = await app.status(person)
    assert status["needs_reset"] is False and status["failed_sign_ins"] == 0
    assert redirected_to(await sign_in(browser, person.email), "/sso/account")


async def guess_at_once(apps: list[Stack], email: str, count: int) -> list[httpx.Response]:
    """`count` wrong passwords for this address sent together, spread over these web app instances: every form
    is loaded first, then all are submitted at the same moment."""
    async with contextlib.AsyncExitStack() as stack:
        browsers = [
            await stack.enter_async_context(browsing(apps[n % len(apps)].transport)) for n in range(count)
        ]
        pages = [await b.get("/sso/login") for b in browsers]
        return list(
            await asyncio.gather(
                *(
                    b.submit(page, "/sso/login", email=email, password=WRONG)
                    for b, page in zip(browsers, pages, strict=True)
                )
            )
        )


async def test_guesses_sent_at_once_cannot_slip_past_the_count(database_url: str, clock: Clock) -> None:
    """Each guess takes its place in the count before its password is checked, in one
    conditional write: parallel guesses, even through two web app instances sharing the
    database, are weighed one at a time. At 4 failures only one more is weighed before the
    1 s delay; at 99 only the 100th, and then the account waits for a reset."""
    async with (
        running_app(database_url, signin_ip_limit=1000) as one,
        running_app(database_url, signin_ip_limit=1000) as two,
    ):
        for before, after, delay in ((4, 5, timedelta(seconds=1)), (99, 100, timedelta(minutes=15))):
            person = await one.person(failed_sign_ins=before)
            for response in await guess_at_once([one, two], person.email, 8):
                assert_refused(response)
            row = await account_row(one.sessions, person)
            assert row.failed_sign_ins == after
            assert row.locked_until == clock.now + delay
            reasons = sorted(
                e.details.get("reason")
                for e in await audit_events(one.sessions, person)
                if e.action == "sign_in.failed"
            )
            assert reasons == ["locked"] * 7 + ["wrong_password"], reasons
            locked_out = [
                e for e in await audit_events(one.sessions, person) if e.action == "sign_in.locked_out"
            ]
            assert len(locked_out) == (1 if after == 100 else 0)


async def check_ip_limit(app: Stack) -> None:
    """Three refusals from one address, then 429 for any address, even the right password."""
    person = await app.person()
    async with browsing(app.transport) as browser:
        for n in range(3):
            assert_refused(await sign_in(browser, f"nobody{n}@example.com", PASSWORD))
        for email, password in (
            ("nobody9@example.com", WRONG),
            (person.email, PASSWORD),
            (person.email, WRONG),
        ):
            response = await sign_in(browser, email, password)
            assert response.status_code == 429, (email, response.text)
            assert "Too many sign-in attempts from your network. Try again in 15 minutes." in page_text(
                response
            )
            assert SESSION_COOKIE not in set_cookies(response)
    row = await account_row(app.sessions, person)
    assert (row.failed_sign_ins, row.last_sign_in_at) == (0, None)


async def test_per_ip_limit(database_url: str) -> None:
    async with running_app(database_url, signin_ip_limit=3) as limited:
        await check_ip_limit(limited)
        async with limited.sessions() as session:
            counters = (await session.scalars(select(RateCounter))).all()
        assert [(c.key, c.count) for c in counters] == [("signin-ip:127.0.0.1", 3)]


@contextlib.asynccontextmanager
async def reachable_redis() -> AsyncIterator[Redis]:
    """Database 15 of the Redis at 127.0.0.1:6379, emptied before and after."""
    redis = Redis.from_url(REDIS_URL)
    try:
        try:
            await redis.ping()
        except (RedisConnectionError, OSError):
            pytest.skip(
                "Redis is not reachable at 127.0.0.1:6379: start redis-server to test "
                "the shared counters in Redis"
            )
        await redis.flushdb()
        yield redis
        await redis.flushdb()
    finally:
        await redis.aclose()


async def test_per_ip_limit_in_redis(database_url: str) -> None:
    async with reachable_redis() as redis:
        async with running_app(database_url, signin_ip_limit=3, redis_url=REDIS_URL) as limited:
            await check_ip_limit(limited)
            async with limited.sessions() as session:
                assert (await session.scalars(select(RateCounter))).all() == []
        assert await redis.keys("*") == [b"sso:rate:signin-ip:127.0.0.1"]
        assert await redis.get("sso:rate:signin-ip:127.0.0.1") == b"3"
        assert 0 < await redis.ttl("sso:rate:signin-ip:127.0.0.1") <= 15 * 60


async def check_ip_limit_shared(one: Stack, two: Stack) -> None:
    """Two web app instances, one count: failures on either add up, and a burst of guesses
    sent together to both is weighed only up to the limit (3), the rest turned away."""
    person = await one.person()
    async with browsing(one.transport) as first, browsing(two.transport) as second:
        assert_refused(await sign_in(first, "nobody1@example.com"))
        assert_refused(await sign_in(second, "nobody2@example.com"))
        # A right password is not a failure: it neither counts nor is turned away.
        assert redirected_to(await sign_in(second, person.email), "/sso/account")
    answers = await guess_at_once([one, two], "nobody3@example.com", 8)
    assert sorted(r.status_code for r in answers) == [401] + [429] * 7, [r.status_code for r in answers]
    for instance in (one, two):
        async with browsing(instance.transport) as browser:
            assert (await sign_in(browser, person.email)).status_code == 429
    failed = [e for e in await audit_events(one.sessions, person) if e.action == "sign_in.failed"]
    assert failed == []


async def test_per_ip_limit_is_shared_by_instances_in_the_database(database_url: str) -> None:
    async with (
        running_app(database_url, signin_ip_limit=3) as one,
        running_app(database_url, signin_ip_limit=3) as two,
    ):
        await check_ip_limit_shared(one, two)
        async with one.sessions() as session:
            counters = (await session.scalars(select(RateCounter))).all()
        assert [(c.key, c.count) for c in counters] == [("signin-ip:127.0.0.1", 3)]


async def test_per_ip_limit_is_shared_by_instances_in_redis(database_url: str) -> None:
    async with reachable_redis() as redis:
        async with (
            running_app(database_url, signin_ip_limit=3, redis_url=REDIS_URL) as one,
            running_app(database_url, signin_ip_limit=3, redis_url=REDIS_URL) as two,
        ):
            await check_ip_limit_shared(one, two)
            async with one.sessions() as session:
                assert (await session.scalars(select(RateCounter))).all() == []
        assert await redis.get("sso:rate:signin-ip:127.0.0.1") == b"3"
        # Taking back never outlives the window: no key is left without an expiry.
        await redis.delete("sso:rate:signin-ip:127.0.0.1")
        await RedisCounter(REDIS_URL).undo("signin-ip:127.0.0.1", timedelta(minutes=15))
        assert await redis.keys("*") == []


# -- sessions ---------------------------------------------------------------------------


async def test_idle_timeout(app: Stack, browser: Browser) -> None:
    person = await app.person()
    cookie = await signed_in_cookie(app, browser, person.email)
    row = await row_for(app, cookie)
    idle = app.settings.session_idle_ttl

    # Seen recently enough: still signed in, and the visit counts as activity.
    await move_session(app.sessions, row.id_hash, idle - timedelta(minutes=1), "last_seen_at")
    assert (await signed_in_page(browser)).status_code == 200
    touched = await row_for(app, cookie)
    assert touched.last_seen_at is not None and touched.last_seen_at > utcnow() - idle / 2

    await move_session(app.sessions, row.id_hash, idle + timedelta(seconds=1), "last_seen_at", "created_at")
    ended = await signed_in_page(browser)
    assert redirected_to(ended, "/sso/login?notice=expired")
    assert (await row_for(app, cookie)).revoked_at is not None
    login = await browser.get("/sso/login", notice="expired")
    assert "Your session has ended. Please sign in again." in page_text(login)
    # Ended for good: coming back "fresh" does not revive it.
    await move_session(app.sessions, row.id_hash, -(idle + timedelta(seconds=1)), "last_seen_at")
    assert redirected_to(await signed_in_page(browser), "/sso/login?notice=expired")


async def test_absolute_timeout(app: Stack, browser: Browser) -> None:
    person = await app.person()
    cookie = await signed_in_cookie(app, browser, person.email)
    row = await row_for(app, cookie)
    assert row.expires_at - row.created_at == app.settings.session_max_ttl
    # Active all along (seen a moment ago), but created longer ago than the maximum.
    await move_session(app.sessions, row.id_hash, app.settings.session_max_ttl, "created_at", "expires_at")
    assert redirected_to(await signed_in_page(browser), "/sso/login?notice=expired")
    assert redirected_to(await replayed(app, cookie), "/sso/login?notice=expired")


async def test_sign_out(app: Stack, browser: Browser) -> None:
    person = await app.person()
    cookie = await signed_in_cookie(app, browser, person.email)
    page = await signed_in_page(browser)

    # No CSRF token: nothing happens.
    refused = await browser.post("/sso/logout", {})
    assert redirected_to(refused, "/sso/account")
    assert (await row_for(app, cookie)).revoked_at is None

    out = await browser.submit(page, "/sso/logout")
    assert redirected_to(out, "/sso/login?notice=signed_out")
    assert "max-age=0" in cookie_attributes(out, SESSION_COOKIE)
    assert browser.cookie(SESSION_COOKIE) is None
    assert (await row_for(app, cookie)).revoked_at is not None
    assert "You have signed out." in page_text(await browser.get("/sso/login", notice="signed_out"))
    assert redirected_to(await signed_in_page(browser), "/sso/login")
    # The old cookie, replayed: refused.
    assert redirected_to(await replayed(app, cookie), "/sso/login?notice=expired")
    [event] = [e for e in await audit_events(app.sessions, person) if e.action == "sign_out"]
    assert event.actor == f"staff:{person.staff_id}" and event.outcome == "success"


# -- hashes -----------------------------------------------------------------------------


async def test_hash_is_upgraded_at_sign_in(database_url: str) -> None:
    """Parameters raised since the hash was made (t=2 then, t=3 now): rehashed at sign-in."""
    old = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1, type=Type.ID).hash(PASSWORD)
    assert old.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    async with running_app(database_url, argon2_time_cost=3) as stronger:
        person = await stronger.person(password_hash=old)
        async with browsing(stronger.transport) as browser:
            assert redirected_to(await sign_in(browser, person.email), "/sso/account")
            stored = (await account_row(stronger.sessions, person)).password_hash
            assert stored is not None and stored != old
            assert stored.startswith("$argon2id$v=19$m=19456,t=3,p=1$")
            assert Hasher(3).verify(stored, PASSWORD)
            assert not Hasher(3).needs_rehash(stored)
            # Still the same password.
            assert redirected_to(await sign_in(browser, person.email), "/sso/account")
            assert (await account_row(stronger.sessions, person)).password_hash == stored
            assert_refused(await sign_in(browser, person.email, WRONG))


# -- admin ------------------------------------------------------------------------------


async def test_admin_revokes_sessions_and_every_event_is_audited(app: Stack) -> None:
    person = await app.person()
    async with browsing(app.transport) as first, browsing(app.transport) as second:
        assert_refused(await sign_in(first, person.email, WRONG))
        await signed_in_cookie(app, first, person.email)
        await signed_in_cookie(app, second, person.email)
        page = await signed_in_page(second)
        assert redirected_to(await second.submit(page, "/sso/logout"), "/sso/login?notice=signed_out")

        assert (await signed_in_page(first)).status_code == 200
        revoked = await app.http.post(f"/api/v1/staff/{person.staff_id}/sessions/revoke", headers=app.admin)
        assert revoked.status_code == 200, revoked.text
        assert revoked.json() == {"sessions_revoked": 1}
        assert redirected_to(await signed_in_page(first), "/sso/login?notice=expired")
        assert all(r.revoked_at is not None for r in await session_rows(app.sessions, person))

    unlocked = await app.http.post(f"/api/v1/staff/{person.staff_id}/unlock", headers=app.admin)
    assert unlocked.status_code == 200, unlocked.text
    for action in ("sessions/revoke", "unlock"):
        missing = await app.http.post(f"/api/v1/staff/{uuid.uuid4()}/{action}", headers=app.admin)
        assert missing.status_code == 404
        anonymous = await app.http.post(f"/api/v1/staff/{person.staff_id}/{action}")
        assert anonymous.status_code == 401

    events = await audit_events(app.sessions, person)
    by_action = {e.action: e for e in events}
    assert [e.action for e in events] == [
        "sign_in.failed",
        "sign_in.success",
        "sign_in.success",
        "sign_out",
        "sessions.revoke",
        "account.unlock",
    ]
    assert by_action["sign_in.failed"].details["reason"] == "wrong_password"
    assert by_action["sign_in.failed"].ip == "127.0.0.1"
    assert by_action["sessions.revoke"].actor == ADMIN_ACTOR
    assert by_action["sessions.revoke"].details["sessions_revoked"] == 1
    assert by_action["account.unlock"].actor == ADMIN_ACTOR
    assert by_action["account.unlock"].details["failed_sign_ins"] == 0
    for event in events:
        assert event.target == str(person.staff_id) and event.occurred_at is not None
        assert PASSWORD not in str(event.details) and WRONG not in str(event.details)


# -- CSRF -------------------------------------------------------------------------------


async def test_sign_in_needs_the_csrf_token(app: Stack) -> None:
    person = await app.person()
    async with browsing(app.transport) as browser, browsing(app.transport) as other:
        page = await browser.get("/sso/login")
        other_token = hidden_fields(await other.get("/sso/login"), "/sso/login")["csrf"]
        assert browser.cookie(CSRF_COOKIE)
        for csrf in (None, "", "forged", other_token):
            data = {"email": person.email, "password": PASSWORD}
            if csrf is not None:
                data["csrf"] = csrf
            response = await browser.post("/sso/login", data)
            assert response.status_code == 400, csrf
            assert "This form has expired. Please try again." in page_text(response)
            assert SESSION_COOKIE not in set_cookies(response)
        # A browser that never loaded the page (no CSRF cookie) is refused too.
        async with browsing(app.transport) as stranger:
            token = hidden_fields(page, "/sso/login")["csrf"]
            response = await stranger.post(
                "/sso/login", {"email": person.email, "password": WRONG, "csrf": token}
            )
            assert response.status_code == 400
    row = await account_row(app.sessions, person)
    assert (row.failed_sign_ins, row.last_sign_in_at) == (0, None)
    assert await audit_events(app.sessions, person) == []
    assert await session_rows(app.sessions, person) == []
    async with app.sessions() as session:
        assert (await session.scalars(select(RateCounter))).all() == []


async def test_authenticator_step_needs_the_csrf_token(app: Stack, browser: Browser) -> None:
    person = await app.person(mfa=True)
    assert redirected_to(await sign_in(browser, person.email), "/sso/login/mfa")
    page = await browser.get("/sso/login/mfa")
    code = person.totp_now()
    for csrf in (None, "forged"):
        data = {"code": code} if csrf is None else {"code": code, "csrf": csrf}
        response = await browser.post("/sso/login/mfa", data)
        assert response.status_code == 400
        assert "This form has expired. Please try again." in page_text(response)
        assert SESSION_COOKIE not in set_cookies(response)
    row = await account_row(app.sessions, person)
    # Neither counted nor used up: the same code still works from the real form.
    assert (row.failed_sign_ins, row.totp_last_step) == (0, None)
    assert redirected_to(await browser.submit(page, "/sso/login/mfa", code=code), "/sso/account")
