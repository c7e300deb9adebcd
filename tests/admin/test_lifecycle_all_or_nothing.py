"""An edit of a person is all or nothing (PATCH /api/v1/staff/{id} and the admin's Edit page),
on SQLite and PostgreSQL with a real worker on the time-skipping server: with Temporal
unreachable, or lost between two of the edit's flows, the answer is "try again in a minute"
and nothing changed (names, pending address, leave date, audit trail); a flow that started
before the loss changes nothing either, and a leave flow moved before a failed commit is put
back to the day the database kept."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from core.db import UnitOfWork
from core.models import AuditEvent, OutboxEmail, Staff
from core.temporal_client import TemporalGateway
from tests.support.accounts import GUARD_SECONDS, hidden_fields, page_text
from tests.support.config import time_skipping_server
from tests.support.harness import Stack
from tests.support.oidc import signed_in_admin
from workflows.email_change import email_change_workflow_id
from workflows.leave import leave_workflow_id

pytestmark = [pytest.mark.pages, pytest.mark.asyncio(loop_scope="session")]

UNAVAILABLE = "We can't complete this right now, please try again in a minute"


@pytest_asyncio.fixture(loop_scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server per test, as in test_lifecycle.py: one test skips to a leave day."""
    async with time_skipping_server() as env:
        yield env


def app_temporal(stack: Stack) -> Any:
    return stack.transport.app.state  # type: ignore[attr-defined]


def temporal_unreachable(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """The web app's Temporal is a port nothing listens on (the worker keeps its own)."""
    settings = stack.settings.model_copy(update={"temporal_address": "127.0.0.1:1"})
    monkeypatch.setattr(app_temporal(stack), "temporal", TemporalGateway(settings))


class LeaveLost:
    """The web app's client, but Temporal goes away after the email change's flow started:
    the leave flow's start fails as an unreachable server's does."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def start_workflow(self, *args: Any, id: str, **kwargs: Any) -> WorkflowHandle[Any, Any]:
        if id.startswith("staff-leave-"):
            raise RPCError("connection refused", RPCStatusCode.UNAVAILABLE, b"")
        return await self._client.start_workflow(*args, id=id, **kwargs)


class LeaveLostGateway(TemporalGateway):
    async def client(self, connect_timeout: float = 5.0) -> Client:
        return LeaveLost(await super().client(connect_timeout))  # type: ignore[return-value]


async def patch(stack: Stack, staff_id: object, **body: object) -> httpx.Response:
    return await stack.http.patch(f"/api/v1/staff/{staff_id}", json=body, headers=stack.admin)


NEW_ADDRESSES = ("robyn@example.com", "leigh@example.com", "first@example.com", "second@example.com")


async def db_state(stack: Stack, staff_id: uuid.UUID) -> dict[str, Any]:
    """Everything an edit could change: the row, the person's audit trail, the emails to them."""
    async with stack.sessions() as session:
        row = await session.get(Staff, staff_id)
        assert row is not None
        events = (
            await session.scalars(
                select(AuditEvent.action)
                .where(AuditEvent.target == str(staff_id))
                .order_by(AuditEvent.occurred_at, AuditEvent.id)
            )
        ).all()
        emails = await session.scalar(
            select(func.count())
            .select_from(OutboxEmail)
            .where(OutboxEmail.to_address.in_([row.external_email_1, *NEW_ADDRESSES]))
        )
    return {
        "names": (row.first_name, row.last_name),
        "email": row.external_email_1,
        "pending": row.pending_external_email_1,
        "leave_on": row.leave_on,
        "updated_at": row.updated_at,
        "audit": list(events),
        "emails": emails,
    }


async def flow_status(stack: Stack, workflow_id: str) -> WorkflowExecutionStatus | None:
    try:
        return (await stack.env.client.get_workflow_handle(workflow_id).describe()).status
    except RPCError as exc:
        assert exc.status == RPCStatusCode.NOT_FOUND, exc
        return None


async def finished(handle: WorkflowHandle[Any, Any]) -> Any:
    async with asyncio.timeout(GUARD_SECONDS):
        while (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
            await asyncio.sleep(0.05)
    return await handle.result()


async def days_ahead(stack: Stack, days: int) -> date:
    server = await stack.env.get_current_time()
    today = datetime.now(stack.settings.zone).date()
    return max(server.astimezone(stack.settings.zone).date(), today) + timedelta(days=days)


async def emails_to(stack: Stack, address: str, count: int) -> int:
    """How many emails went to `address`, once there are at least `count`."""
    async with asyncio.timeout(GUARD_SECONDS):
        while True:
            async with stack.sessions() as session:
                sent = await session.scalar(
                    select(func.count()).select_from(OutboxEmail).where(OutboxEmail.to_address == address)
                )
            if (sent or 0) >= count:
                return sent or 0
            await asyncio.sleep(0.05)


async def audited(stack: Stack, staff_id: uuid.UUID, action: str, count: int) -> None:
    """Once the person's trail holds `count` events `action`: a code's email is in the outbox
    a moment before the code's audit event is."""
    async with asyncio.timeout(GUARD_SECONDS):
        while (await db_state(stack, staff_id))["audit"].count(action) < count:
            await asyncio.sleep(0.05)


async def set_leave(stack: Stack, staff_id: uuid.UUID, day: date) -> None:
    response = await patch(stack, staff_id, leave_on=day.isoformat())
    assert response.status_code == 200, response.text


def refused_as_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["message"] == UNAVAILABLE


async def test_names_and_a_new_address_with_temporal_unreachable_change_nothing(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    person = await stack.person(first_name="Robin", last_name="Ashcombe")
    before = await db_state(stack, person.staff_id)
    temporal_unreachable(stack, monkeypatch)
    response = await patch(
        stack, person.staff_id, first_name="Robyn", last_name="Ash", external_email_1="robyn@example.com"
    )
    refused_as_unavailable(response)
    assert await db_state(stack, person.staff_id) == before
    assert await flow_status(stack, email_change_workflow_id(str(person.staff_id))) is None


async def test_names_and_a_leave_date_with_temporal_unreachable_change_nothing(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    person = await stack.person()
    before = await db_state(stack, person.staff_id)
    temporal_unreachable(stack, monkeypatch)
    response = await patch(
        stack, person.staff_id, first_name="Changed", leave_on=(await days_ahead(stack, 10)).isoformat()
    )
    refused_as_unavailable(response)
    assert await db_state(stack, person.staff_id) == before
    assert await flow_status(stack, leave_workflow_id(str(person.staff_id))) is None


async def test_clearing_a_leave_date_with_temporal_unreachable_keeps_the_date_and_its_timer(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    person = await stack.person()
    day = await days_ahead(stack, 10)
    await set_leave(stack, person.staff_id, day)
    before = await db_state(stack, person.staff_id)
    assert before["leave_on"] == day
    temporal_unreachable(stack, monkeypatch)
    refused_as_unavailable(await patch(stack, person.staff_id, first_name="Changed", leave_on=None))
    assert await db_state(stack, person.staff_id) == before
    leave = leave_workflow_id(str(person.staff_id))
    assert await flow_status(stack, leave) == WorkflowExecutionStatus.RUNNING


async def test_temporal_lost_after_the_email_change_started_changes_nothing_and_its_flow_ends_harmless(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The email change's flow started, then the leave flow could not: the answer is 503 with
    nothing changed, and the started flow reads no waiting address: it emails no one."""
    person = await stack.person(first_name="Robin")
    before = await db_state(stack, person.staff_id)
    gateway = LeaveLostGateway(stack.settings, await app_temporal(stack).temporal.client())
    monkeypatch.setattr(app_temporal(stack), "temporal", gateway)
    response = await patch(
        stack,
        person.staff_id,
        first_name="Robyn",
        external_email_1="robyn@example.com",
        leave_on=(await days_ahead(stack, 10)).isoformat(),
    )
    refused_as_unavailable(response)
    change = stack.env.client.get_workflow_handle(email_change_workflow_id(str(person.staff_id)))
    assert await finished(change) == "failed"
    assert await db_state(stack, person.staff_id) == before
    assert await flow_status(stack, leave_workflow_id(str(person.staff_id))) is None


async def test_a_change_waiting_when_a_new_one_is_lost_gets_a_new_code_from_the_new_flow(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change already waits when a second one is lost after its flow replaced the first
    flow: the database still holds the first address, and the new flow carries that change
    on (a fresh code to the first address), never the lost one's."""
    person = await stack.person()
    assert (await patch(stack, person.staff_id, external_email_1="first@example.com")).status_code == 200
    await emails_to(stack, "first@example.com", 1)
    await audited(stack, person.staff_id, "code.issued", 1)
    before = await db_state(stack, person.staff_id)
    gateway = LeaveLostGateway(stack.settings, await app_temporal(stack).temporal.client())
    monkeypatch.setattr(app_temporal(stack), "temporal", gateway)
    response = await patch(
        stack,
        person.staff_id,
        external_email_1="second@example.com",
        leave_on=(await days_ahead(stack, 10)).isoformat(),
    )
    refused_as_unavailable(response)
    assert (await db_state(stack, person.staff_id))["pending"] == "first@example.com"
    await emails_to(stack, "first@example.com", 2)
    await audited(stack, person.staff_id, "code.issued", 2)
    assert await emails_to(stack, "second@example.com", 0) == 0
    after = await db_state(stack, person.staff_id)
    assert {k: v for k, v in after.items() if k not in ("audit", "emails")} == {
        k: v for k, v in before.items() if k not in ("audit", "emails")
    }
    # The only new event is the first address's new code; nothing of the lost change.
    assert after["audit"][len(before["audit"]) :] == ["code.issued"]


async def test_the_email_change_flow_reads_the_new_address_only_once_it_is_committed(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flow starts before the edit commits; a slow commit must not make its first step
    find no change waiting (it reads the address under the lock the edit holds)."""
    person = await stack.person()
    real = UnitOfWork.commit_now

    async def slow_with_the_edit(self: UnitOfWork) -> None:
        if any(isinstance(row, Staff) for row in self.session.dirty):
            await asyncio.sleep(1.0)  # the flow's first step is scheduled meanwhile
        await real(self)

    monkeypatch.setattr(UnitOfWork, "commit_now", slow_with_the_edit)
    response = await patch(stack, person.staff_id, external_email_1="robyn@example.com")
    assert response.status_code == 200, response.text
    assert await emails_to(stack, "robyn@example.com", 1) == 1
    change = stack.env.client.get_workflow_handle(email_change_workflow_id(str(person.staff_id)))
    assert (await change.describe()).status == WorkflowExecutionStatus.RUNNING
    assert (await db_state(stack, person.staff_id))["pending"] == "robyn@example.com"


async def test_a_failed_commit_puts_the_leave_flow_back_on_the_day_the_database_kept(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    person = await stack.person()
    first, later = await days_ahead(stack, 2), await days_ahead(stack, 30)
    await set_leave(stack, person.staff_id, first)
    before = await db_state(stack, person.staff_id)
    real = UnitOfWork.commit_now
    failed: list[bool] = []

    async def fails_with_the_edit(self: UnitOfWork) -> None:
        """The commit of the edit (a person's row changed) is lost; the admin key's is not."""
        if not any(isinstance(row, Staff) for row in self.session.dirty):
            return await real(self)
        monkeypatch.setattr(UnitOfWork, "commit_now", real)
        failed.append(True)
        raise OperationalError("COMMIT", {}, ConnectionError("server closed the connection"))

    monkeypatch.setattr(UnitOfWork, "commit_now", fails_with_the_edit)
    response = await patch(stack, person.staff_id, first_name="Changed", leave_on=later.isoformat())
    assert failed and response.status_code == 503, response.text
    assert await db_state(stack, person.staff_id) == before
    # The flow was moved to the later day, then back: the person still leaves on the first.
    start = datetime.combine(first, datetime.min.time(), tzinfo=stack.settings.zone).astimezone(UTC)
    await stack.env.sleep(start + timedelta(minutes=1) - await stack.env.get_current_time())
    handle = stack.env.client.get_workflow_handle(leave_workflow_id(str(person.staff_id)))
    assert await finished(handle) == "disabled"


@pytest.mark.parametrize("change", ["email", "leave", "clear"])
async def test_the_edit_page_with_temporal_unreachable_says_so_and_changes_nothing(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    _, browser = await signed_in_admin(stack)
    person = await stack.person(first_name="Lee", last_name="Stayer")
    sid = person.staff_id
    if change == "clear":
        await set_leave(stack, sid, await days_ahead(stack, 10))
    before = await db_state(stack, sid)
    form = await browser.get(f"/admin/staff/{sid}/edit")
    fields = {
        **hidden_fields(form, f"/admin/staff/{sid}/edit"),
        "first_name": "Leigh",
        "last_name": "Stayer",
        "external_email_1": "leigh@example.com" if change == "email" else person.email,
        "leave_on": (await days_ahead(stack, 40)).isoformat() if change == "leave" else "",
    }
    temporal_unreachable(stack, monkeypatch)
    page = await browser.post(f"/admin/staff/{sid}/edit", fields)
    assert page.status_code == 503
    assert UNAVAILABLE in page_text(page)
    assert 'value="Leigh"' in page.text  # the admin's entries stay, to press again
    assert await db_state(stack, sid) == before
