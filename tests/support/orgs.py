"""Organisations for tests that need more than the default one, written straight to the
database (the organisations API has its own tests)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
from temporalio.client import Client

from core.db import SessionFactory
from core.models import Organisation


async def add_org(sessions: SessionFactory, name: str, sender_name: str | None = None) -> uuid.UUID:
    """A new active organisation named `name` (its slug made unique), and its id."""
    org = Organisation(
        id=uuid.uuid4(),
        name=name,
        slug=f"{name.lower().replace(' ', '-')[:40]}-{uuid.uuid4().hex[:8]}",
        sender_name=sender_name,
    )
    async with sessions() as session:
        session.add(org)
        await session.commit()
    return org.id


async def org_flow_done(client: Client, workflow_id: str, guard_seconds: float = 60) -> Any:
    """The result of an organisation's suspension or erasure flow, once it has finished (a
    real-time guard against a hang, never an assertion about how long it took)."""
    return await asyncio.wait_for(client.get_workflow_handle(workflow_id).result(), guard_seconds)


async def erased_away(
    http: httpx.AsyncClient, headers: dict[str, str], org_id: object
) -> list[dict[str, Any]]:
    """Polls GET /api/v1/orgs/{id} as a caller of the API would, until it answers 404; the
    answers seen on the way (each `erasing`, with the people left)."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(120):  # a guard against a hang only
        while True:
            answer = await http.get(f"/api/v1/orgs/{org_id}", headers=headers)
            if answer.status_code == 404:
                return seen
            assert answer.status_code == 200, answer.text
            seen.append(answer.json())
            await asyncio.sleep(0.2)
