"""End to end: a leaver, on the shared real stack (`sso dev`: web app, worker, Temporal).

A person is signed in to the Single Sign-On in a browser and to two apps, each holding a
refresh token. An administrator disables them through the admin API: both apps are told by
back-channel logout (a signed logout token naming the session), both refresh tokens are
invalid grants, the browser's session is gone and the password gets the disabled page.
Enabling them gives sign-in back, not the session. docs/security.md §18, §32 and §34.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from joserfc import jwt
from sqlalchemy import delete

from core.models import Organisation
from core.oidc.logout import LOGOUT_EVENT
from core.orgs import DEFAULT_ORG_ID
from tests.support.accounts import PASSWORD, Person, make_person
from tests.support.config import make_settings
from tests.support.e2e import _Forms, eventually, stack_database, text_of
from tests.support.oidc import (
    App,
    Received,
    authorization,
    callback_params,
    exchange,
    id_token_claims,
    keys,
    logout_receiver,
    register_with,
)
from tests.support.stack import DevStack

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

DISABLED = "Your staff login is disabled. Ask your administrator."
PAUSED = "Harbour Lettings can't use agentOS Single Sign-On at the moment. Contact your administrator."
OFFLINE = "openid email profile offline_access"
LOGOUT_TIMEOUT = 60.0  # seconds for the worker to deliver (2 cores, shared)


async def password_sign_in(browser: httpx.AsyncClient, email: str) -> httpx.Response:
    page = await browser.get("/sso/login")
    parser = _Forms()
    parser.feed(page.text)
    form = next(f for f in parser.forms if f["action"] == "/sso/login")
    return await browser.post("/sso/login", data={**form["fields"], "email": email, "password": PASSWORD})


async def tokens_for(
    stack: DevStack, browser: httpx.AsyncClient, app: App
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The signed-in browser sent by `app` to authorize: the app's tokens and ID token claims."""
    request = authorization(app, scope=OFFLINE)
    sent_back = await browser.get("/oidc/authorize", params=request.params)
    params = callback_params(sent_back, app.redirect_uri)
    assert params["state"] == request.state and params["iss"] == stack.base_url, params
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as app_http:
        token = await exchange(app_http, request, params["code"])
        claims = await id_token_claims(app_http, request, token["id_token"])
    assert token["refresh_token"].startswith("ssort_"), token
    return token, claims


async def refresh(stack: DevStack, app: App, refresh_token: str) -> httpx.Response:
    assert app.client_secret is not None
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as app_http:
        return await app_http.post(
            "/oidc/token",
            data={"grant_type": "refresh_token", "refresh_token": refresh_token},
            auth=(app.client_id, app.client_secret),
        )


async def logout_claims(stack: DevStack, app: App, received: Received) -> dict[str, Any]:
    """The one logout token the app was sent, checked as the app must (Back-Channel Logout
    1.0 §2.6): signed by a published key, typed, for this app from this issuer, with the
    logout event and no nonce."""
    [sent] = received
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
        decoded = jwt.decode(sent["logout_token"][0], await keys(http))
    assert decoded.header["typ"] == "logout+jwt"
    claims = decoded.claims
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": stack.base_url},
        aud={"essential": True, "value": app.client_id},
        iat={"essential": True},
        exp={"essential": True},
        jti={"essential": True},
    ).validate(claims)
    assert claims["events"] == {LOGOUT_EVENT: {}} and "nonce" not in claims
    return claims


async def a_person(stack: DevStack) -> Person:
    async with stack_database(stack) as sessions:
        return await make_person(sessions, make_settings(), first_name="Lee", last_name="Leaver")


async def test_a_leaver_is_logged_out_of_every_app_and_refused_until_enabled(
    stack: DevStack, api: httpx.AsyncClient
) -> None:
    person = await a_person(stack)
    with logout_receiver() as (crm_uri, to_crm), logout_receiver() as (wiki_uri, to_wiki):
        apps = {}
        for name, uri in (("CRM", crm_uri), ("Wiki", wiki_uri)):
            apps[name] = await register_with(
                api,
                {},
                client_name=f"Leaver {name}",
                redirect_uris=[f"https://{name.lower()}.example.test/cb"],
                grant_types=["authorization_code", "refresh_token"],
                backchannel_logout_uri=uri,
                internal=True,
            )
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as browser:
            signed_in = await password_sign_in(browser, person.email)
            assert signed_in.status_code == 303, text_of(signed_in)
            crm_token, crm_claims = await tokens_for(stack, browser, apps["CRM"])
            wiki_token, wiki_claims = await tokens_for(stack, browser, apps["Wiki"])
            sid = crm_claims["sid"]
            assert wiki_claims["sid"] == sid and crm_claims["sub"] == str(person.staff_id)
            # Both refresh tokens work before the disable (and rotate).
            for name, token in (("CRM", crm_token), ("Wiki", wiki_token)):
                renewed = await refresh(stack, apps[name], token["refresh_token"])
                assert renewed.status_code == 200, renewed.text
                token["refresh_token"] = renewed.json()["refresh_token"]
            assert (await browser.get("/sso/account")).status_code == 200

            disabled = await api.post(f"/api/v1/staff/{person.staff_id}/disable")
            assert disabled.status_code == 200, disabled.text

            await eventually(lambda: to_crm and to_wiki, LOGOUT_TIMEOUT, what="both apps' logout tokens")
            crm_logout = await logout_claims(stack, apps["CRM"], to_crm)
            wiki_logout = await logout_claims(stack, apps["Wiki"], to_wiki)
            assert crm_logout["sid"] == wiki_logout["sid"] == sid
            assert crm_logout["sub"] == wiki_logout["sub"] == str(person.staff_id)
            for name, token in (("CRM", crm_token), ("Wiki", wiki_token)):
                refused = await refresh(stack, apps[name], token["refresh_token"])
                assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant", refused.text
            gone = await browser.get("/sso/account")
            assert gone.status_code == 303 and gone.headers["location"].startswith("/sso/login"), gone.text
            told = await password_sign_in(browser, person.email)
            assert told.status_code == 403 and DISABLED in text_of(told), text_of(told)

            enabled = await api.post(f"/api/v1/staff/{person.staff_id}/enable")
            assert enabled.status_code == 200, enabled.text
            # Sign-in is back; the session the disable ended is not.
            assert (await browser.get("/sso/account")).status_code == 303
            for name, token in (("CRM", crm_token), ("Wiki", wiki_token)):
                refused = await refresh(stack, apps[name], token["refresh_token"])
                assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant", refused.text
            again = await password_sign_in(browser, person.email)
            assert again.status_code == 303 and again.headers["location"] == "/sso/account", text_of(again)
            assert (await browser.get("/sso/account")).status_code == 200
        # Each app was told once, of the one session.
        assert len(to_crm) == 1 and len(to_wiki) == 1


async def test_a_suspended_organisations_people_are_logged_out_of_every_app_until_resumed(
    stack: DevStack, api: httpx.AsyncClient
) -> None:
    """The same for a whole organisation: suspending it tells the app by a signed logout
    token, its refresh token is an invalid grant, the password gets the page naming the
    organisation; resuming gives sign-in back, not the session."""
    made = await api.post(
        "/api/v1/orgs", json={"name": "Harbour Lettings", "slug": f"harbour-{uuid.uuid4().hex[:8]}"}
    )
    assert made.status_code == 201, made.text
    org_id = made.json()["id"]
    async with stack_database(stack) as sessions:
        person = await make_person(sessions, make_settings(), first_name="Sue", org_id=uuid.UUID(org_id))
    try:
        with logout_receiver() as (uri, received):
            app = await register_with(
                api,
                {},
                client_name="Harbour CRM",
                redirect_uris=["https://crm.example.test/cb"],
                grant_types=["authorization_code", "refresh_token"],
                backchannel_logout_uri=uri,
                internal=True,
            )
            async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as browser:
                assert (await password_sign_in(browser, person.email)).status_code == 303
                token, claims = await tokens_for(stack, browser, app)

                suspended = await api.post(f"/api/v1/orgs/{org_id}/suspend")
                assert suspended.status_code == 200 and suspended.json()["status"] == "suspended", (
                    suspended.text
                )

                await eventually(lambda: received, LOGOUT_TIMEOUT, what="the app's logout token")
                logout = await logout_claims(stack, app, received)
                assert logout["sid"] == claims["sid"] and logout["sub"] == str(person.staff_id)
                refused = await refresh(stack, app, token["refresh_token"])
                assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant", refused.text
                gone = await browser.get("/sso/account")
                assert gone.status_code == 303 and gone.headers["location"].startswith("/sso/login")
                told = await password_sign_in(browser, person.email)
                assert told.status_code == 403 and PAUSED in text_of(told), text_of(told)

                assert (await api.post(f"/api/v1/orgs/{org_id}/resume")).status_code == 200
                assert (await refresh(stack, app, token["refresh_token"])).status_code == 400
                again = await password_sign_in(browser, person.email)
                assert again.status_code == 303 and again.headers["location"] == "/sso/account", text_of(
                    again
                )
            assert len(received) == 1
    finally:
        # Later modules share this stack as a one-organisation deployment: Sue goes back to
        # the default organisation and Harbour, now empty, is removed.
        moved = await api.post(f"/api/v1/staff/{person.staff_id}/move", json={"org_id": str(DEFAULT_ORG_ID)})
        assert moved.status_code == 200, moved.text
        async with stack_database(stack) as sessions, sessions() as session:
            await session.execute(delete(Organisation).where(Organisation.id == uuid.UUID(org_id)))
            await session.commit()
