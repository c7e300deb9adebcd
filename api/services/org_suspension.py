"""Suspend an organisation and resume it (operators only).

Suspending ends every session of the organisation's people as a disable does (the apps are
told by back-channel logout), revokes every token apps hold for them, and from then on refuses
their sign-in of every kind (core/org_suspension.py) and the organisation's admin keys.
Nothing is deleted; resuming gives back sign-in, never the sessions.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select

from api.org_schemas import OrgPublic
from api.services.backchannel import end_sessions
from api.services.orgs import Orgs
from api.services.staff_status import ALL_PURPOSES
from core import audit
from core.accounts import SIGNED_IN_PURPOSES, revoke_grants
from core.db import UnitOfWork
from core.models import OidcGrant, Organisation, OrgStatus, Staff, utcnow
from core.orgs import AdminScope, get_org
from core.settings import Settings
from core.temporal_client import TemporalGateway


@dataclass
class OrgSuspension:
    uow: UnitOfWork
    settings: Settings
    temporal: TemporalGateway
    scope: AdminScope
    ip: str | None

    async def suspend(self, org_id: uuid.UUID) -> OrgPublic:
        """Idempotent: a suspended organisation's sessions are ended once more (one started
        in the instant of the first suspension ends too), and it is audited once."""
        org = await self._org(org_id)
        now = utcnow()
        first = org.status != OrgStatus.suspended.value
        if first:
            org.status = OrgStatus.suspended.value
            org.suspended_at = now
            # Refused from here on, before the sessions are ended one person at a time.
            await self.uow.commit_now()
        db = self.uow.session
        people = list(await db.scalars(select(Staff.id).where(Staff.org_id == org.id)))
        signed_in = 0
        for staff_id in people:
            ended = await end_sessions(self.temporal, self.settings, db, staff_id, purposes=ALL_PURPOSES)
            signed_in += sum(1 for s in ended if s.purpose in SIGNED_IN_PURPOSES)
        # Every app's tokens, not only those bound to a session (end_sessions ends those).
        tokens = await revoke_grants(db, now, OidcGrant.staff_id.in_(people)) if people else 0
        if first:
            self._audit(
                "org.suspended", org, people=len(people), sessions_revoked=signed_in, grants_revoked=tokens
            )
        await self.uow.commit_now()  # the apps' logouts start once this commits
        return await self._view(org)

    async def resume(self, org_id: uuid.UUID) -> OrgPublic:
        """Idempotent: sign-in as before the suspension; the sessions stay ended."""
        org = await self._org(org_id)
        if org.status == OrgStatus.suspended.value:
            was = org.suspended_at
            org.status = OrgStatus.active.value
            org.suspended_at = None
            self._audit("org.resumed", org, suspended_at=was.isoformat() if was else None)
            await self.uow.session.flush()
        return await self._view(org)

    async def _org(self, org_id: uuid.UUID) -> Organisation:
        self.scope.require_operator()
        return await get_org(self.uow.session, org_id, self.scope)

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
