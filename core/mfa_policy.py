"""The MFA obligation's rules, shared by the web app and the worker: who is under which
policy, who is exempt, and what a person's obligation means for sign-in and the admin pages."""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core import passkeys
from core.models import DeploymentFact, EntraLink, MfaObligation, SsoAccount, Staff, utcnow
from core.settings import MfaPolicy, Settings

# Deployment facts named by the policy applied, `at` when it last was (core.models.DeploymentFact).
POLICY_FACT = "mfa_policy:"


class ObligationStep(StrEnum):
    waiting = "waiting"  # skipped; no reminder yet
    reminded = "reminded"  # at least one reminder sent
    overdue = "overdue"  # required and past its deadline: sign-in sets MFA up first
    done = "done"  # a second factor was set up
    ended = "ended"  # optional: its one reminder went out; or nobody to oblige any more

    @property
    def is_open(self) -> bool:
        return self in (ObligationStep.waiting, ObligationStep.reminded, ObligationStep.overdue)


def policy_for(staff: Staff, settings: Settings) -> MfaPolicy:
    """Administrators are always under `required`: the admin pages need a strong sign-in."""
    return MfaPolicy.required if staff.is_admin else settings.mfa_policy


async def exempt(session: AsyncSession, staff_id: uuid.UUID) -> bool:
    """Signs in only with Microsoft (linked, no password): their organisation's Microsoft
    policy applies, and we have no password sign-in to add a factor to."""
    linked = await session.scalar(select(EntraLink.staff_id).where(EntraLink.staff_id == staff_id))
    if linked is None:
        return False
    account = await session.scalar(select(SsoAccount).where(SsoAccount.staff_id == staff_id))
    return account is None or account.password_hash is None


async def obligation_for(session: AsyncSession, staff_id: uuid.UUID) -> MfaObligation | None:
    return await session.get(MfaObligation, staff_id)


def is_overdue(obligation: MfaObligation | None, now: datetime) -> bool:
    """Past a `required` deadline and still open: as the flow recorded it, or read from the
    deadline itself, so sign-in does not wait for the flow's timer to record `overdue`."""
    if obligation is None or obligation.policy != MfaPolicy.required.value:
        return False
    step = ObligationStep(obligation.step)
    return step is ObligationStep.overdue or (step.is_open and obligation.due_at <= now)


def due_text(obligation: MfaObligation | None, now: datetime) -> str | None:
    """What the admin pages say: "MFA due in 5 days", "MFA overdue"; None when nothing is due."""
    if obligation is None or obligation.policy != MfaPolicy.required.value:
        return None
    if not ObligationStep(obligation.step).is_open:
        return None
    if is_overdue(obligation, now):
        return "MFA overdue"
    left = obligation.due_at - now
    if left >= timedelta(days=1):
        days = math.ceil(left / timedelta(days=1))
        return f"MFA due in {days} day{'s' if days != 1 else ''}"
    hours = max(1, math.ceil(left / timedelta(hours=1)))
    return f"MFA due in {hours} hour{'s' if hours != 1 else ''}"


async def must_set_up_mfa(
    session: AsyncSession, settings: Settings, account: SsoAccount, now: datetime
) -> bool:
    """A password sign-in that completes only once MFA is set up: past a `required`
    deadline, under a policy that still requires it, with no second factor yet."""
    if await passkeys.has_second_factor(session, account):
        return False
    if not is_overdue(await obligation_for(session, account.staff_id), now):
        return False
    staff = await session.get(Staff, account.staff_id)
    return staff is not None and policy_for(staff, settings) is MfaPolicy.required


async def last_applied_policy(session: AsyncSession) -> str | None:
    """The policy a worker last started with (None before the first)."""
    facts = (
        await session.scalars(select(DeploymentFact).where(DeploymentFact.name.startswith(POLICY_FACT)))
    ).all()
    return max(facts, key=lambda fact: fact.at).name.removeprefix(POLICY_FACT) if facts else None


async def remember_policy(session: AsyncSession, policy: MfaPolicy) -> None:
    name = POLICY_FACT + policy.value
    fact = await session.get(DeploymentFact, name)
    if fact is None:
        session.add(DeploymentFact(name=name, at=utcnow()))
    else:
        fact.at = utcnow()
