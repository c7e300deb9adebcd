"""The SSO setup flow: one run per "Send Single Sign-On Email", from email to link expiry."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, RetryState

with workflow.unsafe.imports_passed_through():
    from activities.inputs import CloseSetupInput, SendSetupEmailInput, SendSetupEmailResult
    from core.search_attributes import SSO_STEP

SEND_EMAIL = "send_setup_email"
CLOSE_SETUP = "close_setup"
FINAL_STATES = {"expired", "superseded", "cancelled", "failed", "active"}


@dataclass
class EmailRetry:
    initial_interval_seconds: float = 2.0
    maximum_interval_seconds: float = 120.0
    window_seconds: float = 3600.0


@dataclass
class SsoSetupInput:
    setup_id: str
    staff_id: str
    link_ttl_seconds: int
    requested_by: str
    email_retry: EmailRetry


@dataclass
class EndRequest:
    """Ask a running flow to end early: used by cancel and by a newer send (supersede)."""

    actor: str
    reason: str | None = None


@dataclass
class SetupOutcome:
    state: str
    reason: str | None = None


@dataclass
class SetupStatus:
    step: str
    step_since: datetime
    link_expires_at: datetime | None
    email_attempts: int


@workflow.defn(name="SsoSetup")
class SsoSetupWorkflow:
    @workflow.init
    def __init__(self, data: SsoSetupInput) -> None:
        self._input = data
        self._step = "sending_email"
        self._step_since = workflow.now()
        self._link_expires_at: datetime | None = None
        self._email_attempts = 0
        self._end: tuple[str, EndRequest] | None = None
        self._outcome: SetupOutcome | None = None

    @workflow.run
    async def run(self, data: SsoSetupInput) -> SetupOutcome:
        workflow.set_current_details("Sending the Single Sign-On email")
        sent = await self._send_email()
        if sent is not None and self._end is None:
            self._move_to("email_sent")
            self._link_expires_at = sent.link_expires_at
            self._email_attempts = sent.attempts
            workflow.set_current_details(
                f"Email sent to {sent.masked_email} at {_hm(sent.sent_at)}; "
                f"link expires {_hm(sent.link_expires_at)}"
            )
            remaining = sent.link_expires_at - workflow.now()
            try:
                await workflow.wait_condition(
                    lambda: self._end is not None,
                    timeout=max(remaining, timedelta(seconds=1)),
                    timeout_summary="Setup link expires",
                )
            except TimeoutError:
                await self._close("expired", EndRequest("system", "the setup link expired"))
        if self._outcome is None and self._end is not None:
            await self._close(*self._end)
        await workflow.wait_condition(workflow.all_handlers_finished)
        assert self._outcome is not None
        return self._outcome

    async def _send_email(self) -> SendSetupEmailResult | None:
        retry = self._input.email_retry
        info = workflow.info()
        send = workflow.start_activity(
            SEND_EMAIL,
            SendSetupEmailInput(
                setup_id=self._input.setup_id,
                staff_id=self._input.staff_id,
                workflow_id=info.workflow_id,
                run_id=info.run_id,
                link_ttl_seconds=self._input.link_ttl_seconds,
            ),
            result_type=SendSetupEmailResult,
            start_to_close_timeout=timedelta(seconds=60),
            schedule_to_close_timeout=timedelta(seconds=retry.window_seconds),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=retry.initial_interval_seconds),
                backoff_coefficient=2.0,
                maximum_interval=timedelta(seconds=retry.maximum_interval_seconds),
                non_retryable_error_types=["PermanentEmailError", "StaffNotFound", "SetupEnded"],
            ),
            summary="Email the Single Sign-On setup link",
        )
        await workflow.wait_condition(lambda: send.done() or self._end is not None)
        if not send.done():
            send.cancel()
            return None
        try:
            return await send
        except ActivityError as err:
            await self._close("failed", EndRequest("system", _failure_reason(err)))
            return None

    async def _close(self, state: str, request: EndRequest) -> None:
        if self._outcome is not None:
            return
        self._outcome = SetupOutcome(state=state, reason=request.reason)
        await workflow.execute_activity(
            CLOSE_SETUP,
            CloseSetupInput(setup_id=self._input.setup_id, staff_id=self._input.staff_id,
                            run_id=workflow.info().run_id, state=state, reason=request.reason,
                            actor=request.actor),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30)),
            summary=f"Record the flow as {state}",
        )
        self._move_to(state)
        workflow.set_current_details(f"Ended: {state}" + (f" ({request.reason})"
                                                          if request.reason else ""))

    def _move_to(self, step: str) -> None:
        self._step = step
        self._step_since = workflow.now()
        workflow.upsert_search_attributes([SSO_STEP.value_set(step)])

    async def _request_end(self, state: str, request: EndRequest) -> SetupOutcome:
        self._end = (state, request)
        await workflow.wait_condition(lambda: self._outcome is not None
                                      and self._step in FINAL_STATES)
        assert self._outcome is not None
        return self._outcome

    @workflow.update(name="cancel")
    async def cancel(self, request: EndRequest) -> SetupOutcome:
        return await self._request_end("cancelled", request)

    @workflow.update(name="supersede")
    async def supersede(self, request: EndRequest) -> SetupOutcome:
        return await self._request_end("superseded", request)

    @cancel.validator
    def _validate_cancel(self, request: EndRequest) -> None:
        self._refuse_if_ending()

    @supersede.validator
    def _validate_supersede(self, request: EndRequest) -> None:
        self._refuse_if_ending()

    def _refuse_if_ending(self) -> None:
        if self._end is not None or self._outcome is not None:
            raise ApplicationError("This setup has already ended or is ending",
                                   type="SetupAlreadyEnded")

    @workflow.query(name="status")
    def status(self) -> SetupStatus:
        return SetupStatus(step=self._step, step_since=self._step_since,
                           link_expires_at=self._link_expires_at,
                           email_attempts=self._email_attempts)


def _hm(moment: datetime) -> str:
    return moment.strftime("%H:%M UTC")


def _failure_reason(err: ActivityError) -> str:
    if err.retry_state == RetryState.TIMEOUT:
        # The cause is then the last attempt's error, not a timeout: say what really ended it.
        return "email could not be delivered before the retry window ran out"
    cause = err.cause
    if isinstance(cause, ApplicationError):
        return f"email could not be delivered: {cause.message}"
    if cause is not None and "timeout" in type(cause).__name__.lower():
        return "email could not be delivered before the retry window ran out"
    return f"email could not be delivered: {cause or err}"



