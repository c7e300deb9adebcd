"""The OpenID Connect provider end to end in-process, on SQLite and PostgreSQL: apps
registered through the admin API, a browser's sign-in session, and authlib's OAuth 2 client
at the token endpoint. docs/security.md §31, §33 and §35 are what these prove."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import pytest_asyncio
from joserfc import jwt

from tests.support.accounts import PUBLIC_URL, hidden_fields, sign_in
from tests.support.harness import Stack, running_app
from tests.support.oidc import (
    authorization,
    callback_params,
    code_for,
    id_token_claims,
    redeem,
    register,
    signed_in_browser,
    userinfo,
)

pytestmark = [pytest.mark.pages, pytest.mark.asyncio(loop_scope="session")]


@pytest_asyncio.fixture(loop_scope="session")
async def app_stack(database_url: str) -> AsyncIterator[Stack]:
    async with running_app(database_url) as stack:
        yield stack


async def test_discovery_names_every_endpoint_and_only_the_code_flow(app_stack: Stack) -> None:
    document = (await app_stack.http.get("/.well-known/openid-configuration")).json()
    assert document["issuer"] == PUBLIC_URL
    assert document["response_types_supported"] == ["code"]
    assert document["grant_types_supported"] == ["authorization_code"]
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert document["authorization_response_iss_parameter_supported"] is True
    assert document["jwks_uri"] == f"{PUBLIC_URL}/oidc/jwks"
    jwks = (await app_stack.http.get("/oidc/jwks")).json()["keys"]
    assert {key["alg"] for key in jwks} == {"RS256", "ES256"}
    assert not any(name in key for key in jwks for name in ("d", "p", "q", "dp", "dq", "qi"))


async def test_a_signed_in_browser_gets_a_code_and_the_app_its_tokens(app_stack: Stack) -> None:
    person = await app_stack.person()
    app = await register(app_stack)
    browser = await signed_in_browser(app_stack, person.email)
    request = authorization(app)
    code = await code_for(browser, request)
    token = await redeem(app_stack, request, code)
    assert token["token_type"].lower() == "bearer" and token["expires_in"] == 600
    claims = await id_token_claims(app_stack, request, token["id_token"])
    assert claims["sub"] == str(person.staff_id) and claims["sub"] != person.email
    assert claims["email"] == person.email and claims["email_verified"] is True
    assert (claims["given_name"], claims["family_name"]) == (person.first_name, person.last_name)
    assert claims["name"] == f"{person.first_name} {person.last_name}"
    assert claims["amr"] == ["pwd"] and claims["acr"] == "pwd" and claims["roles"] == []
    assert claims["sid"] and claims["auth_time"] <= claims["iat"]
    assert claims["_header"]["alg"] == "RS256"
    access = jwt.decode(token["access_token"], await _keys(app_stack))
    assert access.header["typ"] == "at+jwt"
    assert access.claims["client_id"] == app.client_id and access.claims["sub"] == str(person.staff_id)
    assert access.claims["exp"] - access.claims["iat"] == 600
    info = await userinfo(app_stack, token["access_token"])
    assert info.status_code == 200, info.text
    assert info.json() == {k: claims[k] for k in info.json()} and info.json()["sub"] == str(person.staff_id)


async def _keys(stack: Stack):  # type: ignore[no-untyped-def]
    from tests.support.oidc import keys

    return await keys(stack)
