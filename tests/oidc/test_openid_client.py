"""A certified relying party from another ecosystem, panva's `openid-client` (Node, pinned in
tests/oidc/rp/package-lock.json; `.ci/run` installs it), against a real `sso api` process:
discovery, code + PKCE, ID token validation, userinfo, prompt=none and step-up; refresh
rotation and reuse, introspection, revocation and RP-initiated logout."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.admin_keys import create_admin_key
from core.db import create_engine, session_factory
from core.orgs import DEFAULT_ORG_ID, DEFAULT_ORG_NAME
from tests.support.accounts import PASSWORD, Browser, Person, make_person, sign_in
from tests.support.config import TEST_ENCRYPTION_KEY, TEST_SEAL_PUBLIC_KEY, TEST_SECRET_KEY, make_settings
from tests.support.oidc import sent_back_to
from tests.support.stack import free_port, running_sso_api

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

RP = Path(__file__).parent / "rp"
NODE = shutil.which("node")
if NODE is None or not (RP / "node_modules" / "openid-client").is_dir():
    pytest.skip(
        "openid-client is not installed: npm ci --prefix tests/oidc/rp (make test does)",
        allow_module_level=True,
    )


@dataclass
class Provider:
    url: str
    database_url: str


@pytest.fixture
def provider(sqlite_url: str) -> Iterator[Provider]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "SSO_ENV": "development",
        "SSO_SECRET_KEY": TEST_SECRET_KEY,
        "SSO_ENCRYPTION_KEYS": TEST_ENCRYPTION_KEY,
        "SSO_SEAL_PUBLIC_KEY": TEST_SEAL_PUBLIC_KEY,
        "SSO_DATABASE_URL": sqlite_url,
        "SSO_PUBLIC_URL": url,
    }
    with running_sso_api(env, port=port):
        yield Provider(url, sqlite_url)


def rp(step: str, **data: Any) -> dict[str, Any]:
    assert NODE is not None
    done = subprocess.run(
        [NODE, str(RP / "rp.mjs"), step], input=json.dumps(data), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


async def setup(provider: Provider, mfa: bool = False, **metadata: Any) -> tuple[Person, dict[str, Any]]:
    settings = make_settings(database_url=provider.database_url)
    engine = create_engine(provider.database_url)
    sessions = session_factory(engine)
    person = await make_person(sessions, settings, mfa=mfa)
    async with sessions() as session:
        key = await create_admin_key(session, settings, "rp-test")
        await session.commit()
    await engine.dispose()
    async with httpx.AsyncClient(base_url=provider.url) as http:
        created = await http.post(
            "/api/v1/clients",
            json={
                "client_name": "Lettings portal",
                "redirect_uris": ["http://127.0.0.1:9/callback"],
                **metadata,
            },
            headers={"Authorization": f"Bearer {key}"},
        )
    assert created.status_code == 201, created.text
    body = created.json()
    client = {
        "issuer": provider.url,
        "client_id": body["client_id"],
        "client_secret": body["client_secret"],
        "redirect_uri": "http://127.0.0.1:9/callback",
    }
    return person, client


async def callback(browser: Browser, url: str) -> str:
    return sent_back_to(await browser.http.get(url))


async def test_openid_client_signs_a_person_in_with_code_and_pkce(provider: Provider) -> None:
    person, client = await setup(provider)
    browser = Browser(httpx.AsyncHTTPTransport(), provider.url)
    # prompt=none before signing in: the app hears login_required.
    start = rp("start", **client, extra={"prompt": "none"})
    refused = rp("finish", **client, **start, callback=await callback(browser, start["url"]))
    assert refused["error"] == "login_required", refused
    assert (await sign_in(browser, person.email)).status_code == 303
    start = rp("start", **client)
    result = rp("finish", **client, **start, callback=await callback(browser, start["url"]))
    assert "error" not in result, result
    claims, info = result["claims"], result["userinfo"]
    assert claims["sub"] == str(person.staff_id) and claims["iss"] == provider.url
    assert claims["aud"] == [client["client_id"]] or claims["aud"] == client["client_id"]
    assert claims["amr"] == ["pwd"] and claims["acr"] == "pwd"
    assert info["sub"] == claims["sub"] and info["email"] == person.email
    assert (claims["org_id"], claims["org_name"]) == (str(DEFAULT_ORG_ID), DEFAULT_ORG_NAME)
    assert (info["org_id"], info["org_name"]) == (claims["org_id"], claims["org_name"])
    # A second sign-in with prompt=none now needs no screen.
    start = rp("start", **client, extra={"prompt": "none"})
    again = rp("finish", **client, **start, callback=await callback(browser, start["url"]))
    assert again["claims"]["sub"] == str(person.staff_id)
    await browser.aclose()


async def test_openid_client_step_up_gets_an_mfa_token(provider: Provider) -> None:
    person, client = await setup(provider, mfa=True)
    browser = Browser(httpx.AsyncHTTPTransport(), provider.url)
    start = rp("start", **client, extra={"acr_values": "mfa"})
    to_login = await browser.http.get(start["url"])
    assert to_login.headers["location"].startswith("/sso/login?")
    page = await browser.http.get(to_login.headers["location"])
    await browser.submit(page, "/sso/login", email=person.email, password=PASSWORD)
    mfa = await browser.get("/sso/login/mfa")
    resumed = await browser.submit(mfa, "/sso/login/mfa", code=person.totp_now())
    assert resumed.headers["location"] == "/sso/authorize/resume"
    result = rp("finish", **client, **start, callback=await callback(browser, "/sso/authorize/resume"))
    assert result["claims"]["amr"] == ["pwd", "otp", "mfa"] and result["claims"]["acr"] == "mfa", result
    await browser.aclose()


async def test_openid_client_refreshes_revokes_and_signs_out(provider: Provider) -> None:
    signed_out = "http://127.0.0.1:9/signed-out"
    person, client = await setup(
        provider,
        grant_types=["authorization_code", "refresh_token"],
        post_logout_redirect_uris=[signed_out],
    )
    browser = Browser(httpx.AsyncHTTPTransport(), provider.url)
    assert (await sign_in(browser, person.email)).status_code == 303
    offline = {"scope": "openid email profile offline_access"}
    tokens = []
    for _ in range(2):
        start = rp("start", **client, extra=offline)
        tokens.append(rp("finish", **client, **start, callback=await callback(browser, start["url"])))
    first, second = tokens
    assert first["refresh_token"].startswith("ssort_"), first
    refreshed = rp(
        "refresh",
        **client,
        refresh_token=first["refresh_token"],
        id_token=first["id_token"],
        post_logout_redirect_uri=signed_out,
    )
    assert refreshed["rotated"] is True and refreshed["active"] is True, refreshed
    assert refreshed["reuse"] == "invalid_grant" and refreshed["afterReuse"] is False, refreshed
    assert rp("revoke", **client, refresh_token=second["refresh_token"]) == {"refresh": "invalid_grant"}
    # The logout URL openid-client built: back to the app with its state, signed out.
    back = await browser.http.get(refreshed["logout"])
    assert back.status_code == 303 and back.headers["location"] == f"{signed_out}?state=rp-state"
    assert (await browser.http.get("/sso/account")).status_code == 303
    await browser.aclose()
