"""Method 2 in the browser, from the emailed link to "Your Single Sign-On is now active"."""

from __future__ import annotations

import httpx
import pyotp

from tests.support.accounts import wrong_totp
from tests.support.browser_steps import (
    choose_password,
    code_sent,
    confirm_with_emailed_code,
    emailed_link,
    new_staff,
    open_start,
    setup_done,
    shown_key,
)
from tests.support.e2e import World, eventually, status, wait_for_code_email
from tests.support.screens import MARKS, Screen

pytestmark = MARKS


async def test_setup_with_mfa(screen: Screen, api: httpx.AsyncClient, world: World) -> None:
    staff = await new_staff(api, world, "Jo", "Bloggs", screen.viewport)
    await open_start(screen, await emailed_link(api, world, staff), staff, shots=True)
    await choose_password(screen, staff, via="Forgot your password?", shots=True)
    await confirm_with_emailed_code(screen, world, staff, shots=True)

    await screen.check("setup-mfa")
    assert await screen.heading() == "Set up Multi-Factor Authentication"
    key = await shown_key(screen)
    await screen.field("Code from the app").fill(wrong_totp(key))
    await screen.press("Complete Setup")
    await screen.check("setup-mfa-error", alert="didn't match", invalid="code")
    assert await shown_key(screen) == key, "the same key is offered again"

    await screen.field("Code from the app").fill(pyotp.TOTP(key).now())
    await screen.press("Complete Setup")
    await setup_done(screen, staff)
    body = await status(api, staff["id"])
    assert body["state"] == "active" and body["mfa_enabled"] is True, body


async def test_setup_skipping_mfa(screen: Screen, api: httpx.AsyncClient, world: World) -> None:
    staff = await new_staff(api, world, "Sam", "Patel", screen.viewport)
    link = await emailed_link(api, world, staff)
    await open_start(screen, link, staff, shots=False)
    await choose_password(screen, staff, via="Set your password", shots=False)
    await confirm_with_emailed_code(screen, world, staff, shots=False)

    await screen.check("setup-mfa", screenshot=False)
    await shown_key(screen)
    await screen.press("No thanks, I'll set it up later")
    await setup_done(screen, staff, name="setup-done-without-mfa")
    body = await status(api, staff["id"])
    assert body["state"] == "active" and body["mfa_enabled"] is False, body

    # The emailed link did its job.
    await screen.goto(link)
    await screen.check("link-used")
    assert await screen.heading() == "This link is no longer valid"


async def test_wrong_codes_until_the_code_dies(screen: Screen, api: httpx.AsyncClient, world: World) -> None:
    staff = await new_staff(api, world, "Kim", "Lee", screen.viewport)
    to = staff["external_email_1"]
    await open_start(screen, await emailed_link(api, world, staff), staff, shots=False)
    await choose_password(screen, staff, via="Forgot your password?", shots=False)
    await screen.check("setup-confirm", screenshot=False)
    code = await wait_for_code_email(world, to)
    await code_sent(screen)

    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for left in (4, 3, 2, 1):
        await screen.field("Verification code").fill(wrong)
        await screen.press("Confirm account")
        said = f"Incorrect code, {left} attempt{'s' if left != 1 else ''} left"
        await screen.check("setup-confirm-error", alert=said, invalid="code", screenshot=left == 4)
    await screen.field("Verification code").fill(wrong)
    await screen.press("Confirm account")
    dead = "This code can no longer be used; click Send a new code."
    await screen.check("setup-confirm-code-dead", alert=dead, invalid="code")
    assert await screen.button("Send a new code").is_visible()

    # Even the right code fails now.
    await screen.field("Verification code").fill(code)
    await screen.press("Confirm account")
    await screen.check(
        "setup-confirm-code-dead",
        alert="Too many incorrect codes. Click Send a new code.",
        invalid="code",
        screenshot=False,
    )

    # A new code (this stack lets one be asked for 2 s after the last) brings the person on.
    async def new_code_sent() -> bool:
        await screen.press("Send a new code")
        await screen.check("setup-confirm-new-code")
        return "We've sent you a new code" in await screen.text()

    await eventually(new_code_sent, 30, interval=1, what="a new code to be sent")
    fresh = await wait_for_code_email(world, to, count=2)
    await code_sent(screen)
    await screen.field("Verification code").fill(fresh)
    await screen.press("Confirm account")
    assert screen.page.url.endswith("/sso/setup/mfa"), screen.page.url
    await screen.check("setup-mfa", screenshot=False)
