"""Admin actions on a person's account: end their sessions (and tell the apps signed in
through them), lift a sign-in lock (and the caps on wrong reset codes), unlink Microsoft
Entra, reset MFA for a lost phone."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api.services.account import MfaNotices
from api.services.backchannel import end_sessions
from api.services.flows import FlowClient
from api.services.mfa_obligation import MfaObligations
from api.services.staff import get_staff
from core import audit, passkeys
from core.accounts import account_for, remove_second_factors
from core.errors import Conflict, NotFound
from core.models import EntraLink, Staff
from core.orgs import AdminScope
from core.reset_caps import clear as clear_wrong_reset_codes
from core.settings import Settings
from core.temporal_client import TemporalGateway


@dataclass
class AccountAdmin:
    db: AsyncSession
    settings: Settings
    temporal: TemporalGateway

    async def revoke_sessions(self, staff_id: uuid.UUID, scope: AdminScope, ip: str | None) -> int:
        staff = await get_staff(self.db, staff_id, scope)
        actor = scope.actor
        count = await self._end_sessions(staff)
        await self._done("sessions.revoke", staff, actor, ip, sessions_revoked=count)
        return count

    async def unlock(self, staff_id: uuid.UUID, scope: AdminScope, ip: str | None) -> None:
        staff = await get_staff(self.db, staff_id, scope)
        actor = scope.actor
        account = await account_for(self.db, staff.id)
        if account is None:
            raise NotFound("This person has no Single Sign-On account yet")
        was = {
            "failed_sign_ins": account.failed_sign_ins,
            "locked_until": account.locked_until.isoformat() if account.locked_until else None,
        }
        account.failed_sign_ins = 0
        account.locked_until = None
        # The caps on wrong reset codes too: reset emails carry codes again.
        was["wrong_reset_codes"] = await clear_wrong_reset_codes(self.db, str(account.id))
        await self._done("account.unlock", staff, actor, ip, **was)

    async def unlink_entra(self, staff_id: uuid.UUID, scope: AdminScope, ip: str | None) -> EntraLink:
        """Remove the link; the Microsoft account no longer signs this person in. Sessions made
        with it are ended too, so the unlink takes effect at once."""
        staff = await get_staff(self.db, staff_id, scope)
        actor = scope.actor
        link = await self.db.scalar(select(EntraLink).where(EntraLink.staff_id == staff.id))
        if link is None:
            raise NotFound("This person has no linked Microsoft account")
        await self.db.delete(link)
        count = await self._end_sessions(staff)
        await self._done(
            "entra.unlinked",
            staff,
            actor,
            ip,
            tenant_id=link.tenant_id,
            object_id=link.object_id,
            sessions_revoked=count,
        )
        return link

    async def reset_mfa(
        self, staff_id: uuid.UUID, scope: AdminScope, ip: str | None, notices: MfaNotices
    ) -> int:
        """A lost phone: the authenticator, passkeys and recovery codes go, and so does every session,
        since whoever has the phone may be signed in; the person is told. The sessions
        ended."""
        staff = await get_staff(self.db, staff_id, scope)
        actor = scope.actor
        account = await account_for(self.db, staff.id)
        if account is None or not await passkeys.has_second_factor(self.db, account):
            raise Conflict("This person has no Multi-Factor Authentication to reset")
        # The email first: when Temporal can't take it, nothing has been written that the
        # admin page (which answers a refusal with a normal page) would commit.
        await notices.changed(staff.id, "reset")
        await remove_second_factors(self.db, account)
        await self.db.flush()
        # The obligation starts again, from now: under `required` the person has the grace
        # period to set up a new factor (the flow reads the removal once this commits).
        await MfaObligations(self.settings, self.db, self.flows).start(staff, "reset")
        count = await self._end_sessions(staff)
        await self._done("mfa.reset", staff, actor, ip, sessions_revoked=count)
        return count

    @property
    def flows(self) -> FlowClient:
        # Connecting may take the usual 5 s: an admin action, not a page step.
        return FlowClient(self.temporal, 10.0, self.settings.task_queue, connect_timeout=5.0)

    async def _end_sessions(self, staff: Staff) -> int:
        return len(await end_sessions(self.temporal, self.settings, self.db, staff.id))

    async def _done(self, action: str, staff: Staff, actor: str, ip: str | None, **details: Any) -> None:
        """Every action is audited against the person it was taken on, and flushed: the
        request commits it."""
        audit.record(
            self.db, actor=actor, action=action, outcome="success", target=str(staff.id), ip=ip, **details
        )
        await self.db.flush()
