"""docs/security.md §32: Temporal is a boundary the worker does not trust.

Anyone who reaches the Temporal frontend can start, signal, update and query. Here a client
without the key (the SDK's default converter) and one with a wrong key try every start,
every update and every signal of every workflow (enumerated from the workflow classes, so a
new handler is covered without touching this file), each with a plausible plaintext payload
and with no payload at all. Nothing may change: no activity runs (every database row and
audit event the worker writes is written by an activity; the stand-ins record each call), no
update is accepted, the flow's state and history stay as they were, no workflow task fails
(a failing task would wedge the flow), and a run such a client starts fails at once without
blocking the real flow under the same id. Runs on a real dev server (update-with-start).
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any
from unittest.mock import AsyncMock

import pytest
from temporalio import workflow
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.common import RawValue, WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from core.codec import data_converter
from core.sealing import password_context, seal
from tests.support.config import TEST_SEAL_PUBLIC_KEY, make_settings
from tests.support.temporal_stand_ins import Stand
from workflows.common import EmailRetry, StepRequest, StepResult
from workflows.entra import AWAITING_CONFIRMATION, EntraLinkInput, EntraLinkWorkflow, LinkOutcome, LinkRequest
from workflows.notices import PasswordChangedNoticeWorkflow
from workflows.reset import CodeRequest, PasswordResetInput, PasswordResetWorkflow
from workflows.setup import (
    ConfirmCodeRequest,
    EndRequest,
    SetPasswordRequest,
    SetupOutcome,
    SsoSetupInput,
    SsoSetupWorkflow,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

WORKFLOWS = [SsoSetupWorkflow, PasswordResetWorkflow, PasswordChangedNoticeWorkflow, EntraLinkWorkflow]
DEFINITIONS = [workflow._Definition.from_class(cls) for cls in WORKFLOWS]
HANDLERS = sorted(
    (d.name, kind, name)
    for d in DEFINITIONS
    if d.name
    for kind, names in (("update", d.updates), ("signal", d.signals))
    for name in names
    if name
)
OTHER_KEY = base64.urlsafe_b64encode(b"w" * 32).decode()
IP = "198.51.100.66"
FORGED_ACTOR = "admin-key:forged"
# Where the web app's own call of each handler would be taken: the flow is put there first,
# so a refusal is the key's doing, not the step's. A new handler fails the test below until
# it is added here.
WHERE = {
    ("SsoSetup", "set_password"): "email_sent",
    ("SsoSetup", "link_opened"): "email_sent",
    ("SsoSetup", "entra_linked"): "email_sent",
    ("SsoSetup", "supersede"): "email_sent",
    ("SsoSetup", "cancel"): "code_sent",
    ("SsoSetup", "confirm_code"): "code_sent",
    ("SsoSetup", "resend_code"): "code_sent",
    ("SsoSetup", "skip_mfa"): "mfa_pending",
    ("SsoSetup", "complete_mfa"): "mfa_pending",
    ("PasswordReset", "request_code"): "code_sent",
    ("PasswordReset", "reset_password"): "code_sent",
    ("EntraLink", "link"): "waiting",
    ("EntraLink", "confirm_link"): "confirming",
}
# What the audit's attacker sent: the real requests' fields, as plain JSON.
FORGED: dict[str, Any] = {
    "set_password": {
        "sealed_password": "sealed1.x",
        "link_id": str(uuid.uuid4()),
        "session_hash": "h",
        "ip": IP,
    },
    "confirm_code": {"code_digest": "d", "ip": IP},
    "resend_code": {"ip": IP},
    "skip_mfa": {"ip": IP},
    "link_opened": {"ip": IP},
    "complete_mfa": {"sealed_code": "sealed1.x", "ip": IP},
    "cancel": {"actor": FORGED_ACTOR, "reason": "forged"},
    "supersede": {"actor": FORGED_ACTOR, "reason": "forged"},
    "entra_linked": FORGED_ACTOR,
    "request_code": {"ip": IP},
    "reset_password": {"code_digest": "d", "sealed_password": "sealed1.x", "ip": IP},
    "link": {"sealed_grant": "sealed1.x", "via": "session", "actor": FORGED_ACTOR, "ip": IP},
    "confirm_link": {"pending_id": "forged", "actor": FORGED_ACTOR, "ip": IP},
}
FORGED_START: dict[str, list[Any]] = {
    "SsoSetup": [
        {
            "setup_id": str(uuid.uuid4()),
            "staff_id": str(uuid.uuid4()),
            "link_ttl_seconds": 900,
            "requested_by": FORGED_ACTOR,
            "email_retry": {},
        }
    ],
    "PasswordReset": [{"account_id": str(uuid.uuid4()), "staff_id": str(uuid.uuid4()), "email_retry": {}}],
    "PasswordChangedNotice": [{"staff_id": str(uuid.uuid4()), "changed_at": "2026-01-01T00:00:00Z"}, {}],
    "EntraLink": [{"staff_id": str(uuid.uuid4()), "email_retry": {}}],
}
# What a refused attempt may leave in history: the signal itself, the workflow tasks that
# looked at it, and the marker of the patch that ignores a payload-less link_opened (with
# the TemporalChangeVersion the SDK upserts for it).
HARMLESS = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
    EventType.EVENT_TYPE_MARKER_RECORDED,
}

WORKFLOW_TASK = {
    EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED,
}


class World:
    def __init__(
        self, env: WorkflowEnvironment, queue: str, stand: Stand, intruders: dict[str, Client]
    ) -> None:
        self.client = env.client
        self.queue = queue
        self.stand = stand
        self.intruders = intruders

    async def setup(self, step: str) -> WorkflowHandle[Any, Any]:
        wid = f"sso-setup-{uuid.uuid4()}"
        handle = await self.client.start_workflow(
            "SsoSetup",
            SsoSetupInput(
                setup_id=str(uuid.uuid4()),
                staff_id=str(uuid.uuid4()),
                link_ttl_seconds=900,
                requested_by="admin-key:a",
                email_retry=EmailRetry(),
            ),
            id=wid,
            task_queue=self.queue,
        )
        await self.until(handle, "email_sent")
        if step == "email_sent":
            return handle
        await handle.execute_update(
            "set_password",
            SetPasswordRequest(
                sealed_password=seal(
                    TEST_SEAL_PUBLIC_KEY, b"Correct-Horse-Battery-Staple-42", password_context(wid)
                ),
                link_id=str(uuid.uuid4()),
                session_hash="h",
            ),
            result_type=StepResult,
        )
        await self.until(handle, "code_sent", delivered=True)
        if step == "code_sent":
            return handle
        done = await handle.execute_update(
            "confirm_code", ConfirmCodeRequest(code_digest=f"digest-{wid}"), result_type=StepResult
        )
        assert done.ok and step == "mfa_pending"
        return handle

    async def reset(self) -> WorkflowHandle[Any, Any]:
        wid = f"password-reset-{uuid.uuid4()}"
        await self.reset_request(wid)
        handle = self.client.get_workflow_handle(wid)
        await self.until(handle, "code_sent", delivered=True)
        return handle

    async def reset_request(self, wid: str) -> StepResult:
        """As api/services/reset.py asks: update-with-start, USE_EXISTING."""
        start: WithStartWorkflowOperation[Any, Any] = WithStartWorkflowOperation(
            "PasswordReset",
            PasswordResetInput(
                account_id=wid.removeprefix("password-reset-"),
                staff_id=str(uuid.uuid4()),
                email_retry=EmailRetry(),
            ),
            id=wid,
            task_queue=self.queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        result: StepResult = await self.client.execute_update_with_start_workflow(
            "request_code", CodeRequest(ip=IP), start_workflow_operation=start, result_type=StepResult
        )
        return result

    async def link(self, staff: str, hold: bool = False) -> LinkOutcome:
        """As api/services/entra.py asks: update-with-start, USE_EXISTING."""
        wid = f"entra-link-{staff}"
        start: WithStartWorkflowOperation[Any, Any] = WithStartWorkflowOperation(
            "EntraLink",
            EntraLinkInput(staff_id=staff, email_retry=EmailRetry()),
            id=wid,
            task_queue=self.queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        outcome: LinkOutcome = await self.client.execute_update_with_start_workflow(
            "link",
            LinkRequest(
                sealed_grant="sealed1.grant", via="session", actor=f"staff:{staff}", ip=IP, hold=hold
            ),
            start_workflow_operation=start,
            result_type=LinkOutcome,
        )
        return outcome

    async def entra_waiting(self) -> WorkflowHandle[Any, Any]:
        return await self.client.start_workflow(
            "EntraLink",
            EntraLinkInput(staff_id=str(uuid.uuid4()), email_retry=EmailRetry()),
            id=f"entra-link-{uuid.uuid4()}",
            task_queue=self.queue,
        )

    async def entra_confirming(self) -> WorkflowHandle[Any, Any]:
        """A verified account held for the person's Link: what a forged confirm would take."""
        staff = str(uuid.uuid4())
        outcome = await self.link(staff, hold=True)
        assert outcome.reason == AWAITING_CONFIRMATION and outcome.pending_id, outcome
        return self.client.get_workflow_handle(f"entra-link-{staff}")

    async def at(self, workflow_type: str, step: str) -> WorkflowHandle[Any, Any]:
        if workflow_type == "SsoSetup":
            return await self.setup(step)
        if workflow_type == "PasswordReset":
            return await self.reset()
        assert workflow_type == "EntraLink"
        return await (self.entra_confirming() if step == "confirming" else self.entra_waiting())

    async def until(self, handle: WorkflowHandle[Any, Any], step: str, delivered: bool = False) -> None:
        async with asyncio.timeout(30):
            while True:
                progress = await handle.query("progress")
                if progress["step"] == step and (not delivered or progress["code_delivery"] == "sent"):
                    return
                await asyncio.sleep(0.05)

    async def snapshot(self, handle: WorkflowHandle[Any, Any]) -> tuple[Any, int, int]:
        """(progress, history length, activity calls) once the flow is at rest."""
        await settled(handle)
        progress = None
        if (await handle.describe()).workflow_type != "EntraLink":
            progress = await handle.query("progress")
        return progress, len((await handle.fetch_history()).events), len(self.stand.calls)

    async def unchanged(self, handle: WorkflowHandle[Any, Any], before: tuple[Any, int, int]) -> None:
        await settled(handle)
        progress, length, calls = before
        events = (await handle.fetch_history()).events
        added = {
            EventType.Name(e.event_type)
            for e in events[length:]
            if e.event_type not in HARMLESS and not _patch_version(e)
        }
        assert not added, f"a refused attempt changed the flow: {added}"
        assert self.stand.calls[calls:] == [], "an activity ran"
        if progress is not None:
            assert await handle.query("progress") == progress
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
        # What the refusals left in history (the patch markers of ignored link_opened
        # signals included) replays deterministically.
        await Replayer(
            workflows=WORKFLOWS, data_converter=self.client.data_converter, namespace=self.client.namespace
        ).replay_workflow(await handle.fetch_history())


def _patch_version(event: HistoryEvent) -> bool:
    """The SDK records a patch's id in TemporalChangeVersion along with its marker."""
    return event.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES and set(
        event.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
    ) == {"TemporalChangeVersion"}


async def settled(handle: WorkflowHandle[Any, Any]) -> None:
    """Wait until every signal sent so far has been through a completed workflow task, and
    check that no workflow task failed (which would wedge the flow)."""
    async with asyncio.timeout(30):
        while True:
            events = (await handle.fetch_history()).events
            failed = [e for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]
            assert not failed, failed[0].workflow_task_failed_event_attributes.failure.message
            tasks = [e.event_type for e in events if e.event_type in WORKFLOW_TASK]
            if tasks[-1] == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED or (
                (await handle.describe()).status != WorkflowExecutionStatus.RUNNING
            ):
                return
            await asyncio.sleep(0.05)


@asynccontextmanager
async def world(env: WorkflowEnvironment) -> AsyncIterator[World]:
    target = env.client.service_client.config.target_host
    intruders = {
        "keyless": await Client.connect(target, namespace=env.client.namespace),
        "wrong key": await Client.connect(
            target,
            namespace=env.client.namespace,
            data_converter=data_converter(make_settings(encryption_keys=[OTHER_KEY])),
        ),
    }
    stand = Stand()
    queue = f"boundary-{uuid.uuid4()}"
    async with Worker(env.client, task_queue=queue, activities=stand.all(), workflows=WORKFLOWS):
        yield World(env, queue, stand, intruders)


async def refused(call: Any) -> None:
    """The intruder's call fails (it may also fail to decode our answer: that is no proof,
    the flow's own state is checked afterwards)."""
    with pytest.raises(Exception):  # noqa: B017
        async with asyncio.timeout(20):
            await call


@pytest.mark.filterwarnings("ignore::pytest.PytestWarning")
def test_every_handler_is_placed() -> None:
    assert {(t, n) for t, _, n in HANDLERS} == set(WHERE)
    assert set(FORGED) == {n for _, _, n in HANDLERS}
    assert set(FORGED_START) == {d.name for d in DEFINITIONS}


@pytest.mark.parametrize(
    ("workflow_type", "kind", "name"), HANDLERS, ids=[f"{t}.{n}" for t, _, n in HANDLERS]
)
async def test_no_handler_takes_input_from_a_client_without_the_key(
    temporal_dev_env: WorkflowEnvironment, workflow_type: str, kind: str, name: str
) -> None:
    async with world(temporal_dev_env) as w:
        flow = await w.at(workflow_type, WHERE[(workflow_type, name)])
        before = await w.snapshot(flow)
        for intruder in w.intruders.values():
            handle = intruder.get_workflow_handle(flow.id)
            for args in ([FORGED[name]], []):
                if kind == "update":
                    await refused(handle.execute_update(name, *args))
                else:
                    await handle.signal(name, *args)
        await w.unchanged(flow, before)


@pytest.mark.parametrize("workflow_type", sorted(FORGED_START))
async def test_a_start_without_the_key_fails_at_once_and_blocks_nothing(
    temporal_dev_env: WorkflowEnvironment, workflow_type: str
) -> None:
    async with world(temporal_dev_env) as w:
        for intruder in w.intruders.values():
            for args in (FORGED_START[workflow_type], []):
                wid = f"forged-{uuid.uuid4()}"
                await intruder.start_workflow(workflow_type, args=args, id=wid, task_queue=w.queue)
                handle = w.client.get_workflow_handle(wid)
                with pytest.raises(WorkflowFailureError) as failed:
                    async with asyncio.timeout(20):
                        await handle.result()
                assert isinstance(failed.value.cause, ApplicationError)
                assert failed.value.cause.type == "Unauthenticated"
                await settled(handle)
        assert w.stand.calls == []


async def test_a_forged_run_under_a_persons_flow_id_never_blocks_the_real_flow(
    temporal_dev_env: WorkflowEnvironment,
) -> None:
    """The ids the web app uses, the policies it uses: the forged run has failed by the time
    the real request comes, and the real one starts afresh."""
    async with world(temporal_dev_env) as w:
        staff = str(uuid.uuid4())
        reset_id = f"password-reset-{uuid.uuid4()}"
        for intruder in w.intruders.values():
            for wid, kind in (
                (f"entra-link-{staff}", "EntraLink"),
                (reset_id, "PasswordReset"),
                (f"sso-setup-{staff}", "SsoSetup"),
            ):
                await intruder.start_workflow(kind, args=FORGED_START[kind], id=wid, task_queue=w.queue)
                with pytest.raises(WorkflowFailureError):
                    async with asyncio.timeout(20):
                        await w.client.get_workflow_handle(wid).result()
        assert w.stand.calls == []
        assert (await w.link(staff)).ok
        assert (await w.reset_request(reset_id)).ok
        setup = await w.client.start_workflow(
            "SsoSetup",
            SsoSetupInput(
                setup_id=str(uuid.uuid4()),
                staff_id=staff,
                link_ttl_seconds=900,
                requested_by="admin-key:a",
                email_retry=EmailRetry(),
            ),
            id=f"sso-setup-{staff}",
            task_queue=w.queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        )
        await w.until(setup, "email_sent")


# -- the audit's attacks, by name --------------------------------------------------------


async def test_keyless_link_update_with_start_cannot_link_an_administrator(
    temporal_dev_env: WorkflowEnvironment,
) -> None:
    """The audit linked its own Microsoft account to `entra-link-<admin id>` with a plain
    client (update-with-start) and then signed in as the administrator."""
    async with world(temporal_dev_env) as w:
        admin = str(uuid.uuid4())
        wid = f"entra-link-{admin}"
        start: WithStartWorkflowOperation[Any, Any] = WithStartWorkflowOperation(
            "EntraLink",
            {"staff_id": admin, "email_retry": {}},
            id=wid,
            task_queue=w.queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        await refused(
            w.intruders["keyless"].execute_update_with_start_workflow(
                "link",
                {
                    "sealed_grant": "sealed1.attackers-own-grant",
                    "via": "session",
                    "actor": f"staff:{admin}",
                    "ip": IP,
                },
                start_workflow_operation=start,
            )
        )
        assert [name for name, _ in w.stand.calls] == []  # nothing verified, nothing linked
        assert (await w.client.get_workflow_handle(wid).describe()).status == WorkflowExecutionStatus.FAILED


async def test_keyless_cancel_cannot_end_a_setup_or_name_the_actor(
    temporal_dev_env: WorkflowEnvironment,
) -> None:
    """The audit cancelled a setup with a plain client; the audit log showed its actor."""
    async with world(temporal_dev_env) as w:
        flow = await w.setup("code_sent")
        before = await w.snapshot(flow)
        await refused(
            w.intruders["keyless"]
            .get_workflow_handle(flow.id)
            .execute_update("cancel", {"actor": FORGED_ACTOR, "reason": "cancelled by an administrator"})
        )
        await w.unchanged(flow, before)
        assert not any(name == "close_setup" for name, _ in w.stand.calls)
        # The web app's own cancel still works, with the actor it verified.
        outcome = await flow.execute_update("cancel", EndRequest("admin-key:real"), result_type=SetupOutcome)
        assert outcome.state == "cancelled"
        closed = [data for name, data in w.stand.calls if name == "close_setup"]
        assert [c.actor for c in closed] == ["admin-key:real"]  # type: ignore[attr-defined]


async def test_keyless_skip_mfa_without_payload_leaves_the_flow_at_mfa(
    temporal_dev_env: WorkflowEnvironment,
) -> None:
    """The audit moved a flow from mfa_pending to active with a payload-less `skip_mfa`."""
    async with world(temporal_dev_env) as w:
        flow = await w.setup("mfa_pending")
        before = await w.snapshot(flow)
        await refused(w.intruders["keyless"].get_workflow_handle(flow.id).execute_update("skip_mfa"))
        await w.unchanged(flow, before)
        assert (await flow.query("progress"))["step"] == "mfa_pending"
        assert not any(name == "activate_account" for name, _ in w.stand.calls)


async def test_a_forged_run_no_worker_of_ours_runs_is_cleared_before_the_real_flow(
    temporal_dev_env: WorkflowEnvironment,
) -> None:
    """A run under a person's flow id on a task queue we do not poll, or of a type we do not
    have, never fails by itself: the web app ends it before it starts or asks the real flow."""
    from api.services.entra import EntraSignOn
    from api.services.setup_admin import Onboarding
    from core.temporal_client import TemporalGateway

    async with world(temporal_dev_env) as w:
        settings = make_settings(task_queue=w.queue)
        gateway = TemporalGateway(settings, client=w.client)
        staff = uuid.uuid4()
        keyless = w.intruders["keyless"]
        await keyless.start_workflow(
            "EntraLink", args=FORGED_START["EntraLink"], id=f"entra-link-{staff}", task_queue="elsewhere"
        )
        await keyless.start_workflow("Mine", args=[], id=f"sso-setup-{staff}", task_queue=w.queue)
        # The database is asked only for the person's organisation (none: a forged id).
        no_org = SimpleNamespace(scalar=AsyncMock(return_value=None))
        sign_on = EntraSignOn(settings, no_org, gateway, None)  # type: ignore[arg-type]
        outcome = await sign_on._drive_link(
            staff,
            f"entra-link-{staff}",
            LinkRequest(sealed_grant="sealed1.grant", via="session", actor=f"staff:{staff}", ip=IP),
        )
        assert outcome.ok
        onboarding = Onboarding(settings, None, gateway, None)  # type: ignore[arg-type]
        assert (
            await onboarding._flows.end(
                f"sso-setup-{staff}",
                SsoSetupWorkflow.run,
                SsoSetupWorkflow.supersede,
                EndRequest("admin-key:a"),
            )
            is None
        )
        setup = await w.client.start_workflow(
            "SsoSetup",
            SsoSetupInput(
                setup_id=str(uuid.uuid4()),
                staff_id=str(staff),
                link_ttl_seconds=900,
                requested_by="admin-key:a",
                email_retry=EmailRetry(),
            ),
            id=f"sso-setup-{staff}",
            task_queue=w.queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        )
        await w.until(setup, "email_sent")


async def test_a_reset_flow_forged_on_another_queue_is_cleared_before_the_real_flow(
    temporal_dev_env: WorkflowEnvironment,
) -> None:
    """As above, for `password-reset-<account>`: the reset request ends the forged run and
    starts the real flow (before, it asked the forged run and waited for an answer)."""
    from api.services.reset import ResetSteps
    from core.temporal_client import TemporalGateway

    async with world(temporal_dev_env) as w:
        settings = make_settings(task_queue=w.queue)
        account = SimpleNamespace(id=uuid.uuid4(), staff_id=uuid.uuid4())
        wid = f"password-reset-{account.id}"
        await w.intruders["keyless"].start_workflow(
            "PasswordReset", args=FORGED_START["PasswordReset"], id=wid, task_queue="elsewhere"
        )
        steps = ResetSteps(
            settings,
            SimpleNamespace(add=lambda _: None, scalar=AsyncMock(return_value=None)),  # type: ignore[arg-type]
            TemporalGateway(settings, client=w.client),
        )
        assert (
            await steps.request_code(
                account,
                "person@example.com",
                IP,  # type: ignore[arg-type]
                "browser",
                links_only=False,
            )
            == "sent"
        )
        described = await w.client.get_workflow_handle(wid).describe()
        assert (described.task_queue, described.status) == (w.queue, WorkflowExecutionStatus.RUNNING)


async def test_a_request_copied_from_another_flows_history_is_refused(
    temporal_dev_env: WorkflowEnvironment,
) -> None:
    """Whoever reads histories (ciphertext only) copies the web app's encrypted `cancel` and
    `skip_mfa` of one person's flow, and its start, into another person's flow byte for
    byte: each payload is bound to the flow it was made for (core/codec.py)."""
    async with world(temporal_dev_env) as w:
        keyless = w.intruders["keyless"]
        cancelled, skipped = await w.setup("code_sent"), await w.setup("mfa_pending")
        await cancelled.execute_update("cancel", EndRequest("admin-key:a"), result_type=SetupOutcome)
        await skipped.execute_update("skip_mfa", StepRequest(ip=IP), result_type=StepResult)
        copied = {
            name: await _update_payload(keyless, flow.id, name)
            for name, flow in (("cancel", cancelled), ("skip_mfa", skipped))
        }
        victim = await w.setup("mfa_pending")
        before = await w.snapshot(victim)
        for name, payload in copied.items():
            await refused(keyless.get_workflow_handle(victim.id).execute_update(name, RawValue(payload)))
        await w.unchanged(victim, before)
        assert (await victim.query("progress"))["step"] == "mfa_pending"

        started = next(
            e
            for e in (await keyless.get_workflow_handle(skipped.id).fetch_history()).events
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
        )
        wid = f"sso-setup-{uuid.uuid4()}"
        await keyless.start_workflow(
            "SsoSetup",
            RawValue(started.workflow_execution_started_event_attributes.input.payloads[0]),
            id=wid,
            task_queue=w.queue,
        )
        with pytest.raises(WorkflowFailureError) as failed:
            async with asyncio.timeout(20):
                await w.client.get_workflow_handle(wid).result()
        assert "made for another flow" in str(failed.value.cause)


async def _update_payload(client: Client, workflow_id: str, name: str) -> Payload:
    for event in (await client.get_workflow_handle(workflow_id).fetch_history()).events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            request = event.workflow_execution_update_accepted_event_attributes.accepted_request
            if request.input.name == name:
                [payload] = request.input.args.payloads
                assert payload.metadata["encoding"] == b"binary/encrypted"
                return payload
    raise AssertionError(f"no {name} in {workflow_id}")
