"""Disabling a person (a leaver) and enabling them again, through the admin API and the admin
pages, in-process on SQLite and PostgreSQL with a real worker on the time-skipping server:
sessions end and the apps are told (back-channel logout to a receiver), every app token dies,
every way in is refused with a clear page, open flows end, and enabling gives sign-in back
but no session. docs/security.md §18, §20, §28, §30 and §34 are what these prove for it."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import httpx
import pytest
import pytest_asyncio
from joserfc import jwt
from sqlalchemy import select, update
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from api.services.reset import reset_workflow_id
from api.services.sessions import Sessions
from api.services.temporal import email_retry
from core.models import AuditEvent, EntraLink, OidcGrant, SsoAccount, Staff
from core.orgs import DEFAULT_ORG_ID
from tests.support.accounts import (
    ADMIN_ACTOR,
    GUARD_SECONDS,
    NEW_PASSWORD,
    PASSWORD,
    REFUSED,
    SESSION_COOKIE,
    Person,
    account_row,
    browsing,
    code_in,
    hidden_fields,
    outbox,
    page_text,
    redirected_to,
    session_rows,
    sign_in,
)
from tests.support.admin_pages import AVERY
from tests.support.entra_stub import linked_identity, microsoft_sign_in
from tests.support.harness import Stack, running_stack
from tests.support.oidc import (
    Received,
    authorization,
    code_for,
    keys,
    logout_receiver,
    redeem,
    refresh_refused,
    register,
    signed_in_admin,
    signed_in_browser,
    told_sids,
    userinfo,
)
from tests.support.setup_pages import settle
from workflows.entra import EntraLinkInput, EntraLinkWorkflow, link_workflow_id
from workflows.logout import logout_workflow_id

pytestmark = [pytest.mark.pages, pytest.mark.asyncio(loop_scope="session")]

DISABLED = "Your staff login is disabled. Ask your administrator."
AT_MICROSOFT = "https://login.example.test/authorize"
FLASH = re.compile(r'<div class="(error|success)" role="(?:alert|status)"><p>(.*?)</p></div>', re.S)


@pytest.fixture
def receiver() -> Iterator[tuple[str, Received]]:
    with logout_receiver() as listening:
        yield listening


@pytest_asyncio.fixture(loop_scope="session")
async def stack(temporal_env: WorkflowEnvironment, database_url: str) -> AsyncIterator[Stack]:
    # Development: the receiver listens over plain http (an internal app on loopback).
    async with running_stack(temporal_env, database_url, env="development", signin_ip_limit=1000) as running:
        yield running
        await settle(running)


async def disable(stack: Stack, staff_id: object, action: str = "disable") -> httpx.Response:
    return await stack.http.post(f"/api/v1/staff/{staff_id}/{action}", headers=stack.admin)


async def audit(stack: Stack, staff_id: uuid.UUID, action: str) -> list[AuditEvent]:
    async with stack.sessions() as session:
        return list(
            (
                await session.scalars(
                    select(AuditEvent).where(AuditEvent.target == str(staff_id), AuditEvent.action == action)
                )
            ).all()
        )


async def account_status(stack: Stack, person: Person) -> str:
    async with stack.sessions() as session:
        status = await session.scalar(select(SsoAccount.status).where(SsoAccount.staff_id == person.staff_id))
    assert status is not None
    return status


async def signed_in_rows_revoked(stack: Stack, person: Person) -> list[bool]:
    return [row.revoked_at is not None for row in await session_rows(stack.sessions, person, "signin")]


def assert_disabled_page(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text
    assert DISABLED in page_text(response)


async def test_disabling_ends_sessions_tells_apps_and_kills_tokens_and_enabling_gives_sign_in_back(
    stack: Stack, receiver: tuple[str, Received]
) -> None:
    uri, received = receiver
    person = await stack.person()
    app = await register(
        stack, backchannel_logout_uri=uri, internal=True, grant_types=["authorization_code", "refresh_token"]
    )
    browser = await signed_in_browser(stack, person.email)
    request = authorization(app, scope="openid offline_access")
    token = await redeem(stack, request, await code_for(browser, request))
    sid = jwt.decode(token["id_token"], await keys(stack.http)).claims["sid"]
    assert (await userinfo(stack, token["access_token"])).status_code == 200
    # A second app's tokens bound to no session (as grants from before sessions were recorded
    # are): ending the sessions alone would leave them working.
    other = await register(stack, grant_types=["authorization_code", "refresh_token"])
    request = authorization(other, scope="openid offline_access")
    unbound = await redeem(stack, request, await code_for(browser, request))
    async with stack.sessions() as session:
        await session.execute(
            update(OidcGrant).where(OidcGrant.client_id == other.client_id).values(session_hash=None)
        )
        await session.commit()

    answer = await disable(stack, person.staff_id)
    assert answer.status_code == 200, answer.text
    disabled_at = answer.json()["disabled_at"]
    assert disabled_at is not None

    # The app hears of the ended session, and everything it holds stops working.
    handle = stack.env.client.get_workflow_handle(logout_workflow_id(sid))
    assert await asyncio.wait_for(handle.result(), GUARD_SECONDS) == {app.client_id: "delivered"}
    assert await told_sids(stack, received) == [sid]
    assert await refresh_refused(stack, app, token["refresh_token"])
    assert (await userinfo(stack, token["access_token"])).status_code == 401
    assert await refresh_refused(stack, other, unbound["refresh_token"])
    assert (await userinfo(stack, unbound["access_token"])).status_code == 401
    # The signed-in browser is signed out.
    assert redirected_to(await browser.get("/sso/account"), "/sso/login?notice=expired")
    assert [row.revoked_at is not None for row in await session_rows(stack.sessions, person, "signin")] == [
        True
    ]

    # Idempotent: the same state, nothing done twice.
    again = await disable(stack, person.staff_id)
    assert again.status_code == 200 and again.json()["disabled_at"] == disabled_at
    status = (await stack.http.get(f"/api/v1/staff/{person.staff_id}/sso", headers=stack.admin)).json()
    assert status["disabled_at"] == disabled_at
    [event] = await audit(stack, person.staff_id, "staff.disabled")
    assert (event.actor, event.outcome, event.details["sessions_revoked"]) == (ADMIN_ACTOR, "success", 1)

    # The right password gets the clear page, and no session; a wrong one the usual answer.
    async with browsing(stack.transport) as fresh:
        assert_disabled_page(await sign_in(fresh, person.email))
        assert fresh.cookie(SESSION_COOKIE) is None
        wrong = await sign_in(fresh, person.email, password="Not-The-Password-At-All-77")
        assert wrong.status_code == 401 and REFUSED in page_text(wrong)
    assert [row.revoked_at is not None for row in await session_rows(stack.sessions, person, "signin")] == [
        True
    ]

    enabled = await disable(stack, person.staff_id, "enable")
    assert enabled.status_code == 200 and enabled.json()["disabled_at"] is None
    assert (await disable(stack, person.staff_id, "enable")).json()["disabled_at"] is None
    assert await account_status(stack, person) == "active"
    assert len(await audit(stack, person.staff_id, "staff.enabled")) == 1
    # Sign-in again, but not the old session.
    assert redirected_to(await browser.get("/sso/account"), "/sso/login?notice=expired")
    assert await refresh_refused(stack, app, token["refresh_token"])
    async with browsing(stack.transport) as fresh:
        assert redirected_to(await sign_in(fresh, person.email), "/sso/account")


async def test_disabling_ends_a_sign_in_waiting_for_its_authenticator_code(stack: Stack) -> None:
    person = await stack.person(mfa=True)
    async with browsing(stack.transport) as browser:
        login = await browser.get("/sso/login")
        sent = await browser.submit(login, "/sso/login", email=person.email, password=PASSWORD)
        assert redirected_to(sent, "/sso/login/mfa")
        assert (await disable(stack, person.staff_id)).status_code == 200
        page = await browser.get("/sso/login/mfa")
        # Disabling ended the half-way sign-in too.
        assert redirected_to(page, "/sso/login?notice=expired")
    assert await session_rows(stack.sessions, person, "mfa") and all(
        row.revoked_at is not None for row in await session_rows(stack.sessions, person, "mfa")
    )


async def test_forgot_password_gives_the_neutral_answer_and_sends_nothing_and_an_open_reset_ends(
    stack: Stack,
) -> None:
    person = await stack.person()
    async with browsing(stack.transport) as browser:
        page = await browser.get("/sso/forgot")
        asked = await browser.submit(page, "/sso/forgot", email=person.email)
        assert redirected_to(asked, "/sso/reset?sent=1")
        [(subject, body)] = await _outbox_when(stack, person, 1)
        handle = stack.env.client.get_workflow_handle(reset_workflow_id(person.account_id))
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
        reset_page = await browser.get("/sso/reset", sent="1")

        assert (await disable(stack, person.staff_id)).status_code == 200
        async with asyncio.timeout(GUARD_SECONDS):
            while (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
                await asyncio.sleep(0.05)
        assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
        # The open reset is refused at its last step: the password stays as it was.
        before = (await account_row(stack.sessions, person)).password_hash
        final = await browser.submit(
            reset_page, "/sso/reset", code=code_in(body), password=NEW_PASSWORD, confirm=NEW_PASSWORD, totp=""
        )
        # Its browser session ended with the others: back to Forgot your password?.
        assert redirected_to(final, "/sso/forgot"), final.headers
        assert (await account_row(stack.sessions, person)).password_hash == before

    answers = []
    for email in (person.email, f"nobody.{uuid.uuid4().hex[:8]}@example.com"):
        async with browsing(stack.transport) as browser:
            page = await browser.get("/sso/forgot")
            response = await browser.submit(page, "/sso/forgot", email=email)
            answers.append((response.status_code, response.headers.get("location")))
    assert answers[0] == answers[1] == (303, "/sso/reset?sent=1")
    # No new reset flow was started for the disabled person, so nothing more is emailed.
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    assert [s for s, _ in await outbox(stack.sessions, stack.settings, person.email)] == [subject]


async def _outbox_when(stack: Stack, person: Person, count: int) -> list[tuple[str, str]]:
    async with asyncio.timeout(GUARD_SECONDS):
        while len(found := await outbox(stack.sessions, stack.settings, person.email)) < count:
            await asyncio.sleep(0.05)
    return found


async def test_an_open_setup_is_cancelled_its_link_refused_and_no_email_sent_while_disabled(
    stack: Stack,
) -> None:
    created = await stack.create_staff()
    staff_id = created["id"]
    sent = await stack.http.post(f"/api/v1/staff/{staff_id}/sso-email", headers=stack.admin)
    assert sent.status_code == 202, sent.text
    await stack.wait_for(staff_id, lambda s: s["state"] == "email_sent")
    [token] = await stack.links_sent_to(created["external_email_1"])

    assert (await disable(stack, staff_id)).status_code == 200
    status = await stack.status(staff_id)
    assert status["state"] == "cancelled" and status["disabled_at"] is not None
    async with browsing(stack.transport) as browser:
        page = await browser.get(f"/sso/setup/{token}")
        assert page.status_code == 410 and DISABLED in page_text(page)

    refused = await stack.http.post(f"/api/v1/staff/{staff_id}/sso-email", headers=stack.admin)
    assert refused.status_code == 409
    assert "disabled" in refused.json()["message"]
    assert len(await stack.links_sent_to(created["external_email_1"])) == 1


async def test_a_person_without_a_password_account_is_disabled_by_the_staff_record(stack: Stack) -> None:
    """No password account at all: the staff record alone says disabled."""
    created = await stack.create_staff()
    staff_id = uuid.UUID(created["id"])
    async with stack.sessions() as session:
        session.add(
            EntraLink(staff_id=staff_id, tenant_id="t", object_id="o", linked_via="setup_link", email="x@y.z")
        )
        await session.commit()
    assert (await disable(stack, staff_id)).status_code == 200
    async with stack.sessions() as session:
        staff = await session.get(Staff, staff_id)
        assert staff is not None and staff.disabled_at is not None
        # A session somehow left behind is not signed in either.
        session_id = await Sessions(stack.settings, session).create("signin", staff_id, timedelta(hours=1))
        await session.commit()
        assert await Sessions(stack.settings, session).signed_in(session_id) is None


async def test_unknown_people_are_404_and_the_api_needs_a_key(stack: Stack) -> None:
    for action in ("disable", "enable"):
        answer = await disable(stack, uuid.uuid4(), action)
        assert answer.status_code == 404 and answer.json()["message"] == "No staff member with that id"
        keyless = await stack.http.post(f"/api/v1/staff/{uuid.uuid4()}/{action}")
        assert keyless.status_code == 401


# -- the admin pages ------------------------------------------------------------------------


def flash(page: httpx.Response) -> tuple[str, str]:
    [(kind, text)] = FLASH.findall(page.text)
    return kind, " ".join(text.split())


async def test_the_admin_pages_disable_and_enable_with_a_confirmation(stack: Stack) -> None:
    admin, browser = await signed_in_admin(stack, **AVERY)
    person = await stack.person(first_name="Lee", last_name="Leaver")
    sid = person.staff_id
    async with stack.sessions() as session:
        await Sessions(stack.settings, session).create("signin", sid, timedelta(hours=1))
        await session.commit()
    page = await browser.get(f"/admin/staff/{sid}")
    assert f'href="/admin/staff/{sid}/disable"' in page.text
    confirm = await browser.get(f"/admin/staff/{sid}/disable")
    assert confirm.status_code == 200
    assert "Lee Leaver will be signed out of every app and can't sign in until enabled" in page_text(confirm)

    # Without the form's CSRF token: nothing happens.
    fields = hidden_fields(confirm, f"/admin/staff/{sid}/disable")
    forged = await browser.post(f"/admin/staff/{sid}/disable", {"back": fields["back"], "csrf": "forged"})
    assert flash(await browser.get(forged.headers["location"]))[0] == "error"
    assert await audit(stack, sid, "staff.disabled") == []

    done = await browser.submit(confirm, f"/admin/staff/{sid}/disable")
    assert done.status_code == 303
    shown = await browser.get(done.headers["location"])
    assert flash(shown) == (
        "success",
        "Lee Leaver was disabled: signed out of every app, and can&#39;t sign in until enabled.",
    )
    assert f'href="/admin/staff/{sid}/enable"' in shown.text
    assert f'action="/admin/staff/{sid}/send-email"' not in shown.text
    [event] = await audit(stack, sid, "staff.disabled")
    assert event.actor == f"staff:{admin.staff_id} (Avery Quill)" and event.details["sessions_revoked"] == 1
    listed = await browser.get("/admin/staff")
    assert '<span class="tag warn">Disabled</span>' in listed.text and "Disabled since" in page_text(listed)

    enable_page = await browser.get(f"/admin/staff/{sid}/enable")
    assert "Enable Lee Leaver?" in page_text(enable_page)
    shown = await browser.get(
        (await browser.submit(enable_page, f"/admin/staff/{sid}/enable")).headers["location"]
    )
    assert flash(shown)[0] == "success" and "Lee Leaver was enabled" in flash(shown)[1]
    [event] = await audit(stack, sid, "staff.enabled")
    assert event.actor == f"staff:{admin.staff_id} (Avery Quill)"
    async with browsing(stack.transport) as fresh:
        assert redirected_to(await sign_in(fresh, person.email), "/sso/account")


async def test_an_admin_cannot_disable_themselves(stack: Stack) -> None:
    admin, browser = await signed_in_admin(stack, **AVERY)
    sid = admin.staff_id
    confirm = await browser.get(f"/admin/staff/{sid}/disable")
    shown = await browser.get(
        (await browser.submit(confirm, f"/admin/staff/{sid}/disable")).headers["location"]
    )
    assert flash(shown) == (
        "error",
        "Disable for Avery Quill: You can&#39;t disable your own staff login. Ask another administrator.",
    )
    assert await audit(stack, sid, "staff.disabled") == []
    assert await account_status(stack, admin) == "active"
    assert (await browser.get("/admin/staff")).status_code == 200  # still signed in


@pytest.mark.parametrize("with_account", [True, False], ids=["password-account", "entra-only"])
async def test_the_microsoft_button_refuses_a_disabled_person(stack: Stack, with_account: bool) -> None:
    if with_account:
        staff_id = (await stack.person()).staff_id
    else:
        staff_id = uuid.UUID((await stack.create_staff())["id"])
    identity = await linked_identity(stack, staff_id, DEFAULT_ORG_ID, "Lee Leaver")

    assert (await microsoft_sign_in(stack, identity)).kind == "signed_in"
    assert (await disable(stack, staff_id)).status_code == 200
    result = await microsoft_sign_in(stack, identity)
    assert (result.kind, result.reason, result.message) == ("refused", "account_disabled", DISABLED)
    assert (await disable(stack, staff_id, "enable")).status_code == 200
    assert (await microsoft_sign_in(stack, identity)).kind == "signed_in"


async def test_an_app_sending_a_disabled_person_to_sign_in_gets_no_code(stack: Stack) -> None:
    """The authorize continuation: the sign-in screen comes first and stops at the clear page."""
    person = await stack.person()
    app = await register(stack)
    assert (await disable(stack, person.staff_id)).status_code == 200
    async with browsing(stack.transport) as browser:
        request = authorization(app, login_hint=person.email)
        to_login = await browser.get("/oidc/authorize", **request.params)
        assert to_login.status_code == 303 and to_login.headers["location"].startswith("/sso/login?")
        page = await browser.http.get(to_login.headers["location"])
        assert hidden_fields(page, "/sso/login")["return_to"] == "/sso/authorize/resume"
        assert_disabled_page(await browser.submit(page, "/sso/login", email=person.email, password=PASSWORD))
        resumed = await browser.get("/sso/authorize/resume")
        assert not resumed.headers.get("location", "").startswith(app.redirect_uri)


async def test_enabling_gives_back_the_status_the_account_had(stack: Stack) -> None:
    """A person still to finish their setup is not made active by a disable and enable."""
    person = await stack.person(status="pending")
    assert (await disable(stack, person.staff_id)).status_code == 200
    assert await account_status(stack, person) == "disabled"
    listed = await stack.http.get("/api/v1/staff", headers=stack.admin, params={"q": person.email})
    [item] = listed.json()["items"]
    assert item["disabled_at"] is not None
    assert (await disable(stack, person.staff_id, "enable")).status_code == 200
    assert await account_status(stack, person) == "pending"
    async with browsing(stack.transport) as browser:
        refused = await sign_in(browser, person.email)
        assert refused.status_code == 401 and REFUSED in page_text(refused)


async def test_an_open_microsoft_link_flow_is_cancelled(stack: Stack) -> None:
    person = await stack.person()
    handle = await stack.env.client.start_workflow(
        EntraLinkWorkflow.run,
        EntraLinkInput(str(person.staff_id), email_retry(stack.settings)),
        id=link_workflow_id(str(person.staff_id)),
        task_queue=stack.settings.task_queue,
    )
    assert (await disable(stack, person.staff_id)).status_code == 200
    async with asyncio.timeout(GUARD_SECONDS):
        while (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
            await asyncio.sleep(0.05)
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
