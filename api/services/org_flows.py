"""Starting an organisation's durable flows (its suspension, its erasure) from a request."""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.service import RPCError

from api.services.flows import workflow_type
from api.services.temporal import WORKFLOW_TASK_TIMEOUT, clear_forged_run, connected
from core.errors import ServiceUnavailable
from core.search_attributes import SSO_STEP, flow_attributes
from core.settings import Settings
from core.temporal_client import TemporalGateway

START_TIMEOUT = 10.0


async def start_org_flow(
    temporal: TemporalGateway,
    settings: Settings,
    *,
    run: Any,
    arg: object,
    workflow_id: str,
    org_id: object,
    summary: str,
    replace_running: bool,
    unavailable: str,
) -> None:
    """Starts the flow under `workflow_id`: a closed run's id is used again (a second
    suspension after a resume runs again); a running one is kept, or replaced when
    `replace_running` (its work was for an earlier state). `unavailable`: the 503's message."""
    client = await connected(temporal, 5.0)
    try:
        async with asyncio.timeout(START_TIMEOUT):
            await clear_forged_run(client, workflow_id, workflow_type(run), settings.task_queue)
            await client.start_workflow(
                run,
                arg,
                id=workflow_id,
                task_queue=settings.task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                id_conflict_policy=(
                    WorkflowIDConflictPolicy.TERMINATE_EXISTING
                    if replace_running
                    else WorkflowIDConflictPolicy.USE_EXISTING
                ),
                task_timeout=WORKFLOW_TASK_TIMEOUT,
                search_attributes=TypedSearchAttributes(
                    flow_attributes(SearchAttributePair(SSO_STEP, "running"), org_id=org_id)
                ),
                static_summary=summary,
            )
    except (RPCError, TimeoutError) as exc:
        raise ServiceUnavailable(unavailable) from exc
