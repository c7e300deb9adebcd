"""Settings > Staff > Import from CSV and a batch's progress page, as an administrator uses
them: upload, a dry-run preview of every row (nothing created), "Import N people" with the
emails sent through a batch, whose page shows a progress bar, the numbers and Pause, Resume
and Cancel."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import func, select, update
from temporalio.testing import WorkflowEnvironment

from core.models import AuditEvent, Staff
from tests.support.accounts import (
    PASSWORD,
    Browser,
    hidden_fields,
    make_person,
    page_text,
    redirected_to,
)
from tests.support.harness import Stack, running_stack

pytestmark = [pytest.mark.pages, pytest.mark.asyncio(loop_scope="session")]

FILE = (
    "\ufefffirst_name,last_name,external_email_1,is_admin\r\n"
    "Ada,Lovelace,ada.pages@example.com,FALSE\r\n"
    "Grace,,grace.pages@example.com,no\r\n"
    "Alan,Turing,alan.pages@example.com,yes\r\n"
)
BATCH = re.compile(r"^/admin/staff/batches/([0-9a-f-]{36})$")


async def signed_in(stack: Stack) -> Browser:
    person = await make_person(stack.sessions, stack.settings, mfa=True, first_name="Ada", last_name="Admin")
    async with stack.sessions() as db:
        await db.execute(update(Staff).where(Staff.id == person.staff_id).values(is_admin=True))
        await db.commit()
    browser = Browser(stack.transport)
    login = await browser.get("/sso/login")
    sent = await browser.submit(login, "/sso/login", email=person.email, password=PASSWORD)
    assert redirected_to(sent, "/sso/login/mfa"), sent.text
    done = await browser.submit(await browser.get("/sso/login/mfa"), "/sso/login/mfa", code=person.totp_now())
    assert done.status_code == 303, done.text
    return browser


@asynccontextmanager
async def admin_stack(env: WorkflowEnvironment, url: str, rate: int) -> AsyncIterator[tuple[Stack, Browser]]:
    """The stack with batches sending `rate` a minute, and an administrator signed in."""
    async with running_stack(env, url, batch_send_rate=rate) as stack:
        browser = await signed_in(stack)
        yield stack, browser
        await browser.aclose()


@pytest_asyncio.fixture(loop_scope="session")
async def fast(temporal_env: WorkflowEnvironment, sqlite_url: str) -> AsyncIterator[tuple[Stack, Browser]]:
    async with admin_stack(temporal_env, sqlite_url, 60_000) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="session")
async def slow(temporal_env: WorkflowEnvironment, sqlite_url: str) -> AsyncIterator[tuple[Stack, Browser]]:
    """One email a minute: there is time to pause the batch."""
    async with admin_stack(temporal_env, sqlite_url, 1) as running:
        yield running


async def upload(browser: Browser, csrf: str, content: str) -> httpx.Response:
    return await browser.http.post(
        "/admin/staff/import",
        data={"csrf": csrf},
        files={"file": ("staff.csv", content.encode(), "text/csv")},
    )


async def staff_named(stack: Stack, *emails: str) -> int:
    async with stack.sessions() as db:
        return (
            await db.scalar(select(func.count()).select_from(Staff).where(Staff.external_email_1.in_(emails)))
            or 0
        )


async def batch_page_until(browser: Browser, path: str, state: str) -> httpx.Response:
    async with asyncio.timeout(60):
        while True:
            page = await browser.get(path)
            assert page.status_code == 200, page.text
            if f'<dd id="batch-state">{state}' in page.text:
                return page
            await asyncio.sleep(0.1)


async def test_import_preview_then_import_and_watch_the_emails_go(fast: tuple[Stack, Browser]) -> None:
    stack, browser = fast
    staff_page = await browser.get("/admin/staff")
    assert 'href="/admin/staff/import"' in staff_page.text and "Import from CSV" in page_text(staff_page)
    form = await browser.get("/admin/staff/import")
    assert 'enctype="multipart/form-data"' in form.text
    csrf = hidden_fields(form, "/admin/staff/import")["csrf"]

    preview = await upload(browser, csrf, FILE)
    assert preview.status_code == 200, preview.text
    text = page_text(preview)
    assert "2 of 3 rows can be imported" in text
    assert "Skipped: last_name: is required" in text
    assert text.count("Will be added") == 2
    assert await staff_named(stack, "ada.pages@example.com", "alan.pages@example.com") == 0  # a dry run

    confirm = hidden_fields(preview, "/admin/staff/import/confirm")
    assert "Import 2 people" in text and "Send each new person their Single Sign-On email" in text
    done = await browser.http.post(
        "/admin/staff/import/confirm",
        files={k: (None, v) for k, v in {**confirm, "send_email": "yes"}.items()},
    )
    assert done.status_code == 303, done.text
    found = BATCH.match(done.headers["location"])
    assert found, done.headers["location"]
    assert await staff_named(stack, "ada.pages@example.com", "alan.pages@example.com") == 2
    first = await browser.get(done.headers["location"])
    assert "Imported 2 people; skipped 1 rows with problems." in page_text(first)
    page = await batch_page_until(browser, done.headers["location"], "Done")
    assert '<progress id="batch-progress" max="2" value="2">' in page.text
    assert f"staff-batch-{found.group(1)}" in page.text
    for address in ("ada.pages@example.com", "alan.pages@example.com"):
        assert len(await stack.links_sent_to(address)) == 1


async def test_an_upload_without_its_token_or_with_a_bad_file_changes_nothing(
    fast: tuple[Stack, Browser],
) -> None:
    stack, browser = fast
    refused = await upload(browser, "forged", FILE)
    assert refused.status_code == 400 and "That form had expired" in page_text(refused)
    csrf = hidden_fields(await browser.get("/admin/staff/import"), "/admin/staff/import")["csrf"]
    bad = await upload(browser, csrf, "name,email\nA,a@example.com\n")
    assert bad.status_code == 400 and "missing column 'first_name'" in page_text(bad)
    assert await staff_named(stack, "ada.pages@example.com", "a@example.com") == 0


async def test_the_batch_page_pauses_resumes_and_cancels(slow: tuple[Stack, Browser]) -> None:
    stack, browser = slow
    people = [(await stack.create_staff())["id"] for _ in range(3)]
    started = await stack.http.post(
        "/api/v1/staff/batches", json={"staff_ids": people, "action": "send_email"}, headers=stack.admin
    )
    path = f"/admin/staff/batches/{started.json()['id']}"
    page = await browser.get(path)
    # Kept current by templates/static/batch_progress.js while it sends, never a timed reload.
    assert 'data-live="yes"' in page.text and "<meta http-equiv" not in page.text
    assert '<progress id="batch-progress" max="3"' in page.text
    paused = await browser.submit(page, f"{path}/pause")
    assert redirected_to(paused, path)
    page = await browser.get(path)
    assert "Paused the batch." in page_text(page) and '<dd id="batch-state">Paused' in page.text
    assert f'action="{path}/resume"' in page.text and f'action="{path}/pause"' not in page.text
    resumed = await browser.submit(page, f"{path}/resume")
    page = await browser.get(resumed.headers["location"])
    assert "Resumed the batch." in page_text(page)
    cancelled = await browser.submit(page, f"{path}/cancel")
    page = await browser.get(cancelled.headers["location"])
    assert "Cancelled the batch." in page_text(page) and '<dd id="batch-state">Cancelled' in page.text
    assert f'action="{path}/pause"' not in page.text and 'data-live="no"' in page.text
    async with stack.sessions() as db:
        actors = (
            await db.scalars(select(AuditEvent.actor).where(AuditEvent.action == "staff_batch.pause"))
        ).all()
    assert len(actors) == 1 and actors[0].startswith("staff:")
    unknown = await browser.get(f"/admin/staff/batches/{uuid.uuid4()}")
    assert unknown.status_code == 404 and "No staff batch with that id" in page_text(unknown)
