"""The MFA obligation's steps: record it for the pages, check whether it is still owed,
remind the person, and find whom a change to `required` obliges."""

from __future__ import annotations

import uuid

from sqlalchemy import or_, select
from temporalio import activity

from activities.base import SecretActivities
from activities.inputs import (
    MfaReminderInput,
    ObligationCheck,
    ObligationCheckInput,
    ObligationRecord,
    RolloutBatchInput,
    RolloutPerson,
)
from core import passkeys
from core.accounts import account_for
from core.mfa_policy import ObligationStep, exempt, under_policy
from core.models import AccountStatus, MfaObligation, Passkey, SsoAccount, Staff, utcnow
from core.settings import MfaPolicy
from core.times import email_at

ACCOUNT_MFA_PAGE = "/sso/account/mfa"


class MfaActivities(SecretActivities):
    @activity.defn(name="record_mfa_obligation")
    async def record_mfa_obligation(self, data: ObligationRecord) -> None:
        """Idempotent: the row takes the flow's state as a whole. A run that an admin's reset
        replaced never overwrites its successor's row."""
        staff_id = uuid.UUID(data.staff_id)
        async with self._sessions() as session:
            if await session.get(Staff, staff_id) is None:
                return
            row = await session.get(MfaObligation, staff_id, with_for_update=True)
            if row is None:
                row = MfaObligation(staff_id=staff_id)
                session.add(row)
            elif row.run_id != data.run_id and row.started_at > data.started_at:
                return
            row.run_id = data.run_id
            row.policy = data.policy
            row.step = data.step
            row.started_at = data.started_at
            row.due_at = data.due_at
            row.reminders_sent = data.reminders_sent
            row.extended_by = data.extended_by
            row.updated_at = utcnow()
            await session.commit()

    @activity.defn(name="check_mfa_obligation")
    async def check_mfa_obligation(self, data: ObligationCheckInput) -> ObligationCheck:
        staff_id = uuid.UUID(data.staff_id)
        async with self._sessions() as session:
            if await session.get(Staff, staff_id) is None:
                return ObligationCheck(owed=False, reason="gone")
            if await passkeys.has_second_factor(session, await account_for(session, staff_id)):
                return ObligationCheck(owed=False, reason="enrolled")
            if await exempt(session, staff_id):
                return ObligationCheck(owed=False, reason="exempt")
        return ObligationCheck(owed=True, reason="pending")

    @activity.defn(name="send_mfa_reminder")
    async def send_mfa_reminder(self, data: MfaReminderInput) -> None:
        staff, email = await self._email_to_account(
            data.staff_id,
            "mfa_reminder",
            required=data.required,
            due_at=email_at(data.due_at, self._settings.zone),
            link=f"{self._settings.public_url}{ACCOUNT_MFA_PAGE}",
        )
        await self._notify("mfa_reminder", staff.id, email)

    @activity.defn(name="next_mfa_rollout_people")
    async def next_mfa_rollout_people(self, data: RolloutBatchInput) -> list[RolloutPerson]:
        """The next people, by staff id, that a change to `required` obliges: an active
        password account without a second factor and no required obligation already open,
        whose effective policy is `required` now (an organisation of their own policy is
        left out of the deployment's rollout; an organisation's covers its people only).
        Each with their organisation, which their obligation is found by."""
        open_steps = [s.value for s in ObligationStep if s.is_open]
        already = select(MfaObligation.staff_id).where(
            MfaObligation.policy == "required", MfaObligation.step.in_(open_steps)
        )
        query = (
            select(SsoAccount.staff_id, Staff.org_id)
            .join(Staff, Staff.id == SsoAccount.staff_id)
            .where(
                SsoAccount.status == AccountStatus.active.value,
                SsoAccount.password_hash.is_not(None),
                SsoAccount.mfa_enabled_at.is_(None),
                ~select(Passkey.id).where(Passkey.account_id == SsoAccount.id).exists(),
                SsoAccount.staff_id.not_in(already),
                or_(Staff.is_admin, under_policy(MfaPolicy.required, self._settings)),
                *([Staff.org_id == uuid.UUID(data.org_id)] if data.org_id is not None else []),
            )
            .order_by(SsoAccount.staff_id)
            .limit(data.limit)
        )
        if data.after is not None:
            query = query.where(SsoAccount.staff_id > uuid.UUID(data.after))
        async with self._sessions() as session:
            found = (await session.execute(query)).all()
        return [RolloutPerson(str(staff_id), str(org_id)) for staff_id, org_id in found]

    @activity.defn(name="next_mfa_rollout_batch")
    async def next_mfa_rollout_batch(self, data: RolloutBatchInput) -> list[str]:
        """The same people by staff id only, for rollouts started before they came with their
        organisation (MfaRolloutInput.with_org_ids), which replay calling this."""
        return [person.staff_id for person in await self.next_mfa_rollout_people(data)]
