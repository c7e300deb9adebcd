"""Settings > Apps, driven like a browser against the app in-process: the admin's pages over
the clients admin API's service. A secret is shown on the page after the post that made it
and never again; every change is CSRF-checked and audited with the admin as the actor."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import select, update

from activities.inputs import LogoutFailedInput
from activities.logout import LogoutActivities
from core.models import AuditEvent, OidcClient, Staff
from core.oidc.clients import secret_hash
from tests.support.accounts import (
    PASSWORD,
    Browser,
    browsing,
    hidden_fields,
    make_person,
    page_text,
    redirected_to,
)
from tests.support.harness import Stack, running_app
from tests.support.orgs import add_org

pytestmark = [pytest.mark.pages, pytest.mark.asyncio(loop_scope="session")]

SECRET = re.compile(r'<code class="email" id="client-secret">(ssocs_[^<]+)</code>')
CLIENT = re.compile(r'href="/admin/apps/([A-Za-z0-9_-]+)"')
CALLBACK = "https://crm.example.test/callback"


@pytest_asyncio.fixture(loop_scope="session")
async def app_stack(sqlite_url: str) -> AsyncIterator[Stack]:
    async with running_app(sqlite_url) as stack:
        yield stack


@pytest_asyncio.fixture(loop_scope="session")
async def admin(app_stack: Stack) -> AsyncIterator[Browser]:
    """An administrator signed in with their authenticator code."""
    person = await make_person(
        app_stack.sessions, app_stack.settings, mfa=True, first_name="Ada", last_name="Apps"
    )
    async with app_stack.sessions() as db:
        await db.execute(update(Staff).where(Staff.id == person.staff_id).values(is_admin=True))
        await db.commit()
    async with browsing(app_stack.transport) as browser:
        login = await browser.get("/sso/login")
        sent = await browser.submit(login, "/sso/login", email=person.email, password=PASSWORD)
        assert redirected_to(sent, "/sso/login/mfa"), sent.text
        page = await browser.get("/sso/login/mfa")
        done = await browser.submit(page, "/sso/login/mfa", code=person.totp_now())
        assert done.status_code == 303, done.text
        yield browser


async def register(admin: Browser, **fields: str) -> httpx.Response:
    form = await admin.get("/admin/apps/new")
    assert form.status_code == 200, form.text
    values = {"client_name": "agentOS CRM", "redirect_uris": CALLBACK, "app_type": "confidential", **fields}
    return await admin.submit(form, "/admin/apps/new", **values)


async def client_row(stack: Stack, client_id: str) -> OidcClient | None:
    async with stack.sessions() as db:
        return await db.scalar(select(OidcClient).where(OidcClient.client_id == client_id))


async def test_the_person_menu_and_the_list_show_the_apps(app_stack: Stack, admin: Browser) -> None:
    account = await admin.get("/sso/account")
    assert 'href="/admin/apps">Settings \u203a Apps</a>' in account.text
    empty = await admin.get("/admin/apps")
    assert empty.status_code == 200 and "No apps are registered yet." in page_text(empty)
    created = await register(admin, redirect_uris=f"{CALLBACK}\n  https://crm.example.test/other \n")
    assert created.status_code == 200, created.text
    listed = await admin.get("/admin/apps")
    text = page_text(listed)
    [client_id] = set(CLIENT.findall(listed.text)) - {"new"}
    assert f"agentOS CRM {client_id} Confidential {CALLBACK} https://crm.example.test/other Enabled" in text


async def test_a_new_secret_is_shown_once_and_only_its_hash_is_kept(app_stack: Stack, admin: Browser) -> None:
    created = await register(admin)
    [secret] = SECRET.findall(created.text)
    assert "shown this once" in page_text(created)
    [client_id] = {c for c in CLIENT.findall(created.text) if c != "new"}
    row = await client_row(app_stack, client_id)
    assert row is not None and row.secret_hash == secret_hash(app_stack.settings, secret)
    assert row.registration["redirect_uris"] == [CALLBACK]
    page = await admin.get(f"/admin/apps/{client_id}")
    assert secret not in page.text and "ssocs_" not in (await admin.get("/admin/apps")).text

    rotated = await admin.submit(page, f"/admin/apps/{client_id}/secret")
    [new_secret] = SECRET.findall(rotated.text)
    assert new_secret != secret and "The old secret no longer works." in page_text(rotated)
    row = await client_row(app_stack, client_id)
    assert row is not None and row.secret_hash == secret_hash(app_stack.settings, new_secret)
    async with app_stack.sessions() as db:
        events = (await db.scalars(select(AuditEvent).where(AuditEvent.target == client_id))).all()
    assert [e.action for e in events] == ["oidc_client.created", "oidc_client.secret_rotated"]
    assert all(e.actor.endswith("(Ada Apps)") for e in events)
    assert not any(secret in str(e.details) or new_secret in str(e.details) for e in events)


async def test_a_public_app_has_no_secret(app_stack: Stack, admin: Browser) -> None:
    created = await register(admin, app_type="public", require_consent="yes")
    assert not SECRET.findall(created.text)
    [client_id] = {c for c in CLIENT.findall(created.text) if c != "new"}
    row = await client_row(app_stack, client_id)
    assert row is not None and row.secret_hash is None
    assert row.registration["token_endpoint_auth_method"] == "none" and row.registration["require_consent"]
    page = await admin.get(f"/admin/apps/{client_id}")
    assert f'action="/admin/apps/{client_id}/secret"' not in page.text


async def test_a_refused_registration_says_why_and_keeps_what_was_typed(
    app_stack: Stack, admin: Browser
) -> None:
    refused = await register(admin, client_name="Lettings", redirect_uris="http://lettings.example.test/cb")
    assert refused.status_code == 400
    assert "must use https" in page_text(refused)
    assert 'value="Lettings"' in refused.text and "http://lettings.example.test/cb</textarea>" in refused.text
    assert 'id="redirect_uris"' in refused.text and 'aria-invalid="true"' in refused.text
    nothing = await register(admin, redirect_uris="  ")
    assert nothing.status_code == 400 and "Redirect URIs:" in page_text(nothing)
    async with app_stack.sessions() as db:
        assert (await db.scalars(select(OidcClient))).all() == []


async def test_edit_disable_enable_and_delete(app_stack: Stack, admin: Browser) -> None:
    created = await register(admin)
    [client_id] = {c for c in CLIENT.findall(created.text) if c != "new"}
    page = await admin.get(f"/admin/apps/{client_id}")
    saved = await admin.submit(
        page,
        f"/admin/apps/{client_id}",
        client_name="agentOS CRM (new)",
        redirect_uris=f"{CALLBACK}\nhttps://crm.example.test/two",
        require_consent="no",
    )
    assert redirected_to(saved, f"/admin/apps/{client_id}"), saved.text
    page = await admin.get(f"/admin/apps/{client_id}")
    assert "Saved the changes to agentOS CRM (new)." in page_text(page)
    row = await client_row(app_stack, client_id)
    assert row is not None and row.client_name == "agentOS CRM (new)"
    assert row.registration["redirect_uris"] == [CALLBACK, "https://crm.example.test/two"]

    off = await admin.submit(page, f"/admin/apps/{client_id}/disable")
    assert redirected_to(off, f"/admin/apps/{client_id}")
    page = await admin.get(f"/admin/apps/{client_id}")
    assert "is switched off" in page_text(page) and "Switch on" in page_text(page)
    assert "Switched off" in page_text(await admin.get("/admin/apps"))
    row = await client_row(app_stack, client_id)
    assert row is not None and row.disabled_at is not None
    await admin.submit(page, f"/admin/apps/{client_id}/enable")
    row = await client_row(app_stack, client_id)
    assert row is not None and row.disabled_at is None

    confirm = await admin.get(f"/admin/apps/{client_id}/delete")
    assert "Delete agentOS CRM (new)?" in page_text(confirm)
    assert await client_row(app_stack, client_id) is not None  # the GET deletes nothing
    deleted = await admin.submit(confirm, f"/admin/apps/{client_id}/delete")
    assert redirected_to(deleted, "/admin/apps")
    assert "Deleted agentOS CRM (new)" in page_text(await admin.get("/admin/apps"))
    assert await client_row(app_stack, client_id) is None
    gone = await admin.get(f"/admin/apps/{client_id}")
    assert redirected_to(gone, "/admin/apps")


async def test_forms_without_the_csrf_token_change_nothing(app_stack: Stack, admin: Browser) -> None:
    created = await register(admin)
    [client_id] = {c for c in CLIENT.findall(created.text) if c != "new"}
    for action in ("disable", "secret", "delete"):
        answer = await admin.post(f"/admin/apps/{client_id}/{action}", {"csrf": "forged"})
        assert redirected_to(answer, f"/admin/apps/{client_id}"), action
    edit = await admin.post(
        f"/admin/apps/{client_id}", {"csrf": "", "client_name": "Hijacked", "redirect_uris": CALLBACK}
    )
    assert edit.status_code == 400
    new = await admin.post("/admin/apps/new", {"csrf": "", "client_name": "X", "redirect_uris": CALLBACK})
    assert new.status_code == 400 and "ssocs_" not in new.text
    row = await client_row(app_stack, client_id)
    assert row is not None and row.disabled_at is None and row.client_name == "agentOS CRM"
    async with app_stack.sessions() as db:
        assert len((await db.scalars(select(OidcClient))).all()) == 1


async def test_only_a_strongly_signed_in_admin_gets_the_pages(app_stack: Stack) -> None:
    async with browsing(app_stack.transport) as nobody:
        assert redirected_to(await nobody.get("/admin/apps"), "/sso/login?return_to=/admin/apps")
    person = await make_person(app_stack.sessions, app_stack.settings, first_name="Not", last_name="Admin")
    async with browsing(app_stack.transport) as browser:
        login = await browser.get("/sso/login")
        await browser.submit(login, "/sso/login", email=person.email, password=PASSWORD)
        page = await browser.get("/admin/apps")
        assert page.status_code == 403 and "This page is for administrators" in page_text(page)
        assert 'href="/admin/apps"' not in (await browser.get("/sso/account")).text
        new = await browser.post("/admin/apps/new", {"client_name": "X", "redirect_uris": CALLBACK})
        assert new.status_code == 403


async def test_a_refused_edit_changes_nothing(app_stack: Stack, admin: Browser) -> None:
    created = await register(admin)
    [client_id] = {c for c in CLIENT.findall(created.text) if c != "new"}
    page = await admin.get(f"/admin/apps/{client_id}")
    refused = await admin.submit(
        page, f"/admin/apps/{client_id}", client_name="Renamed", redirect_uris="ftp://crm.example.test/"
    )
    assert refused.status_code == 400 and "must be an absolute https://" in page_text(refused)
    assert 'value="Renamed"' in refused.text  # what was typed, to correct
    row = await client_row(app_stack, client_id)
    assert row is not None and row.client_name == "agentOS CRM"
    assert row.registration["redirect_uris"] == [CALLBACK]


async def test_an_app_given_up_on_by_back_channel_logout_is_reported(
    app_stack: Stack, admin: Browser
) -> None:
    created = await register(admin)
    [client_id] = set(CLIENT.findall(created.text)) - {"new"}
    logouts = LogoutActivities(app_stack.settings, app_stack.sessions)
    began = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    await logouts.record_logout_failure(LogoutFailedInput(client_id, began))
    # A later session given up on too: it has been failing since the first.
    await logouts.record_logout_failure(LogoutFailedInput(client_id, began + timedelta(days=1)))
    row = await client_row(app_stack, client_id)
    assert row is not None and row.backchannel_failing_since == began
    for page in (await admin.get("/admin/apps"), await admin.get(f"/admin/apps/{client_id}")):
        assert "failing since 1 dec 2026, 09:30" in page_text(page).lower(), page_text(page)
    api = await app_stack.http.get(f"/api/v1/clients/{client_id}", headers=app_stack.admin)
    assert api.json()["backchannel_logout_failing_since"].startswith("2026-12-01T09:30")


async def test_an_app_is_limited_to_the_organisations_ticked(app_stack: Stack, admin: Browser) -> None:
    # One organisation: no boxes, and saving leaves the app open to everyone.
    created = await register(admin)
    [client_id] = {c for c in CLIENT.findall(created.text) if c != "new"}
    page = await admin.get(f"/admin/apps/{client_id}")
    assert "Organisations" not in page_text(page) and "org_choice" not in page.text
    harbour = await add_org(app_stack.sessions, "Harbour Lettings")
    quay = await add_org(app_stack.sessions, "Quayside Homes")
    async with app_stack.sessions() as db:  # with several agencies, the apps are an operator's
        await db.execute(update(Staff).where(Staff.is_admin.is_(True)).values(is_operator=True))
        await db.commit()
    page = await admin.get(f"/admin/apps/{client_id}")
    assert "Only people of the ticked organisations can sign in to the app" in page_text(page)
    assert "Harbour Lettings" in page_text(page) and "Quayside Homes" in page_text(page)
    values = {
        **hidden_fields(page, f"/admin/apps/{client_id}"),
        "client_name": "agentOS CRM",
        "redirect_uris": CALLBACK,
        "allowed_org_ids": [str(harbour), str(quay)],
    }
    saved = await admin.post(f"/admin/apps/{client_id}", values)
    assert redirected_to(saved, f"/admin/apps/{client_id}"), saved.text
    row = await client_row(app_stack, client_id)
    assert row is not None and row.registration["allowed_org_ids"] == sorted([str(harbour), str(quay)])
    page = await admin.get(f"/admin/apps/{client_id}")
    assert page.text.count(" checked>") == 2, page.text
    # None ticked: every organisation again.
    values = {**hidden_fields(page, f"/admin/apps/{client_id}"), "client_name": "agentOS CRM"}
    saved = await admin.post(f"/admin/apps/{client_id}", {**values, "redirect_uris": CALLBACK})
    row = await client_row(app_stack, client_id)
    assert row is not None and row.registration["allowed_org_ids"] == []
    # A new app limited at once; an id that is no organisation is refused and registers nothing.
    form = await admin.get("/admin/apps/new")
    base = {**hidden_fields(form, "/admin/apps/new"), "client_name": "Rota", "redirect_uris": CALLBACK}
    refused = await admin.post("/admin/apps/new", {**base, "allowed_org_ids": ["not-an-id"]})
    assert refused.status_code == 400 and "Organisations:" in page_text(refused)
    made = await admin.post("/admin/apps/new", {**base, "allowed_org_ids": [str(quay)]})
    assert made.status_code == 200, made.text
    [new_id] = {c for c in CLIENT.findall(made.text) if c not in ("new", client_id)}
    row = await client_row(app_stack, new_id)
    assert row is not None and row.registration["allowed_org_ids"] == [str(quay)]
