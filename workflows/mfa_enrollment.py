"""The MFA obligation of a person who chose "No thanks, I'll set it up later": reminders, a
deadline (under `required`), an admin's one extension, and its end once a factor is set up.

Its id is `mfa-enrollment-<staff uuid>`; the web app starts it after the skip (and again
after an admin's MFA reset), and signals it when a second factor is added. The flow records
each change of step in the database (mfa_obligations) for sign-in and the admin pages, and in
search attributes for the Temporal UI. No secret ever passes through it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import NoReturn

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.inputs import (
        MfaReminderInput,
        ObligationCheck,
        ObligationCheckInput,
        ObligationRecord,
    )
    from activities.mfa import MfaActivities
    from core import flow_errors
    from core.mfa_policy import ObligationStep
    from core.search_attributes import SSO_MFA_DUE, SSO_MFA_REMINDERS, SSO_MFA_STEP
    from workflows.common import required, run_step, start_email
    from workflows.mfa_types import (
        ExtendRequest,
        ExtendResult,
        MfaEnrollmentInput,
        MfaProgress,
        RequirePolicy,
        SecondFactorAdded,
    )

REQUIRED = "required"
OPTIONAL = "optional"
ALREADY_EXTENDED = "This person's MFA deadline was already extended once; it can't be extended again."
NOTHING_DUE = "This person has no MFA deadline to extend."
NUDGE_SETTLE = timedelta(seconds=2)


def enrollment_workflow_id(staff_id: str) -> str:
    return f"mfa-enrollment-{staff_id}"


@workflow.defn(name="MfaEnrollment")
class MfaEnrollmentWorkflow:
    @workflow.init
    def __init__(self, start: MfaEnrollmentInput | None = None) -> None:
        self._start = required(start, "This start")
        # The skip (or reset, or policy change) the offsets count from: the flow's own start,
        # on the clock of its timers.
        self._started_at = workflow.info().start_time
        self._due = self._started_at + timedelta(seconds=self._start.grace_seconds)
        self._step = ObligationStep.waiting
        self._reminders = 0
        self._enrolled = False
        self._nudged = False
        self._upgrade: RequirePolicy | None = None
        self._extended_by: str | None = None

    @workflow.run
    async def run(self, start: MfaEnrollmentInput | None = None) -> str:
        await self._record()
        if self._start.policy == REQUIRED:
            step = await self._required()
        else:
            optional = await self._optional()
            if optional is None:
                await workflow.wait_condition(workflow.all_handlers_finished)
                self._continue_as_required()
            step = optional
        await self._move_to(step)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return step.value

    async def _required(self) -> ObligationStep:
        """A reminder at each offset, then the deadline; past it the flow waits for the factor
        (or an extension), while sign-in makes the person set it up."""
        for offset in self._start.reminder_offsets_seconds:
            if not await self._remind_at(self._started_at + timedelta(seconds=offset)):
                return ObligationStep.done
        while True:
            if await self._enrolled_by(self._due):
                return ObligationStep.done
            if not (await self._check()).owed:
                return ObligationStep.done
            if self._due > workflow.now():
                continue  # extended just now
            await self._move_to(ObligationStep.overdue)
            if await self._enrolled_or_extended():
                return ObligationStep.done

    async def _enrolled_or_extended(self) -> bool:
        """Past the deadline: waits for a second factor (True) or an admin's extension."""
        due = self._due
        while not self._enrolled and self._due == due:
            await workflow.wait_condition(lambda: self._nudged or self._due != due)
            if self._nudged:
                await self._confirm_nudge()
        return self._enrolled

    async def _optional(self) -> ObligationStep | None:
        """One reminder at the grace, then the flow ends: nothing is enforced. None when the
        policy changed to `required` first."""
        reminded = await self._remind_at(self._due)
        if self._upgrade is not None:
            return None
        return ObligationStep.ended if reminded else ObligationStep.done

    def _continue_as_required(self) -> NoReturn:
        assert self._upgrade is not None
        workflow.continue_as_new(
            MfaEnrollmentInput(
                staff_id=self._start.staff_id,
                policy=REQUIRED,
                reminder_offsets_seconds=self._upgrade.reminder_offsets_seconds,
                grace_seconds=self._upgrade.grace_seconds,
                email_retry=self._start.email_retry,
                reason="policy",
            )
        )

    async def _remind_at(self, at: datetime) -> bool:
        """Sends the reminder due at `at`, unless the person set up a factor first (signalled,
        or found when checking just before): False then, and the flow is done."""
        if await self._enrolled_by(at) or self._upgrade is not None or not (await self._check()).owed:
            return False
        try:
            await start_email(
                MfaActivities.send_mfa_reminder,
                MfaReminderInput(
                    staff_id=self._start.staff_id, due_at=self._due, required=self._start.policy == REQUIRED
                ),
                self._start.email_retry,
                "Remind the person to set up MFA",
            )
        except ActivityError:
            # Refused for good, or still failing after the email window: the obligation and
            # its deadline stand (sign-in enforces it), only this reminder is lost.
            workflow.logger.warning("an MFA reminder could not be delivered")
            return True
        self._reminders += 1
        await self._move_to(ObligationStep.reminded)
        return True

    async def _enrolled_by(self, at: datetime) -> bool:
        """Waits until `at`; True when a second factor was set up first."""
        while not self._enrolled:
            left = at - workflow.now()
            if left <= timedelta(0):
                return False
            try:
                await workflow.wait_condition(
                    lambda: self._nudged or self._upgrade is not None,
                    timeout=left,
                    timeout_summary="Next reminder or the deadline",
                )
            except TimeoutError:
                return False
            if self._upgrade is not None:
                return False
            await self._confirm_nudge()
        return True

    async def _confirm_nudge(self) -> None:
        """The web app signals before its own transaction commits: the factor is believed once
        the database shows it, a moment later."""
        self._nudged = False
        await workflow.sleep(NUDGE_SETTLE, summary="Let the web app's change commit")
        self._enrolled = not (await self._check()).owed

    async def _check(self) -> ObligationCheck:
        check: ObligationCheck = await run_step(
            MfaActivities.check_mfa_obligation,
            ObligationCheckInput(staff_id=self._start.staff_id),
            "Check whether the person still has to set up MFA",
        )
        return check

    async def _move_to(self, step: ObligationStep) -> None:
        self._step = step
        workflow.upsert_search_attributes(
            [
                SSO_MFA_STEP.value_set(step.value),
                SSO_MFA_DUE.value_set(self._due),
                SSO_MFA_REMINDERS.value_set(self._reminders),
            ]
        )
        workflow.set_current_details(f"MFA {step.value}; {self._reminders} reminder(s) sent")
        await self._record()

    async def _record(self) -> None:
        await run_step(
            MfaActivities.record_mfa_obligation,
            ObligationRecord(
                staff_id=self._start.staff_id,
                run_id=workflow.info().run_id,
                policy=self._start.policy,
                step=self._step.value,
                started_at=self._started_at,
                due_at=self._due,
                reminders_sent=self._reminders,
                extended_by=self._extended_by,
            ),
            f"Record MFA obligation: {self._step.value}",
        )

    @workflow.signal(name="second_factor_added")
    def second_factor_added(self, added: SecondFactorAdded | None = None) -> None:
        if added is None:  # no payload sealed with the key: not from the web app
            workflow.logger.warning("second_factor_added without a payload ignored")
            return
        self._nudged = True

    @workflow.signal(name="require")
    def require(self, policy: RequirePolicy | None = None) -> None:
        if policy is None:  # no payload sealed with the key: not from our rollout
            workflow.logger.warning("require without a payload ignored")
            return
        if self._start.policy != REQUIRED and self._step.is_open:
            self._upgrade = policy

    @workflow.update(name="extend")
    async def extend(self, request: ExtendRequest | None = None) -> ExtendResult:
        request = required(request, "This step")
        self._extended_by = request.actor
        self._due = max(self._due, workflow.now()) + timedelta(seconds=self._start.grace_seconds)
        if self._step == ObligationStep.overdue:
            await self._move_to(ObligationStep.reminded if self._reminders else ObligationStep.waiting)
        else:
            await self._move_to(self._step)
        return ExtendResult(due_at=self._due)

    @extend.validator
    def _validate_extend(self, request: ExtendRequest | None = None) -> None:
        required(request, "This step")
        if self._start.policy != REQUIRED or not self._step.is_open or self._enrolled:
            raise ApplicationError(NOTHING_DUE, type=flow_errors.MFA_NOTHING_DUE, non_retryable=True)
        if self._extended_by is not None:
            raise ApplicationError(
                ALREADY_EXTENDED, type=flow_errors.MFA_ALREADY_EXTENDED, non_retryable=True
            )

    @workflow.query(name="progress")
    def progress(self) -> MfaProgress:
        return MfaProgress(
            step=self._step.value,
            policy=self._start.policy,
            due_at=self._due,
            reminders_sent=self._reminders,
            extended_by=self._extended_by,
        )
