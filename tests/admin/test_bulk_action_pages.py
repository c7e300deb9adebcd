"""The staff list's bulk actions, driven like a browser in-process on SQLite and PostgreSQL with
a real worker on the time-skipping server: people selected with a labelled checkbox each, a
confirmation naming how many people and what will happen, then each person's outcome, through
the same services as the single actions; CSRF as the other admin forms."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from api.services.sessions import Sessions
from core.models import AuditEvent, Staff
from tests.support.accounts import Browser, hidden_fields, page_text
from tests.support.admin_pages import AVERY
from tests.support.harness import Stack
from tests.support.oidc import signed_in_admin

pytestmark = [pytest.mark.pages, pytest.mark.asyncio(loop_scope="session")]

FLASH = re.compile(r'<div class="(error|success)" role="(?:alert|status)"><p>(.*?)</p></div>', re.S)


async def bulk(browser: Browser, action: str, ids: list[object], **extra: str) -> httpx.Response:
    """The list's bulk form, posted with these people ticked."""
    listed = await browser.get("/admin/staff")
    fields = hidden_fields(listed, "/admin/staff/bulk")
    data = {**fields, "action": action, "ids": [str(i) for i in ids], **extra}
    return await browser.http.post("/admin/staff/bulk", data=data)


async def confirm(browser: Browser, page: httpx.Response) -> httpx.Response:
    """The confirmation's button: its hidden fields, every selected id among them."""
    form = page.text[page.text.index('<form method="post" action="/admin/staff/bulk">') :]
    form = form[: form.index("</form>")]
    pairs = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form)
    data: dict[str, list[str]] = {}
    for name, value in pairs:
        data.setdefault(name, []).append(value)
    return await browser.http.post("/admin/staff/bulk", data=data)


def rows(page: httpx.Response) -> list[str]:
    body = page.text[page.text.index("<tbody>") : page.text.index("</tbody>")]
    return [" ".join(re.sub(r"<[^>]+>", " ", row).split()) for row in body.split("</tr>") if "<td" in row]


async def test_the_list_selects_people_and_disables_them_after_a_confirmation(stack: Stack) -> None:
    _admin, browser = await signed_in_admin(stack, **AVERY)
    one = await stack.person(first_name="Bea", last_name="Bulk")
    two = await stack.person(first_name="Cy", last_name="Bulk")
    async with stack.sessions() as session:
        await Sessions(stack.settings, session).create("signin", one.staff_id, timedelta(hours=1))
        await session.commit()
    listed = await browser.get("/admin/staff")
    assert f'<input type="checkbox" form="bulk" name="ids" value="{one.staff_id}"' in listed.text
    assert (
        f'<label class="visually-hidden" for="select-{one.staff_id}">Select Bea Bulk</label>' in listed.text
    )
    assert '<label for="bulk-action">With the people selected below</label>' in listed.text

    asked = await bulk(browser, "disable", [one.staff_id, two.staff_id, one.staff_id])
    assert asked.status_code == 200, asked.text
    said = page_text(asked)
    assert "Disable for 2 people?" in said and "For leavers." in said
    assert "Bea Bulk" in said and "Cy Bulk" in said
    async with stack.sessions() as session:
        assert (await session.get(Staff, one.staff_id)).disabled_at is None  # type: ignore[union-attr]

    done = await confirm(browser, asked)
    assert done.status_code == 200, done.text
    assert "Disable: done for 2 of 2" in page_text(done)
    assert all("Disabled: signed out of every app" in row for row in rows(done))
    async with stack.sessions() as session:
        for person in (one, two):
            assert (await session.get(Staff, person.staff_id)).disabled_at is not None  # type: ignore[union-attr]
        disabled = (
            await session.scalars(select(AuditEvent).where(AuditEvent.action == "staff.disabled"))
        ).all()
    assert {e.target for e in disabled} >= {str(one.staff_id), str(two.staff_id)}


async def test_each_persons_outcome_is_shown_including_what_was_not_done(stack: Stack) -> None:
    admin, browser = await signed_in_admin(stack, **AVERY)
    new = await stack.create_staff()
    active = await stack.person(first_name="Al", last_name="Ready")
    asked = await bulk(browser, "send-email", [new["id"], active.staff_id])
    assert "Send Single Sign-On Email for 2 people?" in page_text(asked)
    done = await confirm(browser, asked)
    assert "Send Single Sign-On Email: done for 1 of 2" in page_text(done)
    sent, refused = rows(done)
    assert f"Single Sign-On email sent to {new['external_email_1']}." in sent
    assert "Al Ready Not done:" in refused

    me = await bulk(browser, "disable", [admin.staff_id])
    outcome = await confirm(browser, me)
    assert "Disable: done for 0 of 1" in page_text(outcome)
    assert "You can&#39;t disable your own staff login" in outcome.text


async def test_sign_out_everywhere_for_the_selected_people(stack: Stack) -> None:
    _admin, browser = await signed_in_admin(stack, **AVERY)
    person = await stack.person(first_name="Sid", last_name="Session")
    async with stack.sessions() as session:
        await Sessions(stack.settings, session).create("signin", person.staff_id, timedelta(hours=1))
        await session.commit()
    done = await confirm(browser, await bulk(browser, "revoke-sessions", [person.staff_id]))
    assert "Sign out everywhere: done for 1 of 1" in page_text(done)
    assert "Signed out everywhere (1 session)." in rows(done)[0]


async def test_nothing_selected_an_unknown_action_or_a_forged_form_does_nothing(stack: Stack) -> None:
    _admin, browser = await signed_in_admin(stack, **AVERY)
    person = await stack.person()

    async def flash_after(response: httpx.Response) -> tuple[str, str]:
        assert response.status_code == 303, response.text
        shown = await browser.get(response.headers["location"])
        [(kind, text)] = FLASH.findall(shown.text)
        return kind, " ".join(text.split())

    assert await flash_after(await bulk(browser, "disable", [])) == (
        "error",
        "Select the people first: tick the box in front of each name.",
    )
    assert (await flash_after(await bulk(browser, "erase-everyone", [person.staff_id])))[0] == "error"
    forged = await bulk(browser, "disable", [person.staff_id], csrf="forged", confirmed="yes")
    assert (await flash_after(forged))[0] == "error"
    async with stack.sessions() as session:
        assert (await session.get(Staff, person.staff_id)).disabled_at is None  # type: ignore[union-attr]
