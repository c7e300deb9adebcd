"""Account rules shared by the web app and the worker: TOTP acceptance, session revocation,
sign-in lockout."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.crypto import Keyring
from core.models import BrowserSession, SsoAccount
from core.totp import matching_step, totp_aad

FREE_FAILURES = 5  # failed sign-ins before any delay
MAX_FAILURES = 100  # failed sign-ins in a row before only a password reset helps
MAX_DELAY = timedelta(minutes=15)
# "entra" too: a Microsoft sign-in started before a sign-out-everywhere must not finish.
SIGNED_IN_PURPOSES = ("signin", "mfa", "entra")


def lock_delay(failures: int) -> timedelta | None:
    """1 s after the fifth failure, doubling, at most 15 minutes."""
    if failures < FREE_FAILURES:
        return None
    return min(timedelta(seconds=2 ** min(failures - FREE_FAILURES, 20)), MAX_DELAY)


def is_locked(account: SsoAccount, now: datetime) -> bool:
    return account.failed_sign_ins >= MAX_FAILURES or (
        account.locked_until is not None and account.locked_until > now)


async def totp_accepted(session: AsyncSession, keyring: Keyring, account: SsoAccount, code: str,
                        now: datetime) -> str | None:
    """None when the code is right and not seen before; otherwise why not."""
    if account.totp_secret_encrypted is None:
        return "no authenticator is set up"
    secret = keyring.unseal(account.totp_secret_encrypted, totp_aad(account.staff_id)).decode()
    step = matching_step(secret, code, now)
    if step is None:
        return "wrong"
    accepted = await session.execute(
        update(SsoAccount)
        .where(SsoAccount.id == account.id,
               or_(SsoAccount.totp_last_step.is_(None), SsoAccount.totp_last_step < step))
        .values(totp_last_step=step))
    return None if accepted.rowcount == 1 else "replayed"  # type: ignore[attr-defined]


async def revoke_sessions(session: AsyncSession, staff_id: uuid.UUID, now: datetime,
                          purposes: Iterable[str] = SIGNED_IN_PURPOSES) -> int:
    result = await session.execute(
        update(BrowserSession)
        .where(BrowserSession.staff_id == staff_id, BrowserSession.revoked_at.is_(None),
               BrowserSession.purpose.in_(list(purposes)))
        .values(revoked_at=now))
    return int(result.rowcount)  # type: ignore[attr-defined]


async def account_for(session: AsyncSession, staff_id: uuid.UUID) -> SsoAccount | None:
    return await session.scalar(select(SsoAccount).where(SsoAccount.staff_id == staff_id))
