"""What every worker activity class that handles secrets shares."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from temporalio.exceptions import ApplicationError

from activities.email_delivery import EmailSender, PermanentEmailError
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

    def __init__(self, settings: Settings, sessions: SessionFactory, sender: EmailSender,
                 keyring: Keyring) -> None:
        self._settings = settings
        self._sessions = sessions
        self._sender = sender
        self._keyring = keyring
        self._hasher = Hasher(settings.argon2_time_cost, settings.argon2_memory_kib,
                              settings.argon2_parallelism)

    async def _hash(self, password: str) -> str:
        if SecretActivities._hash_pool is None:
            SecretActivities._hash_pool = hashing_pool()
        return await asyncio.get_running_loop().run_in_executor(
            SecretActivities._hash_pool, self._hasher.hash, password)

    async def _notify(self, email: RenderedEmail) -> None:
        """Send a notice; a permanent refusal must not be retried for an hour."""
        try:
            await self._sender.send(email)
        except PermanentEmailError as exc:
            raise ApplicationError(str(exc), non_retryable=True,
                                   type="PermanentEmailError") from exc

    def _unseal(self, sealed: str, context: bytes) -> str:
        """Open a value the web app sealed to the workers' key."""
        try:
            return unseal(self._settings.seal_private_key.get_secret_value(), sealed,
                          context).decode()
        except (DecryptionError, ValueError, UnicodeDecodeError) as exc:
            raise ApplicationError("the sealed value could not be opened", non_retryable=True,
                                   type="BadSeal") from exc
