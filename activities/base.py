"""What every worker activity class that handles secrets shares."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.exceptions import ApplicationError

from activities.email_delivery import EmailSender, PermanentEmailError, record_after_send
from activities.inputs import AuditInput
from activities.send_requests import AttemptClock, Claim, SendRequests
from core import audit, flow_errors
from core.accounts import account_for
from core.crypto import DecryptionError, Keyring
from core.db import SessionFactory
from core.models import Organisation, Staff
from core.orgs import org_count
from core.passwords import Hasher, hashing_pool
from core.sealing import unseal
from core.settings import Settings
from core.templating import Agency, RenderedEmail, render_email

# What a sending activity writes with the record of its accepted email: (session, sent_at).
Recorder = Callable[[AsyncSession, datetime], Awaitable[None]]


class SecretActivities:
    # argon2 is memory-hard CPU work: one low-priority thread per core, shared by every
    # activity class of the worker, so the flows' other steps keep the CPU first.
    _hash_pool: ThreadPoolExecutor | None = None

    def __init__(
        self, settings: Settings, sessions: SessionFactory, sender: EmailSender, keyring: Keyring
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._sender = sender
        self._keyring = keyring
        self._requests = SendRequests(keyring)
        self._hasher = Hasher(
            settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism
        )

    async def _hash(self, password: str) -> str:
        if SecretActivities._hash_pool is None:
            SecretActivities._hash_pool = hashing_pool()
        return await asyncio.get_running_loop().run_in_executor(
            SecretActivities._hash_pool, self._hasher.hash, password
        )

    @staticmethod
    async def _staff(session: AsyncSession, staff_id: uuid.UUID) -> Staff:
        """The person an email goes to; gone, the send can never succeed."""
        staff = await session.get(Staff, staff_id)
        if staff is None:
            raise ApplicationError(
                "staff member no longer exists", non_retryable=True, type=flow_errors.STAFF_NOT_FOUND
            )
        return staff

    async def _email_to_account(
        self, staff_id: str, template: str, **values: Any
    ) -> tuple[Staff, RenderedEmail]:
        """An email about the person's sign-in, naming the address they sign in with (their
        External Email 1 when they have no password account)."""
        async with self._sessions() as session:
            staff = await self._staff(session, uuid.UUID(staff_id))
            account = await account_for(session, staff.id)
        login_email = account.login_email if account is not None else staff.external_email_1
        return staff, await self._email_to(staff, template, login_email=login_email, **values)

    @staticmethod
    def _code_address(staff: Staff, purpose: str) -> str:
        """Where a code goes: the person's address, or the new one a change waits to confirm."""
        if purpose != "email_change":
            return staff.external_email_1
        if staff.pending_external_email_1 is None:
            raise ApplicationError(
                "no change of email address is waiting", non_retryable=True, type=flow_errors.SETUP_ENDED
            )
        return staff.pending_external_email_1

    async def _email_to(
        self, staff: Staff, template: str, to: str | None = None, **values: Any
    ) -> RenderedEmail:
        """An email to the staff member's own address (or `to`), in the brand's name, sent for
        their organisation (see _agency)."""
        return render_email(
            template,
            to=to or staff.external_email_1,
            brand=self._settings.brand_name,
            agency=await self._agency(staff.org_id),
            first_name=staff.first_name,
            support_email=self._settings.support_email,
            **values,
        )

    async def _agency(self, org_id: uuid.UUID) -> Agency:
        """The person's organisation as their emails name it: by its sender name in From when
        it has one, and by name in the text once it has a sender name or the deployment has
        more than one organisation (a one-organisation deployment's emails read as before)."""
        async with self._sessions() as session:
            org = await session.get(Organisation, org_id)
            several = org is not None and await org_count(session) > 1
        if org is None:
            return Agency(slug="")
        named = bool(org.sender_name) or several
        return Agency(slug=org.slug, name=org.name if named else None, sender_name=org.sender_name or None)

    async def _notify(self, kind: str, staff_id: uuid.UUID, email: RenderedEmail) -> None:
        """Send a notice once per request (a retry after it was accepted sends nothing)."""
        clock = AttemptClock()
        async with self._sessions() as session:
            claim = await self._requests.claim(session, kind, staff_id)
            if claim.accepted:
                return
            self._requests.hand_over(claim)
            await session.commit()
        await self._deliver(claim, email, clock)

    async def _deliver(
        self, claim: Claim, email: RenderedEmail, clock: AttemptClock, record: Recorder | None = None
    ) -> datetime:
        """Hand a claimed email (committed as handed over) to the mail server, then record it
        accepted, with what `record` writes, in one transaction; returns when it was sent."""
        claim.secret = ""  # in the email now; the row keeps it sealed until accepted
        await self._send(claim, email)
        sent_at = clock.now()

        async def record_sent() -> None:
            async with self._sessions() as session:
                if record is not None:
                    await record(session, sent_at)
                await self._requests.accepted(session, claim, sent_at)
                await session.commit()

        # The email is out: failing now would make Temporal send it again.
        await record_after_send(record_sent)
        return sent_at

    async def _send(self, claim: Claim, email: RenderedEmail) -> None:
        """Hand a claimed email to the mail server; a permanent refusal must not be retried
        for an hour, so it ends the activity."""
        try:
            await self._requests.send(self._sessions, self._sender, claim, email)
        except PermanentEmailError as exc:
            raise ApplicationError(
                str(exc), non_retryable=True, type=flow_errors.PERMANENT_EMAIL_ERROR
            ) from exc

    async def _audit(self, data: AuditInput) -> None:
        async with self._sessions() as session:
            audit.record(
                session,
                actor=data.actor,
                action=data.action,
                outcome=data.outcome,
                target=data.target,
                ip=data.ip,
                **data.details,
            )
            await session.commit()

    def _unseal(self, sealed: str, context: bytes) -> str:
        """Open a value the web app sealed to the workers' key."""
        try:
            return unseal(self._settings.seal_private_key.get_secret_value(), sealed, context).decode()
        except (DecryptionError, ValueError, UnicodeDecodeError) as exc:
            raise ApplicationError(
                "the sealed value could not be opened", non_retryable=True, type=flow_errors.BAD_SEAL
            ) from exc
