"""Apps and organisations: every token, userinfo and introspection answer names the person's
agency (`org_id`, `org_name`), and an app limited to some organisations gives people of the others
a page saying so, never a code, and their refresh tokens stop (invalid_grant)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from joserfc import jwt
from sqlalchemy import func, select, update

from core.models import OidcGrant, Organisation, OrgStatus
from core.orgs import DEFAULT_ORG_ID, DEFAULT_ORG_NAME
from tests.support.accounts import page_text
from tests.support.harness import Stack, running_app
from tests.support.oidc import (
    App,
    authorization,
    client_post,
    code_for,
    id_token_claims,
    keys,
    redeem,
    register,
    signed_in_browser,
    token_error,
    token_form,
    userinfo,
)
from tests.support.orgs import add_org

pytestmark = [pytest.mark.pages, pytest.mark.asyncio(loop_scope="session")]
OFFLINE = {"grant_types": ["authorization_code", "refresh_token"]}


@pytest_asyncio.fixture(loop_scope="session")
async def app_stack(database_url: str) -> AsyncIterator[Stack]:
    async with running_app(database_url) as stack:
        yield stack


async def _limit(stack: Stack, app: App, *org_ids: object) -> None:
    response = await stack.http.patch(
        f"/api/v1/clients/{app.client_id}",
        json={"allowed_org_ids": [str(org_id) for org_id in org_ids]},
        headers=stack.admin,
    )
    assert response.status_code == 200, response.text
    assert response.json()["allowed_org_ids"] == sorted(str(org_id) for org_id in org_ids)


async def test_tokens_and_userinfo_name_the_persons_organisation(app_stack: Stack) -> None:
    document = (await app_stack.http.get("/.well-known/openid-configuration")).json()
    assert {"org_id", "org_name"} <= set(document["claims_supported"])
    harbour = await add_org(app_stack.sessions, "Harbour Lettings")
    app = await register(app_stack, **OFFLINE)
    for org_id, org_name in ((DEFAULT_ORG_ID, DEFAULT_ORG_NAME), (harbour, "Harbour Lettings")):
        person = await app_stack.person(org_id=org_id)
        browser = await signed_in_browser(app_stack, person.email)
        request = authorization(app, scope="openid offline_access")
        token = await redeem(app_stack, request, await code_for(browser, request))
        expected = {"org_id": str(org_id), "org_name": org_name}
        claims = await id_token_claims(app_stack.http, request, token["id_token"])
        assert {k: claims[k] for k in expected} == expected
        access = jwt.decode(token["access_token"], await keys(app_stack.http)).claims
        assert {k: access[k] for k in expected} == expected
        info = (await userinfo(app_stack, token["access_token"])).json()
        assert {k: info[k] for k in expected} == expected
        for held in (token["access_token"], token["refresh_token"]):
            introspected = (await client_post(app_stack, app, "/oidc/introspect", token=held)).json()
            assert introspected["active"] is True, introspected
            assert {k: introspected[k] for k in expected} == expected


async def test_an_app_limited_to_other_organisations_is_a_page_never_a_code(app_stack: Stack) -> None:
    harbour = await add_org(app_stack.sessions, "Harbour Lettings")
    quay = await add_org(app_stack.sessions, "Quayside Homes")
    app = await register(app_stack, client_name="Harbour Rota", allowed_org_ids=[str(harbour)])
    assert app.registration["allowed_org_ids"] == [str(harbour)]
    outsider = await app_stack.person(org_id=quay)
    browser = await signed_in_browser(app_stack, outsider.email)
    request = authorization(app)
    refused = await browser.get("/oidc/authorize", **request.params)
    assert refused.status_code == 403 and "location" not in refused.headers
    assert "Harbour Rota isn't available to Quayside Homes. Ask your administrator" in page_text(refused)
    async with app_stack.sessions() as session:
        issued = await session.scalar(
            select(func.count()).select_from(OidcGrant).where(OidcGrant.staff_id == outsider.staff_id)
        )
    assert issued == 0
    member = await app_stack.person(org_id=harbour)
    request = authorization(app)
    code = await code_for(await signed_in_browser(app_stack, member.email), request)
    assert (await redeem(app_stack, request, code))["access_token"]
    # Every organisation again: the outsider gets their code.
    await _limit(app_stack, app)
    assert await code_for(browser, authorization(app))


async def test_limiting_an_app_later_stops_codes_and_refresh_tokens_of_other_organisations(
    app_stack: Stack,
) -> None:
    harbour = await add_org(app_stack.sessions, "Harbour Lettings")
    app = await register(app_stack, **OFFLINE)
    person = await app_stack.person()  # the default organisation
    browser = await signed_in_browser(app_stack, person.email)
    offline = authorization(app, scope="openid offline_access")
    token = await redeem(app_stack, offline, await code_for(browser, offline))
    pending = authorization(app)
    code = await code_for(browser, pending)
    await _limit(app_stack, app, harbour)
    assert app.client_secret is not None
    auth = (app.client_id, app.client_secret)
    refresh = await token_error(
        app_stack, {"grant_type": "refresh_token", "refresh_token": token["refresh_token"]}, auth
    )
    assert refresh.status_code == 400 and refresh.json()["error"] == "invalid_grant", refresh.text
    redeemed = await token_error(app_stack, token_form(pending, code), auth)
    assert redeemed.status_code == 400 and redeemed.json()["error"] == "invalid_grant", redeemed.text
    # The default organisation added: the same refresh token works again (it was not spent).
    await _limit(app_stack, app, harbour, DEFAULT_ORG_ID)
    again = await token_error(
        app_stack, {"grant_type": "refresh_token", "refresh_token": token["refresh_token"]}, auth
    )
    assert again.status_code == 200, again.text


async def test_an_unknown_organisation_is_refused_and_changes_nothing(app_stack: Stack) -> None:
    app = await register(app_stack)
    missing = "00000000-0000-4000-8000-000000000bad"
    for method, path, body in (
        ("POST", "/api/v1/clients", {"client_name": "X", "redirect_uris": [app.redirect_uri]}),
        ("PATCH", f"/api/v1/clients/{app.client_id}", {}),
    ):
        response = await app_stack.http.request(
            method, path, json={**body, "allowed_org_ids": [missing]}, headers=app_stack.admin
        )
        assert response.status_code == 422, response.text
        assert f"no organisation with the id {missing}" in response.text
    unchanged = await app_stack.http.get(f"/api/v1/clients/{app.client_id}", headers=app_stack.admin)
    assert unchanged.json()["allowed_org_ids"] == []
    listed = await app_stack.http.get("/api/v1/clients", headers=app_stack.admin)
    assert [c["client_name"] for c in listed.json()["items"]].count("X") == 0


async def test_a_suspended_organisations_person_gets_no_token(app_stack: Stack) -> None:
    harbour = await add_org(app_stack.sessions, "Harbour Lettings")
    app = await register(app_stack, **OFFLINE)
    person = await app_stack.person(org_id=harbour)
    browser = await signed_in_browser(app_stack, person.email)
    offline = authorization(app, scope="openid offline_access")
    token = await redeem(app_stack, offline, await code_for(browser, offline))
    async with app_stack.sessions() as session:
        await session.execute(
            update(Organisation).where(Organisation.id == harbour).values(status=OrgStatus.suspended.value)
        )
        await session.commit()
    assert app.client_secret is not None
    refresh = await token_error(
        app_stack,
        {"grant_type": "refresh_token", "refresh_token": token["refresh_token"]},
        (app.client_id, app.client_secret),
    )
    assert refresh.status_code == 400 and refresh.json()["error"] == "invalid_grant", refresh.text
    assert (await userinfo(app_stack, token["access_token"])).status_code == 401
    # Nor an active introspection answer (which would name the organisation): only that it isn't.
    for held in (token["access_token"], token["refresh_token"]):
        introspected = await client_post(app_stack, app, "/oidc/introspect", token=held)
        assert introspected.status_code == 200 and introspected.json() == {"active": False}
