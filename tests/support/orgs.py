"""Organisations for tests that need more than the default one, written straight to the
database (the organisations API has its own tests)."""

from __future__ import annotations

import uuid

from core.db import SessionFactory
from core.models import Organisation


async def add_org(sessions: SessionFactory, name: str, sender_name: str | None = None) -> uuid.UUID:
    """A new active organisation named `name` (its slug made unique), and its id."""
    org = Organisation(
        id=uuid.uuid4(),
        name=name,
        slug=f"{name.lower().replace(' ', '-')[:40]}-{uuid.uuid4().hex[:8]}",
        sender_name=sender_name,
    )
    async with sessions() as session:
        session.add(org)
        await session.commit()
    return org.id
