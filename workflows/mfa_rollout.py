"""`SSO_MFA_POLICY` (or one organisation's MFA policy) changed to `required`: start the MFA
obligation of every active person under it without a second factor, a batch at a time, paced
so the mail server and the database are not flooded. Visible in the Temporal UI (its current
details and the `progress` query); continues as new every few batches so its history stays
small. Idempotent per person: a person whose obligation already runs is skipped."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import workflow
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from activities.inputs import RolloutBatchInput, RolloutPerson
    from activities.mfa import MfaActivities
    from core.search_attributes import SSO_MFA_DUE, SSO_MFA_REMINDERS, SSO_MFA_STEP, SSO_STEP, flow_attributes
    from workflows.common import WORKFLOW_TASK_TIMEOUT, EmailRetry, required, run_step
    from workflows.mfa_enrollment import REQUIRED, MfaEnrollmentWorkflow, enrollment_workflow_id
    from workflows.mfa_types import MfaEnrollmentInput, RequirePolicy

ROLLOUT_WORKFLOW_ID = "mfa-policy-rollout"


def rollout_workflow_id(org_id: str | None = None) -> str:
    """The deployment's rollout, or one organisation's (its id names no person)."""
    return ROLLOUT_WORKFLOW_ID if org_id is None else f"{ROLLOUT_WORKFLOW_ID}-{org_id}"


@dataclass
class MfaRolloutInput:
    reminder_offsets_seconds: list[float]
    grace_seconds: float
    email_retry: EmailRetry = field(default_factory=EmailRetry)
    batch_size: int = 50
    pause_seconds: float = 2.0
    batches_per_run: int = 20
    # Carried over continue-as-new.
    after: str | None = None
    started: int = 0
    skipped: int = 0
    # An organisation's change to `required` obliges only its people; None: the deployment's.
    org_id: str | None = None
    # People come with their organisation, so every obligation carries SsoOrgId, whichever
    # rollout started it. Versioned by the input, as the setup flow's `quiet_delivery` is
    # (no patch marker): rollouts started without it replay as they ran, the deployment's
    # then starting obligations without SsoOrgId.
    with_org_ids: bool = False


@dataclass
class RolloutProgress:
    started: int
    skipped: int
    done: bool


@workflow.defn(name="MfaPolicyRollout")
class MfaPolicyRolloutWorkflow:
    @workflow.init
    def __init__(self, start: MfaRolloutInput | None = None) -> None:
        self._start = required(start, "This start")
        self._after = self._start.after
        self._started = self._start.started
        self._skipped = self._start.skipped
        self._done = False

    @workflow.run
    async def run(self, start: MfaRolloutInput | None = None) -> RolloutProgress:
        for batch_number in range(self._start.batches_per_run):
            people = await self._next_people()
            if not people:
                self._done = True
                self._show()
                return self.progress()
            for person in people:
                await self._oblige(person)
                self._after = person.staff_id
            self._show()
            if batch_number + 1 < self._start.batches_per_run:
                await workflow.sleep(timedelta(seconds=self._start.pause_seconds), summary="Pace the rollout")
        workflow.continue_as_new(
            MfaRolloutInput(
                reminder_offsets_seconds=self._start.reminder_offsets_seconds,
                grace_seconds=self._start.grace_seconds,
                email_retry=self._start.email_retry,
                batch_size=self._start.batch_size,
                pause_seconds=self._start.pause_seconds,
                batches_per_run=self._start.batches_per_run,
                after=self._after,
                started=self._started,
                skipped=self._skipped,
                org_id=self._start.org_id,
                with_org_ids=self._start.with_org_ids,
            )
        )

    async def _next_people(self) -> list[RolloutPerson]:
        batch = RolloutBatchInput(after=self._after, limit=self._start.batch_size, org_id=self._start.org_id)
        summary = "Find the next people without a second factor"
        if self._start.with_org_ids:
            return await run_step(MfaActivities.next_mfa_rollout_people, batch, summary)
        staff_ids = await run_step(MfaActivities.next_mfa_rollout_batch, batch, summary)
        return [RolloutPerson(staff_id, self._start.org_id) for staff_id in staff_ids]

    async def _oblige(self, person: RolloutPerson) -> None:
        staff_id = person.staff_id
        due = workflow.now() + timedelta(seconds=self._start.grace_seconds)
        try:
            await workflow.start_child_workflow(
                MfaEnrollmentWorkflow.run,
                MfaEnrollmentInput(
                    staff_id=staff_id,
                    policy=REQUIRED,
                    reminder_offsets_seconds=self._start.reminder_offsets_seconds,
                    grace_seconds=self._start.grace_seconds,
                    email_retry=self._start.email_retry,
                    reason="policy",
                ),
                id=enrollment_workflow_id(staff_id),
                # The obligation outlives the rollout (and its continue-as-new).
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                task_timeout=WORKFLOW_TASK_TIMEOUT,
                search_attributes=TypedSearchAttributes(
                    flow_attributes(
                        SearchAttributePair(SSO_MFA_STEP, "waiting"),
                        SearchAttributePair(SSO_MFA_DUE, due),
                        SearchAttributePair(SSO_MFA_REMINDERS, 0),
                        org_id=person.org_id,
                        staff_id=staff_id,
                    )
                ),
                static_summary="MFA obligation (policy changed to required)",
            )
            self._started += 1
        except WorkflowAlreadyStartedError:
            # Already obliged; one still under `optional` starts again under `required`.
            self._skipped += 1
            try:
                await workflow.get_external_workflow_handle(enrollment_workflow_id(staff_id)).signal(
                    MfaEnrollmentWorkflow.require,
                    RequirePolicy(self._start.reminder_offsets_seconds, self._start.grace_seconds),
                )
            except ApplicationError:
                pass  # it ended meanwhile: a second factor was set up, or its reminder went out

    def _show(self) -> None:
        if self._done:  # started as "running": one upsert, at the end
            workflow.upsert_search_attributes([SSO_STEP.value_set("done")])
        workflow.set_current_details(
            f"{self._started} obligation(s) started, {self._skipped} already running"
            + ("; finished" if self._done else "")
        )

    @workflow.query(name="progress")
    def progress(self) -> RolloutProgress:
        return RolloutProgress(started=self._started, skipped=self._skipped, done=self._done)
