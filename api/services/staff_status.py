"""Disable a person (a leaver) and enable them again.

Disabling refuses every way in (password, Microsoft-Entra, a setup link, a password reset),
ends every session through the same step as Sign out everywhere (so the apps are told by
back-channel logout), revokes every token apps hold for the person, and ends their open setup,
reset and Microsoft-link flows. Enabling gives back sign-in, never the sessions.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.service import RPCError, RPCStatusCode

from api.services.backchannel import end_sessions
from api.services.flows import FlowClient
from api.services.reset import reset_workflow_id
from api.services.setup_admin import setup_workflow_id
from api.services.staff import get_staff
from api.services.temporal import connected
from core import audit
from core.accounts import SIGNED_IN_PURPOSES, account_for
from core.db import UnitOfWork
from core.errors import Conflict, ServiceUnavailable
from core.models import AccountStatus, OidcGrant, Staff, utcnow
from core.orgs import AdminScope
from core.settings import Settings
from core.temporal_client import TemporalGateway
from workflows.entra import link_workflow_id
from workflows.setup import EndRequest, SsoSetupWorkflow

logger = logging.getLogger(__name__)

SELF_DISABLE = "You can't disable your own staff login. Ask another administrator."
# Setup and reset sessions too: a page half-way through either must not go on.
ALL_PURPOSES = (*SIGNED_IN_PURPOSES, "setup", "reset")
FLOW_TIMEOUT = 10.0


def is_disabled(staff: Staff | None) -> bool:
    return staff is not None and staff.disabled_at is not None


@dataclass
class StaffStatus:
    uow: UnitOfWork
    settings: Settings
    temporal: TemporalGateway

    @property
    def db(self) -> AsyncSession:
        return self.uow.session

    async def disable(
        self, staff_id: uuid.UUID, scope: AdminScope, ip: str | None, by: uuid.UUID | None = None
    ) -> Staff:
        """Idempotent: a disabled person is returned as they are (their flows asked to end
        once more, in case Temporal was away the first time). `by` is the admin acting
        through the admin pages, who may not lock themselves out."""
        staff = await get_staff(self.db, staff_id, scope)
        actor = scope.actor
        if by == staff.id:
            raise Conflict(SELF_DISABLE)
        account = await account_for(self.db, staff.id)
        if staff.disabled_at is not None:
            await self._end_flows(staff, actor, account.id if account else None)
            return staff
        now = utcnow()
        staff.disabled_at = now
        if account is not None and account.status != AccountStatus.disabled.value:
            account.status_before_disable = account.status
            account.status = AccountStatus.disabled.value
        ended = await end_sessions(self.temporal, self.settings, self.db, staff.id, purposes=ALL_PURPOSES)
        await self._revoke_every_grant(staff.id, now)
        signed_in = [s for s in ended if s.purpose in SIGNED_IN_PURPOSES]
        self._audit("staff.disabled", staff, actor, ip, sessions_revoked=len(signed_in))
        # Refused from here on, whatever Temporal does next; and no write stays open while
        # the flows below end (their activities write to the same rows).
        await self.uow.commit_now()
        await self._end_flows(staff, actor, account.id if account else None)
        return staff

    async def enable(self, staff_id: uuid.UUID, scope: AdminScope, ip: str | None) -> Staff:
        """Idempotent: sign-in as it was before the disable (active, or still to be set up);
        the sessions stay ended."""
        staff = await get_staff(self.db, staff_id, scope)
        actor = scope.actor
        if staff.disabled_at is None:
            return staff
        was = staff.disabled_at
        staff.disabled_at = None
        account = await account_for(self.db, staff.id)
        if account is not None and account.status == AccountStatus.disabled.value:
            account.status = account.status_before_disable or AccountStatus.pending.value
            account.status_before_disable = None
        self._audit("staff.enabled", staff, actor, ip, disabled_at=was.isoformat())
        await self.db.flush()
        return staff

    def _audit(self, action: str, staff: Staff, actor: str, ip: str | None, **details: Any) -> None:
        audit.record(
            self.db, actor=actor, action=action, outcome="success", target=str(staff.id), ip=ip, **details
        )

    async def _revoke_every_grant(self, staff_id: uuid.UUID, now: datetime) -> None:
        """Every app's tokens for the person, not only those bound to a session (revoke_sessions
        ends those): refresh tokens and access tokens stop working at once."""
        await self.db.execute(
            update(OidcGrant)
            .where(OidcGrant.staff_id == staff_id, OidcGrant.revoked_at.is_(None))
            .values(revoked_at=now)
        )

    async def _end_flows(self, staff: Staff, actor: str, account_id: uuid.UUID | None) -> None:
        """Each flow is also refused at its last step by the disabled status, so a flow
        Temporal can't reach now still lets no one in."""
        try:
            await end_open_flows(
                self.temporal,
                self.settings,
                staff.id,
                account_id,
                EndRequest(actor, "the person was disabled"),
            )
        except ServiceUnavailable:
            logger.warning("flows of a disabled person not ended, Temporal unavailable: %s", staff.id)


async def end_open_flows(
    temporal: TemporalGateway,
    settings: Settings,
    staff_id: uuid.UUID,
    account_id: uuid.UUID | None,
    why: EndRequest,
) -> int:
    """Ends the person's open setup through its cancel update (it records why it ended), and
    their reset and Microsoft-link flows, which have no cancel step, through a cancellation
    request; how many were running. ServiceUnavailable when Temporal did not answer (asking
    again is harmless)."""
    flows = FlowClient(temporal, FLOW_TIMEOUT, settings.task_queue, connect_timeout=5.0)
    setup = await flows.end(setup_workflow_id(staff_id), SsoSetupWorkflow.run, SsoSetupWorkflow.cancel, why)
    others = [link_workflow_id(str(staff_id))]
    if account_id is not None:
        others.append(reset_workflow_id(account_id))
    cancelled = await asyncio.gather(*(_cancel(temporal, workflow_id) for workflow_id in others))
    return (setup is not None) + sum(cancelled)


async def _cancel(temporal: TemporalGateway, workflow_id: str) -> bool:
    """Asks the flow to cancel; False when none is running."""
    client = await connected(temporal, 5.0)
    try:
        async with asyncio.timeout(FLOW_TIMEOUT):
            await client.get_workflow_handle(workflow_id).cancel()
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:  # none running: nothing to end
            raise ServiceUnavailable(str(exc)) from exc
        return False
    except TimeoutError as exc:
        raise ServiceUnavailable("Temporal did not answer") from exc
    return True
