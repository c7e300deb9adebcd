"""An organisation's suspension and erasure as durable flows, through the admin API, in-process
on SQLite and PostgreSQL with a real worker on a Temporal dev server, two people per chunk so
every organisation here spans several chunks: suspending ends every person's signed-in
sessions and cancels their open setup; a chunk that fails part-way is retried and the end is
the same; erasing answers 202, shows `erasing` and the people left, then 404, and leaves
nothing personal in the database or in the flows' histories."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import func, select
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

import activities.orgs
from api.services.org_suspension import BEING_ERASED
from core.errors import ServiceUnavailable
from core.models import AdminApiKey, AuditEvent, Organisation, Staff
from tests.support.accounts import session_rows
from tests.support.erasure import history_text, personal_rows
from tests.support.harness import Stack, running_stack
from tests.support.oidc import signed_in_browser
from tests.support.orgs import erased_away, org_flow_done
from tests.support.setup_pages import settle
from workflows.org_erasure import org_erase_workflow_id
from workflows.org_suspension import org_suspend_workflow_id

pytestmark = [pytest.mark.pages, pytest.mark.asyncio(loop_scope="session")]

CHUNK = 2


@pytest_asyncio.fixture(loop_scope="session")
async def stack(temporal_dev_env: WorkflowEnvironment, database_url: str) -> AsyncIterator[Stack]:
    async with running_stack(temporal_dev_env, database_url, org_flow_chunk_size=CHUNK) as running:
        yield running
        await settle(running)


async def new_org(stack: Stack) -> uuid.UUID:
    made = await stack.http.post(
        "/api/v1/orgs",
        json={"name": "Harbour Lettings", "slug": f"harbour-{uuid.uuid4().hex[:8]}"},
        headers=stack.admin,
    )
    assert made.status_code == 201, made.text
    return uuid.UUID(made.json()["id"])


async def with_open_setup(stack: Stack, org_id: uuid.UUID) -> dict[str, Any]:
    """A person of the organisation whose Single Sign-On email is out: their setup flow waits."""
    created = await stack.create_staff(org_id=str(org_id))
    sent = await stack.http.post(f"/api/v1/staff/{created['id']}/sso-email", headers=stack.admin)
    assert sent.status_code == 202, sent.text
    await stack.wait_for(created["id"], lambda s: s["state"] == "email_sent")
    return created


async def events(stack: Stack, org_id: uuid.UUID, action: str) -> list[AuditEvent]:
    async with stack.sessions() as session:
        found = await session.scalars(
            select(AuditEvent).where(AuditEvent.target == str(org_id), AuditEvent.action == action)
        )
        return list(found.all())


async def suspend_and_check(stack: Stack) -> None:
    """Three signed-in people and one with an open setup (two chunks): suspended, every
    session ends, the setup is cancelled, and the completion is audited with the counts."""
    org_id = await new_org(stack)
    people = [await stack.person(org_id=org_id, first_name=f"Sam{n}") for n in range(3)]
    browsers = [await signed_in_browser(stack, person.email) for person in people]
    for browser in browsers:
        assert (await browser.get("/sso/account")).status_code == 200
    pending = await with_open_setup(stack, org_id)

    answer = await stack.http.post(f"/api/v1/orgs/{org_id}/suspend", headers=stack.admin)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "suspended"
    done = await org_flow_done(stack.env.client, org_suspend_workflow_id(org_id))
    assert (done["people"], done["sessions_revoked"], done["flows_ended"]) == (4, 3, 1)

    for person in people:
        rows = await session_rows(stack.sessions, person, "signin")
        assert rows and all(row.revoked_at is not None for row in rows)
    status = await stack.status(pending["id"])
    assert status["state"] == "cancelled"
    setup = await stack.env.client.get_workflow_handle(f"sso-setup-{pending['id']}").describe()
    assert setup.status == WorkflowExecutionStatus.COMPLETED
    shown = await stack.http.get(f"/api/v1/orgs/{org_id}", headers=stack.admin)
    assert (shown.json()["status"], shown.json()["suspension"]) == ("suspended", "done")
    [completed] = await events(stack, org_id, "org.suspension_completed")
    assert completed.details == {
        "people": 4,
        "sessions_revoked": 3,
        "grants_revoked": 0,
        "flows_ended": 1,
    }
    assert len(await events(stack, org_id, "org.suspended")) == 1


async def test_suspending_ends_every_session_and_cancels_open_setups_chunk_by_chunk(stack: Stack) -> None:
    await suspend_and_check(stack)


async def test_a_chunk_that_fails_part_way_is_retried_and_ends_the_same(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Temporal fails once after a chunk's sessions were ended, while its people's flows are
    being ended (concurrently): asked again, every flow ends and each counts once. (The
    chunk's people done so far also ride its heartbeat, should the chunk itself be retried.)"""
    real = activities.orgs.end_open_flows
    failed: list[uuid.UUID] = []

    async def flaky(*args: Any, **kwargs: Any) -> int:
        if not failed:
            failed.append(args[2])
            raise ServiceUnavailable("Temporal did not answer")
        return await real(*args, **kwargs)

    monkeypatch.setattr(activities.orgs, "end_open_flows", flaky)
    await suspend_and_check(stack)
    assert len(failed) == 1


async def test_a_resumed_organisations_flow_stops_and_a_new_suspension_runs_again(stack: Stack) -> None:
    org_id = await new_org(stack)
    person = await stack.person(org_id=org_id)
    assert (await stack.http.post(f"/api/v1/orgs/{org_id}/suspend", headers=stack.admin)).status_code == 200
    await org_flow_done(stack.env.client, org_suspend_workflow_id(org_id))
    assert (await stack.http.post(f"/api/v1/orgs/{org_id}/resume", headers=stack.admin)).status_code == 200
    # Signed in again after the resume: a new suspension must end this session too.
    browser = await signed_in_browser(stack, person.email)
    again = await stack.http.post(f"/api/v1/orgs/{org_id}/suspend", headers=stack.admin)
    assert again.status_code == 200, again.text
    done = await org_flow_done(stack.env.client, org_suspend_workflow_id(org_id))
    assert done["sessions_revoked"] == 1
    assert (await browser.get("/sso/account")).status_code in (302, 303)
    assert len(await events(stack, org_id, "org.suspended")) == 2
    assert len(await events(stack, org_id, "org.suspension_completed")) == 2


async def test_erasing_an_organisation_larger_than_a_chunk_leaves_nothing_personal(stack: Stack) -> None:
    org_id = await new_org(stack)
    # Names no other test uses, so the scan finds only these people.
    mark = "".join(chr(ord("a") + int(c, 16)) for c in uuid.uuid4().hex[:6])
    first, last = f"Wilhelmina{mark}", f"Quarrendon{mark}"
    people = [await stack.person(org_id=org_id, first_name=f"{first}{n}", last_name=last) for n in range(4)]
    await signed_in_browser(stack, people[0].email)
    pending = await with_open_setup(stack, org_id)
    key = await stack.http.post(f"/api/v1/orgs/{org_id}/keys", json={"name": "harbour"}, headers=stack.admin)
    assert key.status_code == 201, key.text
    needles = [first, last, pending["external_email_1"]] + [p.email for p in people]
    assert await personal_rows(stack.sessions, needles)  # the scan sees them before

    active = await stack.http.delete(f"/api/v1/orgs/{org_id}", headers=stack.admin)
    assert active.status_code == 409
    assert (await stack.http.post(f"/api/v1/orgs/{org_id}/suspend", headers=stack.admin)).status_code == 200
    erasing = await stack.http.delete(f"/api/v1/orgs/{org_id}", headers=stack.admin)
    assert erasing.status_code == 202, erasing.text
    assert erasing.json()["status"] == "erasing"
    assert erasing.json()["workflow_id"] == org_erase_workflow_id(org_id)
    assert 0 <= erasing.json()["people_left"] <= 5
    # Erasing twice is the same erasure; suspending or resuming it is refused.
    twice = await stack.http.delete(f"/api/v1/orgs/{org_id}", headers=stack.admin)
    assert twice.status_code in (202, 404), twice.text
    if twice.status_code == 202:
        assert twice.json()["workflow_id"] == erasing.json()["workflow_id"]
        resumed = await stack.http.post(f"/api/v1/orgs/{org_id}/resume", headers=stack.admin)
        assert resumed.status_code in (409, 404)
        if resumed.status_code == 409:
            assert resumed.json()["message"] == BEING_ERASED

    seen = await erased_away(stack.http, stack.admin, org_id)
    assert all(answer["status"] == "erasing" and answer["people_left"] >= 0 for answer in seen)
    result = await org_flow_done(stack.env.client, org_erase_workflow_id(org_id))
    assert (result["people_erased"], result["keys_deleted"]) == (5, 1)
    assert (await stack.http.delete(f"/api/v1/orgs/{org_id}", headers=stack.admin)).status_code == 404

    assert await personal_rows(stack.sessions, needles) == []
    async with stack.sessions() as session:
        assert await session.get(Organisation, org_id) is None
        left = await session.scalar(select(func.count()).select_from(Staff).where(Staff.org_id == org_id))
        assert left == 0
        assert (await session.scalars(select(AdminApiKey).where(AdminApiKey.org_id == org_id))).all() == []
    [erased] = await events(stack, org_id, "org.erased")
    assert (erased.actor, erased.details["people_erased"]) == ("admin-key:test-admin", 5)
    assert len(await events(stack, org_id, "org.erasure_started")) == 1

    # The organisation's own flows carry ids and counts only.
    codec = stack.env.client.data_converter.payload_codec
    assert codec is not None
    for workflow_id in (org_suspend_workflow_id(org_id), org_erase_workflow_id(org_id)):
        runs = [r async for r in stack.env.client.list_workflows(f"WorkflowId = '{workflow_id}'")]
        assert runs
        for run in runs:
            history = await history_text(stack.env.client, codec, workflow_id, run.run_id or "")
            assert history is not None and str(org_id) in history
            assert [n for n in needles if n.lower() in history] == [], workflow_id
