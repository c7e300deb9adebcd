"""Connecting to Temporal with our data converter: one place for clients and workers."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from typing import NoReturn

from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.service import TLSConfig

from core.codec import data_converter
from core.deployment import unbound_payloads_until
from core.settings import Settings

# Every client of ours names itself so in the events it causes (`sso audit boundary` flags
# the others). The SDK's default is "<pid>@<host>"; we keep that prefix.
IDENTITY_PREFIX = "sso-"


def identity(role: str) -> str:
    return f"{os.getpid()}@{socket.gethostname()} {IDENTITY_PREFIX}{role}"


def tls_config(settings: Settings) -> TLSConfig | bool:
    """TLS when asked for, or when a CA or client certificate is given (mTLS); with an API
    key alone the SDK turns TLS on itself."""
    files = (settings.temporal_tls_ca, settings.temporal_tls_cert, settings.temporal_tls_key)
    if not settings.temporal_tls and not any(files):
        return bool(settings.temporal_api_key)
    ca, cert, key = (path.read_bytes() if path is not None else None for path in files)
    return TLSConfig(server_root_ca_cert=ca, client_cert=cert, client_private_key=key)


async def connect(settings: Settings, runtime: Runtime | None = None, role: str = "web") -> Client:
    api_key = settings.temporal_api_key
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=data_converter(settings, await unbound_payloads_until(settings)),
        runtime=runtime,
        tls=tls_config(settings),
        api_key=api_key.get_secret_value() if api_key is not None else None,
        identity=identity(role),
    )


class TemporalGateway:
    """Lazily connected client: the web app starts, and reports 503, while Temporal is down."""

    def __init__(self, settings: Settings, client: Client | None = None, role: str = "web") -> None:
        self._settings = settings
        self._role = role
        self._client = client
        self._lock = asyncio.Lock()

    async def client(self, connect_timeout: float = 5.0) -> Client:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                async with asyncio.timeout(connect_timeout):
                    self._client = await connect(self._settings, role=self._role)
        return self._client


def exit_after_temporal(code: int = 0) -> NoReturn:
    """Ends a process that has used a Temporal client, once its own clean-up is done, without
    the interpreter's teardown: the SDK's native threads can still call into Python while it
    is torn down, which aborts with "Fatal Python error: PyGILState_Release"
    (temporalio/sdk-python#300). Output is flushed first; nothing else is left to run."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
