"""Erasing a person's workflows: every run of every flow that was about them, terminated if
it still runs and then deleted from Temporal with its history.

Histories are codec-encrypted, but the key that opens them stays: a history that still
exists still holds what its flow carried (the setup email's masked address in its result,
the Microsoft account's name and address in a link flow). Deleting the runs is what makes
the erasure real. Back-channel logout flows (`logout-<sid>`) are kept: they carry only the
session's `sid` and the apps to tell, and they still owe the apps their logout.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from api.services.reset import reset_workflow_id
from api.services.setup_admin import setup_workflow_id
from workflows.email_change import email_change_workflow_id
from workflows.entra import link_workflow_id
from workflows.leave import leave_workflow_id
from workflows.mfa_enrollment import enrollment_workflow_id

logger = logging.getLogger(__name__)

# One-off notices, one flow each (api/services/account.py, account_password.py).
NOTICE_PREFIXES = ("mfa-changed-", "password-changed-")


def person_workflow_ids(staff_id: uuid.UUID, account_id: uuid.UUID | None) -> list[str]:
    """The ids of the flows that are one per person (each may have had many runs)."""
    ids = [
        setup_workflow_id(staff_id),
        link_workflow_id(str(staff_id)),
        enrollment_workflow_id(str(staff_id)),
        leave_workflow_id(str(staff_id)),
        email_change_workflow_id(str(staff_id)),
    ]
    if account_id is not None:
        ids.append(reset_workflow_id(account_id))
    return ids


def visibility_queries(staff_id: uuid.UUID, workflow_ids: Iterable[str]) -> list[str]:
    """What finds every run about the person: their staff id as a search attribute (the flows
    that set it), each one-per-person id, and the notice flows' id prefixes."""
    queries = [f"SsoStaffId = '{staff_id}'"]
    queries += [f"WorkflowId = '{workflow_id}'" for workflow_id in workflow_ids]
    queries += [f"WorkflowId STARTS_WITH '{prefix}{staff_id}-'" for prefix in NOTICE_PREFIXES]
    return queries


async def person_runs(
    client: Client, staff_id: uuid.UUID, account_id: uuid.UUID | None
) -> set[tuple[str, str]]:
    """(workflow id, run id) of every run about the person that Temporal still holds."""
    workflow_ids = person_workflow_ids(staff_id, account_id)
    runs: set[tuple[str, str]] = set()
    for query in visibility_queries(staff_id, workflow_ids):
        try:
            async for found in client.list_workflows(query):
                runs.add((found.id, found.run_id))
        except RPCError as exc:
            # A server without this visibility query (the time-skipping test server): the
            # latest run of each one-per-person id is still found below.
            logger.warning("listing a person's flows failed (%s): %s", query, exc.message)
    for workflow_id in workflow_ids:
        try:
            described = await client.get_workflow_handle(workflow_id).describe()
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            continue
        runs.add((workflow_id, described.run_id or ""))
    return {run for run in runs if run[0] and run[1]}


async def delete_runs(client: Client, runs: Iterable[tuple[str, str]]) -> int:
    """Deletes each run (a running one is terminated first, by the server): how many. A server
    that cannot delete gets each running flow terminated instead, and a warning."""
    deleted = 0
    for workflow_id, run_id in sorted(runs):
        request = DeleteWorkflowExecutionRequest(
            namespace=client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=workflow_id, run_id=run_id),
        )
        try:
            await client.workflow_service.delete_workflow_execution(request)
            deleted += 1
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                continue
            if exc.status != RPCStatusCode.UNIMPLEMENTED:
                raise
            logger.warning("Temporal cannot delete workflow runs; terminating %s instead", workflow_id)
            await _terminate(client, workflow_id, run_id)
    return deleted


async def _terminate(client: Client, workflow_id: str, run_id: str) -> None:
    try:
        await client.get_workflow_handle(workflow_id, run_id=run_id).terminate(reason="the person was erased")
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:  # finished already
            raise
