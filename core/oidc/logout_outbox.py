"""The transactional outbox of back-channel logouts: the step that ends sign-in sessions
writes what the apps are owed in its own transaction; once that has committed, the web app
starts the SessionLogout flows and deletes the rows, and the worker's sweeper starts any row
left behind (the web app died, or Temporal was away). Starting is idempotent (one workflow
id per session, never reused), so a row started twice still tells each app once."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.exceptions import WorkflowAlreadyStartedError

from core.models import LogoutOutbox, utcnow
from core.oidc.backchannel import SessionLogoutInput, orgs_of

logger = logging.getLogger(__name__)

# A row younger than this is the web app's to start (it does so right after its commit).
SWEEP_AFTER = timedelta(seconds=10)
SWEEP_EVERY = 5.0  # seconds between the sweeper's looks
SWEEP_BATCH = 100

# Starts the SessionLogout flow of one logout; raises WorkflowAlreadyStartedError when that
# flow exists already, anything else when it could not be started.
Start = Callable[[SessionLogoutInput], Awaitable[None]]


async def queue(db: AsyncSession, logouts: Iterable[SessionLogoutInput]) -> list[str]:
    """Adds the logouts to the caller's transaction; their keys (a session's end: its sid)."""
    keys = []
    for logout in logouts:
        if await db.get(LogoutOutbox, logout.key) is None:
            db.add(
                LogoutOutbox(
                    sid=logout.key, staff_id=uuid.UUID(logout.staff_id), client_ids=logout.client_ids
                )
            )
        keys.append(logout.key)
    await db.flush()
    return keys


async def owed(db: AsyncSession, sids: list[str]) -> list[LogoutOutbox]:
    """The committed rows of these keys (none of a transaction that rolled back)."""
    return list(await db.scalars(select(LogoutOutbox).where(LogoutOutbox.sid.in_(sids)))) if sids else []


async def left_behind(db: AsyncSession, now: datetime | None = None) -> list[LogoutOutbox]:
    """Rows older than SWEEP_AFTER, oldest first; another sweeper's rows are skipped where
    the database can lock them (PostgreSQL)."""
    cutoff = (now or utcnow()) - SWEEP_AFTER
    return list(
        await db.scalars(
            select(LogoutOutbox)
            .where(LogoutOutbox.created_at <= cutoff)
            .order_by(LogoutOutbox.created_at)
            .limit(SWEEP_BATCH)
            .with_for_update(skip_locked=True)
        )
    )


async def start_owed(db: AsyncSession, rows: list[LogoutOutbox], start: Start) -> int:
    """Starts each row's flow and deletes the row, committing; stops at the first that could
    not be started (the rest stay for the sweeper). How many were started."""
    started = 0
    orgs = await orgs_of(db, {row.staff_id for row in rows})
    for row in rows:
        staff_id = str(row.staff_id)
        logout = SessionLogoutInput.of_key(row.sid, staff_id, list(row.client_ids), orgs.get(staff_id, ""))
        try:
            await start(logout)
            started += 1
        except WorkflowAlreadyStartedError:
            pass  # started before (by the web app, the sweeper or a password reset)
        except Exception:
            logger.warning("back-channel logout not started, left to the sweeper: %s", row.sid, exc_info=True)
            break
        await db.execute(delete(LogoutOutbox).where(LogoutOutbox.sid == row.sid))
    await db.commit()
    return started
