"""Settings > Staff > Import from CSV in the browser, on the real stack: a file with a bad row
is previewed row by row (the bad one named with its column, nothing created yet), the good
rows are imported with their emails sent through a batch, and the batch's page shows its
progress bar and numbers, kept current without a timed reload. Every page is checked
(axe-core, labels, announcements, fit: tests/support/screens.py)."""

from __future__ import annotations

import asyncio

import httpx
from playwright.async_api import expect

from core.db import SessionFactory
from tests.support.browser_steps import new_admin, sign_in_with_mfa
from tests.support.screens import MARKS, Screen

pytestmark = MARKS


async def test_an_import_is_previewed_then_sent_through_a_batch(
    screen: Screen, database: SessionFactory, api: httpx.AsyncClient
) -> None:
    admin = await new_admin(database, "Importer" + screen.viewport)
    tag = f"csv.{screen.viewport}"
    good = [f"ivy.{tag}@example.com", f"ned.{tag}@example.com"]
    csv = (
        "\ufefffirst_name,last_name,external_email_1,is_admin\r\n"
        f"Ivy,Imported,{good[0]},FALSE\r\n"
        "Bad,Row,not-an-address,FALSE\r\n"
        f"Ned,Imported,{good[1]},yes\r\n"
    )

    await screen.goto("/admin/staff/import")
    await sign_in_with_mfa(screen, admin)
    await screen.check("admin-import", screenshot=False)
    await screen.field("CSV file").set_input_files(
        {"name": "staff.csv", "mimeType": "text/csv", "buffer": csv.encode()}
    )
    await screen.press("Check the file")
    await screen.check("admin-import-preview", screenshot=False)
    text = await screen.text()
    assert "2 of 3 rows can be imported." in text
    assert "Skipped: external_email_1:" in text
    listed = (await api.get("/api/v1/staff", params={"q": tag})).json()
    assert listed["total"] == 0, "the preview created somebody"

    await screen.field("Send each new person their Single Sign-On email").check()
    await screen.press("Import 2 people")
    assert "/admin/staff/batches/" in screen.page.url, screen.page.url
    # Checked at once: while the batch sends, the page reloads itself every 5 seconds.
    await screen.check("admin-batch-started", screenshot=False)
    assert "Imported 2 people; skipped 1 rows with problems." in await screen.text()
    batch_id = screen.page.url.rstrip("/").rsplit("/", 1)[1]
    # The page keeps itself current (templates/static/batch_progress.js), without a reload.
    for _ in range(120):
        progress = (await api.get(f"/api/v1/staff/batches/{batch_id}")).json()
        if progress["state"] == "done":
            break
        await asyncio.sleep(0.5)
    assert (progress["state"], progress["sent"], progress["failed"], progress["left"]) == ("done", 2, 0, 0)
    await expect(screen.page.locator("#batch-state")).to_have_text("Done", timeout=30_000)
    assert await screen.page.locator("progress").get_attribute("value") == "2"
    assert await screen.page.locator("progress").get_attribute("max") == "2"
    assert "2 of 2 done" in await screen.text()
    assert await screen.button("Pause").count() == 0
    await screen.check("admin-batch-done", screenshot=False)
    people = (await api.get("/api/v1/staff", params={"q": tag})).json()["items"]
    assert sorted(p["external_email_1"] for p in people) == good
