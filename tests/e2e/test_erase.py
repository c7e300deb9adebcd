"""End to end: erasing a person on the shared real stack (`sso dev`: web app, worker, Temporal
dev server, SMTP). The person was sent a Single Sign-On email, has a new address waiting for
its code and a leave date; after `DELETE /api/v1/staff/{id}` no table of the stack's database
holds their name or either address, and each of their flows is deleted or, until Temporal
gets to it, holds none of them in its decoded history."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

import httpx
import pytest
from temporalio.client import Client

from core.codec import EncryptionCodec, keyring_from_settings
from core.crypto import mask_email
from tests.support.config import make_settings
from tests.support.e2e import World, eventually, send_email, stack_database, wait_for_email
from tests.support.erasure import history_text, personal_rows
from tests.support.stack import DevStack
from workflows.email_change import email_change_workflow_id
from workflows.leave import leave_workflow_id

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


async def test_an_erased_person_leaves_nothing_personal_in_the_database_or_the_histories(
    stack: DevStack, api: httpx.AsyncClient, world: World, temporal: Client
) -> None:
    tag = uuid.uuid4().hex[:8]
    first, last = "Zephyrine", f"Oakhurst{tag}"
    address, new = f"zephyrine.{tag}@example.com", f"zeph.moved.{tag}@example.org"
    world.emails_used.update({address, new})
    created = await api.post(
        "/api/v1/staff", json={"first_name": first, "last_name": last, "external_email_1": address}
    )
    assert created.status_code == 201, created.text
    staff_id = created.json()["id"]
    await send_email(api, world, staff_id)
    await wait_for_email(world, address)
    leave = (date.today() + timedelta(days=30)).isoformat()
    changed = await api.patch(f"/api/v1/staff/{staff_id}", json={"external_email_1": new, "leave_on": leave})
    assert changed.status_code == 200, changed.text
    await wait_for_email(world, new)
    needles = [first, last, address, new, mask_email(address), mask_email(new)]

    async def their_runs() -> list[tuple[str, str]] | None:
        found = [
            (wf.id, wf.run_id or "") async for wf in temporal.list_workflows(f"SsoStaffId = '{staff_id}'")
        ]
        ids = {workflow_id for workflow_id, _run in found}
        wanted = {f"sso-setup-{staff_id}", email_change_workflow_id(staff_id), leave_workflow_id(staff_id)}
        return found if wanted <= ids else None

    runs = await eventually(their_runs, 30, interval=0.5, what="the person's flows in visibility")
    async with stack_database(stack) as sessions:
        assert await personal_rows(sessions, needles)

        erased = await api.delete(f"/api/v1/staff/{staff_id}")
        assert erased.status_code == 200, erased.text
        assert (await api.get(f"/api/v1/staff/{staff_id}")).status_code == 404
        assert await personal_rows(sessions, needles) == []

    codec = EncryptionCodec(keyring_from_settings(make_settings()))
    for run in runs:
        history = await history_text(temporal, codec, *run)
        assert history is None or [n for n in needles if n.lower() in history] == [], run
