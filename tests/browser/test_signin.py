"""Signing in (with the keyboard alone), the signed-in pages, signing out, and "Forgot your
password?"."""

from __future__ import annotations

import re

import pyotp
from playwright.async_api import expect

from core.db import SessionFactory
from core.models import ResetCodeFailure, utcnow
from tests.support.accounts import PASSWORD, Person, make_person
from tests.support.browser_steps import BRAND, fits_the_width, new_password
from tests.support.config import make_settings
from tests.support.e2e import World, wait_for_subject
from tests.support.screens import MARKS, Screen

pytestmark = MARKS

REFUSED = "Incorrect email or password"
RESET_CODE_SUBJECT = f"Your {BRAND} password reset code"


async def focused(screen: Screen) -> str:
    """What the keyboard is on: a field's id, or a button's or link's text."""
    return str(
        await screen.page.evaluate(
            "() => { const el = document.activeElement;"
            " return el.id || el.textContent.replace(/\\s+/g, ' ').trim(); }"
        )
    )


async def tab_to(screen: Screen, name: str) -> None:
    """Tab (only) until the keyboard is on `name`."""
    for _ in range(12):
        await screen.page.keyboard.press("Tab")
        if await focused(screen) == name:
            return
    raise AssertionError(f"Tab never reached {name!r}")


async def enter(screen: Screen) -> None:
    async with screen.navigating():
        await screen.page.keyboard.press("Enter")


async def test_sign_in_with_mfa_using_only_the_keyboard(screen: Screen, database: SessionFactory) -> None:
    who = await make_person(database, make_settings(), mfa=True, first_name="Robin", last_name="Ashcombe")
    keys = screen.page.keyboard
    await screen.goto("/sso/login")
    await screen.check("login")
    assert await screen.heading() == f"{BRAND} Single Sign-On"

    # The email field has the focus; Tab goes on to the password, then to "Sign in".
    assert await focused(screen) == "email"
    await keys.type(who.email)
    await keys.press("Tab")
    assert await focused(screen) == "password"
    await keys.type("not the password at all")
    await keys.press("Tab")
    assert await focused(screen) == "Sign in"
    await enter(screen)
    await screen.check("login-error", alert=REFUSED, invalid="email")

    # After a refusal the person starts again from the email field, still by keyboard.
    assert await focused(screen) == "email"
    await keys.press("Tab")
    assert await focused(screen) == "password"
    await keys.type(PASSWORD)
    await keys.press("Enter")  # Enter in a field sends the form
    await screen.page.wait_for_url(re.compile(r"/sso/login/mfa$"))
    await screen.check("login-mfa")
    assert await screen.heading() == "Enter your authenticator code"

    assert await focused(screen) == "code"
    assert who.totp_secret
    await keys.type(who.wrong_totp())
    await enter(screen)
    await screen.check("login-mfa-error", alert="That code didn't match", invalid="code")
    assert await focused(screen) == "code"
    await keys.type(pyotp.TOTP(who.totp_secret).now())
    await tab_to(screen, "Sign in")
    await enter(screen)

    assert screen.page.url.endswith("/sso/account"), screen.page.url
    await screen.check("account")
    assert await screen.heading() == "You're signed in"
    assert f"{who.first_name} {who.last_name}" in await screen.text()

    # "Setup agentOS Single Sign-on" (the person menu's entry) and back.
    await tab_to(screen, f"Setup {BRAND} Single Sign-on")
    await enter(screen)
    await screen.check("sso-setup")
    assert await screen.heading() == f"Setup {BRAND} Single Sign-on"
    assert await screen.button("Microsoft-Entra").is_visible()
    await tab_to(screen, "Back to your account")
    await enter(screen)
    await screen.check("account", screenshot=False)

    await tab_to(screen, "Sign out")
    await enter(screen)
    await screen.check("login-signed-out")
    assert "You have signed out." in await screen.text()
    await screen.goto("/sso/account")
    assert screen.page.url.endswith("/sso/login"), "signed out on the server too"
    await screen.check("login", screenshot=False)


async def test_forgot_password_then_sign_in_with_the_new_one(
    screen: Screen, database: SessionFactory, world: World
) -> None:
    who: Person = await make_person(database, make_settings(), first_name="Rae", last_name="Jones")
    await screen.goto("/sso/login")
    await screen.check("login", screenshot=False)
    assert (await screen.text()).count(f"{BRAND} Single Sign-On") == 1, "said once, as the heading"
    await fits_the_width(screen)
    await screen.follow("Forgot your password?")
    await screen.check("forgot")
    assert await screen.heading() == "Forgot your password?"

    await screen.press("Reset my password")
    await screen.check("forgot-error", alert="Enter the email address you sign in with.", invalid="email")
    await screen.field("Email address").fill(who.email)
    await screen.press("Reset my password")
    assert screen.page.url.endswith("/sso/reset?sent=1"), screen.page.url
    await screen.check("reset")
    assert await screen.heading() == "Reset your password"
    assert "If an account exists for that address, we've sent a code" in await screen.text()

    received = await wait_for_subject(world, who.email, RESET_CODE_SUBJECT)
    text = received.message.get_body(preferencelist=("plain",)).get_content()
    code = re.findall(r"^\s+(\d{6})\s*$", text, re.MULTILINE)[0]

    # No authenticator field until a flow asks for it (Rae has no MFA: it never does).
    assert await screen.page.locator("#totp").count() == 0
    password = new_password()
    await screen.field("Password reset code from the email").fill(code)
    await screen.field("New password").fill("short")
    await expect(screen.page.locator("#password-meter")).to_contain_text("more characters needed")
    await screen.field("New password").fill(password)
    await screen.field("Type it again").fill(password + "x")
    await expect(screen.page.locator("#confirm-meter")).to_contain_text("The passwords don't match yet.")
    await screen.press("Change Password")
    await screen.check("reset-error", alert="The two passwords don't match.", invalid="password")
    # Only the passwords start again: the emailed code is still there.
    assert await screen.field("Password reset code from the email").input_value() == code
    assert await screen.field("New password").input_value() == ""
    await fits_the_width(screen)

    await screen.field("New password").fill(password)
    await screen.field("Type it again").fill(password)
    await screen.press("Change Password")
    assert screen.page.url.endswith("/sso/login?notice=reset"), screen.page.url
    await screen.check("login-password-changed")
    assert "Your password was changed. Sign in with your new password." in await screen.text()

    await screen.field("Email address").fill(who.email)
    await screen.field("Password").fill(password)
    await screen.press("Sign in")
    assert screen.page.url.endswith("/sso/account"), screen.page.url
    await screen.check("account", screenshot=False)
    assert who.email in await screen.text()
    await wait_for_subject(world, who.email, f"Your {BRAND} password was changed")


async def test_reset_with_the_emailed_link_once_codes_have_stopped(
    screen: Screen, database: SessionFactory, world: World
) -> None:
    """Past the day's cap on wrong codes the reset email carries a link; its page is
    accessible and resets (issue 11)."""
    who: Person = await make_person(database, make_settings(), first_name="Ines", last_name="Okafor")
    async with database() as session:
        session.add_all(
            [
                ResetCodeFailure(subject=str(who.account_id), flow="earlier", failed_at=utcnow())
                for _ in range(20)
            ]
        )
        await session.commit()
    await screen.goto("/sso/forgot")
    await screen.check("forgot", screenshot=False)
    await screen.field("Email address").fill(who.email)
    await screen.press("Reset my password")
    assert screen.page.url.endswith("/sso/reset?sent=1"), screen.page.url
    await screen.check("reset", screenshot=False)

    received = await wait_for_subject(world, who.email, f"Your {BRAND} password reset link")
    text = received.message.get_body(preferencelist=("plain",)).get_content()
    path = re.findall(r"(/sso/reset/link/[A-Za-z0-9_-]+)", text)[0]
    await screen.goto(path)
    await screen.check("reset-link")
    assert await screen.heading() == "Reset your password"
    password = new_password()
    await screen.field("New password").fill(password)
    await screen.field("Type it again").fill(password)
    await screen.press("Change Password")
    assert screen.page.url.endswith("/sso/login?notice=reset"), screen.page.url
    await screen.check("login-password-changed", screenshot=False)
    await screen.goto(path)
    await screen.check("reset-link-used", screenshot=False)
    assert await screen.heading() == "This link is no longer valid"
