"""Erase a suspended organisation (operators). The request marks it `erasing` (its people
still can't sign in) and starts a durable flow (`org-erase-<org id>`,
workflows/org_erasure.py) that erases each of its people as one person is erased
(api/services/staff_lifecycle.py: flows deleted, rows deleted, audit kept under a
pseudonym), a chunk at a time, then deletes its admin keys, releases its Microsoft tenants,
removes its batches and email budget and the organisation itself (core/org_erasure.py), audited
as `org.erased`. The caller polls `GET /api/v1/orgs/{id}` until it answers 404."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from api.org_schemas import OrgErasing
from api.services.org_flows import start_org_flow
from api.services.orgs import people_left
from core import audit
from core.db import UnitOfWork
from core.errors import Conflict
from core.models import SIGN_IN_PAUSED, OrgStatus
from core.orgs import AdminScope, get_org
from core.settings import Settings
from core.temporal_client import TemporalGateway
from workflows.org_erasure import OrgEraseInput, OrgErasureWorkflow, org_erase_workflow_id

NOT_SUSPENDED = (
    "Only a suspended organisation can be erased: suspend it first (its people can't sign in "
    "then), and erase it once you are sure"
)
NOT_STARTED = (
    "The organisation is marked for erasure (its people can't sign in), but the erasure could "
    "not start: Temporal did not answer. Erase it again in a minute"
)


@dataclass
class OrgErasure:
    uow: UnitOfWork
    settings: Settings
    temporal: TemporalGateway

    async def erase(self, org_id: uuid.UUID, scope: AdminScope, ip: str | None) -> OrgErasing:
        """Starts the erasure; idempotent (erasing an organisation being erased answers the
        same, and starts its flow again if it was lost)."""
        scope.require_operator()
        db = self.uow.session
        org = await get_org(db, org_id, scope)
        if org.status not in SIGN_IN_PAUSED:
            raise Conflict(NOT_SUSPENDED)
        if org.status != OrgStatus.erasing.value:
            org.status = OrgStatus.erasing.value
            audit.record(
                db,
                actor=scope.actor,
                action="org.erasure_started",
                outcome="success",
                target=str(org.id),
                ip=ip,
                people=await people_left(db, org.id),
            )
            await self.uow.commit_now()
        workflow_id = org_erase_workflow_id(org.id)
        await start_org_flow(
            self.temporal,
            self.settings,
            run=OrgErasureWorkflow.run,
            arg=OrgEraseInput(
                org_id=str(org.id), actor=scope.actor, chunk_size=self.settings.org_flow_chunk_size
            ),
            workflow_id=workflow_id,
            org_id=org.id,
            summary=f"Erase organisation {org.id}: its people, keys, tenants and the organisation",
            replace_running=False,
            unavailable=NOT_STARTED,
        )
        return OrgErasing(id=org.id, workflow_id=workflow_id, people_left=await people_left(db, org.id))
