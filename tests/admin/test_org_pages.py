"""The organisation pages in-process on SQLite and PostgreSQL: an operator lists, adds,
changes, suspends and resumes organisations (each suspension behind a page that says what
happens); an agency's admin sees only their own organisation and changes only its MFA
policy and sender name; forms keep CSRF and say what is wrong."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from sqlalchemy import select, update
from temporalio.testing import WorkflowEnvironment

from core.models import AuditEvent, Organisation, Staff
from core.orgs import DEFAULT_ORG_ID
from tests.support.accounts import (
    Browser,
    Person,
    browsing,
    hidden_fields,
    make_person,
    page_text,
    redirected_to,
)
from tests.support.admin_pages import flash_of, known_hash, set_admin, sign_in_with_totp
from tests.support.harness import Stack, running_stack
from tests.support.orgs import org_flow_done
from tests.support.setup_pages import settle
from workflows.org_suspension import org_suspend_workflow_id

pytestmark = [pytest.mark.pages, pytest.mark.asyncio(loop_scope="session")]

TENANT = "5d3e2773-e07f-4432-a630-1a0f68a28a05"


@pytest_asyncio.fixture(loop_scope="session")
async def stack(temporal_env: WorkflowEnvironment, database_url: str) -> AsyncIterator[Stack]:
    # A worker too: a suspension ends its people's sessions in a flow.
    async with running_stack(temporal_env, database_url, signin_ip_limit=1000) as running:
        yield running
        await settle(running)


async def admin_of(stack: Stack, org_id: uuid.UUID = DEFAULT_ORG_ID, operator: bool = False) -> Person:
    person = await make_person(
        stack.sessions,
        stack.settings,
        mfa=True,
        password_hash=known_hash(stack.settings),
        first_name="Olive" if operator else "Ann",
        last_name="Admin",
        org_id=org_id,
    )
    await set_admin(stack.sessions, person.staff_id)
    if operator:
        async with stack.sessions() as session:
            await session.execute(update(Staff).where(Staff.id == person.staff_id).values(is_operator=True))
            await session.commit()
    return person


async def org(stack: Stack, name: str, slug: str) -> uuid.UUID:
    made = await stack.http.post("/api/v1/orgs", json={"name": name, "slug": slug}, headers=stack.admin)
    assert made.status_code == 201, made.text
    return uuid.UUID(made.json()["id"])


async def row(stack: Stack, org_id: uuid.UUID) -> Organisation:
    async with stack.sessions() as session:
        found = await session.get(Organisation, org_id)
        assert found is not None
        return found


async def signed_in(browser: Browser, person: Person) -> None:
    assert redirected_to(await sign_in_with_totp(browser, person), "/sso/account")


async def test_an_operator_adds_changes_suspends_and_resumes_an_organisation(stack: Stack) -> None:
    operator = await admin_of(stack, operator=True)
    await org(stack, "Bravo Homes", "bravo")
    async with browsing(stack.transport) as browser:
        await signed_in(browser, operator)
        assert 'href="/admin/orgs">Settings' in (await browser.get("/sso/account")).text
        listed = await browser.get("/admin/orgs")
        assert listed.status_code == 200
        assert "Bravo Homes" in page_text(listed) and "Default organisation" in page_text(listed)

        # Bad input is said per field and changes nothing; a forged form does nothing.
        form = await browser.get("/admin/orgs/new")
        refused = await browser.submit(
            form, "/admin/orgs/new", name="Harbour", slug="Not A Slug", entra_tenant_ids="not-a-guid"
        )
        assert refused.status_code == 400
        assert 'role="alert"' in refused.text and "Slug:" in page_text(refused)
        assert "Microsoft tenant ids:" in page_text(refused)
        taken = await browser.submit(form, "/admin/orgs/new", name="Harbour", slug="bravo")
        assert taken.status_code == 400 and "another organisation already uses this slug" in page_text(taken)
        forged = await browser.post(
            "/admin/orgs/new", {"csrf": "forged", "name": "Harbour", "slug": "harbour"}
        )
        assert forged.status_code == 400
        added = await browser.submit(
            form,
            "/admin/orgs/new",
            name="Harbour Lettings",
            slug="harbour",
            entra_tenant_ids=TENANT.upper(),
            mfa_policy="",
            sender_name="Harbour Lettings via agentOS",
        )
        assert added.status_code == 303, added.text
        page = await browser.get(added.headers["location"])
        assert flash_of(page) == ("success", "Added Harbour Lettings.")
        org_id = uuid.UUID(added.headers["location"].rsplit("/", 1)[1])
        saved = await row(stack, org_id)
        assert (saved.slug, saved.sender_name, saved.mfa_policy) == (
            "harbour",
            "Harbour Lettings via agentOS",
            None,
        )

        changed = await browser.submit(
            page,
            f"/admin/orgs/{org_id}",
            name="Harbour Homes",
            slug="harbour",
            entra_tenant_ids=TENANT,
            mfa_policy="optional",
            sender_name="",
        )
        assert flash_of(await browser.get(changed.headers["location"])) == (
            "success",
            "Saved the changes to Harbour Homes.",
        )
        saved = await row(stack, org_id)
        assert (saved.name, saved.mfa_policy, saved.sender_name) == ("Harbour Homes", "optional", None)

        # Suspending is behind a page that names what happens.
        await stack.person(org_id=org_id)
        confirm = await browser.get(f"/admin/orgs/{org_id}/suspend")
        assert "Harbour Homes's 1 person will be signed out of every app" in page_text(confirm)
        assert "Nothing is deleted" in page_text(confirm)
        done = await browser.submit(confirm, f"/admin/orgs/{org_id}/suspend")
        shown = await browser.get(done.headers["location"])
        assert flash_of(shown) is not None and "Harbour Homes is suspended" in flash_of(shown)[1]  # type: ignore[index]
        assert (await row(stack, org_id)).status == "suspended"
        assert "being signed out of every app" in flash_of(shown)[1]  # type: ignore[index]
        await org_flow_done(stack.env.client, org_suspend_workflow_id(org_id))
        assert "being signed out" not in page_text(await browser.get(f"/admin/orgs/{org_id}"))
        assert "Suspended" in page_text(await browser.get("/admin/orgs"))
        resume = await browser.get(f"/admin/orgs/{org_id}/resume")
        assert "can sign in again" in page_text(resume)
        await browser.submit(resume, f"/admin/orgs/{org_id}/resume")
        assert (await row(stack, org_id)).status == "active"

    async with stack.sessions() as session:
        actions = list(
            (await session.scalars(select(AuditEvent.action).where(AuditEvent.target == str(org_id)))).all()
        )
    assert actions == ["org.create", "org.update", "org.suspended", "org.suspension_completed", "org.resumed"]


async def test_an_agency_admin_sees_and_changes_only_their_own_organisation(stack: Stack) -> None:
    mine = await org(stack, "Alpha Lettings", "alpha")
    theirs = await org(stack, "Bravo Homes", "bravo")
    admin = await admin_of(stack, mine)
    async with browsing(stack.transport) as browser:
        await signed_in(browser, admin)
        account = await browser.get("/sso/account")
        assert 'href="/admin/organisation">Settings' in account.text
        assert 'href="/admin/orgs"' not in account.text
        own = await browser.get("/admin/organisation")
        assert redirected_to(own, f"/admin/orgs/{mine}")
        page = await browser.get(f"/admin/orgs/{mine}")
        assert page.status_code == 200 and "Alpha Lettings" in page_text(page)
        # Only the MFA policy and the sender name are fields; no suspend for them.
        fields = hidden_fields(page, f"/admin/orgs/{mine}")
        assert 'name="slug"' not in page.text and 'name="name"' not in page.text
        assert 'id="mfa_policy"' in page.text and 'id="sender_name"' in page.text
        assert "Suspend" not in page_text(page)

        # A slug or name slipped into the form is not theirs to change.
        saved = await browser.post(
            f"/admin/orgs/{mine}",
            {
                **fields,
                "name": "Taken",
                "slug": "taken",
                "mfa_policy": "optional",
                "sender_name": "Alpha via agentOS",
            },
        )
        assert saved.status_code == 303, saved.text
        row_now = await row(stack, mine)
        assert (row_now.name, row_now.slug) == ("Alpha Lettings", "alpha")
        assert (row_now.mfa_policy, row_now.sender_name) == ("optional", "Alpha via agentOS")

        for path in (f"/admin/orgs/{theirs}", f"/admin/orgs/{uuid.uuid4()}", "/admin/orgs/not-an-id"):
            other = await browser.get(path)
            assert other.status_code == 404 and "Bravo" not in other.text, path
        for path in ("/admin/orgs", "/admin/orgs/new", f"/admin/orgs/{mine}/suspend"):
            denied = await browser.get(path)
            assert denied.status_code == 403 and "Settings &gt; Organisation" in denied.text, path
    assert (await row(stack, theirs)).sender_name is None
