"""Reaching Temporal from a request: a clear 503 instead of a hang when it is down."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.service import RPCError

from api.errors import ServiceUnavailable
from core.temporal_client import TemporalGateway

UNAVAILABLE = "We can't complete this right now, please try again in a minute"


async def connected(temporal: TemporalGateway, connect_timeout: float = 5.0) -> Client:
    try:
        return await temporal.client(connect_timeout=connect_timeout)
    except (RPCError, TimeoutError, RuntimeError, OSError) as exc:
        raise ServiceUnavailable(UNAVAILABLE) from exc
