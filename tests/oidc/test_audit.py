"""The provider's audit rows (docs/security.md §28): each code issued, each token redemption
and each refused one (a reused code, a wrong PKCE verifier, a wrong secret), each refresh and
each refused one (with why) is recorded with the app's client_id and the staff member, and
never with the code, token (nor its digest) or secret."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import select, update

from core.models import AuditEvent, Organisation, SsoAccount
from core.oidc.refresh import refresh_hash
from tests.support.harness import Stack, running_app
from tests.support.oidc import (
    App,
    authorization,
    code_for,
    redeem,
    register,
    signed_in_browser,
    signed_in_with_app,
    token_error,
    token_form,
)
from tests.support.orgs import add_org

pytestmark = [pytest.mark.pages, pytest.mark.asyncio(loop_scope="session")]


@pytest_asyncio.fixture(loop_scope="session")
async def app_stack(database_url: str) -> AsyncIterator[Stack]:
    async with running_app(database_url, oidc_audit_refreshes=True) as stack:
        yield stack


@pytest_asyncio.fixture(loop_scope="session")
async def default_stack(database_url: str) -> AsyncIterator[Stack]:
    async with running_app(database_url) as stack:
        yield stack


async def oidc_events(stack: Stack) -> list[AuditEvent]:
    async with stack.sessions() as db:
        rows = await db.scalars(
            select(AuditEvent).where(AuditEvent.action.like("oidc.%")).order_by(AuditEvent.occurred_at)
        )
        return list(rows.all())


async def test_codes_redemptions_and_refusals_are_audited_without_secrets(app_stack: Stack) -> None:
    person, app, browser = await signed_in_with_app(app_stack)
    assert app.client_secret is not None
    staff = str(person.staff_id)

    first = authorization(app)
    code = await code_for(browser, first)
    token = await redeem(app_stack, first, code)
    reused = await token_error(app_stack, token_form(first, code), auth=(app.client_id, app.client_secret))
    assert reused.status_code == 400

    second = authorization(app)
    code2 = await code_for(browser, second)
    wrong_pkce = await token_error(
        app_stack, token_form(second, code2, code_verifier="v" * 50), auth=(app.client_id, app.client_secret)
    )
    assert wrong_pkce.status_code == 400
    third = authorization(app)
    code3 = await code_for(browser, third)
    wrong_secret = await token_error(app_stack, token_form(third, code3), auth=(app.client_id, "ssocs_wrong"))
    assert wrong_secret.status_code == 401

    events = await oidc_events(app_stack)
    seen = [(e.action, e.outcome, e.details.get("reason")) for e in events]
    assert seen == [
        ("oidc.code_issued", "success", None),
        ("oidc.token_issued", "success", None),
        ("oidc.token_refused", "refused", "code_reused"),
        ("oidc.code_issued", "success", None),
        ("oidc.token_refused", "refused", "invalid_grant"),
        ("oidc.code_issued", "success", None),
        ("oidc.token_refused", "refused", "invalid_client"),
    ]
    assert all(e.target == staff and e.details["client_id"] == app.client_id for e in events)
    assert all(e.ip for e in events)
    assert events[0].actor == f"staff:{staff}" and events[0].details["scope"] == "openid email profile"
    assert events[1].actor == f"oidc-client:{app.client_id}"
    assert all(e.actor.startswith("ip:") for e in events if e.outcome == "refused")

    async with app_stack.sessions() as db:
        rows = (await db.execute(AuditEvent.__table__.select())).all()
    table = "\n".join(repr(tuple(row)) for row in rows)
    for secret in (
        code,
        code2,
        code3,
        token["access_token"],
        token["id_token"],
        app.client_secret,
        "ssocs_wrong",
    ):
        assert secret not in table
    for part in token["access_token"].split(".")[1:]:
        assert part not in table


async def test_a_refused_request_for_an_unknown_code_is_audited_by_its_address(app_stack: Stack) -> None:
    _person, app, _browser = await signed_in_with_app(app_stack)
    assert app.client_secret is not None
    answer = await token_error(
        app_stack,
        {"grant_type": "authorization_code", "code": "made-up-code", "redirect_uri": app.redirect_uri},
        auth=(app.client_id, app.client_secret),
    )
    assert answer.status_code == 400
    [event] = [e for e in await oidc_events(app_stack) if e.action == "oidc.token_refused"]
    assert event.target is None and event.details == {"client_id": app.client_id, "reason": "invalid_grant"}
    assert "made-up-code" not in repr(event.details)


REFRESHING = {"grant_types": ["authorization_code", "refresh_token"]}


async def refresh_token_of(stack: Stack, app: App, email: str) -> str:
    """The refresh token `app` gets for the person signed in as `email`."""
    browser = await signed_in_browser(stack, email)
    request = authorization(app, scope="openid email offline_access")
    token = await redeem(stack, request, await code_for(browser, request))
    return str(token["refresh_token"])


async def refresh(stack: Stack, app: App, refresh_token: str) -> httpx.Response:
    assert app.client_secret is not None
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    return await token_error(stack, form, auth=(app.client_id, app.client_secret))


async def refresh_events(stack: Stack) -> list[tuple[str, str | None, dict[str, Any]]]:
    return [
        (e.outcome, e.target, e.details)
        for e in await oidc_events(stack)
        if e.action in ("oidc.token_refreshed", "oidc.refresh_refused")
    ]


async def test_refreshes_and_refused_refreshes_are_audited_with_why_and_without_tokens(
    app_stack: Stack,
) -> None:
    org_id = await add_org(app_stack.sessions, "Harbour Lettings")
    person = await app_stack.person(org_id=org_id)
    app = await register(app_stack, **REFRESHING)
    other = await register(app_stack, **REFRESHING)
    staff, client = str(person.staff_id), {"client_id": app.client_id}
    first = await refresh_token_of(app_stack, app, person.email)

    renewed = await refresh(app_stack, app, first)
    assert renewed.status_code == 200, renewed.text
    second = renewed.json()["refresh_token"]
    wrong_secret = dataclasses.replace(app, client_secret="ssocs_wrong")
    assert (await refresh(app_stack, wrong_secret, second)).status_code == 401
    assert (await refresh(app_stack, other, second)).status_code == 400
    assert (await refresh(app_stack, app, "ssort_made-up")).status_code == 400
    assert (await refresh(app_stack, app, first)).status_code == 400  # reused: the family ends
    assert (await refresh(app_stack, app, second)).status_code == 400
    assert await refresh_events(app_stack) == [
        ("success", staff, client),
        ("refused", staff, {**client, "reason": "invalid_client"}),
        ("refused", staff, {"client_id": other.client_id, "reason": "wrong_client"}),
        ("refused", None, {**client, "reason": "unknown_token"}),
        ("refused", staff, {**client, "reason": "reused"}),
        ("refused", staff, {**client, "reason": "revoked"}),
    ]
    [refreshed] = [e for e in await oidc_events(app_stack) if e.action == "oidc.token_refreshed"]
    assert refreshed.actor == f"oidc-client:{app.client_id}" and refreshed.ip
    refused = [e for e in await oidc_events(app_stack) if e.action == "oidc.refresh_refused"]
    assert all(e.actor.startswith("ip:") and e.ip for e in refused)

    # The person disabled, then their organisation suspended, with their grants left live (a
    # change landing mid-refresh): refused for what changed, each time.
    third = await refresh_token_of(app_stack, app, person.email)
    async with app_stack.sessions() as db:
        await db.execute(
            update(SsoAccount).where(SsoAccount.staff_id == person.staff_id).values(status="disabled")
        )
        await db.commit()
    assert (await refresh(app_stack, app, third)).status_code == 400
    async with app_stack.sessions() as db:
        await db.execute(
            update(SsoAccount).where(SsoAccount.staff_id == person.staff_id).values(status="active")
        )
        await db.execute(update(Organisation).where(Organisation.id == org_id).values(status="suspended"))
        await db.commit()
    assert (await refresh(app_stack, app, third)).status_code == 400
    reasons = [details.get("reason") for _, _, details in await refresh_events(app_stack)]
    assert reasons[-2:] == ["account_disabled", "org_suspended"]

    async with app_stack.sessions() as db:
        rows = (await db.execute(AuditEvent.__table__.select())).all()
    table = "\n".join(repr(tuple(row)) for row in rows)
    for token in (first, second, third):
        assert token not in table and refresh_hash(app_stack.settings, token) not in table
    assert "ssort_made-up" not in table and "ssocs_wrong" not in table


async def test_by_default_only_refused_refreshes_are_audited(default_stack: Stack) -> None:
    """Apps refresh every few minutes per session: a successful refresh is audited only with
    SSO_OIDC_AUDIT_REFRESHES on; a refused one always is."""
    person = await default_stack.person()
    app = await register(default_stack, **REFRESHING)
    first = await refresh_token_of(default_stack, app, person.email)
    renewed = await refresh(default_stack, app, first)
    assert renewed.status_code == 200, renewed.text
    assert await refresh_events(default_stack) == []
    assert (await refresh(default_stack, app, first)).status_code == 400  # reused
    assert await refresh_events(default_stack) == [
        ("refused", str(person.staff_id), {"client_id": app.client_id, "reason": "reused"})
    ]
