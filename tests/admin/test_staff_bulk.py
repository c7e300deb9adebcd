"""The CSV import and staff batches through the admin API, in-process with a real worker on
the time-skipping server, on SQLite and PostgreSQL: a dry run names every bad row and column
and creates nobody; an import creates the good rows and skips the rest; with send_email a
batch sends each new person one link; a batch pauses, resumes and cancels with real
refusals; a retried chunk keeps each person's setup and link."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import func, select, update
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.inputs import BatchChunkInput
from activities.staff_batch import StaffBatchActivities
from api.main import create_app
from api.services.flows import FlowClient
from api.services.setup_admin import SENDING_ALREADY, Onboarding
from api.services.staff_import import MAX_IMPORT_BYTES, MAX_IMPORT_ROWS
from core.errors import ServiceUnavailable
from core.models import AuditEvent, SsoSetup, Staff, StaffBatch, StaffBatchItem
from core.orgs import DEFAULT_ORG_ID
from tests.support.accounts import ADMIN_ACTOR
from tests.support.config import make_settings
from tests.support.harness import Stack, running_stack

pytestmark = [pytest.mark.pages, pytest.mark.asyncio(loop_scope="session")]

CSV = {"Content-Type": "text/csv"}
GUARD_SECONDS = 60


@pytest_asyncio.fixture(loop_scope="session")
async def fast(temporal_env: WorkflowEnvironment, database_url: str) -> AsyncIterator[Stack]:
    """The stack with batches sending as fast as they can."""
    async with running_stack(temporal_env, database_url, batch_send_rate=60_000) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="session")
async def slow(temporal_env: WorkflowEnvironment, database_url: str) -> AsyncIterator[Stack]:
    """The stack with batches sending one email a minute: there is time to pause them."""
    async with running_stack(temporal_env, database_url, batch_send_rate=1) as running:
        yield running


async def post_csv(stack: Stack, body: str | bytes, **params: str) -> httpx.Response:
    content = body.encode() if isinstance(body, str) else body
    return await stack.http.post(
        "/api/v1/staff/imports", content=content, params=params, headers={**stack.admin, **CSV}
    )


async def staff_count(stack: Stack) -> int:
    async with stack.sessions() as session:
        return await session.scalar(select(func.count()).select_from(Staff)) or 0


async def batch_until(stack: Stack, batch_id: str, state: str) -> dict[str, Any]:
    async with asyncio.timeout(GUARD_SECONDS):
        while True:
            response = await stack.http.get(f"/api/v1/staff/batches/{batch_id}", headers=stack.admin)
            assert response.status_code == 200, response.text
            if response.json()["state"] == state:
                return response.json()  # type: ignore[no-any-return]
            await asyncio.sleep(0.1)


def messy_csv(taken: str) -> str:
    """Excel's CSV with a byte order mark, CRLF, quoted fields and a blank row, and a bad
    row of each kind."""
    rows = [
        "First Name,last_name,External_Email_1,is_admin",
        'Ada,"Lovelace, Countess",ada@example.com,TRUE',  # 2: good
        "Grace,Hopper,grace@example.com,no",  # 3: good
        "",  # 4: blank, ignored
        ",Turing,alan@example.com,0",  # 5: first_name missing
        "Edsger,Dijkstra,not-an-email,FALSE",  # 6: bad address
        "Barbara,Liskov,barbara@example.com,maybe",  # 7: bad is_admin
        "Ada,Again,ADA@example.com,",  # 8: repeats row 2's address
        f"Taken,Person,{taken},yes",  # 9: address in use
        "Ken,Thompson,ken@example.com,1,extra",  # 10: a stray cell
        '"Donald ""Don""",Knuth,don@example.com,',  # 11: good (escaped quotes)
    ]
    return "\ufeff" + "\r\n".join(rows) + "\r\n"


BAD = {
    (5, "first_name"),
    (6, "external_email_1"),
    (7, "is_admin"),
    (8, "external_email_1"),
    (9, "external_email_1"),
    (10, None),
}


async def test_a_dry_run_names_every_bad_row_and_column_and_creates_nobody(fast: Stack) -> None:
    taken = await fast.create_staff()
    before = await staff_count(fast)
    response = await post_csv(fast, messy_csv(taken["external_email_1"]), dry_run="true")
    assert response.status_code == 200, response.text
    body = response.json()
    assert {(e["row"], e["column"]) for e in body["errors"]} == BAD
    assert body["would_create"] == 3
    outcomes = {r["row"]: r["outcome"] for r in body["rows"]}
    assert outcomes == {2: "create", 3: "create", 11: "create"} | {row: "skipped" for row, _ in BAD}
    by_row = {r["row"]: r for r in body["rows"]}
    assert by_row[2]["last_name"] == "Lovelace, Countess" and by_row[2]["is_admin"] is True
    assert by_row[11]["first_name"] == 'Donald "Don"'
    errors = {(e["row"], e["column"]): e["error"] for e in body["errors"]}
    assert errors[(5, "first_name")] == "is required"
    assert errors[(8, "external_email_1")] == "repeats the address of row 2"
    assert errors[(9, "external_email_1")] == "already belongs to a staff member"
    assert "TRUE or FALSE" in errors[(7, "is_admin")]
    assert await staff_count(fast) == before


async def test_an_import_creates_the_good_rows_and_skips_the_rest(fast: Stack) -> None:
    taken = await fast.create_staff()
    response = await post_csv(fast, messy_csv(taken["external_email_1"]))
    assert response.status_code == 201, response.text
    body = response.json()
    assert sorted(p["external_email_1"] for p in body["created"]) == [
        "ada@example.com",
        "don@example.com",
        "grace@example.com",
    ]
    assert {(e["row"], e["column"]) for e in body["skipped"]} == BAD
    assert body["batch_id"] is None and body["batch_url"] is None
    async with fast.sessions() as session:
        creates = (
            await session.scalars(select(AuditEvent.target).where(AuditEvent.action == "staff.create"))
        ).all()
        imported = await session.scalar(select(AuditEvent).where(AuditEvent.action == "staff.import"))
    assert {p["id"] for p in body["created"]} <= set(creates)
    assert imported is not None and imported.actor == ADMIN_ACTOR
    # Importing the same file again creates nobody: every address is in use now.
    again = (await post_csv(fast, messy_csv(taken["external_email_1"]))).json()
    assert again["created"] == []


async def test_an_import_with_send_email_sends_each_new_person_one_link(fast: Stack) -> None:
    people = "\n".join(f"P{i},Batch,p{i}.{uuid.uuid4().hex[:6]}@example.com" for i in range(12))
    response = await post_csv(fast, "first_name,last_name,external_email_1\n" + people, send_email="true")
    assert response.status_code == 201, response.text
    body = response.json()
    assert len(body["created"]) == 12 and body["batch_url"] == f"/api/v1/staff/batches/{body['batch_id']}"
    done = await batch_until(fast, body["batch_id"], "done")
    assert (done["total"], done["sent"], done["failed"], done["left"]) == (12, 12, 0, 0)
    assert done["workflow_id"] == f"staff-batch-{body['batch_id']}"
    links = {}
    for person in body["created"]:
        await fast.wait_for(person["id"], lambda s: s["state"] == "email_sent")
        sent = await fast.links_sent_to(person["external_email_1"])
        assert len(sent) == 1
        links[person["id"]] = sent[0]
    assert len(set(links.values())) == 12


async def test_files_that_cannot_be_imported_are_refused_clearly(fast: Stack) -> None:
    header = "first_name,last_name,external_email_1\n"
    wrong_type = await fast.http.post(
        "/api/v1/staff/imports", content=header, headers={**fast.admin, "Content-Type": "application/json"}
    )
    assert wrong_type.status_code == 415 and "text/csv" in wrong_type.json()["message"]
    huge = await post_csv(fast, header + "x" * MAX_IMPORT_BYTES)
    assert huge.status_code == 413 and "MB" in huge.json()["message"]
    many = await post_csv(fast, header + "A,B,a@example.com\n" * (MAX_IMPORT_ROWS + 1))
    assert many.status_code == 413 and f"{MAX_IMPORT_ROWS:,}" in many.json()["message"]
    missing = await post_csv(fast, "first_name,surname,external_email_1\nA,B,a@example.com\n")
    assert missing.status_code == 400
    assert "unknown column 'surname'" in missing.json()["message"]
    assert "missing column 'last_name'" in missing.json()["message"]
    latin1 = await post_csv(fast, (header + "José,Núñez,jose@example.com\n").encode("latin-1"))
    assert latin1.status_code == 400 and "UTF-8" in latin1.json()["message"]
    empty = await post_csv(fast, "\r\n\r\n")
    assert empty.status_code == 400 and "empty" in empty.json()["message"]


async def test_a_batch_pauses_resumes_and_cancels_with_real_refusals(slow: Stack) -> None:
    people = [(await slow.create_staff())["id"] for _ in range(4)]
    unknown = await slow.http.post(
        "/api/v1/staff/batches",
        json={"staff_ids": [people[0], str(uuid.uuid4())], "action": "send_email"},
        headers=slow.admin,
    )
    assert unknown.status_code == 404 and "No staff member with id" in unknown.json()["message"]
    started = await slow.http.post(
        "/api/v1/staff/batches",
        json={"staff_ids": people + people[:1], "action": "send_email"},
        headers=slow.admin,
    )
    assert started.status_code == 202, started.text
    batch = started.json()
    assert batch["total"] == 4 and batch["state"] == "running"
    base = f"/api/v1/staff/batches/{batch['id']}"

    async def press(control: str) -> httpx.Response:
        return await slow.http.post(f"{base}/{control}", headers=slow.admin)

    not_paused = await press("resume")
    assert not_paused.status_code == 409 and not_paused.json()["message"] == "This batch is not paused"
    paused = await press("pause")
    assert paused.status_code == 200 and paused.json()["state"] == "paused"
    twice = await press("pause")
    assert twice.status_code == 409 and twice.json()["message"] == "This batch is paused already"
    assert (await press("resume")).json()["state"] == "running"
    cancelled = await press("cancel")
    assert cancelled.status_code == 200, cancelled.text
    view = cancelled.json()
    assert view["state"] == "cancelled" and view["left"] == 0
    assert view["sent"] + view["cancelled"] + view["failed"] == 4 and view["cancelled"] >= 1
    again = await press("cancel")
    assert again.status_code == 409 and again.json()["message"] == "This batch is cancelled"
    assert (await slow.http.post(f"{base}/restart", headers=slow.admin)).status_code == 422
    assert (
        await slow.http.get(f"/api/v1/staff/batches/{uuid.uuid4()}", headers=slow.admin)
    ).status_code == 404
    async with slow.sessions() as session:
        actions = (
            await session.scalars(select(AuditEvent.action).where(AuditEvent.target == batch["id"]))
        ).all()
    assert sorted(actions) == sorted(
        ["staff_batch.create", "staff_batch.pause", "staff_batch.resume", "staff_batch.cancel"]
    )


async def test_a_person_who_cannot_be_sent_to_is_a_failure_with_its_reason(fast: Stack) -> None:
    person = await fast.create_staff()
    assert (
        await fast.http.post(f"/api/v1/staff/{person['id']}/disable", headers=fast.admin)
    ).status_code == 200
    started = await fast.http.post(
        "/api/v1/staff/batches",
        json={"staff_ids": [person["id"]], "action": "send_email"},
        headers=fast.admin,
    )
    done = await batch_until(fast, started.json()["id"], "done")
    assert (done["sent"], done["failed"]) == (0, 1)
    assert done["failures"] == [
        {
            "staff_id": person["id"],
            "error": "This person is disabled; enable them before sending a Single Sign-On email",
        }
    ]


async def test_a_retried_chunk_keeps_each_persons_setup_and_link(fast: Stack) -> None:
    """A chunk whose completion was lost (its worker died after the setups started) runs
    again: it finds each item's setup, sees its flow running and sends nothing new; an item
    whose setup row was committed but whose flow never started gets that setup's flow."""
    first, second = await fast.create_staff(), await fast.create_staff()
    started = await fast.http.post(
        "/api/v1/staff/batches", json={"staff_ids": [first["id"]], "action": "send_email"}, headers=fast.admin
    )
    batch_id = started.json()["id"]
    await batch_until(fast, batch_id, "done")
    await fast.wait_for(first["id"], lambda s: s["state"] == "email_sent")
    link = await fast.links_sent_to(first["external_email_1"])
    async with fast.sessions() as session:
        # The lost completion, and a second person whose attempt died after its commit.
        await session.execute(update(StaffBatchItem).values(status="pending"))
        setup = SsoSetup(
            staff_id=uuid.UUID(second["id"]),
            workflow_id=f"sso-setup-{second['id']}",
            state="sending_email",
            state_since=(await session.scalar(select(StaffBatch.created_at))),
            requested_by=ADMIN_ACTOR,
        )
        session.add(setup)
        await session.flush()
        session.add(
            StaffBatchItem(
                batch_id=uuid.UUID(batch_id),
                staff_id=setup.staff_id,
                position=1,
                status="pending",
                setup_id=setup.id,
            )
        )
        await session.commit()
    activities = StaffBatchActivities(fast.settings, fast.sessions, fast.env.client)
    counts = await ActivityEnvironment().run(
        activities.send_batch_chunk, BatchChunkInput(batch_id=batch_id, limit=10)
    )
    assert (counts.sent, counts.left) == (2, 0)
    await fast.wait_for(second["id"], lambda s: s["state"] == "email_sent")
    assert await fast.links_sent_to(first["external_email_1"]) == link
    assert len(await fast.links_sent_to(second["external_email_1"])) == 1
    async with fast.sessions() as session:
        setups = (await session.scalars(select(SsoSetup.staff_id))).all()
    assert sorted(map(str, setups)) == sorted([first["id"], second["id"]])
    assert (await fast.status(first["id"]))["state"] == "email_sent"  # not superseded


async def test_a_send_that_races_another_is_a_failure_not_a_takeover(
    fast: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first attempt whose start finds a flow already running (another send won the race)
    does not count that flow as its own: the item fails, its setup row is removed."""
    person = await fast.create_staff()
    batch = StaffBatch(
        org_id=DEFAULT_ORG_ID, action="send_email", state="running", requested_by=ADMIN_ACTOR, total=1
    )
    async with fast.sessions() as session:
        session.add(batch)
        await session.flush()
        session.add(
            StaffBatchItem(batch_id=batch.id, staff_id=uuid.UUID(person["id"]), position=0, status="pending")
        )
        await session.commit()

    async def raced(self: Onboarding, staff: Staff, setup: SsoSetup) -> None:
        raise WorkflowAlreadyStartedError(setup.workflow_id, "SsoSetup")

    monkeypatch.setattr(Onboarding, "start_setup", raced)
    activities = StaffBatchActivities(fast.settings, fast.sessions, fast.env.client)
    counts = await ActivityEnvironment().run(
        activities.send_batch_chunk, BatchChunkInput(batch_id=str(batch.id), limit=10)
    )
    assert (counts.sent, counts.failed, counts.left) == (0, 1, 0)
    async with fast.sessions() as session:
        item = await session.scalar(select(StaffBatchItem).where(StaffBatchItem.batch_id == batch.id))
        assert item is not None and item.error == SENDING_ALREADY
        assert (
            await session.scalar(select(SsoSetup).where(SsoSetup.staff_id == uuid.UUID(person["id"]))) is None
        )


async def test_a_batch_whose_flow_cannot_start_leaves_nothing_but_its_audit(
    fast: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    person = await fast.create_staff()

    async def unavailable(*_args: object, **_kwargs: object) -> None:
        raise ServiceUnavailable("We can't complete this right now, please try again in a minute")

    monkeypatch.setattr(FlowClient, "start", unavailable)
    response = await fast.http.post(
        "/api/v1/staff/batches",
        json={"staff_ids": [person["id"]], "action": "send_email"},
        headers=fast.admin,
    )
    assert response.status_code == 503, response.text
    async with fast.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(StaffBatch)) == 0
        assert await session.scalar(select(func.count()).select_from(StaffBatchItem)) == 0
        failed = (
            await session.scalars(select(AuditEvent.action).where(AuditEvent.action.like("staff_batch.%")))
        ).all()
    assert sorted(failed) == ["staff_batch.create", "staff_batch.start_failed"]


async def test_the_openapi_document_shows_the_csv_body_and_every_answer() -> None:
    document = create_app(make_settings()).openapi()
    imports = document["paths"]["/api/v1/staff/imports"]["post"]
    body = imports["requestBody"]
    assert body["required"] is True and list(body["content"]) == ["text/csv"]
    assert body["content"]["text/csv"]["example"].startswith("first_name,last_name,external_email_1")
    assert {"200", "201", "413", "415"} <= set(imports["responses"])
    assert [p["name"] for p in imports["parameters"]] == ["dry_run", "send_email", "org_id"]
    control = document["paths"]["/api/v1/staff/batches/{batch_id}/{control}"]["post"]
    named = {p["name"]: p for p in control["parameters"]}
    assert named["control"]["schema"]["enum"] == ["pause", "resume", "cancel"]
