"""Steps a person takes in the browser, shared by the test modules."""

from __future__ import annotations

import re
import secrets
from typing import Any

import httpx
import pyotp

from core.db import SessionFactory
from tests.support.accounts import PASSWORD, Person, make_person
from tests.support.config import make_settings
from tests.support.e2e import (
    World,
    check_setup_email,
    eventually,
    send_email,
    wait_for_code_email,
    wait_for_email,
)
from tests.support.screens import Screen

BRAND = "agentOS"


async def new_staff(
    api: httpx.AsyncClient, world: World, first: str, last: str, viewport: str, tag: str = ""
) -> dict[str, Any]:
    """A staff member with a readable address (it shows in the screenshots); `tag` tells
    apart two people of the same name."""
    address = f"{first}.{last}{'.' + tag if tag else ''}.{viewport}@example.com".lower()
    response = await api.post(
        "/api/v1/staff", json={"first_name": first, "last_name": last, "external_email_1": address}
    )
    assert response.status_code == 201, response.text
    world.emails_used.add(address)
    return response.json()  # type: ignore[no-any-return]


async def emailed_link(api: httpx.AsyncClient, world: World, staff: dict[str, Any]) -> str:
    """Send Single Sign-On Email; the Set Up Single Sign-On link from the email."""
    await send_email(api, world, staff["id"])
    to = staff["external_email_1"]
    token = check_setup_email(world, await wait_for_email(world, to), to)
    return f"{world.stack.base_url}/sso/setup/{token}"


def new_password() -> str:
    return f"{secrets.token_urlsafe(9)} lantern harbour {secrets.token_urlsafe(6)}"


async def open_start(screen: Screen, link: str, staff: dict[str, Any], shots: bool) -> None:
    """Step 3: the agentOS Single Sign-On screen for this person. `shots`: this test is the
    one that takes the screenshots of the shared steps."""
    await screen.goto(link)
    await screen.check("setup-start", screenshot=shots)
    assert await screen.heading() == f"{BRAND} Single Sign-On"
    assert (await screen.text()).count(f"{BRAND} Single Sign-On") == 1, "said once, as the heading"
    assert staff["external_email_1"] in await screen.text()
    await fits_the_width(screen)


async def fits_the_width(screen: Screen) -> None:
    """Nothing on the page scrolls sideways at this viewport."""
    widths = await screen.page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    if widths[0] > widths[1]:
        wide = await screen.page.evaluate(TOO_WIDE)
        where = f"{screen.viewport}, {screen.page.url}"
        raise AssertionError(f"{where}: {widths[0]} px wide in {widths[1]}: {wide}")


# What sticks out past the viewport's right edge, to say where the page is too wide.
TOO_WIDE = """() => Array.from(document.querySelectorAll('body *'))
  .filter(el => el.getBoundingClientRect().right > document.documentElement.clientWidth + 0.5)
  .map(el => el.outerHTML.slice(0, 120))"""


async def choose_password(screen: Screen, staff: dict[str, Any], via: str, shots: bool) -> str:
    """From the start screen, "Forgot your password?" or "Set your password"; a password
    refused with its reason, then one accepted. Returns it."""
    await screen.follow(via)
    await screen.check("setup-password", screenshot=shots)
    assert await screen.heading() == "Set your password"
    assert staff["external_email_1"] in await screen.text()

    await screen.field("New password").fill("tulip garden")
    await screen.field("Type it again").fill("tulip garden")
    await screen.press("Set password")
    await screen.check(
        "setup-password-error", alert="Use at least 15 characters", invalid="password", screenshot=shots
    )

    password = new_password()
    await screen.field("New password").fill(password)
    await screen.field("Type it again").fill(password)
    await screen.press("Set password")
    assert screen.page.url.endswith("/sso/setup/confirm"), screen.page.url
    return password


async def code_sent(screen: Screen) -> None:
    """The confirm page once it says the code went out (reloading, as a person would)."""

    async def sent() -> bool:
        if "We've sent a 6-digit verification code" in await screen.text():
            return True
        await screen.page.reload()
        await screen.check("setup-confirm", screenshot=False)
        return False

    await eventually(sent, 60, interval=0.5, what="the confirm page to say the code was sent")


async def confirm_with_emailed_code(screen: Screen, world: World, staff: dict[str, Any], shots: bool) -> None:
    """Step 4: Confirm Your Account with the emailed code, "Confirm account"."""
    await screen.check("setup-confirm", screenshot=shots)
    assert await screen.heading() == "Confirm Your Account"
    code = await wait_for_code_email(world, staff["external_email_1"])
    await code_sent(screen)
    await screen.field("Verification code").fill(code)
    await screen.press("Confirm account")
    assert screen.page.url.endswith("/sso/setup/mfa"), screen.page.url


async def shown_key(screen: Screen) -> str:
    """Step 5: the QR code is drawn and the key to type is shown; returns the key."""
    qr = screen.page.get_by_role("img", name=re.compile("QR code"))
    assert await qr.evaluate("img => img.complete && img.naturalWidth > 0")
    grouped = await screen.page.locator("#manual-key").inner_text()
    key = grouped.replace(" ", "")
    assert re.fullmatch(r"[A-Z2-7]{32}", key), grouped
    return key


async def setup_done(screen: Screen, staff: dict[str, Any], name: str = "setup-done") -> None:
    """Step 6."""
    assert screen.page.url.endswith("/sso/setup/done"), screen.page.url
    await screen.check(name)
    assert await screen.heading() == "Your Single Sign-On is now active"
    assert staff["external_email_1"] in await screen.text()


async def new_admin(database: SessionFactory, last_name: str) -> Person:
    """Ada, an administrator with MFA."""
    return await make_person(
        database, make_settings(), mfa=True, first_name="Ada", last_name=last_name, is_admin=True
    )


async def sign_in_with_mfa(screen: Screen, admin: Person) -> None:
    """From the sign-in page an admin page sent them to: password, then the authenticator code."""
    await screen.check("login", screenshot=False)
    await screen.field("Email address").fill(admin.email)
    await screen.field("Password").fill(PASSWORD)
    await screen.press("Sign in")
    await screen.check("login-mfa", screenshot=False)
    assert admin.totp_secret
    await screen.field("Authenticator code").fill(pyotp.TOTP(admin.totp_secret).now())
    await screen.press("Sign in")
