"""Admin API keys: shown once at creation, stored only as an HMAC."""

from __future__ import annotations

import hmac
import secrets

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.crypto import token_hash
from core.models import AdminApiKey, utcnow
from core.settings import Settings

KEY_PREFIX = "ssoak_"
PURPOSE = "adminkey"
BOOTSTRAP_NAME = "bootstrap"


def new_admin_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


async def create_admin_key(session: AsyncSession, settings: Settings, name: str) -> str:
    key = new_admin_key()
    session.add(AdminApiKey(name=name, key_hash=_hash(settings, key)))
    await session.flush()
    return key


async def authenticate(session: AsyncSession, settings: Settings, presented: str) -> str | None:
    """Returns the key's name, or None. Constant-time for the bootstrap key."""
    if not presented:
        return None
    bootstrap = settings.bootstrap_admin_key
    if bootstrap is not None and hmac.compare_digest(
        presented.encode(), bootstrap.get_secret_value().encode()
    ):
        return BOOTSTRAP_NAME
    row = await session.scalar(
        select(AdminApiKey).where(
            AdminApiKey.key_hash == _hash(settings, presented), AdminApiKey.revoked_at.is_(None)
        )
    )
    if row is None:
        return None
    row.last_used_at = utcnow()
    return row.name


def _hash(settings: Settings, key: str) -> str:
    return token_hash(settings.secret_key.get_secret_value(), PURPOSE, key)
