"""A person who skipped MFA sets it up later from their account page, sees the recovery codes
once, and signs in with one of them when the phone is not at hand."""

from __future__ import annotations

import pyotp

from core.db import SessionFactory
from tests.support.accounts import PASSWORD, make_person
from tests.support.browser_steps import fits_the_width
from tests.support.config import make_settings
from tests.support.screens import MARKS, Screen

pytestmark = MARKS

SET_UP = "Set up Multi-Factor Authentication"


async def sign_in_with_password(screen: Screen, email: str) -> None:
    await screen.goto("/sso/login")
    await screen.check("login", screenshot=False)
    await screen.field("Email address").fill(email)
    await screen.field("Password").fill(PASSWORD)
    await screen.press("Sign in")


async def test_mfa_set_up_later_then_a_recovery_code_signs_in(
    screen: Screen, database: SessionFactory
) -> None:
    who = await make_person(database, make_settings(), first_name="Sam", last_name="Later")
    await sign_in_with_password(screen, who.email)
    assert screen.page.url.endswith("/sso/account"), screen.page.url
    await screen.check("account-without-mfa")
    assert SET_UP in await screen.text()

    await screen.follow(SET_UP)
    await screen.check("account-mfa")
    assert await screen.heading() == SET_UP
    assert "No thanks, I'll set it up later" not in await screen.text()
    await fits_the_width(screen)
    secret = "".join((await screen.page.locator("#manual-key").inner_text()).split())
    await screen.field("Code from the app").fill(pyotp.TOTP(secret).now())
    await screen.press("Complete Setup")

    await screen.check("account-recovery-codes")
    assert await screen.heading() == "Save your recovery codes"
    codes = [" ".join(c.split()) for c in await screen.page.locator(".recovery-codes code").all_inner_texts()]
    assert len(codes) == 10 and len(set(codes)) == 10
    await fits_the_width(screen)
    await screen.follow("I've saved my recovery codes")
    await screen.check("account-with-mfa")
    assert "Recovery codes left: 10 of 10." in await screen.text()
    content = await screen.page.content()
    assert not any(code in content for code in codes), "shown only once"

    await screen.press("Sign out")
    await screen.check("login-signed-out", screenshot=False)

    await sign_in_with_password(screen, who.email)
    assert screen.page.url.endswith("/sso/login/mfa"), screen.page.url
    await screen.check("login-mfa", screenshot=False)
    await screen.follow("Lost your phone? Use a recovery code")
    await screen.check("login-recovery-code")
    assert await screen.heading() == "Enter a recovery code"
    await screen.field("Recovery code").fill(codes[0])
    await screen.press("Sign in")
    assert screen.page.url.endswith("/sso/account"), screen.page.url
    await screen.check("account-with-mfa", screenshot=False)
    assert "Recovery codes left: 9 of 10." in await screen.text()


NEW_PASSWORD = "quiet harbour lanterns drift north"


async def test_change_password_and_where_you_are_signed_in(screen: Screen, database: SessionFactory) -> None:
    who = await make_person(database, make_settings(), first_name="Kim", last_name="Change")
    await sign_in_with_password(screen, who.email)
    assert screen.page.url.endswith("/sso/account"), screen.page.url
    await screen.check("account-without-mfa", screenshot=False)
    assert "Where you're signed in" in await screen.text()

    await screen.follow("Change password")
    await screen.check("account-password")
    assert await screen.heading() == "Change password"
    await fits_the_width(screen)
    await screen.field("Current password").fill("not the password at all")
    await screen.field("New password").fill(NEW_PASSWORD)
    await screen.field("Type it again").fill(NEW_PASSWORD)
    await screen.press("Change password")
    await screen.check(
        "account-password-error", alert="That isn't your current password.", invalid="current-password"
    )

    await screen.field("Current password").fill(PASSWORD)
    await screen.field("New password").fill(NEW_PASSWORD)
    await screen.field("Type it again").fill(NEW_PASSWORD)
    await screen.press("Change password")
    assert screen.page.url.endswith("/sso/account?notice=password_changed"), screen.page.url
    await screen.check("account-password-changed")
    assert "Your password was changed, and you were signed out everywhere else." in await screen.text()

    await screen.follow("Where you're signed in")
    await screen.check("account-sessions")
    assert await screen.heading() == "Where you're signed in"
    assert "(This browser)" in await screen.text()
    assert "with: Password." in await screen.text()
