"""A new External Email 1, confirmed by a code emailed to it before it is used.

Its id is `staff-email-change-<staff uuid>`; a newer change replaces the running one (its
code dies with it). The flow emails a six-digit code to the new address (the activity reads
the address from the database: only ids and the code's keyed digest pass through here),
then waits for the code (an Update, from the person's account page or an admin) until
EMAIL_CHANGE_TTL. A right code makes the new address the External Email 1 and the sign-in
email, and the old address is told; five wrong codes, or the wait running out, drop the
change and leave the old address in force.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.email_change import EmailChangeActivities
    from activities.inputs import EmailChangeStep
    from core import flow_errors
    from core.search_attributes import SSO_STEP
    from workflows.codes import CodeTerms, EmailedCode, email_code
    from workflows.common import EmailRetry, StepResult, required, run_step, start_email

CHANGE_ENDED = "This change of email address has ended. Ask your administrator to change it again."
TOO_MANY = "Too many incorrect codes: the change was cancelled. Ask your administrator to change it again."
EMAIL_TAKEN = "Another staff member now uses that email address, so it was not changed."


def email_change_workflow_id(staff_id: str) -> str:
    return f"staff-email-change-{staff_id}"


@dataclass
class EmailChangeInput(CodeTerms):
    staff_id: str
    email_retry: EmailRetry


@dataclass
class ConfirmEmailChange:
    code_digest: str
    actor: str
    ip: str | None = None


@workflow.defn(name="StaffEmailChange")
class StaffEmailChangeWorkflow:
    @workflow.init
    def __init__(self, start: EmailChangeInput | None = None) -> None:
        self._input = required(start, "This start")
        self._code = EmailedCode(self._input.code_rules())
        self._outcome: str | None = None

    @workflow.run
    async def run(self, start: EmailChangeInput | None = None) -> str:
        self._step("sending_code", "Emailing a code to the new address")
        number = self._code.replace(workflow.now())
        try:
            sent = await email_code(
                self._input, self._input.staff_id, "email_change", self._input.email_retry, "Email the code"
            )
        except ActivityError:
            self._code.failed(number)
            self._outcome = "failed"
        else:
            self._code.delivered(number, sent.code_digest, sent.sent_at, workflow.now())
            self._step("code_sent", "Waiting for the code from the new address")
            try:
                await workflow.wait_condition(
                    lambda: self._outcome is not None,
                    timeout=timedelta(seconds=self._input.code_ttl_seconds),
                )
            except TimeoutError:
                self._outcome = "expired"
        await workflow.wait_condition(workflow.all_handlers_finished)
        outcome = self._outcome or "expired"
        if outcome == "changed":
            await self._tell_old_address()
        else:
            await run_step(
                EmailChangeActivities.drop_email_change, self._step_input(outcome), "Drop the change"
            )
        self._step(outcome, f"Ended: {outcome}")
        return outcome

    async def _tell_old_address(self) -> None:
        try:
            await start_email(
                EmailChangeActivities.send_email_changed,
                self._step_input("changed"),
                self._input.email_retry,
                "Tell the old address",
            )
        except ActivityError:
            workflow.logger.warning("the old address could not be told of the change")

    def _step_input(self, outcome: str, actor: str = "system", ip: str | None = None) -> EmailChangeStep:
        return EmailChangeStep(
            staff_id=self._input.staff_id,
            workflow_id=workflow.info().workflow_id,
            outcome=outcome,
            actor=actor,
            ip=ip,
        )

    def _step(self, step: str, details: str) -> None:
        workflow.set_current_details(details)
        workflow.upsert_search_attributes([SSO_STEP.value_set(step)])

    @workflow.update(name="confirm")
    async def confirm(self, request: ConfirmEmailChange) -> StepResult:
        check = self._code.check(request.code_digest, workflow.now())
        if not check.ok:
            if check.counted and check.attempts_left == 0:
                self._outcome = "too_many_codes"
                return StepResult(False, "too_many_codes", TOO_MANY)
            return StepResult(False, "code_sent", check.message)
        self._code.use()
        outcome = await run_step(
            EmailChangeActivities.apply_email_change,
            self._step_input("changed", request.actor, request.ip),
            "Make the new address the sign-in email",
        )
        self._outcome = outcome
        if outcome != "changed":
            return StepResult(False, outcome, EMAIL_TAKEN if outcome == "taken" else CHANGE_ENDED)
        return StepResult(True, outcome)

    @confirm.validator
    def _confirm_open(self, request: ConfirmEmailChange) -> None:
        if self._outcome is not None:
            raise ApplicationError(CHANGE_ENDED, type=flow_errors.SETUP_ENDED)
