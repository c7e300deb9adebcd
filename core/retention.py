"""Storage limitation: which rows have stopped mattering, and their deletion a batch at a time.

A row goes `SSO_RETENTION_DAYS` after the moment it stopped mattering (the cutoff), never
while something still reads it:
- a refresh token with its grant (the token family) only: a rotated token presented again
  revokes the family (reuse detection), so every row of a live family stays;
- a session that timed out but was never ended stays while an app's grant from it is live:
  ending it (a disable, "sign out everywhere") still tells that app by back-channel logout;
- an email send outlives its flow's email retry window (a retry reads it);
- a logout still in the outbox is owed (the sweeper starts it): never purged here.
Audit events are the record and are kept.

Each purge deletes at most `limit` rows with `DELETE ... WHERE key IN (SELECT key ... LIMIT n)`,
which SQLite and PostgreSQL both run; run again until it deletes fewer than `limit`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, delete, exists, false, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from core.batches import BatchState
from core.models import (
    BrowserSession,
    EmailBudgetHour,
    EmailSend,
    OidcClient,
    OidcGrant,
    OidcRefreshToken,
    OutboxEmail,
    RateCounter,
    ResetCodeFailure,
    ResetLink,
    SetupLink,
    StaffBatch,
    StaffBatchItem,
)
from core.oidc.clients import refresh_lifetimes
from core.settings import Settings

BATCH_SIZE = 1000
# A query of the keys of rows to delete (one column, or a composite key's columns).
Found = Select[*tuple[Any, ...]]
CLOSED_BATCHES = (BatchState.done.value, BatchState.cancelled.value)


@dataclass(frozen=True)
class Cutoffs:
    """`now` and the moment before which a finished row has been kept long enough."""

    now: datetime
    keep: timedelta
    email_retry_window: timedelta

    @property
    def before(self) -> datetime:
        return self.now - self.keep

    @classmethod
    def of(cls, settings: Settings, now: datetime) -> Cutoffs:
        return cls(now, timedelta(days=settings.retention_days), settings.email_retry_window)


async def _finished_grants(db: AsyncSession, c: Cutoffs) -> ColumnElement[bool]:
    """Grants whose token family is over: revoked, a code never redeemed and expired, or past
    its app's absolute refresh lifetime (per app: a registration may set it)."""
    by_lifetime: dict[int, list[str]] = {}
    for client_id, registration in await db.execute(select(OidcClient.client_id, OidcClient.registration)):
        by_lifetime.setdefault(refresh_lifetimes(registration)[1], []).append(client_id)
    lived = [
        and_(OidcGrant.client_id.in_(ids), OidcGrant.redeemed_at < c.before - timedelta(seconds=absolute))
        for absolute, ids in by_lifetime.items()
    ]
    return or_(
        OidcGrant.revoked_at < c.before,
        and_(OidcGrant.redeemed_at.is_(None), OidcGrant.expires_at < c.before),
        *(lived or [false()]),
    )


async def _refresh_tokens(db: AsyncSession, c: Cutoffs) -> Found:
    finished = await _finished_grants(db, c)
    return (
        select(OidcRefreshToken.id).join(OidcGrant, OidcGrant.id == OidcRefreshToken.grant_id).where(finished)
    )


async def _grants(db: AsyncSession, c: Cutoffs) -> Found:
    # Their tokens went first (`_refresh_tokens`); a grant is deleted with none left.
    finished = await _finished_grants(db, c)
    return select(OidcGrant.id).where(finished, ~exists().where(OidcRefreshToken.grant_id == OidcGrant.id))


async def _sessions(db: AsyncSession, c: Cutoffs) -> Found:
    live_grant = exists().where(
        OidcGrant.session_hash == BrowserSession.id_hash, OidcGrant.revoked_at.is_(None)
    )
    return select(BrowserSession.id_hash).where(
        or_(
            BrowserSession.revoked_at < c.before,
            and_(BrowserSession.revoked_at.is_(None), BrowserSession.expires_at < c.before, ~live_grant),
        )
    )


async def _email_sends(db: AsyncSession, c: Cutoffs) -> Found:
    return select(EmailSend.id).where(EmailSend.created_at < min(c.before, c.now - c.email_retry_window))


async def _outbox_emails(db: AsyncSession, c: Cutoffs) -> Found:
    return select(OutboxEmail.id).where(OutboxEmail.created_at < c.before)


async def _setup_links(db: AsyncSession, c: Cutoffs) -> Found:
    # Used and revoked links expire too: a link matters until its expiry at the latest.
    return select(SetupLink.id).where(SetupLink.expires_at < c.before)


async def _reset_links(db: AsyncSession, c: Cutoffs) -> Found:
    return select(ResetLink.id).where(ResetLink.expires_at < c.before)


async def _reset_code_failures(db: AsyncSession, c: Cutoffs) -> Found:
    # Counted over a rolling day (core/reset_caps.py); SSO_RETENTION_DAYS is at least one.
    return select(ResetCodeFailure.id).where(ResetCodeFailure.failed_at < c.before)


async def _rate_counters(db: AsyncSession, c: Cutoffs) -> Found:
    # Windows are minutes to hours: a counter this old counts nothing.
    return select(RateCounter.key).where(RateCounter.window_start < c.before)


async def _email_budget_hours(db: AsyncSession, c: Cutoffs) -> Found:
    # Only the current hour is read (core/email_budget.py).
    return select(EmailBudgetHour.budget_key, EmailBudgetHour.hour).where(EmailBudgetHour.hour < c.before)


def _closed_batches(c: Cutoffs) -> ColumnElement[bool]:
    return and_(StaffBatch.state.in_(CLOSED_BATCHES), StaffBatch.updated_at < c.before)


async def _batch_items(db: AsyncSession, c: Cutoffs) -> Found:
    return (
        select(StaffBatchItem.id)
        .join(StaffBatch, StaffBatch.id == StaffBatchItem.batch_id)
        .where(_closed_batches(c))
    )


async def _batches(db: AsyncSession, c: Cutoffs) -> Found:
    # Its items went first: the batch page would show counts of nothing.
    return select(StaffBatch.id).where(
        _closed_batches(c), ~exists().where(StaffBatchItem.batch_id == StaffBatch.id)
    )


Finder = Callable[[AsyncSession, Cutoffs], Awaitable[Found]]


@dataclass(frozen=True)
class Purge:
    key: tuple[InstrumentedAttribute[Any], ...]
    find: Finder


# In this order: children before what they hang on (tokens, then grants, then sessions that
# only a live grant kept; items, then their batches). The housekeeping flow runs them in
# this order, by name.
PURGES: dict[str, Purge] = {
    "oidc_refresh_tokens": Purge((OidcRefreshToken.id,), _refresh_tokens),
    "oidc_grants": Purge((OidcGrant.id,), _grants),
    "browser_sessions": Purge((BrowserSession.id_hash,), _sessions),
    "setup_links": Purge((SetupLink.id,), _setup_links),
    "reset_links": Purge((ResetLink.id,), _reset_links),
    "reset_code_failures": Purge((ResetCodeFailure.id,), _reset_code_failures),
    "email_sends": Purge((EmailSend.id,), _email_sends),
    "outbox_emails": Purge((OutboxEmail.id,), _outbox_emails),
    "rate_counters": Purge((RateCounter.key,), _rate_counters),
    "email_budget_hours": Purge((EmailBudgetHour.budget_key, EmailBudgetHour.hour), _email_budget_hours),
    "staff_batch_items": Purge((StaffBatchItem.id,), _batch_items),
    "staff_batches": Purge((StaffBatch.id,), _batches),
}
TABLES = tuple(PURGES)


async def purge_batch(db: AsyncSession, table: str, cutoffs: Cutoffs, limit: int = BATCH_SIZE) -> int:
    """Deletes up to `limit` rows of `table` that have been kept long enough; how many. The
    caller commits: each batch is its own transaction, so a retry redoes at most one."""
    purge = PURGES[table]
    found = (await purge.find(db, cutoffs)).limit(limit)
    key = purge.key[0] if len(purge.key) == 1 else tuple_(*purge.key)
    result = await db.execute(
        delete(purge.key[0].class_).where(key.in_(found)), execution_options={"synchronize_session": False}
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
