"""Record workflow histories for the replay test (tests/replay/test_replay.py).

Run with the code whose histories you want, e.g. the code at 980d269 (the release before the
Temporal boundary fix), from a worktree of that commit:

    git worktree add /tmp/base980 980d269
    cd /tmp/base980 && PYTHONPATH=/tmp/base980 <venv>/bin/python \
        <this repo>/tests/replay/record_histories.py <this repo>/tests/replay/histories

Histories of flows an old checkout does not have are recorded with the current code, group
by group, from this worktree (e.g. the leave, email change, MFA rollout and logout flows):

    PYTHONPATH=. .venv/bin/python tests/replay/record_histories.py tests/replay/histories \
        leaves email_changes rollouts logouts

Flows run on a real dev server with stand-in activities and the test keys
(tests/conftest.py), and are left at interesting points: running flows are recorded as
they stand, so a replay proves new code still takes them over.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client, WithStartWorkflowOperation, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from core.codec import data_converter
from core.sealing import entra_context, password_context, seal, totp_context
from core.search_attributes import ALL as SEARCH_ATTRIBUTES
from tests.support.config import TEST_SEAL_PUBLIC_KEY, binary, make_settings
from tests.support.temporal_stand_ins import Stand
from workflows.common import EmailRetry, StepResult
from workflows.entra import EntraLinkInput, EntraLinkWorkflow, LinkOutcome, LinkRequest
from workflows.notices import PasswordChangedNoticeWorkflow
from workflows.reset import (
    CodeRequest,
    PasswordResetInput,
    PasswordResetWorkflow,
    ResetRequest,
)
from workflows.setup import (
    ConfirmCodeRequest,
    EndRequest,
    SetPasswordRequest,
    SsoSetupInput,
    SsoSetupWorkflow,
    TotpRequest,
)

IP = "203.0.113.7"
try:  # page steps carry a request since the Temporal boundary fix; before it, nothing
    from workflows.common import StepRequest

    STEP: list[Any] = [StepRequest(ip=IP)]
except ImportError:
    STEP = []


async def until(check: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(30):
        while not await check():
            await asyncio.sleep(0.1)


class Recorder:
    def __init__(self, client: Client, queue: str, out: Path, stand: Stand | None = None) -> None:
        self.client = client
        self.queue = queue
        self.out = out
        self.stand = stand  # the stand-in activities, for what the flows find

    async def save(self, name: str, handle: WorkflowHandle[Any, Any]) -> None:
        # Let the last workflow task finish, so the history ends at a resting point.
        await asyncio.sleep(1.0)
        history = await handle.fetch_history()
        (self.out / f"{name}.json").write_text(history.to_json(), encoding="utf-8")
        print("recorded", name, len(history.events), "events")

    async def setup(self, mfa_required: bool = False) -> tuple[str, WorkflowHandle[Any, Any]]:
        staff = str(uuid.uuid4())
        wid = f"sso-setup-{staff}"
        handle = await self.client.start_workflow(
            "SsoSetup",
            SsoSetupInput(
                setup_id=str(uuid.uuid4()),
                staff_id=staff,
                link_ttl_seconds=900,
                requested_by="admin-key:rec",
                email_retry=EmailRetry(),
                code_resend_interval_seconds=1,
                mfa_required=mfa_required,
            ),
            id=wid,
            task_queue=self.queue,
        )
        await self.step(handle, "email_sent")
        return wid, handle

    async def step(self, handle: WorkflowHandle[Any, Any], step: str, query: str = "progress") -> None:
        async def at() -> bool:
            progress = await handle.query(query)
            return bool(progress["step"] == step)

        await until(at)

    async def update(self, handle: WorkflowHandle[Any, Any], name: str, *args: Any) -> Any:
        return await handle.execute_update(name, *args, result_type=StepResult)

    async def to_code_sent(self, wid: str, handle: WorkflowHandle[Any, Any]) -> None:
        await self.update(
            handle,
            "set_password",
            SetPasswordRequest(
                sealed_password=seal(
                    TEST_SEAL_PUBLIC_KEY, b"Correct-Horse-Battery-Staple-42", password_context(wid)
                ),
                link_id=str(uuid.uuid4()),
                session_hash="hash-of-session",
                ip=IP,
            ),
        )
        await self.step(handle, "code_sent")

    async def to_mfa_pending(self, wid: str, handle: WorkflowHandle[Any, Any]) -> None:
        await self.to_code_sent(wid, handle)
        await self.update(handle, "confirm_code", ConfirmCodeRequest(code_digest="wrong", ip=IP))
        await asyncio.sleep(1.1)  # the resend interval
        await self.update(handle, "resend_code", *STEP)
        await self.step(handle, "code_sent")
        await until(lambda: self._delivered(handle))
        await self.update(handle, "confirm_code", ConfirmCodeRequest(code_digest=f"digest-{wid}", ip=IP))
        await self.step(handle, "mfa_pending")

    async def _delivered(self, handle: WorkflowHandle[Any, Any]) -> bool:
        return bool((await handle.query("progress"))["code_delivery"] == "sent")

    async def record_setups(self) -> None:
        _, handle = await self.setup()
        await self.save("setup-email-sent", handle)

        _, handle = await self.setup()
        await handle.signal("link_opened", *STEP)
        await self.step(handle, "link_opened")
        await self.save("setup-link-opened", handle)

        wid, handle = await self.setup()
        await handle.signal("link_opened", *STEP)
        await self.step(handle, "link_opened")
        await self.to_code_sent(wid, handle)
        await self.save("setup-code-sent", handle)

        wid, handle = await self.setup()
        await self.to_mfa_pending(wid, handle)
        await self.save("setup-mfa-pending-after-resend", handle)

        wid, handle = await self.setup()
        await self.to_mfa_pending(wid, handle)
        await self.update(handle, "skip_mfa", *STEP)
        await handle.result()
        await self.save("setup-mfa-skipped-complete", handle)

        wid, handle = await self.setup(mfa_required=True)
        await self.to_mfa_pending(wid, handle)
        await self.update(
            handle,
            "complete_mfa",
            TotpRequest(sealed_code=seal(TEST_SEAL_PUBLIC_KEY, b"123456", totp_context(wid)), ip=IP),
        )
        await handle.result()
        await self.save("setup-mfa-enrolled-complete", handle)

        wid, handle = await self.setup()
        await self.to_code_sent(wid, handle)
        await handle.execute_update("cancel", EndRequest("admin-key:rec", "cancelled by an administrator"))
        await handle.result()
        await self.save("setup-cancelled", handle)

        _, handle = await self.setup()
        await handle.execute_update(
            "supersede", EndRequest("admin-key:rec", "a new Single Sign-On email was sent")
        )
        await handle.result()
        await self.save("setup-superseded", handle)

    async def record_entra(self) -> None:
        staff = str(uuid.uuid4())
        wid = f"entra-link-{staff}"
        await self._link(
            staff,
            wid,
            LinkRequest(
                sealed_grant=seal(TEST_SEAL_PUBLIC_KEY, b'{"code":"x"}', entra_context(wid)),
                via="session",
                actor=f"staff:{staff}",
                ip=IP,
            ),
        )
        handle = self.client.get_workflow_handle(wid)
        await handle.result()
        await self.save("entra-linked-session", handle)

        # From a setup link: the link flow completes the setup flow with a signal.
        setup_id, setup = await self.setup()
        staff = setup_id.removeprefix("sso-setup-")
        wid = f"entra-link-{staff}"
        desc = await setup.describe()
        await self._link(
            staff,
            wid,
            LinkRequest(
                sealed_grant=seal(TEST_SEAL_PUBLIC_KEY, b'{"code":"y"}', entra_context(wid)),
                via="setup_link",
                actor=f"staff:{staff}",
                ip=IP,
                link_id=str(uuid.uuid4()),
                setup_workflow_id=setup_id,
                setup_run_id=desc.run_id,
            ),
        )
        handle = self.client.get_workflow_handle(wid)
        await handle.result()
        await setup.result()
        await self.save("entra-linked-setup-link", handle)
        await self.save("setup-entra-linked", setup)

    async def _link(self, staff: str, wid: str, request: LinkRequest) -> None:
        start: WithStartWorkflowOperation[Any, Any] = WithStartWorkflowOperation(
            "EntraLink",
            EntraLinkInput(staff_id=staff, email_retry=EmailRetry()),
            id=wid,
            task_queue=self.queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        outcome = await self.client.execute_update_with_start_workflow(
            "link", request, start_workflow_operation=start, result_type=LinkOutcome
        )
        assert outcome.ok, outcome

    async def record_resets(self) -> None:
        handle = await self._reset()
        await self.save("reset-code-sent", handle)

        handle = await self._reset()
        wid = handle.id
        await handle.execute_update(
            "reset_password",
            ResetRequest(
                code_digest="wrong",
                sealed_password=seal(
                    TEST_SEAL_PUBLIC_KEY, b"Another-Long-Passphrase-77", password_context(wid)
                ),
                ip=IP,
            ),
            result_type=StepResult,
        )
        await asyncio.sleep(1.1)
        await self._reset_request(wid)
        await until(lambda: self._delivered_reset(handle))
        await self.save("reset-after-wrong-code-and-resend", handle)

        handle = await self._reset()
        wid = handle.id
        await handle.execute_update(
            "reset_password",
            ResetRequest(
                code_digest=f"digest-{wid}",
                sealed_password=seal(
                    TEST_SEAL_PUBLIC_KEY, b"Another-Long-Passphrase-77", password_context(wid)
                ),
                ip=IP,
            ),
            result_type=StepResult,
        )
        await handle.result()
        await self.save("reset-completed", handle)
        events = (await handle.fetch_history()).events
        child = next(
            e.child_workflow_execution_started_event_attributes
            for e in events
            if e.HasField("child_workflow_execution_started_event_attributes")
        )
        notice = self.client.get_workflow_handle(child.workflow_execution.workflow_id)
        await notice.result()
        await self.save("notice-sent", notice)

    async def _reset(self) -> WorkflowHandle[Any, Any]:
        wid = f"password-reset-{uuid.uuid4()}"
        await self._reset_request(wid)
        handle = self.client.get_workflow_handle(wid)
        await until(lambda: self._delivered_reset(handle))
        return handle

    async def _reset_request(self, wid: str) -> None:
        start: WithStartWorkflowOperation[Any, Any] = WithStartWorkflowOperation(
            "PasswordReset",
            PasswordResetInput(
                account_id=wid.removeprefix("password-reset-"),
                staff_id=str(uuid.uuid4()),
                email_retry=EmailRetry(),
                code_resend_interval_seconds=1,
            ),
            id=wid,
            task_queue=self.queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        await self.client.execute_update_with_start_workflow(
            "request_code", CodeRequest(ip=IP), start_workflow_operation=start, result_type=StepResult
        )

    async def _delivered_reset(self, handle: WorkflowHandle[Any, Any]) -> bool:
        return bool((await handle.query("progress"))["code_delivery"] == "sent")

    async def record_batches(self) -> None:
        from core.search_attributes import SSO_BATCH_STATE
        from workflows.staff_batch import BatchControl, StaffBatchInput, StaffBatchWorkflow

        async def batch(chunk_seconds: float) -> WorkflowHandle[Any, Any]:
            batch_id = str(uuid.uuid4())
            return await self.client.start_workflow(
                StaffBatchWorkflow.run,
                StaffBatchInput(batch_id=batch_id, chunk_size=50, chunk_seconds=chunk_seconds, left=120),
                id=f"staff-batch-{batch_id}",
                task_queue=self.queue,
                search_attributes=TypedSearchAttributes([SearchAttributePair(SSO_BATCH_STATE, "running")]),
            )

        control = BatchControl(actor="admin-key:record")
        # Paused after its first chunk, then resumed and paused again, waiting on its pace timer.
        handle = await batch(3600.0)
        await until(lambda: self._chunks_done(handle, 1))
        await handle.execute_update("pause", control)
        await handle.execute_update("resume", control)
        await handle.execute_update("pause", control)
        await self.save("batch-paused", handle)
        # Every chunk sent: done.
        handle = await batch(0.1)
        await handle.result()
        await self.save("batch-done", handle)
        # Cancelled while pacing.
        handle = await batch(3600.0)
        await until(lambda: self._chunks_done(handle, 1))
        await handle.execute_update("cancel", control)
        await handle.result()
        await self.save("batch-cancelled", handle)

    async def _chunks_done(self, handle: WorkflowHandle[Any, Any], count: int) -> bool:
        history = await handle.fetch_history()
        return (
            sum(1 for e in history.events if e.HasField("activity_task_completed_event_attributes")) >= count
        )

    async def _activities_done(self, handle: WorkflowHandle[Any, Any], count: int) -> bool:
        history = await handle.fetch_history()
        return (
            sum(1 for e in history.events if e.HasField("activity_task_completed_event_attributes")) >= count
        )

    async def record_leaves(self) -> None:
        from core.search_attributes import SSO_STEP
        from workflows.leave import LeaveInput, LeaveMove, StaffLeaveWorkflow, leave_workflow_id

        def move(in_seconds: float | None) -> LeaveMove:
            if in_seconds is None:
                return LeaveMove(leave_at=None, leave_on=None)
            at = datetime.now(UTC) + timedelta(seconds=in_seconds)
            return LeaveMove(leave_at=at, leave_on=at.date().isoformat())

        async def leave(in_seconds: float) -> WorkflowHandle[Any, Any]:
            staff = str(uuid.uuid4())
            return await self.client.start_workflow(
                StaffLeaveWorkflow.run,
                LeaveInput(staff_id=staff),
                id=leave_workflow_id(staff),
                task_queue=self.queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                start_signal="move",
                start_signal_args=[move(in_seconds)],
                search_attributes=TypedSearchAttributes([SearchAttributePair(SSO_STEP, "waiting")]),
            )

        month = 30 * 86400.0
        # Waiting on its timer.
        await self.save("leave-waiting", await leave(month))
        # Moved later: waiting on the new timer.
        handle = await leave(month)
        await handle.signal("move", move(month + 86400))
        await self.save("leave-moved", handle)
        # Cleared: ended without disabling anyone.
        handle = await leave(month)
        await handle.signal("move", move(None))
        await handle.result()
        await self.save("leave-cleared", handle)
        # The day came: disabled.
        handle = await leave(2.0)
        await handle.result()
        await self.save("leave-fired", handle)
        # Moved sooner, then the new day came.
        handle = await leave(month)
        await handle.signal("move", move(2.0))
        await handle.result()
        await self.save("leave-moved-sooner-fired", handle)

    async def record_email_changes(self) -> None:
        from core.search_attributes import SSO_STEP
        from workflows.email_change import (
            ConfirmEmailChange,
            EmailChangeInput,
            StaffEmailChangeWorkflow,
            email_change_workflow_id,
        )

        async def change(ttl_seconds: int = 86400) -> WorkflowHandle[Any, Any]:
            staff = str(uuid.uuid4())
            handle = await self.client.start_workflow(
                StaffEmailChangeWorkflow.run,
                EmailChangeInput(staff_id=staff, email_retry=EmailRetry(), code_ttl_seconds=ttl_seconds),
                id=email_change_workflow_id(staff),
                task_queue=self.queue,
                search_attributes=TypedSearchAttributes([SearchAttributePair(SSO_STEP, "sending_code")]),
            )
            await until(lambda: self._activities_done(handle, 1))  # the code was sent
            return handle

        async def confirm(handle: WorkflowHandle[Any, Any], digest: str) -> StepResult:
            request = ConfirmEmailChange(code_digest=digest, actor="admin-key:rec", ip=IP)
            return await handle.execute_update("confirm", request, result_type=StepResult)

        # The code sent, waiting for it.
        await self.save("email_change-code-sent", await change())
        # A wrong code, then the right one: changed, the old address told.
        handle = await change()
        assert not (await confirm(handle, "wrong")).ok
        assert (await confirm(handle, f"digest-{handle.id}")).ok
        await handle.result()
        await self.save("email_change-wrong-code-then-changed", handle)
        # Never entered: expired and dropped.
        handle = await change(ttl_seconds=2)
        await handle.result()
        await self.save("email_change-expired", handle)
        # Five wrong codes: dropped.
        handle = await change()
        while (await confirm(handle, "wrong")).step != "too_many_codes":
            pass
        await handle.result()
        await self.save("email_change-too-many-codes", handle)

    async def record_rollouts(self) -> None:
        from workflows.mfa_enrollment import OPTIONAL, MfaEnrollmentWorkflow, enrollment_workflow_id
        from workflows.mfa_rollout import MfaPolicyRolloutWorkflow, MfaRolloutInput, rollout_workflow_id
        from workflows.mfa_types import MfaEnrollmentInput

        assert self.stand is not None
        terms: dict[str, Any] = {"reminder_offsets_seconds": [86400.0], "grace_seconds": 14 * 86400.0}

        async def rollout(people: int, **options: Any) -> WorkflowHandle[Any, Any]:
            assert self.stand is not None
            self.stand.rollout_people = sorted(str(uuid.uuid4()) for _ in range(people))
            org_id = str(uuid.uuid4())
            return await self.client.start_workflow(
                MfaPolicyRolloutWorkflow.run,
                MfaRolloutInput(**terms, batch_size=2, org_id=org_id, **options),
                id=rollout_workflow_id(org_id),
                task_queue=self.queue,
            )

        # Every person obliged; one already had an optional obligation, moved to required.
        handle = await rollout(3, pause_seconds=0.5)
        await self.client.start_workflow(
            MfaEnrollmentWorkflow.run,
            MfaEnrollmentInput(staff_id=self.stand.rollout_people[1], policy=OPTIONAL, **terms),
            id=enrollment_workflow_id(self.stand.rollout_people[1]),
            task_queue=self.queue,
        )
        await handle.result()
        await self.save("rollout-done", handle)
        # Mid-way: pacing after its first batch.
        handle = await rollout(3, pause_seconds=3600.0)
        await until(lambda: self._activities_done(handle, 1))
        await self.save("rollout-pacing", handle)
        # One batch a run: continued as new with where it got to.
        handle = await rollout(3, pause_seconds=0.5, batches_per_run=1)
        await handle.result()
        first = self.client.get_workflow_handle(handle.id, run_id=handle.result_run_id)
        await self.save("rollout-continued-as-new", first)

    async def record_logouts(self) -> None:
        from core.oidc.backchannel import SessionLogoutInput
        from workflows.logout import SessionLogoutWorkflow, logout_start_options

        async def logout(*client_ids: str) -> WorkflowHandle[Any, Any]:
            data = SessionLogoutInput(
                sid=str(uuid.uuid4()), staff_id=str(uuid.uuid4()), client_ids=list(client_ids), org_id=""
            )
            return await self.client.start_workflow(
                SessionLogoutWorkflow.run, data, **logout_start_options(data, self.queue)
            )

        # One app told, one whose logout URI is refused (reported on the admin pages).
        handle = await logout("app-one", "refused-app")
        await handle.result()
        await self.save("logout-done", handle)
        # Mid-way: one app told, one not answering and tried again.
        handle = await logout("app-one", "down-app")
        await until(lambda: self._activities_done(handle, 1))
        await self.save("logout-retrying", handle)


GROUPS = ("setups", "entra", "resets", "batches", "leaves", "email_changes", "rollouts", "logouts")


def extra_workflows() -> list[type]:
    """Workflows newer than the first recordings (absent from an old checkout)."""
    try:
        from workflows.email_change import StaffEmailChangeWorkflow
        from workflows.leave import StaffLeaveWorkflow
        from workflows.logout import SessionLogoutWorkflow
        from workflows.mfa_enrollment import MfaEnrollmentWorkflow
        from workflows.mfa_rollout import MfaPolicyRolloutWorkflow
        from workflows.staff_batch import StaffBatchWorkflow
    except ImportError:
        return []
    return [
        StaffBatchWorkflow,
        StaffLeaveWorkflow,
        StaffEmailChangeWorkflow,
        MfaPolicyRolloutWorkflow,
        MfaEnrollmentWorkflow,
        SessionLogoutWorkflow,
    ]


async def main(out: Path, groups: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    env = await WorkflowEnvironment.start_local(
        data_converter=data_converter(make_settings()),
        dev_server_existing_path=binary("temporal"),
        search_attributes=list(SEARCH_ATTRIBUTES),
    )
    try:
        queue = f"record-{uuid.uuid4()}"
        stand = Stand()
        async with Worker(
            env.client,
            task_queue=queue,
            activities=stand.all(),
            workflows=[
                SsoSetupWorkflow,
                PasswordResetWorkflow,
                PasswordChangedNoticeWorkflow,
                EntraLinkWorkflow,
                *extra_workflows(),
            ],
        ):
            recorder = Recorder(env.client, queue, out, stand)
            for group in groups or GROUPS:
                await getattr(recorder, f"record_{group}")()
    finally:
        await asyncio.wait_for(env.shutdown(), timeout=30)


if __name__ == "__main__":
    # Record only some groups (e.g. `batches`) to add histories without re-recording the rest.
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2:]))
    sys.stdout.flush()
    os._exit(0)  # the Temporal core bridge can crash at interpreter exit (sdk-python#300)
