"""`sso audit boundary` (docs/security.md §32): what reached the flows without the key shows up;
what the web app did does not."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

import cli
from core.audit import record
from core.db import create_engine, session_factory
from core.models import EntraLink, Staff
from core.orgs import DEFAULT_ORG_ID
from core.temporal_client import connect
from tests.support.config import make_settings
from tests.support.temporal_stand_ins import Stand
from workflows.common import EmailRetry, StepRequest
from workflows.entra import EntraLinkWorkflow
from workflows.notices import PasswordChangedNoticeWorkflow
from workflows.reset import PasswordResetWorkflow
from workflows.setup import SsoSetupInput, SsoSetupWorkflow

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_forged_changes_and_every_entra_link_are_listed(
    temporal_dev_env: WorkflowEnvironment, sqlite_url: str
) -> None:
    target = temporal_dev_env.client.service_client.config.target_host
    queue = f"audit-{uuid.uuid4()}"
    settings = make_settings(
        temporal_address=target,
        temporal_namespace=temporal_dev_env.client.namespace,
        task_queue=queue,
        database_url=sqlite_url,
    )
    ours = await connect(settings, role="web")
    keyless = await Client.connect(target, namespace=temporal_dev_env.client.namespace)
    staff_id = uuid.uuid4()

    def setup_input() -> SsoSetupInput:
        return SsoSetupInput(
            setup_id=str(uuid.uuid4()),
            staff_id=str(staff_id),
            link_ttl_seconds=900,
            requested_by="admin-key:a",
            email_retry=EmailRetry(),
        )

    async with Worker(
        ours,
        task_queue=queue,
        activities=Stand().all(),
        workflows=[SsoSetupWorkflow, PasswordResetWorkflow, PasswordChangedNoticeWorkflow, EntraLinkWorkflow],
    ):
        legit = await ours.start_workflow(
            "SsoSetup", setup_input(), id=f"sso-setup-{uuid.uuid4()}", task_queue=queue
        )
        await legit.signal("link_opened", StepRequest(ip="203.0.113.1"))
        attacked = await ours.start_workflow(
            "SsoSetup", setup_input(), id=f"sso-setup-{uuid.uuid4()}", task_queue=queue
        )
        forged = keyless.get_workflow_handle(attacked.id)
        await forged.signal("link_opened", {"ip": "198.51.100.9"})
        await forged.signal("link_opened")
        await forged.cancel()
        ended = await ours.start_workflow(
            "SsoSetup", setup_input(), id=f"sso-setup-{uuid.uuid4()}", task_queue=queue
        )
        await keyless.get_workflow_handle(ended.id).terminate("forged")
        forged_start = f"password-reset-{uuid.uuid4()}"
        await keyless.start_workflow("PasswordReset", {"account_id": "x"}, id=forged_start, task_queue=queue)

        engine = create_engine(sqlite_url)
        async with session_factory(engine)() as session:
            session.add(
                Staff(
                    org_id=DEFAULT_ORG_ID,
                    id=staff_id,
                    first_name="Ada",
                    last_name="Admin",
                    external_email_1="ada@example.com",
                )
            )
            await session.flush()
            session.add(
                EntraLink(staff_id=staff_id, tenant_id="tenant-1", object_id="oid-1", linked_via="session")
            )
            record(
                session,
                actor="staff:forged",
                action="entra.linked",
                outcome="success",
                target=str(staff_id),
                ip="198.51.100.9",
                tenant_id="tenant-1",
                object_id="oid-1",
                via="session",
            )
            await session.commit()
        await engine.dispose()

        expected = {
            f"{attacked.id} signal link_opened: payload not encrypted with this deployment's key",
            f"{attacked.id} signal link_opened: no payload",
            f"{attacked.id} cancel request: no payload to authenticate",
            f"{ended.id} terminate: no payload to authenticate",
            f"{forged_start} start: payload not encrypted with this deployment's key",
        }
        lines: list[str] = []
        async with asyncio.timeout(30):  # visibility lists new runs a moment later
            while not all(any(e in line for line in lines) for e in expected):
                await asyncio.sleep(0.2)
                lines = await cli._audit_boundary(settings)
        report = "\n".join(lines)
        assert legit.id not in report
        assert "; client " in report
        assert (
            f"staff {staff_id} tenant tenant-1 oid oid-1 via session by staff:forged from 198.51.100.9"
        ) in report
        for line in lines:
            if attacked.id in line:
                assert "sso-web" not in line.split("; client ")[-1], line
