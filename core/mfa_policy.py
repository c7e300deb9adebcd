"""The MFA obligation's rules, shared by the web app and the worker: who is under which
policy, who is exempt, and what a person's obligation means for sign-in and the admin pages."""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from core import passkeys
from core.models import DeploymentFact, EntraLink, MfaObligation, Organisation, SsoAccount, Staff, utcnow
from core.settings import MfaPolicy, Settings

# Deployment facts named by the policy applied, `at` when it last was (core.models.DeploymentFact).
POLICY_FACT = "mfa_policy:"
# One per organisation whose own `required` has been rolled out (dropped when it no longer is).
ORG_POLICY_FACT = "org_mfa_policy:"


class ObligationStep(StrEnum):
    waiting = "waiting"  # skipped; no reminder yet
    reminded = "reminded"  # at least one reminder sent
    overdue = "overdue"  # required and past its deadline: sign-in sets MFA up first
    done = "done"  # a second factor was set up
    ended = "ended"  # optional: its one reminder went out; or nobody to oblige any more

    @property
    def is_open(self) -> bool:
        return self in (ObligationStep.waiting, ObligationStep.reminded, ObligationStep.overdue)


async def policy_for(session: AsyncSession, staff: Staff, settings: Settings) -> MfaPolicy:
    """The person's effective policy: their organisation's `mfa_policy`, or the deployment's
    SSO_MFA_POLICY when it has none. Administrators are always under `required`: the admin
    pages need a strong sign-in."""
    if staff.is_admin:
        return MfaPolicy.required
    own = await session.scalar(select(Organisation.mfa_policy).where(Organisation.id == staff.org_id))
    return MfaPolicy(own) if own else settings.mfa_policy


def under_policy(policy: MfaPolicy, settings: Settings) -> ColumnElement[bool]:
    """Staff whose effective policy (admins aside) is `policy`: their organisation's own,
    or the deployment's where the organisation has none."""
    own = select(Organisation.id).where(Organisation.mfa_policy == policy.value)
    if settings.mfa_policy is policy:
        own = select(Organisation.id).where(
            or_(Organisation.mfa_policy == policy.value, Organisation.mfa_policy.is_(None))
        )
    return Staff.org_id.in_(own)


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
    return staff is not None and await policy_for(session, staff, settings) is MfaPolicy.required


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


def org_policy_fact(org_id: uuid.UUID) -> str:
    return f"{ORG_POLICY_FACT}{org_id}"


async def org_policies_to_apply(session: AsyncSession) -> list[uuid.UUID]:
    """Organisations whose own policy is `required` with no rollout recorded for it yet;
    the records of those no longer `required` are dropped, so a later change starts one."""
    required = set(
        await session.scalars(
            select(Organisation.id).where(Organisation.mfa_policy == MfaPolicy.required.value)
        )
    )
    facts = await session.scalars(
        select(DeploymentFact).where(DeploymentFact.name.startswith(ORG_POLICY_FACT))
    )
    applied: set[uuid.UUID] = set()
    for fact in facts.all():
        org_id = uuid.UUID(fact.name.removeprefix(ORG_POLICY_FACT))
        if org_id in required:
            applied.add(org_id)
        else:
            await session.delete(fact)
    return sorted(required - applied)


async def remember_org_policy(session: AsyncSession, org_id: uuid.UUID) -> None:
    if await session.get(DeploymentFact, org_policy_fact(org_id)) is None:
        session.add(DeploymentFact(name=org_policy_fact(org_id), at=utcnow()))
