"""The steps of a change of External Email 1 (workflows/email_change.py) that touch the
database and the old address. The code itself is sent by the shared send_code activity."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity

from activities.base import SecretActivities
from activities.inputs import EmailChangeStep
from core import audit
from core.accounts import account_for, email_in_use
from core.crypto import mask_email
from core.models import Staff, utcnow
from core.times import email_at


class EmailChangeActivities(SecretActivities):
    @activity.defn(name="apply_email_change")
    async def apply_email_change(self, data: EmailChangeStep) -> str:
        """The new address becomes the External Email 1 and the sign-in email: "changed"; or
        "taken" (someone else has it now) or "ended" (no change waits). Idempotent: a retry
        after the commit finds the change made."""
        async with self._sessions() as session:
            staff = await session.get(Staff, uuid.UUID(data.staff_id), with_for_update=True)
            if staff is None:
                return "ended"
            new = staff.pending_external_email_1
            if new is None:
                return "changed" if staff.previous_external_email_1 is not None else "ended"
            if await email_in_use(session, new, staff.id, pending=False):
                staff.pending_external_email_1 = None
                self._record(session, data, "staff.email_changed", "refused", reason="taken")
                await session.commit()
                return "taken"
            staff.previous_external_email_1 = staff.external_email_1
            staff.external_email_1 = new
            staff.pending_external_email_1 = None
            account = await account_for(session, staff.id)
            if account is not None:
                account.login_email = new
            self._record(session, data, "staff.email_changed", "success")
            await session.commit()
        return "changed"

    @activity.defn(name="send_email_changed")
    async def send_email_changed(self, data: EmailChangeStep) -> None:
        """Tells the old address; once it was accepted the old address is forgotten."""
        staff_id = uuid.UUID(data.staff_id)
        async with self._sessions() as session:
            staff = await self._staff(session, staff_id)
            old = staff.previous_external_email_1
        if old is None:
            return
        email = await self._email_to(
            staff,
            "email_changed",
            to=old,
            new_email=mask_email(staff.external_email_1),
            changed_at=email_at(utcnow(), self._settings.zone),
        )
        await self._notify("email_changed", staff_id, email)
        async with self._sessions() as session:
            staff = await self._staff(session, staff_id)
            staff.previous_external_email_1 = None
            await session.commit()

    @activity.defn(name="drop_email_change")
    async def drop_email_change(self, data: EmailChangeStep) -> None:
        """The change ended without a right code: the old address stays, the new one goes."""
        async with self._sessions() as session:
            staff = await session.get(Staff, uuid.UUID(data.staff_id))
            if staff is None or staff.pending_external_email_1 is None:
                return
            staff.pending_external_email_1 = None
            self._record(session, data, "staff.email_change_ended", "success", reason=data.outcome)
            await session.commit()

    @staticmethod
    def _record(
        session: AsyncSession, data: EmailChangeStep, action: str, outcome: str, **details: str
    ) -> None:
        # Never the addresses: the trail outlives an erasure of the person.
        audit.record(
            session,
            actor=data.actor,
            action=action,
            outcome=outcome,
            target=data.staff_id,
            ip=data.ip,
            workflow_id=data.workflow_id,
            **details,
        )
