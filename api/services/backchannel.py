"""The back-channel logout of ended sign-in sessions, from the web app: owed in the
transaction that ends the sessions (core/oidc/logout_outbox.py), started once it commits."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable, Sequence
from functools import partial

from sqlalchemy.ext.asyncio import AsyncSession

from api.services.temporal import connected
from core.accounts import SIGNED_IN_PURPOSES, revoke_sessions
from core.db import after_commit
from core.models import BrowserSession, utcnow
from core.oidc import logout_outbox
from core.oidc.backchannel import SessionLogoutInput, logouts_due
from core.settings import Settings
from core.temporal_client import TemporalGateway
from workflows.logout import SessionLogoutWorkflow, logout_start_options

logger = logging.getLogger(__name__)
START_TIMEOUT = 5.0


async def queue_session_logouts(
    temporal: TemporalGateway, settings: Settings, db: AsyncSession, ended: Sequence[BrowserSession]
) -> list[str]:
    """Owes one SessionLogout flow per ended session an app is to be told of, in the caller's
    transaction, and starts them once it has committed; their sids. A failed commit starts
    none; a web app that dies after the commit leaves them to the worker's sweeper."""
    sids = await logout_outbox.queue(db, await logouts_due(settings, db, ended))
    if sids:
        after_commit(db, partial(_start_owed, temporal, settings, sids))
    return sids


async def _start_owed(
    temporal: TemporalGateway, settings: Settings, sids: list[str], db: AsyncSession
) -> None:
    async def start(logout: SessionLogoutInput) -> None:
        client = await connected(temporal, START_TIMEOUT)
        async with asyncio.timeout(START_TIMEOUT):
            await client.start_workflow(
                SessionLogoutWorkflow.run, logout, **logout_start_options(logout, settings.task_queue)
            )

    try:
        await logout_outbox.start_owed(db, await logout_outbox.owed(db, sids), start)
    except Exception:  # the sessions have ended; the sweeper starts what is still owed
        logger.warning("back-channel logouts left to the sweeper", exc_info=True)
        await db.rollback()


async def end_sessions(
    temporal: TemporalGateway,
    settings: Settings,
    db: AsyncSession,
    staff_id: uuid.UUID,
    keep: str | None = None,
    purposes: Iterable[str] = SIGNED_IN_PURPOSES,
) -> list[BrowserSession]:
    """Ends a person's sign-in sessions (all, or all but the one whose id hash is `keep`),
    their refresh tokens with them, and owes the apps their logouts; the sessions it ended.
    `purposes`: a leaver's half-way sessions (setup, reset) end too."""
    ended = await revoke_sessions(db, staff_id, utcnow(), purposes, keep=keep)
    await queue_session_logouts(temporal, settings, db, ended)
    return ended
