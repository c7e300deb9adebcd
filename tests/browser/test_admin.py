"""The admin's side of Method 2 in the browser: sign in with MFA, Settings > Staff, find the
person, Actions > Send Single Sign-On Email; the person's page with its history."""

from __future__ import annotations

import re

import httpx
import pyotp
from sqlalchemy import update

from core.db import SessionFactory
from core.models import Staff
from tests.support.accounts import PASSWORD, make_person
from tests.support.browser_steps import new_staff
from tests.support.config import make_settings
from tests.support.e2e import World, check_setup_email, wait_for_email
from tests.support.screens import MARKS, Screen

pytestmark = MARKS


async def test_the_admin_sends_the_email_from_the_staff_page(
    screen: Screen, database: SessionFactory, api: httpx.AsyncClient, world: World
) -> None:
    admin = await make_person(database, make_settings(), mfa=True, first_name="Ada", last_name="Admin")
    async with database() as session:
        await session.execute(update(Staff).where(Staff.id == admin.staff_id).values(is_admin=True))
        await session.commit()
    person = await new_staff(api, world, "Pat", "Person", screen.viewport)

    # Not signed in: the staff page sends the admin to sign in first, and back afterwards.
    await screen.goto("/admin/staff")
    assert "/sso/login?return_to=/admin/staff" in screen.page.url
    await screen.check("login", screenshot=False)
    await screen.field("Email address").fill(admin.email)
    await screen.field("Password").fill(PASSWORD)
    await screen.press("Sign in")
    await screen.check("login-mfa", screenshot=False)
    assert admin.totp_secret
    await screen.field("Authenticator code").fill(pyotp.TOTP(admin.totp_secret).now())
    await screen.press("Sign in")
    assert screen.page.url.endswith("/admin/staff"), screen.page.url
    await screen.check("admin-staff")
    assert await screen.heading() == "Staff"

    # Find the person, open Actions on their record, Send Single Sign-On Email.
    await screen.field("Find a staff member").fill(person["external_email_1"])
    await screen.press("Search")
    await screen.check("admin-staff-found")
    row = screen.page.locator("tr", has_text=person["external_email_1"])
    assert "Not set up" in " ".join((await row.inner_text()).split())
    await row.get_by_text("Actions", exact=False).click()
    await screen.check("admin-staff-actions")
    async with screen.navigating():
        await row.get_by_role("button", name="Send Single Sign-On Email").click()
    await screen.check("admin-staff-sent")
    sent = f"Single Sign-On email sent to {person['external_email_1']}"
    assert sent in await screen.text()
    status = screen.page.locator("[role=status]")
    assert sent in " ".join((await status.inner_text()).split())

    # The person gets the email; the list now says so.
    to = person["external_email_1"]
    check_setup_email(world, await wait_for_email(world, to), to)
    await screen.goto(f"/admin/staff?q={to}")
    await screen.check("admin-staff-emailed", screenshot=False)
    row = screen.page.locator("tr", has_text=to)
    assert re.search(r"Email sent, link valid \d+ more min", " ".join((await row.inner_text()).split()))

    # Their page: who sent what, and the audit trail naming the admin.
    await screen.follow("Pat Person")
    await screen.check("admin-person")
    text = await screen.text()
    assert "Single Sign-On emails" in text and "Audit trail" in text
    assert f"staff:{admin.staff_id} (Ada Admin)" in text
