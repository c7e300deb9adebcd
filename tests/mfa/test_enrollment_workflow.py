"""The MfaEnrollment and MfaPolicyRollout workflows on the time-skipping test server, with
stand-in activities: reminders at their offsets, none once the person enrolled, the deadline,
the admin's one extension, the optional policy's single reminder, and the paced rollout."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
from temporalio import activity
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.inputs import (
    MfaReminderInput,
    ObligationCheck,
    ObligationCheckInput,
    ObligationRecord,
    RolloutBatchInput,
    RolloutPerson,
)
from core import flow_errors
from core.flow_errors import PERMANENT_EMAIL_ERROR
from core.search_attributes import SSO_MFA_DUE, SSO_MFA_REMINDERS, SSO_MFA_STEP, SSO_STAFF_ID
from tests.support.config import time_skipping_server
from workflows.mfa_enrollment import (
    ALREADY_EXTENDED,
    NOTHING_DUE,
    MfaEnrollmentWorkflow,
    enrollment_workflow_id,
)
from workflows.mfa_rollout import MfaPolicyRolloutWorkflow, MfaRolloutInput
from workflows.mfa_types import ExtendRequest, MfaEnrollmentInput, SecondFactorAdded

pytestmark = pytest.mark.asyncio(loop_scope="session")

DAY = timedelta(days=1)
OFFSETS = [3 * DAY, 7 * DAY, 13 * DAY]
GRACE = 14 * DAY
MINUTE = timedelta(minutes=1)
ORG_ID = str(uuid.uuid4())


@dataclass
class Reminder:
    data: MfaReminderInput
    at: datetime


@dataclass
class FakeMfaActivities:
    owed: bool = True
    records: list[ObligationRecord] = field(default_factory=list)
    reminders: list[Reminder] = field(default_factory=list)
    people: list[str] = field(default_factory=list)
    batches: list[RolloutBatchInput] = field(default_factory=list)
    people_batches: int = 0  # of them, how many asked for people with their organisation
    refuse_email: bool = False  # as the mail server refusing the address for good

    @activity.defn(name="record_mfa_obligation")
    async def record_mfa_obligation(self, data: ObligationRecord) -> None:
        self.records.append(data)

    @activity.defn(name="check_mfa_obligation")
    async def check_mfa_obligation(self, data: ObligationCheckInput) -> ObligationCheck:
        return ObligationCheck(owed=self.owed, reason="pending" if self.owed else "enrolled")

    @activity.defn(name="send_mfa_reminder")
    async def send_mfa_reminder(self, data: MfaReminderInput) -> None:
        if self.refuse_email:
            raise ApplicationError("550 no such mailbox", type=PERMANENT_EMAIL_ERROR, non_retryable=True)
        self.reminders.append(Reminder(data, activity.info().scheduled_time))

    @activity.defn(name="next_mfa_rollout_batch")
    async def next_mfa_rollout_batch(self, data: RolloutBatchInput) -> list[str]:
        self.batches.append(data)
        after = [p for p in sorted(self.people) if data.after is None or p > data.after]
        return after[: data.limit]

    @activity.defn(name="next_mfa_rollout_people")
    async def next_mfa_rollout_people(self, data: RolloutBatchInput) -> list[RolloutPerson]:
        self.people_batches += 1
        return [RolloutPerson(p, ORG_ID) for p in await self.next_mfa_rollout_batch(data)]

    @property
    def last(self) -> ObligationRecord:
        return self.records[-1]


@asynccontextmanager
async def running(fake: FakeMfaActivities) -> AsyncIterator[tuple[WorkflowEnvironment, str]]:
    task_queue = f"mfa-test-{uuid.uuid4()}"
    async with time_skipping_server() as env:
        async with Worker(
            env.client,
            task_queue=task_queue,
            workflows=[MfaEnrollmentWorkflow, MfaPolicyRolloutWorkflow],
            activities=[
                fake.record_mfa_obligation,
                fake.check_mfa_obligation,
                fake.send_mfa_reminder,
                fake.next_mfa_rollout_batch,
                fake.next_mfa_rollout_people,
            ],
        ):
            yield env, task_queue


async def start(
    env: WorkflowEnvironment, task_queue: str, fake: FakeMfaActivities, policy: str = "required"
) -> tuple[WorkflowHandle[MfaEnrollmentWorkflow, str], datetime]:
    staff_id = str(uuid.uuid4())
    handle = await env.client.start_workflow(
        MfaEnrollmentWorkflow.run,
        MfaEnrollmentInput(
            staff_id=staff_id,
            policy=policy,
            reminder_offsets_seconds=[o.total_seconds() for o in OFFSETS],
            grace_seconds=GRACE.total_seconds(),
        ),
        id=enrollment_workflow_id(staff_id),
        task_queue=task_queue,
    )
    # What the offsets count from: the flow's own start, as it records it.
    await settled(lambda: any(r.staff_id == staff_id for r in fake.records))
    return handle, next(r.started_at for r in fake.records if r.staff_id == staff_id)


async def progress_step(handle: WorkflowHandle[MfaEnrollmentWorkflow, str]) -> str:
    return (await handle.query(MfaEnrollmentWorkflow.progress)).step


async def settled(check: Callable[[], bool]) -> None:
    """A skipped timer has fired when `env.sleep` returns; what follows it (activities, the
    record) runs in real time, and time stands still meanwhile, so polling is safe."""
    async with asyncio.timeout(10):
        while not check():
            await asyncio.sleep(0.02)


async def reminded(fake: FakeMfaActivities, count: int) -> None:
    await settled(lambda: len(fake.reminders) >= count)
    assert len(fake.reminders) == count


async def at_step(
    handle: WorkflowHandle[MfaEnrollmentWorkflow, str], fake: FakeMfaActivities, step: str
) -> None:
    await settled(lambda: bool(fake.records) and fake.last.step == step)
    assert await progress_step(handle) == step


async def test_required_reminds_at_each_offset_then_the_deadline_passes() -> None:
    fake = FakeMfaActivities()
    async with running(fake) as (env, task_queue):
        handle, started_at = await start(env, task_queue, fake)
        await env.sleep(3 * DAY - MINUTE)
        assert fake.reminders == []
        await env.sleep(2 * MINUTE)
        await reminded(fake, 1)
        await env.sleep(10 * DAY)
        await reminded(fake, 3)
        await at_step(handle, fake, "reminded")
        await env.sleep(DAY)
        await at_step(handle, fake, "overdue")
        sent = [r.at - started_at for r in fake.reminders]
        for offset, gap in zip(OFFSETS, sent, strict=True):
            assert offset <= gap < offset + MINUTE
        assert all(r.data.required and r.data.due_at == started_at + GRACE for r in fake.reminders)
        assert (fake.last.step, fake.last.reminders_sent) == ("overdue", 3)
        assert fake.last.due_at == started_at + GRACE
        attributes = (await handle.describe()).typed_search_attributes
        assert attributes.get(SSO_MFA_STEP) == "overdue"
        assert attributes.get(SSO_MFA_REMINDERS) == 3
        assert attributes.get(SSO_MFA_DUE) == started_at + GRACE
        assert attributes.get(SSO_STAFF_ID) is None  # set by whoever starts it, not by the flow
        await env.sleep(30 * DAY)
        assert len(fake.reminders) == 3  # overdue: no more emails, sign-in enforces it
        # Setting MFA up past the deadline ends it.
        fake.owed = False
        await handle.signal(MfaEnrollmentWorkflow.second_factor_added, SecondFactorAdded())
        assert await handle.result() == "done"
        assert fake.last.step == "done"


async def test_no_reminder_for_a_person_who_enrolled_meanwhile() -> None:
    """No signal reached the flow (the web app could not send it): the check before the next
    reminder finds the factor, and nothing more is sent."""
    fake = FakeMfaActivities()
    async with running(fake) as (env, task_queue):
        handle, _ = await start(env, task_queue, fake)
        await env.sleep(3 * DAY + MINUTE)
        await reminded(fake, 1)
        fake.owed = False
        assert await handle.result() == "done"
        await reminded(fake, 1)
        assert fake.last.step == "done"


async def test_the_signal_ends_it_before_any_reminder() -> None:
    fake = FakeMfaActivities()
    async with running(fake) as (env, task_queue):
        handle, _ = await start(env, task_queue, fake)
        await env.sleep(DAY)
        fake.owed = False
        await handle.signal(MfaEnrollmentWorkflow.second_factor_added, SecondFactorAdded())
        assert await handle.result() == "done"
        assert fake.reminders == []


async def test_a_signal_the_database_does_not_confirm_changes_nothing() -> None:
    fake = FakeMfaActivities()
    async with running(fake) as (env, task_queue):
        handle, _ = await start(env, task_queue, fake)
        await env.sleep(DAY)
        await handle.signal(MfaEnrollmentWorkflow.second_factor_added, SecondFactorAdded())
        await env.sleep(2 * DAY + MINUTE)
        await reminded(fake, 1)
        await at_step(handle, fake, "reminded")
        await handle.terminate()


async def test_an_admin_extends_once_and_a_second_extension_is_refused() -> None:
    fake = FakeMfaActivities()
    async with running(fake) as (env, task_queue):
        handle, _ = await start(env, task_queue, fake)
        await env.sleep(GRACE + MINUTE)
        await at_step(handle, fake, "overdue")
        now = await env.get_current_time()
        result = await handle.execute_update(MfaEnrollmentWorkflow.extend, ExtendRequest("admin:Morgan"))
        assert now + GRACE <= result.due_at < now + GRACE + MINUTE
        await at_step(handle, fake, "reminded")
        assert (fake.last.extended_by, fake.last.due_at) == ("admin:Morgan", result.due_at)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(MfaEnrollmentWorkflow.extend, ExtendRequest(actor="admin:Other"))
        assert refused.value.cause.message == ALREADY_EXTENDED  # type: ignore[attr-defined]
        assert refused.value.cause.type == flow_errors.MFA_ALREADY_EXTENDED  # type: ignore[attr-defined]
        assert fake.last.extended_by == "admin:Morgan"
        await env.sleep(GRACE - DAY)
        await at_step(handle, fake, "reminded")
        await env.sleep(DAY + MINUTE)
        await at_step(handle, fake, "overdue")
        assert len(fake.reminders) == 3  # the extension adds time, not emails
        await handle.terminate()


async def test_an_extension_before_the_deadline_moves_it_by_the_grace() -> None:
    fake = FakeMfaActivities()
    async with running(fake) as (env, task_queue):
        handle, started_at = await start(env, task_queue, fake)
        await env.sleep(5 * DAY)
        result = await handle.execute_update(MfaEnrollmentWorkflow.extend, ExtendRequest("admin:Morgan"))
        assert result.due_at == started_at + 2 * GRACE
        await env.sleep(GRACE)
        await at_step(handle, fake, "reminded")  # the first deadline passed unenforced
        await env.sleep(GRACE)
        await at_step(handle, fake, "overdue")
        await handle.terminate()


async def test_optional_sends_one_reminder_at_the_grace_then_ends() -> None:
    fake = FakeMfaActivities()
    async with running(fake) as (env, task_queue):
        handle, started_at = await start(env, task_queue, fake, policy="optional")
        await env.sleep(GRACE - MINUTE)
        assert fake.reminders == []
        with pytest.raises(WorkflowUpdateFailedError) as refused:  # no deadline to extend
            await handle.execute_update(MfaEnrollmentWorkflow.extend, ExtendRequest(actor="admin:Morgan"))
        assert refused.value.cause.message == NOTHING_DUE  # type: ignore[attr-defined]
        assert await handle.result() == "ended"
        assert len(fake.reminders) == 1 and not fake.reminders[0].data.required
        assert GRACE <= fake.reminders[0].at - started_at < GRACE + MINUTE
        assert (fake.last.step, fake.last.reminders_sent) == ("ended", 1)


async def test_optional_does_not_remind_a_person_who_enrolled() -> None:
    fake = FakeMfaActivities(owed=False)
    async with running(fake) as (env, task_queue):
        handle, _ = await start(env, task_queue, fake, policy="optional")
        assert await handle.result() == "done"
        assert fake.reminders == []


# Rollouts started before people came with their organisation (with_org_ids) run as they did.
@pytest.mark.parametrize("with_org_ids", [False, True])
async def test_the_rollout_starts_each_obligation_once_in_paced_batches(with_org_ids: bool) -> None:
    fake = FakeMfaActivities(people=sorted(str(uuid.uuid4()) for _ in range(5)))
    async with running(fake) as (env, task_queue):
        # One person's obligation already runs: the rollout leaves it as it is. Another's runs
        # under `optional`: it starts again under `required`.
        running_one, _ = await start(env, task_queue, fake)
        optional_one, _ = await start(env, task_queue, fake, policy="optional")
        upgraded = optional_one.id.removeprefix("mfa-enrollment-")
        fake.people += [running_one.id.removeprefix("mfa-enrollment-"), upgraded]
        fake.people.sort()
        rollout = await env.client.start_workflow(
            MfaPolicyRolloutWorkflow.run,
            MfaRolloutInput(
                reminder_offsets_seconds=[o.total_seconds() for o in OFFSETS],
                grace_seconds=GRACE.total_seconds(),
                batch_size=2,
                batches_per_run=2,
                with_org_ids=with_org_ids,
            ),
            id=f"rollout-{uuid.uuid4()}",
            task_queue=task_queue,
        )
        result = await rollout.result()
        assert (result.started, result.skipped, result.done) == (5, 2, True)
        # Two batches of two per run: the 7 people took two more runs (continue-as-new), the
        # last of which found nobody left.
        assert [len(b.after or "") > 0 for b in fake.batches] == [False, True, True, True, True]
        assert fake.people_batches == (5 if with_org_ids else 0)
        await settled(lambda: any(r.staff_id == upgraded and r.policy == "required" for r in fake.records))
        assert (await optional_one.query(MfaEnrollmentWorkflow.progress)).policy == "required"
        for staff_id in fake.people:
            described = await env.client.get_workflow_handle(enrollment_workflow_id(staff_id)).describe()
            assert described.workflow_type == "MfaEnrollment"
            assert described.typed_search_attributes.get(SSO_STAFF_ID) in (staff_id, None)
        await env.sleep(3 * DAY + MINUTE)
        await reminded(fake, 7)


async def test_an_undeliverable_reminder_leaves_the_deadline_standing() -> None:
    fake = FakeMfaActivities()
    fake.refuse_email = True
    async with running(fake) as (env, task_queue):
        handle, _ = await start(env, task_queue, fake)
        await env.sleep(GRACE + MINUTE)
        await at_step(handle, fake, "overdue")
        assert fake.last.reminders_sent == 0
        await handle.terminate()
