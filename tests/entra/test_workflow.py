"""The EntraLink workflow's held link on the time-skipping test server, with stand-in
activities: a held link verifies and links nothing until `confirm_link`.

Each test has its own server: a flow left waiting on a timer would stop time skipping for
the next test (see tests/setup/test_workflow.py)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import pytest
from temporalio import activity
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.inputs import (
    AuditInput,
    EntraLinkedNoticeInput,
    LinkEntraInput,
    LinkEntraResult,
    VerifiedEntra,
    VerifyEntraInput,
)
from tests.support.config import time_skipping_server
from workflows.common import EmailRetry
from workflows.entra import (
    AWAITING_CONFIRMATION,
    CONFIRM_LIMIT,
    NOT_CONFIRMED,
    ConfirmRequest,
    EntraLinkInput,
    EntraLinkWorkflow,
    LinkOutcome,
    LinkRequest,
    link_workflow_id,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

MORGAN = VerifiedEntra(tenant_id="tid-1", object_id="oid-1", name="Morgan", email="morgan@example.com")


@dataclass
class FakeEntraActivities:
    verified: list[VerifyEntraInput] = field(default_factory=list)
    linked: list[LinkEntraInput] = field(default_factory=list)
    notices: list[EntraLinkedNoticeInput] = field(default_factory=list)
    audits: list[AuditInput] = field(default_factory=list)

    @activity.defn(name="verify_entra_grant")
    async def verify_entra_grant(self, data: VerifyEntraInput) -> VerifiedEntra:
        self.verified.append(data)
        return MORGAN

    @activity.defn(name="link_entra_identity")
    async def link_entra_identity(self, data: LinkEntraInput) -> LinkEntraResult:
        self.linked.append(data)
        return LinkEntraResult(ok=True, newly_linked=True)

    @activity.defn(name="send_entra_linked")
    async def send_entra_linked(self, data: EntraLinkedNoticeInput) -> None:
        self.notices.append(data)

    @activity.defn(name="record_audit")
    async def record_audit(self, data: AuditInput) -> None:
        self.audits.append(data)


@dataclass
class Flow:
    handle: WorkflowHandle[EntraLinkWorkflow, int]
    actor: str


async def link_flow(env: WorkflowEnvironment, task_queue: str) -> Flow:
    staff_id = str(uuid.uuid4())
    handle = await env.client.start_workflow(
        EntraLinkWorkflow.run,
        EntraLinkInput(staff_id=staff_id, email_retry=EmailRetry()),
        id=link_workflow_id(staff_id),
        task_queue=task_queue,
    )
    return Flow(handle, f"staff:{staff_id}")


async def held_link(env: WorkflowEnvironment, task_queue: str) -> tuple[Flow, LinkOutcome]:
    flow = await link_flow(env, task_queue)
    outcome = await flow.handle.execute_update(
        EntraLinkWorkflow.link,
        LinkRequest(sealed_grant="sealed1.x", via="session", actor=flow.actor, ip="203.0.113.9", hold=True),
    )
    return flow, outcome


def worker(env: WorkflowEnvironment, task_queue: str, fake: FakeEntraActivities) -> Worker:
    return Worker(
        env.client,
        task_queue=task_queue,
        workflows=[EntraLinkWorkflow],
        activities=[
            fake.verify_entra_grant,
            fake.link_entra_identity,
            fake.send_entra_linked,
            fake.record_audit,
        ],
    )


async def test_a_held_link_waits_for_confirm_then_links_once() -> None:
    fake = FakeEntraActivities()
    task_queue = f"entra-test-{uuid.uuid4()}"
    async with time_skipping_server() as env, worker(env, task_queue, fake):
        flow, outcome = await held_link(env, task_queue)
        assert (outcome.ok, outcome.reason, outcome.email) == (False, AWAITING_CONFIRMATION, MORGAN.email)
        assert outcome.pending_id
        assert fake.linked == [] and len(fake.verified) == 1

        with pytest.raises(WorkflowUpdateFailedError):
            await flow.handle.execute_update(
                EntraLinkWorkflow.confirm_link,
                ConfirmRequest(pending_id=outcome.pending_id, actor="staff:other"),
            )
        with pytest.raises(WorkflowUpdateFailedError):
            await flow.handle.execute_update(
                EntraLinkWorkflow.confirm_link, ConfirmRequest(pending_id="another", actor=flow.actor)
            )
        assert fake.linked == []

        confirmed = await flow.handle.execute_update(
            EntraLinkWorkflow.confirm_link, ConfirmRequest(pending_id=outcome.pending_id, actor=flow.actor)
        )
        assert (confirmed.ok, confirmed.email) == (True, MORGAN.email)
        assert [(link.identity, link.actor) for link in fake.linked] == [(MORGAN, flow.actor)]
        assert await flow.handle.result() == 1
        assert len(fake.notices) == 1
        # Spent: no second link from the same confirmation.
        assert len(fake.verified) == 1 and len(fake.linked) == 1


async def test_a_held_link_never_confirmed_expires_and_links_nothing() -> None:
    fake = FakeEntraActivities()
    task_queue = f"entra-test-{uuid.uuid4()}"
    async with time_skipping_server() as env, worker(env, task_queue, fake):
        flow, outcome = await held_link(env, task_queue)
        assert outcome.reason == AWAITING_CONFIRMATION
        await env.sleep(CONFIRM_LIMIT)
        assert await flow.handle.result() == 1
        assert fake.linked == [] and fake.notices == []
        assert [(a.action, a.details["reason"]) for a in fake.audits] == [
            ("entra.link_refused", NOT_CONFIRMED)
        ]


async def test_confirm_without_a_pending_link_is_refused() -> None:
    fake = FakeEntraActivities()
    task_queue = f"entra-test-{uuid.uuid4()}"
    async with time_skipping_server() as env, worker(env, task_queue, fake):
        flow = await link_flow(env, task_queue)
        with pytest.raises(WorkflowUpdateFailedError):
            await flow.handle.execute_update(
                EntraLinkWorkflow.confirm_link, ConfirmRequest(pending_id="x", actor=flow.actor)
            )
        assert fake.linked == []
        await env.sleep(CONFIRM_LIMIT)
        assert await flow.handle.result() == 0
