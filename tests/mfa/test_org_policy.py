"""Per-organisation MFA policy, in-process with a real worker on the time-skipping server: a
person's effective policy is their organisation's `mfa_policy`, else SSO_MFA_POLICY; an
organisation changed to `required` starts its people's obligations (paced, once) and nobody
else's; an organisation of its own `optional` is left out of the deployment's rollout."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select, update

from core.mfa_policy import org_policy_fact
from core.models import DeploymentFact, Organisation, SsoAccount
from tests.support.accounts import PASSWORD, browsing, hidden_fields, page_text, redirected_to, sign_in
from tests.support.harness import Stack
from tests.support.mfa import obligation
from worker import apply_policy
from workflows.mfa_rollout import ROLLOUT_WORKFLOW_ID, rollout_workflow_id

pytestmark = [pytest.mark.pages, pytest.mark.asyncio(loop_scope="session")]

STAYS_ON = "Your organisation requires Multi-Factor Authentication, so it stays on."


async def new_org(stack: Stack, **fields: object) -> tuple[uuid.UUID, dict[str, str]]:
    slug = f"agency-{uuid.uuid4().hex[:8]}"
    made = await stack.http.post(
        "/api/v1/orgs", json={"name": "Harbour Lettings", "slug": slug, **fields}, headers=stack.admin
    )
    assert made.status_code == 201, made.text
    org_id = uuid.UUID(made.json()["id"])
    key = await stack.http.post(f"/api/v1/orgs/{org_id}/keys", json={"name": "own"}, headers=stack.admin)
    return org_id, {"Authorization": f"Bearer {key.json()['key']}"}


async def fact_of(stack: Stack, org_id: uuid.UUID) -> DeploymentFact | None:
    async with stack.sessions() as session:
        return await session.get(DeploymentFact, org_policy_fact(org_id))


async def test_an_organisation_changed_to_required_obliges_only_its_people_once(optional: Stack) -> None:
    stack = optional
    org_id, own_key = await new_org(stack)
    mine = [await stack.person(org_id=org_id, first_name=name) for name in ("Ann", "Ben")]
    with_mfa = await stack.person(org_id=org_id, mfa=True)
    elsewhere = await stack.person(first_name="Cal")  # the default organisation: optional

    # The organisation's own admin key may change it.
    changed = await stack.http.patch(
        f"/api/v1/orgs/{org_id}", json={"mfa_policy": "required"}, headers=own_key
    )
    assert changed.status_code == 200, changed.text
    progress = await stack.env.client.get_workflow_handle(rollout_workflow_id(str(org_id))).result()
    assert (progress["started"], progress["done"]) == (2, True)
    for person in mine:
        assert (await obligation(stack, str(person.staff_id), "waiting"))["policy"] == "required"
    for person in (with_mfa, elsewhere):
        assert (await stack.status(person))["mfa_obligation"] is None
    assert await fact_of(stack, org_id) is not None
    # Once: sending it again, or a worker start, starts nothing more.
    again = await stack.http.patch(f"/api/v1/orgs/{org_id}", json={"mfa_policy": "required"}, headers=own_key)
    assert again.status_code == 200
    assert not await apply_policy(stack.env.client, stack.settings, stack.sessions)

    # Back to the deployment's policy: the record goes, so a later change starts again.
    back = await stack.http.patch(f"/api/v1/orgs/{org_id}", json={"mfa_policy": None}, headers=stack.admin)
    assert back.status_code == 200 and back.json()["mfa_policy"] is None
    assert await fact_of(stack, org_id) is None


async def test_a_required_organisation_missed_while_temporal_was_away_starts_at_worker_start(
    optional: Stack,
) -> None:
    stack = optional
    org_id, _ = await new_org(stack)
    person = await stack.person(org_id=org_id)
    async with stack.sessions() as session:  # as if the rollout could not be started
        await session.execute(
            update(Organisation).where(Organisation.id == org_id).values(mfa_policy="required")
        )
        await session.commit()
    assert await apply_policy(stack.env.client, stack.settings, stack.sessions)
    progress = await stack.env.client.get_workflow_handle(rollout_workflow_id(str(org_id))).result()
    assert progress["started"] == 1
    assert (await obligation(stack, str(person.staff_id), "waiting"))["policy"] == "required"
    assert not await apply_policy(stack.env.client, stack.settings, stack.sessions)


async def test_the_organisations_policy_decides_what_its_people_may_turn_off(optional: Stack) -> None:
    """Under a deployment `optional`, a person of a `required` organisation can't turn MFA off."""
    stack = optional
    org_id, _ = await new_org(stack, mfa_policy="required")
    person = await stack.person(org_id=org_id, mfa=True)
    free = await stack.person(mfa=True)
    for who, stays_on in ((person, True), (free, False)):
        async with browsing(stack.transport) as browser:
            assert redirected_to(await sign_in(browser, who.email), "/sso/login/mfa")
            page = await browser.get("/sso/login/mfa")
            assert redirected_to(
                await browser.submit(page, "/sso/login/mfa", code=who.totp_now()), "/sso/account"
            )
            account = await browser.get("/sso/account")
            assert (STAYS_ON in page_text(account)) is stays_on
            fields = hidden_fields(account, "/sso/logout")
            await browser.post("/sso/account/mfa/off", {**fields, "password": PASSWORD})
        async with stack.sessions() as session:
            row = await session.scalar(select(SsoAccount).where(SsoAccount.staff_id == who.staff_id))
            assert row is not None and (row.mfa_enabled_at is not None) is stays_on


async def test_an_organisation_of_its_own_optional_is_left_out_of_the_deployments_rollout(
    required: Stack,
) -> None:
    stack = required
    org_id, _ = await new_org(stack, mfa_policy="optional")
    theirs = await stack.person(org_id=org_id, first_name="Opt")
    ours = await stack.person(first_name="Req")
    assert await apply_policy(stack.env.client, stack.settings, stack.sessions)
    progress = await stack.env.client.get_workflow_handle(ROLLOUT_WORKFLOW_ID).result()
    assert progress["started"] == 1
    assert (await obligation(stack, str(ours.staff_id), "waiting"))["policy"] == "required"
    assert (await stack.status(theirs))["mfa_obligation"] is None
