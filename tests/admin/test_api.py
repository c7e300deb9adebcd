"""The admin API and setup pages in-process, driving real workflows on the time-skipping server
with the real activities (outbox email) against SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from temporalio.testing import WorkflowEnvironment

from api.main import create_app, security_headers_for
from api.services.sessions import Sessions
from core import recovery
from core.admin_keys import create_admin_key
from core.db import create_engine, session_factory
from core.models import (
    AdminApiKey,
    AuditEvent,
    BrowserSession,
    MfaObligation,
    RecoveryCode,
    SetupLink,
    utcnow,
)
from tests.support.accounts import account_row, emails_with_subject, make_person
from tests.support.config import make_settings
from tests.support.harness import Stack, running_app, running_stack
from tests.support.orgs import add_org
from tests.support.sql import statements_naming

pytestmark = [pytest.mark.pages, pytest.mark.asyncio(loop_scope="session")]


async def test_content_security_policy_lets_the_entra_button_reach_microsoft() -> None:
    """Browsers hold the redirect after a form post to form-action: the Microsoft-Entra form
    redirects to Microsoft, so its origin (and no other) is allowed when Entra is on."""
    plain = security_headers_for(make_settings())["Content-Security-Policy"]
    assert plain.endswith("form-action 'self'"), plain
    entra = security_headers_for(
        make_settings(
            entra_tenant_id="contoso-tenant",
            entra_client_id="app",
            entra_client_secret="a-real-looking-client-secret",
        )
    )["Content-Security-Policy"]
    assert entra.endswith("form-action 'self' https://login.microsoftonline.com"), entra
    assert "frame-ancestors 'none'" in entra and "script-src 'self';" in entra


async def test_requires_admin_key(stack: Stack) -> None:
    for headers in ({}, {"Authorization": "Bearer ssoak_wrong"}, {"Authorization": "Basic x"}):
        response = await stack.http.get("/api/v1/staff", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"] == "not_authenticated"
        assert response.headers["www-authenticate"] == "Bearer"


async def test_admin_key_is_stored_only_as_hash(stack: Stack) -> None:
    key = stack.admin["Authorization"].removeprefix("Bearer ")
    async with stack.sessions() as session:
        hashes = (await session.scalars(select(AdminApiKey.key_hash))).all()
    assert hashes and all(key not in h for h in hashes)


async def test_bootstrap_key(temporal_env: WorkflowEnvironment, sqlite_url: str) -> None:
    bootstrap = "b" * 40
    async with running_stack(temporal_env, sqlite_url, bootstrap_admin_key=bootstrap) as s:
        ok = await s.http.get("/api/v1/staff", headers={"Authorization": f"Bearer {bootstrap}"})
        assert ok.status_code == 200


async def test_create_staff_validates_and_refuses_duplicates(stack: Stack) -> None:
    staff = await stack.create_staff("Jo.Bloggs@Example.com")
    assert staff["external_email_1"] == "jo.bloggs@example.com"
    uuid.UUID(staff["id"])
    duplicate = await stack.http.post(
        "/api/v1/staff",
        headers=stack.admin,
        json={"first_name": "A", "last_name": "B", "external_email_1": "JO.BLOGGS@example.com"},
    )
    assert duplicate.status_code == 409
    assert "already exists" in duplicate.json()["message"]
    bad = await stack.http.post(
        "/api/v1/staff",
        headers=stack.admin,
        json={"first_name": "", "last_name": "B", "external_email_1": "not-an-email"},
    )
    assert bad.status_code == 422
    fields = {tuple(err["loc"]) for err in bad.json()["detail"]}
    assert ("body", "first_name") in fields and ("body", "external_email_1") in fields
    # The same shape as every other error, the message naming each field and why.
    assert bad.json()["error"] == "invalid_request"
    message = bad.json()["message"]
    assert message.startswith("The request is invalid: "), message
    assert "first_name: String should have at least 1 character" in message
    assert "external_email_1: value is not a valid email address" in message
    assert ".." not in message
    extra = await stack.http.post(
        "/api/v1/staff",
        headers=stack.admin,
        json={"first_name": "A", "last_name": "B", "external_email_1": "a@example.com", "admin": True},
    )
    assert extra.status_code == 422
    got = await stack.http.get(f"/api/v1/staff/{staff['id']}", headers=stack.admin)
    assert got.json() == staff
    missing = await stack.http.get(f"/api/v1/staff/{uuid.uuid4()}", headers=stack.admin)
    assert missing.status_code == 404


async def test_list_is_paginated_and_searchable(stack: Stack) -> None:
    for name in ("Ada", "Bea", "Cai"):
        # Emails derived from the name: a random hex address could itself contain "bea".
        await stack.create_staff(email=f"{name.lower()}.zed@example.com", first_name=name, last_name="Zed")
    page = (await stack.http.get("/api/v1/staff?limit=2&offset=0", headers=stack.admin)).json()
    assert page["total"] == 3 and len(page["items"]) == 2 and page["limit"] == 2
    rest = (await stack.http.get("/api/v1/staff?limit=2&offset=2", headers=stack.admin)).json()
    assert len(rest["items"]) == 1
    found = (await stack.http.get("/api/v1/staff?q=bea", headers=stack.admin)).json()
    assert [i["first_name"] for i in found["items"]] == ["Bea"]
    assert found["items"][0]["sso_state"] == "not_started"
    too_big = await stack.http.get("/api/v1/staff?limit=1000", headers=stack.admin)
    assert too_big.status_code == 422


async def test_the_list_shows_each_persons_mfa_obligation_in_one_query(stack: Stack) -> None:
    """Each item carries the same `mfa_obligation` as GET /api/v1/staff/{id}/sso, the page's
    obligations read in one query however many people are listed."""
    now = utcnow()
    names = ("Dua", "Ovi", "Nia")
    due, overdue, none = [await stack.person(first_name=name, last_name="Obliged") for name in names]
    async with stack.sessions() as session:
        for who, step, due_at, by in (
            (due, "reminded", now + timedelta(days=5) - timedelta(hours=1), "admin-key:ops"),
            (overdue, "overdue", now - timedelta(hours=1), None),
        ):
            session.add(
                MfaObligation(
                    staff_id=who.staff_id,
                    run_id=f"run-{step}",
                    policy="required",
                    step=step,
                    started_at=now - timedelta(days=9),
                    due_at=due_at,
                    reminders_sent=1,
                    extended_by=by,
                )
            )
        await session.commit()
    with statements_naming("mfa_obligations") as reads:
        page = await stack.http.get("/api/v1/staff?q=obliged", headers=stack.admin)
    assert page.status_code == 200, page.text
    assert len(reads) == 1, reads
    items = {item["first_name"]: item["mfa_obligation"] for item in page.json()["items"]}
    assert items["Nia"] is None
    assert items["Dua"]["step"] == "reminded" and items["Dua"]["due_text"] == "MFA due in 5 days"
    assert items["Dua"]["extended"] is True and items["Dua"]["extended_by"] == "admin-key:ops"
    assert items["Ovi"]["step"] == "overdue" and items["Ovi"]["due_text"] == "MFA overdue"
    assert items["Ovi"]["extended"] is False and items["Ovi"]["policy"] == "required"
    for who, name in ((due, "Dua"), (overdue, "Ovi"), (none, "Nia")):
        assert (await stack.status(who))["mfa_obligation"] == items[name]


async def test_send_email_then_link_page_then_expiry(stack: Stack) -> None:
    staff = await stack.create_staff()
    assert (await stack.status(staff["id"]))["state"] == "not_started"
    sent = await stack.http.post(f"/api/v1/staff/{staff['id']}/sso-email", headers=stack.admin)
    assert sent.status_code == 202, sent.text
    body = sent.json()
    assert body["workflow_id"] == f"sso-setup-{staff['id']}"
    assert body["email_delivery"] == "pending"
    status = await stack.wait_for(staff["id"], lambda s: s["state"] == "email_sent")
    assert status["email_delivery"] == {"state": "sent", "attempts": 1, "last_error": None}
    assert status["workflow_id"] == body["workflow_id"]
    assert status["requested_by"] == "admin-key:test-admin"

    [token] = await stack.links_sent_to(staff["external_email_1"])
    for _ in range(2):  # a GET never consumes the link
        page = await stack.http.get(f"/sso/setup/{token}")
        assert page.status_code == 200
        assert "agentOS Single Sign-On" in page.text
        assert staff["external_email_1"] in page.text
        assert "Forgot your password?" in page.text
        assert page.headers["cache-control"] == "no-store"
        assert page.headers["referrer-policy"] == "no-referrer"

    await stack.env.sleep(timedelta(minutes=16))
    expired = await stack.wait_for(staff["id"], lambda s: s["state"] == "expired")
    assert expired["link_expires_at"] is not None
    page = await stack.http.get(f"/sso/setup/{token}")
    assert page.status_code == 410
    assert "no longer valid" in page.text and "administrator" in page.text


async def test_sending_again_supersedes(stack: Stack) -> None:
    staff = await stack.create_staff()
    url = f"/api/v1/staff/{staff['id']}/sso-email"
    assert (await stack.http.post(url, headers=stack.admin)).status_code == 202
    await stack.wait_for(staff["id"], lambda s: s["state"] == "email_sent")
    first_run = await stack.env.client.get_workflow_handle(f"sso-setup-{staff['id']}").describe()

    assert (await stack.http.post(url, headers=stack.admin)).status_code == 202
    await stack.wait_for(staff["id"], lambda s: s["state"] == "email_sent")
    old, new = await stack.links_sent_to(staff["external_email_1"])
    assert (await stack.http.get(f"/sso/setup/{old}")).status_code == 410
    assert (await stack.http.get(f"/sso/setup/{new}")).status_code == 200

    old_run = stack.env.client.get_workflow_handle(first_run.id, run_id=first_run.run_id)
    assert (await old_run.result())["state"] == "superseded"
    async with stack.sessions() as session:
        live = await session.scalar(
            select(func.count())
            .select_from(SetupLink)
            .where(SetupLink.staff_id == uuid.UUID(staff["id"]), SetupLink.revoked_at.is_(None))
        )
        actions = (
            await session.scalars(
                select(AuditEvent.action)
                .where(AuditEvent.target == staff["id"])
                .order_by(AuditEvent.occurred_at)
            )
        ).all()
    assert live == 1
    assert actions.count("sso_email.requested") == 2
    assert "sso_setup.superseded" in actions


async def test_cancel(stack: Stack) -> None:
    staff = await stack.create_staff()
    url = f"/api/v1/staff/{staff['id']}/sso-email"
    assert (await stack.http.delete(url, headers=stack.admin)).status_code == 404
    await stack.http.post(url, headers=stack.admin)
    await stack.wait_for(staff["id"], lambda s: s["state"] == "email_sent")
    cancelled = await stack.http.delete(url, headers=stack.admin)
    assert cancelled.status_code == 200
    assert cancelled.json()["state"] == "cancelled"
    assert (await stack.status(staff["id"]))["state"] == "cancelled"
    [token] = await stack.links_sent_to(staff["external_email_1"])
    assert (await stack.http.get(f"/sso/setup/{token}")).status_code == 410
    assert (await stack.http.delete(url, headers=stack.admin)).status_code == 404


async def test_unknown_and_malformed_links(stack: Stack) -> None:
    for token in ("nope", "x" * 5000, "%00", "..%2f..%2fetc"):
        page = await stack.http.get(f"/sso/setup/{token}")
        assert page.status_code == 404, token
        if "%2f" not in token:  # a decoded slash is another route, never a token
            assert "no longer valid" in page.text


async def test_unknown_staff_for_actions(stack: Stack) -> None:
    other = uuid.uuid4()
    for method, path in (("POST", "sso-email"), ("DELETE", "sso-email"), ("GET", "sso"), ("DELETE", "mfa")):
        response = await stack.http.request(method, f"/api/v1/staff/{other}/{path}", headers=stack.admin)
        assert response.status_code == 404
    bad = await stack.http.get("/api/v1/staff/not-a-uuid/sso", headers=stack.admin)
    assert bad.status_code == 422


async def test_reset_mfa_for_a_lost_phone(stack: Stack) -> None:
    person = await make_person(stack.sessions, stack.settings, mfa=True)
    async with stack.sessions() as session:
        await recovery.issue(
            session, stack.settings.secret_key.get_secret_value(), person.account_id, utcnow()
        )
        for _ in range(2):
            await Sessions(stack.settings, session).create("signin", person.staff_id, timedelta(hours=1))
        await session.commit()

    reset = await stack.http.delete(f"/api/v1/staff/{person.staff_id}/mfa", headers=stack.admin)
    assert reset.status_code == 200, reset.text
    assert reset.json() == {"mfa_enabled": False, "sessions_revoked": 2}
    row = await account_row(stack.sessions, person)
    assert row.mfa_enabled_at is None and row.totp_secret_encrypted is None
    async with stack.sessions() as session:
        assert await session.scalar(select(RecoveryCode.id).where(RecoveryCode.account_id == row.id)) is None
        live = await session.scalar(
            select(func.count())
            .select_from(BrowserSession)
            .where(BrowserSession.staff_id == person.staff_id, BrowserSession.revoked_at.is_(None))
        )
        [event] = (
            await session.scalars(
                select(AuditEvent).where(
                    AuditEvent.action == "mfa.reset", AuditEvent.target == str(person.staff_id)
                )
            )
        ).all()
    assert live == 0
    assert event.actor.startswith("admin-key:") and event.details["sessions_revoked"] == 2
    [body] = await emails_with_subject(
        stack.sessions, stack.settings, person.email, "Your agentOS Multi-Factor Authentication was changed"
    )
    assert "an administrator reset your Multi-Factor Authentication" in body
    assert (await stack.status(person))["mfa_enabled"] is False

    again = await stack.http.delete(f"/api/v1/staff/{person.staff_id}/mfa", headers=stack.admin)
    assert again.status_code == 409
    assert again.json()["message"] == "This person has no Multi-Factor Authentication to reset"


async def test_temporal_down_gives_503_and_changes_nothing(sqlite_url: str) -> None:
    settings = make_settings(database_url=sqlite_url, temporal_address="127.0.0.1:1")
    engine = create_engine(sqlite_url)
    async with session_factory(engine)() as session:
        key = await create_admin_key(session, settings, "t")
        await session.commit()
    app = create_app(settings)
    admin = {"Authorization": f"Bearer {key}"}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        staff = (
            await http.post(
                "/api/v1/staff",
                headers=admin,
                json={"first_name": "A", "last_name": "B", "external_email_1": "a@example.com"},
            )
        ).json()
        response = await http.post(f"/api/v1/staff/{staff['id']}/sso-email", headers=admin)
        assert response.status_code == 503
        assert response.json()["message"] == (
            "We can't complete this right now, please try again in a minute"
        )
        status = (await http.get(f"/api/v1/staff/{staff['id']}/sso", headers=admin)).json()
        assert status["state"] == "not_started"
        health = await http.get("/healthz")
        assert health.status_code == 503
        assert health.json()["failed"] == ["temporal"]
    await engine.dispose()


async def test_healthz_ok(stack: Stack) -> None:
    response = await stack.http.get("/healthz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "temporal": "ok"}


async def test_codec_endpoint_needs_admin_key(stack: Stack) -> None:
    body = {"payloads": [{"metadata": {"encoding": "anNvbi9wbGFpbg=="}, "data": "IngiCg=="}]}
    assert (await stack.http.post("/codec/encode", json=body)).status_code == 401
    encoded = await stack.http.post("/codec/encode", json=body, headers=stack.admin)
    assert encoded.status_code == 200
    payload = encoded.json()["payloads"][0]
    assert payload["metadata"]["encoding"] == "YmluYXJ5L2VuY3J5cHRlZA=="  # binary/encrypted
    decoded = await stack.http.post("/codec/decode", json=encoded.json(), headers=stack.admin)
    assert decoded.json() == body
    garbage = await stack.http.post("/codec/decode", content=b"{", headers=stack.admin)
    assert garbage.status_code == 400


async def test_openapi_documents_the_admin_api(stack: Stack) -> None:
    spec = (await stack.http.get("/openapi.json")).json()
    for path in (
        "/api/v1/staff",
        "/api/v1/staff/{staff_id}",
        "/api/v1/staff/{staff_id}/sso-email",
        "/api/v1/staff/{staff_id}/sso",
    ):
        assert path in spec["paths"]
    invalid = spec["paths"]["/api/v1/staff"]["post"]["responses"]["422"]["content"]
    assert invalid["application/json"]["schema"] == {"$ref": "#/components/schemas/HTTPValidationError"}
    documented = spec["components"]["schemas"]["HTTPValidationError"]
    assert documented["required"] == ["error", "message", "detail"]
    assert set(documented["properties"]) == {"error", "message", "detail"}


async def test_dev_mailbox_only_in_development(stack: Stack) -> None:
    assert (await stack.http.get("/dev/mailbox")).status_code == 404


async def test_dev_mailbox_shows_the_outbox_in_development(
    temporal_env: WorkflowEnvironment, sqlite_url: str
) -> None:
    """In development the outbox is a mailbox a new user can read: the list, then the email
    with its button and plain-text part, the link working."""
    async with running_stack(temporal_env, sqlite_url, env="development") as s:
        assert (await s.http.get("/dev/mailbox")).status_code == 200
        staff = await s.create_staff()
        to = staff["external_email_1"]
        sent = await s.http.post(f"/api/v1/staff/{staff['id']}/sso-email", headers=s.admin)
        assert sent.status_code == 202, sent.text
        await s.wait_for(staff["id"], lambda st: st["state"] == "email_sent")
        [token] = await s.links_sent_to(to)

        mailbox = await s.http.get("/dev/mailbox")
        assert mailbox.status_code == 200
        assert to in mailbox.text and "Welcome to agentOS Single Sign-On" in mailbox.text
        [email_id] = re.findall(r'href="/dev/mailbox/([0-9a-f-]{36})"', mailbox.text)
        shown = await s.http.get(f"/dev/mailbox/{email_id}")
        assert shown.status_code == 200
        assert "Set Up Single Sign-On" in shown.text
        assert f"https://sso.example.test/sso/setup/{token}" in shown.text
        assert "15 minutes" in shown.text
        missing = await s.http.get(f"/dev/mailbox/{uuid.uuid4()}")
        assert missing.status_code == 404
        assert (await s.http.get(f"/sso/setup/{token}")).status_code == 200


class _RefusingRecipients:
    """An SMTP server that refuses every recipient for good (550)."""

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        return "550 5.1.1 mailbox unavailable"


async def test_rejected_recipient_fails_the_setup_with_the_reason(
    temporal_env: WorkflowEnvironment, sqlite_url: str
) -> None:
    """A permanent SMTP refusal is not retried: the status says failed, with the reason."""
    from aiosmtpd.controller import Controller

    from tests.support.stack import free_port

    port = free_port()
    controller = Controller(_RefusingRecipients(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        async with running_stack(
            temporal_env, sqlite_url, email_backend="smtp", smtp_host="127.0.0.1", smtp_port=port
        ) as s:
            staff = await s.create_staff()
            sent = await s.http.post(f"/api/v1/staff/{staff['id']}/sso-email", headers=s.admin)
            assert sent.status_code == 202, sent.text
            status = await s.wait_for(staff["id"], lambda st: st["state"] == "failed")
            assert status["email_delivery"]["state"] == "failed"
            assert status["email_delivery"]["attempts"] == 1
            assert "550" in status["email_delivery"]["last_error"]
            assert "550" in status["failure_reason"]
            assert "could not be delivered" in status["failure_reason"]
            assert staff["external_email_1"] not in status["failure_reason"]
            assert status["workflow_id"] == f"sso-setup-{staff['id']}"
            handle = s.env.client.get_workflow_handle(status["workflow_id"])
            assert (await handle.result())["state"] == "failed"
            async with s.sessions() as session:
                live = await session.scalar(
                    select(func.count())
                    .select_from(SetupLink)
                    .where(SetupLink.staff_id == uuid.UUID(staff["id"]), SetupLink.revoked_at.is_(None))
                )
            assert live == 0
            # A new email may be sent after a failure (and fails the same way). Its flow must
            # end before the worker stops: a flow terminated with an activity still running
            # stops the shared time-skipping server from ever skipping time again.
            again = await s.http.post(f"/api/v1/staff/{staff['id']}/sso-email", headers=s.admin)
            assert again.status_code == 202, again.text
            second = s.env.client.get_workflow_handle(status["workflow_id"])
            assert (await asyncio.wait_for(second.result(), 20))["state"] == "failed"
            assert (await s.status(staff["id"]))["state"] == "failed"
    finally:
        controller.stop()


async def test_sends_per_person_are_capped(temporal_env: WorkflowEnvironment, sqlite_url: str) -> None:
    async with running_stack(temporal_env, sqlite_url, setup_email_limit=2) as s:
        staff = await s.create_staff()
        url = f"/api/v1/staff/{staff['id']}/sso-email"
        for _ in range(2):
            assert (await s.http.post(url, headers=s.admin)).status_code == 202
            await s.wait_for(staff["id"], lambda st: st["state"] == "email_sent")
        third = await s.http.post(url, headers=s.admin)
        assert third.status_code == 429
        assert int(third.headers["retry-after"]) > 0
        assert "2 Single Sign-On emails" in third.json()["message"]
        assert len(await s.links_sent_to(staff["external_email_1"])) == 2
        assert (await s.status(staff["id"]))["state"] == "email_sent"


async def test_admin_api_is_rate_limited(temporal_env: WorkflowEnvironment, sqlite_url: str) -> None:
    async with running_stack(temporal_env, sqlite_url, admin_rate_limit=3, auth_failure_limit=2) as s:
        codes = [(await s.http.get("/api/v1/staff", headers=s.admin)).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        bad = {"Authorization": "Bearer ssoak_guess"}
        codes = [(await s.http.get("/api/v1/staff", headers=bad)).status_code for _ in range(3)]
        assert codes == [401, 401, 429]


async def test_an_organisations_keys_share_its_rate_limit(sqlite_url: str) -> None:
    """One agency's keys together can't take more than SSO_ORG_ADMIN_RATE_LIMIT; another
    agency and the operators are not slowed by it, and the 429 says which limit it was."""
    async with running_app(sqlite_url, admin_rate_limit=2, org_admin_rate_limit=3) as s:
        harbour = await add_org(s.sessions, "Harbour Lettings")
        quay = await add_org(s.sessions, "Quay Homes")
        async with s.sessions() as session:
            first = await create_admin_key(session, s.settings, "a", harbour)
            second = await create_admin_key(session, s.settings, "b", harbour)
            other = await create_admin_key(session, s.settings, "c", quay)
            await session.commit()

        async def get(key: str) -> httpx.Response:
            return await s.http.get("/api/v1/staff", headers={"Authorization": f"Bearer {key}"})

        assert [(await get(first)).status_code for _ in range(2)] == [200, 200]
        per_key = await get(first)
        assert per_key.status_code == 429 and "with this admin key" in per_key.json()["message"]
        assert (await get(second)).status_code == 200  # the organisation's third
        per_org = await get(second)
        assert per_org.status_code == 429 and int(per_org.headers["retry-after"]) > 0
        assert "for this organisation" in per_org.json()["message"]
        assert (await get(other)).status_code == 200
        assert (await s.http.get("/api/v1/staff", headers=s.admin)).status_code == 200
