"""Passkey rules shared by the web app and the worker: whether a person has any, removing
them, and the one-time proof that a reset's passkey step was passed.

The WebAuthn ceremonies themselves run in the web app (api/services/passkeys.py); a flow
only ever learns that a verification happened, through a proof row it can check and spend.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ColumnElement, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.models import BrowserSession, Passkey, SsoAccount

# A reset's passkey step, passed in the web app: a row the reset activity spends.
PROOF_PURPOSE = "passkey_proof"


async def of_account(session: AsyncSession, account_id: uuid.UUID) -> list[Passkey]:
    return list(
        await session.scalars(
            select(Passkey).where(Passkey.account_id == account_id).order_by(Passkey.created_at)
        )
    )


async def count(session: AsyncSession, account_id: uuid.UUID) -> int:
    return int(
        await session.scalar(
            select(func.count()).select_from(Passkey).where(Passkey.account_id == account_id)
        )
        or 0
    )


async def has_second_factor(session: AsyncSession, account: SsoAccount | None) -> bool:
    """An authenticator app or at least one passkey (no account: neither)."""
    if account is None:
        return False
    return account.mfa_enabled_at is not None or await count(session, account.id) > 0


async def remove_all(session: AsyncSession, account_id: uuid.UUID) -> None:
    await session.execute(delete(Passkey).where(Passkey.account_id == account_id))


async def spend_proof(
    session: AsyncSession, proof: str, staff_id: uuid.UUID, workflow_id: str, now: datetime
) -> bool:
    """Uses up the reset's passkey proof: only this person's, for this flow, unexpired and
    unused."""
    return await spend(
        session,
        proof,
        PROOF_PURPOSE,
        now,
        BrowserSession.staff_id == staff_id,
        BrowserSession.workflow_id == workflow_id,
    )


async def spend(
    session: AsyncSession, id_hash: str, purpose: str, now: datetime, *conditions: ColumnElement[bool]
) -> bool:
    """Uses up a one-time row (a challenge, a proof) while it is unused and unexpired: one
    guarded update, so of two requests sent together only one wins."""
    spent = await session.execute(
        update(BrowserSession)
        .where(
            BrowserSession.id_hash == id_hash,
            BrowserSession.purpose == purpose,
            BrowserSession.revoked_at.is_(None),
            BrowserSession.expires_at > now,
            *conditions,
        )
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    return spent.rowcount == 1  # type: ignore[attr-defined]
