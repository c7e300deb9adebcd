"""Reaching Temporal from a request: a clear 503 instead of a hang when it is down."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.service import RPCError

from core.errors import ServiceUnavailable
from core.settings import Settings
from core.temporal_client import TemporalGateway
from workflows.common import WORKFLOW_TASK_TIMEOUT, EmailRetry

__all__ = ["UNAVAILABLE", "WORKFLOW_TASK_TIMEOUT", "connected", "email_retry"]

EMAIL_DB_MARGIN_SECONDS = 5.0
UNAVAILABLE = "We can't complete this right now, please try again in a minute"


async def connected(temporal: TemporalGateway, connect_timeout: float = 5.0) -> Client:
    try:
        return await temporal.client(connect_timeout=connect_timeout)
    except (RPCError, TimeoutError, RuntimeError, OSError) as exc:
        raise ServiceUnavailable(UNAVAILABLE) from exc


def email_retry(settings: Settings) -> EmailRetry:
    """How every flow started from the web app retries its emails."""
    return EmailRetry(
        initial_interval_seconds=settings.email_retry_initial_interval.total_seconds(),
        maximum_interval_seconds=settings.email_retry_max_interval.total_seconds(),
        window_seconds=settings.email_retry_window.total_seconds(),
        # The sender gives up after email_timeout; the rest is the database around it.
        attempt_timeout_seconds=settings.email_timeout + EMAIL_DB_MARGIN_SECONDS)
