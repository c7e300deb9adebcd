"""Ops find an agency's flows in the Temporal UI by `SsoOrgId`: on a real Temporal dev
server, the setup and reset flows of people of two organisations (and the back-channel
logouts their sessions owe, an organisation's MFA rollout and the obligations it starts, the
obligations the deployment's rollout starts, a leave date's flow, an email change and a staff batch) carry
their organisation, and a visibility query for one finds only that organisation's flows."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import date, timedelta

import pytest
import pytest_asyncio
from sqlalchemy import select
from temporalio.common import SearchAttributePair
from temporalio.testing import WorkflowEnvironment

from api.services.reset import reset_workflow_id
from core.models import BrowserSession
from core.oidc.backchannel import SessionLogoutInput, logouts_due
from core.search_attributes import SSO_MFA_STEP, SSO_ORG_ID, SSO_STAFF_ID, SSO_STEP, flow_attributes
from tests.support.accounts import page_text
from tests.support.harness import Stack, running_stack
from tests.support.oidc import authorization, code_for, redeem, register, signed_in_browser
from tests.support.orgs import add_org
from worker import apply_policy
from workflows.email_change import email_change_workflow_id
from workflows.leave import leave_workflow_id
from workflows.logout import logout_search_attributes
from workflows.mfa_enrollment import enrollment_workflow_id
from workflows.mfa_rollout import ROLLOUT_WORKFLOW_ID, rollout_workflow_id

pytestmark = [pytest.mark.asyncio(loop_scope="session")]


@pytest_asyncio.fixture(loop_scope="session")
async def dev_stack(temporal_dev_env: WorkflowEnvironment, sqlite_url: str) -> AsyncIterator[Stack]:
    async with running_stack(temporal_dev_env, sqlite_url) as stack:
        yield stack


async def _flows(stack: Stack, org_id: uuid.UUID, expected: int) -> set[str]:
    """The ids of the flows `SsoOrgId = "<org_id>"` finds, once visibility has all `expected`."""
    query = f'SsoOrgId = "{org_id}"'
    async with asyncio.timeout(20):
        while True:
            found = {flow.id async for flow in stack.env.client.list_workflows(query)}
            if len(found) >= expected:
                return found
            await asyncio.sleep(0.2)


async def _start_flows(stack: Stack, org_id: uuid.UUID) -> set[str]:
    """A setup flow for a new person and a reset flow for one with an account, both of
    `org_id`; their workflow ids."""
    created = await stack.create_staff(org_id=str(org_id))
    sent = await stack.http.post(f"/api/v1/staff/{created['id']}/sso-email", headers=stack.admin)
    assert sent.status_code in (200, 202), sent.text
    status = await stack.wait_for(created["id"], lambda s: s.get("workflow_id") is not None)
    person = await stack.person(org_id=org_id)
    browser = stack.browser()
    page = await browser.get("/sso/forgot")
    asked = await browser.submit(page, "/sso/forgot", email=person.email)
    assert asked.status_code in (200, 303), page_text(asked)
    return {status["workflow_id"], reset_workflow_id(person.account_id)}


async def test_each_organisations_flows_are_found_by_its_sso_org_id(dev_stack: Stack) -> None:
    harbour = await add_org(dev_stack.sessions, "Harbour Lettings")
    quay = await add_org(dev_stack.sessions, "Quayside Homes")
    harbours = await _start_flows(dev_stack, harbour)
    quays = await _start_flows(dev_stack, quay)
    assert await _flows(dev_stack, harbour, len(harbours)) == harbours
    assert await _flows(dev_stack, quay, len(quays)) == quays
    flow = await dev_stack.env.client.get_workflow_handle(sorted(harbours)[0]).describe()
    assert flow.typed_search_attributes.get(SSO_ORG_ID) == str(harbour)


async def test_a_sessions_logout_carries_its_persons_organisation(dev_stack: Stack) -> None:
    harbour = await add_org(dev_stack.sessions, "Harbour Lettings")
    app = await register(dev_stack, backchannel_logout_uri="https://crm.example.test/logout")
    person = await dev_stack.person(org_id=harbour)
    browser = await signed_in_browser(dev_stack, person.email)
    request = authorization(app)
    await redeem(dev_stack, request, await code_for(browser, request))
    async with dev_stack.sessions() as db:
        ended = (
            await db.scalars(select(BrowserSession).where(BrowserSession.staff_id == person.staff_id))
        ).all()
        [logout] = await logouts_due(dev_stack.settings, db, ended)
    assert logout.org_id == str(harbour)
    attributes = logout_search_attributes(logout)
    assert attributes.get(SSO_ORG_ID) == str(harbour)
    assert attributes.get(SSO_STAFF_ID) == str(person.staff_id)
    # A logout owed before organisations (no org_id) starts as it always did.
    assert logout_search_attributes(SessionLogoutInput("sid", "staff")).get(SSO_ORG_ID) is None


async def test_flow_attributes_put_the_flows_own_first_then_person_and_organisation() -> None:
    org_id, staff_id = uuid.uuid4(), uuid.uuid4()
    pairs = flow_attributes(SearchAttributePair(SSO_STEP, "x"), org_id=org_id, staff_id=staff_id)
    assert [(pair.key.name, pair.value) for pair in pairs] == [
        ("SsoStep", "x"),
        ("SsoStaffId", str(staff_id)),
        ("SsoOrgId", str(org_id)),
    ]


async def test_an_organisations_mfa_rollout_and_its_obligations_carry_its_sso_org_id(
    dev_stack: Stack,
) -> None:
    harbour = await add_org(dev_stack.sessions, "Harbour Lettings")
    person = await dev_stack.person(org_id=harbour)
    changed = await dev_stack.http.patch(
        f"/api/v1/orgs/{harbour}", json={"mfa_policy": "required"}, headers=dev_stack.admin
    )
    assert changed.status_code == 200, changed.text
    rollout = dev_stack.env.client.get_workflow_handle(rollout_workflow_id(str(harbour)))
    assert (await rollout.result())["started"] == 1
    obliged = enrollment_workflow_id(str(person.staff_id))
    assert await _flows(dev_stack, harbour, 2) == {rollout.id, obliged}
    described = await dev_stack.env.client.get_workflow_handle(obliged).describe()
    assert described.typed_search_attributes.get(SSO_STAFF_ID) == str(person.staff_id)
    assert described.typed_search_attributes.get(SSO_MFA_STEP) == "waiting"


async def test_the_deployments_mfa_rollout_gives_each_obligation_its_persons_sso_org_id(
    temporal_dev_env: WorkflowEnvironment, sqlite_url: str
) -> None:
    """SSO_MFA_POLICY changed to `required` (the worker applies it at start): one rollout for
    every organisation, whose obligations are each found by their person's own."""
    async with running_stack(temporal_dev_env, sqlite_url, mfa_policy="required") as stack:
        orgs = [await add_org(stack.sessions, name) for name in ("Harbour Lettings", "Quayside Homes")]
        people = [await stack.person(org_id=org_id) for org_id in orgs]
        assert await apply_policy(stack.env.client, stack.settings, stack.sessions)
        rollout = stack.env.client.get_workflow_handle(ROLLOUT_WORKFLOW_ID)
        assert (await rollout.result())["started"] == len(people)
        for org_id, person in zip(orgs, people, strict=True):
            obliged = enrollment_workflow_id(str(person.staff_id))
            assert await _flows(stack, org_id, 1) == {obliged}
            attributes = (
                await stack.env.client.get_workflow_handle(obliged).describe()
            ).typed_search_attributes
            assert attributes.get(SSO_ORG_ID) == str(org_id)
            assert attributes.get(SSO_STAFF_ID) == str(person.staff_id)
            assert attributes.get(SSO_MFA_STEP) == "waiting"


async def test_a_leave_date_an_email_change_and_a_batch_carry_their_organisations_sso_org_id(
    dev_stack: Stack,
) -> None:
    harbour = await add_org(dev_stack.sessions, "Harbour Lettings")
    leaver = await dev_stack.create_staff(org_id=str(harbour))
    moving = await dev_stack.create_staff(org_id=str(harbour))
    later = (date.today() + timedelta(days=30)).isoformat()
    dated = await dev_stack.http.patch(
        f"/api/v1/staff/{leaver['id']}", json={"leave_on": later}, headers=dev_stack.admin
    )
    assert dated.status_code == 200, dated.text
    changed = await dev_stack.http.patch(
        f"/api/v1/staff/{moving['id']}",
        json={"external_email_1": f"new.{uuid.uuid4().hex[:8]}@example.com"},
        headers=dev_stack.admin,
    )
    assert changed.status_code == 200, changed.text
    batch = await dev_stack.http.post(
        "/api/v1/staff/batches",
        json={"action": "send_email", "staff_ids": [leaver["id"]]},
        headers=dev_stack.admin,
    )
    assert batch.status_code == 202, batch.text
    expected = {
        leave_workflow_id(leaver["id"]),
        email_change_workflow_id(moving["id"]),
        batch.json()["workflow_id"],
    }
    # The batch's own setup email for the leaver is found too (its flow starts as any setup).
    assert expected <= await _flows(dev_stack, harbour, len(expected) + 1)
    described = await dev_stack.env.client.get_workflow_handle(batch.json()["workflow_id"]).describe()
    assert described.typed_search_attributes.get(SSO_ORG_ID) == str(harbour)
