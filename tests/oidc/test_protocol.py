"""The OpenID Connect provider end to end in-process, on SQLite and PostgreSQL: apps
registered through the admin API, a browser's sign-in session, and authlib's OAuth 2 client
at the token endpoint. docs/security.md §31, §33 and §35 are what these prove."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from joserfc import jwt
from sqlalchemy import select, update

import api.services.oidc as oidc_service
from core.codec import keyring_from_settings
from core.models import BrowserSession, OidcGrant, OidcSigningKey, SsoAccount, utcnow
from tests.support.accounts import PUBLIC_URL, Person, hidden_fields, page_text, sign_in
from tests.support.harness import Stack, running_app
from tests.support.oidc import (
    authorization,
    callback_params,
    code_for,
    database_text,
    id_token_claims,
    keys,
    redeem,
    register,
    signed_in_browser,
    signed_in_with_app,
    token_error,
    token_form,
    userinfo,
)
from tests.support.passkey_key import soft_key, store_passkey

pytestmark = [pytest.mark.pages, pytest.mark.asyncio(loop_scope="session")]


@pytest_asyncio.fixture(loop_scope="session")
async def app_stack(database_url: str) -> AsyncIterator[Stack]:
    async with running_app(database_url) as stack:
        yield stack


async def test_discovery_names_every_endpoint_and_only_the_code_flow(app_stack: Stack) -> None:
    document = (await app_stack.http.get("/.well-known/openid-configuration")).json()
    assert document["issuer"] == PUBLIC_URL
    assert document["response_types_supported"] == ["code"]
    assert document["grant_types_supported"] == ["authorization_code", "refresh_token"]
    assert document["revocation_endpoint"] == f"{PUBLIC_URL}/oidc/revoke"
    assert document["introspection_endpoint"] == f"{PUBLIC_URL}/oidc/introspect"
    assert "none" not in document["introspection_endpoint_auth_methods_supported"]
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert document["authorization_response_iss_parameter_supported"] is True
    assert document["jwks_uri"] == f"{PUBLIC_URL}/oidc/jwks"
    jwks = (await app_stack.http.get("/oidc/jwks")).json()["keys"]
    assert {key["alg"] for key in jwks} == {"RS256", "ES256"}
    assert not any(name in key for key in jwks for name in ("d", "p", "q", "dp", "dq", "qi"))


async def test_a_signed_in_browser_gets_a_code_and_the_app_its_tokens(app_stack: Stack) -> None:
    person, app, browser = await signed_in_with_app(app_stack)
    request = authorization(app)
    code = await code_for(browser, request)
    token = await redeem(app_stack, request, code)
    assert token["token_type"].lower() == "bearer" and token["expires_in"] == 600
    claims = await id_token_claims(app_stack.http, request, token["id_token"])
    assert claims["sub"] == str(person.staff_id) and claims["sub"] != person.email
    assert claims["email"] == person.email and claims["email_verified"] is True
    assert (claims["given_name"], claims["family_name"]) == (person.first_name, person.last_name)
    assert claims["name"] == f"{person.first_name} {person.last_name}"
    assert claims["amr"] == ["pwd"] and claims["acr"] == "pwd" and claims["roles"] == []
    assert claims["sid"] and claims["auth_time"] <= claims["iat"]
    assert claims["_header"]["alg"] == "RS256"
    access = jwt.decode(token["access_token"], await keys(app_stack.http))
    assert access.header["typ"] == "at+jwt"
    assert access.claims["client_id"] == app.client_id and access.claims["sub"] == str(person.staff_id)
    assert access.claims["exp"] - access.claims["iat"] == 600
    info = await userinfo(app_stack, token["access_token"])
    assert info.status_code == 200, info.text
    assert info.json() == {k: claims[k] for k in info.json()} and info.json()["sub"] == str(person.staff_id)


def _secret(app: Any) -> tuple[str, str]:
    return (app.client_id, app.client_secret)


def _error(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == error, response.text


async def test_without_a_session_the_sign_in_screen_comes_first_then_the_app(app_stack: Stack) -> None:
    person = await app_stack.person()
    app = await register(app_stack)
    browser = app_stack.browser()
    request = authorization(app, login_hint=person.email)
    to_login = await browser.get("/oidc/authorize", **request.params)
    assert to_login.status_code == 303 and to_login.headers["location"].startswith("/sso/login?")
    page = await browser.http.get(to_login.headers["location"])
    assert page.status_code == 200 and f'value="{person.email}"' in page.text  # login_hint
    assert hidden_fields(page, "/sso/login")["return_to"] == "/sso/authorize/resume"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    signed_in = await browser.submit(
        page, "/sso/login", email=person.email, password="Velvet-Orbit-Lantern-Pixel-42"
    )
    assert signed_in.headers["location"] == "/sso/authorize/resume"
    back = await browser.get("/sso/authorize/resume")
    params = callback_params(back, app.redirect_uri)
    assert params["state"] == request.state and params["iss"] == PUBLIC_URL
    token = await redeem(app_stack, request, params["code"])
    assert (await id_token_claims(app_stack.http, request, token["id_token"]))["sub"] == str(person.staff_id)
    # The pending request is spent: resuming again is a page, not a second code.
    again = await browser.get("/sso/authorize/resume")
    assert again.status_code == 400 and "location" not in again.headers


async def test_prompt_none_without_a_session_answers_login_required_to_the_app(app_stack: Stack) -> None:
    app = await register(app_stack)
    request = authorization(app, prompt="none")
    response = await app_stack.browser().get("/oidc/authorize", **request.params)
    params = callback_params(response, app.redirect_uri)
    assert params == {"error": "login_required", "state": request.state, "iss": PUBLIC_URL} | {
        k: v for k, v in params.items() if k == "error_description"
    }


async def test_prompt_login_and_max_age_ask_for_a_new_sign_in(app_stack: Stack) -> None:
    person, app, browser = await signed_in_with_app(app_stack)
    for extra in ({"prompt": "login"}, {"max_age": "0"}):
        await _age_sessions(app_stack, person)
        response = await browser.get("/oidc/authorize", **authorization(app, **extra).params)
        assert response.status_code == 303 and response.headers["location"].startswith("/sso/login?"), extra
    fresh = await browser.get("/oidc/authorize", **authorization(app, max_age="3600").params)
    callback_params(fresh, app.redirect_uri)


async def _age_sessions(stack: Stack, person: Person) -> None:
    async with stack.sessions() as session:
        await session.execute(
            update(BrowserSession)
            .where(BrowserSession.staff_id == person.staff_id)
            .values(created_at=utcnow() - timedelta(minutes=5))
        )
        await session.commit()


async def test_a_passkey_session_says_hwk_or_swk_and_mfa(app_stack: Stack) -> None:
    """RFC 8176: a device-bound passkey is a hardware key, a synced one a software key."""
    app = await register(app_stack)
    for synced, kind in ((False, "hwk"), (True, "swk")):
        person = await app_stack.person()
        key = soft_key(app_stack.settings, person.staff_id)
        key.synced = synced
        await store_passkey(app_stack.sessions, person.account_id, key)
        browser = app_stack.browser()
        page = await browser.get("/sso/login")
        csrf = hidden_fields(page, "/sso/login/passkey")["csrf"]
        options = await browser.post("/sso/passkeys/options", {"csrf": csrf, "ceremony": "signin"})
        signed = await browser.submit(
            page, "/sso/login/passkey", credential=key.sign_in(json.loads(options.text))
        )
        assert signed.status_code == 303, signed.text
        request = authorization(app, acr_values="mfa")
        token = await redeem(app_stack, request, await code_for(browser, request))
        claims = await id_token_claims(app_stack.http, request, token["id_token"])
        assert claims["amr"] == [kind, "user", "mfa"] and claims["acr"] == "mfa", claims


async def test_an_mfa_session_says_so_and_step_up_asks_for_the_second_factor(app_stack: Stack) -> None:
    person = await app_stack.person(mfa=True)
    app = await register(app_stack, id_token_signed_response_alg="ES256")
    browser = app_stack.browser()
    await sign_in(browser, person.email)
    mfa = await browser.get("/sso/login/mfa")
    assert (await browser.submit(mfa, "/sso/login/mfa", code=person.totp_now())).status_code == 303
    request = authorization(app, acr_values="mfa")
    token = await redeem(app_stack, request, await code_for(browser, request))
    claims = await id_token_claims(app_stack.http, request, token["id_token"])
    assert claims["amr"] == ["pwd", "otp", "mfa"] and claims["acr"] == "mfa"
    assert claims["_header"]["alg"] == "ES256"
    access = jwt.decode(token["access_token"], await keys(app_stack.http)).claims
    assert access["amr"] == ["pwd", "otp", "mfa"] and access["acr"] == "mfa"
    # A password-only session of someone with an authenticator is asked for it again.
    async with app_stack.sessions() as session:
        await session.execute(
            update(BrowserSession)
            .where(BrowserSession.staff_id == person.staff_id)
            .values(data={"method": "password"})
        )
        await session.commit()
    step_up = await browser.get("/oidc/authorize", **authorization(app, acr_values="mfa").params)
    assert step_up.status_code == 303 and step_up.headers["location"].startswith("/sso/login?")


async def test_public_clients_must_use_pkce_and_the_verifier_must_match(app_stack: Stack) -> None:
    person = await app_stack.person()
    app = await register(
        app_stack, token_endpoint_auth_method="none", redirect_uris=["http://127.0.0.1:8765/cb"]
    )
    assert app.client_secret is None
    browser = await signed_in_browser(app_stack, person.email)
    no_pkce = authorization(app, code_challenge="", code_challenge_method="")
    params = callback_params(await browser.get("/oidc/authorize", **no_pkce.params), app.redirect_uri)
    assert params["error"] == "invalid_request" and params["iss"] == PUBLIC_URL
    plain = authorization(app, code_challenge_method="plain")
    params = callback_params(await browser.get("/oidc/authorize", **plain.params), app.redirect_uri)
    assert params["error"] == "invalid_request"
    request = authorization(app)
    code = await code_for(browser, request)
    wrong = await token_error(
        app_stack, token_form(request, code, client_id=app.client_id, code_verifier="x" * 50)
    )
    _error(wrong, 400, "invalid_grant")
    request = authorization(app)
    code = await code_for(browser, request)
    missing = await token_error(
        app_stack, token_form(request, code, client_id=app.client_id, code_verifier="")
    )
    _error(missing, 400, "invalid_request")
    request = authorization(app)
    token = await redeem(app_stack, request, await code_for(browser, request))
    assert (await userinfo(app_stack, token["access_token"])).status_code == 200


async def test_client_secret_post_works_and_a_wrong_secret_gets_invalid_client(app_stack: Stack) -> None:
    _person, app, browser = await signed_in_with_app(
        app_stack, token_endpoint_auth_method="client_secret_post"
    )
    request = authorization(app)
    code = await code_for(browser, request)
    wrong = await token_error(
        app_stack, token_form(request, code, client_id=app.client_id, client_secret=app.client_secret + "x")
    )
    _error(wrong, 401, "invalid_client")
    basic = await register(app_stack)
    wrong_basic = await token_error(
        app_stack, token_form(request, code), auth=(basic.client_id, "ssocs_wrong")
    )
    _error(wrong_basic, 401, "invalid_client")
    assert "www-authenticate" in wrong_basic.headers
    token = await redeem(app_stack, request, code)
    assert token["id_token"]


async def test_unregistered_client_or_redirect_uri_is_a_page_never_a_redirect(app_stack: Stack) -> None:
    app = await register(app_stack)
    browser = app_stack.browser()
    cases = [
        authorization(app, client_id="no-such-client").params,
        authorization(app, redirect_uri="https://evil.example.test/callback").params,
        authorization(app, redirect_uri=app.redirect_uri + "/").params,
        authorization(app, redirect_uri=app.redirect_uri + "?x=1").params,
        authorization(app, redirect_uri="").params,
    ]
    for params in cases:
        response = await browser.get("/oidc/authorize", **params)
        assert response.status_code == 400 and "location" not in response.headers, params
        assert "We can't sign you in to this app" in page_text(response)
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


async def test_a_code_is_single_use_and_its_second_use_revokes_the_first_tokens(app_stack: Stack) -> None:
    _person, app, browser = await signed_in_with_app(app_stack)
    request = authorization(app)
    code = await code_for(browser, request)
    token = await redeem(app_stack, request, code)
    assert (await userinfo(app_stack, token["access_token"])).status_code == 200
    again = await token_error(app_stack, token_form(request, code), auth=_secret(app))
    _error(again, 400, "invalid_grant")
    revoked = await userinfo(app_stack, token["access_token"])
    assert revoked.status_code == 401 and revoked.json()["error"] == "invalid_token"
    assert 'error="invalid_token"' in revoked.headers["www-authenticate"]


async def test_expired_altered_or_foreign_codes_are_invalid_grant(app_stack: Stack) -> None:
    person = await app_stack.person()
    app, other = await register(app_stack), await register(app_stack)
    browser = await signed_in_browser(app_stack, person.email)
    request = authorization(app)
    code = await code_for(browser, request)
    _error(await token_error(app_stack, token_form(request, code), auth=_secret(other)), 400, "invalid_grant")
    _error(
        await token_error(app_stack, token_form(request, code + "x"), auth=_secret(app)), 400, "invalid_grant"
    )
    changed_uri = token_form(request, code, redirect_uri=app.redirect_uri + "/other")
    _error(await token_error(app_stack, changed_uri, auth=_secret(app)), 400, "invalid_grant")
    async with app_stack.sessions() as session:
        await session.execute(update(OidcGrant).values(expires_at=utcnow() - timedelta(seconds=1)))
        await session.commit()
    _error(await token_error(app_stack, token_form(request, code), auth=_secret(app)), 400, "invalid_grant")


async def test_tampered_or_expired_access_tokens_are_refused(
    app_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    _person, app, browser = await signed_in_with_app(app_stack)
    request = authorization(app)
    token = await redeem(app_stack, request, await code_for(browser, request))
    header, payload, signature = token["access_token"].split(".")
    claims = json.loads(_unb64(payload))
    forged = _b64(json.dumps({**claims, "sub": "00000000-0000-0000-0000-000000000000"}).encode())
    for bad in (f"{header}.{forged}.{signature}", token["id_token"], "not-a-token", ""):
        assert (await userinfo(app_stack, bad)).status_code == 401
    later = utcnow() + timedelta(minutes=11)
    monkeypatch.setattr(oidc_service, "utcnow", lambda: later)
    assert (await userinfo(app_stack, token["access_token"])).status_code == 401


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def test_a_disabled_client_or_person_gets_nothing(app_stack: Stack) -> None:
    person, app, browser = await signed_in_with_app(app_stack)
    request = authorization(app)
    token = await redeem(app_stack, request, await code_for(browser, request))
    request = authorization(app)
    code = await code_for(browser, request)
    response = await app_stack.http.patch(
        f"/api/v1/clients/{app.client_id}", json={"disabled": True}, headers=app_stack.admin
    )
    assert response.status_code == 200 and response.json()["disabled"] is True
    assert (await userinfo(app_stack, token["access_token"])).status_code == 401
    assert (await browser.get("/oidc/authorize", **authorization(app).params)).status_code == 400
    _error(await token_error(app_stack, token_form(request, code), auth=_secret(app)), 401, "invalid_client")
    await app_stack.http.patch(
        f"/api/v1/clients/{app.client_id}", json={"disabled": False}, headers=app_stack.admin
    )
    request = authorization(app)
    code = await code_for(browser, request)
    async with app_stack.sessions() as session:
        await session.execute(
            update(SsoAccount).where(SsoAccount.staff_id == person.staff_id).values(status="disabled")
        )
        await session.commit()
    _error(await token_error(app_stack, token_form(request, code), auth=_secret(app)), 400, "invalid_grant")
    assert (await userinfo(app_stack, token["access_token"])).status_code == 401


async def test_token_endpoint_is_limited_per_client_and_per_ip(database_url: str) -> None:
    async with running_app(database_url, oidc_token_client_limit=2, oidc_token_ip_limit=4) as stack:
        app, other = await register(stack), await register(stack)
        answers = [
            await token_error(stack, {"grant_type": "authorization_code", "code": "x"}, auth=_secret(app))
            for _ in range(3)
        ]
        assert [a.status_code for a in answers] == [400, 400, 429] and answers[2].headers["retry-after"]
        third = await token_error(
            stack, {"grant_type": "authorization_code", "code": "x"}, auth=_secret(other)
        )
        assert third.status_code == 400
        fourth = await token_error(
            stack, {"grant_type": "authorization_code", "code": "x"}, auth=_secret(other)
        )
        assert fourth.status_code == 429


async def test_only_an_authenticated_app_spends_its_own_token_budget(database_url: str) -> None:
    async with running_app(database_url, oidc_token_client_limit=2, oidc_token_ip_limit=100) as stack:
        app = await register(stack)
        form = {"grant_type": "authorization_code", "code": "x"}
        for _ in range(5):  # someone without the secret, naming the app
            wrong = await token_error(stack, form, auth=(app.client_id, "ssocs_wrong"))
            assert wrong.status_code == 401
        answers = [await token_error(stack, form, auth=_secret(app)) for _ in range(3)]
        assert [a.status_code for a in answers] == [400, 400, 429]
        assert answers[2].json()["error"] == "temporarily_unavailable" and answers[2].headers["retry-after"]


async def test_no_code_token_secret_or_private_key_in_the_database_or_logs(
    app_stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    _person, app, browser = await signed_in_with_app(app_stack)
    request = authorization(app)
    code = await code_for(browser, request)
    token = await redeem(app_stack, request, code)
    rotated = await app_stack.http.post(f"/api/v1/clients/{app.client_id}/secret", headers=app_stack.admin)
    secrets_seen = [
        code,
        app.client_secret,
        rotated.json()["client_secret"],
        token["access_token"],
        token["id_token"],
    ]
    async with app_stack.sessions() as session:
        keys_rows = (await session.scalars(select(OidcSigningKey))).all()
    text = await database_text(app_stack)
    private_parts = []
    for row in keys_rows:
        private = json.loads(
            keyring_from_settings(app_stack.settings).unseal(
                row.private_sealed, f"oidc-signing-key:{row.kid}".encode()
            )
        )
        private_parts.append(private["d"])
    for secret in [*secrets_seen, *private_parts]:
        assert secret and secret not in text
        assert secret not in caplog.text
        for part in secret.split("."):
            if len(part) > 40 and part not in (
                token["id_token"].split(".")[0],
                token["access_token"].split(".")[0],
            ):
                assert part not in caplog.text


async def test_clients_admin_api(app_stack: Stack) -> None:
    http, admin = app_stack.http, app_stack.admin
    created = await http.post(
        "/api/v1/clients",
        json={"client_name": "Lettings", "redirect_uris": ["https://lettings.example.test/cb"]},
        headers=admin,
    )
    assert created.status_code == 201 and created.json()["client_secret"].startswith("ssocs_")
    client_id = created.json()["client_id"]
    shown = (await http.get(f"/api/v1/clients/{client_id}", headers=admin)).json()
    assert "client_secret" not in shown and shown["token_endpoint_auth_method"] == "client_secret_basic"
    assert client_id in [
        c["client_id"] for c in (await http.get("/api/v1/clients", headers=admin)).json()["items"]
    ]
    patched = await http.patch(
        f"/api/v1/clients/{client_id}",
        json={"redirect_uris": ["https://lettings.example.test/new"]},
        headers=admin,
    )
    assert patched.status_code == 200 and patched.json()["redirect_uris"] == [
        "https://lettings.example.test/new"
    ]
    for body, status in [
        ({"client_name": "x", "redirect_uris": ["http://lettings.example.test/cb"]}, 400),
        ({"client_name": "x", "redirect_uris": ["https://a.example.test/cb#f"]}, 400),
        ({"client_name": "x", "redirect_uris": ["javascript:alert(1)"]}, 400),
        ({"client_name": "x", "redirect_uris": []}, 422),
        (
            {"client_name": "x", "redirect_uris": ["https://a.example.test/"], "grant_types": ["password"]},
            422,
        ),
        (
            {
                "client_name": "x",
                "redirect_uris": ["https://a.example.test/"],
                "id_token_signed_response_alg": "none",
            },
            422,
        ),
        ({"client_name": "x", "redirect_uris": ["https://a.example.test/"], "unknown": 1}, 422),
    ]:
        before = len((await http.get("/api/v1/clients", headers=admin)).json()["items"])
        response = await http.post("/api/v1/clients", json=body, headers=admin)
        assert response.status_code == status, (body, response.text)
        assert response.json()["message"]
        assert len((await http.get("/api/v1/clients", headers=admin)).json()["items"]) == before
    assert (
        await http.post(
            "/api/v1/clients",
            json={"client_name": "n", "redirect_uris": ["http://127.0.0.1:9/cb"]},
            headers=admin,
        )
    ).status_code == 201
    assert (await http.get("/api/v1/clients", headers={})).status_code == 401
    assert (await http.delete(f"/api/v1/clients/{client_id}", headers=admin)).status_code == 204
    assert (await http.get(f"/api/v1/clients/{client_id}", headers=admin)).status_code == 404


async def test_a_rotated_client_secret_replaces_the_old_one(app_stack: Stack) -> None:
    person = await app_stack.person()
    app = await register(app_stack)
    rotated = await app_stack.http.post(f"/api/v1/clients/{app.client_id}/secret", headers=app_stack.admin)
    assert rotated.status_code == 200
    browser = await signed_in_browser(app_stack, person.email)
    request = authorization(app)
    code = await code_for(browser, request)
    _error(await token_error(app_stack, token_form(request, code), auth=_secret(app)), 401, "invalid_client")
    ok = await token_error(
        app_stack, token_form(request, code), auth=(app.client_id, rotated.json()["client_secret"])
    )
    assert ok.status_code == 200, ok.text
