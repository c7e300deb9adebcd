"""Reaching Temporal from a request: a clear 503 instead of a hang when it is down."""

from __future__ import annotations

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

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


async def clear_forged_run(client: Client, workflow_id: str, workflow_type: str, task_queue: str) -> bool:
    """Terminate a run under one of our flow ids that cannot be ours: another workflow type,
    or a task queue no worker of ours polls. A client without the key can start such a run
    (a forged run of our type on our queue fails at once, see core/codec.py), and it would
    sit there running forever and block the person's real flow. True when one was ended."""
    handle = client.get_workflow_handle(workflow_id)
    try:
        found = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    if found.status != WorkflowExecutionStatus.RUNNING or (
        found.workflow_type == workflow_type and found.task_queue == task_queue
    ):
        return False
    await handle.terminate(
        reason=f"not started by this deployment ({found.workflow_type} on task queue {found.task_queue})"
    )
    return True


def email_retry(settings: Settings) -> EmailRetry:
    """How every flow started from the web app retries its emails."""
    return EmailRetry(
        initial_interval_seconds=settings.email_retry_initial_interval.total_seconds(),
        maximum_interval_seconds=settings.email_retry_max_interval.total_seconds(),
        window_seconds=settings.email_retry_window.total_seconds(),
        # The sender gives up after email_timeout; the rest is the database around it.
        attempt_timeout_seconds=settings.email_timeout + EMAIL_DB_MARGIN_SECONDS,
    )
