"""A person's lifecycle on the admin pages and the person's account page, driven like a browser
in-process on SQLite and PostgreSQL with a real worker on the time-skipping server: Edit (name,
leave date, a new address) with CSRF, a taken address refused, the person confirming their new
address with the emailed code, and Erase behind a confirmation naming what it removes."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import httpx
import pytest
from sqlalchemy import select

from api.admin_words import day
from core.models import AuditEvent, SsoAccount, Staff
from tests.support.accounts import (
    code_in,
    emails_with_subject,
    hidden_fields,
    page_text,
    redirected_to,
)
from tests.support.harness import Stack
from tests.support.oidc import signed_in_admin, signed_in_browser

pytestmark = [pytest.mark.pages, pytest.mark.asyncio(loop_scope="session")]

FLASH = re.compile(r'<div class="(error|success)" role="(?:alert|status)"><p>(.*?)</p></div>', re.S)
CODE_SUBJECT = "Confirm your new agentOS sign-in email"


def flash(page: httpx.Response) -> tuple[str, str]:
    [(kind, text)] = FLASH.findall(page.text)
    return kind, " ".join(text.split())


async def staff_row(stack: Stack, staff_id: object) -> Staff | None:
    async with stack.sessions() as session:
        return await session.get(Staff, staff_id)


async def test_the_edit_page_changes_the_name_and_sets_the_leave_date(stack: Stack) -> None:
    _, browser = await signed_in_admin(stack, first_name="Avery", last_name="Quill")
    person = await stack.person(first_name="Lee", last_name="Stayer")
    sid = person.staff_id
    shown = await browser.get(f"/admin/staff/{sid}")
    for href in ("edit", "edit#leave_on", "erase", "disable"):
        assert f'href="/admin/staff/{sid}/{href}"' in shown.text
    form = await browser.get(f"/admin/staff/{sid}/edit")
    assert form.status_code == 200 and "Edit Lee Stayer" in page_text(form)
    assert '<label for="leave_on">Leave date</label>' in form.text and "Europe/London" in page_text(form)
    leave = datetime.now(stack.settings.zone).date() + timedelta(days=40)

    fields = hidden_fields(form, f"/admin/staff/{sid}/edit")
    forged = await browser.post(
        f"/admin/staff/{sid}/edit",
        {
            **fields,
            "csrf": "forged",
            "first_name": "Leigh",
            "last_name": "Stayer",
            "leave_on": leave.isoformat(),
        },
    )
    assert forged.status_code == 400
    assert (await staff_row(stack, sid)).first_name == "Lee"  # type: ignore[union-attr]

    done = await browser.submit(
        form,
        f"/admin/staff/{sid}/edit",
        first_name="Leigh",
        last_name="Stayer",
        external_email_1=person.email,
        leave_on=leave.isoformat(),
    )
    assert done.status_code == 303, done.text
    page = await browser.get(done.headers["location"])
    kind, text = flash(page)
    assert (
        kind == "success"
        and "Their name is now Leigh Stayer." in text
        and f"They leave on {day(leave)}" in text
    )
    assert f"Leaves on {day(leave)}: disabled at the start of that day" in page_text(page)
    row = await staff_row(stack, sid)
    assert row is not None and (row.first_name, row.leave_on) == ("Leigh", leave)

    cleared = await browser.submit(
        await browser.get(f"/admin/staff/{sid}/edit"),
        f"/admin/staff/{sid}/edit",
        first_name="Leigh",
        last_name="Stayer",
        external_email_1=person.email,
        leave_on="",
    )
    page = await browser.get(cleared.headers["location"])
    assert flash(page) == ("success", "Their leave date was cleared.")
    assert "Leaves on" not in page_text(page)


async def test_the_edit_page_refuses_a_taken_address_and_a_past_day(stack: Stack) -> None:
    _, browser = await signed_in_admin(stack, first_name="Avery", last_name="Quill")
    person, other = await stack.person(), await stack.person()
    sid = person.staff_id
    form = await browser.get(f"/admin/staff/{sid}/edit")
    values = {"first_name": "Changed", "last_name": person.last_name}
    taken = await browser.submit(form, f"/admin/staff/{sid}/edit", **values, external_email_1=other.email)
    assert taken.status_code == 409
    assert "Another staff member already uses that email address" in page_text(taken)
    assert 'id="external_email_1"' in taken.text and 'aria-invalid="true"' in taken.text
    yesterday = (datetime.now(stack.settings.zone).date() - timedelta(days=1)).isoformat()
    past = await browser.submit(
        form, f"/admin/staff/{sid}/edit", **values, external_email_1=person.email, leave_on=yesterday
    )
    assert past.status_code == 409 and "The leave date must be after today." in page_text(past)
    bad = await browser.submit(form, f"/admin/staff/{sid}/edit", **values, external_email_1="nope")
    assert bad.status_code == 400 and "External Email 1:" in page_text(bad)
    row = await staff_row(stack, sid)
    assert row is not None and (row.first_name, row.external_email_1, row.leave_on) == (
        person.first_name,
        person.email,
        None,
    )


async def test_the_person_confirms_their_new_address_on_their_account_page(stack: Stack) -> None:
    _, browser = await signed_in_admin(stack, first_name="Avery", last_name="Quill")
    person = await stack.person()
    sid = person.staff_id
    new = f"new.{sid.hex[:8]}@example.org"
    form = await browser.get(f"/admin/staff/{sid}/edit")
    done = await browser.submit(
        form,
        f"/admin/staff/{sid}/edit",
        first_name=person.first_name,
        last_name=person.last_name,
        external_email_1=new,
    )
    page = await browser.get(done.headers["location"])
    assert f"A code was emailed to {new}" in flash(page)[1]
    pending = f'Pending change to <span class="email">{new}</span>: waiting for the code emailed to it'
    assert pending in page.text
    (mail,) = await emails_with_subject(stack.sessions, stack.settings, new, CODE_SUBJECT)
    code = code_in(mail)
    assert "https://sso.example.test/sso/account" in mail

    own = await signed_in_browser(stack, person.email)
    account = await own.get("/sso/account")
    assert f"Your administrator is changing your sign-in email to {new}" in page_text(account)
    wrong = "000000" if code != "000000" else "111111"
    refused = await own.submit(account, "/sso/account/email-change", code=wrong)
    assert refused.status_code == 400 and "Incorrect code, 4 attempts left" in page_text(refused)
    done = await own.submit(account, "/sso/account/email-change", code=code)
    assert redirected_to(done, "/sso/account?notice=email_changed")
    shown = await own.get("/sso/account?notice=email_changed")
    assert (
        "Your sign-in email was changed." in page_text(shown)
        and "Confirm your new sign-in email" not in shown.text
    )
    async with stack.sessions() as session:
        login = await session.scalar(select(SsoAccount.login_email).where(SsoAccount.staff_id == sid))
        confirmed = await session.scalar(
            select(AuditEvent).where(
                AuditEvent.target == str(sid), AuditEvent.action == "staff.email_changed"
            )
        )
    assert login == new and confirmed is not None and confirmed.actor == f"staff:{sid}"


async def test_erase_asks_first_then_removes_the_person(stack: Stack) -> None:
    _, browser = await signed_in_admin(stack, first_name="Avery", last_name="Quill")
    person = await stack.person(first_name="Eri", last_name="Sure")
    sid = person.staff_id
    confirm = await browser.get(f"/admin/staff/{sid}/erase")
    assert confirm.status_code == 200
    said = page_text(confirm)
    assert "Erase Eri Sure?" in said and "This can't be undone." in said.replace("&#39;", "'")
    assert "audit trail is kept, with Eri Sure replaced by a pseudonym" in said

    fields = hidden_fields(confirm, f"/admin/staff/{sid}/erase")
    forged = await browser.post(f"/admin/staff/{sid}/erase", {**fields, "csrf": "forged"})
    assert flash(await browser.get(forged.headers["location"]))[0] == "error"
    assert await staff_row(stack, sid) is not None

    done = await browser.submit(confirm, f"/admin/staff/{sid}/erase")
    assert redirected_to(done, "/admin/staff")
    listed = await browser.get("/admin/staff")
    assert flash(listed)[0] == "success" and "Eri" not in listed.text
    assert await staff_row(stack, sid) is None
    assert (await browser.get(f"/admin/staff/{sid}")).status_code == 404


async def test_an_admin_cannot_erase_themselves_on_the_pages(stack: Stack) -> None:
    _, browser = await signed_in_admin(stack, first_name="Avery", last_name="Quill")
    async with stack.sessions() as session:
        me = await session.scalar(select(Staff).where(Staff.last_name == "Quill"))
    assert me is not None
    confirm = await browser.get(f"/admin/staff/{me.id}/erase")
    done = await browser.submit(confirm, f"/admin/staff/{me.id}/erase")
    shown = await browser.get(done.headers["location"])
    assert flash(shown) == (
        "error",
        "Erase Avery Quill: You can&#39;t erase your own staff login. Ask another administrator.",
    )
    assert await staff_row(stack, me.id) is not None
