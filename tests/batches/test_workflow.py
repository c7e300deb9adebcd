"""The StaffBatch workflow on the time-skipping server, with stand-in activities: a batch of
10,000 people completes and continues as new on the way; a spent email budget waits for the
next hour (a durable timer) as `waiting_for_email_budget`; pause, resume and cancel are
Updates whose validators refuse what the state cannot take."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
import pytest_asyncio
from temporalio import activity
from temporalio.client import (
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.inputs import BatchChunkInput, BatchCounts, BatchStateInput
from core import flow_errors
from core.batches import BatchState, batch_workflow_id
from core.search_attributes import SSO_BATCH_STATE
from tests.support.config import time_skipping_server
from workflows.staff_batch import BatchControl, BatchView, StaffBatchInput, StaffBatchWorkflow, pace

pytestmark = pytest.mark.asyncio(loop_scope="session")

CONTROL = BatchControl(actor="admin-key:a")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with time_skipping_server() as server:
        yield server


@dataclass
class FakeBatch:
    """The batch's items as a count; each chunk sends `limit` of them. `budget_after` makes
    the chunk that reaches that many sends report the hour's budget spent."""

    total: int
    sent: int = 0
    chunks: int = 0
    budget_after: int | None = None
    budget_until: datetime | None = None
    states: list[str] = field(default_factory=list)
    hold: asyncio.Event | None = None

    @activity.defn(name="send_batch_chunk")
    async def send_batch_chunk(self, data: BatchChunkInput) -> BatchCounts:
        if self.hold is not None:
            await self.hold.wait()
        self.chunks += 1
        take = min(data.limit, self.total - self.sent)
        until = None
        if self.budget_after is not None and self.sent + take >= self.budget_after:
            take = self.budget_after - self.sent
            self.budget_after = None
            until = self.budget_until = activity.info().current_attempt_scheduled_time + timedelta(minutes=40)
        self.sent += take
        return BatchCounts(sent=self.sent, failed=0, left=self.total - self.sent, budget_until=until)

    @activity.defn(name="record_batch_state")
    async def record_batch_state(self, data: BatchStateInput) -> BatchCounts:
        self.states.append(data.state)
        return BatchCounts(sent=self.sent, failed=0, left=self.total - self.sent)


async def start(
    env: WorkflowEnvironment, task_queue: str, total: int, **options: float
) -> WorkflowHandle[StaffBatchWorkflow, BatchView]:
    batch_id = str(uuid.uuid4())
    return await env.client.start_workflow(
        StaffBatchWorkflow.run,
        StaffBatchInput(batch_id=batch_id, left=total, **options),  # type: ignore[arg-type]
        id=batch_workflow_id(batch_id),
        task_queue=task_queue,
        search_attributes=TypedSearchAttributes([SearchAttributePair(SSO_BATCH_STATE, "running")]),
    )


def worker(env: WorkflowEnvironment, fake: FakeBatch) -> tuple[Worker, str]:
    task_queue = f"tq-{uuid.uuid4()}"
    return (
        Worker(
            env.client,
            task_queue=task_queue,
            workflows=[StaffBatchWorkflow],
            activities=[fake.send_batch_chunk, fake.record_batch_state],
        ),
        task_queue,
    )


async def test_pace_sends_the_rate_per_minute() -> None:
    assert pace(120) == (50, 25.0)
    assert pace(30) == (30, 60.0)
    assert pace(6000) == (50, 0.5)


async def test_ten_thousand_people_complete_and_continue_as_new(env: WorkflowEnvironment) -> None:
    fake = FakeBatch(total=10_000)
    running, task_queue = worker(env, fake)
    async with running:
        handle = await start(env, task_queue, 10_000, chunk_size=100, chunk_seconds=30.0, chunks_per_run=20)
        first_run = handle.result_run_id
        view = await handle.result()
    assert view == BatchView(state="done", sent=10_000, failed=0, left=0)
    assert fake.chunks == 100 and fake.sent == 10_000
    assert fake.states == ["done"]
    described = await env.client.get_workflow_handle(handle.id, run_id=first_run).describe()
    assert described.status == WorkflowExecutionStatus.CONTINUED_AS_NEW
    last = await env.client.get_workflow_handle(handle.id).describe()
    assert last.status == WorkflowExecutionStatus.COMPLETED and last.run_id != first_run
    assert last.typed_search_attributes.get(SSO_BATCH_STATE) == "done"
    # Each run's history holds its 20 chunks' counts, never the people.
    history = await env.client.get_workflow_handle(handle.id).fetch_history()
    assert len(history.events) < 400


async def test_a_spent_budget_waits_for_the_next_hour_then_goes_on(env: WorkflowEnvironment) -> None:
    fake = FakeBatch(total=300, budget_after=120)
    running, task_queue = worker(env, fake)
    async with running:
        handle = await start(env, task_queue, 300, chunk_size=50, chunk_seconds=1.0)
        view = await handle.result()
    assert view.state == "done" and view.sent == 300
    assert fake.states == ["waiting_for_email_budget", "running", "done"]
    history = await handle.fetch_history()
    timers = [e for e in history.events if e.HasField("timer_started_event_attributes")]
    longest = max(t.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta() for t in timers)
    assert longest > timedelta(minutes=30)  # the durable wait, not a pace timer


async def test_pause_resume_and_cancel_are_updates_with_validators(env: WorkflowEnvironment) -> None:
    fake = FakeBatch(total=1_000, hold=asyncio.Event())
    running, task_queue = worker(env, fake)
    async with running:
        handle = await start(env, task_queue, 1_000, chunk_size=100, chunk_seconds=60.0)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(StaffBatchWorkflow.resume, CONTROL)
        assert refused.value.cause.message == "This batch is not paused"  # type: ignore[attr-defined]
        assert refused.value.cause.type == flow_errors.BATCH_STATE  # type: ignore[attr-defined]
        paused = await handle.execute_update(StaffBatchWorkflow.pause, CONTROL)
        assert paused.state == "paused"
        with pytest.raises(WorkflowUpdateFailedError) as again:
            await handle.execute_update(StaffBatchWorkflow.pause, CONTROL)
        assert again.value.cause.message == "This batch is paused already"  # type: ignore[attr-defined]
        fake.hold.set()  # type: ignore[union-attr]
        # The chunk in flight finishes; no other starts while paused, however long.
        await env.sleep(timedelta(hours=2))
        assert fake.chunks == 1
        assert (await handle.query(StaffBatchWorkflow.view)).state == "paused"
        resumed = await handle.execute_update(StaffBatchWorkflow.resume, CONTROL)
        assert resumed.state == "running"
        await env.sleep(timedelta(minutes=2))
        assert fake.chunks >= 2
        cancelled = await handle.execute_update(StaffBatchWorkflow.cancel, CONTROL)
        assert cancelled.state == "cancelled"
        view = await handle.result()
    assert view.state == "cancelled" and view.sent < 1_000
    assert fake.states == ["paused", "running", "cancelled"]
    assert (await handle.describe()).typed_search_attributes.get(
        SSO_BATCH_STATE
    ) == BatchState.cancelled.value


async def test_a_batch_without_its_encrypted_input_fails_at_once(env: WorkflowEnvironment) -> None:
    fake = FakeBatch(total=1)
    running, task_queue = worker(env, fake)
    async with running:
        handle = await env.client.start_workflow(
            "StaffBatch",
            id=f"staff-batch-{uuid.uuid4()}",
            task_queue=task_queue,
            search_attributes=TypedSearchAttributes([SearchAttributePair(SSO_BATCH_STATE, "running")]),
        )
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    assert failed.value.cause.type == flow_errors.UNAUTHENTICATED  # type: ignore[attr-defined]
    assert fake.chunks == 0
