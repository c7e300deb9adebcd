"""Method 2 in the browser, from the emailed link to "Your Single Sign-On is now active"."""

from __future__ import annotations

import httpx
import pyotp
from playwright.async_api import expect

from tests.support.accounts import wrong_totp
from tests.support.browser_steps import (
    choose_password,
    code_sent,
    confirm_with_emailed_code,
    emailed_link,
    fits_the_width,
    new_staff,
    open_start,
    setup_done,
    shown_key,
)
from tests.support.e2e import World, status, wait_for_code_email
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
    await mfa_page_laid_out(screen)
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
        assert (await screen.text()).count(" left") == 1, "the attempts left, once"
    await screen.field("Verification code").fill(wrong)
    await screen.press("Confirm account")
    dead = "This code can no longer be used: it was entered incorrectly too many times."
    await screen.check("setup-confirm-code-dead", alert=dead, invalid="code")
    await says_the_code_is_spent(screen, dead)

    # Even the right code fails now, and the page still says one thing.
    await screen.field("Verification code").fill(code)
    await screen.press("Confirm account")
    await screen.check("setup-confirm-code-dead", alert=dead, invalid="code", screenshot=False)
    await says_the_code_is_spent(screen, dead)

    # A new code (this stack lets one be asked for 2 s after the last) brings the person on;
    # the button is enabled once the server will take it.
    resend = screen.button("Send a new code")
    await expect(resend).to_be_enabled(timeout=30_000)
    await screen.press("Send a new code")
    # Post, redirect, get: the step's own address, and the next code not yet allowed.
    assert screen.page.url.endswith("/sso/setup/confirm?sent=new"), screen.page.url
    assert await resend.is_disabled()
    await screen.check("setup-confirm-new-code")
    assert "We've sent you a new code" in await screen.text()
    await expect(resend).to_be_enabled(timeout=30_000)  # static/resend.js, when the wait is over
    await screen.page.reload()
    await screen.check("setup-confirm-new-code", screenshot=False)
    assert screen.page.url.endswith("/sso/setup/confirm?sent=new"), screen.page.url
    fresh = await wait_for_code_email(world, to, count=2)
    await code_sent(screen)
    await screen.field("Verification code").fill(fresh)
    await screen.press("Confirm account")
    assert screen.page.url.endswith("/sso/setup/mfa"), screen.page.url
    await screen.check("setup-mfa", screenshot=False)


async def says_the_code_is_spent(screen: Screen, dead: str) -> None:
    """One thing: spent, and when a new code can be sent; nothing that contradicts it."""
    text = await screen.text()
    assert text.count(dead) == 1, text
    assert "You can send a new code" in text or "Click Send a new code" in text, text
    assert "valid until" not in text and "attempts left" not in text, text
    assert await screen.page.locator("[role=alert]").count() == 1
    await fits_the_width(screen)


async def mfa_page_laid_out(screen: Screen) -> None:
    """The key breaks only between its blocks of four; the otpauth: link only on a phone;
    the steps end with entering the code; nothing scrolls sideways."""
    lines = await screen.page.evaluate(KEY_LINES)
    assert all(len(line) >= 4 for line in lines), f"{screen.viewport}: the key wraps as {lines}"
    assert "".join(lines).replace(" ", "") == (await shown_key(screen))
    link = screen.link("open it in your authenticator app")
    assert await link.is_visible() == (screen.viewport == "phone")
    steps = await screen.page.locator("main ol li").all_inner_texts()
    assert steps[-1].startswith("Enter the 6-digit code"), steps
    await fits_the_width(screen)


# The key's text as laid out: the characters on each line, by their top edge.
KEY_LINES = """() => {
  const text = document.getElementById('manual-key').firstChild;
  const lines = new Map();
  for (let i = 0; i < text.length; i++) {
    const range = document.createRange();
    range.setStart(text, i); range.setEnd(text, i + 1);
    const rect = range.getClientRects()[0];
    if (!rect) { continue; }
    const top = Math.round(rect.top);
    lines.set(top, (lines.get(top) || '') + text.data[i]);
  }
  return Array.from(lines.values()).map(line => line.trim()).filter(Boolean);
}"""


async def test_the_password_guidance_takes_out_the_name(
    screen: Screen, api: httpx.AsyncClient, world: World
) -> None:
    """Jo Bloggs types "jobloggs jobloggs jo": the page says so as they type, with the
    server's words, and the server refuses it the same way."""
    staff = await new_staff(api, world, "Jo", "Bloggs", screen.viewport, tag="guidance")
    await open_start(screen, await emailed_link(api, world, staff), staff, shots=False)
    await screen.follow("Set your password")
    await screen.check("setup-password", screenshot=False)
    personal = "Don't build your password from your name, email address or the company name."
    await screen.field("New password").fill("jobloggs jobloggs jo")
    meter = screen.page.locator("#password-meter")
    await expect(meter).to_contain_text(personal)
    await screen.field("New password").fill("harbour lantern quietly")
    await expect(meter).to_contain_text("Length is fine")

    await screen.field("New password").fill("jobloggs jobloggs jo")
    await screen.field("Type it again").fill("jobloggs jobloggs jo")
    await screen.press("Set password")
    await screen.check("setup-password-personal", alert=personal, invalid="password", screenshot=False)
    await fits_the_width(screen)
