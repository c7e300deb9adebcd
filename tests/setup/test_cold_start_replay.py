"""A code step that reaches a worker together with its code's delivery must replay.

The shape tests/replay/test_update_on_cold_start.py recorded from the fault test, made on
purpose on a real dev server (docs/temporal.md §24): the `send_code` activity completes while
no workflow worker runs, the person's `confirm_code` (or `resend_code`) update arrives
meanwhile, and a new worker takes the one workflow task that carries both. The worker that
wrote the recorded history resumed `_deliver_code` first and accepted the update after; the
paths tried here (a cold worker after a stop, a warm one whose task was held) hand the update
over first, so `LiveOrderRunner` runs such a task in the recorded order. Replaying, temporalio
1.35 starts the update first. The history must replay, and a query on the closed flow (a full
replay) must find what the live flow held.

Before the fix both tests failed replay with "[TMPRL1100] Nondeterminism error: Update machine
does not handle this event: HistoryEvent(id: 34, UpsertWorkflowSearchAttributes)". With the
upsert gone but a `wait_condition(lambda: True)` barrier in the handlers, confirm_code still
failed ("... HistoryEvent(id: 37, ActivityTaskScheduled)": replay answered "still on its
way") and resend_code's replayed `step_since` differed.

Known remaining risk, not reproduced here because workflow code cannot remove it: the setup
email's completion coinciding with `set_password`, `cancel` or `supersede`. `run()` resumed
by that completion must upsert `email_sent` and start the link's timer in that activation (it
cannot wait for a later one), and replay emits the update's accept before both. It needs the
person to submit a password (or an admin to end the setup) while the worker that sent the
email is dead and before the retried activity reports; pages no longer query closed flows.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.bridge.proto.workflow_activation import WorkflowActivation, WorkflowActivationJob
from temporalio.bridge.proto.workflow_completion import WorkflowActivationCompletion
from temporalio.client import WorkflowHandle, WorkflowHistory
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import (
    Replayer,
    Worker,
    WorkflowInstance,
    WorkflowInstanceDetails,
    WorkflowRunner,
)
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from activities.inputs import (
    ActivateInput,
    AuditInput,
    CloseSetupInput,
    SendCodeInput,
    SendCodeResult,
    SendSetupEmailInput,
    SendSetupEmailResult,
    StaffStepInput,
    StorePasswordInput,
    StorePasswordResult,
)
from core.codec import data_converter
from core.sealing import password_context, seal
from core.search_attributes import SSO_STAFF_ID, SSO_STEP
from tests.support.config import TEST_SEAL_PUBLIC_KEY, make_settings
from tests.support.workflows import eventually
from workflows.common import StepRequest
from workflows.setup import (
    ConfirmCodeRequest,
    EmailRetry,
    SetPasswordRequest,
    SetupOutcome,
    SetupProgress,
    SsoSetupInput,
    SsoSetupWorkflow,
    StepResult,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

GUARD_SECONDS = 30
PASSWORD = b"Correct-Horse-Battery-Staple-42"
# Long enough for the server to admit an update sent while no workflow worker polls.
ADMISSION = 1.0


@dataclass
class GatedActivities:
    """Stand-ins under the real names; the first `send_code` waits for `release_code`."""

    codes: list[SendCodeInput] = field(default_factory=list)
    confirmed: list[StaffStepInput] = field(default_factory=list)
    code_started: asyncio.Event = field(default_factory=asyncio.Event)
    release_code: asyncio.Event = field(default_factory=asyncio.Event)

    @activity.defn(name="send_setup_email")
    async def send_setup_email(self, data: SendSetupEmailInput) -> SendSetupEmailResult:
        sent = activity.info().current_attempt_scheduled_time
        return SendSetupEmailResult(
            sent_at=sent,
            link_expires_at=sent + timedelta(seconds=data.link_ttl_seconds),
            masked_email="j***@example.com",
            attempts=1,
        )

    @activity.defn(name="store_password")
    async def store_password(self, data: StorePasswordInput) -> StorePasswordResult:
        return StorePasswordResult(ok=True)

    @activity.defn(name="send_code")
    async def send_code(self, data: SendCodeInput) -> SendCodeResult:
        self.codes.append(data)
        number = len(self.codes)
        if number == 1:
            self.code_started.set()
            await self.release_code.wait()
        return SendCodeResult(
            code_digest=f"digest-{number}", sent_at=activity.info().current_attempt_scheduled_time
        )

    @activity.defn(name="confirm_email")
    async def confirm_email(self, data: StaffStepInput) -> None:
        self.confirmed.append(data)

    @activity.defn(name="activate_account")
    async def activate_account(self, data: ActivateInput) -> None:
        pass

    @activity.defn(name="record_audit")
    async def record_audit(self, data: AuditInput) -> None:
        pass

    @activity.defn(name="record_link_opened")
    async def record_link_opened(self, data: StaffStepInput) -> None:
        pass

    @activity.defn(name="close_setup")
    async def close_setup(self, data: CloseSetupInput) -> None:
        pass

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.send_setup_email,
            self.store_password,
            self.send_code,
            self.confirm_email,
            self.activate_account,
            self.record_audit,
            self.record_link_opened,
            self.close_setup,
        ]


class LiveOrderRunner(WorkflowRunner):
    """The default runner, except that a live activation carrying both an update and other
    jobs runs as two: the other jobs first, then the update. That is the order the worker
    that wrote tests/replay's recorded history took (the code's upsert, then the update's
    accept); the dev-server paths tried here (a cold worker after a stop, a warm one whose
    task was held) all handed the update over first, which replays."""

    def __init__(self) -> None:
        self._runner = SandboxedWorkflowRunner()
        self.split = 0

    def prepare_workflow(self, defn: Any) -> None:
        self._runner.prepare_workflow(defn)

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        return _LiveOrderInstance(self._runner.create_instance(det), self)

    def set_worker_level_failure_exception_types(self, types: Sequence[type[BaseException]]) -> None:
        self._runner.set_worker_level_failure_exception_types(types)


class _LiveOrderInstance(WorkflowInstance):
    def __init__(self, instance: WorkflowInstance, runner: LiveOrderRunner) -> None:
        self._instance = instance
        self._runner = runner

    def activate(self, act: WorkflowActivation) -> WorkflowActivationCompletion:
        updates = [job for job in act.jobs if job.HasField("do_update")]
        others = [job for job in act.jobs if not job.HasField("do_update")]
        if act.is_replaying or not updates or not others:
            return self._instance.activate(act)
        self._runner.split += 1
        first = self._instance.activate(_with_jobs(act, others))
        if not first.HasField("successful"):
            return first
        then = self._instance.activate(_with_jobs(act, updates))
        if then.HasField("successful"):
            first.successful.commands.extend(then.successful.commands)
            first.successful.used_internal_flags.extend(then.successful.used_internal_flags)
            return first
        return then

    def get_serialization_context(self, *args: Any, **kwargs: Any) -> Any:
        return self._instance.get_serialization_context(*args, **kwargs)

    def get_external_store_context(self, *args: Any, **kwargs: Any) -> Any:
        return self._instance.get_external_store_context(*args, **kwargs)

    def get_info(self) -> Any:
        return self._instance.get_info()


def _with_jobs(act: WorkflowActivation, jobs: list[WorkflowActivationJob]) -> WorkflowActivation:
    part = WorkflowActivation()
    part.CopyFrom(act)
    del part.jobs[:]
    part.jobs.extend(jobs)
    return part


async def start(env: WorkflowEnvironment, task_queue: str) -> WorkflowHandle[Any, SetupOutcome]:
    staff_id = str(uuid.uuid4())
    return await env.client.start_workflow(
        "SsoSetup",
        SsoSetupInput(
            setup_id=str(uuid.uuid4()),
            staff_id=staff_id,
            link_ttl_seconds=900,
            requested_by="admin-key:a",
            email_retry=EmailRetry(),
            quiet_delivery=True,
            # A resend is allowed at once, so it can coincide with the first delivery.
            code_resend_interval_seconds=0,
        ),
        id=f"sso-setup-{uuid.uuid4()}",
        task_queue=task_queue,
        result_type=SetupOutcome,
        search_attributes=TypedSearchAttributes(
            [SearchAttributePair(SSO_STEP, "sending_email"), SearchAttributePair(SSO_STAFF_ID, staff_id)]
        ),
    )


async def progress(handle: WorkflowHandle[Any, SetupOutcome]) -> SetupProgress:
    return await handle.query("progress", result_type=SetupProgress)


async def code_completed(handle: WorkflowHandle[Any, SetupOutcome]) -> bool:
    """Its completion is buffered while a workflow task is in flight: not yet in history."""
    return not (await handle.describe()).raw_description.pending_activities


async def coincide(
    env: WorkflowEnvironment, update: str, arg: object
) -> tuple[StepResult, WorkflowHistory, GatedActivities]:
    """Drive a flow to `send_code` in flight, stop its workflow worker, let the code's email
    complete and send `update`: a new worker takes both in one workflow task."""
    task_queue = f"sso-cold-start-{uuid.uuid4()}"
    fake = GatedActivities()
    runner = LiveOrderRunner()
    async with (
        asyncio.timeout(GUARD_SECONDS),
        Worker(env.client, task_queue=task_queue, activities=fake.all()),
    ):
        async with Worker(env.client, task_queue=task_queue, workflows=[SsoSetupWorkflow]):
            handle = await start(env, task_queue)
            await eventually(progress, lambda p: p.step == "email_sent", handle)
            request = SetPasswordRequest(
                sealed_password=seal(TEST_SEAL_PUBLIC_KEY, PASSWORD, password_context(handle.id)),
                link_id=str(uuid.uuid4()),
                session_hash="session-hash-1",
            )
            assert await handle.execute_update("set_password", request, result_type=StepResult) == StepResult(
                ok=True, step="password_set"
            )
            await fake.code_started.wait()
        fake.release_code.set()
        await eventually(code_completed, bool, handle)
        sent = asyncio.create_task(handle.execute_update(update, arg, result_type=StepResult))
        await asyncio.sleep(ADMISSION)
        async with Worker(
            env.client, task_queue=task_queue, workflows=[SsoSetupWorkflow], workflow_runner=runner
        ):
            result = await sent
            live = await eventually(progress, lambda p: p.code_delivery == "sent", handle)
            await handle.terminate("the test has what it needs")
        # A query on the closed flow replays all of it: it must find what the live flow held.
        async with Worker(
            env.client, task_queue=task_queue, workflows=[SsoSetupWorkflow], max_cached_workflows=0
        ):
            assert await progress(handle) == live
    assert runner.split == 1
    history = await handle.fetch_history()
    _assert_one_task_carried_both(history)
    return result, history, fake


def _assert_one_task_carried_both(history: WorkflowHistory) -> None:
    """The update was sequenced by the workflow task the code's completion scheduled: else
    this test would prove nothing."""
    events = list(history.events)
    send_code = next(
        e.event_id
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == "send_code"
    )
    completed = next(
        i
        for i, e in enumerate(events)
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
        and e.activity_task_completed_event_attributes.scheduled_event_id == send_code
    )
    scheduled = events[completed + 1]
    assert scheduled.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED
    accepted = [
        e.workflow_execution_update_accepted_event_attributes.accepted_request_sequencing_event_id
        for e in events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
    ]
    assert scheduled.event_id in accepted, (scheduled.event_id, accepted)


async def replay(history: WorkflowHistory) -> None:
    replayer = Replayer(
        workflows=[SsoSetupWorkflow], namespace="default", data_converter=data_converter(make_settings())
    )
    await replayer.replay_workflow(history)


async def test_a_code_confirmed_as_its_delivery_reaches_a_cold_worker_replays(
    temporal_dev_env: WorkflowEnvironment,
) -> None:
    result, history, fake = await coincide(
        temporal_dev_env, "confirm_code", ConfirmCodeRequest(code_digest="digest-1")
    )
    assert result == StepResult(ok=True, step="mfa_pending")
    assert len(fake.confirmed) == 1
    await replay(history)


async def test_a_resend_as_the_first_code_reaches_a_cold_worker_replays(
    temporal_dev_env: WorkflowEnvironment,
) -> None:
    result, history, fake = await coincide(temporal_dev_env, "resend_code", StepRequest())
    assert result.ok and result.step == "code_sent"
    assert len(fake.codes) == 2
    await replay(history)
