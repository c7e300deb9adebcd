"""A change of a person's External Email 1: asked for by an admin, confirmed by the code the
flow emails to the new address (workflows/email_change.py), entered by the person on their
account page or by an admin they read it to."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.common import SearchAttributePair, WorkflowIDConflictPolicy

from api.services.flows import FlowClient, FlowEnded, StepRefused
from api.services.staff import get_staff
from api.services.temporal import email_retry
from core import audit
from core.crypto import code_digest
from core.db import UnitOfWork
from core.errors import Conflict, InvalidInput
from core.models import Staff
from core.org_suspension import suspended_org_name
from core.orgs import AdminScope
from core.search_attributes import SSO_STEP, flow_attributes
from core.settings import Settings
from core.temporal_client import TemporalGateway
from workflows.common import StepResult
from workflows.email_change import (
    CHANGE_ENDED,
    ConfirmEmailChange,
    EmailChangeInput,
    StaffEmailChangeWorkflow,
    email_change_workflow_id,
)

# How long a new address waits for its code: the person may read it only the next day.
EMAIL_CHANGE_TTL = timedelta(days=1)
PURPOSE = "email_change"
NOTHING_PENDING = "No change of External Email 1 is waiting for a code"
FLOW_TIMEOUT = 10.0


async def refuse_if_suspended(session: AsyncSession, staff: Staff) -> None:
    """A suspended organisation's people change no address (asked or confirmed) until it is
    resumed: its admins can't act for it, and nobody of it can sign in to read the code."""
    if (org_name := await suspended_org_name(session, staff.id)) is not None:
        raise Conflict(f"{org_name} is suspended; resume it before changing an email address")


@dataclass
class EmailChanges:
    uow: UnitOfWork
    settings: Settings
    temporal: TemporalGateway

    def _flows(self) -> FlowClient:
        return FlowClient(self.temporal, FLOW_TIMEOUT, self.settings.task_queue, connect_timeout=5.0)

    async def start(self, staff: Staff) -> None:
        """Starts the flow that emails a code to the new address, before the caller records
        that address (record_request): ServiceUnavailable while Temporal is away, with nothing
        changed. The caller holds the person's row until its commit, and the flow's first
        activity reads the address under that lock: it sees the new one once it is committed,
        or (the commit failed) no change or the one already waiting, which it then carries on."""
        await self._start(staff, email_change_workflow_id(str(staff.id)))

    def record_request(self, staff: Staff, new_email: str, actor: str, ip: str | None) -> None:
        """The new address waits for its code (checked free by the caller); a change already
        waiting is replaced, its code dead with its flow."""
        staff.pending_external_email_1 = new_email
        audit.record(
            self.uow.session,
            actor=actor,
            action="staff.email_change_requested",
            outcome="success",
            target=str(staff.id),
            ip=ip,
        )

    async def _start(self, staff: Staff, workflow_id: str) -> None:
        await self._flows().start(
            StaffEmailChangeWorkflow.run,
            EmailChangeInput(
                staff_id=str(staff.id),
                email_retry=email_retry(self.settings),
                code_ttl_seconds=int(EMAIL_CHANGE_TTL.total_seconds()),
            ),
            id=workflow_id,
            search_attributes=flow_attributes(
                SearchAttributePair(SSO_STEP, "sending_code"), org_id=staff.org_id, staff_id=staff.id
            ),
            static_summary="Change of External Email 1: waiting for the code sent to the new address",
            conflict=WorkflowIDConflictPolicy.TERMINATE_EXISTING,
        )

    async def confirm(self, staff_id: uuid.UUID, code: str, scope: AdminScope, ip: str | None) -> Staff:
        """The code from the new address's email: the change made, or a clear refusal."""
        staff = await get_staff(self.uow.session, staff_id, scope)
        actor = scope.actor
        if staff.pending_external_email_1 is None:
            raise Conflict(NOTHING_PENDING)
        await refuse_if_suspended(self.uow.session, staff)
        workflow_id = email_change_workflow_id(str(staff.id))
        digest = code_digest(self.settings.secret_key.get_secret_value(), PURPOSE, workflow_id, code)
        # No write stays open while the flow's activity writes the same row.
        await self.uow.commit_now()
        flow = await self._flows().flow(StaffEmailChangeWorkflow.run, workflow_id)
        try:
            result: StepResult = await flow.update(
                StaffEmailChangeWorkflow.confirm, ConfirmEmailChange(code_digest=digest, actor=actor, ip=ip)
            )
        except StepRefused as exc:
            raise Conflict(exc.message) from exc
        except FlowEnded as exc:
            raise Conflict(CHANGE_ENDED) from exc
        if not result.ok:
            if result.step in ("taken", "ended", "too_many_codes"):
                raise Conflict(result.message or CHANGE_ENDED)
            raise InvalidInput(result.message or "Incorrect code")
        await self.uow.session.refresh(staff)
        return staff
