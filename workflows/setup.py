"""The SSO setup flow: one run per "Send Single Sign-On Email", from the email to an active
account (or to expiry, cancellation, supersession or failure).

Each page step is an Update: the validator refuses what cannot apply now (and writes no
history), the handler does the step and returns what the page shows.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, RetryState

from core import flow_errors

with workflow.unsafe.imports_passed_through():
    from activities.inputs import (
        ActivateInput,
        CloseSetupInput,
        SendSetupEmailInput,
        SendSetupEmailResult,
        StaffStepInput,
        StorePasswordInput,
        VerifyTotpInput,
    )
    from activities.setup import SetupStepActivities
    from activities.setup_email import SetupActivities
    from core import metrics
    from core.search_attributes import SSO_STEP
    from core.steps import FINAL_SETUP_STATES, SetupState
    from workflows.codes import ON_ITS_WAY, CodeTerms, EmailedCode, email_code
    from workflows.common import (
        SEALED_ACCOUNT_STEP_RETRY,
        EmailRetry,
        StepRequest,
        StepResult,
        audit_by_staff,
        required,
        run_step,
        start_email,
    )

LINK_OPENED_DETAILS = "The person opened the link and is choosing a password"

PASSWORD_STEPS = {SetupState.email_sent, SetupState.link_opened}
CODE_STEPS = {SetupState.password_set, SetupState.code_sent}
TOTP_ATTEMPTS = 10
CODE_PURPOSE = "setup"
SETUP_ENDED = "This setup has ended. Ask your administrator to send you a new Single Sign-On email."
LINK_EXPIRED = "This link has expired. Ask your administrator to send you a new Single Sign-On email."
BUSY = "We're still working on your last step; please wait a moment."
# link_opened once had no payload; one patch id per delivery (see link_opened).
LINK_OPENED_PATCH = "link-opened-needs-request-{}"


@dataclass
class SsoSetupInput(CodeTerms):
    setup_id: str
    staff_id: str
    link_ttl_seconds: int
    requested_by: str
    email_retry: EmailRetry
    setup_ttl_seconds: int = 24 * 3600
    # Admins must enrol an authenticator: "No thanks, I'll set it up later" is not offered.
    mfa_required: bool = False
    # A code's delivery writes no command and code steps wait for it in replay (docs/temporal.md
    # §24). Versioned by the input, as the reset flow's `per_browser` is, rather than by
    # workflow.patched: a patch marker's payload is plaintext in history, and its change-version
    # upsert is one more billable action per flow. Flows started without it behave as before.
    quiet_delivery: bool = False
    # The organisation's slug for the flow counters' `org` label: set only while
    # SSO_METRICS_ORG_LABELS is on ("" otherwise, and in flows started before it).
    org: str = ""


@dataclass
class EndRequest:
    """Ask a running flow to end early: used by cancel and by a newer send (supersede).

    `actor` is recorded in the audit as who ended the setup. The web app sets it from the
    admin key or session it verified; the flow can believe it because the request reaches
    it only as AES-GCM ciphertext of this deployment's key (core/codec.py)."""

    actor: str
    reason: str | None = None


@dataclass
class SetupOutcome:
    state: str
    reason: str | None = None


@dataclass
class SetupStep:
    """Where a setup stands; what the `status` and `progress` queries answer begins with it."""

    step: str
    step_since: datetime
    link_expires_at: datetime | None


@dataclass
class SetupStatus(SetupStep):
    email_attempts: int


@dataclass
class SetPasswordRequest:
    # Sealed to the workers' key by the web app: history never holds the password.
    sealed_password: str
    link_id: str
    session_hash: str
    ip: str | None = None  # for the audit log


@dataclass
class ConfirmCodeRequest:
    # Keyed digest of the code the person typed (core.crypto.code_digest), never the code.
    code_digest: str
    ip: str | None = None


@dataclass
class TotpRequest:
    sealed_code: str
    ip: str | None = None


@dataclass
class SetupProgress(SetupStep):
    setup_expires_at: datetime | None
    code_delivery: str  # none | sending | sent | failed
    code_sent_at: datetime | None
    code_expires_at: datetime | None
    code_attempts_left: int
    resends_left: int
    next_resend_at: datetime | None
    wrong_codes_total: int
    mfa_required: bool = False


@workflow.defn(name="SsoSetup")
class SsoSetupWorkflow:
    @workflow.init
    def __init__(self, data: SsoSetupInput | None = None) -> None:
        self._input = data = required(data, "This start")
        self._step = SetupState.sending_email
        self._open_step = self._step  # where the flow stood before it ended, for metrics
        self._step_since = workflow.now()
        self._link_expires_at: datetime | None = None
        self._setup_expires_at: datetime | None = None
        self._email_attempts = 0
        self._end: tuple[SetupState, EndRequest] | None = None
        self._outcome: SetupOutcome | None = None
        # One step at a time: a second page submit waits for the first to finish.
        self._busy = False
        self._link_used = False
        self._code = EmailedCode(data.code_rules())
        self._code_tasks: list[asyncio.Task[None]] = []
        self._totp_failures = 0
        self._link_opened_signals = 0

    @workflow.run
    async def run(self, data: SsoSetupInput | None = None) -> SetupOutcome:
        metrics.flow_started(metrics.SETUP, self._input.org)
        workflow.set_current_details("Sending the Single Sign-On email")
        sent = await self._send_email()
        if sent is not None and self._end is None:
            self._link_expires_at = sent.link_expires_at
            self._email_attempts = sent.attempts
            self._move_to(
                SetupState.email_sent,
                f"Email sent{f' to {sent.masked_email}' if sent.masked_email else ''} at "
                f"{_hm(sent.sent_at)}; link expires {_hm(sent.link_expires_at)}",
            )
            await self._wait_for_link(sent.link_expires_at)
            if self._link_used:
                await self._wait_for_completion()
        if self._outcome is None and self._end is not None:
            await workflow.wait_condition(lambda: not self._busy)
            await self._close(*self._end)
        for task in self._code_tasks:
            task.cancel()
        await workflow.wait_condition(workflow.all_handlers_finished)
        assert self._outcome is not None
        state = self._outcome.state
        metrics.flow_ended(
            metrics.SETUP,
            "completed" if state == SetupState.active else state,
            self._open_step,
            self._input.org,
        )
        return self._outcome

    async def _wait_for_link(self, expires_at: datetime) -> None:
        try:
            await workflow.wait_condition(
                lambda: self._end is not None or self._link_used,
                timeout=max(expires_at - workflow.now(), timedelta(seconds=1)),
                timeout_summary="Setup link expires",
            )
        except TimeoutError:
            # A password submitted just before expiry finishes first.
            await workflow.wait_condition(lambda: not self._busy)
            if not self._link_used and self._end is None:
                await self._close(SetupState.expired, EndRequest("system", "the setup link expired"))

    async def _wait_for_completion(self) -> None:
        deadline = workflow.now() + timedelta(seconds=self._input.setup_ttl_seconds)
        self._setup_expires_at = deadline
        try:
            await workflow.wait_condition(
                lambda: self._end is not None or self._step == SetupState.active,
                timeout=deadline - workflow.now(),
                timeout_summary="Setup deadline",
            )
        except TimeoutError:
            await workflow.wait_condition(lambda: not self._busy)
            if self._step != SetupState.active and self._end is None:
                await self._close(
                    SetupState.expired,
                    EndRequest("system", "setup was not finished in time after the link was used"),
                )
        if self._step == SetupState.active and self._outcome is None:
            self._outcome = SetupOutcome(state=SetupState.active)

    async def _send_email(self) -> SendSetupEmailResult | None:
        info = workflow.info()
        send = start_email(
            SetupActivities.send_setup_email,
            SendSetupEmailInput(
                setup_id=self._input.setup_id,
                staff_id=self._input.staff_id,
                workflow_id=info.workflow_id,
                run_id=info.run_id,
                link_ttl_seconds=self._input.link_ttl_seconds,
            ),
            self._input.email_retry,
            "Email the Single Sign-On setup link",
        )
        await workflow.wait_condition(lambda: send.done() or self._end is not None)
        if not send.done():
            send.cancel()
            return None
        try:
            return await send
        except ActivityError as err:
            await self._close(SetupState.failed, EndRequest("system", _failure_reason(err)))
            return None

    async def _close(self, state: SetupState, request: EndRequest) -> None:
        if self._outcome is not None:
            return
        self._outcome = SetupOutcome(state=state, reason=request.reason)
        await run_step(
            SetupActivities.close_setup,
            CloseSetupInput(
                setup_id=self._input.setup_id,
                staff_id=self._input.staff_id,
                run_id=workflow.info().run_id,
                state=state,
                reason=request.reason,
                actor=request.actor,
            ),
            f"Record the flow as {state}",
        )
        self._move_to(state, f"Ended: {state}" + (f" ({request.reason})" if request.reason else ""))

    def _move_to(self, step: SetupState, details: str | None = None, upsert: bool = True) -> None:
        self._step = step
        if step not in FINAL_SETUP_STATES:
            self._open_step = step
        metrics.flow_step(metrics.SETUP, step, self._input.org)
        self._step_since = workflow.now()
        if upsert:
            workflow.upsert_search_attributes([SSO_STEP.value_set(step)])
        if details is not None:
            workflow.set_current_details(details)

    # -- page steps -----------------------------------------------------------------------

    @workflow.update(name="set_password")
    async def set_password(self, request: SetPasswordRequest) -> StepResult:
        # The email can reach a fast reader before its activity's result reaches this flow.
        await workflow.wait_condition(lambda: self._step != SetupState.sending_email)
        late = self._late_for_password()
        if late is not None:
            return StepResult(ok=False, step=self._step, message=late)
        self._busy = True
        try:
            if self._step == SetupState.email_sent:
                self._move_to(SetupState.link_opened, LINK_OPENED_DETAILS)
            info = workflow.info()
            result = await run_step(
                SetupStepActivities.store_password,
                StorePasswordInput(
                    setup_id=self._input.setup_id,
                    staff_id=self._input.staff_id,
                    workflow_id=info.workflow_id,
                    run_id=info.run_id,
                    link_id=request.link_id,
                    sealed_password=request.sealed_password,
                    session_hash=request.session_hash,
                    session_ttl_seconds=self._input.setup_ttl_seconds,
                    ip=request.ip,
                ),
                "Check, hash and store the password",
                retry=RetryPolicy(maximum_attempts=5, non_retryable_error_types=[flow_errors.BAD_SEAL]),
            )
            if not result.ok:
                return StepResult(ok=False, step=self._step, message=result.message, problems=result.problems)
            self._link_used = True
            self._move_to(SetupState.password_set, "Password set; sending the verification code")
            if self._end is not None:
                # Cancelled or superseded while the password was stored: send nothing more.
                return StepResult(ok=False, step=self._step, message=SETUP_ENDED)
            self._send_code()
            return StepResult(ok=True, step=self._step)
        finally:
            self._busy = False

    def _late_for_password(self) -> str | None:
        """Why a password accepted while the email was still being recorded can't be set now."""
        if self._end is not None or self._outcome is not None:
            return SETUP_ENDED
        if self._busy:
            return BUSY
        if self._step not in PASSWORD_STEPS:
            return "That step isn't available right now."
        assert self._link_expires_at is not None
        if workflow.now() >= self._link_expires_at:
            return LINK_EXPIRED
        return None

    @set_password.validator
    def _validate_set_password(self, request: SetPasswordRequest) -> None:
        self._refuse_unless(PASSWORD_STEPS | {SetupState.sending_email})
        if self._link_expires_at is not None and workflow.now() >= self._link_expires_at:
            raise _refusal(LINK_EXPIRED, flow_errors.LINK_EXPIRED)
        if not request.sealed_password.startswith("sealed1.") or not request.session_hash:
            raise _refusal("The form was incomplete; please try again.", flow_errors.BAD_REQUEST)

    @workflow.update(name="confirm_code")
    async def confirm_code(self, request: ConfirmCodeRequest) -> StepResult:
        await self._settle_delivery()
        check = self._code.check(request.code_digest, workflow.now())
        if not check.ok:
            if check.counted:
                await self._audit(
                    "code.failed", "failure", request.ip, attempts_left=str(check.attempts_left)
                )
            return StepResult(ok=False, step=self._step, message=check.message)
        self._busy = True
        try:
            self._code.use()
            await run_step(
                SetupStepActivities.confirm_email,
                self._step_input(request.ip),
                "Mark the email verified; prepare MFA",
            )
            self._move_to(
                SetupState.mfa_pending, "Account confirmed; waiting for the person to set up MFA or skip it"
            )
            return StepResult(ok=True, step=self._step)
        finally:
            self._busy = False

    @confirm_code.validator
    def _validate_confirm_code(self, request: ConfirmCodeRequest) -> None:
        self._refuse_unless(CODE_STEPS)
        self._refuse_while_sending()
        if not request.code_digest:
            raise _refusal("Enter the 6-digit code from the email.", flow_errors.BAD_REQUEST)

    @workflow.update(name="resend_code")
    async def resend_code(self, request: StepRequest | None = None) -> StepResult:
        # None only in histories from before the request existed (validators do not replay).
        await self._settle_delivery()
        self._send_code()
        return StepResult(
            ok=True, step=self._step, message=("We've sent you a new code. Earlier codes no longer work.")
        )

    @resend_code.validator
    def _validate_resend_code(self, request: StepRequest | None = None) -> None:
        required(request, "This step")
        self._refuse_unless(CODE_STEPS)
        self._refuse_while_sending()
        refusal = self._code.resend_refusal(workflow.now())
        if refusal is not None:
            message, kind = refusal
            if kind == flow_errors.TOO_MANY_CODES:
                message += " Ask your administrator to send a new Single Sign-On email."
            raise _refusal(message, kind)

    @workflow.update(name="complete_mfa")
    async def complete_mfa(self, request: TotpRequest) -> StepResult:
        self._busy = True
        try:
            result = await run_step(
                SetupStepActivities.verify_totp,
                VerifyTotpInput(
                    staff_id=self._input.staff_id,
                    workflow_id=workflow.info().workflow_id,
                    sealed_code=request.sealed_code,
                    ip=request.ip,
                ),
                "Check the authenticator code",
                retry=SEALED_ACCOUNT_STEP_RETRY,
            )
            if not result.ok:
                self._totp_failures += 1
                return StepResult(ok=False, step=self._step, message=result.message)
            await self._activate(mfa=True, ip=request.ip)
            return StepResult(ok=True, step=self._step)
        finally:
            self._busy = False

    @complete_mfa.validator
    def _validate_complete_mfa(self, request: TotpRequest) -> None:
        self._refuse_unless({SetupState.mfa_pending})
        if self._totp_failures >= TOTP_ATTEMPTS:
            raise _refusal(
                'Too many incorrect codes. Choose "No thanks, I\'ll set it up later" '
                "and set up MFA after signing in.",
                flow_errors.TOO_MANY_ATTEMPTS,
            )
        if not request.sealed_code.startswith("sealed1."):
            raise _refusal("Enter the 6-digit code from your authenticator app.", flow_errors.BAD_REQUEST)

    @workflow.update(name="skip_mfa")
    async def skip_mfa(self, request: StepRequest | None = None) -> StepResult:
        # None only in histories from before the request existed (validators do not replay).
        self._busy = True
        try:
            await self._activate(mfa=False, ip=request.ip if request else None)
            return StepResult(ok=True, step=self._step)
        finally:
            self._busy = False

    @skip_mfa.validator
    def _validate_skip_mfa(self, request: StepRequest | None = None) -> None:
        required(request, "This step")
        self._refuse_unless({SetupState.mfa_pending})
        if self._input.mfa_required:
            raise _refusal(
                "Administrators must set up MFA: scan the QR code with your "
                "authenticator app and enter its code.",
                flow_errors.MFA_REQUIRED,
            )

    async def _activate(self, mfa: bool, ip: str | None) -> None:
        await run_step(
            SetupStepActivities.activate_account,
            ActivateInput(
                setup_id=self._input.setup_id,
                staff_id=self._input.staff_id,
                workflow_id=workflow.info().workflow_id,
                mfa=mfa,
                ip=ip,
            ),
            "Activate the account" + (" with MFA" if mfa else " (MFA skipped)"),
        )
        self._move_to(
            SetupState.active, "Single Sign-On is active" + (" with MFA" if mfa else "; MFA skipped for now")
        )

    # -- emailed codes --------------------------------------------------------------------

    def _refuse_while_sending(self) -> None:
        if self._code.delivery == "sending":
            raise _refusal(ON_ITS_WAY, flow_errors.CODE_SENDING)

    async def _settle_delivery(self) -> None:
        """Where a code step starts, live and in replay (docs/temporal.md §24).

        Live, the validator has refused the step while a code is being sent. A replay skips
        validators, and temporalio 1.35 runs an update before the activity result that
        reached the flow in the same workflow task, though the live worker resumed that
        delivery first: so the step waits for the delivery it came after. A plain
        `wait_condition(lambda: True)` would not do: the SDK checks conditions before it
        applies the activity results of the same activation."""
        if self._input.quiet_delivery and self._code.delivery == "sending":
            await workflow.wait_condition(lambda: self._code.delivery != "sending")

    def _send_code(self) -> None:
        """Replace the current code: the old one stops working at once, the new one works as
        soon as its email is out. Sending runs beside the page, which shows its progress."""
        number = self._code.replace(workflow.now())
        self._code_tasks.append(asyncio.create_task(self._deliver_code(number)))

    async def _deliver_code(self, number: int) -> None:
        try:
            result = await email_code(
                self._input,
                self._input.staff_id,
                CODE_PURPOSE,
                self._input.email_retry,
                "Email the verification code",
                setup_id=self._input.setup_id,
            )
        except ActivityError:
            self._code.failed(number)
            return
        if self._outcome is not None or not self._code.delivered(
            number, result.code_digest, result.sent_at, workflow.now()
        ):
            return
        if self._step == SetupState.password_set:
            assert self._code.sent_at is not None and self._code.expires_at is not None
            # SsoStep stays password_set until the next step: see SsoSetupInput.quiet_delivery.
            self._move_to(
                SetupState.code_sent,
                f"Verification code sent at {_hm(self._code.sent_at)}; "
                f"valid until {_hm(self._code.expires_at)}",
                upsert=not self._input.quiet_delivery,
            )

    # -- shared ---------------------------------------------------------------------------

    def _refuse_unless(self, steps: set[SetupState]) -> None:
        if self._end is not None or self._outcome is not None:
            raise _refusal(SETUP_ENDED, flow_errors.SETUP_ENDED)
        if self._busy:
            raise _refusal(BUSY, flow_errors.BUSY)
        if self._step not in steps:
            raise _refusal("That step isn't available right now.", f"{flow_errors.WRONG_STEP}:{self._step}")

    def _step_input(self, ip: str | None = None) -> StaffStepInput:
        return StaffStepInput(
            setup_id=self._input.setup_id,
            staff_id=self._input.staff_id,
            workflow_id=workflow.info().workflow_id,
            ip=ip,
        )

    async def _audit(self, action: str, outcome: str, ip: str | None, **details: str) -> None:
        await audit_by_staff(self._input.staff_id, action, outcome, ip, details)

    async def _request_end(self, state: SetupState, request: EndRequest) -> SetupOutcome:
        self._end = (state, request)
        await workflow.wait_condition(lambda: self._outcome is not None and self._step in FINAL_SETUP_STATES)
        assert self._outcome is not None
        return self._outcome

    @workflow.update(name="cancel")
    async def cancel(self, request: EndRequest) -> SetupOutcome:
        return await self._request_end(SetupState.cancelled, request)

    @workflow.update(name="supersede")
    async def supersede(self, request: EndRequest) -> SetupOutcome:
        return await self._request_end(SetupState.superseded, request)

    @cancel.validator
    def _validate_cancel(self, request: EndRequest) -> None:
        self._refuse_if_ending()

    @supersede.validator
    def _validate_supersede(self, request: EndRequest) -> None:
        self._refuse_if_ending()

    def _refuse_if_ending(self) -> None:
        if self._end is not None or self._outcome is not None:
            raise ApplicationError(
                "This setup has already ended or is ending", type=flow_errors.SETUP_ALREADY_ENDED
            )

    @workflow.signal(name="link_opened")
    async def link_opened(self, request: StepRequest | None = None) -> None:
        """The person opened the password form from the link. A GET sends this: it consumes
        nothing and can only move the flow from `email_sent` to `link_opened`."""
        self._link_opened_signals += 1
        # Signals have no validator: a delivery without a request (which only a client
        # without the key sends now) is ignored, except when replaying a history from before
        # the request existed, which processed it. `patched` memoises per id, so each
        # delivery asks under its own id: a flow replayed up to now still ignores the next.
        if request is None and workflow.patched(LINK_OPENED_PATCH.format(self._link_opened_signals)):
            workflow.logger.warning("ignored a link_opened signal without a request")
            return
        # The email can reach a fast reader before its activity's result reaches this flow.
        await workflow.wait_condition(lambda: self._step != SetupState.sending_email)
        if (
            self._step != SetupState.email_sent
            or self._busy
            or self._end is not None
            or self._outcome is not None
        ):
            return
        self._move_to(SetupState.link_opened, LINK_OPENED_DETAILS)
        await run_step(
            SetupStepActivities.record_link_opened,
            self._step_input(request.ip if request else None),
            "Record that the link was opened",
        )

    @workflow.signal(name="entra_linked")
    def entra_linked(self, actor: str | None = None) -> None:
        """The person linked Microsoft Entra from this setup's link: that completes it. Sent
        by the EntraLink flow (encrypted like every payload); without a payload, which only a
        client without the key sends, it is ignored (a missing argument would otherwise fail
        every workflow task of this flow from then on)."""
        if actor is None:
            workflow.logger.warning("ignored an entra_linked signal without a payload")
            return
        if (
            self._step in PASSWORD_STEPS
            and not self._link_used
            and self._end is None
            and self._outcome is None
        ):
            self._end = (SetupState.active, EndRequest(actor, "linked to Microsoft Entra"))

    @workflow.query(name="status")
    def status(self) -> SetupStatus:
        return SetupStatus(
            step=self._step,
            step_since=self._step_since,
            link_expires_at=self._link_expires_at,
            email_attempts=self._email_attempts,
        )

    @workflow.query(name="progress")
    def progress(self) -> SetupProgress:
        return SetupProgress(
            step=self._step,
            step_since=self._step_since,
            link_expires_at=self._link_expires_at,
            setup_expires_at=self._setup_expires_at,
            code_delivery=self._code.delivery,
            code_sent_at=self._code.sent_at,
            code_expires_at=self._code.expires_at,
            code_attempts_left=self._code.attempts_left,
            resends_left=self._code.resends_left,
            next_resend_at=self._code.next_request_at,
            wrong_codes_total=self._code.wrong_total,
            mfa_required=self._input.mfa_required,
        )


def _refusal(message: str, kind: str) -> ApplicationError:
    return ApplicationError(message, type=kind, non_retryable=True)


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
