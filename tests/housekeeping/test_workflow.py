"""The Housekeeping workflow on the time-skipping server, with stand-in activities: it purges
every table at once, audits the counts, waits a day (a durable timer, continued as new) and
runs again; without its encrypted input it fails at once. The worker starts it once however
often it starts (USE_EXISTING keeps the running one)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
import pytest_asyncio
from temporalio import activity
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.inputs import HousekeepingDoneInput, PurgeInput
from core import flow_errors
from core.retention import TABLES
from core.search_attributes import SSO_STEP
from tests.support.config import make_settings, time_skipping_server
from worker import start_housekeeping
from workflows.housekeeping import HOUSEKEEPING_WORKFLOW_ID, HousekeepingInput, HousekeepingWorkflow

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with time_skipping_server() as server:
        yield server


@dataclass
class FakeHousekeeping:
    """Each table "deletes" as many rows as its name has letters."""

    purged: list[PurgeInput] = field(default_factory=list)
    runs: list[HousekeepingDoneInput] = field(default_factory=list)

    @activity.defn(name="purge_table")
    async def purge_table(self, data: PurgeInput) -> int:
        self.purged.append(data)
        return len(data.table)

    @activity.defn(name="record_housekeeping")
    async def record_housekeeping(self, data: HousekeepingDoneInput) -> None:
        self.runs.append(data)


def worker(env: WorkflowEnvironment, fake: FakeHousekeeping, task_queue: str) -> Worker:
    return Worker(
        env.client,
        task_queue=task_queue,
        workflows=[HousekeepingWorkflow],
        activities=[fake.purge_table, fake.record_housekeeping],
    )


async def until(done: Callable[[], bool | Awaitable[bool]]) -> None:
    """Activities run in real time between the skipped timers: wait for them (bounded)."""
    async with asyncio.timeout(30):
        while not await _value(done()):
            await asyncio.sleep(0.02)


async def _value(answer: bool | Awaitable[bool]) -> bool:
    return answer if isinstance(answer, bool) else await answer


async def step_of(env: WorkflowEnvironment, workflow_id: str) -> str | None:
    return (await env.client.get_workflow_handle(workflow_id).describe()).typed_search_attributes.get(
        SSO_STEP
    )


async def test_it_purges_every_table_waits_a_day_and_runs_again(env: WorkflowEnvironment) -> None:
    fake = FakeHousekeeping()
    task_queue = f"tq-{uuid.uuid4()}"
    async with worker(env, fake, task_queue):
        handle: WorkflowHandle[HousekeepingWorkflow, None] = await env.client.start_workflow(
            HousekeepingWorkflow.run,
            HousekeepingInput(batch_size=7),
            id=f"housekeeping-{uuid.uuid4()}",
            task_queue=task_queue,
        )
        first_run = handle.result_run_id
        await until(lambda: len(fake.runs) == 1)
        assert [p.table for p in fake.purged] == list(TABLES)
        assert {p.batch_size for p in fake.purged} == {7}
        assert fake.runs[0].counts == {table: len(table) for table in TABLES}
        assert fake.runs[0].run_id == first_run

        # Continued as new, the next run waits a day before it purges again.
        async def waiting() -> bool:
            return await step_of(env, handle.id) == "waiting"

        await until(waiting)
        await env.sleep(timedelta(hours=23))
        assert len(fake.runs) == 1
        await env.sleep(timedelta(hours=1, minutes=1))
        await until(lambda: len(fake.runs) == 2)
        assert [p.table for p in fake.purged] == list(TABLES) * 2
        assert fake.runs[1].run_id != first_run

        first = await env.client.get_workflow_handle(handle.id, run_id=first_run).describe()
        assert first.status == WorkflowExecutionStatus.CONTINUED_AS_NEW
        history = await env.client.get_workflow_handle(handle.id, run_id=fake.runs[1].run_id).fetch_history()
        timers = [e for e in history.events if e.HasField("timer_started_event_attributes")]
        # One timer: the rest of the day since the last run's purge.
        assert len(timers) == 1
        waited = timers[0].timer_started_event_attributes.start_to_fire_timeout.ToTimedelta()
        assert timedelta(hours=23) < waited <= timedelta(days=1)
        await env.client.get_workflow_handle(handle.id).terminate("test over")


async def test_without_its_encrypted_input_it_fails_at_once(env: WorkflowEnvironment) -> None:
    fake = FakeHousekeeping()
    task_queue = f"tq-{uuid.uuid4()}"
    async with worker(env, fake, task_queue):
        handle = await env.client.start_workflow(
            "Housekeeping", id=f"hk-{uuid.uuid4()}", task_queue=task_queue
        )
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    assert failed.value.cause.type == flow_errors.UNAUTHENTICATED  # type: ignore[attr-defined]
    assert fake.purged == []


async def test_a_start_that_would_spin_fails_at_once(env: WorkflowEnvironment) -> None:
    fake = FakeHousekeeping()
    task_queue = f"tq-{uuid.uuid4()}"
    async with worker(env, fake, task_queue):
        for bad in (HousekeepingInput(every_seconds=1), HousekeepingInput(batch_size=0)):
            handle = await env.client.start_workflow(
                HousekeepingWorkflow.run, bad, id=f"hk-{uuid.uuid4()}", task_queue=task_queue
            )
            with pytest.raises(WorkflowFailureError) as failed:
                await handle.result()
            assert failed.value.cause.type == flow_errors.BAD_REQUEST  # type: ignore[attr-defined]
    assert fake.purged == []


async def test_worker_start_starts_it_once(env: WorkflowEnvironment) -> None:
    """No worker polls this queue: the flow stays as started, so a second start must find it."""
    settings = make_settings(task_queue=f"tq-{uuid.uuid4()}")
    first = await start_housekeeping(env.client, settings)
    second = await start_housekeeping(env.client, settings)
    assert first and second == first
    handle = env.client.get_workflow_handle(HOUSEKEEPING_WORKFLOW_ID)
    described = await handle.describe()
    assert described.run_id == first and described.status == WorkflowExecutionStatus.RUNNING
    assert described.typed_search_attributes.get(SSO_STEP) == "purging"
    assert await described.static_summary() == "Daily housekeeping: delete rows kept past SSO_RETENTION_DAYS"
    await handle.terminate("test over")
