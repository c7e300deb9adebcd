"""The in-process stack of the API and page tests: the web app on a migrated database and,
given a Temporal environment (time-skipping or dev server), a real worker beside it.

Tests that need no flow (sign-in, sessions, the admin account actions) run it without
Temporal: `running_app`. Everything else runs the same stack with a worker: `running_stack`.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import select
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from core.admin_keys import create_admin_key
from core.batches import batch_workflow_id
from core.codec import keyring_from_settings
from core.db import SessionFactory, create_engine, session_factory
from core.models import OutboxEmail, SsoSetup, Staff, StaffBatch
from core.settings import Settings
from core.temporal_client import TemporalGateway
from tests.support.accounts import ADMIN_KEY_NAME, PUBLIC_URL, Browser, Person, make_person
from tests.support.config import make_settings
from worker import build_worker
from workflows.email_change import email_change_workflow_id
from workflows.leave import leave_workflow_id
from workflows.mfa_enrollment import enrollment_workflow_id

LINK = re.compile(r"https://sso\.example\.test/sso/setup/([A-Za-z0-9_-]+)")
# A Host other than SSO_PUBLIC_URL for the flow tests' admin client: links must still be
# built from the setting.
OTHER_HOST = "http://attacker.example"


@dataclass
class Stack:
    transport: httpx.AsyncBaseTransport
    http: httpx.AsyncClient  # for the admin API
    admin: dict[str, str]
    settings: Settings
    sessions: SessionFactory
    temporal: WorkflowEnvironment | None = None  # None: no worker, no flows

    @property
    def env(self) -> WorkflowEnvironment:
        """The Temporal server the worker and the web app use."""
        assert self.temporal is not None, "this stack runs without Temporal (running_app)"
        return self.temporal

    def browser(self, base_url: str = PUBLIC_URL) -> Browser:
        return Browser(self.transport, base_url)

    async def person(self, **options: Any) -> Person:
        return await make_person(self.sessions, self.settings, **options)

    async def create_staff(self, email: str | None = None, **extra: str) -> dict[str, Any]:
        body = {
            "first_name": "Jo",
            "last_name": "Bloggs",
            "external_email_1": email or f"jo.{uuid.uuid4().hex[:8]}@example.com",
            **extra,
        }
        response = await self.http.post("/api/v1/staff", json=body, headers=self.admin)
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    async def status(self, who: str | uuid.UUID | Person) -> dict[str, Any]:
        """The admin API's setup status of a staff member (by id, or the person)."""
        staff_id = who.staff_id if isinstance(who, Person) else who
        response = await self.http.get(f"/api/v1/staff/{staff_id}/sso", headers=self.admin)
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    async def wait_for(
        self, staff_id: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 20
    ) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                status = await self.status(staff_id)
                if predicate(status):
                    return status
                await asyncio.sleep(0.05)

    async def links_sent_to(self, address: str) -> list[str]:
        keyring = keyring_from_settings(self.settings)
        async with self.sessions() as session:
            rows = (
                await session.scalars(
                    select(OutboxEmail)
                    .where(OutboxEmail.to_address == address)
                    .order_by(OutboxEmail.created_at)
                )
            ).all()
        links = []
        for row in rows:
            match = LINK.search(keyring.unseal(row.body_encrypted, b"outbox").decode())
            assert match, "an email to this address without a setup link"
            links.append(match.group(1))
        return links


@asynccontextmanager
async def _running(
    database_url: str,
    env: WorkflowEnvironment | None,
    worker_client: Client | None,
    base_url: str,
    overrides: dict[str, Any],
) -> AsyncIterator[Stack]:
    if env is not None:
        overrides = {"task_queue": f"tq-{uuid.uuid4()}", **overrides}
    settings = make_settings(database_url=database_url, **overrides)
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    try:
        async with sessions() as session:
            key = await create_admin_key(session, settings, ADMIN_KEY_NAME)
            await session.commit()
        gateway = TemporalGateway(settings, env.client) if env is not None else None
        app = create_app(settings, gateway) if gateway is not None else create_app(settings)
        async with AsyncExitStack() as running:
            await running.enter_async_context(app.router.lifespan_context(app))
            if env is not None:
                await running.enter_async_context(build_worker(worker_client or env.client, settings))
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url=base_url) as http:
                yield Stack(transport, http, {"Authorization": f"Bearer {key}"}, settings, sessions, env)
            if env is not None:
                await _terminate_leftovers(env, sessions)
    finally:
        await engine.dispose()


@asynccontextmanager
async def running_stack(
    env: WorkflowEnvironment,
    database_url: str,
    /,
    worker_client: Client | None = None,
    **overrides: Any,
) -> AsyncIterator[Stack]:
    """The web app and a worker with the real activities on a task queue of their own; the
    worker polls through `worker_client` when given (e.g. one whose runtime serves metrics)."""
    async with _running(database_url, env, worker_client, OTHER_HOST, overrides) as stack:
        yield stack


@asynccontextmanager
async def running_app(database_url: str, **overrides: Any) -> AsyncIterator[Stack]:
    """The web app with its lifespan (hashing, counters) but no Temporal worker: sign-in,
    sessions and the admin account actions need none."""
    async with _running(database_url, None, None, PUBLIC_URL, overrides) as stack:
        yield stack


async def long_lived_flow_ids(sessions: SessionFactory) -> set[str]:
    """The flows of this database's people that wait on long timers: setups, staff batches
    (paced, or waiting for the email budget), the MFA obligations of those who skipped MFA,
    leave dates and changes of email address (whether or not one was started)."""
    async with sessions() as session:
        workflow_ids = set((await session.scalars(select(SsoSetup.workflow_id))).all())
        batch_ids = (await session.scalars(select(StaffBatch.id))).all()
        staff_ids = (await session.scalars(select(Staff.id))).all()
    per_person = (enrollment_workflow_id, leave_workflow_id, email_change_workflow_id)
    return (
        workflow_ids
        | {batch_workflow_id(str(batch_id)) for batch_id in batch_ids}
        | {flow_id(str(staff_id)) for staff_id in staff_ids for flow_id in per_person}
    )


async def _terminate_leftovers(env: WorkflowEnvironment, sessions: SessionFactory) -> None:
    """Flows still waiting on their link would wake with no worker when a later test skips
    time, and a workflow task nobody picks up stops the test server from skipping further."""
    for workflow_id in await long_lived_flow_ids(sessions):
        handle = env.client.get_workflow_handle(workflow_id)
        try:
            running = (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            continue
        if running:
            await handle.terminate("test finished")
