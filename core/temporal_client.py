"""Connecting to Temporal with our data converter: one place for clients and workers."""

from __future__ import annotations

import asyncio

from temporalio.client import Client
from temporalio.runtime import Runtime

from core.codec import data_converter
from core.settings import Settings


async def connect(settings: Settings, runtime: Runtime | None = None) -> Client:
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=data_converter(settings),
        runtime=runtime,
    )


class TemporalGateway:
    """Lazily connected client: the web app starts, and reports 503, while Temporal is down."""

    def __init__(self, settings: Settings, client: Client | None = None) -> None:
        self._settings = settings
        self._client = client
        self._lock = asyncio.Lock()

    async def client(self, connect_timeout: float = 5.0) -> Client:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                async with asyncio.timeout(connect_timeout):
                    self._client = await connect(self._settings)
        return self._client
