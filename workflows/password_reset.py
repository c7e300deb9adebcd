"""The password reset flow: one per account at a time (id password-reset-<account uuid>).

A request for a code starts it, or reaches the open one through update-with-start (then it
counts as "Send a new code" and is throttled the same way). The reset itself is an Update:
code, new password and, with MFA on, the authenticator code.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.inputs import (
        AuditInput,
        NoticeInput,
        ResetPasswordInput,
        ResetPasswordResult,
        SendCodeInput,
        SendCodeResult,
    )
    from core import metrics
    from core.search_attributes import SSO_STEP
    from workflows.codes import CodeRules, EmailedCode
    from workflows.common import DB_RETRY, STEP_TIMEOUT, EmailRetry, StepResult, required

RESET_PURPOSE = "reset"
FINAL_STEPS = {"completed", "expired"}


@dataclass
class PasswordResetInput:
    account_id: str
    staff_id: str
    email_retry: EmailRetry
    code_ttl_seconds: int = 600
    code_resend_interval_seconds: int = 60
    code_max_resends: int = 5
    # The flow ends this long after the last code was asked for.
    ttl_seconds: int = 3600


@dataclass
class CodeRequest:
    ip: str | None = None


@dataclass
class ResetRequest:
    code_digest: str
    sealed_password: str
    sealed_totp: str | None = None
    ip: str | None = None


@dataclass
class ResetOutcome:
    state: str  # reset | expired
    reason: str | None = None


@dataclass
class ResetProgress:
    step: str
    code_delivery: str
    code_expires_at: datetime | None
    code_attempts_left: int
    resends_left: int
    next_resend_at: datetime | None


@workflow.defn(name="PasswordReset")
class PasswordResetWorkflow:
    @workflow.init
    def __init__(self, data: PasswordResetInput | None = None) -> None:
        self._input = data = required(data, "This start")
        self._step = "code_requested"
        self._open_step = self._step  # where the flow stood before it ended, for metrics
        self._code = EmailedCode(CodeRules(
            ttl_seconds=data.code_ttl_seconds,
            resend_interval_seconds=data.code_resend_interval_seconds,
            max_resends=data.code_max_resends))
        self._tasks: list[asyncio.Task[None]] = []
        self._busy = False
        self._done = False
        self._ended = False

    @workflow.run
    async def run(self, data: PasswordResetInput | None = None) -> ResetOutcome:
        data = self._input
        metrics.flow_started(metrics.RESET)
        workflow.set_current_details("Reset code requested")
        while not self._done and not self._ended:
            last = self._code.last_request or workflow.now()
            deadline = last + timedelta(seconds=data.ttl_seconds)
            try:
                await workflow.wait_condition(lambda: self._done,
                                              timeout=max(deadline - workflow.now(),
                                                          timedelta(seconds=1)),
                                              timeout_summary="Reset request expires")
            except TimeoutError:
                await workflow.wait_condition(lambda: not self._busy)
                if not self._done and (self._code.last_request or last) == last:
                    # From here on every step is refused: nothing can slip in while closing.
                    self._ended = True
        if not self._done:
            for task in self._tasks:
                task.cancel()
            self._move_to("expired", "Ended: the reset was not completed in time")
        await workflow.wait_condition(workflow.all_handlers_finished)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        metrics.flow_ended(metrics.RESET, "completed" if self._done else "expired",
                           self._open_step)
        if self._done:
            return ResetOutcome(state="reset")
        return ResetOutcome(state="expired", reason="no reset within the time")

    @workflow.update(name="request_code")
    async def request_code(self, request: CodeRequest) -> StepResult:
        number = self._code.replace(workflow.now())
        self._tasks.append(asyncio.create_task(self._deliver(number)))
        return StepResult(ok=True, step=self._step)

    @request_code.validator
    def _validate_request_code(self, request: CodeRequest) -> None:
        self._refuse_if_done()
        if self._code.sends:
            refusal = self._code.resend_refusal(workflow.now())
            if refusal is not None:
                raise ApplicationError(refusal[0], type=refusal[1], non_retryable=True)

    @workflow.update(name="reset_password")
    async def reset_password(self, request: ResetRequest) -> StepResult:
        check = self._code.check(request.code_digest, workflow.now(), tell_delivery=False)
        if not check.ok:
            if check.counted:
                await self._audit("code.failed", request.ip, attempts_left=str(check.attempts_left))
            return StepResult(ok=False, step=self._step, message=check.message)
        self._busy = True
        try:
            result = await workflow.execute_activity(
                "reset_password",
                ResetPasswordInput(account_id=self._input.account_id,
                                   staff_id=self._input.staff_id,
                                   workflow_id=workflow.info().workflow_id,
                                   sealed_password=request.sealed_password,
                                   sealed_totp=request.sealed_totp, ip=request.ip),
                result_type=ResetPasswordResult, start_to_close_timeout=STEP_TIMEOUT,
                retry_policy=RetryPolicy(maximum_attempts=5,
                                         non_retryable_error_types=["BadSeal", "AccountMissing"]),
                summary="Check and store the new password; sign out every session")
            if not result.ok:
                if result.totp_failed:
                    self._code.count_failure()
                return StepResult(ok=False, step=self._step, message=result.message,
                                  problems=result.problems)
            self._code.use()
            self._done = True
            self._move_to("completed", "Password changed; all sessions signed out")
            await workflow.start_child_workflow(
                "PasswordChangedNotice",
                args=[NoticeInput(staff_id=self._input.staff_id, changed_at=workflow.now()),
                      self._input.email_retry],
                id=f"password-changed-{self._input.account_id}-{workflow.uuid4()}",
                parent_close_policy=ParentClosePolicy.ABANDON,
                static_summary="Email: your password was changed")
            return StepResult(ok=True, step=self._step)
        finally:
            self._busy = False

    @reset_password.validator
    def _validate_reset_password(self, request: ResetRequest) -> None:
        self._refuse_if_done()
        if self._busy:
            raise ApplicationError("We're still working on your last step; please wait a "
                                   "moment.", type="Busy", non_retryable=True)
        if not request.code_digest or not request.sealed_password.startswith("sealed1."):
            raise ApplicationError("The form was incomplete; please try again.",
                                   type="BadRequest", non_retryable=True)

    @workflow.query(name="progress")
    def progress(self) -> ResetProgress:
        return ResetProgress(
            step=self._step, code_delivery=self._code.delivery,
            code_expires_at=self._code.expires_at, code_attempts_left=self._code.attempts_left,
            resends_left=self._code.resends_left, next_resend_at=self._code.next_request_at)

    def _refuse_if_done(self) -> None:
        if self._done:
            raise ApplicationError("This reset is finished. Sign in with your new password.",
                                   type="ResetDone", non_retryable=True)
        if self._ended:
            raise ApplicationError("This reset has ended. Start again with Forgot your "
                                   "password?", type="ResetEnded", non_retryable=True)

    async def _deliver(self, number: int) -> None:
        try:
            result = await workflow.execute_activity(
                "send_code",
                SendCodeInput(setup_id="", staff_id=self._input.staff_id,
                              workflow_id=workflow.info().workflow_id, purpose=RESET_PURPOSE,
                              code_ttl_seconds=self._input.code_ttl_seconds),
                result_type=SendCodeResult, start_to_close_timeout=timedelta(seconds=60),
                schedule_to_close_timeout=timedelta(
                    seconds=self._input.email_retry.window_seconds),
                retry_policy=self._input.email_retry.policy(),
                summary="Email the password reset code")
        except ActivityError:
            self._code.failed(number)
            return
        if self._code.delivered(number, result.code_digest, result.sent_at, workflow.now()):
            assert self._code.expires_at is not None
            self._move_to("code_sent", f"Reset code sent; valid until "
                          f"{self._code.expires_at.strftime('%H:%M UTC')}")

    async def _audit(self, action: str, ip: str | None, **details: str) -> None:
        await workflow.execute_activity(
            "record_audit",
            AuditInput(actor=f"staff:{self._input.staff_id}", action=action, outcome="failure",
                       target=self._input.staff_id, details=details, ip=ip),
            start_to_close_timeout=timedelta(seconds=30), retry_policy=DB_RETRY,
            summary=f"Audit {action}")

    def _move_to(self, step: str, details: str) -> None:
        if step == self._step:
            workflow.set_current_details(details)
            return
        self._step = step
        if step not in FINAL_STEPS:
            self._open_step = step
        metrics.flow_step(metrics.RESET, step)
        workflow.upsert_search_attributes([SSO_STEP.value_set(step)])
        workflow.set_current_details(details)
