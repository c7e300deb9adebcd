"""The OrgSuspension and OrgErasure workflows on the time-skipping server, with stand-in
activities: 500 people go in chunks, each chunk after the last one's cursor; a chunk that
fails is retried and the counts come out right; a resume stops the suspension without
recording it done; people added during an erasure are erased before the organisation goes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import pytest_asyncio
from temporalio import activity
from temporalio.client import WorkflowExecutionStatus
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.inputs import (
    OrgChunkInput,
    OrgEraseChunk,
    OrgErasedInput,
    OrgErasedResult,
    OrgSuspendChunk,
    OrgSuspensionDoneInput,
)
from core.search_attributes import SSO_ORG_ID, SSO_STEP, flow_attributes
from tests.support.config import time_skipping_server
from tests.support.erasure import history_text
from workflows.org_erasure import OrgEraseInput, OrgEraseOutcome, OrgErasureWorkflow, org_erase_workflow_id
from workflows.org_suspension import OrgSuspendInput, OrgSuspensionWorkflow, org_suspend_workflow_id

pytestmark = pytest.mark.asyncio(loop_scope="session")

ACTOR = "admin-key:ops"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with time_skipping_server() as server:
        yield server


@dataclass
class FakeOrg:
    """People as sorted ids; each chunk takes `limit` after the cursor. `fail_calls` makes
    those calls (1-based) fail, as a worker or the database failing mid-chunk would;
    `resumed_after` makes the suspension find the organisation resumed from that call on."""

    people: list[str]
    calls: int = 0
    fail_calls: set[int] = field(default_factory=set)
    resumed_after: int | None = None
    added_on_finish: int = 0
    recorded: list[OrgSuspendChunk] = field(default_factory=list)
    finishes: int = 0

    def _call(self) -> None:
        self.calls += 1
        if self.calls in self.fail_calls:
            raise RuntimeError("the database went away")

    @activity.defn(name="suspend_org_chunk")
    async def suspend_org_chunk(self, data: OrgChunkInput) -> OrgSuspendChunk:
        self._call()
        if self.resumed_after is not None and self.calls > self.resumed_after:
            return OrgSuspendChunk(stopped=True)
        chunk = [p for p in self.people if data.after is None or p > data.after][: data.limit]
        if not chunk:
            return OrgSuspendChunk()
        return OrgSuspendChunk(
            people=len(chunk),
            sessions_revoked=2 * len(chunk),
            grants_revoked=1,
            flows_ended=1,
            last=chunk[-1],
        )

    @activity.defn(name="record_org_suspension")
    async def record_org_suspension(self, data: OrgSuspensionDoneInput) -> None:
        self.recorded.append(data.counts)

    @activity.defn(name="erase_org_chunk")
    async def erase_org_chunk(self, data: OrgChunkInput) -> OrgEraseChunk:
        self._call()
        erased, self.people = self.people[: data.limit], self.people[data.limit :]
        return OrgEraseChunk(erased=len(erased), left=len(self.people))

    @activity.defn(name="finish_org_erasure")
    async def finish_org_erasure(self, data: OrgErasedInput) -> OrgErasedResult:
        self.finishes += 1
        if self.added_on_finish:  # people added while it was erasing
            self.people = [str(uuid.uuid4()) for _ in range(self.added_on_finish)]
            self.added_on_finish = 0
            return OrgErasedResult(done=False)
        return OrgErasedResult(done=True, keys_deleted=2, tenants_released=["t1"])


def people(count: int) -> list[str]:
    return sorted(str(uuid.uuid4()) for _ in range(count))


def worker(env: WorkflowEnvironment, fake: FakeOrg) -> tuple[Worker, str]:
    task_queue = f"tq-{uuid.uuid4()}"
    return (
        Worker(
            env.client,
            task_queue=task_queue,
            workflows=[OrgSuspensionWorkflow, OrgErasureWorkflow],
            activities=[
                fake.suspend_org_chunk,
                fake.record_org_suspension,
                fake.erase_org_chunk,
                fake.finish_org_erasure,
            ],
        ),
        task_queue,
    )


def attributes(org_id: str) -> TypedSearchAttributes:
    return TypedSearchAttributes(flow_attributes(SearchAttributePair(SSO_STEP, "running"), org_id=org_id))


async def suspend(
    env: WorkflowEnvironment, fake: FakeOrg, chunk_size: int = 50
) -> tuple[OrgSuspendChunk, str]:
    org_id = str(uuid.uuid4())
    running, task_queue = worker(env, fake)
    async with running:
        handle = await env.client.start_workflow(
            OrgSuspensionWorkflow.run,
            OrgSuspendInput(org_id=org_id, actor=ACTOR, chunk_size=chunk_size),
            id=org_suspend_workflow_id(org_id),
            task_queue=task_queue,
            search_attributes=attributes(org_id),
        )
        return await handle.result(), org_id


async def test_five_hundred_people_are_suspended_in_chunks_of_fifty(env: WorkflowEnvironment) -> None:
    fake = FakeOrg(people(500))
    done, org_id = await suspend(env, fake)
    # Ten full chunks, then one that finds no one after the last.
    assert fake.calls == 11
    assert (done.people, done.sessions_revoked, done.grants_revoked, done.flows_ended) == (500, 1000, 10, 10)
    assert fake.recorded == [OrgSuspendChunk(500, 1000, 10, 10)]
    described = await env.client.get_workflow_handle(org_suspend_workflow_id(org_id)).describe()
    assert described.status == WorkflowExecutionStatus.COMPLETED
    assert described.typed_search_attributes.get(SSO_STEP) == "done"
    assert described.typed_search_attributes.get(SSO_ORG_ID) == org_id


async def test_a_failed_chunk_is_retried_and_counted_once(env: WorkflowEnvironment) -> None:
    fake = FakeOrg(people(120), fail_calls={2, 3})
    done, _ = await suspend(env, fake)
    assert fake.calls == 5  # 3 chunks (the second tried three times)
    assert (done.people, done.sessions_revoked) == (120, 240)
    assert [r.people for r in fake.recorded] == [120]


async def test_a_resume_stops_the_suspension_without_recording_it_done(env: WorkflowEnvironment) -> None:
    fake = FakeOrg(people(120), resumed_after=1)
    done, org_id = await suspend(env, fake)
    assert done.stopped and done.people == 50
    assert fake.recorded == []
    described = await env.client.get_workflow_handle(org_suspend_workflow_id(org_id)).describe()
    assert described.typed_search_attributes.get(SSO_STEP) == "stopped"


async def test_an_erasure_erases_everyone_in_chunks_even_those_added_meanwhile(
    env: WorkflowEnvironment,
) -> None:
    fake = FakeOrg(people(130), fail_calls={1}, added_on_finish=3)
    ids = list(fake.people)
    org_id = str(uuid.uuid4())
    running, task_queue = worker(env, fake)
    async with running:
        handle = await env.client.start_workflow(
            OrgErasureWorkflow.run,
            OrgEraseInput(org_id=org_id, actor=ACTOR, chunk_size=50),
            id=org_erase_workflow_id(org_id),
            task_queue=task_queue,
            search_attributes=attributes(org_id),
        )
        outcome = await handle.result()
    assert outcome == OrgEraseOutcome(people_erased=133, keys_deleted=2, tenants_released=["t1"])
    assert fake.people == [] and fake.finishes == 2
    described = await handle.describe()
    assert described.typed_search_attributes.get(SSO_STEP) == "erased"
    # The decoded history carries the organisation's id and counts, not even a person's id.
    codec = env.client.data_converter.payload_codec
    assert codec is not None
    history = await history_text(env.client, codec, handle.id, handle.result_run_id or "")
    assert history is not None and org_id in history
    assert not [i for i in ids if i in history]
