"""Settings > Organisation(s) in the browser at desktop and phone sizes: the person menu leads
there, the list, an organisation's page and the suspend confirmation fit their viewport and
pass the accessibility checks, and a change is saved. The shared stack stays a
one-organisation deployment: nothing here suspends it or adds another."""

from __future__ import annotations

from sqlalchemy import update

from core.db import SessionFactory
from core.models import Organisation
from core.orgs import DEFAULT_ORG_ID
from tests.support.browser_steps import new_admin, sign_in_with_mfa
from tests.support.screens import MARKS, Screen

pytestmark = MARKS

LONG_SENDER = "Lettings and Property Management for the Whole Agency Network via agentOS"


async def test_the_admin_changes_their_organisation_and_sees_what_suspending_would_do(
    screen: Screen, database: SessionFactory
) -> None:
    admin = await new_admin(database, "Orgwell")
    await screen.goto("/admin/staff")
    await sign_in_with_mfa(screen, admin)
    await screen.check("admin-staff", screenshot=False)
    await screen.page.locator("summary", has_text="Person menu").click()
    await screen.follow("Settings \u203a Organisation")
    await screen.check("admin-org")
    assert await screen.heading() == "Default organisation"

    await screen.field("Sender name").fill(LONG_SENDER)
    await screen.press("Save changes")
    await screen.check("admin-org-saved", screenshot=False)
    assert "Saved the changes to Default organisation." in await screen.text()

    # One organisation: its admin acts as an operator, so the list and Suspend… are theirs.
    await screen.goto("/admin/orgs")
    await screen.check("admin-orgs")
    assert await screen.heading() == "Organisations"
    await screen.follow("Default organisation")
    await screen.check("admin-org", screenshot=False)
    await screen.follow("Suspend…")
    await screen.check("admin-org-suspend")
    assert "will be signed out of every app" in await screen.text()
    await screen.follow("Keep it as it is")
    await screen.check("admin-org", screenshot=False)
    assert "Active" in await screen.text()

    async with database() as session:
        await session.execute(
            update(Organisation).where(Organisation.id == DEFAULT_ORG_ID).values(sender_name=None)
        )
        await session.commit()
