"""The SsoSetup workflow on the time-skipping test server, with stand-in activities.

Facts about the time-skipping server (temporal-test-server 1.40) these tests rely on:
- custom search attributes must be registered (an unknown one fails the start with
  INVALID_ARGUMENT "search attribute SsoStep is not defined"); AddSearchAttributes works,
  ListSearchAttributes is unimplemented, adding an existing one gives ALREADY_EXISTS;
- activity retry backoff and schedule-to-close windows are skipped like timers;
- time is not skipped while a workflow or activity task waits for a worker, nor ever
  again after a workflow completes with one of its activities still running;
- an update sent to a completed workflow fails with RPCError NOT_FOUND ("update ... not
  found"; a real server says "workflow execution already completed", docs/temporal.md §9);
- current details are not in DescribeWorkflowExecution: they come from the
  `__temporal_workflow_metadata` query, answered by a live worker.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
import pytest_asyncio
from google.protobuf.message import Message
from temporalio import activity
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import (
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.inputs import CloseSetupInput, SendSetupEmailInput, SendSetupEmailResult
from core.codec import ENCODING
from core.search_attributes import SSO_STAFF_ID, SSO_STEP
from tests.support.config import time_skipping_server
from workflows.setup import (
    EmailRetry,
    EndRequest,
    SetupOutcome,
    SetupStatus,
    SsoSetupInput,
    SsoSetupWorkflow,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

TTL = timedelta(minutes=15)
MASKED_EMAIL = "j***@example.com"
ACTOR = "admin-key:a"
# Real-time guard: every test finishes in well under a second when things work.
GUARD_SECONDS = 30


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    """This module's own server, not the session's `temporal_env`.

    The time-skipping server stops skipping time while any workflow or activity task
    waits for a worker. A module that leaves flows running after its workers stopped
    (tests/admin/test_api.py leaves flows waiting on their 15-minute link timer) makes the
    first long `env.sleep` that fires those timers lock skipping for good: every later
    `env.sleep` on that server then runs in real time. All flows here end in their test.
    """
    async with time_skipping_server() as server:
        yield server


@pytest_asyncio.fixture(loop_scope="session")
async def private_env() -> AsyncIterator[WorkflowEnvironment]:
    """A server for one test that leaves an activity running past its workflow's end.

    The server never releases the time-skipping lock of an activity still running when
    its workflow completes (temporalio/sdk-java#1138); sdk-python's own tests use a
    separate server for this case too.
    """
    async with time_skipping_server() as server:
        yield server


@dataclass
class FakeSetupActivities:
    """Stand-ins registered under the real activity names.

    `send_failures` lists what attempts 1, 2, ... raise before one succeeds; with
    `always_fail` every attempt raises the last of them. With `block_send` an attempt
    waits for `release_send`; with `block_close` close_setup waits for `release_close`.
    """

    send_failures: list[Exception] = field(default_factory=list)
    always_fail: bool = False
    block_send: bool = False
    block_close: bool = False
    send_attempts: list[int] = field(default_factory=list)
    send_inputs: list[SendSetupEmailInput] = field(default_factory=list)
    closed: list[CloseSetupInput] = field(default_factory=list)
    send_started: asyncio.Event = field(default_factory=asyncio.Event)
    release_send: asyncio.Event = field(default_factory=asyncio.Event)
    close_started: asyncio.Event = field(default_factory=asyncio.Event)
    release_close: asyncio.Event = field(default_factory=asyncio.Event)

    @activity.defn(name="send_setup_email")
    async def send_setup_email(self, data: SendSetupEmailInput) -> SendSetupEmailResult:
        info = activity.info()
        self.send_attempts.append(info.attempt)
        self.send_inputs.append(data)
        self.send_started.set()
        if self.block_send:
            await self.release_send.wait()
        if self.send_failures:
            if self.always_fail:
                raise self.send_failures[-1]
            if info.attempt <= len(self.send_failures):
                raise self.send_failures[info.attempt - 1]
        scheduled = info.current_attempt_scheduled_time
        return SendSetupEmailResult(
            sent_at=scheduled,
            link_expires_at=scheduled + timedelta(seconds=data.link_ttl_seconds),
            masked_email=MASKED_EMAIL,
            attempts=info.attempt,
        )

    @activity.defn(name="close_setup")
    async def close_setup(self, data: CloseSetupInput) -> None:
        self.closed.append(data)
        self.close_started.set()
        if self.block_close:
            await self.release_close.wait()

    def release(self) -> None:
        self.release_send.set()
        self.release_close.set()


@dataclass
class Flow:
    handle: WorkflowHandle[SsoSetupWorkflow, SetupOutcome]
    staff_id: str
    task_queue: str


def worker(env: WorkflowEnvironment, task_queue: str, fake: FakeSetupActivities) -> Worker:
    return Worker(
        env.client,
        task_queue=task_queue,
        workflows=[SsoSetupWorkflow],
        activities=[fake.send_setup_email, fake.close_setup],
    )


async def start_flow(env: WorkflowEnvironment, task_queue: str, retry: EmailRetry | None = None) -> Flow:
    """Start a flow the way api/services/setup_admin.py does."""
    staff_id = str(uuid.uuid4())
    handle = await env.client.start_workflow(
        "SsoSetup",
        SsoSetupInput(
            setup_id=str(uuid.uuid4()),
            staff_id=staff_id,
            link_ttl_seconds=int(TTL.total_seconds()),
            requested_by=ACTOR,
            email_retry=retry or EmailRetry(),
            quiet_delivery=True,
        ),
        id=f"sso-setup-{uuid.uuid4()}",
        task_queue=task_queue,
        result_type=SetupOutcome,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(SSO_STEP, "sending_email"),
                SearchAttributePair(SSO_STAFF_ID, staff_id),
            ]
        ),
        static_summary=f"Single Sign-On setup for staff {staff_id}",
        static_details=f"Requested by {ACTOR}; link valid 15 minutes after the email is sent",
    )
    return Flow(handle=handle, staff_id=staff_id, task_queue=task_queue)


def new_task_queue() -> str:
    return f"sso-setup-test-{uuid.uuid4()}"


async def status(flow: Flow) -> SetupStatus:
    return await flow.handle.query("status", result_type=SetupStatus)


async def current_details(flow: Flow) -> str:
    metadata = await flow.handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    return metadata.current_details


async def wait_until_email_sent(env: WorkflowEnvironment, flow: Flow) -> SetupStatus:
    """Skip a minute of server time (retries included); the link lives 15."""
    await env.sleep(timedelta(minutes=1))
    current = await status(flow)
    assert current.step == "email_sent"
    return current


async def step_attribute(flow: Flow) -> str | None:
    return (await flow.handle.describe()).typed_search_attributes.get(SSO_STEP)


def hm(moment: datetime) -> str:
    return moment.strftime("%H:%M UTC")


async def test_link_expires_at_fifteen_minutes_and_not_before(env: WorkflowEnvironment) -> None:
    fake = FakeSetupActivities()
    task_queue = new_task_queue()
    async with asyncio.timeout(GUARD_SECONDS), worker(env, task_queue, fake):
        flow = await start_flow(env, task_queue)
        started_at = (await flow.handle.describe()).start_time

        await env.sleep(timedelta(minutes=14, seconds=50))
        description = await flow.handle.describe()
        assert description.status == WorkflowExecutionStatus.RUNNING
        current = await status(flow)
        assert current.step == "email_sent"
        assert current.email_attempts == 1
        assert current.link_expires_at is not None
        assert TTL <= current.link_expires_at - started_at < TTL + timedelta(seconds=5)
        assert fake.closed == []

        await env.sleep(timedelta(seconds=15))
        assert await flow.handle.result() == SetupOutcome(state="expired", reason="the setup link expired")
        closed_at = (await flow.handle.describe()).close_time
        assert closed_at is not None
        assert timedelta(0) <= closed_at - current.link_expires_at < timedelta(seconds=5)

    assert fake.send_attempts == [1]
    assert len(fake.closed) == 1
    assert fake.closed[0].state == "expired"
    assert fake.closed[0].actor == "system"
    assert fake.closed[0].staff_id == flow.staff_id


@pytest.mark.parametrize(("update", "state"), [("supersede", "superseded"), ("cancel", "cancelled")])
async def test_admin_ends_the_flow_early(env: WorkflowEnvironment, update: str, state: str) -> None:
    fake = FakeSetupActivities()
    task_queue = new_task_queue()
    reason = f"{state} by the test"
    async with asyncio.timeout(GUARD_SECONDS), worker(env, task_queue, fake):
        flow = await start_flow(env, task_queue)
        await wait_until_email_sent(env, flow)

        outcome = await flow.handle.execute_update(
            update, EndRequest(actor=ACTOR, reason=reason), result_type=SetupOutcome
        )
        assert outcome == SetupOutcome(state=state, reason=reason)
        assert await flow.handle.result() == outcome
        assert await step_attribute(flow) == state
        assert (await status(flow)).step == state

        # Ended: both updates are refused by the server, not by the validator.
        for again in ("supersede", "cancel"):
            with pytest.raises(RPCError) as refused:
                await flow.handle.execute_update(again, EndRequest(actor=ACTOR), result_type=SetupOutcome)
            assert refused.value.status == RPCStatusCode.NOT_FOUND

    assert len(fake.closed) == 1
    assert fake.closed[0].state == state
    assert fake.closed[0].actor == ACTOR
    assert fake.closed[0].reason == reason


async def test_second_end_request_while_ending_is_rejected_by_the_validator(
    env: WorkflowEnvironment,
) -> None:
    fake = FakeSetupActivities(block_close=True)
    task_queue = new_task_queue()
    try:
        async with asyncio.timeout(GUARD_SECONDS), worker(env, task_queue, fake):
            flow = await start_flow(env, task_queue)
            await wait_until_email_sent(env, flow)
            supersede = asyncio.create_task(
                flow.handle.execute_update(
                    "supersede",
                    EndRequest(actor=ACTOR, reason="a new email was sent"),
                    result_type=SetupOutcome,
                )
            )
            await fake.close_started.wait()

            with pytest.raises(WorkflowUpdateFailedError) as refused:
                await flow.handle.execute_update(
                    "cancel", EndRequest(actor="admin-key:b"), result_type=SetupOutcome
                )
            assert isinstance(refused.value.cause, ApplicationError)
            assert refused.value.cause.type == "SetupAlreadyEnded"

            fake.release()
            assert (await supersede).state == "superseded"
            assert (await flow.handle.result()).state == "superseded"
    finally:
        fake.release()
    assert [(c.state, c.actor) for c in fake.closed] == [("superseded", ACTOR)]


async def test_email_retries_then_succeeds_and_later_expires(env: WorkflowEnvironment) -> None:
    fake = FakeSetupActivities(send_failures=[ApplicationError("SMTP down"), ApplicationError("SMTP down")])
    task_queue = new_task_queue()
    retry = EmailRetry(initial_interval_seconds=1, maximum_interval_seconds=2, window_seconds=600)
    async with asyncio.timeout(GUARD_SECONDS), worker(env, task_queue, fake):
        flow = await start_flow(env, task_queue, retry)
        current = await wait_until_email_sent(env, flow)
        assert current.email_attempts == 3
        assert fake.send_attempts == [1, 2, 3]

        assert (await flow.handle.result()).state == "expired"

    assert fake.send_attempts == [1, 2, 3]
    assert [c.state for c in fake.closed] == ["expired"]


async def test_permanent_email_failure_fails_the_flow_at_once(env: WorkflowEnvironment) -> None:
    fake = FakeSetupActivities(
        send_failures=[ApplicationError("recipient refused", type="PermanentEmailError", non_retryable=True)],
        always_fail=True,
    )
    task_queue = new_task_queue()
    async with asyncio.timeout(GUARD_SECONDS), worker(env, task_queue, fake):
        flow = await start_flow(env, task_queue)
        outcome = await flow.handle.result()
        assert await step_attribute(flow) == "failed"

    assert fake.send_attempts == [1]
    assert outcome.state == "failed"
    assert outcome.reason == "email could not be delivered: recipient refused"
    assert len(fake.closed) == 1
    assert fake.closed[0].state == "failed"
    assert fake.closed[0].actor == "system"
    assert fake.closed[0].reason == outcome.reason


async def run_until_retry_window_runs_out(
    env: WorkflowEnvironment,
) -> tuple[SetupOutcome, FakeSetupActivities]:
    fake = FakeSetupActivities(send_failures=[ApplicationError("SMTP down")], always_fail=True)
    task_queue = new_task_queue()
    retry = EmailRetry(initial_interval_seconds=1, maximum_interval_seconds=2, window_seconds=30)
    async with asyncio.timeout(GUARD_SECONDS), worker(env, task_queue, fake):
        flow = await start_flow(env, task_queue, retry)
        outcome = await flow.handle.result()
    return outcome, fake


async def test_retry_window_exhausted_fails_the_flow(env: WorkflowEnvironment) -> None:
    outcome, fake = await run_until_retry_window_runs_out(env)

    assert outcome.state == "failed"
    assert outcome.reason is not None and "email could not be delivered" in outcome.reason
    # Backoff 1 s, then 2 s, within a 30 s window: about 15 attempts, all in skipped time.
    assert 10 <= len(fake.send_attempts) <= 20
    assert [(c.state, c.reason) for c in fake.closed] == [("failed", outcome.reason)]


async def test_retry_window_exhausted_reason_names_the_window(env: WorkflowEnvironment) -> None:
    outcome, _ = await run_until_retry_window_runs_out(env)
    assert outcome.reason == "email could not be delivered before the retry window ran out"


async def test_cancel_while_the_email_is_being_sent(private_env: WorkflowEnvironment) -> None:
    env = private_env
    fake = FakeSetupActivities(block_send=True)
    task_queue = new_task_queue()
    try:
        async with asyncio.timeout(GUARD_SECONDS), worker(env, task_queue, fake):
            flow = await start_flow(env, task_queue)
            await fake.send_started.wait()
            assert (await status(flow)).step == "sending_email"
            assert await current_details(flow) == "Sending the Single Sign-On email"

            outcome = await flow.handle.execute_update(
                "cancel", EndRequest(actor=ACTOR, reason="wrong person"), result_type=SetupOutcome
            )
            assert outcome == SetupOutcome(state="cancelled", reason="wrong person")
            assert await flow.handle.result() == outcome
            assert await step_attribute(flow) == "cancelled"
            history = await flow.handle.fetch_history()
    finally:
        fake.release()

    # The send was asked to stop and never reported back; the flow did not wait for it.
    sends = {
        event.event_id
        for event in history.events
        if event.activity_task_scheduled_event_attributes.activity_type.name == "send_setup_email"
    }
    assert len(sends) == 1
    cancel_requests = [
        event.activity_task_cancel_requested_event_attributes.scheduled_event_id
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED
    ]
    assert set(cancel_requests) == sends
    send_results = [
        event
        for event in history.events
        if event.activity_task_completed_event_attributes.scheduled_event_id in sends
        or event.activity_task_failed_event_attributes.scheduled_event_id in sends
        or event.activity_task_canceled_event_attributes.scheduled_event_id in sends
    ]
    assert send_results == []
    assert fake.send_attempts == [1]
    assert [(c.state, c.actor) for c in fake.closed] == [("cancelled", ACTOR)]


async def test_search_attributes_follow_the_step_and_hold_no_email(
    env: WorkflowEnvironment,
) -> None:
    fake = FakeSetupActivities()
    task_queue = new_task_queue()
    # Started before any worker polls: the attributes set at start are visible as such.
    flow = await start_flow(env, task_queue)
    description = await flow.handle.describe()
    assert description.typed_search_attributes.get(SSO_STEP) == "sending_email"
    assert description.typed_search_attributes.get(SSO_STAFF_ID) == flow.staff_id

    async with asyncio.timeout(GUARD_SECONDS), worker(env, task_queue, fake):
        await wait_until_email_sent(env, flow)
        attributes = (await flow.handle.describe()).typed_search_attributes
        assert attributes.get(SSO_STEP) == "email_sent"
        assert attributes.get(SSO_STAFF_ID) == flow.staff_id
        assert len(attributes) == 2

        assert (await flow.handle.result()).state == "expired"
        attributes = (await flow.handle.describe()).typed_search_attributes
        assert attributes.get(SSO_STEP) == "expired"
        assert attributes.get(SSO_STAFF_ID) == flow.staff_id

    assert "@" not in flow.handle.id
    for pair in attributes:
        assert "@" not in str(pair.value)
        assert "example.com" not in str(pair.value)


async def test_current_details_tell_where_the_flow_stands(env: WorkflowEnvironment) -> None:
    fake = FakeSetupActivities()
    task_queue = new_task_queue()
    async with asyncio.timeout(GUARD_SECONDS), worker(env, task_queue, fake):
        flow = await start_flow(env, task_queue)
        current = await wait_until_email_sent(env, flow)
        assert current.link_expires_at is not None

        details = await current_details(flow)
        assert details.startswith(f"Email sent to {MASKED_EMAIL} at ")
        assert f"link expires {hm(current.link_expires_at)}" in details

        await flow.handle.result()
        # A completed flow still answers the query from a live worker (by replay).
        assert await current_details(flow) == "Ended: expired (the setup link expired)"


async def test_activities_and_timer_carry_summaries_for_the_ui(env: WorkflowEnvironment) -> None:
    """What the Temporal UI shows beside each activity and timer, decoded with the codec."""
    fake = FakeSetupActivities()
    task_queue = new_task_queue()
    async with asyncio.timeout(GUARD_SECONDS), worker(env, task_queue, fake):
        flow = await start_flow(env, task_queue)
        assert (await flow.handle.result()).state == "expired"
        history = await flow.handle.fetch_history()

    summaries: dict[str, list[str]] = {}
    for event in history.events:
        if not event.user_metadata.HasField("summary"):
            continue
        assert event.user_metadata.summary.metadata["encoding"] == ENCODING
        [text] = await env.client.data_converter.decode([event.user_metadata.summary], [str])
        kind = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")
        summaries.setdefault(kind, []).append(text)
    assert summaries["ACTIVITY_TASK_SCHEDULED"] == [
        "Email the Single Sign-On setup link",
        "Record the flow as expired",
    ]
    assert summaries["TIMER_STARTED"] == ["Setup link expires"]
    assert summaries["WORKFLOW_EXECUTION_STARTED"] == [f"Single Sign-On setup for staff {flow.staff_id}"]
    assert not any("@" in text for texts in summaries.values() for text in texts)


def payloads(message: Message, path: str = "") -> Iterator[tuple[str, Payload]]:
    """Every Payload inside a proto message, except search attribute values.

    Search attributes are plaintext by design (codecs don't touch them; test above).
    """
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None or descriptor.name == "search_attributes":
            continue
        name = f"{path}.{descriptor.name}"
        if isinstance(value, Message):
            items = [(name, value)]
        elif hasattr(value, "items"):
            items = [(f"{name}[{key}]", item) for key, item in value.items()]
        else:
            items = [(f"{name}[{index}]", item) for index, item in enumerate(value)]
        for item_path, item in items:
            if not isinstance(item, Message):
                continue
            if isinstance(item, Payload):
                yield item_path, item
            else:
                yield from payloads(item, item_path)


def history_payloads(events: list[HistoryEvent]) -> dict[str, Payload]:
    found = {}
    for event in events:
        kind = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")
        for path, payload in payloads(event):
            found[f"{event.event_id}:{kind}{path}"] = payload
    return found


async def test_history_payloads_are_encrypted(env: WorkflowEnvironment) -> None:
    secrets = [
        MASKED_EMAIL.encode(),
        ACTOR.encode(),
        b"recipient refused",
        b"Email sent",
        b"a newer email replaced this one",
    ]
    histories: list[list[HistoryEvent]] = []

    fake = FakeSetupActivities()
    task_queue = new_task_queue()
    async with asyncio.timeout(GUARD_SECONDS), worker(env, task_queue, fake):
        flow = await start_flow(env, task_queue)
        await wait_until_email_sent(env, flow)
        await flow.handle.execute_update(
            "supersede",
            EndRequest(actor=ACTOR, reason="a newer email replaced this one"),
            result_type=SetupOutcome,
        )
        await flow.handle.result()
        histories.append(list((await flow.handle.fetch_history()).events))

    failing = FakeSetupActivities(
        send_failures=[ApplicationError("recipient refused", type="PermanentEmailError", non_retryable=True)],
        always_fail=True,
    )
    task_queue = new_task_queue()
    async with asyncio.timeout(GUARD_SECONDS), worker(env, task_queue, failing):
        flow = await start_flow(env, task_queue)
        assert (await flow.handle.result()).state == "failed"
        histories.append(list((await flow.handle.fetch_history()).events))

    superseded, failed = (history_payloads(events) for events in histories)
    for found in (superseded, failed):
        plaintext = {
            path: payload.metadata.get("encoding")
            for path, payload in found.items()
            if payload.metadata.get("encoding") != ENCODING
        }
        assert plaintext == {}

    carriers = {path.split(".")[0].split(":")[1] + "." + path.split(".")[1] for path in superseded}
    assert {
        "WORKFLOW_EXECUTION_STARTED.workflow_execution_started_event_attributes",
        "WORKFLOW_EXECUTION_STARTED.user_metadata",
        "ACTIVITY_TASK_SCHEDULED.activity_task_scheduled_event_attributes",
        "ACTIVITY_TASK_SCHEDULED.user_metadata",
        "ACTIVITY_TASK_COMPLETED.activity_task_completed_event_attributes",
        "WORKFLOW_EXECUTION_UPDATE_ACCEPTED.workflow_execution_update_accepted_event_attributes",
        "WORKFLOW_EXECUTION_UPDATE_COMPLETED.workflow_execution_update_completed_event_attributes",
        "WORKFLOW_EXECUTION_COMPLETED.workflow_execution_completed_event_attributes",
    } <= carriers

    # Failures carry their message and stack trace as encoded attributes, not plaintext.
    failures = [
        event.activity_task_failed_event_attributes.failure
        for event in histories[1]
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED
    ]
    assert len(failures) == 1
    assert failures[0].message == "Encoded failure"
    assert failures[0].stack_trace == ""
    assert failures[0].encoded_attributes.metadata["encoding"] == ENCODING

    for events in histories:
        for event in events:
            raw = event.SerializeToString()
            for secret in secrets:
                assert secret not in raw, (event.event_type, secret)
