"""A person's lifecycle on the admin pages in the browser, on the real stack: tick people in
Settings > Staff and sign them out everywhere or disable them after a confirmation naming how
many and what happens, with each person's outcome; Edit (a refused leave date said on the
page, then a leave date shown on the person's page); Erase behind its confirmation. Every
page is checked (axe-core, labels, announcements, fit: tests/support/screens.py)."""

from __future__ import annotations

from datetime import date, timedelta

import httpx

from core.db import SessionFactory
from tests.support.browser_steps import new_admin, new_staff, sign_in_with_mfa
from tests.support.e2e import World
from tests.support.screens import MARKS, Screen

pytestmark = MARKS


async def test_bulk_actions_edit_and_erase(
    screen: Screen, database: SessionFactory, api: httpx.AsyncClient, world: World
) -> None:
    admin = await new_admin(database, "Lifecycle" + screen.viewport)
    one = await new_staff(api, world, "Bo", "Bulkley", screen.viewport)
    two = await new_staff(api, world, "Di", "Bulkley", screen.viewport)

    await screen.goto("/admin/staff")
    await sign_in_with_mfa(screen, admin)
    await screen.check("admin-staff", screenshot=False)
    await screen.goto(f"/admin/staff?q=bulkley.{screen.viewport}")  # this viewport's two
    await screen.check("admin-staff-select", screenshot=False)
    for person in (one, two):
        await screen.field(f"Select {person['first_name']} Bulkley").check()
    await screen.field("With the people selected below").select_option(label="Disable")
    await screen.press("Continue")
    await screen.check("admin-staff-bulk-confirm")
    assert await screen.heading() == "Disable for 2 people?"
    assert "For leavers." in await screen.text()
    await screen.press("Disable for 2 people")
    await screen.check("admin-staff-bulk-done")
    assert await screen.heading() == "Disable: done for 2 of 2"
    assert (await screen.text()).count("Disabled: signed out of every app") == 2

    # Edit: a leave date that has passed is refused on the page; a future one is shown.
    await screen.goto(f"/admin/staff/{one['id']}/edit")
    await screen.check("admin-edit")
    await screen.field("Leave date").fill((date.today() - timedelta(days=2)).isoformat())
    await screen.press("Save changes")
    await screen.check("admin-edit-error", alert="The leave date must be after today.", invalid="leave_on")
    leave = date.today() + timedelta(days=60)
    await screen.field("Leave date").fill(leave.isoformat())
    await screen.press("Save changes")
    await screen.check("admin-person-leave-date")
    assert f"Leaves on {leave.day} {leave.strftime('%b')} {leave.year}" in await screen.text()

    # Erase asks first, naming what goes and what stays, then the list no longer has them.
    await screen.goto(f"/admin/staff/{two['id']}/erase")
    await screen.check("admin-erase")
    assert "audit trail is kept" in await screen.text()
    await screen.press("Erase Di Bulkley")
    await screen.check("admin-staff-erased", screenshot=False)
    assert "The staff member was erased" in await screen.text()
    assert (await api.get(f"/api/v1/staff/{two['id']}")).status_code == 404
