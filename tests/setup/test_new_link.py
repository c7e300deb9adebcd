"""'Send me a new link' on an expired or used setup link's page: a new setup email to the
person's own address, found from the old link's token, throttled, audited, and refused for an
unknown link or an active person with the very answer a success gets. docs/security.md §5,
§15, §17, §20, §28."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import func, select, update

from api import admin_words
from api.services.new_link import IP_LIMIT, NEUTRAL
from core.models import AccountStatus, AuditEvent, SetupLink, SsoAccount, SsoSetup, utcnow
from tests.support.accounts import Browser, browsing, hidden_fields, page_text
from tests.support.harness import Stack
from tests.support.setup_pages import assert_page_headers, send_setup_email

pytestmark = [pytest.mark.pages, pytest.mark.asyncio(loop_scope="session")]

SEND = "Send me a new link"


@pytest_asyncio.fixture(loop_scope="session")
async def browser(stack: Stack) -> AsyncIterator[Browser]:
    async with browsing(stack.transport) as person:
        yield person


async def expire_links(stack: Stack, staff_id: str) -> None:
    async with stack.sessions() as session:
        await session.execute(
            update(SetupLink)
            .where(SetupLink.staff_id == uuid.UUID(staff_id))
            .values(expires_at=utcnow() - timedelta(minutes=1))
        )
        await session.commit()


async def setups(stack: Stack, staff_id: str) -> int:
    async with stack.sessions() as session:
        count = await session.scalar(
            select(func.count()).select_from(SsoSetup).where(SsoSetup.staff_id == uuid.UUID(staff_id))
        )
    return int(count or 0)


async def asked(stack: Stack, staff_id: str | None = None) -> list[AuditEvent]:
    query = select(AuditEvent).where(AuditEvent.action == "sso_email.new_link_asked")
    if staff_id is not None:
        query = query.where(AuditEvent.target == staff_id)
    async with stack.sessions() as session:
        return list((await session.scalars(query.order_by(AuditEvent.occurred_at))).all())


async def ask(browser: Browser, token: str) -> httpx.Response:
    page = await browser.get(f"/sso/setup/{token}")
    assert page.status_code == 410, page.text
    assert SEND in page_text(page)
    return await browser.submit(page, "/sso/setup/new-link")


def neutral(answer: httpx.Response) -> bool:
    assert_page_headers(answer)  # no-store, no-referrer: a link page
    return answer.status_code == 200 and NEUTRAL in page_text(answer)


async def test_an_expired_link_sends_a_new_one_to_the_persons_own_address(
    stack: Stack, browser: Browser
) -> None:
    staff, token = await send_setup_email(stack)
    await expire_links(stack, staff["id"])
    answer = await ask(browser, token)
    assert neutral(answer), answer.text  # type: ignore[attr-defined]
    address = staff["external_email_1"]
    await stack.wait_for(staff["id"], lambda s: s["state"] == "email_sent")
    links = await stack.links_sent_to(address)
    assert len(links) == 2 and links[0] == token
    # The new link works; the old one still doesn't.
    assert (await browser.get(f"/sso/setup/{links[1]}")).status_code == 200
    assert (await browser.get(f"/sso/setup/{token}")).status_code == 410
    [event] = await asked(stack, staff["id"])
    assert event.outcome == "accepted" and event.actor == f"staff:{staff['id']}"
    assert event.details["old_link"] == "expired"
    # The admin's person page names it.
    assert admin_words.event(event.action).startswith("New link asked for by the person")
    # Nothing in the request named an address: the token is all it carried, and it is not stored.
    async with stack.sessions() as session:
        requested = await session.scalar(
            select(SsoSetup)
            .where(SsoSetup.staff_id == uuid.UUID(staff["id"]))
            .order_by(SsoSetup.created_at.desc())
        )
    assert requested is not None and requested.requested_by == f"staff:{staff['id']}"
    assert token not in str(event.details)


async def test_asking_again_soon_sends_nothing_and_answers_the_same(stack: Stack, browser: Browser) -> None:
    staff, token = await send_setup_email(stack)
    await expire_links(stack, staff["id"])
    assert neutral(await ask(browser, token))
    await stack.wait_for(staff["id"], lambda s: s["state"] == "email_sent")
    [_, second] = await stack.links_sent_to(staff["external_email_1"])
    await expire_links(stack, staff["id"])
    # The second link, expired too, and the first (replaced by the second) posted again.
    again = await ask(browser, second)
    fields = hidden_fields(await browser.get(f"/sso/setup/{second}"), "/sso/setup/new-link")
    replaced = await browser.post("/sso/setup/new-link", {**fields, "token": token})
    for answer in (again, replaced):
        assert neutral(answer)
    assert await setups(stack, staff["id"]) == 2
    outcomes = [(e.outcome, e.details.get("reason")) for e in await asked(stack, staff["id"])]
    assert outcomes == [
        ("accepted", None),
        ("refused", "asked again too soon"),
        ("refused", "asked again too soon"),
    ]


async def test_an_active_person_or_an_unknown_link_gets_the_same_answer_and_nothing(
    stack: Stack, browser: Browser
) -> None:
    staff, token = await send_setup_email(stack)
    async with stack.sessions() as session:
        session.add(
            SsoAccount(
                staff_id=uuid.UUID(staff["id"]),
                login_email=staff["external_email_1"],
                status=AccountStatus.active.value,
                activated_at=utcnow(),
            )
        )
        await session.commit()
    await expire_links(stack, staff["id"])
    page = await browser.get(f"/sso/setup/{token}")
    fields = hidden_fields(page, "/sso/setup/new-link")
    answers = [
        await browser.post("/sso/setup/new-link", fields),
        await browser.post("/sso/setup/new-link", {**fields, "token": "not-a-link-" + "x" * 30}),
        await browser.post("/sso/setup/new-link", {**fields, "token": ""}),
    ]
    for answer in answers:
        assert neutral(answer), answer.text
    assert page_text(answers[0]) == page_text(answers[1]) == page_text(answers[2])
    assert await setups(stack, staff["id"]) == 1
    assert len(await stack.links_sent_to(staff["external_email_1"])) == 1
    reasons = [e.details.get("reason") for e in await asked(stack) if e.outcome == "refused"]
    assert "already active" in reasons and "unknown link" in reasons


async def test_a_link_that_still_works_offers_nothing_and_sends_nothing(
    stack: Stack, browser: Browser
) -> None:
    staff, token = await send_setup_email(stack)
    page = await browser.get(f"/sso/setup/{token}")
    assert page.status_code == 200 and SEND not in page_text(page)
    fields = hidden_fields(await browser.get("/sso/login"), "/sso/login")
    answer = await browser.post("/sso/setup/new-link", {"csrf": fields["csrf"], "token": token})
    assert neutral(answer)
    assert await setups(stack, staff["id"]) == 1


async def test_a_form_without_its_csrf_token_sends_nothing(stack: Stack, browser: Browser) -> None:
    staff, token = await send_setup_email(stack)
    await expire_links(stack, staff["id"])
    answer = await browser.post("/sso/setup/new-link", {"csrf": "forged", "token": token})
    assert answer.status_code == 400 and "This form has expired" in page_text(answer)
    assert await setups(stack, staff["id"]) == 1 and not await asked(stack, staff["id"])


async def test_a_network_asking_too_often_is_told_to_wait(stack: Stack, browser: Browser) -> None:
    fields = hidden_fields(await browser.get("/sso/login"), "/sso/login")
    for _ in range(IP_LIMIT):
        assert neutral(
            await browser.post("/sso/setup/new-link", {"csrf": fields["csrf"], "token": "unknown"})
        )
    answer = await browser.post("/sso/setup/new-link", {"csrf": fields["csrf"], "token": "unknown"})
    assert int(answer.headers["retry-after"]) > 0
    assert answer.status_code == 429 and "Too many new links were asked for from your network" in page_text(
        answer
    )
