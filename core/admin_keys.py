"""Admin API keys: shown once at creation, stored only as an HMAC."""

from __future__ import annotations

import hmac
import secrets
import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.crypto import token_hash
from core.models import AdminApiKey, utcnow
from core.orgs import AdminScope
from core.settings import Settings

KEY_PREFIX = "ssoak_"
PURPOSE = "adminkey"
BOOTSTRAP_NAME = "bootstrap"


def new_admin_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


async def create_admin_key(
    session: AsyncSession, settings: Settings, name: str, org_id: uuid.UUID | None = None
) -> str:
    """A new key for the organisation, or (org_id None) an operator key."""
    key = new_admin_key()
    session.add(AdminApiKey(name=name, key_hash=_hash(settings, key), org_id=org_id))
    await session.flush()
    return key


async def authenticate(session: AsyncSession, settings: Settings, presented: str) -> str | None:
    """Returns the key's name, or None. Constant-time for the bootstrap key."""
    scope = await key_scope(session, settings, presented)
    return scope.actor.removeprefix(ACTOR_PREFIX) if scope else None


ACTOR_PREFIX = "admin-key:"


async def key_scope(session: AsyncSession, settings: Settings, presented: str) -> AdminScope | None:
    """Who the key acts as: its audit actor and organisation (None for the bootstrap key and
    the other operator keys), or None for no valid key."""
    if not presented:
        return None
    bootstrap = settings.bootstrap_admin_key
    if bootstrap is not None and hmac.compare_digest(
        presented.encode(), bootstrap.get_secret_value().encode()
    ):
        return AdminScope(actor=ACTOR_PREFIX + BOOTSTRAP_NAME, org_id=None)
    row = await session.scalar(
        select(AdminApiKey).where(
            AdminApiKey.key_hash == _hash(settings, presented), AdminApiKey.revoked_at.is_(None)
        )
    )
    if row is None:
        return None
    row.last_used_at = utcnow()
    return AdminScope(actor=ACTOR_PREFIX + row.name, org_id=row.org_id)


def _hash(settings: Settings, key: str) -> str:
    return token_hash(settings.secret_key.get_secret_value(), PURPOSE, key)
