"""Passkeys in Chromium, with its virtual authenticator (the DevTools WebAuthn domain, through a
CDP session): a person adds one on the account page, signs in with it and no password, uses it
as the second factor after the password, and removes it, after which it no longer signs in.

The stack is this module's own: its public URL names `localhost`, since WebAuthn refuses an IP
address as the relying party id."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from core.db import SessionFactory
from tests.support.accounts import PASSWORD, make_person
from tests.support.browser_steps import BRAND, fits_the_width, new_password
from tests.support.config import make_settings
from tests.support.e2e import World, wait_for_subject
from tests.support.screens import MARKS, Screen
from tests.support.stack import DevStack, SmtpSink, running_sso_dev

pytestmark = MARKS


@pytest.fixture(scope="module")
def stack(smtp: SmtpSink, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    with running_sso_dev(
        tmp_path_factory.mktemp("sso-dev-passkeys"), smtp.port, public_host="localhost"
    ) as dev:
        yield dev


async def virtual_authenticator(screen: Screen) -> None:
    """A platform authenticator that holds discoverable credentials and verifies the user
    (a fingerprint that always matches)."""
    cdp = await screen.page.context.new_cdp_session(screen.page)
    await cdp.send("WebAuthn.enable")
    await cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
            }
        },
    )


async def sign_in_with_password(screen: Screen, email: str) -> None:
    await screen.goto("/sso/login")
    await screen.check("login", screenshot=False)
    await screen.field("Email address").fill(email)
    await screen.field("Password").fill(PASSWORD)
    await screen.press("Sign in")


async def sign_out(screen: Screen) -> None:
    await screen.press("Sign out")
    await screen.check("login-signed-out", screenshot=False)


async def test_add_a_passkey_sign_in_with_it_and_remove_it(screen: Screen, database: SessionFactory) -> None:
    await virtual_authenticator(screen)
    who = await make_person(database, make_settings(), first_name="Pat", last_name="Keyes")
    await sign_in_with_password(screen, who.email)
    assert screen.page.url.endswith("/sso/account"), screen.page.url
    await screen.check("account-before-passkey")
    assert "You have no passkeys yet." in await screen.text()

    await screen.field("Name for the new passkey").fill("Office PC")
    await screen.press("Add a passkey")
    await screen.check("account-passkey-recovery-codes")
    assert await screen.heading() == "Save your recovery codes"
    await screen.follow("I've saved my recovery codes")
    await screen.check("account-with-passkey")
    text = await screen.text()
    assert "Passkey added." in text and "Office PC" in text
    await fits_the_width(screen)
    await sign_out(screen)

    # No password: the passkey verified the person.
    await screen.press("Sign in with a passkey")
    assert screen.page.url.endswith("/sso/account"), screen.page.url
    await screen.check("account-signed-in-with-passkey", screenshot=False)
    await sign_out(screen)

    # The password, then the passkey as the second factor.
    await sign_in_with_password(screen, who.email)
    assert screen.page.url.endswith("/sso/login/mfa"), screen.page.url
    await screen.check("login-passkey")
    assert await screen.heading() == "Use your passkey"
    await screen.press("Use your passkey")
    assert screen.page.url.endswith("/sso/account"), screen.page.url
    await screen.check("account-with-passkey", screenshot=False)

    await screen.page.get_by_text("Rename or remove").click()
    await screen.press("Remove Office PC")
    await screen.check("account-passkey-removed", screenshot=False)
    assert "Passkey removed" in await screen.text()
    await sign_out(screen)

    # The authenticator still holds it, but it no longer signs anyone in.
    await screen.press("Sign in with a passkey")
    await screen.check("login-passkey-refused", alert="That passkey didn't work.")


async def test_a_reset_asks_for_the_passkey_after_the_emailed_code(
    screen: Screen, database: SessionFactory, world: World
) -> None:
    await virtual_authenticator(screen)
    who = await make_person(database, make_settings(), first_name="Ren", last_name="Keyes")
    await sign_in_with_password(screen, who.email)
    await screen.check("account-before-passkey", screenshot=False)
    await screen.field("Name for the new passkey").fill("My phone")
    await screen.press("Add a passkey")
    await screen.check("account-passkey-recovery-codes", screenshot=False)
    await screen.follow("I've saved my recovery codes")
    await screen.check("account-with-passkey", screenshot=False)
    await sign_out(screen)

    await screen.follow("Forgot your password?")
    await screen.check("forgot", screenshot=False)
    await screen.field("Email address").fill(who.email)
    await screen.press("Reset my password")
    await screen.check("reset", screenshot=False)
    received = await wait_for_subject(world, who.email, f"Your {BRAND} password reset code")
    text = received.message.get_body(preferencelist=("plain",)).get_content()
    code = re.findall(r"^\s+(\d{6})\s*$", text, re.MULTILINE)[0]
    password = new_password()
    await screen.field("Password reset code from the email").fill(code)
    await screen.field("New password").fill(password)
    await screen.field("Type it again").fill(password)
    await screen.press("Change Password")
    await screen.check("reset-passkey", alert="also confirm it's you with your passkey")
    # The emailed code is kept; the passwords never come back.
    assert await screen.field("Password reset code from the email").input_value() == code
    await screen.field("New password").fill(password)
    await screen.field("Type it again").fill(password)
    await screen.press("Change Password")
    assert screen.page.url.endswith("/sso/login?notice=reset"), screen.page.url
    await screen.check("login-after-reset", screenshot=False)
    await screen.field("Email address").fill(who.email)
    await screen.field("Password").fill(password)
    await screen.press("Sign in")
    assert screen.page.url.endswith("/sso/login/mfa"), screen.page.url
    await screen.check("login-passkey", screenshot=False)
