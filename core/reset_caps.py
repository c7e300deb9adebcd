"""Wrong password reset codes, capped per flow and per account over a rolling day.

Each code has its own five tries, and each browser its own codes, so the caps that bound
guessing are counted here, in the database, across every browser, code and flow of a
subject: an account id, or the stand-in id of an address without an account (which is
counted the same way so the pages answer alike). Past a cap codes stop; the person gets a
link instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.crypto import token_hash
from core.models import ResetCodeFailure

DAY = timedelta(hours=24)
CODES_STOPPED = (
    "Too many incorrect codes for this account, so reset codes no longer work. "
    "We've emailed you a link to reset your password instead."
)
LINK_GONE = (
    "This reset link is no longer valid: it has expired or was already used. Start "
    "again with Forgot your password?"
)
RESET_LINK_PURPOSE = "reset-link"
LINK_SENT = "We've emailed you a link to reset your password. Reset codes no longer work for this account."


@dataclass
class CodeCaps:
    subject: str
    flow: str
    flow_limit: int = 10
    day_limit: int = 20


@dataclass
class WrongCode:
    counted: bool  # under the caps when it came, so it counts
    stopped: bool  # codes no longer work: a cap is reached


async def count_wrong_code(session: AsyncSession, caps: CodeCaps, now: datetime) -> WrongCode:
    """Counts one wrong code unless a cap is already reached. Stored and committed first, then
    counted: codes sent together (to any instance) all see each other, and any that went past
    a cap take themselves back, so the caps are never exceeded."""
    # Older than the day counts for nothing any more (a flow's own count is bounded by the
    # day's anyway): kept out of the table so it does not grow without end.
    await session.execute(
        delete(ResetCodeFailure).where(
            ResetCodeFailure.subject == caps.subject, ResetCodeFailure.failed_at <= now - DAY
        )
    )
    row = ResetCodeFailure(subject=caps.subject, flow=caps.flow, failed_at=now)
    session.add(row)
    await session.commit()
    flow, day = await _counts(session, caps, now)
    if flow > caps.flow_limit or day > caps.day_limit:
        await session.execute(delete(ResetCodeFailure).where(ResetCodeFailure.id == row.id))
        await session.commit()
        return WrongCode(counted=False, stopped=True)
    return WrongCode(counted=True, stopped=flow >= caps.flow_limit or day >= caps.day_limit)


async def codes_stopped(session: AsyncSession, caps: CodeCaps, now: datetime) -> bool:
    flow, day = await _counts(session, caps, now)
    return flow >= caps.flow_limit or day >= caps.day_limit


async def clear(session: AsyncSession, subject: str) -> int:
    """Forgets a subject's wrong codes (an admin's Unlock sign-in); the caller commits."""
    result = await session.execute(delete(ResetCodeFailure).where(ResetCodeFailure.subject == subject))
    return int(result.rowcount)  # type: ignore[attr-defined]


async def _counts(session: AsyncSession, caps: CodeCaps, now: datetime) -> tuple[int, int]:
    counts = (
        await session.execute(
            select(
                func.count().filter(ResetCodeFailure.flow == caps.flow),
                func.count().filter(ResetCodeFailure.failed_at > now - DAY),
            ).where(ResetCodeFailure.subject == caps.subject)
        )
    ).one()
    return int(counts[0]), int(counts[1])


def reset_link_hash(secret_key: str, token: str) -> str:
    """What is stored of a reset link's token, and what the flow is told of it."""
    return token_hash(secret_key, RESET_LINK_PURPOSE, token)
