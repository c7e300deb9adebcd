"""An organisation's MFA policy changed to `required` (by an operator or its own admin):
its people's obligations start as a deployment change does, through the paced rollout
(workflows/mfa_rollout.py), once. A Temporal that is away now is tried again at the next
worker start (worker.py `apply_policy`)."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from temporalio.service import RPCError

from api.org_schemas import OrgPublic, OrgUpdate
from api.services.mfa_obligation import start_rollout
from api.services.orgs import Orgs
from api.services.temporal import connected
from core.db import UnitOfWork
from core.errors import ServiceUnavailable
from core.mfa_policy import org_policies_to_apply, remember_org_policy
from core.models import Organisation
from core.settings import MfaPolicy, Settings
from core.temporal_client import TemporalGateway

log = logging.getLogger(__name__)


def effective_policy(org: Organisation | OrgPublic, settings: Settings) -> MfaPolicy:
    """The policy of the organisation's people (admins aside)."""
    return MfaPolicy(org.mfa_policy) if org.mfa_policy else settings.mfa_policy


@dataclass
class OrgMfaRollout:
    uow: UnitOfWork
    settings: Settings
    temporal: TemporalGateway

    async def after_change(self, org_id: uuid.UUID, before: MfaPolicy) -> bool:
        """Starts the organisation's rollout when its people's policy became `required`;
        True when one was started."""
        db = self.uow.session
        org = await db.get(Organisation, org_id)
        await org_policies_to_apply(db)  # drops the record of a `required` changed away
        if (
            org is None
            or before is MfaPolicy.required
            or effective_policy(org, self.settings) is not MfaPolicy.required
        ):
            return False
        # The rollout's first batch reads the new policy: it must be committed first.
        await self.uow.commit_now()
        try:
            client = await connected(self.temporal)
            await start_rollout(client, self.settings, org.id)
        except (ServiceUnavailable, RPCError, TimeoutError) as exc:
            log.warning(
                "MFA rollout of organisation %s not started (%s); the next worker start starts it",
                org.id,
                type(exc).__name__,
            )
            return False
        if org.mfa_policy == MfaPolicy.required.value:
            await remember_org_policy(db, org.id)
        return True


async def update_org(orgs: Orgs, rollout: OrgMfaRollout, org_id: uuid.UUID, data: OrgUpdate) -> OrgPublic:
    """A change through the API or the pages: saved, then the MFA rollout if it put the
    organisation's people under `required`."""
    before = effective_policy(await orgs.one(org_id), orgs.settings)
    updated = await orgs.update(org_id, data)
    await rollout.after_change(org_id, before)
    return updated
