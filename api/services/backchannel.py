"""The back-channel logout of ended sign-in sessions, from the web app: owed in the
transaction that ends the sessions (core/oidc/logout_outbox.py), started once it commits.
An app whose access the person removes is told alike, alone, of the sessions it signed in to."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable, Sequence
from functools import partial

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api.services.temporal import connected
from core.accounts import SIGNED_IN_PURPOSES, revoke_sessions
from core.db import after_commit
from core.models import BrowserSession, OidcGrant, utcnow
from core.oidc import logout_outbox
from core.oidc.backchannel import SessionLogoutInput, logouts_due
from core.settings import Settings
from core.temporal_client import TemporalGateway
from workflows.logout import SessionLogoutWorkflow, logout_start_options

logger = logging.getLogger(__name__)
START_TIMEOUT = 5.0


async def queue_session_logouts(
    temporal: TemporalGateway,
    settings: Settings,
    db: AsyncSession,
    ended: Sequence[BrowserSession],
    client_id: str | None = None,
    removal: str = "",
) -> list[str]:
    """Owes one SessionLogout flow per ended session an app is to be told of (`client_id`:
    that app alone, for its `removal`), in the caller's transaction, and starts them once it
    has committed; their keys. A failed commit starts none; a web app that dies after the
    commit leaves them to the worker's sweeper."""
    sids = await logout_outbox.queue(db, await logouts_due(settings, db, ended, client_id, removal))
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


async def tell_app_its_access_removed(
    temporal: TemporalGateway, settings: Settings, db: AsyncSession, staff_id: uuid.UUID, client_id: str
) -> list[str]:
    """Before the app's grants for the person are revoked: owes the app alone the logout of
    each of the person's sessions it signed in to and still holds tokens from (the sessions
    go on for the other apps), started once the caller commits; their keys."""
    signed_in = select(OidcGrant.session_hash).where(
        OidcGrant.staff_id == staff_id,
        OidcGrant.client_id == client_id,
        OidcGrant.revoked_at.is_(None),
        OidcGrant.redeemed_at.is_not(None),
    )
    sessions = list(await db.scalars(select(BrowserSession).where(BrowserSession.id_hash.in_(signed_in))))
    # Its own key per removal: the app may sign in to the same session again and be removed again.
    removal = uuid.uuid4().hex[:24]
    return await queue_session_logouts(temporal, settings, db, sessions, client_id, removal)
