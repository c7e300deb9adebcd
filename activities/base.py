"""What every worker activity class that handles secrets shares."""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor

from temporalio.exceptions import ApplicationError

from activities.email_delivery import EmailSender, PermanentEmailError, record_after_send
from activities.inputs import AuditInput
from activities.send_requests import AttemptClock, Claim, SendRequests
from core import audit, flow_errors
from core.crypto import DecryptionError, Keyring
from core.db import SessionFactory
from core.passwords import Hasher, hashing_pool
from core.sealing import unseal
from core.settings import Settings
from core.templating import RenderedEmail


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

    async def _notify(self, kind: str, staff_id: uuid.UUID, email: RenderedEmail) -> None:
        """Send a notice once per request (a retry after it was accepted sends nothing); a
        permanent refusal must not be retried for an hour."""
        clock = AttemptClock()
        async with self._sessions() as session:
            claim = await self._requests.claim(session, kind, staff_id)
            if claim.accepted:
                return
            self._requests.hand_over(claim)
            await session.commit()
        await self._send(claim, email)
        sent_at = clock.now()

        async def record_sent() -> None:
            async with self._sessions() as session:
                await self._requests.accepted(session, claim, sent_at)
                await session.commit()

        await record_after_send(record_sent)

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
