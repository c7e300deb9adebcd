"""Refresh tokens, revocation and introspection, with authlib's OAuth 2 client as the app:
rotation on every use, a rotated token presented again ending its family (RFC 9700
§4.14.2), tokens ending with the browser session they came from, per-client lifetimes,
RFC 7009 and RFC 7662. docs/security.md §32 is what these prove."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from authlib.integrations.base_client import OAuthError
from sqlalchemy import event, select, update
from sqlalchemy.engine import Engine

import api.services.oidc as oidc_service
from core.accounts import revoke_sessions
from core.models import OidcGrant, SsoAccount, utcnow
from tests.support.accounts import PUBLIC_URL, Browser, move_session
from tests.support.harness import Stack, running_app
from tests.support.oidc import (
    App,
    Authorization,
    authorization,
    client_post,
    code_for,
    database_text,
    redeem,
    register,
    signed_in_with_app,
    userinfo,
)

pytestmark = [pytest.mark.pages, pytest.mark.asyncio(loop_scope="session")]
OFFLINE_SCOPE = "openid email profile offline_access"
REFRESHING = {"grant_types": ["authorization_code", "refresh_token"]}


@pytest_asyncio.fixture(loop_scope="session")
async def app_stack(database_url: str) -> AsyncIterator[Stack]:
    async with running_app(database_url) as stack:
        yield stack


async def offline(stack: Stack, **metadata: Any) -> tuple[App, Browser, dict[str, Any]]:
    """An app allowed refresh tokens, a signed-in browser, and the app's first tokens."""
    _person, app, browser = await signed_in_with_app(stack, **{**REFRESHING, **metadata})
    request = authorization(app, scope=OFFLINE_SCOPE)
    token = await redeem(stack, request, await code_for(browser, request))
    assert token["refresh_token"].startswith("ssort_"), token
    return app, browser, token


async def refreshed(stack: Stack, app: App, refresh_token: str, **extra: str) -> dict[str, Any]:
    async with app.oauth(stack) as client:
        token = await client.refresh_token(f"{PUBLIC_URL}/oidc/token", refresh_token=refresh_token, **extra)
    return dict(token)


async def refresh_error(stack: Stack, app: App, refresh_token: str) -> str:
    with pytest.raises(OAuthError) as refused:
        await refreshed(stack, app, refresh_token)
    return str(refused.value.error)


async def test_a_refresh_token_rotates_on_every_use(app_stack: Stack) -> None:
    app, _browser, first = await offline(app_stack)
    assert "offline_access" in first["scope"].split()
    second = await refreshed(app_stack, app, first["refresh_token"])
    assert second["refresh_token"] != first["refresh_token"] and second["refresh_token"].startswith("ssort_")
    assert second["access_token"] != first["access_token"] and second["expires_in"] == 600
    info = await userinfo(app_stack, second["access_token"])
    assert info.status_code == 200 and info.json()["email"]
    narrowed = await refreshed(app_stack, app, second["refresh_token"], scope="openid")
    assert narrowed["scope"] == "openid"
    # The new refresh token keeps the scope granted, not the narrowed one.
    again = await refreshed(app_stack, app, narrowed["refresh_token"], scope=OFFLINE_SCOPE)
    assert again["scope"] == OFFLINE_SCOPE


async def test_a_public_client_refreshes_with_rotation_too(app_stack: Stack) -> None:
    app, _browser, first = await offline(app_stack, token_endpoint_auth_method="none")
    second = await refreshed(app_stack, app, first["refresh_token"])
    assert await refresh_error(app_stack, app, first["refresh_token"]) == "invalid_grant"
    assert await refresh_error(app_stack, app, second["refresh_token"]) == "invalid_grant"


async def test_offline_access_needs_the_refresh_token_grant(app_stack: Stack) -> None:
    _person, app, browser = await signed_in_with_app(app_stack)
    request = authorization(app, scope=OFFLINE_SCOPE)
    token = await redeem(app_stack, request, await code_for(browser, request))
    assert "refresh_token" not in token and token["scope"] == "openid email profile"
    # Allowed the grant but not asked for offline_access: no refresh token either.
    _person, app, browser = await signed_in_with_app(app_stack, **REFRESHING)
    request = authorization(app)
    assert "refresh_token" not in await redeem(app_stack, request, await code_for(browser, request))


async def test_a_rotated_refresh_token_presented_again_ends_its_family(app_stack: Stack) -> None:
    app, _browser, first = await offline(app_stack)
    second = await refreshed(app_stack, app, first["refresh_token"])
    assert await refresh_error(app_stack, app, first["refresh_token"]) == "invalid_grant"
    # The newer token (the app's, or a thief's) and its access token are dead too.
    assert await refresh_error(app_stack, app, second["refresh_token"]) == "invalid_grant"
    assert (await userinfo(app_stack, second["access_token"])).status_code == 401
    assert (await userinfo(app_stack, first["access_token"])).status_code == 401


async def test_a_refresh_token_is_for_its_own_client_only(app_stack: Stack) -> None:
    _app, _browser, first = await offline(app_stack)
    other = await register(app_stack, **REFRESHING)
    assert await refresh_error(app_stack, other, first["refresh_token"]) == "invalid_grant"
    assert await refresh_error(app_stack, other, "ssort_not-a-token") == "invalid_grant"


async def test_signing_out_ends_the_sessions_refresh_tokens(app_stack: Stack) -> None:
    app, browser, first = await offline(app_stack)
    second = await refreshed(app_stack, app, first["refresh_token"])
    page = await browser.get("/sso/account")
    assert (await browser.submit(page, "/sso/logout")).status_code == 303
    assert await refresh_error(app_stack, app, second["refresh_token"]) == "invalid_grant"
    assert (await userinfo(app_stack, second["access_token"])).status_code == 401


async def test_a_timed_out_browser_keeps_them_and_a_reset_ends_them(app_stack: Stack) -> None:
    app, browser, first = await offline(app_stack)
    async with app_stack.sessions() as session:
        grant = await session.scalar(select(OidcGrant).order_by(OidcGrant.created_at.desc()).limit(1))
        assert grant is not None and grant.session_hash is not None
        session_hash, staff_id = grant.session_hash, grant.staff_id
    idle = app_stack.settings.session_idle_ttl + timedelta(seconds=1)
    await move_session(app_stack.sessions, session_hash, idle, "last_seen_at")
    assert (await browser.get("/sso/account")).status_code == 303  # timed out in the browser
    second = await refreshed(app_stack, app, first["refresh_token"])
    # A password reset (or an admin's Sign out everywhere) ends every session, timed out or not.
    async with app_stack.sessions() as session:
        await revoke_sessions(session, staff_id, utcnow())
        await session.commit()
    assert await refresh_error(app_stack, app, second["refresh_token"]) == "invalid_grant"


async def test_idle_and_absolute_lifetimes_are_the_clients(
    app_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, _browser, first = await offline(
        app_stack, refresh_token_idle_lifetime=600, refresh_token_absolute_lifetime=1000
    )
    assert app.registration["refresh_token_idle_lifetime"] == 600
    start = utcnow()
    monkeypatch.setattr(oidc_service, "utcnow", lambda: start + timedelta(seconds=590))
    second = await refreshed(app_stack, app, first["refresh_token"])
    monkeypatch.setattr(oidc_service, "utcnow", lambda: start + timedelta(seconds=1195))
    assert await refresh_error(app_stack, app, second["refresh_token"]) == "invalid_grant"  # idle
    monkeypatch.undo()
    app, _browser, first = await offline(
        app_stack, refresh_token_idle_lifetime=600, refresh_token_absolute_lifetime=1000
    )
    start = utcnow()
    for seconds in (500, 990):
        monkeypatch.setattr(oidc_service, "utcnow", lambda s=seconds: start + timedelta(seconds=s))
        first = await refreshed(app_stack, app, first["refresh_token"])
    monkeypatch.setattr(oidc_service, "utcnow", lambda: start + timedelta(seconds=1010))
    assert await refresh_error(app_stack, app, first["refresh_token"]) == "invalid_grant"  # absolute


async def test_the_admin_api_takes_refresh_lifetimes_and_refuses_odd_ones(app_stack: Stack) -> None:
    http, admin = app_stack.http, app_stack.admin
    app = await register(app_stack)
    assert app.registration["refresh_token_idle_lifetime"] == 14 * 86400
    assert app.registration["refresh_token_absolute_lifetime"] == 90 * 86400
    path = f"/api/v1/clients/{app.client_id}"
    patched = await http.patch(path, json={**REFRESHING, "refresh_token_idle_lifetime": 3600}, headers=admin)
    assert patched.status_code == 200, patched.text
    assert patched.json()["refresh_token_idle_lifetime"] == 3600
    assert patched.json()["grant_types"] == REFRESHING["grant_types"]
    for body, status in [
        ({"refresh_token_idle_lifetime": 100 * 86400}, 400),  # longer than absolute
        ({"refresh_token_absolute_lifetime": 30}, 422),
        ({"grant_types": ["refresh_token"]}, 400),
    ]:
        response = await http.patch(path, json=body, headers=admin)
        assert response.status_code == status, (body, response.text)


async def test_revocation_ends_the_grant_whichever_token_is_given(app_stack: Stack) -> None:
    app, _browser, first = await offline(app_stack)
    revoked = await client_post(
        app_stack, app, "/oidc/revoke", token=first["refresh_token"], token_type_hint="refresh_token"
    )
    assert revoked.status_code == 200 and revoked.json() == {}
    assert await refresh_error(app_stack, app, first["refresh_token"]) == "invalid_grant"
    assert (await userinfo(app_stack, first["access_token"])).status_code == 401

    app, _browser, first = await offline(app_stack, token_endpoint_auth_method="none")
    assert (await client_post(app_stack, app, "/oidc/revoke", token=first["access_token"])).status_code == 200
    assert (await userinfo(app_stack, first["access_token"])).status_code == 401
    assert await refresh_error(app_stack, app, first["refresh_token"]) == "invalid_grant"
    # Unknown and already revoked tokens: 200 all the same (RFC 7009 §2.2).
    for token in ("nothing", first["access_token"], first["refresh_token"]):
        assert (await client_post(app_stack, app, "/oidc/revoke", token=token)).status_code == 200


async def test_one_app_cannot_revoke_anothers_tokens(app_stack: Stack) -> None:
    app, _browser, first = await offline(app_stack)
    other = await register(app_stack, **REFRESHING)
    refused = await client_post(app_stack, other, "/oidc/revoke", token=first["refresh_token"])
    assert refused.status_code == 400
    assert (await refreshed(app_stack, app, first["refresh_token"]))["refresh_token"]
    impostor = App(app.client_id, "wrong", app.redirect_uri, app.auth_method, {})
    unauthenticated = await client_post(app_stack, impostor, "/oidc/revoke", token="x")
    assert unauthenticated.status_code == 401


async def test_introspection_for_confidential_clients_about_their_own_tokens(app_stack: Stack) -> None:
    app, _browser, first = await offline(app_stack)
    for token, kind in ((first["access_token"], "access_token"), (first["refresh_token"], "refresh_token")):
        answer = (await client_post(app_stack, app, "/oidc/introspect", token=token)).json()
        assert answer["active"] is True and answer["token_type"] == kind, answer
        assert answer["client_id"] == app.client_id and answer["iss"] == PUBLIC_URL
        assert answer["sub"] and answer["sid"] and answer["exp"] > answer["iat"]
        assert "offline_access" in answer["scope"].split()
    other = await register(app_stack, **REFRESHING)
    assert (await client_post(app_stack, other, "/oidc/introspect", token=first["access_token"])).json() == {
        "active": False
    }
    second = await refreshed(app_stack, app, first["refresh_token"])
    rotated = await client_post(app_stack, app, "/oidc/introspect", token=first["refresh_token"])
    assert rotated.json() == {"active": False}
    current = await client_post(app_stack, app, "/oidc/introspect", token=second["refresh_token"])
    assert current.json()["active"] is True

    public, _browser, token = await offline(app_stack, token_endpoint_auth_method="none")
    refused = await client_post(app_stack, public, "/oidc/introspect", token=token["access_token"])
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"


async def test_no_refresh_token_in_the_database_or_logs(
    app_stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app, _browser, first = await offline(app_stack)
    second = await refreshed(app_stack, app, first["refresh_token"])
    await client_post(app_stack, app, "/oidc/introspect", token=second["refresh_token"])
    await client_post(app_stack, app, "/oidc/revoke", token=second["refresh_token"])
    text = await database_text(app_stack)
    for token in (first["refresh_token"], second["refresh_token"]):
        secret_part = token.removeprefix("ssort_")
        assert secret_part not in text and secret_part not in caplog.text


async def test_a_refused_refresh_rotates_nothing_and_a_switched_off_app_or_person_gets_nothing(
    app_stack: Stack,
) -> None:
    """The token, its grant, its app and its person come from one query: each still decides."""
    app, _browser, first = await offline(app_stack)
    patch = f"/api/v1/clients/{app.client_id}"
    await app_stack.http.patch(patch, json={"disabled": True}, headers=app_stack.admin)
    assert await refresh_error(app_stack, app, first["refresh_token"]) == "invalid_client"
    await app_stack.http.patch(patch, json={"disabled": False}, headers=app_stack.admin)
    wrong = dataclasses.replace(app, client_secret="ssocs_not-the-secret")
    assert await refresh_error(app_stack, wrong, first["refresh_token"]) == "invalid_client"
    # Neither refusal spent the token: it still refreshes, once.
    second = await refreshed(app_stack, app, first["refresh_token"])
    renewed = await app_stack.http.post(f"{patch}/secret", headers=app_stack.admin)
    old_secret, app = app, dataclasses.replace(app, client_secret=renewed.json()["client_secret"])
    assert await refresh_error(app_stack, old_secret, second["refresh_token"]) == "invalid_client"
    third = await refreshed(app_stack, app, second["refresh_token"])
    async with app_stack.sessions() as session:
        grant = await session.scalar(select(OidcGrant).order_by(OidcGrant.created_at.desc()).limit(1))
        assert grant is not None
        await session.execute(
            update(SsoAccount).where(SsoAccount.staff_id == grant.staff_id).values(status="disabled")
        )
        await session.commit()
    # The person disabled without their grants revoked (a disable landing mid-refresh): the
    # grant is what is no longer valid, RFC 6749 §5.2 (authlib alone says invalid_request).
    assert await refresh_error(app_stack, app, third["refresh_token"]) == "invalid_grant"


async def test_a_refresh_is_one_read_and_two_writes(app_stack: Stack) -> None:
    """The token with its grant, app and person in one SELECT; the rotation and the new token
    (no audit row: SSO_OIDC_AUDIT_REFRESHES is off by default); the signing keys as the
    process already holds them."""
    app, _browser, first = await offline(app_stack)
    statements: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        verb = statement.split(None, 1)[0].upper()
        if verb in ("SELECT", "INSERT", "UPDATE", "DELETE") and statement.strip() != "SELECT 1":
            statements.append(verb)

    event.listen(Engine, "before_cursor_execute", seen)
    try:
        await refreshed(app_stack, app, first["refresh_token"])
    finally:
        event.remove(Engine, "before_cursor_execute", seen)
    assert sorted(statements) == ["INSERT", "SELECT", "UPDATE"]


async def test_a_form_posted_as_multipart_works_and_too_many_fields_are_refused(app_stack: Stack) -> None:
    app, _browser, first = await offline(app_stack)
    assert app.client_secret is not None
    async with httpx.AsyncClient(transport=app_stack.transport, base_url=PUBLIC_URL) as http:
        multipart = await http.post(
            "/oidc/token",
            files={"grant_type": (None, "refresh_token"), "refresh_token": (None, first["refresh_token"])},
            auth=(app.client_id, app.client_secret),
        )
        assert multipart.status_code == 200, multipart.text
        crowded = "&".join(f"f{i}=x" for i in range(1001))
        refused = await http.post(
            "/oidc/token",
            content=f"grant_type=refresh_token&{crowded}",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            auth=(app.client_id, app.client_secret),
        )
        assert refused.status_code == 400 and "Too many fields" in refused.text


async def redeem_error(stack: Stack, request: Authorization, code: str) -> str:
    with pytest.raises(OAuthError) as refused:
        await redeem(stack, request, code)
    return str(refused.value.error)


async def test_a_disabled_persons_refresh_tokens_and_codes_are_invalid_grants(app_stack: Stack) -> None:
    """A leaver disabled through the admin API: their app's refresh token, and a code issued
    before the disable but redeemed after it, are refused as invalid grants (RFC 6749 §5.2),
    and enabling them again brings neither back."""
    app, browser, first = await offline(app_stack)
    pending = authorization(app, scope=OFFLINE_SCOPE)
    code = await code_for(browser, pending)
    async with app_stack.sessions() as session:
        grant = await session.scalar(select(OidcGrant).order_by(OidcGrant.created_at.desc()).limit(1))
        assert grant is not None
    staff = f"/api/v1/staff/{grant.staff_id}"
    assert (await app_stack.http.post(f"{staff}/disable", headers=app_stack.admin)).status_code == 200
    assert await refresh_error(app_stack, app, first["refresh_token"]) == "invalid_grant"
    assert await redeem_error(app_stack, pending, code) == "invalid_grant"
    assert (await userinfo(app_stack, first["access_token"])).status_code == 401
    assert (await app_stack.http.post(f"{staff}/enable", headers=app_stack.admin)).status_code == 200
    assert await refresh_error(app_stack, app, first["refresh_token"]) == "invalid_grant"


async def test_a_code_for_a_person_disabled_before_redemption_is_an_invalid_grant(app_stack: Stack) -> None:
    """Disabled between the authorization and the redemption, the code's grant not yet revoked
    (the disable's own revocation is the test above): the person decides on their own."""
    _person, app, browser = await signed_in_with_app(app_stack, **REFRESHING)
    request = authorization(app, scope=OFFLINE_SCOPE)
    code = await code_for(browser, request)
    async with app_stack.sessions() as session:
        grant = await session.scalar(select(OidcGrant).where(OidcGrant.client_id == app.client_id))
        assert grant is not None and grant.revoked_at is None
        await session.execute(
            update(SsoAccount).where(SsoAccount.staff_id == grant.staff_id).values(status="disabled")
        )
        await session.commit()
    assert await redeem_error(app_stack, request, code) == "invalid_grant"
    async with app_stack.sessions() as session:
        unredeemed = await session.get(OidcGrant, grant.id)
        assert unredeemed is not None and unredeemed.redeemed_at is None
