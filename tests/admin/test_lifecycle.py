"""Editing a person and their leave date through the admin API, in-process on SQLite and
PostgreSQL with a real worker on the time-skipping server: a name changes at once; a new
External Email 1 waits for the code emailed to it, then becomes the sign-in email and the old
address is told; a taken address is a 409; a leave date disables the person at the start of
that day in SSO_TIME_ZONE, moves with the date and ends when it is cleared."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import select
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.inputs import LeaverInput
from activities.lifecycle import LifecycleActivities
from core.models import AuditEvent, SsoAccount, Staff
from core.orgs import DEFAULT_ORG_ID
from tests.support.accounts import (
    ADMIN_ACTOR,
    GUARD_SECONDS,
    REFUSED,
    code_in,
    emails_with_subject,
    outbox,
    page_text,
    session_rows,
    sign_in,
)
from tests.support.config import time_skipping_server
from tests.support.harness import Stack
from tests.support.oidc import signed_in_browser
from tests.support.orgs import add_org
from workflows.email_change import email_change_workflow_id
from workflows.leave import leave_workflow_id

pytestmark = [pytest.mark.pages, pytest.mark.asyncio(loop_scope="session")]


@pytest_asyncio.fixture(loop_scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server for each test here, not one per module: these tests skip days,
    and a flow an earlier test left with an activity in flight (a logout or a notice its
    teardown does not wait for) stops a shared server's clock (temporalio/sdk-java#1138).
    CI's busier machine hit that: every later sleep hung until its RPC timed out."""
    async with time_skipping_server() as env:
        yield env


CODE_SUBJECT = "Confirm your new agentOS sign-in email"
CHANGED_SUBJECT = "Your agentOS sign-in email was changed"


async def patch(stack: Stack, staff_id: object, **body: object) -> httpx.Response:
    return await stack.http.patch(f"/api/v1/staff/{staff_id}", json=body, headers=stack.admin)


async def staff_row(stack: Stack, staff_id: uuid.UUID) -> Staff:
    async with stack.sessions() as session:
        staff = await session.get(Staff, staff_id)
    assert staff is not None
    return staff


async def actions(stack: Stack, staff_id: uuid.UUID) -> list[AuditEvent]:
    async with stack.sessions() as session:
        return list(
            (
                await session.scalars(
                    select(AuditEvent)
                    .where(AuditEvent.target == str(staff_id))
                    .order_by(AuditEvent.occurred_at)
                )
            ).all()
        )


def tomorrow(stack: Stack, days: int = 1) -> date:
    return datetime.now(stack.settings.zone).date() + timedelta(days=days)


async def days_ahead(stack: Stack, days: int) -> date:
    """A day `days` after today on the clock that is furthest on: the time-skipping server's
    (earlier tests of the module skipped it ahead) or the web app's (which refuses a past day)."""
    server = await stack.env.get_current_time()
    return max(server.astimezone(stack.settings.zone).date(), tomorrow(stack, 0)) + timedelta(days=days)


async def outcome(handle: WorkflowHandle[Any, Any]) -> Any:
    """The flow's result once it has finished. Waits on describe() rather than the result's
    long poll, which the time-skipping server has answered with no completion event."""
    async with asyncio.timeout(GUARD_SECONDS):
        while (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
            await asyncio.sleep(0.05)
    return await handle.result()


async def skip_to(stack: Stack, moment: datetime) -> None:
    await stack.env.sleep(max(timedelta(0), moment - await stack.env.get_current_time()))


async def test_a_name_changes_at_once_and_the_audit_names_the_fields_not_the_values(stack: Stack) -> None:
    person = await stack.person(first_name="Robin", last_name="Ashcombe")
    response = await patch(stack, person.staff_id, first_name="Robyn")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["first_name"], body["last_name"], body["external_email_1"]) == (
        "Robyn",
        "Ashcombe",
        person.email,
    )
    assert body["pending_external_email_1"] is None and body["leave_on"] is None
    assert (await staff_row(stack, person.staff_id)).first_name == "Robyn"
    updated = [e for e in await actions(stack, person.staff_id) if e.action == "staff.updated"]
    assert [(e.actor, e.details) for e in updated] == [(ADMIN_ACTOR, {"first_name": True})]
    assert "Robyn" not in str(updated[0].details) and "Robin" not in str(updated[0].details)


@pytest.mark.parametrize(
    "body",
    [
        {"first_name": ""},
        {"first_name": None},
        {"last_name": "x" * 101},
        {"first_name": "Bad\u0007"},
        {"external_email_1": "not-an-address"},
        {"is_admin": True},
        {"leave_on": "31/01/2027"},
    ],
)
async def test_a_bad_field_is_refused_and_nothing_changes(stack: Stack, body: dict[str, object]) -> None:
    person = await stack.person()
    changed = {"first_name": "Changed", "last_name": "Changed"}
    response = await patch(stack, person.staff_id, **{**changed, **body})
    assert response.status_code == 422, response.text
    assert response.json()["message"]
    row = await staff_row(stack, person.staff_id)
    assert (row.first_name, row.last_name, row.external_email_1) == (
        person.first_name,
        person.last_name,
        person.email,
    )


async def test_an_unknown_person_is_a_404(stack: Stack) -> None:
    response = await patch(stack, uuid.uuid4(), first_name="Nobody")
    assert response.status_code == 404
    assert (await stack.http.delete(f"/api/v1/staff/{uuid.uuid4()}", headers=stack.admin)).status_code == 404


async def test_an_address_another_person_uses_is_a_409_and_nothing_changes(stack: Stack) -> None:
    person, other = await stack.person(), await stack.person()
    response = await patch(stack, person.staff_id, first_name="Changed", external_email_1=other.email.upper())
    assert response.status_code == 409, response.text
    assert response.json()["message"] == "Another staff member already uses that email address"
    row = await staff_row(stack, person.staff_id)
    assert (row.first_name, row.external_email_1, row.pending_external_email_1) == (
        person.first_name,
        person.email,
        None,
    )
    assert await outbox(stack.sessions, stack.settings, other.email) == []


async def test_a_new_address_is_used_only_once_its_code_is_entered_and_the_old_one_is_told(
    stack: Stack,
) -> None:
    person = await stack.person()
    new = f"moved.{uuid.uuid4().hex[:8]}@example.org"
    response = await patch(stack, person.staff_id, external_email_1=new.upper())
    assert response.status_code == 200, response.text
    assert (response.json()["external_email_1"], response.json()["pending_external_email_1"]) == (
        person.email,
        new,
    )
    (mail,) = await emails_with_subject(stack.sessions, stack.settings, new, CODE_SUBJECT)
    code = code_in(mail)
    # Until then the old address signs in, the new one does not.
    browser = stack.browser()
    assert REFUSED in page_text(await sign_in(browser, new))
    assert (await stack.http.get(f"/api/v1/staff/{person.staff_id}", headers=stack.admin)).json()[
        "pending_external_email_1"
    ] == new

    confirm = f"/api/v1/staff/{person.staff_id}/email-change/confirm"
    wrong = "000000" if code != "000000" else "111111"
    refused = await stack.http.post(confirm, json={"code": wrong}, headers=stack.admin)
    assert refused.status_code == 422, refused.text
    assert refused.json()["message"] == "Incorrect code, 4 attempts left"
    assert (await stack.http.post(confirm, json={"code": "12345"}, headers=stack.admin)).status_code == 422
    assert (await staff_row(stack, person.staff_id)).external_email_1 == person.email

    done = await stack.http.post(confirm, json={"code": code}, headers=stack.admin)
    assert done.status_code == 200, done.text
    assert (done.json()["external_email_1"], done.json()["pending_external_email_1"]) == (new, None)
    async with stack.sessions() as session:
        login = await session.scalar(
            select(SsoAccount.login_email).where(SsoAccount.staff_id == person.staff_id)
        )
    assert login == new
    (notice,) = await emails_with_subject(stack.sessions, stack.settings, person.email, CHANGED_SUBJECT)
    assert f"to {new[0]}***@example.org" in notice and new not in notice
    assert (await sign_in(stack.browser(), new)).status_code == 303
    assert REFUSED in page_text(await sign_in(stack.browser(), person.email))
    handle = stack.env.client.get_workflow_handle(email_change_workflow_id(str(person.staff_id)))
    assert await outcome(handle) == "changed"
    assert (await staff_row(stack, person.staff_id)).previous_external_email_1 is None
    trail = [(e.action, e.outcome) for e in await actions(stack, person.staff_id)]
    assert ("staff.email_change_requested", "success") in trail and (
        "staff.email_changed",
        "success",
    ) in trail
    assert (await stack.http.post(confirm, json={"code": code}, headers=stack.admin)).status_code == 409


async def test_a_change_whose_address_was_taken_meanwhile_is_dropped(stack: Stack) -> None:
    person = await stack.person()
    new = f"wanted.{uuid.uuid4().hex[:8]}@example.org"
    assert (await patch(stack, person.staff_id, external_email_1=new)).status_code == 200
    code = code_in((await emails_with_subject(stack.sessions, stack.settings, new, CODE_SUBJECT))[0])
    # Another person is added with the address while the code is on its way.
    async with stack.sessions() as session:
        session.add(
            Staff(first_name="Other", last_name="Person", external_email_1=new, org_id=DEFAULT_ORG_ID)
        )
        await session.commit()
    response = await stack.http.post(
        f"/api/v1/staff/{person.staff_id}/email-change/confirm", json={"code": code}, headers=stack.admin
    )
    assert response.status_code == 409, response.text
    row = await staff_row(stack, person.staff_id)
    assert (row.external_email_1, row.pending_external_email_1) == (person.email, None)


async def test_a_change_unconfirmed_for_a_day_is_dropped(stack: Stack) -> None:
    person = await stack.person()
    new = f"late.{uuid.uuid4().hex[:8]}@example.org"
    assert (await patch(stack, person.staff_id, external_email_1=new)).status_code == 200
    await emails_with_subject(stack.sessions, stack.settings, new, CODE_SUBJECT)
    handle = stack.env.client.get_workflow_handle(email_change_workflow_id(str(person.staff_id)))
    await stack.env.sleep(timedelta(days=1, minutes=1))
    assert await outcome(handle) == "expired"
    row = await staff_row(stack, person.staff_id)
    assert (row.external_email_1, row.pending_external_email_1) == (person.email, None)


async def test_a_leave_date_in_the_past_or_today_is_refused(stack: Stack) -> None:
    person = await stack.person()
    for day in (tomorrow(stack, 0), tomorrow(stack, -3)):
        response = await patch(stack, person.staff_id, leave_on=day.isoformat(), first_name="Changed")
        assert response.status_code == 422, response.text
        assert response.json()["message"].startswith("The leave date must be after today.")
    row = await staff_row(stack, person.staff_id)
    assert (row.leave_on, row.first_name) == (None, person.first_name)


async def test_the_leave_date_disables_the_person_at_the_start_of_that_day(stack: Stack) -> None:
    person = await stack.person()
    await signed_in_browser(stack, person.email)
    day = await days_ahead(stack, 2)
    response = await patch(stack, person.staff_id, leave_on=day.isoformat())
    assert response.status_code == 200, response.text
    assert response.json()["leave_on"] == day.isoformat()
    handle = stack.env.client.get_workflow_handle(leave_workflow_id(str(person.staff_id)))
    described = await handle.describe()
    assert described.status == WorkflowExecutionStatus.RUNNING
    start = datetime.combine(day, datetime.min.time(), tzinfo=stack.settings.zone).astimezone(UTC)
    await skip_to(stack, start - timedelta(minutes=1))
    assert (await staff_row(stack, person.staff_id)).disabled_at is None
    await skip_to(stack, start + timedelta(minutes=1))
    assert await outcome(handle) == "disabled"
    row = await staff_row(stack, person.staff_id)
    assert row.disabled_at is not None
    assert [row.revoked_at is not None for row in await session_rows(stack.sessions, person, "signin")] == [
        True
    ]
    disabled = [e for e in await actions(stack, person.staff_id) if e.action == "staff.disabled"]
    assert [e.actor for e in disabled] == ["system:leave-date"]


async def test_a_moved_leave_date_moves_the_timer_and_a_cleared_one_ends_it(stack: Stack) -> None:
    person = await stack.person()
    first, later = await days_ahead(stack, 1), await days_ahead(stack, 30)
    assert (await patch(stack, person.staff_id, leave_on=first.isoformat())).status_code == 200
    assert (await patch(stack, person.staff_id, leave_on=later.isoformat())).status_code == 200
    handle = stack.env.client.get_workflow_handle(leave_workflow_id(str(person.staff_id)))
    await stack.env.sleep(timedelta(days=3))  # past the first date
    assert (await staff_row(stack, person.staff_id)).disabled_at is None
    assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
    cleared = await patch(stack, person.staff_id, leave_on=None)
    assert cleared.status_code == 200 and cleared.json()["leave_on"] is None
    assert await outcome(handle) == "cleared"
    assert (await staff_row(stack, person.staff_id)).disabled_at is None
    trail = [e.details for e in await actions(stack, person.staff_id) if e.action == "staff.updated"]
    assert trail == [{"leave_on": first.isoformat()}, {"leave_on": later.isoformat()}, {"leave_on": None}]


async def test_a_leave_flow_whose_day_is_not_the_persons_disables_no_one(stack: Stack) -> None:
    """The activity checks the database first: a later day there (or none) means the flow is
    stale; a person who is gone is gone."""
    person = await stack.person()
    later = await days_ahead(stack, 20)
    async with stack.sessions() as session:
        row = await session.get(Staff, person.staff_id)
        assert row is not None
        row.leave_on = later
        await session.commit()
    steps = LifecycleActivities(stack.settings, stack.sessions)
    earlier = (later - timedelta(days=5)).isoformat()
    assert await steps.disable_leaver(LeaverInput(staff_id=str(person.staff_id), leave_on=earlier)) == "moved"
    assert await steps.disable_leaver(LeaverInput(staff_id=str(uuid.uuid4()), leave_on=earlier)) == "gone"
    assert (await staff_row(stack, person.staff_id)).disabled_at is None


async def test_a_suspended_organisations_leaver_is_still_disabled_on_the_leave_date(stack: Stack) -> None:
    """A suspension pauses sign-in, not the leave date: an operator may set one meanwhile, the
    person is disabled at its start, and resuming the organisation does not enable them."""
    org_id = await add_org(stack.sessions, "Harbour Lettings")
    person = await stack.person(org_id=org_id)
    suspended = await stack.http.post(f"/api/v1/orgs/{org_id}/suspend", headers=stack.admin)
    assert suspended.status_code == 200, suspended.text
    day = await days_ahead(stack, 2)
    response = await patch(stack, person.staff_id, leave_on=day.isoformat())
    assert response.status_code == 200, response.text
    handle = stack.env.client.get_workflow_handle(leave_workflow_id(str(person.staff_id)))
    start = datetime.combine(day, datetime.min.time(), tzinfo=stack.settings.zone).astimezone(UTC)
    await skip_to(stack, start + timedelta(minutes=1))
    assert await outcome(handle) == "disabled"
    resumed = await stack.http.post(f"/api/v1/orgs/{org_id}/resume", headers=stack.admin)
    assert resumed.status_code == 200, resumed.text
    assert (await staff_row(stack, person.staff_id)).disabled_at is not None
