"""Method 1 in the browser: Microsoft-Entra through the local stand-in for Microsoft
(oidc-provider-mock), from a setup link, then to sign in; and an identity nobody linked."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from core.devstack import DEV_TENANT_ID
from tests.support.browser_steps import emailed_link, fits_the_width, new_staff, open_start
from tests.support.e2e import World, eventually, status
from tests.support.screens import MARKS, Screen

pytestmark = MARKS

UNLINKED = "This Microsoft account isn't linked to an agentOS staff login; ask your administrator."


async def microsoft_user(provider: httpx.AsyncClient, name: str) -> tuple[str, dict[str, Any]]:
    """A person at the stand-in in our tenant: PUT /users/<sub> with the ID token's claims."""
    sub = f"{name.split()[0].lower()}-{uuid.uuid4().hex[:8]}"
    claims = {"tid": DEV_TENANT_ID, "oid": str(uuid.uuid4()), "name": name, "email": f"{sub}@agency.example"}
    answer = await provider.put(f"/users/{sub}", json=claims)
    assert answer.status_code == 204, answer.text
    return sub, claims


async def at_microsoft(screen: Screen, sub: str) -> None:
    """Microsoft-Entra on the page shown; at the stand-in, type `sub` and Authorize; back."""
    async with screen.navigating():
        await screen.button("Microsoft-Entra").click()
    assert not screen.page.url.startswith(screen.origin), screen.page.url
    await screen.page.locator("input[name=sub]").fill(sub)
    async with screen.navigating():
        await screen.page.get_by_role("button", name="Authorize").click()
    assert screen.page.url.startswith(screen.origin), screen.page.url


async def test_link_microsoft_from_the_setup_link_then_sign_in_with_it(
    screen: Screen, api: httpx.AsyncClient, provider: httpx.AsyncClient, world: World
) -> None:
    staff = await new_staff(api, world, "Alex", "Morgan", screen.viewport)
    sub, claims = await microsoft_user(provider, "Alex Morgan")
    await open_start(screen, await emailed_link(api, world, staff), staff, shots=False)
    assert "Microsoft-Entra" in await screen.text()

    await at_microsoft(screen, sub)
    # Nothing is linked until the person sees which account came back and presses Link.
    await screen.check("entra-confirm")
    assert await screen.heading() == f"Link {claims['email']} to your agentOS sign-in?"
    await fits_the_width(screen)
    assert (await status(api, staff["id"]))["entra"] is None
    await screen.press("Link")
    await screen.check("entra-linked")
    assert await screen.heading() == "Your Microsoft account is linked"
    assert claims["email"] in await screen.text()
    assert "Single Sign-On is now active" in await screen.text()
    body = await eventually(lambda: _active(api, staff["id"]), 30, what="the setup to be active")
    assert body["entra"]["object_id"] == claims["oid"], body

    await screen.follow("Continue")
    await screen.check("account", screenshot=False)
    assert staff["external_email_1"] in await screen.text()
    await screen.press("Sign out")
    await screen.check("login-signed-out", screenshot=False)

    # From the sign-in screen, Microsoft-Entra signs the person straight in.
    await at_microsoft(screen, sub)
    assert screen.page.url.endswith("/sso/account"), screen.page.url
    await screen.check("account-after-entra", screenshot=False)
    assert "Alex Morgan" in await screen.text()
    await screen.press("Sign out")
    await screen.check("login-signed-out", screenshot=False)

    # Someone Microsoft knows but no staff login is linked to: a clear page, no session.
    stranger, _ = await microsoft_user(provider, "Nobody Linked")
    await at_microsoft(screen, stranger)
    await screen.check("entra-problem", alert=UNLINKED)
    assert await screen.heading() == "We couldn't sign you in with Microsoft"
    await screen.follow("Back to sign in")
    await screen.check("login", screenshot=False)
    await screen.goto("/sso/account")
    assert screen.page.url.endswith("/sso/login"), screen.page.url
    await screen.check("login", screenshot=False)


async def _active(api: httpx.AsyncClient, staff_id: str) -> dict[str, Any] | None:
    body = await status(api, staff_id)
    return body if body["state"] == "active" else None
