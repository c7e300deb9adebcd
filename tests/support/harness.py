"""The in-process stack of the API and page tests: the app, a real worker and the
time-skipping (or dev) Temporal server, on a migrated database."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import select
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from core.admin_keys import create_admin_key
from core.codec import keyring_from_settings
from core.db import create_engine, session_factory
from core.models import OutboxEmail, SsoSetup
from core.settings import Settings
from core.temporal_client import TemporalGateway
from tests.support.config import make_settings
from worker import build_worker

LINK = re.compile(r"https://sso\.example\.test/sso/setup/([A-Za-z0-9_-]+)")


@dataclass
class Stack:
    http: httpx.AsyncClient
    admin: dict[str, str]
    settings: Settings
    env: WorkflowEnvironment
    sessions: Any

    async def create_staff(self, email: str | None = None, **extra: str) -> dict[str, Any]:
        body = {
            "first_name": "Jo",
            "last_name": "Bloggs",
            "external_email_1": email or f"jo.{uuid.uuid4().hex[:8]}@example.com",
            **extra,
        }
        response = await self.http.post("/api/v1/staff", json=body, headers=self.admin)
        assert response.status_code == 201, response.text
        return response.json()

    async def status(self, staff_id: str) -> dict[str, Any]:
        response = await self.http.get(f"/api/v1/staff/{staff_id}/sso", headers=self.admin)
        assert response.status_code == 200, response.text
        return response.json()

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
        return [LINK.search(keyring.unseal(r.body_encrypted, b"outbox").decode()).group(1) for r in rows]


@asynccontextmanager
async def running_stack(
    env: WorkflowEnvironment,
    database_url: str,
    /,
    worker_client: Client | None = None,
    **overrides: Any,
) -> AsyncIterator[Stack]:
    """The web app and a worker with the real activities; the worker polls through
    `worker_client` when given (e.g. one whose runtime serves metrics)."""
    settings = make_settings(database_url=database_url, task_queue=f"tq-{uuid.uuid4()}", **overrides)
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    async with sessions() as session:
        key = await create_admin_key(session, settings, "test-admin")
        await session.commit()
    app = create_app(settings, TemporalGateway(settings, env.client))
    worker = build_worker(worker_client or env.client, settings)
    async with app.router.lifespan_context(app), worker:
        transport = httpx.ASGITransport(app=app)
        # A Host other than SSO_PUBLIC_URL: links must still be built from the setting.
        async with httpx.AsyncClient(transport=transport, base_url="http://attacker.example") as http:
            yield Stack(
                http=http,
                admin={"Authorization": f"Bearer {key}"},
                settings=settings,
                env=env,
                sessions=sessions,
            )
        await _terminate_leftovers(env, sessions)
    await engine.dispose()


async def _terminate_leftovers(env: WorkflowEnvironment, sessions: Any) -> None:
    """Flows still waiting on their link would wake with no worker when a later test skips
    time, and a workflow task nobody picks up stops the test server from skipping further."""
    async with sessions() as session:
        workflow_ids = set((await session.scalars(select(SsoSetup.workflow_id))).all())
    for workflow_id in workflow_ids:
        handle = env.client.get_workflow_handle(workflow_id)
        if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
            await handle.terminate("test finished")
