"""Suspending an organisation and resuming it, through the admin API, in-process on SQLite and
PostgreSQL with a real worker on the time-skipping server: every session of its people ends
and the apps are told (a signed back-channel logout token), every app token dies, every way in
is refused with a page that names the organisation, its admin keys answer 403, nothing is
deleted, and resuming gives sign-in back but no session."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from joserfc import jwt
from sqlalchemy import func, select, update
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from api.services.reset import reset_workflow_id
from core.models import AuditEvent, Organisation, Staff
from tests.support.accounts import (
    GUARD_SECONDS,
    REFUSED,
    SESSION_COOKIE,
    Person,
    browsing,
    page_text,
    redirected_to,
    session_rows,
    sign_in,
)
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
    signed_in_browser,
    told_sids,
    userinfo,
)
from tests.support.orgs import org_flow_done
from tests.support.setup_pages import settle
from workflows.logout import logout_workflow_id
from workflows.org_suspension import org_suspend_workflow_id

pytestmark = [pytest.mark.pages, pytest.mark.asyncio(loop_scope="session")]

PAUSED = "Harbour Lettings can't use agentOS Single Sign-On at the moment. Contact your administrator."
OFFLINE = "openid offline_access"


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


async def harbour(stack: Stack) -> tuple[uuid.UUID, dict[str, str]]:
    """A new organisation and an admin key of its own."""
    slug = f"harbour-{uuid.uuid4().hex[:8]}"
    made = await stack.http.post(
        "/api/v1/orgs", json={"name": "Harbour Lettings", "slug": slug}, headers=stack.admin
    )
    assert made.status_code == 201, made.text
    org_id = uuid.UUID(made.json()["id"])
    key = await stack.http.post(f"/api/v1/orgs/{org_id}/keys", json={"name": "harbour"}, headers=stack.admin)
    assert key.status_code == 201, key.text
    return org_id, {"Authorization": f"Bearer {key.json()['key']}"}


async def act(
    stack: Stack, org_id: uuid.UUID, action: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    return await stack.http.post(f"/api/v1/orgs/{org_id}/{action}", headers=headers or stack.admin)


async def events(stack: Stack, org_id: uuid.UUID, action: str) -> list[AuditEvent]:
    async with stack.sessions() as session:
        found = await session.scalars(
            select(AuditEvent).where(AuditEvent.target == str(org_id), AuditEvent.action == action)
        )
        return list(found.all())


async def set_status(stack: Stack, org_id: uuid.UUID, status: str) -> None:
    """The organisation's status alone, as if a suspension committed at this instant (before
    it ended anyone's sessions): each way in must refuse on its own."""
    async with stack.sessions() as session:
        await session.execute(update(Organisation).where(Organisation.id == org_id).values(status=status))
        await session.commit()


def assert_paused_page(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text
    assert PAUSED in page_text(response)


async def app_tokens(stack: Stack, person: Person, uri: str) -> tuple[Any, dict[str, Any], str]:
    app = await register(
        stack, backchannel_logout_uri=uri, internal=True, grant_types=["authorization_code", "refresh_token"]
    )
    browser = await signed_in_browser(stack, person.email)
    request = authorization(app, scope=OFFLINE)
    token = await redeem(stack, request, await code_for(browser, request))
    sid = str(jwt.decode(token["id_token"], await keys(stack.http)).claims["sid"])
    return app, token, sid


async def test_suspending_signs_everyone_out_tells_apps_and_refuses_sign_in_until_resumed(
    stack: Stack, receiver: tuple[str, Received]
) -> None:
    uri, received = receiver
    org_id, org_key = await harbour(stack)
    person = await stack.person(org_id=org_id)
    colleague = await stack.person(org_id=org_id, first_name="Sam")
    bystander = await stack.person()  # another organisation's: untouched
    app, token, sid = await app_tokens(stack, person, uri)
    bystander_app, bystander_token, _ = await app_tokens(stack, bystander, uri)
    colleague_browser = await signed_in_browser(stack, colleague.email)
    assert (await stack.http.get("/api/v1/staff", headers=org_key)).status_code == 200

    answer = await act(stack, org_id, "suspend")
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "suspended" and answer.json()["suspended_at"] is not None
    assert answer.json()["suspension"] in ("under_way", "done")
    # The sessions end in the organisation's suspension flow, after the answer.
    await org_flow_done(stack.env.client, org_suspend_workflow_id(org_id))
    shown = await stack.http.get(f"/api/v1/orgs/{org_id}", headers=stack.admin)
    assert (shown.json()["status"], shown.json()["suspension"]) == ("suspended", "done")

    # The app hears of the ended session in a signed logout token, and its tokens die.
    handle = stack.env.client.get_workflow_handle(logout_workflow_id(sid))
    assert await asyncio.wait_for(handle.result(), GUARD_SECONDS) == {app.client_id: "delivered"}
    assert await told_sids(stack, received) == [sid]
    assert await refresh_refused(stack, app, token["refresh_token"])
    assert (await userinfo(stack, token["access_token"])).status_code == 401
    assert redirected_to(await colleague_browser.get("/sso/account"), "/sso/login?notice=expired")
    for someone in (person, colleague):
        assert all(
            row.revoked_at is not None for row in await session_rows(stack.sessions, someone, "signin")
        )
    # Another organisation's person keeps everything.
    assert not await refresh_refused(stack, bystander_app, bystander_token["refresh_token"])

    # The right password gets the page naming the organisation; a wrong one the usual answer.
    async with browsing(stack.transport) as fresh:
        assert_paused_page(await sign_in(fresh, person.email))
        assert fresh.cookie(SESSION_COOKIE) is None
        wrong = await sign_in(fresh, person.email, password="Not-The-Password-At-All-77")
        assert wrong.status_code == 401 and REFUSED in page_text(wrong)
        assert PAUSED not in page_text(wrong)

    # Its admin key is refused, saying why; an operator still sees the organisation.
    refused = await stack.http.get("/api/v1/staff", headers=org_key)
    assert refused.status_code == 403
    assert refused.json()["message"].startswith("Harbour Lettings is suspended")
    assert (await stack.http.get(f"/api/v1/orgs/{org_id}", headers=stack.admin)).json()[
        "status"
    ] == "suspended"

    # Idempotent (its flow runs once more), audited once; nothing deleted.
    assert (await act(stack, org_id, "suspend")).json()["suspended_at"] == answer.json()["suspended_at"]
    await org_flow_done(stack.env.client, org_suspend_workflow_id(org_id))
    [event] = await events(stack, org_id, "org.suspended")
    assert event.actor == "admin-key:test-admin" and event.details["people"] == 2
    [completed] = await events(stack, org_id, "org.suspension_completed")
    assert completed.actor == "admin-key:test-admin"
    assert (completed.details["people"], completed.details["sessions_revoked"]) == (2, 2)
    assert completed.details["grants_revoked"] == 1
    async with stack.sessions() as session:
        people = await session.scalar(select(func.count()).select_from(Staff).where(Staff.org_id == org_id))
    assert people == 2

    resumed = await act(stack, org_id, "resume")
    assert resumed.status_code == 200 and resumed.json()["status"] == "active"
    assert resumed.json()["suspended_at"] is None
    assert (await act(stack, org_id, "resume")).status_code == 200
    assert len(await events(stack, org_id, "org.resumed")) == 1
    # Sign-in and the key work again; the old sessions and tokens stay ended.
    assert (await stack.http.get("/api/v1/staff", headers=org_key)).status_code == 200
    assert redirected_to(await colleague_browser.get("/sso/account"), "/sso/login?notice=expired")
    assert await refresh_refused(stack, app, token["refresh_token"])
    async with browsing(stack.transport) as fresh:
        assert redirected_to(await sign_in(fresh, person.email), "/sso/account")


async def test_only_operators_suspend_and_another_organisation_is_not_found(stack: Stack) -> None:
    org_id, org_key = await harbour(stack)
    other_id, _ = await harbour(stack)
    for action in ("suspend", "resume"):
        own = await act(stack, org_id, action, org_key)
        assert own.status_code == 403 and "operator" in own.json()["message"]
        assert (await act(stack, other_id, action, org_key)).status_code == 403
        missing = await act(stack, uuid.uuid4(), action)
        assert missing.status_code == 404 and missing.json()["message"] == "No organisation with that id"
        assert (await stack.http.post(f"/api/v1/orgs/{org_id}/{action}")).status_code == 401
    assert await events(stack, org_id, "org.suspended") == []


@pytest.mark.parametrize("paused", ["suspended", "erasing"])
async def test_each_way_in_refuses_on_its_own_once_the_suspension_commits(
    stack: Stack, receiver: tuple[str, Received], paused: str
) -> None:
    """The organisation marked suspended (or being erased), nobody's session ended yet (the
    instant before its flow gets to them): a refresh, a signed-in page, a half-way sign-in's
    authenticator code and a new sign-in all refuse."""
    uri, _ = receiver
    org_id, _ = await harbour(stack)
    person = await stack.person(org_id=org_id, mfa=True)
    plain = await stack.person(org_id=org_id)
    app, token, _ = await app_tokens(stack, plain, uri)
    signed_in = await signed_in_browser(stack, plain.email)
    assert (await signed_in.get("/sso/account")).status_code == 200
    async with browsing(stack.transport) as browser:
        assert redirected_to(await sign_in(browser, person.email), "/sso/login/mfa")
        page = await browser.get("/sso/login/mfa")
        await set_status(stack, org_id, paused)
        assert_paused_page(await browser.submit(page, "/sso/login/mfa", code=person.totp_now()))
        assert browser.cookie(SESSION_COOKIE) is None
        assert redirected_to(await browser.get("/sso/login/mfa"), "/sso/login?notice=expired")
    assert await refresh_refused(stack, app, token["refresh_token"])
    assert redirected_to(await signed_in.get("/sso/account"), "/sso/login?notice=expired")
    await set_status(stack, org_id, "active")
    assert (await signed_in.get("/sso/account")).status_code == 200
    # Not revoked: the refusal was the organisation's status alone.
    assert not await refresh_refused(stack, app, token["refresh_token"])


async def test_setup_links_emails_and_password_resets_are_refused(stack: Stack) -> None:
    org_id, _ = await harbour(stack)
    created = await stack.create_staff(org_id=str(org_id))
    staff_id = created["id"]
    sent = await stack.http.post(f"/api/v1/staff/{staff_id}/sso-email", headers=stack.admin)
    assert sent.status_code == 202, sent.text
    await stack.wait_for(staff_id, lambda s: s["state"] == "email_sent")
    [token] = await stack.links_sent_to(created["external_email_1"])

    assert (await act(stack, org_id, "suspend")).status_code == 200
    async with browsing(stack.transport) as browser:
        page = await browser.get(f"/sso/setup/{token}")
        assert page.status_code == 410 and PAUSED in page_text(page)
        assert "Send me a new link" not in page.text
    again = await stack.http.post(f"/api/v1/staff/{staff_id}/sso-email", headers=stack.admin)
    assert again.status_code == 409
    assert (
        again.json()["message"]
        == "Harbour Lettings is suspended; resume it before sending a Single Sign-On email"
    )
    assert len(await stack.links_sent_to(created["external_email_1"])) == 1

    # Forgot your password?: the neutral answer, as for an unknown address, and no flow.
    person = await stack.person(org_id=org_id)
    async with browsing(stack.transport) as browser:
        page = await browser.get("/sso/forgot")
        asked = await browser.submit(page, "/sso/forgot", email=person.email)
        assert redirected_to(asked, "/sso/reset?sent=1")
    # No reset flow started for the person, so nothing can be emailed to them.
    with pytest.raises(RPCError) as missing:
        await stack.env.client.get_workflow_handle(reset_workflow_id(person.account_id)).describe()
    assert missing.value.status == RPCStatusCode.NOT_FOUND


async def test_the_microsoft_button_refuses_a_suspended_organisations_person(stack: Stack) -> None:
    org_id, _ = await harbour(stack)
    staff_id = (await stack.person(org_id=org_id)).staff_id
    identity = await linked_identity(stack, staff_id, org_id, "Pat Harbour")

    assert (await microsoft_sign_in(stack, identity)).kind == "signed_in"
    assert (await act(stack, org_id, "suspend")).status_code == 200
    result = await microsoft_sign_in(stack, identity)
    assert (result.kind, result.reason, result.message) == ("refused", "org_suspended", PAUSED)
    assert (await act(stack, org_id, "resume")).status_code == 200
    assert (await microsoft_sign_in(stack, identity)).kind == "signed_in"


async def test_a_suspended_organisations_people_change_no_email_address(stack: Stack) -> None:
    """Asked before the suspension, a change can't be confirmed during it; none is asked."""
    org_id, _ = await harbour(stack)
    created = await stack.create_staff(org_id=str(org_id))
    staff_id = created["id"]
    waiting = f"new.{uuid.uuid4().hex[:8]}@example.com"
    asked = await stack.http.patch(
        f"/api/v1/staff/{staff_id}", json={"external_email_1": waiting}, headers=stack.admin
    )
    assert asked.status_code == 200, asked.text

    assert (await act(stack, org_id, "suspend")).status_code == 200
    refused = "Harbour Lettings is suspended; resume it before changing an email address"
    confirm = await stack.http.post(
        f"/api/v1/staff/{staff_id}/email-change/confirm", json={"code": "123456"}, headers=stack.admin
    )
    assert confirm.status_code == 409 and confirm.json()["message"] == refused, confirm.text
    other = await stack.http.patch(
        f"/api/v1/staff/{staff_id}",
        json={"external_email_1": f"other.{uuid.uuid4().hex[:8]}@example.com", "first_name": "Changed"},
        headers=stack.admin,
    )
    assert other.status_code == 409 and other.json()["message"] == refused, other.text
    async with stack.sessions() as session:
        staff = await session.get(Staff, uuid.UUID(staff_id))
        assert staff is not None
        # Nothing of the refused request changed: neither the name nor the waiting address.
        assert (staff.first_name, staff.pending_external_email_1) == (created["first_name"], waiting)
        assert staff.external_email_1 == created["external_email_1"]
