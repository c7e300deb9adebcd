"""An app's authorization request, no session yet: the sign-in screen, Microsoft-Entra at
the local stand-in (oidc-provider-mock), and back at the app's redirect URI with a code
whose tokens say `fed`. On the shared real stack (`sso dev`)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from core.devstack import DEV_TENANT_ID
from core.models import EntraLink
from tests.support.accounts import make_person
from tests.support.config import make_settings
from tests.support.e2e import stack_database, submit, text_of
from tests.support.oidc import authorization, callback_params, exchange, id_token_claims, register_with
from tests.support.stack import DevStack

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def provider(stack: DevStack) -> AsyncIterator[httpx.AsyncClient]:
    """The person's browser at Microsoft (the stand-in)."""
    async with httpx.AsyncClient(base_url=stack.entra_url, timeout=30) as client:
        yield client


async def linked_person(stack: DevStack, provider: httpx.AsyncClient) -> tuple[Any, str]:
    """A person with Single Sign-On whose Microsoft account (at the stand-in) is linked."""
    sub, oid = f"user-{uuid.uuid4().hex[:10]}", str(uuid.uuid4())
    answer = await provider.put(
        f"/users/{sub}",
        json={"tid": DEV_TENANT_ID, "oid": oid, "name": "Fed Person", "email": f"{sub}@agency.example"},
    )
    assert answer.status_code == 204, answer.text
    async with stack_database(stack) as sessions:
        person = await make_person(sessions, make_settings(), first_name="Fed", last_name="Person")
        async with sessions() as db:
            db.add(
                EntraLink(
                    staff_id=person.staff_id,
                    tenant_id=DEV_TENANT_ID,
                    object_id=oid,
                    display_name="Fed Person",
                    email=f"{sub}@agency.example",
                    linked_via="session",
                )
            )
            await db.commit()
    return person, sub


async def test_microsoft_entra_sign_in_returns_to_the_pending_app_request(
    stack: DevStack, api: httpx.AsyncClient, provider: httpx.AsyncClient
) -> None:
    person, sub = await linked_person(stack, provider)
    app = await register_with(
        api, {}, client_name="Lettings", redirect_uris=["https://lettings.example.test/cb"]
    )
    request = authorization(app)
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as browser:
        sent = await browser.get("/oidc/authorize", params=request.params)
        assert sent.status_code == 303 and sent.headers["location"].startswith("/sso/login?"), sent.text
        login = await browser.get(sent.headers["location"])
        assert login.status_code == 200 and "Microsoft-Entra" in text_of(login)

        to_microsoft = await submit(browser, login, "Microsoft-Entra")
        assert to_microsoft.status_code == 303, text_of(to_microsoft)[:2000]
        authorize_url = to_microsoft.headers["location"]
        assert authorize_url.startswith(f"{stack.entra_url}/oauth2/authorize?"), authorize_url
        at_microsoft = await provider.post(authorize_url, data={"sub": sub})
        assert at_microsoft.status_code == 302, at_microsoft.text[:2000]
        back = await browser.get(at_microsoft.headers["location"])
        assert back.status_code == 303 and back.headers["location"] == "/sso/authorize/resume", text_of(back)
        resumed = await browser.get("/sso/authorize/resume")

    params = callback_params(resumed, app.redirect_uri)
    assert params["state"] == request.state and params["iss"] == stack.base_url and params["code"]
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as app_http:
        token = await exchange(app_http, request, params["code"])
        claims = await id_token_claims(app_http, request, token["id_token"])
    assert claims["sub"] == str(person.staff_id)
    assert claims["amr"] == ["fed"] and claims["acr"] == "mfa"


async def test_the_access_log_does_not_carry_the_login_hint(stack: DevStack, api: httpx.AsyncClient) -> None:
    app = await register_with(api, {}, client_name="Hinted", redirect_uris=["https://hinted.example.test/cb"])
    email = f"hinted.{uuid.uuid4().hex[:8]}@agency.example"
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as browser:
        sent = await browser.get("/oidc/authorize", params=authorization(app, login_hint=email).params)
        assert sent.status_code == 303
        login = await browser.get(sent.headers["location"])
        assert login.status_code == 200 and email in text_of(login)  # the page still fills it in
    # Both requests are in the web app's access log by now, or soon.
    assert stack.wait_for_output(lambda out: out.count("/sso/login?return_to=") >= 1, 10)
    assert stack.wait_for_output(lambda out: "/oidc/authorize?[redacted]" in out, 10), stack.output()[-3000:]
    local = email.split("@")[0]
    assert local not in stack.output()
