"""The steps of an organisation's suspension and erasure (workflows/org_suspension.py,
workflows/org_erasure.py). Each works on a chunk of the organisation's people and is
idempotent: what an earlier attempt finished is found finished (sessions already ended,
people already erased), so a retried chunk does nothing twice."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass

from sqlalchemy import func, select
from temporalio import activity

from activities.inputs import (
    OrgChunkInput,
    OrgEraseChunk,
    OrgErasedInput,
    OrgErasedResult,
    OrgSuspendChunk,
    OrgSuspensionDoneInput,
)
from api.services.backchannel import end_sessions
from api.services.staff_lifecycle import StaffLifecycle
from api.services.staff_status import ALL_PURPOSES, end_open_flows
from core import audit
from core.accounts import SIGNED_IN_PURPOSES, revoke_grants
from core.db import SessionFactory, UnitOfWork
from core.errors import NotFound, ServiceUnavailable
from core.models import BrowserSession, OidcGrant, Organisation, OrgStatus, SsoAccount, Staff, utcnow
from core.org_erasure import delete_org_rows
from core.orgs import operator
from core.settings import Settings
from core.temporal_client import TemporalGateway
from workflows.setup import EndRequest

logger = logging.getLogger(__name__)

SUSPENDED = "the organisation was suspended"
# People of a chunk whose flows are asked to end at once: a few Temporal calls each.
CONCURRENT_PEOPLE = 8
# Tries of one person's flows within an attempt before the chunk fails (and is retried).
PERSON_TRIES = 3
PERSON_RETRY_SECONDS = 0.5


@dataclass
class OrgActivities:
    settings: Settings
    sessions: SessionFactory

    def _temporal(self) -> TemporalGateway:
        return TemporalGateway(self.settings, activity.client(), role="worker")

    @activity.defn(name="suspend_org_chunk")
    async def suspend_org_chunk(self, data: OrgChunkInput) -> OrgSuspendChunk:
        """Ends the sessions (apps told) and app grants of the chunk's people in one
        transaction, then their open flows."""
        org_id = uuid.UUID(data.org_id)
        temporal = self._temporal()
        async with self.sessions() as session:
            org = await session.get(Organisation, org_id)
            if org is None or org.status != OrgStatus.suspended.value:
                # Resumed: its people may sign in again. Being erased: the erasure ends all.
                return OrgSuspendChunk(stopped=True)
            chosen = select(Staff.id).where(Staff.org_id == org_id).order_by(Staff.id).limit(data.limit)
            if data.after is not None:
                chosen = chosen.where(Staff.id > uuid.UUID(data.after))
            people = list((await session.scalars(chosen)).all())
            if not people:
                return OrgSuspendChunk()
            uow = UnitOfWork(session)
            for staff_id in people:
                await end_sessions(temporal, self.settings, session, staff_id, purposes=ALL_PURPOSES)
            # Every app's tokens, not only those bound to a session (end_sessions ends those).
            await revoke_grants(session, utcnow(), OidcGrant.staff_id.in_(people))
            # Counted as ended since the suspension, not by this attempt: a retried chunk
            # (its sessions ended by the attempt that failed) counts them all the same.
            since = org.suspended_at or utcnow()
            signed_in = await session.scalar(
                select(func.count())
                .select_from(BrowserSession)
                .where(
                    BrowserSession.staff_id.in_(people),
                    BrowserSession.purpose.in_(SIGNED_IN_PURPOSES),
                    BrowserSession.revoked_at >= since,
                )
            )
            grants = await session.scalar(
                select(func.count())
                .select_from(OidcGrant)
                .where(OidcGrant.staff_id.in_(people), OidcGrant.revoked_at >= since)
            )
            rows = await session.execute(
                select(SsoAccount.staff_id, SsoAccount.id).where(SsoAccount.staff_id.in_(people))
            )
            accounts: dict[uuid.UUID, uuid.UUID] = {
                staff_id: account_id for staff_id, account_id in rows.all()
            }
            await uow.commit_now()  # the apps' logouts start once this commits
        # Whose flows an earlier attempt of this chunk ended, and how many: a flow ended then
        # is not running now, so without this a retried chunk would count it as nothing.
        carried = activity.info().heartbeat_details
        done: dict[str, int] = {str(k): int(v) for k, v in dict(carried[0]).items()} if carried else {}
        activity.heartbeat(done)
        gate = asyncio.Semaphore(CONCURRENT_PEOPLE)
        why = EndRequest(data.actor, SUSPENDED)

        async def end_flows(staff_id: uuid.UUID) -> int:
            key = str(staff_id)
            if key in done:
                return done[key]
            async with gate:
                for attempt in range(PERSON_TRIES):
                    try:
                        ended = await end_open_flows(
                            temporal, self.settings, staff_id, accounts.get(staff_id), why
                        )
                        break
                    except ServiceUnavailable:
                        # A blip: asked again here, so the chunk's other people keep their counts.
                        if attempt == PERSON_TRIES - 1:
                            raise
                        await asyncio.sleep(PERSON_RETRY_SECONDS * (attempt + 1))
                done[key] = ended
                activity.heartbeat(done)
                return ended

        # Temporal away: the chunk fails and is retried (its sessions are found ended already).
        flows = await asyncio.gather(*(end_flows(staff_id) for staff_id in people))
        return OrgSuspendChunk(
            people=len(people),
            sessions_revoked=int(signed_in or 0),
            grants_revoked=int(grants or 0),
            flows_ended=sum(flows),
            last=str(people[-1]),
        )

    @activity.defn(name="record_org_suspension")
    async def record_org_suspension(self, data: OrgSuspensionDoneInput) -> None:
        """Marks the suspension done (unless it was resumed, or suspended anew, meanwhile)
        and audits what it ended; once, however often it is retried."""
        async with self.sessions() as session:
            org = await session.get(Organisation, uuid.UUID(data.org_id))
            # Resumed meanwhile, or done already (a suspension suspended again runs once more;
            # a new suspension after a resume replaced this flow's run when it started).
            if org is None or org.status != OrgStatus.suspended.value or org.suspension_done_at is not None:
                return
            org.suspension_done_at = utcnow()
            c = data.counts
            audit.record(
                session,
                actor=data.actor,
                action="org.suspension_completed",
                outcome="success",
                target=data.org_id,
                ip=None,
                people=c.people,
                sessions_revoked=c.sessions_revoked,
                grants_revoked=c.grants_revoked,
                flows_ended=c.flows_ended,
            )
            await session.commit()

    @activity.defn(name="erase_org_chunk")
    async def erase_org_chunk(self, data: OrgChunkInput) -> OrgEraseChunk:
        """Erases up to `limit` of the organisation's people, each in their own transaction;
        how many it erased and how many are left."""
        org_id = uuid.UUID(data.org_id)
        temporal = self._temporal()
        scope = operator(data.actor)
        async with self.sessions() as session:
            org = await session.get(Organisation, org_id)
            if org is None:
                return OrgEraseChunk(erased=0, left=0)
            people = (
                await session.scalars(
                    select(Staff.id).where(Staff.org_id == org_id).order_by(Staff.id).limit(data.limit)
                )
            ).all()
        erased = 0
        for staff_id in people:
            async with self.sessions() as session:
                uow = UnitOfWork(session)
                try:
                    await StaffLifecycle(uow, self.settings, temporal).erase(staff_id, scope, None)
                except NotFound:
                    continue  # erased meanwhile (by hand)
                await uow.commit_now()
            erased += 1
            activity.heartbeat()
        async with self.sessions() as session:
            left = await session.scalar(select(func.count()).select_from(Staff).where(Staff.org_id == org_id))
        logger.info("organisation erasure: %d people erased, %d left", erased, left or 0)
        return OrgEraseChunk(erased=erased, left=int(left or 0))

    @activity.defn(name="finish_org_erasure")
    async def finish_org_erasure(self, data: OrgErasedInput) -> OrgErasedResult:
        """Deletes what is left of the organisation once its people are gone."""
        org_id = uuid.UUID(data.org_id)
        async with self.sessions() as session:
            org = await session.get(Organisation, org_id)
            if org is None:  # an earlier attempt committed
                return OrgErasedResult(done=True)
            if await session.scalar(select(Staff.id).where(Staff.org_id == org_id).limit(1)) is not None:
                return OrgErasedResult(done=False)
            keys, tenants = await delete_org_rows(session, org)
            audit.record(
                session,
                actor=data.actor,
                action="org.erased",
                outcome="success",
                target=data.org_id,
                ip=None,
                people_erased=data.people_erased,
                keys_deleted=keys,
                tenants_released=tenants,
            )
            await session.commit()
        return OrgErasedResult(done=True, keys_deleted=keys, tenants_released=tenants)
