"""The SsoSetup page steps (password, emailed code, resend, MFA) on the time-skipping server.

Same approach as tests/setup/test_workflow.py: this module's own time-skipping server with
the encrypting data converter and the search attributes registered, stand-in activities
under the real activity names, a fresh task queue and workflow id per test. Every flow ends
inside its test (a running flow whose worker is gone blocks time skipping for the module).

Facts these tests rely on (see that module and docs/temporal.md §6, §9):
- a validator's rejection reaches the caller as WorkflowUpdateFailedError whose cause is
  the ApplicationError, and writes no history;
- an update sent to a completed workflow fails with RPCError NOT_FOUND;
- a new code is emailed beside the page (the update returns before send_code finishes), so
  tests wait for `progress.code_delivery == "sent"` before typing the code.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.converter import decode_typed_search_attributes
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

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
    VerifyTotpInput,
    VerifyTotpResult,
)
from core.codec import ENCODING, EncryptionCodec, keyring_from_settings
from core.sealing import password_context, seal
from core.search_attributes import SSO_STAFF_ID, SSO_STEP
from tests.support.config import TEST_SEAL_PUBLIC_KEY, make_settings, time_skipping_server
from tests.support.workflows import eventually, fields_named, not_found, payloads, rejected
from workflows.common import StepRequest
from workflows.setup import (
    ConfirmCodeRequest,
    EmailRetry,
    EndRequest,
    SetPasswordRequest,
    SetupOutcome,
    SetupProgress,
    SsoSetupInput,
    SsoSetupWorkflow,
    StepResult,
    TotpRequest,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")


LINK_TTL = timedelta(minutes=15)
SETUP_TTL = timedelta(hours=24)
CODE_TTL = timedelta(minutes=10)
RESEND_INTERVAL = timedelta(seconds=60)
AFTER_RESEND_INTERVAL = RESEND_INTERVAL + timedelta(seconds=1)
MASKED_EMAIL = "j***@example.com"
ACTOR = "admin-key:a"
PASSWORD = "Correct-Horse-Battery-Staple-42"
GOOD_TOTP = "sealed1.good"
BAD_TOTP = "sealed1.bad"
TOTP_MISMATCH = "That code didn't match."
NEW_CODE_SENT = "We've sent you a new code. Earlier codes no longer work."
CODE_EXPIRED = "This code has expired. Click Send a new code."
TOO_MANY_CODES = "Too many incorrect codes. Click Send a new code."
CODE_BURNT = "Incorrect code. This code can no longer be used; click Send a new code."
DEADLINE_REASON = "setup was not finished in time after the link was used"
# Real-time guard against hangs only: every test here takes well under a few seconds.
GUARD_SECONDS = 30


# -- server -----------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    """This module's own time-skipping server (not conftest's shared `temporal_env`)."""
    async with time_skipping_server() as server:
        yield server


@pytest_asyncio.fixture(loop_scope="session")
async def private_env() -> AsyncIterator[WorkflowEnvironment]:
    """A server for one test whose flow may end with an activity still running (the
    server then never skips time again, temporalio/sdk-java#1138)."""
    async with time_skipping_server() as server:
        yield server


# -- stand-in activities ----------------------------------------------------------------


@dataclass
class FakeActivities:
    """Stand-ins registered under the real activity names; each records its inputs.

    `password_results` are what store_password returns on its 1st, 2nd, ... call (then ok).
    With `block_store`, store_password waits for `release_store` after recording its input.
    send_code returns the digest "digest-N" for its N-th call.
    """

    password_results: list[StorePasswordResult] = field(default_factory=list)
    block_store: bool = False
    emails: list[SendSetupEmailInput] = field(default_factory=list)
    closed: list[CloseSetupInput] = field(default_factory=list)
    stored: list[StorePasswordInput] = field(default_factory=list)
    codes: list[SendCodeInput] = field(default_factory=list)
    codes_sent_at: list[datetime] = field(default_factory=list)
    confirmed: list[StaffStepInput] = field(default_factory=list)
    totps: list[VerifyTotpInput] = field(default_factory=list)
    activated: list[ActivateInput] = field(default_factory=list)
    audits: list[AuditInput] = field(default_factory=list)
    opened: list[StaffStepInput] = field(default_factory=list)
    store_started: asyncio.Event = field(default_factory=asyncio.Event)
    release_store: asyncio.Event = field(default_factory=asyncio.Event)
    # With `block_email`, send_setup_email waits for `release_email` (the email is out, its
    # result not yet back with the flow).
    block_email: bool = False
    email_started: asyncio.Event = field(default_factory=asyncio.Event)
    release_email: asyncio.Event = field(default_factory=asyncio.Event)

    @activity.defn(name="send_setup_email")
    async def send_setup_email(self, data: SendSetupEmailInput) -> SendSetupEmailResult:
        self.emails.append(data)
        self.email_started.set()
        if self.block_email:
            await self.release_email.wait()
        scheduled = activity.info().current_attempt_scheduled_time
        return SendSetupEmailResult(
            sent_at=scheduled,
            link_expires_at=scheduled + timedelta(seconds=data.link_ttl_seconds),
            masked_email=MASKED_EMAIL,
            attempts=activity.info().attempt,
        )

    @activity.defn(name="close_setup")
    async def close_setup(self, data: CloseSetupInput) -> None:
        self.closed.append(data)

    @activity.defn(name="store_password")
    async def store_password(self, data: StorePasswordInput) -> StorePasswordResult:
        self.stored.append(data)
        self.store_started.set()
        if self.block_store:
            await self.release_store.wait()
        if len(self.stored) <= len(self.password_results):
            return self.password_results[len(self.stored) - 1]
        return StorePasswordResult(ok=True)

    @activity.defn(name="send_code")
    async def send_code(self, data: SendCodeInput) -> SendCodeResult:
        self.codes.append(data)
        self.codes_sent_at.append(activity.info().current_attempt_scheduled_time)
        return SendCodeResult(code_digest=f"digest-{len(self.codes)}", sent_at=self.codes_sent_at[-1])

    @activity.defn(name="confirm_email")
    async def confirm_email(self, data: StaffStepInput) -> None:
        self.confirmed.append(data)

    @activity.defn(name="verify_totp")
    async def verify_totp(self, data: VerifyTotpInput) -> VerifyTotpResult:
        self.totps.append(data)
        if data.sealed_code == GOOD_TOTP:
            return VerifyTotpResult(ok=True)
        return VerifyTotpResult(ok=False, message=TOTP_MISMATCH)

    @activity.defn(name="activate_account")
    async def activate_account(self, data: ActivateInput) -> None:
        self.activated.append(data)

    @activity.defn(name="record_audit")
    async def record_audit(self, data: AuditInput) -> None:
        self.audits.append(data)

    @activity.defn(name="record_link_opened")
    async def record_link_opened(self, data: StaffStepInput) -> None:
        self.opened.append(data)

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.send_setup_email,
            self.close_setup,
            self.store_password,
            self.send_code,
            self.confirm_email,
            self.verify_totp,
            self.activate_account,
            self.record_audit,
            self.record_link_opened,
        ]


# -- flow helpers -----------------------------------------------------------------------


@dataclass
class Flow:
    handle: WorkflowHandle[SsoSetupWorkflow, SetupOutcome]
    staff_id: str
    setup_id: str
    fake: FakeActivities

    async def update(self, name: str, *args: Any, id: str | None = None) -> StepResult:
        return await self.handle.execute_update(name, *args, id=id, result_type=StepResult)

    async def set_password(self, id: str | None = None, sealed: str | None = None) -> StepResult:
        request = SetPasswordRequest(
            sealed_password=sealed
            or seal(TEST_SEAL_PUBLIC_KEY, PASSWORD.encode(), password_context(self.handle.id)),
            link_id=str(uuid.uuid4()),
            session_hash="session-hash-1",
        )
        return await self.update("set_password", request, id=id)

    async def confirm(self, digest: str) -> StepResult:
        return await self.update("confirm_code", ConfirmCodeRequest(code_digest=digest))

    async def progress(self) -> SetupProgress:
        return await self.handle.query("progress", result_type=SetupProgress)

    async def step_attribute(self) -> str | None:
        return (await self.handle.describe()).typed_search_attributes.get(SSO_STEP)

    async def wait_for_code(self, number: int) -> SetupProgress:
        """Until the `number`-th code's email is out and the flow holds its digest."""
        return await eventually(
            self.progress,
            lambda p: (
                p.code_delivery == "sent" and len(self.fake.codes) == number and p.code_attempts_left > 0
            ),
        )


def new_task_queue() -> str:
    return f"sso-steps-test-{uuid.uuid4()}"


async def start_flow(env: WorkflowEnvironment, task_queue: str, fake: FakeActivities) -> Flow:
    """Start a flow the way api/services/setup_admin.py does."""
    staff_id = str(uuid.uuid4())
    setup_id = str(uuid.uuid4())
    handle = await env.client.start_workflow(
        "SsoSetup",
        SsoSetupInput(
            setup_id=setup_id,
            staff_id=staff_id,
            link_ttl_seconds=int(LINK_TTL.total_seconds()),
            requested_by=ACTOR,
            email_retry=EmailRetry(),
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
    )
    return Flow(handle=handle, staff_id=staff_id, setup_id=setup_id, fake=fake)


@asynccontextmanager
async def running_flow(env: WorkflowEnvironment, fake: FakeActivities) -> AsyncIterator[Flow]:
    """A worker and a flow whose email is out (step email_sent), guarded against hangs.

    A flow still running when the test leaves (a failed assertion) is terminated, so it
    cannot block time skipping for the tests after it.
    """
    task_queue = new_task_queue()
    async with (
        asyncio.timeout(GUARD_SECONDS),
        Worker(env.client, task_queue=task_queue, workflows=[SsoSetupWorkflow], activities=fake.all()),
    ):
        flow = await start_flow(env, task_queue, fake)
        try:
            await eventually(flow.progress, lambda p: p.step == "email_sent")
            yield flow
        finally:
            fake.release_store.set()
            with suppress(RPCError):
                if (await flow.handle.describe()).status == WorkflowExecutionStatus.RUNNING:
                    await flow.handle.terminate("test left the flow running")


async def reach_code_sent(flow: Flow) -> SetupProgress:
    assert await flow.set_password() == StepResult(ok=True, step="password_set")
    progress = await flow.wait_for_code(1)
    assert progress.step == "code_sent"
    return progress


async def reach_mfa_pending(flow: Flow) -> None:
    await reach_code_sent(flow)
    assert await flow.confirm("digest-1") == StepResult(ok=True, step="mfa_pending")


async def update_events(flow: Flow) -> list[HistoryEvent]:
    history = await flow.handle.fetch_history()
    return [
        event
        for event in history.events
        if event.event_type
        in (
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED,
        )
    ]


async def step_history(flow: Flow) -> list[str]:
    """Every SsoStep value the flow upserted, in order."""
    history = await flow.handle.fetch_history()
    steps = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            attributes = decode_typed_search_attributes(
                event.upsert_workflow_search_attributes_event_attributes.search_attributes
            )
            value = attributes.get(SSO_STEP)
            assert value is not None
            steps.append(value)
    return steps


# -- 1. happy path without MFA --------------------------------------------------------


async def test_happy_path_without_mfa(env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with running_flow(env, fake) as flow:
        before = await flow.progress()
        assert (before.code_delivery, before.code_sent_at, before.setup_expires_at) == ("none", None, None)
        assert await flow.step_attribute() == "email_sent"

        assert await flow.set_password() == StepResult(ok=True, step="password_set")
        progress = await flow.wait_for_code(1)
        assert progress.step == "code_sent"
        assert progress.code_delivery == "sent"
        assert progress.code_attempts_left == 5
        assert progress.code_sent_at is not None
        assert progress.code_sent_at >= fake.codes_sent_at[0]
        assert progress.code_expires_at == progress.code_sent_at + CODE_TTL
        assert progress.resends_left == 5
        assert progress.wrong_codes_total == 0
        assert progress.next_resend_at is not None
        assert progress.next_resend_at <= progress.code_sent_at + RESEND_INTERVAL
        assert progress.setup_expires_at is not None
        assert (
            SETUP_TTL - timedelta(seconds=5)
            < (progress.setup_expires_at - progress.code_sent_at)
            <= SETUP_TTL
        )
        # The flow is at code_sent; SsoStep shows it from the next step on (docs/temporal.md §24).
        assert await flow.step_attribute() == "password_set"

        assert await flow.confirm("digest-1") == StepResult(ok=True, step="mfa_pending")
        assert (await flow.progress()).step == "mfa_pending"
        assert await flow.update("skip_mfa", StepRequest()) == StepResult(ok=True, step="active")

        assert await flow.handle.result() == SetupOutcome(state="active")
        assert await flow.step_attribute() == "active"
        assert await step_history(flow) == [
            "email_sent",
            "link_opened",
            "password_set",
            # no code_sent: the code's delivery writes no command (docs/temporal.md §24)
            "mfa_pending",
            "active",
        ]

    assert len(fake.stored) == 1
    stored = fake.stored[0]
    assert stored.sealed_password.startswith("sealed1.")
    assert (stored.staff_id, stored.setup_id, stored.workflow_id) == (
        flow.staff_id,
        flow.setup_id,
        flow.handle.id,
    )
    assert stored.session_hash == "session-hash-1"
    assert stored.session_ttl_seconds == int(SETUP_TTL.total_seconds())
    assert [(c.purpose, c.code_ttl_seconds, c.workflow_id) for c in fake.codes] == [
        ("setup", int(CODE_TTL.total_seconds()), flow.handle.id)
    ]
    assert [c.staff_id for c in fake.confirmed] == [flow.staff_id]
    assert [(a.staff_id, a.setup_id, a.mfa) for a in fake.activated] == [
        (flow.staff_id, flow.setup_id, False)
    ]
    assert fake.totps == []
    assert fake.audits == []
    assert fake.closed == []


async def test_every_step_is_retried_within_seconds_when_its_worker_dies(env: WorkflowEnvironment) -> None:
    """A killed worker's activity is retried only when its start-to-close timeout runs out:
    each is sized to its step (seconds), not a minute (issue 12)."""
    fake = FakeActivities()
    async with running_flow(env, fake) as flow:
        assert (await flow.set_password()).ok
        await flow.wait_for_code(1)
        assert (await flow.confirm("digest-1")).ok
        assert (await flow.update("skip_mfa", StepRequest())).ok
        assert await flow.handle.result() == SetupOutcome(state="active")
        history = await flow.handle.fetch_history()
    scheduled = {
        attributes.activity_type.name: attributes.start_to_close_timeout.ToTimedelta()
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        for attributes in [e.activity_task_scheduled_event_attributes]
    }
    assert set(scheduled) == {
        "send_setup_email",
        "store_password",
        "send_code",
        "confirm_email",
        "activate_account",
    }
    for name, timeout in scheduled.items():
        assert timeout <= timedelta(seconds=15), (name, timeout)
    assert scheduled["send_setup_email"] == scheduled["send_code"] == EmailRetry().attempt_timeout()


# -- 2. with MFA ----------------------------------------------------------------------


async def test_mfa_bad_code_then_good_code_activates_with_mfa(env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with running_flow(env, fake) as flow:
        await reach_mfa_pending(flow)

        assert await flow.update("complete_mfa", TotpRequest(sealed_code=BAD_TOTP)) == (
            StepResult(ok=False, step="mfa_pending", message=TOTP_MISMATCH)
        )
        assert (await flow.progress()).step == "mfa_pending"
        assert await flow.step_attribute() == "mfa_pending"
        assert fake.activated == []

        assert await flow.update("complete_mfa", TotpRequest(sealed_code=GOOD_TOTP)) == (
            StepResult(ok=True, step="active")
        )
        assert await flow.handle.result() == SetupOutcome(state="active")
        assert await flow.step_attribute() == "active"

    assert [(t.sealed_code, t.staff_id, t.workflow_id) for t in fake.totps] == [
        (BAD_TOTP, flow.staff_id, flow.handle.id),
        (GOOD_TOTP, flow.staff_id, flow.handle.id),
    ]
    assert [a.mfa for a in fake.activated] == [True]
    assert fake.closed == []


# -- 3. wrong codes to exhaustion, then a resend --------------------------------------


async def test_wrong_codes_to_exhaustion_then_a_new_code_starts_over(
    env: WorkflowEnvironment,
) -> None:
    fake = FakeActivities()
    async with running_flow(env, fake) as flow:
        await reach_code_sent(flow)

        messages = [(await flow.confirm(f"wrong-{n}")).message for n in range(5)]
        assert messages == [
            "Incorrect code, 4 attempts left",
            "Incorrect code, 3 attempts left",
            "Incorrect code, 2 attempts left",
            "Incorrect code, 1 attempt left",
            CODE_BURNT,
        ]
        progress = await flow.progress()
        assert (progress.step, progress.code_attempts_left, progress.wrong_codes_total) == ("code_sent", 0, 5)

        # The right code no longer helps, and refusing it is not another failure.
        assert await flow.confirm("digest-1") == StepResult(
            ok=False, step="code_sent", message=TOO_MANY_CODES
        )
        assert fake.confirmed == []
        assert [(a.action, a.outcome, a.target, a.details) for a in fake.audits] == [
            ("code.failed", "failure", flow.staff_id, {"attempts_left": str(left)})
            for left in (4, 3, 2, 1, 0)
        ]
        assert {a.actor for a in fake.audits} == {f"staff:{flow.staff_id}"}

        await env.sleep(AFTER_RESEND_INTERVAL)
        assert await flow.update("resend_code", StepRequest()) == StepResult(
            ok=True, step="code_sent", message=NEW_CODE_SENT
        )
        progress = await flow.wait_for_code(2)
        assert (progress.code_attempts_left, progress.wrong_codes_total) == (5, 5)

        # The count starts over for the new code; the total keeps counting.
        assert (await flow.confirm("wrong-again")).message == "Incorrect code, 4 attempts left"
        progress = await flow.progress()
        assert (progress.code_attempts_left, progress.wrong_codes_total) == (4, 6)

        assert await flow.confirm("digest-2") == StepResult(ok=True, step="mfa_pending")
        assert await flow.update("skip_mfa", StepRequest()) == StepResult(ok=True, step="active")
        assert await flow.handle.result() == SetupOutcome(state="active")

    assert len(fake.audits) == 6
    assert len(fake.confirmed) == 1


# -- 4. resend throttle and replacement -----------------------------------------------


TOO_SOON = re.compile(r"You can ask for a new code in (\d+) seconds\.")


async def test_resend_is_throttled_replaces_the_code_and_is_limited(
    env: WorkflowEnvironment,
) -> None:
    fake = FakeActivities()
    async with running_flow(env, fake) as flow:
        first = await reach_code_sent(flow)
        assert first.code_sent_at is not None

        refusal = await rejected(flow.update("resend_code", StepRequest()))
        assert refusal.type == "TooSoon"
        match = TOO_SOON.fullmatch(refusal.message)
        assert match is not None, refusal.message
        assert 1 <= int(match.group(1)) <= 60
        assert len(fake.codes) == 1

        await env.sleep(timedelta(seconds=30))
        refusal = await rejected(flow.update("resend_code", StepRequest()))
        assert refusal.type == "TooSoon"
        match = TOO_SOON.fullmatch(refusal.message)
        assert match is not None, refusal.message
        assert 1 <= int(match.group(1)) <= 31

        await env.sleep(timedelta(seconds=31))
        assert await flow.update("resend_code", StepRequest()) == StepResult(
            ok=True, step="code_sent", message=NEW_CODE_SENT
        )
        second = await flow.wait_for_code(2)
        assert second.code_sent_at is not None and second.code_sent_at > first.code_sent_at
        assert second.code_expires_at == second.code_sent_at + CODE_TTL
        assert second.resends_left == 4
        # The old code stopped working (and counts as a wrong code for the new one).
        assert await flow.confirm("digest-1") == StepResult(
            ok=False, step="code_sent", message="Incorrect code, 4 attempts left"
        )

        for number in range(3, 7):  # resends 2 to 5
            refusal = await rejected(flow.update("resend_code", StepRequest()))
            assert refusal.type == "TooSoon"
            await env.sleep(AFTER_RESEND_INTERVAL)
            assert (await flow.update("resend_code", StepRequest())).ok
            progress = await flow.wait_for_code(number)
            assert progress.resends_left == 6 - number
        await env.sleep(AFTER_RESEND_INTERVAL)
        refusal = await rejected(flow.update("resend_code", StepRequest()))
        assert refusal.type == "TooManyCodes"
        assert len(fake.codes) == 6

        # Neither the first code nor the one just before works (2 of the 5 attempts).
        assert (await flow.confirm("digest-5")).message == "Incorrect code, 4 attempts left"
        assert (await flow.confirm("digest-1")).message == "Incorrect code, 3 attempts left"
        assert await flow.confirm("digest-6") == StepResult(ok=True, step="mfa_pending")
        assert await flow.update("skip_mfa", StepRequest()) == StepResult(ok=True, step="active")
        assert await flow.handle.result() == SetupOutcome(state="active")


async def test_resend_wait_message_with_one_second_left(env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with running_flow(env, fake) as flow:
        progress = await reach_code_sent(flow)
        assert progress.next_resend_at is not None
        # Server time, not wall-clock: land 0.9 s before the next resend is allowed.
        left = progress.next_resend_at - await env.get_current_time()
        await env.sleep(left - timedelta(seconds=0.9))
        refusal = await rejected(flow.update("resend_code", StepRequest()))
        assert refusal.type == "TooSoon"
        await flow.handle.terminate("test done")
        assert refusal.message == "You can ask for a new code in 1 second."


# -- 5. code expiry -------------------------------------------------------------------


async def test_code_expires_after_ten_minutes(env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with running_flow(env, fake) as flow:
        await reach_code_sent(flow)

        await env.sleep(timedelta(minutes=11))
        assert await flow.confirm("digest-1") == StepResult(ok=False, step="code_sent", message=CODE_EXPIRED)
        # An expired code is not a wrong guess.
        assert await flow.confirm("wrong") == StepResult(ok=False, step="code_sent", message=CODE_EXPIRED)
        assert (await flow.progress()).wrong_codes_total == 0
        assert fake.audits == []
        assert fake.confirmed == []

        assert (await flow.update("resend_code", StepRequest())).ok
        await flow.wait_for_code(2)
        assert await flow.confirm("digest-2") == StepResult(ok=True, step="mfa_pending")
        assert await flow.update("skip_mfa", StepRequest()) == StepResult(ok=True, step="active")
        assert await flow.handle.result() == SetupOutcome(state="active")


async def test_code_still_works_just_before_it_expires(env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with running_flow(env, fake) as flow:
        await reach_code_sent(flow)
        await env.sleep(timedelta(minutes=9, seconds=50))
        assert await flow.confirm("digest-1") == StepResult(ok=True, step="mfa_pending")
        assert await flow.update("skip_mfa", StepRequest()) == StepResult(ok=True, step="active")
        assert await flow.handle.result() == SetupOutcome(state="active")


# -- 6. setup deadline ----------------------------------------------------------------


async def test_setup_not_finished_within_a_day_expires(env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with running_flow(env, fake) as flow:
        await reach_code_sent(flow)

        await env.sleep(SETUP_TTL - timedelta(minutes=1))
        assert (await flow.handle.describe()).status == WorkflowExecutionStatus.RUNNING
        assert (await flow.progress()).step == "code_sent"
        assert fake.closed == []

        await env.sleep(timedelta(minutes=2))
        assert await flow.handle.result() == SetupOutcome(state="expired", reason=DEADLINE_REASON)
        assert await flow.step_attribute() == "expired"
        await not_found(flow.confirm("digest-1"))

    assert [(c.state, c.actor, c.reason, c.staff_id) for c in fake.closed] == [
        ("expired", "system", DEADLINE_REASON, flow.staff_id)
    ]
    assert fake.activated == []


# -- 7. updates out of order ----------------------------------------------------------


async def test_later_steps_before_the_password_are_refused(env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with running_flow(env, fake) as flow:
        for name, args in [
            ("confirm_code", [ConfirmCodeRequest(code_digest="digest-1")]),
            ("resend_code", [StepRequest()]),
            ("skip_mfa", [StepRequest()]),
            ("complete_mfa", [TotpRequest(sealed_code=GOOD_TOTP)]),
        ]:
            refusal = await rejected(flow.update(name, *args))
            assert refusal.type == "WrongStep:email_sent", name
        # Refused in the validator: nothing was written to history, nothing ran.
        assert await update_events(flow) == []
        assert (await flow.progress()).step == "email_sent"

        await reach_mfa_pending(flow)
        assert await flow.update("skip_mfa", StepRequest()) == StepResult(ok=True, step="active")
        assert await flow.handle.result() == SetupOutcome(state="active")

    assert len(fake.confirmed) == 1
    assert [a.mfa for a in fake.activated] == [False]
    assert fake.totps == []


async def test_a_password_sent_as_the_email_arrives_waits_for_the_flow(
    private_env: WorkflowEnvironment,
) -> None:
    """A fast reader (or mail client) can use the link before the email activity's result
    reaches the flow: the password waits for it instead of "That step isn't available".
    (Its own server: the flow is left with its code being sent.)"""
    env = private_env
    fake = FakeActivities(block_email=True)
    task_queue = new_task_queue()
    async with (
        asyncio.timeout(GUARD_SECONDS),
        Worker(env.client, task_queue=task_queue, workflows=[SsoSetupWorkflow], activities=fake.all()),
    ):
        flow = await start_flow(env, task_queue, fake)
        try:
            await fake.email_started.wait()
            assert (await flow.progress()).step == "sending_email"
            password = asyncio.create_task(flow.set_password())
            await eventually(update_events, lambda events: len(events) >= 1, flow)
            assert not password.done() and fake.stored == []
            fake.release_email.set()
            result = await password
            assert result.ok and result.step == "password_set", result
            assert len(fake.stored) == 1
        finally:
            fake.release_email.set()
            with suppress(RPCError):
                await flow.handle.terminate("test done")


async def test_a_second_password_is_refused(env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with running_flow(env, fake) as flow:
        await reach_code_sent(flow)
        refusal = await rejected(flow.set_password())
        assert refusal.type.startswith("WrongStep")
        assert refusal.type == "WrongStep:code_sent"
        assert len(fake.stored) == 1

        # MFA steps are still out of order at code_sent.
        for name, args in [
            ("skip_mfa", [StepRequest()]),
            ("complete_mfa", [TotpRequest(sealed_code=GOOD_TOTP)]),
        ]:
            assert (await rejected(flow.update(name, *args))).type == "WrongStep:code_sent"

        assert await flow.confirm("digest-1") == StepResult(ok=True, step="mfa_pending")
        assert (await rejected(flow.set_password())).type == "WrongStep:mfa_pending"
        assert (await rejected(flow.confirm("digest-1"))).type == "WrongStep:mfa_pending"
        assert await flow.update("skip_mfa", StepRequest()) == StepResult(ok=True, step="active")
        assert await flow.handle.result() == SetupOutcome(state="active")
    assert len(fake.stored) == 1


async def test_password_after_the_link_expired_finds_the_flow_ended(
    env: WorkflowEnvironment,
) -> None:
    fake = FakeActivities()
    async with running_flow(env, fake) as flow:
        await env.sleep(timedelta(minutes=16))
        # The link timer ended the flow at 15 minutes: the server refuses the update
        # (NOT_FOUND), the validator's LinkExpired never gets the chance.
        await not_found(flow.set_password())
        assert await flow.handle.result() == SetupOutcome(state="expired", reason="the setup link expired")
    assert fake.stored == []
    assert [c.state for c in fake.closed] == ["expired"]


async def test_malformed_password_form_is_refused(env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with running_flow(env, fake) as flow:
        refusal = await rejected(flow.set_password(sealed="plaintext-password"))
        assert refusal.type == "BadRequest"
        assert (await flow.progress()).step == "email_sent"
        assert fake.stored == []
        await flow.handle.execute_update("cancel", EndRequest(actor=ACTOR), result_type=SetupOutcome)
        assert (await flow.handle.result()).state == "cancelled"


# -- 8. a rejected password -----------------------------------------------------------


async def test_rejected_password_stays_at_link_opened_and_can_be_retried(
    env: WorkflowEnvironment,
) -> None:
    problems = ["Use at least 12 characters.", "Don't use your name."]
    fake = FakeActivities(
        password_results=[
            StorePasswordResult(ok=False, message="Choose a different password.", problems=problems)
        ]
    )
    async with running_flow(env, fake) as flow:
        assert await flow.set_password() == StepResult(
            ok=False, step="link_opened", message="Choose a different password.", problems=problems
        )
        progress = await flow.progress()
        assert (progress.step, progress.code_delivery) == ("link_opened", "none")
        assert await flow.step_attribute() == "link_opened"
        assert fake.codes == []

        assert await flow.set_password() == StepResult(ok=True, step="password_set")
        await flow.wait_for_code(1)
        assert await flow.confirm("digest-1") == StepResult(ok=True, step="mfa_pending")
        assert await flow.update("skip_mfa", StepRequest()) == StepResult(ok=True, step="active")
        assert await flow.handle.result() == SetupOutcome(state="active")
        assert await step_history(flow) == [
            "email_sent",
            "link_opened",
            "password_set",
            # no code_sent: the code's delivery writes no command (docs/temporal.md §24)
            "mfa_pending",
            "active",
        ]
    assert len(fake.stored) == 2


async def test_opening_the_password_form_shows_link_opened_once(env: WorkflowEnvironment) -> None:
    """The web app signals `link_opened` when the person opens the password form (a GET, so
    it consumes nothing): the step, its search attribute and the current details say so, and
    the database is told once, however often the form is opened."""
    fake = FakeActivities()
    async with running_flow(env, fake) as flow:
        await flow.handle.signal("link_opened", StepRequest())
        await eventually(flow.progress, lambda p: p.step == "link_opened")

        async def recorded() -> list[StaffStepInput]:
            return fake.opened

        await eventually(recorded, lambda opened: len(opened) == 1)
        progress = await flow.progress()
        assert progress.step == "link_opened"
        assert progress.setup_expires_at is None  # the link itself is not used yet
        assert await flow.step_attribute() == "link_opened"
        metadata = await flow.handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
        assert metadata.current_details == ("The person opened the link and is choosing a password")
        [opened] = fake.opened
        assert (opened.setup_id, opened.staff_id, opened.workflow_id) == (
            flow.setup_id,
            flow.staff_id,
            flow.handle.id,
        )

        await flow.handle.signal("link_opened", StepRequest())  # opened again, in another tab
        assert await flow.set_password() == StepResult(ok=True, step="password_set")
        await flow.handle.signal("link_opened", StepRequest())  # a stale tab, after the password: nothing
        await flow.wait_for_code(1)
        assert await flow.confirm("digest-1") == StepResult(ok=True, step="mfa_pending")
        assert await flow.update("skip_mfa", StepRequest()) == StepResult(ok=True, step="active")
        assert await flow.handle.result() == SetupOutcome(state="active")
        assert await step_history(flow) == [
            "email_sent",
            "link_opened",
            "password_set",
            # no code_sent: the code's delivery writes no command (docs/temporal.md §24)
            "mfa_pending",
            "active",
        ]
    assert len(fake.opened) == 1
    assert len(fake.stored) == 1


async def test_link_opened_after_the_link_expired_changes_nothing(env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with running_flow(env, fake) as flow:
        await env.sleep(LINK_TTL + timedelta(seconds=1))
        assert (await flow.handle.result()).state == "expired"
        with suppress(RPCError):  # the flow may be gone already: nothing to tell
            await flow.handle.signal("link_opened", StepRequest())
        assert (await flow.progress()).step == "expired"
    assert fake.opened == []


# -- 9. double submit -----------------------------------------------------------------


async def test_double_submit_of_the_password_runs_once(env: WorkflowEnvironment) -> None:
    fake = FakeActivities(block_store=True)
    async with running_flow(env, fake) as flow:
        submission = f"form-{uuid.uuid4()}"
        first = asyncio.create_task(flow.set_password(id=submission))
        await fake.store_started.wait()
        second = asyncio.create_task(flow.set_password(id=submission))
        # Give the second submit time to reach the server while the first one is running.
        await asyncio.sleep(0.2)
        assert not second.done()
        fake.release_store.set()
        results = await asyncio.gather(first, second)
        assert results == [StepResult(ok=True, step="password_set")] * 2

        # Submitted again once the first has finished: the recorded answer, not a rerun.
        assert await flow.set_password(id=submission) == StepResult(ok=True, step="password_set")
        assert len(fake.stored) == 1
        accepted = [
            e
            for e in await update_events(flow)
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
        ]
        assert len(accepted) == 1

        await flow.wait_for_code(1)
        assert len(fake.codes) == 1
        assert await flow.confirm("digest-1") == StepResult(ok=True, step="mfa_pending")
        assert await flow.update("skip_mfa", StepRequest()) == StepResult(ok=True, step="active")
        assert await flow.handle.result() == SetupOutcome(state="active")
    assert len(fake.stored) == 1


async def test_double_submit_of_a_wrong_code_counts_once(env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with running_flow(env, fake) as flow:
        await reach_code_sent(flow)
        submission = f"form-{uuid.uuid4()}"
        request = ConfirmCodeRequest(code_digest="wrong")
        answers = [await flow.update("confirm_code", request, id=submission) for _ in range(2)]
        assert (
            answers == [StepResult(ok=False, step="code_sent", message="Incorrect code, 4 attempts left")] * 2
        )
        progress = await flow.progress()
        assert (progress.code_attempts_left, progress.wrong_codes_total) == (4, 1)
        assert len(fake.audits) == 1

        assert await flow.confirm("digest-1") == StepResult(ok=True, step="mfa_pending")
        assert await flow.update("skip_mfa", StepRequest()) == StepResult(ok=True, step="active")
        assert await flow.handle.result() == SetupOutcome(state="active")


# -- 10. cancel in the middle ---------------------------------------------------------


async def test_cancel_at_code_sent(env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with running_flow(env, fake) as flow:
        await reach_code_sent(flow)

        outcome = await flow.handle.execute_update(
            "cancel", EndRequest(actor=ACTOR, reason="wrong person"), result_type=SetupOutcome
        )
        assert outcome == SetupOutcome(state="cancelled", reason="wrong person")
        assert await flow.handle.result() == outcome
        assert await flow.step_attribute() == "cancelled"
        assert (await flow.progress()).step == "cancelled"

        await not_found(flow.confirm("digest-1"))
        await not_found(flow.update("resend_code", StepRequest()))

    assert [(c.state, c.actor, c.reason) for c in fake.closed] == [("cancelled", ACTOR, "wrong person")]
    assert fake.confirmed == []
    assert fake.activated == []


async def test_cancel_while_the_password_is_stored_sends_no_code(
    private_env: WorkflowEnvironment,
) -> None:
    fake = FakeActivities(block_store=True)
    async with running_flow(private_env, fake) as flow:
        password = asyncio.create_task(flow.set_password())
        await fake.store_started.wait()
        cancel = asyncio.create_task(
            flow.handle.execute_update(
                "cancel", EndRequest(actor=ACTOR, reason="wrong person"), result_type=SetupOutcome
            )
        )
        # The cancel is accepted and waits for the password step to finish.
        await eventually(update_events, lambda events: len(events) == 2, flow)
        assert not cancel.done()
        fake.release_store.set()
        await password
        assert await cancel == SetupOutcome(state="cancelled", reason="wrong person")
        assert await flow.handle.result() == SetupOutcome(state="cancelled", reason="wrong person")
    assert [c.state for c in fake.closed] == ["cancelled"]
    assert fake.codes == [], "a code was emailed for a cancelled setup"


# -- 11. history holds no secrets -----------------------------------------------------


async def test_history_holds_only_ciphertext_and_sealed_values(
    env: WorkflowEnvironment,
) -> None:
    fake = FakeActivities()
    async with running_flow(env, fake) as flow:
        await reach_code_sent(flow)
        assert not (await flow.confirm("digest-wrong")).ok
        await env.sleep(AFTER_RESEND_INTERVAL)
        assert (await flow.update("resend_code", StepRequest())).ok
        await flow.wait_for_code(2)
        assert (await flow.confirm("digest-2")).ok
        assert not (await flow.update("complete_mfa", TotpRequest(sealed_code=BAD_TOTP))).ok
        assert (await flow.update("complete_mfa", TotpRequest(sealed_code=GOOD_TOTP))).ok
        assert await flow.handle.result() == SetupOutcome(state="active")
        events = list((await flow.handle.fetch_history()).events)

    found = {
        f"{event.event_id}:{EventType.Name(event.event_type)}{path}": payload
        for event in events
        for path, payload in payloads(event)
    }
    assert found
    plaintext = {
        path: payload.metadata.get("encoding")
        for path, payload in found.items()
        if payload.metadata.get("encoding") != ENCODING
    }
    assert plaintext == {}
    for event in events:
        assert PASSWORD.encode() not in event.SerializeToString()

    codec = EncryptionCodec(keyring_from_settings(make_settings()))
    decoded = await codec.decode(list(found.values()))
    values = [json.loads(p.data) for p in decoded if p.metadata.get("encoding") == b"json/plain"]
    secrets = list(fields_named(values, {"sealed_password", "sealed_code", "code_digest"}))
    by_name: dict[str, set[str]] = {}
    for name, value in secrets:
        by_name.setdefault(name, set()).add(value)
    # Password: in the update's input and in store_password's input, sealed both times.
    assert len(by_name["sealed_password"]) == 1
    assert all(value.startswith("sealed1.") for value in by_name["sealed_password"])
    assert by_name["sealed_code"] == {BAD_TOTP, GOOD_TOTP}
    assert by_name["code_digest"] == {"digest-1", "digest-wrong", "digest-2"}
    for payload in decoded:
        assert PASSWORD.encode() not in payload.data


async def test_the_page_steps_ip_reaches_the_activities_that_audit_them(env: WorkflowEnvironment) -> None:
    """link_opened, email_confirmed, mfa.skipped and active are audited with the IP the page
    step came from (they once had none)."""
    fake = FakeActivities()
    async with running_flow(env, fake) as flow:
        await flow.handle.signal("link_opened", StepRequest(ip="203.0.113.1"))

        async def recorded() -> list[StaffStepInput]:
            return fake.opened

        await eventually(recorded, lambda opened: len(opened) == 1)
        await reach_code_sent(flow)
        assert (
            await flow.update("confirm_code", ConfirmCodeRequest(code_digest="digest-1", ip="203.0.113.2"))
        ).ok
        assert (await flow.update("skip_mfa", StepRequest(ip="203.0.113.3"))).ok
        await flow.handle.result()
    assert [fake.opened[0].ip, fake.confirmed[0].ip, fake.activated[0].ip] == [
        "203.0.113.1",
        "203.0.113.2",
        "203.0.113.3",
    ]
