"""The password reset flow: one per account at a time (id password-reset-<account uuid>).

A request for a code starts it, or reaches the open one through update-with-start (then it
counts as "Send a new code" and is throttled the same way). The reset itself is an Update:
code, new password and, with MFA on, the authenticator code.

Each requesting browser (an opaque key the web app derives from an HttpOnly cookie) has codes,
tries and a resend throttle of its own, so one browser's requests never block another's. Wrong
codes are capped across browsers per flow and per account over a day (in the database, by an
activity); past a cap codes stop and the person is emailed a single-use reset link instead.
Flows started before this (`per_browser` false in their input) keep one code for every
browser until they end, so their histories replay unchanged.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from temporalio import workflow
from temporalio.common import TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import ActivityError, ApplicationError, WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

from core import flow_errors

with workflow.unsafe.imports_passed_through():
    from activities.inputs import (
        NoticeInput,
        ResetPasswordInput,
        SendResetLinkInput,
        WrongResetCodeInput,
    )
    from activities.reset import ResetActivities
    from core import metrics
    from core.oidc.backchannel import SessionLogoutInput
    from core.reset_caps import CODES_STOPPED, LINK_SENT
    from core.search_attributes import SSO_STEP, flow_attributes
    from workflows.codes import CODE_ATTEMPTS, CodeTerms, EmailedCode, email_code
    from workflows.common import (
        DB_RETRY,
        SEALED_ACCOUNT_STEP_RETRY,
        EmailRetry,
        StepResult,
        audit_by_staff,
        required,
        run_step,
        start_email,
    )
    from workflows.logout import (
        SessionLogoutWorkflow,
        logout_search_attributes,
        logout_summary,
        logout_workflow_id,
    )
    from workflows.notices import PasswordChangedNoticeWorkflow

RESET_PURPOSE = "reset"
# Logouts are owed in the outbox too: their children are never started twice (see _tell_apps).
LOGOUT_OUTBOX_PATCH = "logout-outbox"
FINAL_STEPS = {"completed", "expired"}
LINK_TOTP_SPENT = (
    "Too many incorrect authenticator codes: this link can no longer be used. "
    "Start again with Forgot your password?"
)


@dataclass
class PasswordResetInput(CodeTerms):
    account_id: str
    staff_id: str
    email_retry: EmailRetry
    # The flow ends this long after the last code was asked for.
    ttl_seconds: int = 3600
    wrong_code_flow_limit: int = 10
    wrong_code_day_limit: int = 20
    link_ttl_seconds: int = 900
    # The person's organisation: the flows this one starts carry it (SsoOrgId). "" in flows
    # started before organisations, which start theirs as they always did.
    org_id: str = ""
    # The organisation's slug for the flow counters' `org` label: set only while
    # SSO_METRICS_ORG_LABELS is on ("" otherwise, and in flows started before it).
    org: str = ""
    # Codes per browser, caps and links. Versioned by the input rather than workflow.patched:
    # a patch marker's payload is plaintext in history, and its change-version upsert is one
    # more billable action per flow; flows started without it behave as they always did.
    per_browser: bool = False


@dataclass
class CodeRequest:
    ip: str | None = None
    # The requesting browser's opaque key (a keyed hash of its cookie; grants nothing).
    browser: str | None = None
    # The account is past its daily cap on wrong codes: email a link, not a code.
    links_only: bool = False


@dataclass
class ResetRequest:
    code_digest: str
    sealed_password: str
    sealed_totp: str | None = None
    ip: str | None = None
    browser: str | None = None
    # A reset link's keyed token hash, in place of a code.
    link_digest: str | None = None
    # In place of the authenticator code: the web app checked the person's passkey and wrote
    # a one-time proof (a row key; no challenge, signature or secret).
    passkey_proof: str | None = None


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
        self._rules = data.code_rules()
        self._code = EmailedCode(self._rules)
        self._per_browser = data.per_browser
        self._browsers: dict[str, EmailedCode] = {}
        self._codes_stopped = False
        self._links_until: datetime | None = None
        self._link_totp_failures: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._busy = False
        self._done = False
        self._ended = False

    @workflow.run
    async def run(self, data: PasswordResetInput | None = None) -> ResetOutcome:
        data = self._input
        metrics.flow_started(metrics.RESET, data.org)
        workflow.set_current_details("Reset code requested")
        while not self._done and not self._ended:
            deadline = self._deadline() or workflow.now() + timedelta(seconds=data.ttl_seconds)
            try:
                await workflow.wait_condition(
                    lambda: self._done,
                    timeout=max(deadline - workflow.now(), timedelta(seconds=1)),
                    timeout_summary="Reset request expires",
                )
            except TimeoutError:
                await workflow.wait_condition(lambda: not self._busy)
                if not self._done and (self._deadline() or deadline) == deadline:
                    # From here on every step is refused: nothing can slip in while closing.
                    self._ended = True
        if not self._done:
            for task in self._tasks:
                task.cancel()
            self._move_to("expired", "Ended: the reset was not completed in time")
        await workflow.wait_condition(workflow.all_handlers_finished)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        outcome = "completed" if self._done else "expired"
        metrics.flow_ended(metrics.RESET, outcome, self._open_step, data.org)
        if self._done:
            return ResetOutcome(state="reset")
        return ResetOutcome(state="expired", reason="no reset within the time")

    @workflow.update(name="request_code")
    async def request_code(self, request: CodeRequest) -> StepResult:
        code = self._code_of(request.browser, keep=True)
        number = code.replace(workflow.now())
        if self._per_browser and (self._codes_stopped or request.links_only):
            # `links_only` (the account's day cap, as the web app read it) is not kept: an
            # admin's unlock may clear it, and the flow's own checks consult the database.
            self._tasks.append(asyncio.create_task(self._deliver_link(code, number)))
            return StepResult(ok=True, step=self._step, message=LINK_SENT)
        self._tasks.append(asyncio.create_task(self._deliver(number, code)))
        return StepResult(ok=True, step=self._step)

    @request_code.validator
    def _validate_request_code(self, request: CodeRequest) -> None:
        self._refuse_if_done()
        code = self._code_of(request.browser)
        if code.sends:
            refusal = code.resend_refusal(workflow.now())
            if refusal is not None:
                raise ApplicationError(refusal[0], type=refusal[1], non_retryable=True)

    @workflow.update(name="reset_password")
    async def reset_password(self, request: ResetRequest) -> StepResult:
        if self._per_browser and request.link_digest:
            return await self._change_password(request, None)
        if self._per_browser and self._codes_stopped:
            return StepResult(ok=False, step=self._step, message=CODES_STOPPED)
        code = self._code_of(request.browser, keep=True)
        check = code.check(request.code_digest, workflow.now(), tell_delivery=False)
        if not check.ok:
            if check.counted and self._per_browser:
                return await self._wrong_code(request, check.attempts_left, check.message)
            if check.counted:
                await self._audit("code.failed", request.ip, attempts_left=str(check.attempts_left))
            return StepResult(ok=False, step=self._step, message=check.message)
        return await self._change_password(request, code)

    async def _change_password(self, request: ResetRequest, code: EmailedCode | None) -> StepResult:
        """With a code that matched (checked against the caps first), or a link (`code`
        None; the activity consumes it)."""
        self._busy = True
        try:
            data = ResetPasswordInput(
                account_id=self._input.account_id,
                staff_id=self._input.staff_id,
                workflow_id=workflow.info().workflow_id,
                sealed_password=request.sealed_password,
                sealed_totp=request.sealed_totp,
                ip=request.ip,
            )
            if request.passkey_proof:
                data.passkey_proof = request.passkey_proof
            if self._per_browser and code is None:
                data.link_digest = request.link_digest
            elif self._per_browser:
                data.code_flow = workflow.info().run_id
                data.flow_limit = self._input.wrong_code_flow_limit
                data.day_limit = self._input.wrong_code_day_limit
            result = await run_step(
                ResetActivities.reset_password,
                data,
                "Check and store the new password; sign out every session",
                retry=SEALED_ACCOUNT_STEP_RETRY,
            )
            if not result.ok:
                if result.codes_stopped:
                    self._stop_codes()
                elif result.totp_failed and code is not None:
                    code.count_failure()
                elif result.totp_failed and request.link_digest:
                    self._count_link_totp_failure(request.link_digest)
                return StepResult(ok=False, step=self._step, message=result.message, problems=result.problems)
            if code is not None:
                code.use()
            self._done = True
            self._move_to("completed", "Password changed; all sessions signed out")
            await workflow.start_child_workflow(
                PasswordChangedNoticeWorkflow.run,
                args=[
                    NoticeInput(staff_id=self._input.staff_id, changed_at=workflow.now()),
                    self._input.email_retry,
                ],
                id=f"password-changed-{self._input.account_id}-{workflow.uuid4()}",
                parent_close_policy=ParentClosePolicy.ABANDON,
                search_attributes=TypedSearchAttributes(
                    flow_attributes(org_id=self._input.org_id, staff_id=self._input.staff_id)
                )
                if self._input.org_id
                else None,
                static_summary="Email: your password was changed",
            )
            for logout in result.logouts:
                await self._tell_apps(logout)
            return StepResult(ok=True, step=self._step)
        finally:
            self._busy = False

    async def _tell_apps(self, logout: SessionLogoutInput) -> None:
        """Back-channel logout of a session the reset ended, outliving this flow. The reset's
        activity also owed it in the logout outbox, whose sweeper may have started it first:
        the id is then never reused, so a logout already done is not sent again (flows
        recorded before the outbox keep their start as it was)."""
        reuse = (
            WorkflowIDReusePolicy.REJECT_DUPLICATE
            if workflow.patched(LOGOUT_OUTBOX_PATCH)
            else WorkflowIDReusePolicy.ALLOW_DUPLICATE
        )
        try:
            await workflow.start_child_workflow(
                SessionLogoutWorkflow.run,
                logout,
                id=logout_workflow_id(logout.sid),
                id_reuse_policy=reuse,
                parent_close_policy=ParentClosePolicy.ABANDON,
                search_attributes=logout_search_attributes(logout),
                static_summary=logout_summary(logout),
            )
        except WorkflowAlreadyStartedError:
            pass  # that session's logout is already on its way

    @reset_password.validator
    def _validate_reset_password(self, request: ResetRequest) -> None:
        self._refuse_if_done()
        if self._busy:
            raise ApplicationError(
                "We're still working on your last step; please wait a moment.",
                type=flow_errors.BUSY,
                non_retryable=True,
            )
        if not (
            request.code_digest or (self._per_browser and request.link_digest)
        ) or not request.sealed_password.startswith("sealed1."):
            raise ApplicationError(
                "The form was incomplete; please try again.", type=flow_errors.BAD_REQUEST, non_retryable=True
            )
        if (
            request.link_digest
            and request.link_digest in self._link_totp_failures
            and self._link_totp_failures[request.link_digest] >= CODE_ATTEMPTS
        ):
            raise ApplicationError(LINK_TOTP_SPENT, type=flow_errors.LINK_SPENT, non_retryable=True)

    async def _wrong_code(self, request: ResetRequest, attempts_left: int, message: str | None) -> StepResult:
        """Counted against the flow's and the account's caps; the one that reaches a cap stops
        codes for every browser and emails the person a link."""
        counted = await workflow.execute_activity_method(
            ResetActivities.count_wrong_reset_code,
            WrongResetCodeInput(
                flow=workflow.info().run_id,
                staff_id=self._input.staff_id,
                account_id=self._input.account_id,
                flow_limit=self._input.wrong_code_flow_limit,
                day_limit=self._input.wrong_code_day_limit,
                attempts_left=attempts_left,
                ip=request.ip,
            ),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=DB_RETRY,
            summary="Count a wrong reset code",
        )
        if counted.stopped:
            self._stop_codes()
            return StepResult(ok=False, step=self._step, message=CODES_STOPPED)
        return StepResult(ok=False, step=self._step, message=message)

    def _count_link_totp_failure(self, digest: str) -> None:
        self._link_totp_failures[digest] = self._link_totp_failures.get(digest, 0) + 1

    def _stop_codes(self) -> None:
        """Codes no longer work in this flow: the person is emailed a link at once (the
        browser that asks next gets another, within its own throttle)."""
        if self._codes_stopped:
            return
        self._codes_stopped = True
        self._tasks.append(asyncio.create_task(self._deliver_link(None, 0)))

    def _code_of(self, browser: str | None, keep: bool = False) -> EmailedCode:
        """The code of this browser (the one shared code in a flow from before browsers had
        their own). `keep` stores a browser's first code; a validator must not."""
        if not self._per_browser or browser is None:
            return self._code
        code = self._browsers.get(browser)
        if code is None or (
            code.last_request is not None
            and workflow.now() >= (code.last_request + timedelta(seconds=self._input.ttl_seconds))
        ):
            # A browser quiet for as long as a flow lasts starts afresh, even while others
            # keep the flow open: its own old requests never hold it back for good.
            code = EmailedCode(self._rules)
            if keep:
                self._browsers[browser] = code
        return code

    def _deadline(self) -> datetime | None:
        """When the flow ends: the ttl after the last code was asked for by any browser, and
        not before the last link emailed expires."""
        requests = [
            c.last_request for c in (self._code, *self._browsers.values()) if c.last_request is not None
        ]
        ends = [max(requests) + timedelta(seconds=self._input.ttl_seconds)] if requests else []
        if self._links_until is not None:
            ends.append(self._links_until)
        return max(ends) if ends else None

    @workflow.query(name="progress")
    def progress(self, browser: str | None = None) -> ResetProgress:
        """That browser's code; without one, the code asked for last (by any browser)."""
        code = self._code
        if browser is not None:
            code = self._code_of(browser)
        elif self._browsers:
            code = max(
                (self._code, *self._browsers.values()),
                key=lambda c: c.last_request or datetime.min.replace(tzinfo=UTC),
            )
        return ResetProgress(
            step=self._step,
            code_delivery=code.delivery,
            code_expires_at=code.expires_at,
            code_attempts_left=code.attempts_left,
            resends_left=code.resends_left,
            next_resend_at=code.next_request_at,
        )

    def _refuse_if_done(self) -> None:
        if self._done:
            raise ApplicationError(
                "This reset is finished. Sign in with your new password.",
                type=flow_errors.RESET_DONE,
                non_retryable=True,
            )
        if self._ended:
            raise ApplicationError(
                "This reset has ended. Start again with Forgot your password?",
                type=flow_errors.RESET_ENDED,
                non_retryable=True,
            )

    async def _deliver(self, number: int, code: EmailedCode | None = None) -> None:
        code = code or self._code
        try:
            result = await email_code(
                self._input,
                self._input.staff_id,
                RESET_PURPOSE,
                self._input.email_retry,
                "Email the password reset code",
            )
        except ActivityError:
            code.failed(number)
            return
        if code.delivered(number, result.code_digest, result.sent_at, workflow.now()):
            assert code.expires_at is not None
            self._move_to(
                "code_sent", f"Reset code sent; valid until {code.expires_at.strftime('%H:%M UTC')}"
            )

    async def _deliver_link(self, code: EmailedCode | None, number: int) -> None:
        """A link in place of a code. The browser's code slot only keeps the throttle: no
        digest, so no code from it ever matches."""
        try:
            result = await start_email(
                ResetActivities.send_reset_link,
                SendResetLinkInput(
                    account_id=self._input.account_id,
                    staff_id=self._input.staff_id,
                    workflow_id=workflow.info().workflow_id,
                    link_ttl_seconds=self._input.link_ttl_seconds,
                ),
                self._input.email_retry,
                "Email a password reset link (codes have stopped)",
                attempt_timeout=timedelta(seconds=60),
            )
        except ActivityError:
            if code is not None:
                code.failed(number)
            return
        if code is not None and number == code.sends:
            code.delivery = "sent"
        self._links_until = max(self._links_until or result.expires_at, result.expires_at)
        self._move_to("link_sent", "Reset link sent; codes have stopped for this account")

    async def _audit(self, action: str, ip: str | None, **details: str) -> None:
        await audit_by_staff(self._input.staff_id, action, "failure", ip, details)

    def _move_to(self, step: str, details: str) -> None:
        if step == self._step:
            workflow.set_current_details(details)
            return
        self._step = step
        if step not in FINAL_STEPS:
            self._open_step = step
        metrics.flow_step(metrics.RESET, step, self._input.org)
        workflow.upsert_search_attributes([SSO_STEP.value_set(step)])
        workflow.set_current_details(details)
