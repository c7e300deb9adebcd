"""Starting, ending and extending a person's MFA obligation (workflows/mfa_enrollment.py),
and starting the rollout when the policy changes to `required`.

`second_factor_added` is the one call the web app makes whenever any second factor is added
(the authenticator app now; passkeys later)."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy

from api.services.flows import FlowClient, FlowEnded, StepRefused
from api.services.temporal import WORKFLOW_TASK_TIMEOUT, email_retry
from core import audit, passkeys
from core.accounts import account_for
from core.errors import Conflict, ServiceUnavailable
from core.mfa_policy import exempt, obligation_for, policy_for
from core.models import MfaObligation, Staff, utcnow
from core.search_attributes import SSO_MFA_DUE, SSO_MFA_REMINDERS, SSO_MFA_STEP, SSO_STEP, flow_attributes
from core.settings import Settings
from core.temporal_client import TemporalGateway
from workflows.mfa_enrollment import MfaEnrollmentWorkflow, enrollment_workflow_id
from workflows.mfa_rollout import MfaPolicyRolloutWorkflow, MfaRolloutInput, rollout_workflow_id
from workflows.mfa_types import ExtendRequest, MfaEnrollmentInput, SecondFactorAdded

log = logging.getLogger(__name__)

REASONS = {
    "skipped": "MFA obligation (skipped at setup)",
    "reset": "MFA obligation (restarted by an admin's MFA reset)",
}


async def enrollment_input(
    db: AsyncSession, settings: Settings, staff: Staff, reason: str
) -> MfaEnrollmentInput:
    return MfaEnrollmentInput(
        staff_id=str(staff.id),
        policy=(await policy_for(db, staff, settings)).value,
        reminder_offsets_seconds=[offset.total_seconds() for offset in settings.mfa_reminders],
        grace_seconds=settings.mfa_grace.total_seconds(),
        email_retry=email_retry(settings),
        reason=reason,
    )


@dataclass
class MfaObligations:
    settings: Settings
    db: AsyncSession
    flows: FlowClient

    async def start(self, staff: Staff, reason: str) -> bool:
        """Starts the person's obligation, unless nothing is owed (a second factor already, or
        Microsoft only). After a skip it is idempotent (a running obligation is kept); after an
        admin's reset the obligation starts again from now. True when one runs now."""
        if await passkeys.has_second_factor(self.db, await account_for(self.db, staff.id)) or await exempt(
            self.db, staff.id
        ):
            return False
        start = await enrollment_input(self.db, self.settings, staff, reason)
        due = utcnow() + self.settings.mfa_grace  # the flow's own start corrects it
        await self.flows.start(
            MfaEnrollmentWorkflow.run,
            start,
            id=enrollment_workflow_id(str(staff.id)),
            search_attributes=flow_attributes(
                SearchAttributePair(SSO_MFA_STEP, "waiting"),
                SearchAttributePair(SSO_MFA_DUE, due),
                SearchAttributePair(SSO_MFA_REMINDERS, 0),
                org_id=staff.org_id,
                staff_id=staff.id,
            ),
            static_summary=REASONS.get(reason, "MFA obligation"),
            # A reset ends the old run: its schedule counted from an older skip.
            conflict=(
                WorkflowIDConflictPolicy.TERMINATE_EXISTING
                if reason == "reset"
                else WorkflowIDConflictPolicy.USE_EXISTING
            ),
        )
        return True

    async def start_after_skip(self, staff: Staff, ip: str | None) -> None:
        """After "No thanks, I'll set it up later" took effect: the skip stands whatever
        happens here, so a Temporal outage is logged and audited, not shown to the person."""
        try:
            await self.start(staff, "skipped")
        except ServiceUnavailable:
            log.warning("the MFA obligation of a person who skipped MFA could not be started")
            audit.by_staff(
                self.db,
                str(staff.id),
                "mfa.obligation_not_started",
                outcome="failure",
                ip=ip,
                reason="temporal",
            )

    async def extend(self, staff: Staff, actor: str, ip: str | None) -> MfaObligation:
        """The admin's one extension, by another SSO_MFA_GRACE; refused with a reason."""
        obligation = await obligation_for(self.db, staff.id)
        if obligation is None:
            raise Conflict("This person has no MFA deadline to extend.")
        flow = await self.flows.flow(MfaEnrollmentWorkflow.run, enrollment_workflow_id(str(staff.id)))
        try:
            result = await flow.update(MfaEnrollmentWorkflow.extend, ExtendRequest(actor=actor))
        except StepRefused as exc:
            raise Conflict(exc.message) from exc
        except FlowEnded as exc:
            raise Conflict("This person has no MFA deadline to extend.") from exc
        audit.record(
            self.db,
            actor=actor,
            action="mfa.deadline_extended",
            outcome="success",
            target=str(staff.id),
            ip=ip,
            due_at=result.due_at.isoformat(),
        )
        await self.db.refresh(obligation)
        return obligation


async def second_factor_added(settings: Settings, temporal: TemporalGateway, staff_id: uuid.UUID) -> None:
    """Ends the person's obligation early. Whatever goes wrong here, the flow checks the
    database before each reminder and at its deadline, so nobody who enrolled is reminded."""
    flows = FlowClient(temporal, settings.step_timeout.total_seconds(), settings.task_queue)
    try:
        flow = await flows.flow(MfaEnrollmentWorkflow.run, enrollment_workflow_id(str(staff_id)))
        await flow.signal(MfaEnrollmentWorkflow.second_factor_added, SecondFactorAdded())
    except FlowEnded:
        return
    except ServiceUnavailable:
        log.warning("could not tell the MFA obligation that a second factor was added; it checks itself")


async def start_rollout(client: Client, settings: Settings, org_id: uuid.UUID | None = None) -> None:
    """The rollout of `required` to everyone without a second factor (or, `org_id`, to one
    organisation's people): one flow, however many workers start at once (its id, and
    USE_EXISTING)."""
    org = str(org_id) if org_id is not None else None
    await client.start_workflow(
        MfaPolicyRolloutWorkflow.run,
        MfaRolloutInput(
            reminder_offsets_seconds=[offset.total_seconds() for offset in settings.mfa_reminders],
            grace_seconds=settings.mfa_grace.total_seconds(),
            email_retry=email_retry(settings),
            org_id=org,
            with_org_ids=True,
        ),
        id=rollout_workflow_id(org),
        task_queue=settings.task_queue,
        task_timeout=WORKFLOW_TASK_TIMEOUT,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        search_attributes=TypedSearchAttributes(
            flow_attributes(SearchAttributePair(SSO_STEP, "running"), org_id=org)
        ),
        static_summary=(
            "SSO_MFA_POLICY changed to required: start everyone's MFA obligation"
            if org is None
            else f"Organisation {org}'s MFA policy changed to required: start its people's MFA obligation"
        ),
    )
