"""What needs Chromium but not the stack: an email, as a phone shows it, is no wider than the
phone with a very long name in it; and the pages' times script (templates/static/times.js)
turns the server's SSO_TIME_ZONE text into the browser's own zone, under the app's CSP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, Route

from api.main import CONTENT_SECURITY_POLICY
from core.templating import EMAIL_SUBJECTS, TEMPLATES_DIR, render_email
from core.times import email_at, email_until, time_element, time_zone
from tests.support.screens import MARKS, VIEWPORTS

pytestmark = MARKS

ORIGIN = "http://layout.test"
LONG_NAME = "Maximilianbartholomewalexanderchristophersonfitzwilliamhenrywolfeschlegelstein"
LONDON = time_zone("Europe/London")
SUMMER = datetime(2026, 7, 1, 19, 43, 5, tzinfo=UTC)
WINTER = datetime(2026, 1, 7, 19, 43, 5, tzinfo=UTC)
CONTEXTS = {
    "sso_welcome": {
        "link": f"https://sso.example.test/sso/setup/{'t' * 43}",
        "ttl_words": "15 minutes",
        "expires_at_text": email_until(SUMMER, LONDON),
    },
    "verification_code": {"code": "123456", "ttl_words": "10 minutes"},
    "password_reset_code": {"code": "654321", "ttl_words": "10 minutes"},
    "password_reset_link": {
        "link": f"https://sso.example.test/sso/reset/link/{'t' * 43}",
        "ttl_words": "15 minutes",
    },
    "password_changed": {
        "login_email": f"{LONG_NAME[:60]}@example.com",
        "changed_at": email_at(WINTER, LONDON),
    },
    "email_change_code": {
        "code": "246810",
        "ttl_words": "24 hours",
        "account_url": "https://sso.example.test/sso/account",
    },
    "email_changed": {"new_email": f"{LONG_NAME[:1]}***@example.com", "changed_at": email_at(WINTER, LONDON)},
    "mfa_changed": {
        "login_email": f"{LONG_NAME[:60]}@example.com",
        "changed_at": email_at(WINTER, LONDON),
        "what": "a new set of recovery codes was made",
    },
    "mfa_reminder": {
        "required": True,
        "login_email": f"{LONG_NAME[:60]}@example.com",
        "due_at": email_at(WINTER, LONDON),
        "link": "https://sso.example.test/sso/account/mfa",
    },
    "entra_linked": {"account": f"{LONG_NAME[:60]}@contoso.example", "linked_at": email_at(SUMMER, LONDON)},
}


async def serve(route: Route, body: str, content_type: str = "text/html") -> None:
    await route.fulfill(
        body=body,
        content_type=content_type,
        headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY.format(form_action="'self'")},
    )


@pytest_asyncio.fixture(loop_scope="session")
async def phone(chromium: Browser) -> AsyncIterator[Page]:
    context = await chromium.new_context(**VIEWPORTS["phone"])
    try:
        yield await context.new_page()
    finally:
        await context.close()


async def widths(page: Page) -> tuple[int, int]:
    found = await page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    return int(found[0]), int(found[1])


@pytest.mark.parametrize("name", sorted(EMAIL_SUBJECTS))
async def test_an_email_with_a_long_name_fits_a_phone(phone: Page, name: str) -> None:
    email = render_email(
        name,
        to="x@example.org",
        brand="agentOS",
        first_name=LONG_NAME,
        support_email="support@agentos.com",
        **CONTEXTS[name],
    )
    await phone.set_content(email.html)
    scroll, client = await widths(phone)
    assert client == 390 and scroll <= client, f"{name}: {scroll} px wide on a {client} px phone"


@pytest.mark.parametrize(
    ("zone", "moment", "style", "server", "browser"),
    [
        ("America/New_York", SUMMER, "day", "1 Jul 2026, 20:43 BST", "1 Jul 2026, 15:43 GMT-4"),
        ("America/New_York", WINTER, "seconds", "7 Jan 2026, 19:43:05 GMT", "7 Jan 2026, 14:43:05 GMT-5"),
        ("Europe/London", SUMMER, "clock", "20:43 BST", "20:43 BST"),
        ("Europe/London", WINTER, "day", "7 Jan 2026, 19:43 GMT", "7 Jan 2026, 19:43 GMT"),
        ("Asia/Kolkata", WINTER, "clock", "19:43 GMT", "01:13 GMT+5:30"),
    ],
)
async def test_page_times_turn_into_the_browsers_zone(
    chromium: Browser, zone: str, moment: datetime, style: str, server: str, browser: str
) -> None:
    element = str(time_element(moment, LONDON, style))
    assert f">{server}</time>" in element  # what a browser without scripts shows
    context = await chromium.new_context(timezone_id=zone, locale="en-GB")
    try:
        page = await context.new_page()
        errors: list[str] = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        script = (TEMPLATES_DIR / "static" / "times.js").read_text()
        await page.route(f"{ORIGIN}/static/times.js", lambda route: serve(route, script, "text/javascript"))
        html = (
            f'<!doctype html><html lang="en"><body><p>{element}</p>'
            '<script src="/static/times.js" defer></script></body></html>'
        )
        await page.route(f"{ORIGIN}/", lambda route: serve(route, html))
        await page.goto(f"{ORIGIN}/")
        shown = page.locator("time")
        assert await shown.inner_text() == browser
        assert await shown.get_attribute("datetime") == moment.isoformat().replace("+00:00", "Z")
        assert not errors, errors  # the CSP let the script run, with no inline script
    finally:
        await context.close()
