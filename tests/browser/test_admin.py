"""The admin's side of Method 2 in the browser: sign in with MFA, Settings > Staff, find the
person, Actions > Send Single Sign-On Email; the person's page with its history in words, the
person menu, Add staff. Every page is checked to fit its viewport (tests/support/screens.py),
here with a very long unbroken name in the data."""

from __future__ import annotations

import re

import httpx

from core.db import SessionFactory
from tests.support.browser_steps import new_admin, new_staff, sign_in_with_mfa
from tests.support.e2e import World, check_setup_email, send_email, wait_for_email
from tests.support.screens import MARKS, Screen

pytestmark = MARKS


async def test_the_admin_sends_the_email_from_the_staff_page(
    screen: Screen, database: SessionFactory, api: httpx.AsyncClient, world: World
) -> None:
    admin = await new_admin(database, "Admin")
    person = await new_staff(api, world, "Pat", "Person", screen.viewport)

    # Not signed in: the staff page sends the admin to sign in first, and back afterwards.
    await screen.goto("/admin/staff")
    assert "/sso/login?return_to=/admin/staff" in screen.page.url
    await sign_in_with_mfa(screen, admin)
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

    # Their page: who sent what, and the audit trail naming the admin, in words.
    await screen.follow("Pat Person")
    await screen.check("admin-person")
    text = await screen.text()
    assert "Single Sign-On emails" in text and "Audit trail" in text
    assert "Sent by Ada Admin" in text and "Delivered" in text
    assert "Single Sign-On email requested" in text
    assert "staff:" not in text and "sso_email" not in text and f"sso-setup-{person['id']}" not in text
    # The technical names are one click away.
    await screen.page.locator("main details.tech summary").first.click()
    assert f"sso-setup-{person['id']}" in await screen.text()

    # The person menu in the top right-hand corner, by keyboard: Settings > Staff.
    menu = screen.page.locator("header .person-menu summary")
    await menu.focus()
    await screen.page.keyboard.press("Enter")
    for name in ("Setup agentOS Single Sign-on", "Settings \u203a Staff"):
        assert await screen.link(name).is_visible(), name
    assert await screen.button("Sign out").is_visible()
    await screen.check("admin-person-menu")
    await screen.page.keyboard.press("Tab")  # the first entry
    await screen.page.keyboard.press("Tab")
    async with screen.navigating():
        await screen.page.keyboard.press("Enter")
    assert screen.page.url.endswith("/admin/staff"), screen.page.url
    await screen.check("admin-staff-again", screenshot=False)


LONG_FIRST = "Maximilianbartholomewalexanderchristophersonfitzwilliamhenry"
LONG_LAST = "Wolfeschlegelsteinhausenbergerdorffvoralternwarengewissenhaftschaferswessenschafe"


async def test_long_names_fit_and_an_admin_adds_staff(
    screen: Screen, database: SessionFactory, api: httpx.AsyncClient, world: World
) -> None:
    """A very long unbroken name in the staff list, on the person page (with its history and
    lock) and in Add staff: nothing scrolls sideways (Screen.check) at either size."""
    admin = await new_admin(database, LONG_LAST[:40] + screen.viewport)
    long_address = f"long.name.{screen.viewport}.{admin.staff_id.hex[:8]}@example.com"
    created = await api.post(
        "/api/v1/staff",
        json={
            "first_name": LONG_FIRST,
            "last_name": LONG_LAST + screen.viewport,
            "external_email_1": long_address,
        },
    )
    assert created.status_code == 201, created.text
    world.emails_used.add(long_address)
    long = created.json()
    await send_email(api, world, long["id"])

    await screen.goto("/admin/staff/new")
    await sign_in_with_mfa(screen, admin)
    assert screen.page.url.endswith("/admin/staff/new"), screen.page.url

    # Add staff: a refused address said on the page, then the new person's own page.
    await screen.check("admin-staff-add")
    await screen.field("First name").fill(LONG_FIRST)
    await screen.field("Last name").fill("Added" + screen.viewport)
    await screen.field("External Email 1").fill("not an address")
    await screen.field("Administrator").check()
    await screen.press("Add staff")
    await screen.check("admin-staff-add-error", alert="External Email 1:", invalid="external_email_1")
    address = f"added.{screen.viewport}.{admin.staff_id.hex[:8]}@example.com"
    world.emails_used.add(address)
    await screen.field("External Email 1").fill(address)
    await screen.press("Add staff")
    await screen.check("admin-staff-added")
    assert await screen.heading() == f"{LONG_FIRST} Added{screen.viewport}"
    text = await screen.text()
    assert f"Added {LONG_FIRST} Added{screen.viewport}." in text
    assert "Sign-in Not locked" in text and "Staff profile created" in text and "Admin" in text

    # The list and the page of the long name, its times turned into this browser's zone.
    await screen.goto(f"/admin/staff?q={LONG_LAST[:20]}")
    await screen.check("admin-staff-long-name", screenshot=False)
    assert LONG_LAST + screen.viewport in await screen.text()
    await screen.goto(f"/admin/staff/{long['id']}")
    await screen.check("admin-person-long-name", screenshot=False)
    shown = await screen.page.locator("main time").first.inner_text()
    # The server writes GMT/BST (SSO_TIME_ZONE); this browser runs in UTC.
    assert shown.endswith("UTC"), shown
