"""Settings > Apps in the browser at desktop and phone sizes: the person menu leads there, an
app is registered (its secret shown once), changed, switched off and deleted. Every page is
checked to fit its viewport, with long names and addresses in the data."""

from __future__ import annotations

import re

from core.db import SessionFactory
from tests.support.browser_steps import new_admin, sign_in_with_mfa
from tests.support.screens import MARKS, Screen

pytestmark = MARKS

LONG_NAME = "Lettings and Property Management Portal for the Whole Agency Network"
LONG_URI = "https://lettings-and-property-management.agency.example.test/oauth2/callback/agentos/" + "x" * 60


async def test_the_admin_registers_changes_and_deletes_an_app(
    screen: Screen, database: SessionFactory
) -> None:
    admin = await new_admin(database, "Appsworth")
    await screen.goto("/admin/apps")
    await sign_in_with_mfa(screen, admin)
    assert screen.page.url.endswith("/admin/apps"), screen.page.url
    await screen.check("admin-apps")
    assert await screen.heading() == "Apps"

    await screen.follow("Register an app")
    await screen.check("admin-app-new")
    await screen.field("Name").fill(LONG_NAME)
    await screen.field("Redirect URIs").fill(f"{LONG_URI}\nhttp://127.0.0.1:8765/callback")
    await screen.press("Register the app")
    await screen.check("admin-app-secret")
    secret = await screen.page.locator("#client-secret").inner_text()
    assert re.fullmatch(r"ssocs_[A-Za-z0-9_-]{43}", secret), secret
    assert "shown this once" in await screen.text()

    await screen.follow("Done")
    await screen.check("admin-app")
    assert secret not in await screen.page.content()
    await screen.field("Name").fill("Lettings")
    await screen.press("Save changes")
    await screen.check("admin-app-saved", screenshot=False)
    assert "Saved the changes to Lettings." in await screen.text()
    await screen.press("Switch off")
    await screen.check("admin-app-off", screenshot=False)
    assert "Lettings is switched off" in await screen.text()

    await screen.follow("Delete…")
    await screen.check("admin-app-delete")
    await screen.press("Delete Lettings")
    await screen.check("admin-apps-deleted", screenshot=False)
    assert "Deleted Lettings" in await screen.text()


async def test_the_person_menu_leads_to_apps(screen: Screen, database: SessionFactory) -> None:
    admin = await new_admin(database, "Menuham")
    await screen.goto("/admin/staff")
    await sign_in_with_mfa(screen, admin)
    await screen.check("admin-staff", screenshot=False)
    await screen.page.locator("summary", has_text="Person menu").click()
    await screen.follow("Settings \u203a Apps")
    await screen.check("admin-apps", screenshot=False)
    assert await screen.heading() == "Apps"
