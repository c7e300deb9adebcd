"""An expired Set Up Single Sign-On link, on a stack of its own whose links last 3 seconds."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.browser_steps import new_staff
from tests.support.e2e import BUTTON, World, _Links, eventually, send_email, status, wait_for_email
from tests.support.screens import MARKS, Screen
from tests.support.stack import DevStack, SmtpSink, running_sso_dev

pytestmark = MARKS


@pytest.fixture(scope="module")
def stack(smtp: SmtpSink, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    with running_sso_dev(
        tmp_path_factory.mktemp("sso-dev-expiry"), smtp.port, extra_env={"SSO_SETUP_LINK_TTL": "3"}
    ) as dev:
        yield dev


async def test_an_expired_link_says_it_is_no_longer_valid(
    screen: Screen, api: httpx.AsyncClient, world: World
) -> None:
    staff = await new_staff(api, world, "Lee", "Chan", screen.viewport)
    await send_email(api, world, staff["id"])
    received = await wait_for_email(world, staff["external_email_1"])
    html_part = received.message.get_body(preferencelist=("html",))
    assert html_part is not None
    parser = _Links()
    parser.feed(html_part.get_content())
    [link] = [href for label, href in parser.links if label == BUTTON]

    async def expired() -> dict[str, Any] | None:
        body = await status(api, staff["id"])
        return body if body["state"] == "expired" else None

    await eventually(expired, 60, what="the setup flow to end as expired")

    await screen.goto(link)
    await screen.check("link-expired")
    assert await screen.heading() == "This link is no longer valid"
    text = await screen.text()
    assert "This Single Sign-On setup link has expired." in text, text
    assert "ask your administrator to send you a new Single Sign-On email" in text

    # Send me a new link: the page answers as it would for anyone, and the email comes.
    assert "Send me a new link" in text
    await screen.press("Send me a new link")
    await screen.check("link-new-sent")
    assert await screen.heading() == "Check your email"
    assert "If this link was yours, we've sent a new one to your email." in await screen.text()
    again = await wait_for_email(world, staff["external_email_1"], count=2)
    assert again.message["Subject"] == received.message["Subject"]
