"""The web app's one way to a flow: start it, step it (an Update, or update-with-start), read
it (a Query), nudge it (a Signal), end it. Workflows and handlers are named by reference (their
methods), never by string, so mypy sees a rename. Each call is bounded by one timeout, and its
failures come back as what a page can say: refused, in doubt, ended or unavailable."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypedDict

from temporalio import workflow
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from api.services.temporal import UNAVAILABLE, WORKFLOW_TASK_TIMEOUT, clear_forged_run, connected
from core.errors import ServiceUnavailable
from core.temporal_client import TemporalGateway

# A workflow's run method, and its update, query and signal handlers, as passed by reference.
Run = Callable[..., Awaitable[Any]]
Update = workflow.UpdateMethodMultiParam[..., Any]
Handler = Callable[..., Any]


class StepRefused(Exception):
    """The flow would not take this step now; the message is for the person, the kind is the
    ApplicationError's type (core/flow_errors.py)."""

    step_outcome = "refused"

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind


class StepFailed(ServiceUnavailable):
    """The update failed with something other than a refusal (the person sees "unavailable");
    `cause_message` is what the failure said, if anything."""

    def __init__(self, cause_message: str | None) -> None:
        super().__init__(UNAVAILABLE)
        self.cause_message = cause_message


class StepInDoubt(ServiceUnavailable):
    """The step reached Temporal but no answer came in time (the worker is down or slow): it
    may still run once the worker is back, exactly once (its update id)."""


class FlowEnded(Exception):
    """No such flow is running (it finished, or never was)."""

    step_outcome = "ended"


def workflow_type(run: Run) -> str:
    """The registered name of the workflow whose run method this is (its `name=`)."""
    return workflow._Definition.must_from_run_fn(run).name or ""


def update_name(update: Update) -> str:
    """The registered name of an update handler (its `name=`): update ids and metrics use it."""
    return update._defn.name or ""


class StartOptions(TypedDict):
    id: str
    task_queue: str
    task_timeout: timedelta
    id_conflict_policy: WorkflowIDConflictPolicy
    search_attributes: TypedSearchAttributes
    static_summary: str


@dataclass
class FlowClient:
    temporal: TemporalGateway
    timeout: float  # each call, connecting aside
    task_queue: str
    connect_timeout: float | None = None  # defaults to `timeout`

    async def connect(self) -> Client:
        return await connected(self.temporal, self.connect_timeout or self.timeout)

    async def flow(self, run: Run, workflow_id: str, run_id: str | None = None) -> Flow:
        """A running flow of the workflow `run` belongs to (connects first: unavailable when
        Temporal is down)."""
        client = await self.connect()
        return Flow(client.get_workflow_handle_for(run, workflow_id, run_id=run_id), self.timeout)

    async def start(
        self,
        run: Run,
        *args: object,
        id: str,
        search_attributes: list[SearchAttributePair[Any]],
        static_summary: str,
        static_details: str | None = None,
        conflict: WorkflowIDConflictPolicy = WorkflowIDConflictPolicy.FAIL,
        once: bool = False,
    ) -> None:
        """Start a flow; by default one that must not be running yet (WorkflowAlreadyStartedError
        when it is), or as `conflict` says (with `once`, also refused when a flow of that id
        ever ran: an email sent once per id)."""
        client = await self.connect()
        reuse = WorkflowIDReusePolicy.REJECT_DUPLICATE if once else WorkflowIDReusePolicy.ALLOW_DUPLICATE
        try:
            async with asyncio.timeout(self.timeout):
                await client.start_workflow(
                    run,
                    args=list(args),
                    **self._started(id, conflict, search_attributes, static_summary),
                    static_details=static_details,
                    id_reuse_policy=reuse,
                )
        except (RPCError, TimeoutError) as exc:
            raise ServiceUnavailable(UNAVAILABLE) from exc

    def _started(
        self,
        id: str,
        conflict: WorkflowIDConflictPolicy,
        search_attributes: list[SearchAttributePair[Any]],
        static_summary: str,
    ) -> StartOptions:
        """How every flow starts, however it is started: on this client's task queue, with its
        step and staff id searchable and a summary the Temporal UI shows."""
        return StartOptions(
            id=id,
            task_queue=self.task_queue,
            task_timeout=WORKFLOW_TASK_TIMEOUT,
            id_conflict_policy=conflict,
            search_attributes=TypedSearchAttributes(search_attributes),
            static_summary=static_summary,
        )

    async def update_with_start(
        self,
        update: Update,
        arg: object,
        *,
        run: Run,
        start_arg: object,
        id: str,
        search_attributes: list[SearchAttributePair[Any]],
        static_summary: str,
    ) -> Any:
        """Step the running flow under `id`, starting it first when none runs. A run under
        that id that cannot be ours is ended first (see `clear_forged_run`)."""
        client = await self.connect()
        start: WithStartWorkflowOperation[Any, Any] = WithStartWorkflowOperation(
            run,
            start_arg,
            **self._started(id, WorkflowIDConflictPolicy.USE_EXISTING, search_attributes, static_summary),
        )
        async with _step_errors():
            async with asyncio.timeout(self.timeout):
                await clear_forged_run(client, id, workflow_type(run), self.task_queue)
                return await client.execute_update_with_start_workflow(
                    update, arg, start_workflow_operation=start
                )

    async def end(self, workflow_id: str, run: Run, update: Update, arg: object) -> Any | None:
        """Ask the running flow to end and wait until it has: its update's answer, or None
        when none is running."""
        client = await self.connect()
        handle = client.get_workflow_handle_for(run, workflow_id)
        try:
            async with asyncio.timeout(self.timeout):
                await clear_forged_run(client, workflow_id, workflow_type(run), self.task_queue)
                try:
                    outcome = await handle.execute_update(update, arg)
                except WorkflowUpdateFailedError:
                    # Already ending on its own (expiry or another admin): wait for it.
                    outcome = await handle.result()
                await handle.result()
                return outcome
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return None
            raise ServiceUnavailable(UNAVAILABLE) from exc
        except (WorkflowFailureError, TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError) as exc:
            raise ServiceUnavailable(UNAVAILABLE) from exc

    async def round_trip(self, workflow_id: str) -> None:
        """The one round trip to Temporal a step takes, where no flow is expected (the stand-in
        for an unknown address must take as long as a real step)."""
        client = await self.connect()
        try:
            async with asyncio.timeout(self.timeout):
                await client.get_workflow_handle(workflow_id).describe()
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise ServiceUnavailable(UNAVAILABLE) from exc
        except TimeoutError as exc:
            raise ServiceUnavailable(UNAVAILABLE) from exc


@dataclass
class Flow:
    """One running flow, reached through a connected client."""

    handle: WorkflowHandle[Any, Any]
    timeout: float

    async def update(self, update: Update, arg: object, *, id: str | None = None) -> Any:
        """Run a page step. `id` makes a repeated submission the same update (run once)."""
        async with _step_errors():
            async with asyncio.timeout(self.timeout):
                return await self.handle.execute_update(update, arg, id=id)

    async def query(self, query: Handler, *args: object) -> Any:
        try:
            async with asyncio.timeout(self.timeout):
                return await self.handle.query(query, *args)
        except RPCError as exc:
            raise _rpc_error(exc) from exc
        except (TimeoutError, WorkflowQueryFailedError) as exc:
            raise ServiceUnavailable(UNAVAILABLE) from exc

    async def signal(self, signal: Handler, arg: object) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await self.handle.signal(signal, arg)
        except RPCError as exc:
            raise _rpc_error(exc) from exc
        except TimeoutError as exc:
            raise ServiceUnavailable(UNAVAILABLE) from exc

    async def result(self) -> Any:
        """The finished flow's result (raises as the SDK does when it failed or is out of
        reach)."""
        async with asyncio.timeout(self.timeout):
            return await self.handle.result()


class _StepErrors:
    """How an update's failure reads: refused (the flow said no), in doubt (sent, no answer in
    time), ended (no such flow) or unavailable."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, _tb: object
    ) -> bool:
        if exc is None:
            return False
        if isinstance(exc, WorkflowUpdateFailedError):
            cause = exc.cause
            if isinstance(cause, ApplicationError):
                raise StepRefused(cause.message, cause.type or "") from exc
            raise StepFailed(getattr(cause, "message", None)) from exc
        if isinstance(exc, RPCError):
            if exc.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):
                raise StepInDoubt(UNAVAILABLE) from exc
            raise _rpc_error(exc) from exc
        if isinstance(exc, (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError)):
            raise StepInDoubt(UNAVAILABLE) from exc
        return False


def _step_errors() -> _StepErrors:
    return _StepErrors()


def _rpc_error(exc: RPCError) -> Exception:
    if exc.status == RPCStatusCode.NOT_FOUND:
        return FlowEnded()
    return ServiceUnavailable(UNAVAILABLE)
