"""Whether a person's linked Microsoft account is still enabled, as Graph says: asked at a
password sign-in (the Microsoft-Entra button asks Graph itself), with a short cache on the
link, so that a leaver whose Microsoft account was disabled or deleted is refused everywhere."""

from __future__ import annotations

import asyncio
import logging
import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.entra import EntraProvider, EntraRefused, EntraUnavailable
from core.models import EntraLink, utcnow
from core.settings import Settings

logger = logging.getLogger(__name__)

REFUSED_STATES = ("disabled", "deleted")
GRAPH_TIMEOUT = 5.0


async def microsoft_refusal(
    db: AsyncSession, settings: Settings, staff_id: uuid.UUID, provider: EntraProvider | None = None
) -> str | None:
    """ "disabled" or "deleted" when the person's linked Microsoft account is so (asking Graph
    once the last answer is older than SSO_ENTRA_STATE_TTL); None otherwise, or with no link.
    Graph not answering leaves the last answer standing."""
    if not settings.entra_enabled:
        return None
    link = await db.scalar(select(EntraLink).where(EntraLink.staff_id == staff_id))
    if link is None:
        return None
    now = utcnow()
    if link.account_checked_at is None or now - link.account_checked_at >= settings.entra_state_ttl:
        try:
            async with asyncio.timeout(GRAPH_TIMEOUT):
                state = await (provider or EntraProvider(settings)).account_state(link.object_id)
        except (EntraUnavailable, EntraRefused, TimeoutError) as exc:
            logger.warning("Graph did not say whether a linked Microsoft account is enabled: %s", exc)
        else:
            link.account_state, link.account_checked_at = state, now
    return link.account_state if link.account_state in REFUSED_STATES else None
