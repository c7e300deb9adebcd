"""MFA recovery codes: ten single-use codes of 50 random bits each, for a lost phone.

Only keyed digests bound to the account are stored: a leaked table opens nothing, and one
person's code never matches another's. The codes are made in the web app and shown once;
they never enter a workflow (a reset carries a typed one sealed to the workers' key).
"""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.crypto import token_hash
from core.models import RecoveryCode

COUNT = 10
LENGTH = 10  # base32 characters: 50 bits
ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
# Base32 has no 0 or 1: someone copying a code by hand means o or l.
_LOOKALIKES = str.maketrans({"0": "o", "1": "l"})
PURPOSE = "recovery"


def normalise(typed: str) -> str | None:
    """A typed recovery code as its ten characters, or None when it can't be one (an
    authenticator code, say). Case, spaces and hyphens don't matter."""
    code = "".join(ch for ch in typed if not ch.isspace() and ch != "-").lower().translate(_LOOKALIKES)
    if len(code) != LENGTH or not all(ch in ALPHABET for ch in code):
        return None
    return code


def shown(code: str) -> str:
    """Two groups of five: easier to copy by hand."""
    return f"{code[:5]}-{code[5:]}"


def _digest(secret_key: str, account_id: uuid.UUID, code: str) -> str:
    return token_hash(secret_key, PURPOSE, f"{account_id}:{code}")


async def issue(session: AsyncSession, secret_key: str, account_id: uuid.UUID, now: datetime) -> list[str]:
    """A new set, voiding any earlier one; the codes as they are shown (once)."""
    await session.execute(delete(RecoveryCode).where(RecoveryCode.account_id == account_id))
    codes = ["".join(secrets.choice(ALPHABET) for _ in range(LENGTH)) for _ in range(COUNT)]
    session.add_all(
        RecoveryCode(account_id=account_id, digest=_digest(secret_key, account_id, code), created_at=now)
        for code in codes
    )
    await session.flush()
    return [shown(code) for code in codes]


async def redeem(
    session: AsyncSession, secret_key: str, account_id: uuid.UUID, typed: str, now: datetime
) -> bool:
    """Uses a code up; one guarded update, so two requests with the same code can't both win."""
    code = normalise(typed)
    if code is None:
        return False
    used = await session.execute(
        update(RecoveryCode)
        .where(
            RecoveryCode.account_id == account_id,
            RecoveryCode.digest == _digest(secret_key, account_id, code),
            RecoveryCode.used_at.is_(None),
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    return used.rowcount == 1  # type: ignore[attr-defined]


async def left(session: AsyncSession, account_id: uuid.UUID) -> int:
    return int(
        await session.scalar(
            select(func.count())
            .select_from(RecoveryCode)
            .where(RecoveryCode.account_id == account_id, RecoveryCode.used_at.is_(None))
        )
        or 0
    )


async def made(session: AsyncSession, account_id: uuid.UUID) -> bool:
    """Whether the account has a set, used up or not."""
    found = await session.scalar(
        select(RecoveryCode.id).where(RecoveryCode.account_id == account_id).limit(1)
    )
    return found is not None


async def remove(session: AsyncSession, account_id: uuid.UUID) -> None:
    await session.execute(delete(RecoveryCode).where(RecoveryCode.account_id == account_id))


async def set_made_at(session: AsyncSession, account_id: uuid.UUID) -> datetime | None:
    """When the account's current set was made (its codes share the moment): names the set."""
    return await session.scalar(
        select(func.max(RecoveryCode.created_at)).where(RecoveryCode.account_id == account_id)
    )
