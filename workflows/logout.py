"""Back-Channel Logout 1.0 fan-out: one flow per ended session (`session-logout-<sid>`)
telling every app that got tokens in it, each retried with back-off for up to a day; and one
per session an app signed in to when the person removes its access, telling that app alone
(`session-logout-<sid>.<removal id>`: the session goes on, its own end comes later)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import ActivityError

from core import flow_errors

with workflow.unsafe.imports_passed_through():
    from activities.inputs import LogoutFailedInput, SendLogoutInput
    from activities.logout import LogoutActivities
    from core.oidc.backchannel import SessionLogoutInput
    from core.search_attributes import flow_attributes
    from workflows.common import WORKFLOW_TASK_TIMEOUT, required

DELIVERY_WINDOW = timedelta(hours=24)
DELIVERY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(hours=1),
    non_retryable_error_types=[flow_errors.LOGOUT_URI_REFUSED],
)
ATTEMPT_TIMEOUT = timedelta(seconds=30)
RECORD_RETRY = RetryPolicy(maximum_interval=timedelta(minutes=1))


def logout_workflow_id(key: str) -> str:
    """A session's end: its sid; an app's access removed: SessionLogoutInput.key."""
    return f"session-logout-{key}"


def logout_summary(data: SessionLogoutInput) -> str:
    if data.removal:
        return "Back-channel logout to 1 app (its access removed)"
    return f"Back-channel logout to {len(data.client_ids)} app(s)"


def logout_search_attributes(data: SessionLogoutInput) -> TypedSearchAttributes:
    return TypedSearchAttributes(flow_attributes(org_id=data.org_id, staff_id=data.staff_id))


def logout_start_options(data: SessionLogoutInput, task_queue: str) -> dict[str, Any]:
    """How a client starts a session's logout (the web app after its commit, the worker's
    sweeper): the session's one id, never reused, so a second start of a logout already
    started, or already done, is refused (WorkflowAlreadyStartedError) and no app is told
    twice."""
    return {
        "id": logout_workflow_id(data.key),
        "task_queue": task_queue,
        "task_timeout": WORKFLOW_TASK_TIMEOUT,
        "id_reuse_policy": WorkflowIDReusePolicy.REJECT_DUPLICATE,
        "search_attributes": logout_search_attributes(data),
        "static_summary": logout_summary(data),
    }


@workflow.defn(name="SessionLogout")
class SessionLogoutWorkflow:
    def __init__(self) -> None:
        self.deliveries: dict[str, str] = {}

    @workflow.run
    async def run(self, data: SessionLogoutInput | None = None) -> dict[str, str]:
        data = required(data, "This start")
        self.deliveries = dict.fromkeys(data.client_ids, "sending")
        self._show()
        await asyncio.gather(*(self._deliver(data, client_id) for client_id in data.client_ids))
        return self.deliveries

    async def _deliver(self, data: SessionLogoutInput, client_id: str) -> None:
        send = SendLogoutInput(client_id, data.staff_id, data.sid, str(workflow.uuid4()))
        since = workflow.now()
        try:
            self.deliveries[client_id] = await workflow.execute_activity_method(
                LogoutActivities.send_logout_token,
                send,
                start_to_close_timeout=ATTEMPT_TIMEOUT,
                schedule_to_close_timeout=DELIVERY_WINDOW,
                retry_policy=DELIVERY_RETRY,
                summary=f"Logout token to {client_id}",
            )
        except ActivityError:  # refused, or still failing after a day
            self.deliveries[client_id] = "failed"
            self._show()
            # For the admin pages: nobody watches this flow, an app that never answers must
            # be seen somewhere.
            await workflow.execute_activity_method(
                LogoutActivities.record_logout_failure,
                LogoutFailedInput(client_id, since),
                start_to_close_timeout=ATTEMPT_TIMEOUT,
                retry_policy=RECORD_RETRY,
                summary=f"Report {client_id} on the admin pages",
            )
            return
        self._show()

    @workflow.query
    def progress(self) -> dict[str, str]:
        return self.deliveries

    def _show(self) -> None:
        workflow.set_current_details(
            "\n".join(f"{client_id}: {state}" for client_id, state in sorted(self.deliveries.items()))
        )
