"""Erasing a person (UK GDPR right to erasure) through the admin API, in-process on SQLite and
PostgreSQL with a real worker on a real Temporal dev server (the time-skipping server cannot
delete workflow runs): their sessions end and the apps are told, their flows are deleted with
their histories, no table holds their name or address afterwards, their audit events stay
under a pseudonym, and no log line named them."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest
import pytest_asyncio
from sqlalchemy import select
from temporalio.testing import WorkflowEnvironment

from api.services.staff_lifecycle import SELF_ERASE, StaffLifecycle
from core.crypto import mask_email
from core.db import UnitOfWork
from core.errors import Conflict
from core.models import AuditEvent, Staff
from core.orgs import operator
from core.temporal_client import TemporalGateway
from tests.support.accounts import ADMIN_ACTOR, GUARD_SECONDS, emails_with_subject, update_account
from tests.support.erasure import history_text, personal_rows
from tests.support.harness import Stack, running_stack
from tests.support.oidc import authorization, code_for, redeem, refresh_refused, register, signed_in_browser
from tests.support.setup_pages import settle
from workflows.email_change import email_change_workflow_id
from workflows.leave import leave_workflow_id

pytestmark = [pytest.mark.pages, pytest.mark.asyncio(loop_scope="session")]

FIRST, LAST = "Wilhelmina", "Quarrendon"


@pytest_asyncio.fixture(loop_scope="session")
async def stack(temporal_dev_env: WorkflowEnvironment, database_url: str) -> AsyncIterator[Stack]:
    async with running_stack(temporal_dev_env, database_url) as running:
        yield running
        await settle(running)


async def run_ids(stack: Stack, workflow_id: str) -> list[str]:
    return [
        run.run_id or "" async for run in stack.env.client.list_workflows(f"WorkflowId = '{workflow_id}'")
    ]


async def test_erasing_leaves_nothing_personal_in_the_database_histories_or_logs(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    person = await stack.person(first_name=FIRST, last_name=LAST)
    needles = [FIRST, LAST, person.email]
    # A live session with an app's tokens, a setup email, a change of address waiting for its
    # code, a leave date, and an action the person took as an admin on someone else.
    app = await register(stack, grant_types=["authorization_code", "refresh_token"])
    browser = await signed_in_browser(stack, person.email)
    request = authorization(app, scope="openid offline_access")
    token = await redeem(stack, request, await code_for(browser, request))
    # A setup email too (its flow's result carries the masked address): as if the person had
    # not finished setting up.
    await update_account(stack.sessions, person, status="pending")
    sent = await stack.http.post(f"/api/v1/staff/{person.staff_id}/sso-email", headers=stack.admin)
    assert sent.status_code == 202, sent.text
    new = f"{FIRST}.new.{uuid.uuid4().hex[:6]}@example.org".lower()
    needles += [new, mask_email(new), mask_email(person.email)]
    tomorrow = (datetime.now(stack.settings.zone) + timedelta(days=2)).date().isoformat()
    response = await stack.http.patch(
        f"/api/v1/staff/{person.staff_id}",
        json={"external_email_1": new, "leave_on": tomorrow},
        headers=stack.admin,
    )
    assert response.status_code == 200, response.text
    await emails_with_subject(stack.sessions, stack.settings, new, "Confirm your new agentOS sign-in email")
    other = await stack.person()
    async with stack.sessions() as session:
        session.add(
            AuditEvent(
                actor=f"staff:{person.staff_id} ({FIRST} {LAST})",
                action="staff.sso_email_sent",
                outcome="success",
                target=str(other.staff_id),
                details={"note": f"sent by {FIRST}"},
            )
        )
        await session.commit()
    setup_id = f"sso-setup-{person.staff_id}"
    flows = [
        setup_id,
        email_change_workflow_id(str(person.staff_id)),
        leave_workflow_id(str(person.staff_id)),
    ]
    runs: list[tuple[str, str]] = []
    async with asyncio.timeout(GUARD_SECONDS):
        for workflow_id in flows:
            while not (found := await run_ids(stack, workflow_id)):
                await asyncio.sleep(0.1)
            runs += [(workflow_id, run_id) for run_id in found]
    assert await personal_rows(stack.sessions, needles)  # the scan sees them before

    erased = await stack.http.delete(f"/api/v1/staff/{person.staff_id}", headers=stack.admin)
    assert erased.status_code == 200, erased.text
    pseudonym = erased.json()["pseudonym"]
    assert pseudonym.startswith("erased-") and str(person.staff_id) not in pseudonym

    assert (await stack.http.get(f"/api/v1/staff/{person.staff_id}", headers=stack.admin)).status_code == 404
    again = await stack.http.delete(f"/api/v1/staff/{person.staff_id}", headers=stack.admin)
    assert again.status_code == 404
    listed = (await stack.http.get("/api/v1/staff", headers=stack.admin)).json()
    assert str(person.staff_id) not in {item["id"] for item in listed["items"]}
    assert await refresh_refused(stack, app, token["refresh_token"])

    assert await personal_rows(stack.sessions, needles) == []
    async with stack.sessions() as session:
        assert await session.get(Staff, person.staff_id) is None
        trail = (await session.scalars(select(AuditEvent).where(AuditEvent.target == pseudonym))).all()
        by_them = (await session.scalars(select(AuditEvent).where(AuditEvent.actor == pseudonym))).all()
    actions = {event.action for event in trail}
    assert {"staff.disabled", "staff.updated", "staff.email_change_requested", "staff.erased"} <= actions
    # What they did as an admin on someone else, and what they did themselves (signing in).
    assert (str(other.staff_id), {"note": "[erased]"}) in [(e.target, e.details) for e in by_them]
    assert {e.target for e in by_them} == {str(other.staff_id), pseudonym}
    erased_event = next(e for e in trail if e.action == "staff.erased")
    assert erased_event.actor == ADMIN_ACTOR and erased_event.details["workflows_deleted"] >= len(runs)

    # Deleted (Temporal removes a deleted run in the background, when it gets to it); until
    # then, or on a server that cannot delete, the history holds nothing that names them.
    codec = stack.env.client.data_converter.payload_codec
    assert codec is not None
    histories = [(run, await history_text(stack.env.client, codec, *run)) for run in runs]
    for run, history in histories:
        assert history is None or [n for n in needles if n.lower() in history] == [], run
    # The decode really happened: the flows' inputs (plaintext only once decoded) name the
    # person by their id, under that field name.
    assert all('"staff_id"' in history for _run, history in histories if history is not None)
    logged = caplog.text.lower()
    assert not [needle for needle in needles if needle.lower() in logged]


async def test_an_admin_cannot_erase_themselves(stack: Stack) -> None:
    person = await stack.person(is_admin=True)
    async with stack.sessions() as session:
        lifecycle = StaffLifecycle(
            UnitOfWork(session), stack.settings, TemporalGateway(stack.settings, stack.env.client)
        )
        with pytest.raises(Conflict) as refused:
            await lifecycle.erase(person.staff_id, operator("staff:me"), None, by=person.staff_id)
    assert refused.value.message == SELF_ERASE
    assert (await stack.http.get(f"/api/v1/staff/{person.staff_id}", headers=stack.admin)).status_code == 200
