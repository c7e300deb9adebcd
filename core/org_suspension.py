"""A suspended organisation: its people can't sign in in any way and its admin keys are
refused, until an operator resumes it. Nothing of it is deleted."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.models import SIGN_IN_PAUSED, Organisation, Staff

SUSPENDED_TITLE = "Sign-in is paused for your organisation"


def suspended_message(org_name: str, brand: str) -> str:
    return f"{org_name} can't use {brand} Single Sign-On at the moment. Contact your administrator."


def keys_suspended_message(org_name: str) -> str:
    return f"{org_name} is suspended: its admin keys can't be used until an agentOS operator resumes it"


async def suspended_org_name(session: AsyncSession, staff_id: uuid.UUID) -> str | None:
    """The name of the person's organisation if it is suspended (or being erased); None when it is active (or
    the person is gone: whatever asks refuses them on its own terms)."""
    return await session.scalar(
        select(Organisation.name)
        .join(Staff, Staff.org_id == Organisation.id)
        .where(Staff.id == staff_id, Organisation.status.in_(SIGN_IN_PAUSED))
    )


async def suspended_org(session: AsyncSession, org_id: uuid.UUID | None) -> str | None:
    """The organisation's name if it is suspended (None: active, or an operator's scope)."""
    if org_id is None:
        return None
    org = await session.get(Organisation, org_id)
    return org.name if org is not None and org.status in SIGN_IN_PAUSED else None
