"""One requested email, the same in every attempt of the activity that sends it.

A worker can die after the mail server accepted an email and before Temporal heard of it;
Temporal then runs the activity again. SMTP has no idempotency key, so that retry may email
the person a second time: it must carry the same link or code, or the copy the person opens
first is dead. So the secret is minted once per send request (the scheduled activity: workflow
id, run id, activity id, the same across its attempts), kept sealed with the keyring in
`email_sends`, and dropped once the mail server's acceptance is recorded; a retry after that
sends nothing more.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity

from activities.email_delivery import EmailSender, PermanentEmailError, TransientEmailError
from core import email_budget, metrics
from core.crypto import Keyring
from core.db import SessionFactory
from core.models import EmailSend, Staff, utcnow
from core.templating import RenderedEmail


class AttemptClock:
    """The server's clock during this attempt: when Temporal started it, plus how long it has
    run here. Keeps deadlines in step with the workflow's timers (which use server time)."""

    def __init__(self) -> None:
        self._started = activity.info().started_time
        self._t0 = time.monotonic()

    def now(self) -> datetime:
        return self._started + timedelta(seconds=time.monotonic() - self._t0)


def request_key() -> str:
    info = activity.info()
    return f"{info.workflow_id}/{info.workflow_run_id}/{info.activity_id}"


def _aad(key: str, kind: str) -> bytes:
    return f"email-send:{kind}:{key}".encode()


@dataclass
class Claim:
    """This attempt's hold on its send request."""

    row: EmailSend
    secret: str
    minted: bool  # by this attempt: the request is new
    duplicate: bool = False  # an earlier attempt may already have handed the email over

    @property
    def accepted(self) -> bool:
        return self.row.accepted_at is not None


async def _count_against_budget(session: AsyncSession, staff_id: uuid.UUID) -> None:
    """Every email counts, but none waits for the budget: the person asked for it, or it
    tells them of a change (a bulk send is what waits, see core/email_budget.py)."""
    org_id = await session.scalar(select(Staff.org_id).where(Staff.id == staff_id))
    if org_id is not None:
        await email_budget.count(session, email_budget.org_budget_key(org_id), utcnow())


class SendRequests:
    def __init__(self, keyring: Keyring) -> None:
        self._keyring = keyring

    async def claim(
        self,
        session: AsyncSession,
        kind: str,
        staff_id: uuid.UUID | None,
        mint: Callable[[], str] | None = None,
        *,
        budgeted: bool = False,
    ) -> Claim:
        """The request's row (locked on PostgreSQL), created with a fresh secret by its first
        attempt; a later attempt gets the same secret back. A new request counts one email
        against the person's organisation's hourly budget, in the same transaction (unless a
        bulk send already spent it: `budgeted`)."""
        key = request_key()
        row = await session.scalar(select(EmailSend).where(EmailSend.request_key == key).with_for_update())
        if row is None:
            secret = mint() if mint is not None else ""
            row = EmailSend(
                request_key=key,
                kind=kind,
                staff_id=staff_id,
                handovers=0,
                in_flight=False,
                secret_sealed=self._keyring.seal(secret.encode(), _aad(key, kind)) if secret else None,
            )
            session.add(row)
            if staff_id is not None and not budgeted:
                await _count_against_budget(session, staff_id)
            await session.flush()
            return Claim(row, secret, minted=True)
        secret = (
            self._keyring.unseal(row.secret_sealed, _aad(key, row.kind)).decode() if row.secret_sealed else ""
        )
        return Claim(row, secret, minted=False)

    @staticmethod
    def hand_over(claim: Claim) -> None:
        """Mark the hand-over to the mail server as begun; the caller commits before sending,
        so a retry knows an earlier attempt may have delivered."""
        claim.duplicate = claim.row.in_flight
        claim.row.in_flight = True
        claim.row.handovers += 1

    async def send(
        self, sessions: SessionFactory, sender: EmailSender, claim: Claim, email: RenderedEmail
    ) -> None:
        if claim.duplicate:
            metrics.email_duplicate(claim.row.kind)
            activity.logger.info(
                "sending a %s email again: an earlier attempt may already "
                "have delivered it (same link or code)",
                claim.row.kind,
            )
        try:
            await sender.send(email)
        except TransientEmailError as exc:
            if not exc.maybe_delivered:
                await self._not_delivered(sessions, claim)
            raise
        except PermanentEmailError:
            await self._not_delivered(sessions, claim, drop_secret=True)
            raise

    @staticmethod
    async def accepted(session: AsyncSession, claim: Claim, at: datetime) -> None:
        """Record, in the caller's transaction, that the mail server took the email: the
        secret is no longer needed here (it is in the email), a retry sends nothing."""
        await session.execute(
            update(EmailSend)
            .where(EmailSend.id == claim.row.id)
            .values(accepted_at=at, in_flight=False, secret_sealed=None)
        )

    @staticmethod
    async def _not_delivered(sessions: SessionFactory, claim: Claim, drop_secret: bool = False) -> None:
        values: dict[str, object] = {"in_flight": False}
        if drop_secret:
            values["secret_sealed"] = None
        try:
            async with sessions() as session:
                await session.execute(update(EmailSend).where(EmailSend.id == claim.row.id).values(**values))
                await session.commit()
        except Exception as exc:  # only bookkeeping: a retry then counts a duplicate
            activity.logger.warning("could not record a failed email attempt: %s", type(exc).__name__)
