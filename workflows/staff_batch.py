"""A staff batch (`staff-batch-<id>`): send many people their Single Sign-On email, a chunk at
a time, paced to SSO_BATCH_SEND_RATE and within the hourly email budget. The people are rows
in the database (staff_batch_items), so the history holds chunk counts, not ids; the flow
continues as new every `chunks_per_run` chunks, so 10,000 people keep it small.

Pause, resume and cancel are Updates whose validators refuse what the batch's state cannot
take (nothing is written for a refusal). A spent budget is a durable timer until the next
hour, shown as `waiting_for_email_budget`. The state is in the `SsoBatchState` search
attribute (one upsert per change), the counts in the flow's current details."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.inputs import BatchChunkInput, BatchCounts, BatchStateInput
    from activities.staff_batch import StaffBatchActivities
    from core import flow_errors
    from core.batches import BatchState
    from core.search_attributes import SSO_BATCH_STATE
    from workflows.common import required, run_step

# A chunk's attempt: its items take well under a second each; a worker that dies mid-chunk
# is noticed by the missing heartbeat, so the chunk resumes within seconds elsewhere.
CHUNK_TIMEOUT = timedelta(minutes=5)
CHUNK_HEARTBEAT = timedelta(seconds=15)
CHUNK_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=30))


@dataclass
class StaffBatchInput:
    batch_id: str
    chunk_size: int = 50
    # The pace: one chunk per this many seconds (chunk_size * 60 / SSO_BATCH_SEND_RATE).
    chunk_seconds: float = 25.0
    chunks_per_run: int = 100
    # Carried over continue-as-new.
    paused: bool = False
    sent: int = 0
    failed: int = 0
    left: int = 0


@dataclass
class BatchControl:
    """Pause, resume or cancel. Its encrypted payload is what proves it came from the web app."""

    actor: str


@dataclass
class BatchView:
    state: str
    sent: int
    failed: int
    left: int


def pace(rate_per_minute: int, chunk_size: int = 50) -> tuple[int, float]:
    """The chunk size and seconds per chunk that send `rate_per_minute` emails a minute."""
    size = max(1, min(chunk_size, rate_per_minute))
    return size, size * 60.0 / rate_per_minute


@workflow.defn(name="StaffBatch")
class StaffBatchWorkflow:
    @workflow.init
    def __init__(self, start: StaffBatchInput | None = None) -> None:
        self._start = required(start, "This start")
        self._paused = self._start.paused
        self._cancelled = False
        self._waiting_until: datetime | None = None
        self._done = False
        self._counts = BatchCounts(sent=self._start.sent, failed=self._start.failed, left=self._start.left)
        self._recorded = self._state()
        # One state write at a time, in the order they were decided.
        self._recording = asyncio.Lock()

    @workflow.run
    async def run(self, start: StaffBatchInput | None = None) -> BatchView:
        for _ in range(self._start.chunks_per_run):
            await workflow.wait_condition(lambda: not self._paused or self._cancelled)
            if self._cancelled:
                return await self._end()
            began = workflow.now()
            counts: BatchCounts = await workflow.execute_activity_method(
                StaffBatchActivities.send_batch_chunk,
                BatchChunkInput(batch_id=self._start.batch_id, limit=self._start.chunk_size),
                start_to_close_timeout=CHUNK_TIMEOUT,
                heartbeat_timeout=CHUNK_HEARTBEAT,
                retry_policy=CHUNK_RETRY,
                summary="Send a chunk of the batch's Single Sign-On emails",
            )
            self._take(counts)
            if self._cancelled:
                return await self._end()
            if counts.left == 0:
                self._done = True
                return await self._end()
            if counts.budget_until is not None:
                await self._wait_for_budget(counts.budget_until)
            else:
                rest = self._start.chunk_seconds - (workflow.now() - began).total_seconds()
                if rest > 0:
                    await self._sleep_unless_cancelled(timedelta(seconds=rest), "Pace the batch")
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(
            replace(
                self._start,
                paused=self._paused,
                sent=self._counts.sent,
                failed=self._counts.failed,
                left=self._counts.left,
            )
        )

    async def _wait_for_budget(self, until: datetime) -> None:
        self._waiting_until = until
        await self._record()
        await self._sleep_unless_cancelled(until - workflow.now(), "Wait for the next hour's email budget")
        self._waiting_until = None
        await self._record()

    async def _sleep_unless_cancelled(self, duration: timedelta, summary: str) -> None:
        if duration <= timedelta(0):
            return
        try:
            await workflow.wait_condition(lambda: self._cancelled, timeout=duration, timeout_summary=summary)
        except TimeoutError:
            pass

    async def _end(self) -> BatchView:
        await self._record()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.view()

    def _state(self) -> BatchState:
        if self._cancelled:
            return BatchState.cancelled
        if self._done:
            return BatchState.done
        if self._paused:
            return BatchState.paused
        if self._waiting_until is not None:
            return BatchState.waiting_for_email_budget
        return BatchState.running

    def _take(self, counts: BatchCounts) -> None:
        self._counts = BatchCounts(sent=counts.sent, failed=counts.failed, left=counts.left)
        self._show()

    def _show(self) -> None:
        c = self._counts
        workflow.set_current_details(
            f"{self._state().value.replace('_', ' ')}: {c.sent} sent, {c.failed} failed, {c.left} left"
        )

    async def _record(self) -> None:
        """Write a changed state to the database (the API and admin page read it there) and
        to the search attribute; a state written already costs nothing."""
        async with self._recording:
            state = self._state()
            if state == self._recorded:
                return
            self._recorded = state
            workflow.upsert_search_attributes([SSO_BATCH_STATE.value_set(state.value)])
            self._show()
            counts: BatchCounts = await run_step(
                StaffBatchActivities.record_batch_state,
                BatchStateInput(
                    batch_id=self._start.batch_id,
                    state=state.value,
                    wait_until=self._waiting_until if state == BatchState.waiting_for_email_budget else None,
                ),
                f"Record the batch as {state.value}",
            )
            if state == BatchState.cancelled:
                self._take(counts)

    def _refuse_if_ended(self) -> None:
        if self._cancelled or self._done:
            raise ApplicationError(f"This batch is {self._state().value}", type=flow_errors.BATCH_STATE)

    @workflow.update(name="pause")
    async def pause(self, control: BatchControl | None) -> BatchView:
        required(control, "This pause")
        self._paused = True
        await self._record()
        return self.view()

    @pause.validator
    def _validate_pause(self, control: BatchControl | None) -> None:
        self._refuse_if_ended()
        if self._paused:
            raise ApplicationError("This batch is paused already", type=flow_errors.BATCH_STATE)

    @workflow.update(name="resume")
    async def resume(self, control: BatchControl | None) -> BatchView:
        required(control, "This resume")
        self._paused = False
        await self._record()
        return self.view()

    @resume.validator
    def _validate_resume(self, control: BatchControl | None) -> None:
        self._refuse_if_ended()
        if not self._paused:
            raise ApplicationError("This batch is not paused", type=flow_errors.BATCH_STATE)

    @workflow.update(name="cancel")
    async def cancel(self, control: BatchControl | None) -> BatchView:
        required(control, "This cancel")
        self._cancelled = True
        await self._record()
        return self.view()

    @cancel.validator
    def _validate_cancel(self, control: BatchControl | None) -> None:
        self._refuse_if_ended()

    @workflow.query(name="progress")
    def view(self) -> BatchView:
        c = self._counts
        return BatchView(state=self._state().value, sent=c.sent, failed=c.failed, left=c.left)
