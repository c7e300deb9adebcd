"""Organisations meet bulk work, in-process with a real worker on the time-skipping server, on
SQLite and PostgreSQL: a batch is one organisation's (another's key sees it as unknown, and
its people are refused as unknown ids); a batch's flow sends only to its organisation's
people; a CSV import creates people in the key's organisation and refuses another's address
without naming it; every email counts against the person's organisation's hourly budget (one a
person asked for still goes out, a bulk send waits); an operator erases a suspended
organisation."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import func, select
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.inputs import BatchChunkInput
from activities.staff_batch import StaffBatchActivities
from api.services.org_erasure import NOT_SUSPENDED
from core import email_budget
from core.models import (
    AdminApiKey,
    AuditEvent,
    Organisation,
    OrganisationTenant,
    Staff,
    StaffBatch,
    StaffBatchItem,
    utcnow,
)
from tests.support.admin_pages import make_org
from tests.support.harness import Stack, running_stack
from tests.support.orgs import erased_away, org_flow_done

pytestmark = [pytest.mark.pages, pytest.mark.asyncio(loop_scope="session")]

CSV = {"Content-Type": "text/csv"}
HEADER = "first_name,last_name,external_email_1\r\n"
GUARD_SECONDS = 60
BUDGET = 3
TENANT = "5b7c3a9e-1d2f-4e6a-8b9c-0d1e2f3a4b5c"


@pytest_asyncio.fixture(loop_scope="session")
async def stack(temporal_env: WorkflowEnvironment, database_url: str) -> AsyncIterator[Stack]:
    """Batches as fast as they can go, within a small hourly email budget."""
    async with running_stack(
        temporal_env, database_url, batch_send_rate=60_000, org_email_budget=BUDGET
    ) as running:
        yield running


async def person_of(stack: Stack, key: dict[str, str], first_name: str = "Jo") -> dict[str, Any]:
    body = {
        "first_name": first_name,
        "last_name": "Bloggs",
        "external_email_1": f"{first_name.lower()}.{uuid.uuid4().hex[:8]}@example.com",
    }
    created = await stack.http.post("/api/v1/staff", json=body, headers=key)
    assert created.status_code == 201, created.text
    return created.json()  # type: ignore[no-any-return]


async def batch_until(stack: Stack, batch_id: str, state: str) -> dict[str, Any]:
    async with asyncio.timeout(GUARD_SECONDS):
        while True:
            response = await stack.http.get(f"/api/v1/staff/batches/{batch_id}", headers=stack.admin)
            assert response.status_code == 200, response.text
            if response.json()["state"] == state:
                return response.json()  # type: ignore[no-any-return]
            await asyncio.sleep(0.1)


async def start_batch(stack: Stack, key: dict[str, str], *staff_ids: str) -> httpx.Response:
    return await stack.http.post(
        "/api/v1/staff/batches", json={"staff_ids": list(staff_ids), "action": "send_email"}, headers=key
    )


async def used(stack: Stack, org_id: str) -> int:
    async with stack.sessions() as session:
        return await email_budget.used(session, email_budget.org_budget_key(uuid.UUID(org_id)), utcnow())


async def test_a_batch_is_its_organisations_and_refuses_another_organisations_people(stack: Stack) -> None:
    org_a, key_a = await make_org(stack, "alpha")
    org_b, key_b = await make_org(stack, "bravo")
    ann, bea = await person_of(stack, key_a, "Ann"), await person_of(stack, key_b, "Bea")

    # B's person, in A's batch: exactly as an id that exists nowhere; nothing started.
    theirs = await start_batch(stack, key_a, ann["id"], bea["id"])
    nowhere_id = str(uuid.uuid4())
    nowhere = await start_batch(stack, key_a, ann["id"], nowhere_id)
    assert theirs.status_code == nowhere.status_code == 404
    assert theirs.json()["message"] == f"No staff member with id {bea['id']}"
    assert nowhere.json()["message"] == f"No staff member with id {nowhere_id}"
    async with stack.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(StaffBatch)) == 0

    # An operator's batch is one organisation's too.
    mixed = await start_batch(stack, stack.admin, ann["id"], bea["id"])
    assert mixed.status_code == 422
    assert "staff_ids" in mixed.json()["message"]

    started = await start_batch(stack, key_a, ann["id"])
    assert started.status_code == 202, started.text
    batch_id = started.json()["id"]
    async with stack.sessions() as session:
        batch = await session.get(StaffBatch, uuid.UUID(batch_id))
        assert batch is not None and str(batch.org_id) == org_a
    assert (await batch_until(stack, batch_id, "done"))["sent"] == 1
    assert (await stack.http.get(f"/api/v1/staff/batches/{batch_id}", headers=key_a)).status_code == 200
    for method, path in (("GET", ""), ("POST", "/pause"), ("POST", "/cancel")):
        seen_by_b = await stack.http.request(method, f"/api/v1/staff/batches/{batch_id}{path}", headers=key_b)
        unknown = await stack.http.request(
            method, f"/api/v1/staff/batches/{uuid.uuid4()}{path}", headers=key_b
        )
        assert seen_by_b.status_code == unknown.status_code == 404
        assert seen_by_b.json() == unknown.json()
    assert org_b != org_a


async def test_a_batch_sends_only_to_its_organisations_people(stack: Stack) -> None:
    """An item of another organisation's person (one moved since the batch began) fails as
    an unknown person; the batch's own people are sent to."""
    org_a, key_a = await make_org(stack, "alpha")
    _org_b, key_b = await make_org(stack, "bravo")
    ann, bea = await person_of(stack, key_a, "Ann"), await person_of(stack, key_b, "Bea")
    batch = StaffBatch(
        org_id=uuid.UUID(org_a), action="send_email", state="running", requested_by="t", total=2
    )
    async with stack.sessions() as session:
        session.add(batch)
        await session.flush()
        for n, person in enumerate((ann, bea)):
            session.add(
                StaffBatchItem(
                    batch_id=batch.id, staff_id=uuid.UUID(person["id"]), position=n, status="pending"
                )
            )
        await session.commit()
    activities = StaffBatchActivities(stack.settings, stack.sessions, stack.env.client)
    counts = await ActivityEnvironment().run(
        activities.send_batch_chunk, BatchChunkInput(batch_id=str(batch.id), limit=10)
    )
    assert (counts.sent, counts.failed, counts.left) == (1, 1, 0)
    async with stack.sessions() as session:
        failed = await session.scalar(
            select(StaffBatchItem).where(
                StaffBatchItem.batch_id == batch.id, StaffBatchItem.status == "failed"
            )
        )
    assert failed is not None and str(failed.staff_id) == bea["id"]
    assert failed.error == "No staff member with that id"
    assert (await stack.status(bea["id"]))["state"] == "not_started"
    await stack.wait_for(ann["id"], lambda s: s["state"] == "email_sent")


async def post_csv(stack: Stack, key: dict[str, str], rows: list[str], **params: str) -> httpx.Response:
    return await stack.http.post(
        "/api/v1/staff/imports",
        content=(HEADER + "".join(f"{row}\r\n" for row in rows)).encode(),
        params=params,
        headers={**key, **CSV},
    )


async def test_an_import_creates_people_in_the_keys_organisation(stack: Stack) -> None:
    org_a, key_a = await make_org(stack, "alpha")
    org_b, key_b = await make_org(stack, "bravo")
    bea = await person_of(stack, key_b, "Bea")
    new = f"new.{uuid.uuid4().hex[:8]}@example.com"
    rows = [f"New,Person,{new}", f"Copy,Cat,{bea['external_email_1']}"]

    preview = await post_csv(stack, key_a, rows, dry_run="true")
    assert preview.status_code == 200, preview.text
    assert preview.json()["errors"] == [
        {
            "row": 3,
            "column": "external_email_1",
            "error": "This address can't be added; contact agentOS support",
        }
    ]
    imported = await post_csv(stack, key_a, rows)
    assert imported.status_code == 201, imported.text
    assert [p["org_id"] for p in imported.json()["created"]] == [org_a]
    assert imported.json()["skipped"] == preview.json()["errors"]

    # The operator names the organisation (there are several), and learns which one holds it.
    unnamed = await post_csv(stack, stack.admin, [f"Op,Erator,op.{uuid.uuid4().hex[:8]}@example.com"])
    assert unnamed.status_code == 422
    assert "org_id" in unnamed.json()["message"]
    into_b = await post_csv(
        stack, stack.admin, [f"Op,Erator,op.{uuid.uuid4().hex[:8]}@example.com", f"X,Y,{new}"], org_id=org_b
    )
    assert into_b.status_code == 201, into_b.text
    assert [p["org_id"] for p in into_b.json()["created"]] == [org_b]
    assert into_b.json()["skipped"][0]["error"].endswith("in the organisation alpha")
    # An organisation's key naming another organisation: as unknown.
    planted = await post_csv(stack, key_a, [f"P,Q,pq.{uuid.uuid4().hex[:8]}@example.com"], org_id=org_b)
    assert planted.status_code == 404


async def test_an_edit_to_another_organisations_address_is_refused_without_naming_it(stack: Stack) -> None:
    """PATCH answers as create does: the organisation's admin learns only that the address
    can't be added, the operator which organisation holds it; nothing changes either way."""
    _org_a, key_a = await make_org(stack, "alpha")
    _org_b, key_b = await make_org(stack, "bravo")
    ann = await person_of(stack, key_a, "Ann")
    bea = await person_of(stack, key_b, "Bea")
    for key, message in (
        (key_a, "This address can't be added; contact agentOS support"),
        (stack.admin, "A staff member with that External Email 1 already exists, in the organisation bravo"),
    ):
        refused = await stack.http.patch(
            f"/api/v1/staff/{ann['id']}", json={"external_email_1": bea["external_email_1"]}, headers=key
        )
        assert refused.status_code == 409, refused.text
        assert refused.json()["message"] == message
    again = await stack.http.get(f"/api/v1/staff/{ann['id']}", headers=key_a)
    assert again.json()["external_email_1"] == ann["external_email_1"]
    assert again.json()["pending_external_email_1"] is None


async def test_every_email_counts_against_the_persons_organisation(stack: Stack) -> None:
    """Emails a person is sent one at a time (here: their Single Sign-On email) count and go
    out even past the budget; a bulk send then waits for the next hour; another
    organisation's budget is its own, and a batch's email counts once."""
    org_a, key_a = await make_org(stack, "alpha")
    org_b, key_b = await make_org(stack, "bravo")
    people = [await person_of(stack, key_a, f"Ann{n}") for n in range(BUDGET + 1)]
    for person in people:
        sent = await stack.http.post(f"/api/v1/staff/{person['id']}/sso-email", headers=key_a)
        assert sent.status_code == 202, sent.text
    for person in people:
        # Past the budget too: the person gets their email.
        await stack.wait_for(person["id"], lambda s: s["state"] == "email_sent")
    assert await used(stack, org_a) == BUDGET + 1
    assert await used(stack, org_b) == 0

    waiting = await start_batch(stack, key_a, (await person_of(stack, key_a, "Late"))["id"])
    assert waiting.status_code == 202, waiting.text
    held = await batch_until(stack, waiting.json()["id"], "waiting_for_email_budget")
    assert (held["sent"], held["left"]) == (0, 1)
    assert held["wait_until"] is not None

    bea = await person_of(stack, key_b, "Bea")
    theirs = await start_batch(stack, key_b, bea["id"])
    assert (await batch_until(stack, theirs.json()["id"], "done"))["sent"] == 1
    await stack.wait_for(bea["id"], lambda s: s["state"] == "email_sent")
    assert await used(stack, org_b) == 1  # the batch's spend; its email did not count again
    assert await used(stack, org_a) == BUDGET + 1


async def test_an_operator_erases_a_suspended_organisation(stack: Stack) -> None:
    org_c, key_c = await make_org(stack, "charlie")
    cal = await person_of(stack, key_c, "Cal")
    cat = await stack.person(org_id=uuid.UUID(org_c), first_name="Cat", last_name="Carmody", mfa=True)
    assert (await stack.http.post(f"/api/v1/staff/{cal['id']}/sso-email", headers=key_c)).status_code == 202
    await stack.wait_for(cal["id"], lambda s: s["state"] == "email_sent")
    tenant = await stack.http.patch(
        f"/api/v1/orgs/{org_c}", json={"entra_tenant_ids": [TENANT]}, headers=stack.admin
    )
    assert tenant.status_code == 200, tenant.text

    own_key = await stack.http.delete(f"/api/v1/orgs/{org_c}", headers=key_c)
    assert own_key.status_code == 403
    active = await stack.http.delete(f"/api/v1/orgs/{org_c}", headers=stack.admin)
    assert active.status_code == 409
    assert active.json()["message"] == NOT_SUSPENDED
    assert (await stack.http.get(f"/api/v1/staff/{cal['id']}", headers=stack.admin)).status_code == 200

    # Suspended through the operators' endpoint, as a real erasure goes.
    suspended = await stack.http.post(f"/api/v1/orgs/{org_c}/suspend", headers=stack.admin)
    assert suspended.status_code == 200 and suspended.json()["status"] == "suspended", suspended.text
    erased = await stack.http.delete(f"/api/v1/orgs/{org_c}", headers=stack.admin)
    assert erased.status_code == 202, erased.text
    assert erased.json()["status"] == "erasing" and erased.json()["workflow_id"] == f"org-erase-{org_c}"
    # Polled as a caller would, until it is gone; then the flow's outcome.
    await erased_away(stack.http, stack.admin, org_c)
    assert await org_flow_done(stack.env.client, f"org-erase-{org_c}") == {
        "people_erased": 2,
        "keys_deleted": 1,
        "tenants_released": [TENANT],
    }

    assert (await stack.http.get(f"/api/v1/orgs/{org_c}", headers=stack.admin)).status_code == 404
    for staff_id in (cal["id"], str(cat.staff_id)):
        assert (await stack.http.get(f"/api/v1/staff/{staff_id}", headers=stack.admin)).status_code == 404
    assert (await stack.http.get("/api/v1/staff", headers=key_c)).status_code == 401
    # The tenant is free for another organisation.
    taken_over = await stack.http.post(
        "/api/v1/orgs",
        json={"name": "Delta", "slug": "delta", "entra_tenant_ids": [TENANT]},
        headers=stack.admin,
    )
    assert taken_over.status_code == 201, taken_over.text

    names = ("Cal", "Cat", "Carmody", cal["external_email_1"], cat.email)
    async with stack.sessions() as session:
        assert await session.get(Organisation, uuid.UUID(org_c)) is None
        assert (
            await session.scalars(select(AdminApiKey).where(AdminApiKey.org_id == uuid.UUID(org_c)))
        ).all() == []
        assert (
            await session.scalars(
                select(OrganisationTenant).where(OrganisationTenant.org_id == uuid.UUID(org_c))
            )
        ).all() == []
        assert (
            await session.scalar(
                select(func.count()).select_from(Staff).where(Staff.org_id == uuid.UUID(org_c))
            )
            == 0
        )
        events = (await session.scalars(select(AuditEvent))).all()
    org_erased = [e for e in events if e.action == "org.erased"]
    assert [(e.target, e.actor, e.details["people_erased"]) for e in org_erased] == [
        (org_c, "admin-key:test-admin", 2)
    ]
    assert len([e for e in events if e.action == "staff.erased"]) == 2
    for event in events:
        shown = f"{event.actor} {event.target} {event.details}"
        assert not any(name in shown for name in names), shown
