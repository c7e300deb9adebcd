"""The admin's staff pages (/admin/staff), driven like a browser against the app in-process, on
SQLite and PostgreSQL.

Admins are staff with `is_admin`, signed in through the same Single Sign-On with a second
factor. Most tests need no flow and run the web app alone (`running_app`); sending and
cancelling a Single Sign-On email, and the admin's own setup (MFA required), run against
real workflows on the time-skipping server (`running_stack`). `sso staff create` is run
in-process. docs/security.md §14, §19-21, §23 and §30 are what these prove for the admin pages.
"""

from __future__ import annotations

import gc
import html
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pyotp
import pytest
import pytest_asyncio
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import select
from sqlalchemy.orm import Session
from temporalio.testing import WorkflowEnvironment

import cli
from api.services.sessions import Sessions
from core import recovery
from core.db import SessionFactory
from core.models import (
    OPEN_SETUP_STATES,
    AuditEvent,
    BrowserSession,
    EntraLink,
    RecoveryCode,
    SetupState,
    SsoAccount,
    SsoSetup,
    Staff,
    utcnow,
)
from core.orgs import DEFAULT_ORG_ID
from core.settings import Settings, to_sync_url
from tests.support.accounts import (
    PASSWORD,
    REFUSED,
    SESSION_COOKIE,
    Browser,
    Person,
    browsing,
    emails_with_subject,
    hidden_fields,
    make_person,
    move_session,
    page_text,
    redirected_to,
    session_rows,
    sign_in,
    update_account,
)
from tests.support.admin_pages import flash_of, known_hash, set_admin, sign_in_with_totp, text_of
from tests.support.harness import Stack, running_app, running_stack
from tests.support.oidc import signed_in_admin
from tests.support.setup_pages import Browser as SetupBrowser
from tests.support.setup_pages import choose_password, confirm_page_once_sent, latest_code, manual_key, settle

pytestmark = pytest.mark.pages

ADMIN_FIRST, ADMIN_LAST = "Avery", "Quill"
NOT_ADMIN = "This page is for administrators"
NEEDS_MFA = "Sign in with MFA to manage staff"
EXPIRED_FORM = "That form had expired, so nothing was done. Please try again."
ADMIN_MFA_SENTENCE = "As an administrator you must set up MFA"
SKIP_BUTTON = "No thanks, I'll set it up later"

# A row: the bulk actions' selection box, then the person's name (the row's header).
ROW = re.compile(
    r'<tr>\s*<td><input type="checkbox" form="bulk"[^>]*>.*?</td>\s*'
    r'<th scope="row"><a href="/admin/staff/([0-9a-f-]{36})">(.*?)</tr>',
    re.S,
)
ACTION = re.compile(r'action="/admin/staff/([0-9a-f-]{36})/([a-z-]+)"')
MINUTES_LEFT = re.compile(r"Email sent, link valid (\d+) more min")
TAG = re.compile(r'<span class="tag(?: warn)?">([^<]+)</span>')
CELL = re.compile(r"<td[^>]*>(.*?)</td>", re.S)
TECHNICAL = re.compile(r'<details class="tech"><summary>Technical details</summary>(.*?)</details>', re.S)


# -- reading the pages ------------------------------------------------------------------


def rows(page: httpx.Response) -> dict[uuid.UUID, str]:
    """The staff table: each person's row, as HTML, by staff id, in page order."""
    return {uuid.UUID(sid): body for sid, body in ROW.findall(page.text)}


def row_text(page: httpx.Response, staff_id: uuid.UUID) -> str:
    found = rows(page)
    assert staff_id in found, (staff_id, page_text(page))
    return text_of(found[staff_id])


def actions_in(fragment: str, staff_id: uuid.UUID) -> set[str]:
    return {action for sid, action in ACTION.findall(fragment) if uuid.UUID(sid) == staff_id}


def row_actions(page: httpx.Response, staff_id: uuid.UUID) -> set[str]:
    return actions_in(rows(page)[staff_id], staff_id)


def names_on(page: httpx.Response) -> list[str]:
    return [text_of(body.split("</a>", 1)[0]) for body in rows(page).values()]


def _body_rows(page: httpx.Response, heading: str) -> list[str]:
    assert f"<h2>{heading}</h2>" in page.text, page.text
    section = page.text.split(f"<h2>{heading}</h2>", 1)[1].split("<h2>", 1)[0]
    return re.findall(r"<tr>(.*?)</tr>", section.split("<tbody>", 1)[-1], re.S)


def table_rows(page: httpx.Response, heading: str) -> list[list[str]]:
    """The cells of each body row of the table under `heading` on a person page, as a branch
    manager reads them (the technical details folded away)."""
    return [
        [text_of(TECHNICAL.sub("", cell)) for cell in CELL.findall(row)] for row in _body_rows(page, heading)
    ]


def technical(fragment: str) -> dict[str, str]:
    """What a "Technical details" disclosure in `fragment` lists, label to value."""
    found = TECHNICAL.findall(fragment)
    assert len(found) == 1, fragment
    return {
        text_of(dt): text_of(dd) for dt, dd in re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", found[0], re.S)
    }


def technical_rows(page: httpx.Response, heading: str) -> list[dict[str, str]]:
    return [technical(row) for row in _body_rows(page, heading)]


def lock_line(page: httpx.Response) -> str:
    """Whether sign-in is locked, and until when, as the person page says it."""
    match = re.search(r'<dt>Sign-in</dt><dd id="sign-in-lock">(.*?)</dd>', page.text, re.S)
    assert match, page.text
    return text_of(match.group(1))


def person_state(page: httpx.Response) -> tuple[str, set[str]]:
    """The Single Sign-On line of a person page: its text without the tags, and the tags."""
    match = re.search(r"<dt>Single Sign-On</dt><dd>(.*?)</dd>", page.text, re.S)
    assert match, page.text
    return text_of(TAG.sub("", match.group(1))), set(TAG.findall(match.group(1)))


def state_cell(page: httpx.Response, staff_id: uuid.UUID) -> tuple[str, set[str]]:
    """The Single Sign-On cell of a person's row: its text without the tags, and the tags."""
    cell = CELL.findall(rows(page)[staff_id])[1]
    return text_of(TAG.sub("", cell)), set(TAG.findall(cell))


# -- people and rows --------------------------------------------------------------------


def actor_of(person: Person) -> str:
    return f"staff:{person.staff_id} ({person.first_name} {person.last_name})"


async def add_staff(
    sessions: SessionFactory, first_name: str, last_name: str, email: str | None = None
) -> uuid.UUID:
    """A staff record with no Single Sign-On at all."""
    staff = Staff(
        org_id=DEFAULT_ORG_ID,
        id=uuid.uuid4(),
        first_name=first_name,
        last_name=last_name,
        external_email_1=email or f"{uuid.uuid4().hex[:12]}@staff.example",
    )
    async with sessions() as session:
        session.add(staff)
        await session.commit()
    return staff.id


async def add_setup(
    sessions: SessionFactory, staff_id: uuid.UUID, state: str, link_expires_at: datetime | None = None
) -> None:
    """The setup row a flow would have written, at `state`."""
    async with sessions() as session:
        session.add(
            SsoSetup(
                staff_id=staff_id,
                workflow_id=f"sso-setup-{staff_id}",
                state=state,
                state_since=utcnow(),
                link_expires_at=link_expires_at,
                email_delivery="sent",
                email_attempts=1,
                requested_by="admin-key:test-admin",
            )
        )
        await session.commit()


async def add_entra_link(sessions: SessionFactory, staff_id: uuid.UUID, email: str) -> EntraLink:
    link = EntraLink(
        staff_id=staff_id,
        tenant_id="11111111-2222-3333-4444-555555555555",
        object_id=uuid.uuid4().hex,
        display_name="Linked Person",
        email=email,
        linked_via="session",
    )
    async with sessions() as session:
        session.add(link)
        await session.commit()
    return link


async def audit_for(
    sessions: SessionFactory, staff_id: uuid.UUID, action: str | None = None
) -> list[AuditEvent]:
    query = select(AuditEvent).where(AuditEvent.target == str(staff_id))
    if action is not None:
        query = query.where(AuditEvent.action == action)
    async with sessions() as session:
        return list((await session.scalars(query.order_by(AuditEvent.occurred_at))).all())


async def setups_of(sessions: SessionFactory, staff_id: uuid.UUID) -> list[SsoSetup]:
    async with sessions() as session:
        return list(
            (
                await session.scalars(
                    select(SsoSetup).where(SsoSetup.staff_id == staff_id).order_by(SsoSetup.created_at)
                )
            ).all()
        )


async def account_of(sessions: SessionFactory, staff_id: uuid.UUID) -> SsoAccount:
    async with sessions() as session:
        account = await session.scalar(select(SsoAccount).where(SsoAccount.staff_id == staff_id))
    assert account is not None
    return account


# -- signing in -------------------------------------------------------------------------


@dataclass
class Admin:
    person: Person
    browser: Browser

    @property
    def actor(self) -> str:
        return actor_of(self.person)

    async def page(self, path: str = "/admin/staff", **params: str) -> httpx.Response:
        response = await self.browser.get(path, **params)
        assert response.status_code == 200, response.text
        return response

    async def act(
        self, page: httpx.Response, staff_id: uuid.UUID, action: str, **fields: str
    ) -> httpx.Response:
        """Press an entry of the Actions menu of `page`: a 303 back to where it came from."""
        response = await self.browser.submit(page, f"/admin/staff/{staff_id}/{action}", **fields)
        assert response.status_code == 303, response.text
        return response

    async def post(self, staff_id: uuid.UUID | str, action: str, **fields: str) -> httpx.Response:
        return await self.browser.post(f"/admin/staff/{staff_id}/{action}", fields)

    async def follow(self, response: httpx.Response) -> httpx.Response:
        assert response.status_code == 303, response.text
        return await self.page(response.headers["location"])

    async def csrf(self) -> str:
        """This browser's CSRF token, as every admin form carries it."""
        return hidden_fields(await self.page(), f"/admin/staff/{self.person.staff_id}/revoke-sessions")[
            "csrf"
        ]


async def make_admin(sessions: SessionFactory, settings: Settings, **names: str) -> Person:
    person = await make_person(
        sessions,
        settings,
        mfa=True,
        password_hash=known_hash(settings),
        first_name=names.get("first_name", ADMIN_FIRST),
        last_name=names.get("last_name", ADMIN_LAST),
    )
    await set_admin(sessions, person.staff_id)
    return person


@asynccontextmanager
async def admin_signed_in(stack: Stack) -> AsyncIterator[Admin]:
    """The shared admin sign-in, with this module's admin (a known hash: quicker) and its
    browser closed after."""
    names = {"first_name": ADMIN_FIRST, "last_name": ADMIN_LAST}
    person, browser = await signed_in_admin(stack, password_hash=known_hash(stack.settings), **names)
    try:
        yield Admin(person, browser)
    finally:
        await browser.aclose()


async def foreign_csrf(transport: httpx.AsyncBaseTransport) -> str:
    """A well-formed CSRF token, but another browser's."""
    async with browsing(transport) as stranger:
        return hidden_fields(await stranger.get("/sso/login"), "/sso/login")["csrf"]


async def assert_csrf_refused(
    transport: httpx.AsyncBaseTransport, admin: Admin, page: httpx.Response, staff_id: uuid.UUID, action: str
) -> None:
    """The form of `page` sent without its token, with another browser's, and with a forged
    one: back to where it came from, with an error shown once. The caller checks that nothing
    changed."""
    fields = hidden_fields(page, f"/admin/staff/{staff_id}/{action}")
    forged = fields["csrf"][:-1] + ("A" if fields["csrf"][-1] != "A" else "B")
    for csrf in (None, await foreign_csrf(transport), forged):
        data = {"back": fields["back"], **({"csrf": csrf} if csrf is not None else {})}
        response = await admin.post(staff_id, action, **data)
        assert redirected_to(response, fields["back"]), response.text
        assert flash_of(await admin.follow(response)) == ("error", EXPIRED_FORM)
        assert flash_of(await admin.page(fields["back"])) is None


# -- fixtures ---------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="session")
async def app(database_url: str) -> AsyncIterator[Stack]:
    async with running_app(database_url, signin_ip_limit=1000) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="session")
async def admin(app: Stack) -> AsyncIterator[Admin]:
    async with admin_signed_in(app) as signed_in:
        yield signed_in


@asynccontextmanager
async def admin_stack(
    env: WorkflowEnvironment, database_url: str, **overrides: Any
) -> AsyncIterator[tuple[Stack, Admin]]:
    """App and worker on the time-skipping server, with an admin signed in with TOTP."""
    async with running_stack(env, database_url, **overrides) as stack:
        async with admin_signed_in(stack) as signed_in:
            yield stack, signed_in
        await settle(stack)
    gc.collect()  # see the stack fixture in tests/conftest.py: dispose of the worker's engine on this thread


@pytest_asyncio.fixture(loop_scope="session")
async def stack_admin(
    temporal_env: WorkflowEnvironment, database_url: str
) -> AsyncIterator[tuple[Stack, Admin]]:
    async with admin_stack(temporal_env, database_url) as running:
        yield running


# -- who may see the pages --------------------------------------------------------------


async def test_without_a_session_sign_in_returns_to_the_admin_page(app: Stack) -> None:
    person = await make_admin(app.sessions, app.settings)
    async with browsing(app.transport) as browser:
        for path in ("/admin/staff", f"/admin/staff/{person.staff_id}"):
            assert redirected_to(await browser.get(path), f"/sso/login?return_to={path}")
        posted = await browser.post(
            f"/admin/staff/{person.staff_id}/revoke-sessions", {"back": "/admin/staff"}
        )
        assert posted.status_code == 303
        assert posted.headers["location"].startswith("/sso/login?return_to=")

        login = await browser.get("/sso/login", return_to="/admin/staff")
        assert hidden_fields(login, "/sso/login")["return_to"] == "/admin/staff"
        assert redirected_to(await sign_in_with_totp(browser, person, "/admin/staff"), "/admin/staff")
        page = await browser.get("/admin/staff")
        assert page.status_code == 200, page.text
        assert f"{ADMIN_FIRST} {ADMIN_LAST} \u203a Settings \u203a Staff" in page_text(page)
        assert person.staff_id in rows(page)
    assert await audit_for(app.sessions, person.staff_id, "sessions.revoke") == []


async def test_staff_without_the_admin_role_are_refused(app: Stack, admin: Admin) -> None:
    plain = await app.person(
        mfa=True, first_name="Nadia", last_name="Plain", password_hash=known_hash(app.settings)
    )
    target = await app.person(first_name="Otto", last_name="Target", password_hash=known_hash(app.settings))
    async with browsing(app.transport) as browser, browsing(app.transport) as theirs:
        assert redirected_to(await sign_in(theirs, target.email), "/sso/account")
        assert redirected_to(await sign_in_with_totp(browser, plain), "/sso/account")
        csrf = hidden_fields(await browser.get("/sso/account"), "/sso/logout")["csrf"]
        for path in ("/admin/staff", f"/admin/staff/{target.staff_id}"):
            refused = await browser.get(path)
            assert refused.status_code == 403
            assert NOT_ADMIN in page_text(refused)
            assert "doesn't have the administrator role" in page_text(refused)
            assert target.email not in refused.text
        posted = await browser.post(
            f"/admin/staff/{target.staff_id}/revoke-sessions", {"csrf": csrf, "back": "/admin/staff"}
        )
        assert posted.status_code == 403 and NOT_ADMIN in page_text(posted)
        assert (await theirs.get("/sso/account")).status_code == 200
    assert await audit_for(app.sessions, target.staff_id, "sessions.revoke") == []

    # The role is checked on every request: taken away, the next page is refused.
    await admin.page()
    await set_admin(app.sessions, admin.person.staff_id, False)
    refused = await admin.browser.get("/admin/staff")
    assert refused.status_code == 403 and NOT_ADMIN in page_text(refused)


async def test_admins_must_have_signed_in_with_a_second_factor(app: Stack) -> None:
    password_only = await app.person(
        first_name="Petra", last_name="Password", password_hash=known_hash(app.settings)
    )
    await set_admin(app.sessions, password_only.staff_id)
    target = await app.person(first_name="Otto", last_name="Target", password_hash=known_hash(app.settings))
    async with browsing(app.transport) as browser, browsing(app.transport) as theirs:
        assert redirected_to(await sign_in(theirs, target.email), "/sso/account")
        assert redirected_to(await sign_in(browser, password_only.email), "/sso/account")
        [row] = await session_rows(app.sessions, password_only, "signin")
        assert row.data["method"] == "password"
        csrf = hidden_fields(await browser.get("/sso/account"), "/sso/logout")["csrf"]
        for path in ("/admin/staff", f"/admin/staff/{target.staff_id}"):
            refused = await browser.get(path)
            assert refused.status_code == 403
            assert NEEDS_MFA in page_text(refused)
            assert "authenticator app or with Microsoft-Entra" in page_text(refused)
            assert target.email not in refused.text
        posted = await browser.post(
            f"/admin/staff/{target.staff_id}/revoke-sessions", {"csrf": csrf, "back": "/admin/staff"}
        )
        assert posted.status_code == 403 and NEEDS_MFA in page_text(posted)
        assert (await theirs.get("/sso/account")).status_code == 200
    assert await audit_for(app.sessions, target.staff_id, "sessions.revoke") == []

    # Password typed, authenticator code not yet: not signed in at all.
    with_mfa = await make_admin(app.sessions, app.settings, first_name="Mia")
    async with browsing(app.transport) as halfway:
        assert redirected_to(await sign_in(halfway, with_mfa.email), "/sso/login/mfa")
        assert redirected_to(await halfway.get("/admin/staff"), "/sso/login?return_to=/admin/staff")

    # A session made by a Microsoft-Entra sign-in counts as a second factor.
    async with app.sessions() as session:
        session_id = await Sessions(app.settings, session).create(
            "signin", password_only.staff_id, app.settings.session_max_ttl, data={"method": "entra"}
        )
        await session.commit()
    async with browsing(app.transport) as entra:
        entra.set_cookie(SESSION_COOKIE, session_id)
        page = await entra.get("/admin/staff")
        assert page.status_code == 200, page.text
        assert target.staff_id in rows(page)


async def test_idle_and_revoked_sessions_are_refused(app: Stack, admin: Admin) -> None:
    target = await add_staff(app.sessions, "Bea", "Bystander")
    page = await admin.page()
    [row] = await session_rows(app.sessions, admin.person, "signin")
    idle = app.settings.session_idle_ttl
    await move_session(app.sessions, row.id_hash, idle + timedelta(seconds=1), "last_seen_at", "created_at")
    assert redirected_to(await admin.browser.get("/admin/staff"), "/sso/login?return_to=/admin/staff")
    # A form from before the session ended does nothing either.
    posted = await admin.browser.submit(page, f"/admin/staff/{target}/revoke-sessions")
    assert posted.status_code == 303
    assert posted.headers["location"].startswith("/sso/login?return_to=")
    assert await audit_for(app.sessions, target, "sessions.revoke") == []
    async with app.sessions() as session:
        ended = await session.get(BrowserSession, row.id_hash)
    assert ended is not None and ended.revoked_at is not None

    # Signed in again (the code just used may be used again only in a test), then signed out
    # everywhere through the admin API: refused at once.
    await update_account(app.sessions, admin.person, totp_last_step=None)
    assert redirected_to(await sign_in_with_totp(admin.browser, admin.person), "/sso/account")
    await admin.page()
    revoked = await app.http.post(f"/api/v1/staff/{admin.person.staff_id}/sessions/revoke", headers=app.admin)
    assert revoked.status_code == 200 and revoked.json() == {"sessions_revoked": 1}
    for path in ("/admin/staff", f"/admin/staff/{target}"):
        assert redirected_to(await admin.browser.get(path), f"/sso/login?return_to={path}")


async def test_an_action_after_the_session_ended_comes_back_to_a_page(app: Stack, admin: Admin) -> None:
    target = await add_staff(app.sessions, "Bea", "Bystander")
    page = await admin.page(f"/admin/staff/{target}")
    [row] = await session_rows(app.sessions, admin.person, "signin")
    await move_session(
        app.sessions,
        row.id_hash,
        app.settings.session_idle_ttl + timedelta(seconds=1),
        "last_seen_at",
        "created_at",
    )
    posted = await admin.browser.submit(page, f"/admin/staff/{target}/revoke-sessions")
    login = await admin.browser.get(posted.headers["location"])
    return_to = hidden_fields(login, "/sso/login")["return_to"]
    await update_account(app.sessions, admin.person, totp_last_step=None)
    signed_in = await sign_in_with_totp(admin.browser, admin.person, return_to or None)
    assert signed_in.status_code == 303
    landing = await admin.browser.get(signed_in.headers["location"])
    assert landing.status_code == 200, (signed_in.headers["location"], landing.text)


# -- the list ---------------------------------------------------------------------------


async def test_search_by_name_and_email_ignores_case(app: Stack, admin: Admin) -> None:
    await add_staff(app.sessions, "Marguerite", "Fenwick", "mfen@alpha.example")
    await add_staff(app.sessions, "Tobias", "Marlow", "tobias@bravo.example")
    await add_staff(app.sessions, "Ines", "Carver", "ines.marchetti@charlie.example")
    await add_staff(app.sessions, "Zed <script>alert(1)</script>", "Escaped", "zed@delta.example")
    cases = {
        "MARGUERITE": ["Marguerite Fenwick"],
        "fenWICK": ["Marguerite Fenwick"],
        "BRAVO.Example": ["Tobias Marlow"],
        "mar": ["Ines Carver", "Marguerite Fenwick", "Tobias Marlow"],  # by last name
        "  marlow  ": ["Tobias Marlow"],
        "<script>": ["Zed <script>alert(1)</script> Escaped"],
        "nobody-here": [],
    }
    for q, names in cases.items():
        page = await admin.page(q=q)
        assert names_on(page) == names, q
        shown = q.strip()
        count = f"{len(names)} staff member{'' if len(names) == 1 else 's'}"
        assert f"{count} matching “{shown}”." in page_text(page), page_text(page)
        assert f'value="{html.escape(shown)}"' in page.text  # the search box keeps the query
        assert ("No staff members found." in page_text(page)) is (not names)
        assert "<script>alert(1)" not in page.text
    everyone = await admin.page()
    assert "5 staff members." in page_text(everyone)
    assert len(rows(everyone)) == 5


async def test_pages_of_25(app: Stack, admin: Admin) -> None:
    async with app.sessions() as session:
        session.add_all(
            Staff(
                org_id=DEFAULT_ORG_ID,
                first_name="Pat",
                last_name=f"Pagetest{i:02d}",
                external_email_1=f"pat.{i}@paging.example",
            )
            for i in range(27)
        )
        await session.commit()
    first = await admin.page(q="PAGETEST")
    assert names_on(first) == [f"Pat Pagetest{i:02d}" for i in range(25)]
    text = page_text(first)
    assert "27 staff members matching “PAGETEST”." in text and "Page 1 of 2" in text
    assert '<a href="/admin/staff?q=PAGETEST&amp;page=2">Next</a>' in first.text
    assert "Previous" not in text

    second = await admin.page(q="PAGETEST", page="2")
    assert names_on(second) == ["Pat Pagetest25", "Pat Pagetest26"]
    assert "Page 2 of 2" in page_text(second) and "Next" not in page_text(second)
    assert '<a href="/admin/staff?q=PAGETEST&amp;page=1">Previous</a>' in second.text
    # An action from page 2 comes back to page 2.
    assert {
        fields["back"]
        for fields in (hidden_fields(second, f"/admin/staff/{sid}/revoke-sessions") for sid in rows(second))
    } == {"/admin/staff?q=PAGETEST&page=2"}

    beyond = await admin.page(q="PAGETEST", page="3")
    assert rows(beyond) == {} and "No staff members found." in page_text(beyond)
    everyone = await admin.page(page="2")  # the admin too: 28 in all
    assert "28 staff members." in page_text(everyone) and "Page 2 of 2" in page_text(everyone)
    assert names_on(everyone) == ["Pat Pagetest25", "Pat Pagetest26", f"{ADMIN_FIRST} {ADMIN_LAST}"]


@dataclass
class Expected:
    state: str  # the state text on the page, before the tags
    tags: set[str]
    actions: set[str]
    api: dict[str, Any]


async def cast(app: Stack, admin: Admin) -> dict[uuid.UUID, Expected]:
    """One person in each state the list tells apart, and what the page and API should say."""
    now = utcnow()
    link_expires = now + timedelta(minutes=10)
    quick = {"password_hash": known_hash(app.settings)}
    base = {
        "sso_state": "active",
        "mfa_enabled": False,
        "entra_linked": False,
        "locked": False,
        "link_expires_at": None,
        "is_admin": False,
        "has_password": True,
    }
    menu = {"revoke-sessions"}
    setup_menu = {"send-email", "cancel-setup", "revoke-sessions"}
    people: dict[uuid.UUID, Expected] = {}

    sid = await add_staff(app.sessions, "Nora", "Nobody")
    people[sid] = Expected(
        "Not set up",
        set(),
        {"send-email", "revoke-sessions"},
        {**base, "sso_state": "not_started", "has_password": False},
    )
    sid = await add_staff(app.sessions, "Ezra", "Emailed")
    await add_setup(app.sessions, sid, SetupState.email_sent.value, link_expires)
    people[sid] = Expected(
        "Email sent, link valid 10 more min",
        set(),
        setup_menu,
        {**base, "sso_state": "email_sent", "link_expires_at": link_expires, "has_password": False},
    )
    coded = await app.person(status="pending", first_name="Cora", last_name="Coded", **quick)
    await add_setup(app.sessions, coded.staff_id, SetupState.code_sent.value, now - timedelta(minutes=5))
    people[coded.staff_id] = Expected(
        "At step: confirm the emailed code",
        set(),
        setup_menu,
        {**base, "sso_state": "code_sent", "link_expires_at": now - timedelta(minutes=5)},
    )
    on = await app.person(mfa=True, first_name="Mona", last_name="Mfaon", **quick)
    people[on.staff_id] = Expected("Active", {"MFA on"}, menu, {**base, "mfa_enabled": True})
    off = await app.person(first_name="Milo", last_name="Mfaoff", **quick)
    people[off.staff_id] = Expected("Active", {"MFA off"}, menu, base)
    sid = await add_staff(app.sessions, "Eli", "Entra")
    await add_entra_link(app.sessions, sid, "eli@contoso.example")
    # Linked through Entra only: no password, so MFA on or off says nothing about them.
    people[sid] = Expected(
        "Active",
        {"Entra linked"},
        menu | {"unlink-entra"},
        {**base, "entra_linked": True, "has_password": False},
    )
    failed = await app.person(first_name="Lena", last_name="Lockedout", **quick)
    await update_account(app.sessions, failed, failed_sign_ins=100)
    people[failed.staff_id] = Expected(
        "Active", {"MFA off", "Locked"}, menu | {"unlock"}, {**base, "locked": True}
    )
    waiting = await app.person(first_name="Lars", last_name="Lockeduntil", **quick)
    await update_account(app.sessions, waiting, failed_sign_ins=7, locked_until=now + timedelta(minutes=10))
    people[waiting.staff_id] = Expected(
        "Active", {"MFA off", "Locked"}, menu | {"unlock"}, {**base, "locked": True}
    )
    lapsed = await app.person(first_name="Lou", last_name="Lapsed", **quick)
    await update_account(app.sessions, lapsed, failed_sign_ins=7, locked_until=now - timedelta(minutes=1))
    people[lapsed.staff_id] = Expected("Active", {"MFA off"}, menu, base)
    people[admin.person.staff_id] = Expected(
        "Active", {"MFA on", "Admin"}, menu, {**base, "mfa_enabled": True, "is_admin": True}
    )
    return people


async def test_state_and_actions_at_a_glance(app: Stack, admin: Admin) -> None:
    people = await cast(app, admin)
    page = await admin.page()
    assert set(rows(page)) == set(people)
    for sid, expected in people.items():
        state, tags = state_cell(page, sid)
        if expected.state.startswith("Email sent"):
            # Minutes left, rounded up: ten, unless a minute passed while the test ran.
            minutes = MINUTES_LEFT.fullmatch(state)
            assert minutes and int(minutes.group(1)) in (9, 10), state
        else:
            assert state == expected.state, (row_text(page, sid), expected)
        assert tags == expected.tags, (row_text(page, sid), expected)
        assert row_actions(page, sid) == expected.actions, (row_text(page, sid), expected)
        # The person page shows the same, with the same menu.
        own = await admin.page(f"/admin/staff/{sid}")
        assert actions_in(own.text, sid) == expected.actions
        assert person_state(own)[1] == expected.tags
    labels = re.findall(r'<button class="menu-item" type="submit">([^<]+)</button>', page.text)
    assert set(labels) == {
        "Send Single Sign-On Email",
        "Cancel setup",
        "Sign out everywhere",
        "Unlock sign-in",
        "Unlink Microsoft-Entra",
    }


async def test_admin_api_and_pages_say_the_same(app: Stack, admin: Admin) -> None:
    people = await cast(app, admin)
    listed = await app.http.get("/api/v1/staff", params={"limit": 200}, headers=app.admin)
    assert listed.status_code == 200, listed.text
    items = {uuid.UUID(item["id"]): item for item in listed.json()["items"]}
    assert set(items) == set(people) and listed.json()["total"] == len(people)
    page = await admin.page()
    for sid, expected in people.items():
        item = items[sid]
        want = expected.api
        got = {key: item[key] for key in want}
        if got["link_expires_at"] is not None:
            got["link_expires_at"] = datetime.fromisoformat(got["link_expires_at"])
        assert got == want, (row_text(page, sid), got, want)
        # ...and the page agrees with the API item, field by field.
        _, tags = state_cell(page, sid)
        assert ("Locked" in tags) is item["locked"]
        assert ("Entra linked" in tags) is item["entra_linked"]
        assert ("Admin" in tags) is item["is_admin"]
        if item["sso_state"] == "active" and item["has_password"]:
            assert tags & {"MFA on", "MFA off"} == {"MFA on" if item["mfa_enabled"] else "MFA off"}
        else:
            assert not tags & {"MFA on", "MFA off"}
        assert ("cancel-setup" in row_actions(page, sid)) is (
            item["sso_state"] in {s.value for s in OPEN_SETUP_STATES}
        )
    # The same search, through both.
    found = await app.http.get("/api/v1/staff", params={"q": "LOCKED"}, headers=app.admin)
    assert [i["last_name"] for i in found.json()["items"]] == ["Lockedout", "Lockeduntil"]
    assert names_on(await admin.page(q="LOCKED")) == ["Lena Lockedout", "Lars Lockeduntil"]


# -- the actions ------------------------------------------------------------------------


async def test_sign_out_everywhere(app: Stack, admin: Admin) -> None:
    target = await app.person(first_name="Sam", last_name="Revoked", password_hash=known_hash(app.settings))
    async with browsing(app.transport) as laptop, browsing(app.transport) as phone:
        for browser in (laptop, phone):
            assert redirected_to(await sign_in(browser, target.email), "/sso/account")
        page = await admin.page(q="revoked")
        assert "revoke-sessions" in row_actions(page, target.staff_id)

        await assert_csrf_refused(app.transport, admin, page, target.staff_id, "revoke-sessions")
        assert (await laptop.get("/sso/account")).status_code == 200
        assert await audit_for(app.sessions, target.staff_id, "sessions.revoke") == []

        done = await admin.act(page, target.staff_id, "revoke-sessions")
        assert done.headers["location"] == "/admin/staff?q=revoked&page=1"
        shown = await admin.follow(done)
        assert flash_of(shown) == ("success", "Sam Revoked was signed out everywhere (2 sessions).")
        assert flash_of(await admin.page(done.headers["location"])) is None  # shown once
        for browser in (laptop, phone):
            assert redirected_to(await browser.get("/sso/account"), "/sso/login?notice=expired")
    [event] = await audit_for(app.sessions, target.staff_id, "sessions.revoke")
    assert (event.actor, event.outcome, event.target) == (admin.actor, "success", str(target.staff_id))
    assert event.details["sessions_revoked"] == 2 and event.ip
    await admin.page()  # the admin's own session is not theirs to lose


async def test_unlock_sign_in(app: Stack, admin: Admin) -> None:
    target = await app.person(first_name="Uma", last_name="Locked", password_hash=known_hash(app.settings))
    await update_account(
        app.sessions, target, failed_sign_ins=100, locked_until=utcnow() + timedelta(minutes=15)
    )
    async with browsing(app.transport) as theirs:
        refused = await sign_in(theirs, target.email)
        assert refused.status_code == 401 and REFUSED in page_text(refused)
        page = await admin.page(f"/admin/staff/{target.staff_id}")
        assert person_state(page) == ("Active", {"MFA off", "Locked"})
        assert (
            lock_line(page)
            == "Locked until they reset their password or you unlock it (100 failed sign-ins in a row)"
        )
        assert "unlock" in actions_in(page.text, target.staff_id)

        await assert_csrf_refused(app.transport, admin, page, target.staff_id, "unlock")
        assert (await account_of(app.sessions, target.staff_id)).failed_sign_ins >= 100

        done = await admin.act(page, target.staff_id, "unlock")
        assert done.headers["location"] == f"/admin/staff/{target.staff_id}"
        shown = await admin.follow(done)
        assert flash_of(shown) == ("success", "Sign-in for Uma Locked is unlocked.")
        assert "unlock" not in actions_in(shown.text, target.staff_id)
        assert person_state(shown) == ("Active", {"MFA off"})
        assert lock_line(shown) == "Not locked"
        assert flash_of(await admin.page(f"/admin/staff/{target.staff_id}")) is None
        account = await account_of(app.sessions, target.staff_id)
        assert (account.failed_sign_ins, account.locked_until) == (0, None)
        assert redirected_to(await sign_in(theirs, target.email), "/sso/account")
    [event] = await audit_for(app.sessions, target.staff_id, "account.unlock")
    assert (event.actor, event.outcome) == (admin.actor, "success")
    assert event.details["failed_sign_ins"] >= 100 and event.details["locked_until"]


async def test_unlink_microsoft_entra(app: Stack, admin: Admin) -> None:
    target = await app.person(first_name="Ugo", last_name="Linked", password_hash=known_hash(app.settings))
    link = await add_entra_link(app.sessions, target.staff_id, "ugo@contoso.example")
    async with browsing(app.transport) as theirs:
        assert redirected_to(await sign_in(theirs, target.email), "/sso/account")
        page = await admin.page(f"/admin/staff/{target.staff_id}")
        assert "Microsoft-Entra ugo@contoso.example, linked " in page_text(page)
        facts = page.text.split("<h2>", 1)[0]
        assert technical(facts)["Microsoft tenant"] == link.tenant_id
        assert "unlink-entra" in actions_in(page.text, target.staff_id)
        assert person_state(page) == ("Active", {"MFA off", "Entra linked"})

        await assert_csrf_refused(app.transport, admin, page, target.staff_id, "unlink-entra")
        async with app.sessions() as session:
            assert (
                await session.scalar(select(EntraLink.id).where(EntraLink.staff_id == target.staff_id))
                == link.id
            )
        assert (await theirs.get("/sso/account")).status_code == 200

        done = await admin.act(page, target.staff_id, "unlink-entra")
        shown = await admin.follow(done)
        assert flash_of(shown) == (
            "success",
            "The Microsoft account ugo@contoso.example was "
            "unlinked from Ugo Linked, and their sessions were ended.",
        )
        assert "unlink-entra" not in actions_in(shown.text, target.staff_id)
        assert person_state(shown) == ("Active", {"MFA off"})
        assert flash_of(await admin.page(done.headers["location"])) is None
        async with app.sessions() as session:
            assert (
                await session.scalar(select(EntraLink.id).where(EntraLink.staff_id == target.staff_id))
                is None
            )
        assert redirected_to(await theirs.get("/sso/account"), "/sso/login?notice=expired")
    [event] = await audit_for(app.sessions, target.staff_id, "entra.unlinked")
    assert (event.actor, event.outcome) == (admin.actor, "success")
    assert event.details == {"tenant_id": link.tenant_id, "object_id": link.object_id, "sessions_revoked": 1}


async def test_problems_come_back_as_a_message(app: Stack, admin: Admin) -> None:
    nobody = await add_staff(app.sessions, "Nell", "Noaccount")
    active = await app.person(first_name="Ava", last_name="Active", password_hash=known_hash(app.settings))
    csrf = await admin.csrf()
    back = f"/admin/staff/{nobody}"
    for staff_id, action, message in (
        (
            nobody,
            "unlock",
            "Unlock sign-in for Nell Noaccount: This person has no Single Sign-On account yet",
        ),
        (
            nobody,
            "unlink-entra",
            "Unlink Microsoft-Entra for Nell Noaccount: This person has no linked Microsoft account",
        ),
        (
            active.staff_id,
            "send-email",
            "Send Single Sign-On Email for Ava Active: Single Sign-On is already active for this person",
        ),
        (uuid.uuid4(), "revoke-sessions", "That person no longer exists."),
    ):
        response = await admin.post(staff_id, action, csrf=csrf, back=back)
        assert redirected_to(response, back), (action, response.text)
        assert flash_of(await admin.follow(response)) == ("error", message)
    assert [e.action for e in await audit_for(app.sessions, nobody)] == []
    assert await setups_of(app.sessions, active.staff_id) == []

    unknown = await admin.post(nobody, "delete-everything", csrf=csrf, back=back)
    assert unknown.status_code == 404
    assert "No such action" in page_text(unknown)
    assert "That action doesn't exist." in page_text(unknown)
    assert flash_of(await admin.page(back)) is None

    missing = await admin.browser.get(f"/admin/staff/{uuid.uuid4()}")
    assert missing.status_code == 404
    assert "No such person" in page_text(missing)
    assert "There is no staff member with that id." in page_text(missing)


async def test_back_never_leaves_the_staff_pages(app: Stack, admin: Admin) -> None:
    target = await add_staff(app.sessions, "Bea", "Back")
    csrf = await admin.csrf()
    for back, expected in (
        ("https://evil.example/admin/staff", "/admin/staff"),
        ("//evil.example", "/admin/staff"),
        ("//evil.example/admin/staff", "/admin/staff"),
        ("/admin/staff//evil.example", "/admin/staff"),
        ("/sso/account", "/admin/staff"),
        ("javascript:alert(1)", "/admin/staff"),
        ("", "/admin/staff"),
        ("/admin/staff?q=back&page=1", "/admin/staff?q=back&page=1"),
        (f"/admin/staff/{target}", f"/admin/staff/{target}"),
    ):
        response = await admin.post(target, "revoke-sessions", csrf=csrf, back=back)
        assert redirected_to(response, expected), (back, response.headers.get("location"))
        assert flash_of(await admin.follow(response)) == (
            "success",
            "Bea Back was signed out everywhere (0 sessions).",
        )
    # A header cannot be smuggled in through it either.
    response = await admin.post(
        target, "revoke-sessions", csrf=csrf, back="/admin/staff\r\nSet-Cookie: planted=1"
    )
    assert response.status_code == 303
    assert response.headers["location"].startswith("/admin/staff")
    assert "\n" not in response.headers["location"] and "planted" not in response.cookies
    assert flash_of(await admin.page()) == ("success", "Bea Back was signed out everywhere (0 sessions).")


# -- actions that drive a flow ----------------------------------------------------------


async def test_send_single_sign_on_email(stack_admin: tuple[Stack, Admin]) -> None:
    stack, admin = stack_admin
    transport = stack.http._transport
    staff = await stack.create_staff(first_name="Jo", last_name="Sender")
    sid, address = uuid.UUID(staff["id"]), staff["external_email_1"]
    page = await admin.page(q="sender")
    assert state_cell(page, sid) == ("Not set up", set())
    assert "send-email" in row_actions(page, sid)

    await assert_csrf_refused(transport, admin, page, sid, "send-email")
    assert await setups_of(stack.sessions, sid) == []
    assert await stack.links_sent_to(address) == []

    done = await admin.act(page, sid, "send-email")
    shown = await admin.follow(done)
    assert flash_of(shown) == (
        "success",
        f"Single Sign-On email sent to {address}. The link is valid for 15 minutes.",
    )
    assert flash_of(await admin.page(done.headers["location"])) is None
    status = await stack.wait_for(staff["id"], lambda s: s["state"] == "email_sent")
    assert status["requested_by"] == admin.actor
    [token] = await stack.links_sent_to(address)
    assert (await stack.http.get(f"/sso/setup/{token}")).status_code == 200
    [setup] = await setups_of(stack.sessions, sid)
    assert (
        setup.requested_by == admin.actor == (f"staff:{admin.person.staff_id} ({ADMIN_FIRST} {ADMIN_LAST})")
    )
    [event] = await audit_for(stack.sessions, sid, "sso_email.requested")
    assert (event.actor, event.outcome) == (admin.actor, "accepted")
    assert event.details["workflow_id"] == f"sso-setup-{sid}"

    after = await admin.page(q="sender")
    assert MINUTES_LEFT.fullmatch(state_cell(after, sid)[0])
    assert row_actions(after, sid) == {"send-email", "cancel-setup", "revoke-sessions"}


async def test_cancel_setup(stack_admin: tuple[Stack, Admin]) -> None:
    stack, admin = stack_admin
    staff = await stack.create_staff(first_name="Cy", last_name="Cancelled")
    sid, address = uuid.UUID(staff["id"]), staff["external_email_1"]
    sent = await stack.http.post(f"/api/v1/staff/{sid}/sso-email", headers=stack.admin)
    assert sent.status_code == 202, sent.text
    await stack.wait_for(staff["id"], lambda s: s["state"] == "email_sent")
    [token] = await stack.links_sent_to(address)
    page = await admin.page(f"/admin/staff/{sid}")
    assert "cancel-setup" in actions_in(page.text, sid)

    await assert_csrf_refused(stack.http._transport, admin, page, sid, "cancel-setup")
    assert (await stack.status(staff["id"]))["state"] == "email_sent"
    assert (await stack.http.get(f"/sso/setup/{token}")).status_code == 200

    done = await admin.act(page, sid, "cancel-setup")
    assert done.headers["location"] == f"/admin/staff/{sid}"
    shown = await admin.follow(done)
    assert flash_of(shown) == (
        "success",
        "The Single Sign-On setup for Cy Cancelled was cancelled; its link no longer works.",
    )
    assert "cancel-setup" not in actions_in(shown.text, sid)
    assert person_state(shown) == ("Cancelled", set())
    assert flash_of(await admin.page(f"/admin/staff/{sid}")) is None
    assert (await stack.status(staff["id"]))["state"] == "cancelled"
    dead = await stack.http.get(f"/sso/setup/{token}")
    assert dead.status_code == 410 and "This link is no longer valid" in page_text(dead)
    [event] = await audit_for(stack.sessions, sid, "sso_email.cancel")
    assert (event.actor, event.outcome) == (admin.actor, "cancelled")

    # Nothing left to cancel: said so, not a 500.
    again = await admin.post(sid, "cancel-setup", csrf=await admin.csrf(), back="/admin/staff")
    assert flash_of(await admin.follow(again)) == (
        "error",
        "Cancel the setup in progress for Cy Cancelled: No Single Sign-On setup is in "
        "progress for this person",
    )


async def test_sending_too_often_is_refused_with_a_message(
    temporal_env: WorkflowEnvironment, database_url: str
) -> None:
    async with admin_stack(temporal_env, database_url, setup_email_limit=1) as (stack, admin):
        staff = await stack.create_staff(first_name="Ro", last_name="Repeated")
        sid, address = uuid.UUID(staff["id"]), staff["external_email_1"]
        first = await admin.act(await admin.page(q="repeated"), sid, "send-email")
        assert flash_of(await admin.follow(first)) == (
            "success",
            f"Single Sign-On email sent to {address}. The link is valid for 15 minutes.",
        )
        second = await admin.act(await admin.page(q="repeated"), sid, "send-email")
        kind, text = flash_of(await admin.follow(second)) or ("", "")
        assert kind == "error"
        assert text.startswith(
            "Send Single Sign-On Email for Ro Repeated: 1 Single Sign-On "
            "emails were sent to this person in the last 60 minutes; try "
            "again in "
        ), text
        await stack.wait_for(staff["id"], lambda s: s["state"] == "email_sent")
        assert len(await setups_of(stack.sessions, sid)) == 1
        assert len(await stack.links_sent_to(address)) == 1
        assert len(await audit_for(stack.sessions, sid, "sso_email.requested")) == 1


async def test_person_page_shows_flow_history_and_audit_trail(stack_admin: tuple[Stack, Admin]) -> None:
    stack, admin = stack_admin
    staff = await stack.create_staff(first_name="Hal", last_name="History")
    sid = uuid.UUID(staff["id"])
    empty = await admin.page(f"/admin/staff/{sid}")
    assert "No Single Sign-On email has been sent yet." in page_text(empty)

    sent = await stack.http.post(f"/api/v1/staff/{sid}/sso-email", headers=stack.admin)
    assert sent.status_code == 202, sent.text
    await stack.wait_for(staff["id"], lambda s: s["state"] == "email_sent")
    done = await admin.act(await admin.page(f"/admin/staff/{sid}"), sid, "send-email")
    await admin.follow(done)
    await stack.wait_for(
        staff["id"], lambda s: s["state"] == "email_sent" and s["requested_by"] == admin.actor
    )

    page = await admin.page(f"/admin/staff/{sid}")
    history = table_rows(page, "Single Sign-On emails")
    setups = await setups_of(stack.sessions, sid)
    # Written for a branch manager: who sent it by name, and what became of it in words.
    name = f"{ADMIN_FIRST} {ADMIN_LAST}"
    assert [row[1] for row in history] == [name, "Admin API key “test-admin”"]  # newest first
    assert history[0][2:] == ["Delivered", "Email sent"]
    assert history[1][3] == "Replaced by a newer email"
    assert f"Latest email Sent by {name}, " in page_text(page)
    # ... with the technical names one click away.
    tech = technical_rows(page, "Single Sign-On emails")
    assert [t["Sent by"] for t in tech] == [s.requested_by for s in reversed(setups)]
    assert [(t["State"], t["Email"]) for t in tech] == [("email_sent", "sent"), ("superseded", "sent")]
    assert {t["Flow"] for t in tech} == {f"sso-setup-{sid}"}
    facts = page.text.split("<h2>", 1)[0]
    assert technical(facts)["Flow"] == f"sso-setup-{sid}"

    trail = table_rows(page, "Audit trail")
    tech = technical_rows(page, "Audit trail")
    events = await audit_for(stack.sessions, sid)
    # Every event about this person (the page shows times to the second: order checked below).
    assert sorted([t["Event"], t["Actor"], t["Outcome"]] for t in tech) == sorted(
        [e.action, e.actor, e.outcome] for e in events
    )
    assert [row[1:4] for row in trail if row[1] == "Single Sign-On email requested"] == [
        ["Single Sign-On email requested", name, "Accepted"],
        ["Single Sign-On email requested", "Admin API key “test-admin”", "Accepted"],
    ]
    assert ["Staff profile created", "Admin API key “test-admin”", "Done"] == trail[-1][1:4]
    assert ["Single Sign-On email delivered", "Single Sign-On (automatic)", "Done"] in [r[1:4] for r in trail]
    assert ["Replaced by a newer email", name, "Replaced"] in [r[1:4] for r in trail]
    # No technical name or id is left where a branch manager reads.
    read = " ".join(" ".join(row) for row in trail + history)
    assert not re.search(r"staff:|sso_|admin-key:|system|[0-9a-f]{8}-[0-9a-f]{4}-", read), read


# -- an administrator's own setup ---------------------------------------------------------


async def at_mfa_step(
    stack: Stack, browser: SetupBrowser, last_name: str, is_admin: bool
) -> tuple[dict[str, Any], httpx.Response]:
    """A staff member created through the admin API, email sent, password chosen, emailed
    code confirmed: the MFA page."""
    created = await stack.http.post(
        "/api/v1/staff",
        headers=stack.admin,
        json={
            "first_name": "Ada",
            "last_name": last_name,
            "external_email_1": f"ada.{uuid.uuid4().hex[:8]}@example.com",
            "is_admin": is_admin,
        },
    )
    assert created.status_code == 201, created.text
    staff: dict[str, Any] = created.json()
    assert staff["is_admin"] is is_admin
    sent = await stack.http.post(f"/api/v1/staff/{staff['id']}/sso-email", headers=stack.admin)
    assert sent.status_code == 202, sent.text
    await stack.wait_for(staff["id"], lambda s: s["state"] == "email_sent")
    [token] = await stack.links_sent_to(staff["external_email_1"])
    assert redirected_to(await choose_password(browser, token), "/sso/setup/confirm")
    confirm = await confirm_page_once_sent(browser)
    code = await latest_code(stack, staff["external_email_1"])
    assert redirected_to(await browser.submit(confirm, "/sso/setup/confirm", code=code), "/sso/setup/mfa")
    page = await browser.get("/sso/setup/mfa")
    assert page.status_code == 200, page.text
    return staff, page


async def test_an_administrator_must_set_up_mfa(stack_admin: tuple[Stack, Admin]) -> None:
    stack, _ = stack_admin
    browser = SetupBrowser(stack)
    try:
        staff, page = await at_mfa_step(stack, browser, "Administrator", is_admin=True)
        text = page_text(page)
        assert ADMIN_MFA_SENTENCE in text and SKIP_BUTTON not in text
        assert 'action="/sso/setup/mfa/skip"' not in page.text

        # The skip posted anyway (an old tab, a hand-made form): refused, and nothing moves.
        fields = hidden_fields(page, "/sso/setup/mfa")
        refused = await browser.post(
            "/sso/setup/mfa/skip", {"csrf": fields["csrf"], "submission": fields["submission"]}
        )
        assert refused.status_code == 409, refused.text
        assert "Administrators must set up MFA" in page_text(refused)
        assert ADMIN_MFA_SENTENCE in page_text(refused) and SKIP_BUTTON not in page_text(refused)
        status = await stack.status(staff["id"])
        assert (status["state"], status["mfa_enabled"]) == ("mfa_pending", False)
        sid = uuid.UUID(staff["id"])
        assert [e for e in await audit_for(stack.sessions, sid, "mfa.skipped")] == []

        totp = pyotp.TOTP(manual_key(refused))
        done = await browser.submit(refused, "/sso/setup/mfa", code=totp.now())
        assert redirected_to(done, "/sso/setup/done"), done.text
        status = await stack.status(staff["id"])
        assert (status["state"], status["mfa_enabled"]) == ("active", True)
        assert len(await audit_for(stack.sessions, sid, "mfa.enrolled")) == 1
    finally:
        await browser.aclose()

    # And the new administrator signs in with the authenticator and reaches the staff pages
    # (the next step's code: the one just used is spent).
    async with browsing(stack.http._transport) as own:
        login = await own.get("/sso/login", return_to="/admin/staff")
        sent = await own.submit(login, "/sso/login", email=staff["external_email_1"], password=PASSWORD)
        assert redirected_to(sent, "/sso/login/mfa"), sent.text
        mfa = await own.get("/sso/login/mfa")
        signed_in = await own.submit(mfa, "/sso/login/mfa", code=totp.at(time.time() + 30))
        assert redirected_to(signed_in, "/admin/staff"), signed_in.text
        assert (await own.get("/admin/staff")).status_code == 200


async def test_other_staff_may_still_skip_mfa(stack_admin: tuple[Stack, Admin]) -> None:
    stack, admin = stack_admin
    browser = SetupBrowser(stack)
    try:
        staff, page = await at_mfa_step(stack, browser, "Member", is_admin=False)
        text = page_text(page)
        assert SKIP_BUTTON in text and ADMIN_MFA_SENTENCE not in text
        done = await browser.submit(page, "/sso/setup/mfa/skip")
        assert redirected_to(done, "/sso/setup/done"), done.text
    finally:
        await browser.aclose()
    status = await stack.status(staff["id"])
    assert (status["state"], status["mfa_enabled"]) == ("active", False)
    sid = uuid.UUID(staff["id"])
    assert len(await audit_for(stack.sessions, sid, "mfa.skipped")) == 1
    listed = await admin.page(q="member")
    assert state_cell(listed, sid) == ("Active", {"MFA off"})


async def test_an_administrators_mfa_page_does_not_call_it_optional(
    temporal_env: WorkflowEnvironment, sqlite_url: str
) -> None:
    async with admin_stack(temporal_env, sqlite_url) as (stack, _):
        browser = SetupBrowser(stack)
        try:
            _, page = await at_mfa_step(stack, browser, "Optional", is_admin=True)
        finally:
            await browser.aclose()
    assert ADMIN_MFA_SENTENCE in page_text(page)
    assert "optional" not in page_text(page).lower()


# -- sso staff create -------------------------------------------------------------------


def staff_rows(database_url: str) -> tuple[list[Staff], list[AuditEvent], int]:
    """Every staff record, every audit event, and how many setups exist."""
    engine = create_sync_engine(to_sync_url(database_url))
    try:
        with Session(engine) as session:
            return (
                list(session.scalars(select(Staff).order_by(Staff.created_at)).all()),
                list(session.scalars(select(AuditEvent)).all()),
                len(session.scalars(select(SsoSetup.id)).all()),
            )
    finally:
        engine.dispose()


def sso(*args: str) -> None:
    cli.main(["staff", "create", *args])


def test_sso_staff_create_makes_an_admin(cli_database: str, capsys: pytest.CaptureFixture[str]) -> None:
    sso(
        "--first-name",
        "Ada",
        "--last-name",
        "Lovelace",
        "--email",
        "Ada.Lovelace@Example.com",
        "--admin",
        "--no-email",
    )
    out = capsys.readouterr().out
    created = re.fullmatch(r"Created Ada Lovelace \(admin\): ([0-9a-f-]{36})\n", out)
    assert created, out
    sso("--first-name", "Bo", "--last-name", "Member", "--email", "bo@example.com", "--no-email")
    assert re.fullmatch(r"Created Bo Member: [0-9a-f-]{36}\n", capsys.readouterr().out)

    people, events, setups = staff_rows(cli_database)
    assert [(p.first_name, p.external_email_1, p.is_admin) for p in people] == [
        ("Ada", "ada.lovelace@example.com", True),
        ("Bo", "bo@example.com", False),
    ]
    assert str(people[0].id) == created.group(1)
    assert setups == 0  # --no-email: nothing sent, no flow started
    [made] = [e for e in events if e.target == created.group(1)]
    assert made.action == "staff.create" and made.actor.startswith("cli:")
    assert made.details["is_admin"] is True


def test_sso_staff_create_refuses_duplicates_and_bad_emails(
    cli_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sso(
        "--first-name",
        "Ada",
        "--last-name",
        "Lovelace",
        "--email",
        "ada@example.com",
        "--admin",
        "--no-email",
    )
    capsys.readouterr()
    with pytest.raises(SystemExit) as duplicate:
        sso("--first-name", "Another", "--last-name", "Ada", "--email", "ADA@example.com", "--no-email")
    assert duplicate.value.code == "sso: A staff member with that External Email 1 already exists"
    with pytest.raises(SystemExit) as invalid:
        sso(
            "--first-name",
            "Bad",
            "--last-name",
            "Address",
            "--email",
            "not-an-email",
            "--admin",
            "--no-email",
        )
    message = str(invalid.value.code)
    assert message.startswith("sso: external_email_1: value is not a valid email address"), message
    assert "Traceback" not in message and "\n" not in message
    assert capsys.readouterr().out == ""
    people, _, _ = staff_rows(cli_database)
    assert [p.external_email_1 for p in people] == ["ada@example.com"]


# -- limits found by these tests ----------------------------------------------------------


async def test_an_admin_with_the_longest_names_allowed_can_act(app: Stack) -> None:
    first, last = "Anne-" * 19 + "Marie", "Montgomery-" * 8 + "Fitzwilliams"
    assert len(first) == len(last) == 100  # the most StaffCreate allows
    person = await make_admin(app.sessions, app.settings, first_name=first, last_name=last)
    target = await add_staff(app.sessions, "Tia", "Target")
    async with browsing(app.transport) as browser:
        assert redirected_to(await sign_in_with_totp(browser, person), "/sso/account")
        admin = Admin(person, browser)
        response = await admin.act(await admin.page(), target, "revoke-sessions")
        assert flash_of(await admin.follow(response)) == (
            "success",
            "Tia Target was signed out everywhere (0 sessions).",
        )
    [event] = await audit_for(app.sessions, target, "sessions.revoke")
    # Named as far as the column allows: shortened, never cut mid-way into an error.
    assert len(event.actor) <= 200 and event.actor.endswith("…)"), event.actor
    assert event.actor.startswith(f"staff:{person.staff_id} (Anne-Anne-"), event.actor


async def test_search_ignores_case_beyond_ascii(app: Stack, admin: Admin) -> None:
    await add_staff(app.sessions, "Émile", "Łukasiewicz", "emile@echo.example")
    for q in ("Émile", "émile", "ÉMILE", "Łukasiewicz", "łukasiewicz"):
        assert names_on(await admin.page(q=q)) == ["Émile Łukasiewicz"], q
    # What people type is text, not a LIKE pattern.
    for q in ("%", "_", "É%z"):
        assert names_on(await admin.page(q=q)) == [], q


# -- Add staff ------------------------------------------------------------------------------


STAFF_FORM = {
    "first_name": "Ann",
    "last_name": "Other",
    "external_email_1": "ann.other@example.com",
    "is_admin": "no",
}


async def staff_count(sessions: SessionFactory) -> tuple[int, int]:
    """Staff rows and staff.create events: what a refused Add staff must leave as it was."""
    async with sessions() as session:
        people = len((await session.scalars(select(Staff.id))).all())
        created = len(
            (await session.scalars(select(AuditEvent.id).where(AuditEvent.action == "staff.create"))).all()
        )
    return people, created


async def test_add_staff_creates_the_profile_audited_and_opens_their_page(app: Stack, admin: Admin) -> None:
    listed = await admin.page()
    assert '<a class="button" href="/admin/staff/new">Add staff</a>' in listed.text
    form = await admin.page("/admin/staff/new")
    assert "<h1>Add staff</h1>" in form.text
    for label in ("First name", "Last name", "External Email 1", "Administrator"):
        assert f">{label}</" in form.text, label
    done = await admin.browser.submit(
        form,
        "/admin/staff/new",
        first_name="  Jo ",
        last_name="Bloggs",
        external_email_1="Jo.Bloggs@Example.com",
        is_admin="yes",
    )
    async with app.sessions() as session:
        staff = await session.scalar(select(Staff).where(Staff.external_email_1 == "jo.bloggs@example.com"))
    assert staff is not None
    assert (staff.first_name, staff.last_name, staff.is_admin) == ("Jo", "Bloggs", True)
    assert redirected_to(done, f"/admin/staff/{staff.id}")
    shown = await admin.follow(done)
    assert flash_of(shown) == (
        "success",
        "Added Jo Bloggs. To set up their Single Sign-On, open Actions and choose Send Single Sign-On Email.",
    )
    assert "send-email" in actions_in(shown.text, staff.id)
    [event] = await audit_for(app.sessions, staff.id, "staff.create")
    assert (event.actor, event.outcome, event.details) == (admin.actor, "success", {"is_admin": True})
    assert event.ip


async def test_add_staff_refuses_what_the_api_refuses_with_its_words(app: Stack, admin: Admin) -> None:
    taken = await add_staff(app.sessions, "Tia", "Taken", "tia.taken@example.com")
    assert taken
    good = STAFF_FORM
    before = await staff_count(app.sessions)
    cases = [
        ({"first_name": "   "}, "first_name"),
        ({"last_name": ""}, "last_name"),
        ({"first_name": "Ann\u0007"}, "first_name"),
        ({"last_name": "L" * 101}, "last_name"),
        ({"external_email_1": "not an address"}, "external_email_1"),
    ]
    for change, field in cases:
        body = {**good, **change}
        api = await app.http.post("/api/v1/staff", headers=app.admin, json={**body, "is_admin": False})
        assert api.status_code == 422, api.text
        api_words = api.json()["detail"][0]["msg"].rstrip(".")
        form = await admin.page("/admin/staff/new")
        refused = await admin.browser.submit(form, "/admin/staff/new", **body)
        assert refused.status_code == 400, (change, refused.text)
        [problem] = re.findall(
            r'<div class="error" role="alert" id="form-error">\s*<p>(.*?)</p>', refused.text, re.S
        )
        assert api_words in html.unescape(problem), (problem, api_words)
        assert re.search(rf'id="{field}"[^>]*aria-invalid="true" aria-describedby="form-error"', refused.text)
        # What was typed stays in the form, to correct.
        assert f'value="{html.escape(body["external_email_1"])}"' in refused.text

    form = await admin.page("/admin/staff/new")
    refused = await admin.browser.submit(form, "/admin/staff/new", **{**good, "is_admin": "maybe"})
    assert refused.status_code == 400 and "Administrator: must be yes or no." in page_text(refused)

    form = await admin.page("/admin/staff/new")
    refused = await admin.browser.submit(
        form, "/admin/staff/new", **{**good, "external_email_1": "TIA.taken@example.com"}
    )
    assert refused.status_code == 409
    assert "A staff member with that External Email 1 already exists." in page_text(refused)

    for csrf in ("", await foreign_csrf(app.transport)):
        refused = await admin.browser.post("/admin/staff/new", {**good, "csrf": csrf})
        assert refused.status_code == 400 and EXPIRED_FORM in page_text(refused)
    assert await staff_count(app.sessions) == before


async def test_only_admins_add_staff(app: Stack) -> None:
    plain = await app.person(
        mfa=True, first_name="Nils", last_name="Plain", password_hash=known_hash(app.settings)
    )
    good = {**STAFF_FORM, "is_admin": "yes"}
    before = await staff_count(app.sessions)
    async with browsing(app.transport) as browser:
        assert redirected_to(await browser.get("/admin/staff/new"), "/sso/login?return_to=/admin/staff/new")
        assert redirected_to(
            await browser.post("/admin/staff/new", good), "/sso/login?return_to=/admin/staff"
        )
        assert redirected_to(await sign_in_with_totp(browser, plain), "/sso/account")
        csrf = hidden_fields(await browser.get("/sso/account"), "/sso/logout")["csrf"]
        refused = await browser.get("/admin/staff/new")
        assert refused.status_code == 403 and NOT_ADMIN in page_text(refused)
        posted = await browser.post("/admin/staff/new", {**good, "csrf": csrf})
        assert posted.status_code == 403 and NOT_ADMIN in page_text(posted)
    assert await staff_count(app.sessions) == before


# -- the person page: sign-in lock and local times -------------------------------------------


@pytest.mark.parametrize(
    ("until", "shown"),
    [
        (datetime(2031, 7, 1, 19, 43, tzinfo=UTC), "1 Jul 2031, 20:43 BST"),  # summer: an hour on
        (datetime(2031, 1, 15, 19, 43, tzinfo=UTC), "15 Jan 2031, 19:43 GMT"),
    ],
)
async def test_the_person_page_says_until_when_sign_in_is_locked(
    app: Stack, admin: Admin, until: datetime, shown: str
) -> None:
    target = await app.person(first_name="Lyle", last_name="Locked", password_hash=known_hash(app.settings))
    page = await admin.page(f"/admin/staff/{target.staff_id}")
    assert lock_line(page) == "Not locked"
    await update_account(app.sessions, target, failed_sign_ins=3, locked_until=until)
    page = await admin.page(f"/admin/staff/{target.staff_id}")
    assert lock_line(page) == f"Locked until {shown} (3 failed sign-ins in a row)"
    instant = until.isoformat().replace("+00:00", "Z")
    assert f'<time datetime="{instant}" data-style="day">{shown}</time>' in page.text
    # Every time on the page is a <time> the browser's script puts in the reader's zone.
    assert "UTC" not in page_text(page)
    assert '<script src="/static/times.js" defer></script>' in page.text


# -- the header's person menu ----------------------------------------------------------------

MENU = re.compile(r'<header class="top">(.*?)</header>', re.S)


def person_menu(page: httpx.Response) -> dict[str, str]:
    """The person menu's entries: link text to address, and "Sign out" to where it posts."""
    [menu] = MENU.findall(page.text)
    assert "<summary>" in menu and 'class="person-icon"' in menu
    entries = {
        text_of(text): href
        for href, text in re.findall(r'<a class="menu-link" href="([^"]+)">(.*?)</a>', menu)
    }
    for action, text in re.findall(
        r'<form method="post" action="([^"]+)">.*?<button[^>]*>(.*?)</button>', menu, re.S
    ):
        entries[text_of(text)] = action
    assert 'name="csrf"' in menu
    return entries


async def test_every_signed_in_page_has_the_person_menu(app: Stack, admin: Admin) -> None:
    setup, staff, signout = "Setup agentOS Single Sign-on", "Settings \u203a Staff", "Sign out"
    everyone = {setup: "/sso/setup", signout: "/sso/logout"}
    admins = {
        **everyone,
        staff: "/admin/staff",
        "Settings \u203a Apps": "/admin/apps",
        # An organisation's own page; an operator's menu has every organisation's instead.
        "Settings \u203a Organisation": "/admin/organisation",
    }
    for path in (
        "/sso/account",
        "/sso/setup",
        "/admin/staff",
        "/admin/staff/new",
        f"/admin/staff/{admin.person.staff_id}",
        "/admin/apps",
        "/admin/apps/new",
        "/admin/orgs",
        f"/admin/orgs/{DEFAULT_ORG_ID}",
    ):
        page = await admin.browser.get(path)
        assert page.status_code == 200, (path, page.text)
        assert person_menu(page) == admins, path
        assert f"Person menu for {ADMIN_FIRST} {ADMIN_LAST}" in page_text(page)
    missing = await admin.browser.get(f"/admin/staff/{uuid.uuid4()}")
    assert missing.status_code == 404 and person_menu(missing) == admins

    plain = await app.person(first_name="Pia", last_name="Plain", password_hash=known_hash(app.settings))
    async with browsing(app.transport) as browser:
        login = await browser.get("/sso/login")
        assert not MENU.findall(login.text)  # signed out: no menu
        assert redirected_to(await sign_in(browser, plain.email), "/sso/account")
        for path in ("/sso/account", "/sso/setup", "/admin/staff", "/admin/apps"):
            page = await browser.get(path)
            assert person_menu(page) == everyone, path  # no Settings > Staff or Apps without the role
        # The menu's Sign out is the real one.
        out = await browser.submit(await browser.get("/sso/account"), "/sso/logout")
        assert out.status_code == 303
        assert redirected_to(await browser.get("/sso/account"), "/sso/login")


async def test_reset_mfa_for_a_lost_phone(stack_admin: tuple[Stack, Admin]) -> None:
    stack, admin = stack_admin
    target = await make_person(
        stack.sessions, stack.settings, mfa=True, first_name="Lou", last_name="Lostphone"
    )
    sid = target.staff_id
    async with stack.sessions() as session:
        await recovery.issue(
            session, stack.settings.secret_key.get_secret_value(), target.account_id, utcnow()
        )
        await Sessions(stack.settings, session).create("signin", sid, timedelta(hours=1))
        await session.commit()
    page = await admin.page(f"/admin/staff/{sid}")
    assert f'href="/admin/staff/{sid}/reset-mfa"' in page.text
    confirm = await admin.page(f"/admin/staff/{sid}/reset-mfa")
    assert "Reset MFA for Lou Lostphone?" in page_text(confirm)
    assert confirm.headers["cache-control"] == "no-store"

    await assert_csrf_refused(stack.http._transport, admin, confirm, sid, "reset-mfa")
    async with stack.sessions() as session:
        row = await session.scalar(select(SsoAccount).where(SsoAccount.staff_id == sid))
    assert row is not None and row.mfa_enabled_at is not None

    shown = await admin.follow(await admin.act(confirm, sid, "reset-mfa"))
    assert flash_of(shown) == (
        "success",
        "MFA for Lou Lostphone was reset: their authenticator app and recovery codes were removed, "
        "they were signed out everywhere (1 session) and told by email. They sign in with their "
        "password and can set up MFA again from their account page.",
    )
    assert person_state(shown) == ("Active", {"MFA off"})
    assert f'href="/admin/staff/{sid}/reset-mfa"' not in shown.text
    async with stack.sessions() as session:
        row = await session.scalar(select(SsoAccount).where(SsoAccount.staff_id == sid))
        codes = await session.scalar(
            select(RecoveryCode.id).where(RecoveryCode.account_id == target.account_id)
        )
    assert row is not None and row.mfa_enabled_at is None and row.totp_secret_encrypted is None
    assert codes is None
    assert [r.revoked_at is not None for r in await session_rows(stack.sessions, target, "signin")] == [True]
    [event] = await audit_for(stack.sessions, sid, "mfa.reset")
    assert (event.actor, event.outcome, event.details["sessions_revoked"]) == (admin.actor, "success", 1)
    [body] = await emails_with_subject(
        stack.sessions, stack.settings, target.email, "Your agentOS Multi-Factor Authentication was changed"
    )
    assert "an administrator reset your Multi-Factor Authentication" in body

    # Nothing left to reset: said so, not a 500.
    again = await admin.post(sid, "reset-mfa", csrf=await admin.csrf(), back=f"/admin/staff/{sid}")
    assert flash_of(await admin.follow(again)) == (
        "error",
        "Reset MFA for Lou Lostphone: This person has no Multi-Factor Authentication to reset",
    )
