"""Suspend an organisation and resume it (operators only).

Suspending commits the status first, so that from then on every sign-in of its people of
every kind (core/org_suspension.py) and its admin keys are refused; then a durable flow
(`org-suspend-<org id>`, workflows/org_suspension.py) ends every person's sessions as a
disable does (the apps are told by back-channel logout), revokes every token apps hold for
them and ends their open setup, reset and Microsoft-link flows, a chunk of people at a time.
Nothing is deleted; resuming gives back sign-in, never the sessions.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import func, select

from api.org_schemas import OrgPublic
from api.services.org_flows import start_org_flow
from api.services.orgs import Orgs
from core import audit
from core.db import UnitOfWork
from core.errors import Conflict
from core.models import Organisation, OrgStatus, Staff, utcnow
from core.orgs import AdminScope, get_org
from core.settings import Settings
from core.temporal_client import TemporalGateway
from workflows.org_suspension import OrgSuspendInput, OrgSuspensionWorkflow, org_suspend_workflow_id

BEING_ERASED = "This organisation is being erased: it can't be suspended or resumed any more"
NOT_STARTED = (
    "The organisation is suspended (its people can't sign in), but ending their sessions could "
    "not start: Temporal did not answer. Suspend it again in a minute"
)


@dataclass
class OrgSuspension:
    uow: UnitOfWork
    settings: Settings
    temporal: TemporalGateway
    scope: AdminScope
    ip: str | None

    async def suspend(self, org_id: uuid.UUID) -> OrgPublic:
        """Idempotent: suspending a suspended organisation starts its flow once more (a
        session begun in the instant of the first suspension ends too; a flow still running
        goes on), and it is audited once."""
        org = await self._org(org_id)
        first = org.status == OrgStatus.active.value
        if first:
            org.status = OrgStatus.suspended.value
            org.suspended_at = utcnow()
            org.suspension_done_at = None
            people = await self.uow.session.scalar(
                select(func.count()).select_from(Staff).where(Staff.org_id == org.id)
            )
            # The moment sign-in stopped, by whom; the flow audits what it ended when done.
            self._audit("org.suspended", org, people=people or 0)
            # Refused from here on, before the flow ends anyone's sessions.
            await self.uow.commit_now()
        await start_org_flow(
            self.temporal,
            self.settings,
            run=OrgSuspensionWorkflow.run,
            arg=OrgSuspendInput(
                org_id=str(org.id), actor=self.scope.actor, chunk_size=self.settings.org_flow_chunk_size
            ),
            workflow_id=org_suspend_workflow_id(org.id),
            org_id=org.id,
            summary=f"Suspend organisation {org.id}: end its people's sessions, tokens and open flows",
            # A run left from before a resume ends no one signed in since: this one does.
            replace_running=first,
            unavailable=NOT_STARTED,
        )
        return await self._view(org)

    async def resume(self, org_id: uuid.UUID) -> OrgPublic:
        """Idempotent: sign-in as before the suspension; the sessions stay ended (a
        suspension's flow still running stops at its next chunk)."""
        org = await self._org(org_id)
        if org.status == OrgStatus.suspended.value:
            was = org.suspended_at
            org.status = OrgStatus.active.value
            org.suspended_at = None
            org.suspension_done_at = None
            self._audit("org.resumed", org, suspended_at=was.isoformat() if was else None)
            await self.uow.session.flush()
        return await self._view(org)

    async def _org(self, org_id: uuid.UUID) -> Organisation:
        self.scope.require_operator()
        org = await get_org(self.uow.session, org_id, self.scope)
        if org.status == OrgStatus.erasing.value:
            raise Conflict(BEING_ERASED)
        return org

    async def _view(self, org: Organisation) -> OrgPublic:
        await self.uow.session.refresh(org)
        return await Orgs(self.uow.session, self.settings, self.scope, self.ip).view(org)

    def _audit(self, action: str, org: Organisation, **details: object) -> None:
        audit.record(
            self.uow.session,
            actor=self.scope.actor,
            action=action,
            outcome="success",
            target=str(org.id),
            ip=self.ip,
            **details,
        )
