"""`sso dev`'s demo app: the banner says where it is, and it signs a person in through the
provider (its own authlib client, over HTTP) and shows what the ID token said."""

from __future__ import annotations

import pytest

from core.db import SessionFactory
from tests.support.accounts import PASSWORD, make_person
from tests.support.browser_steps import BRAND
from tests.support.config import make_settings
from tests.support.screens import MARKS, Screen
from tests.support.stack import DevStack

pytestmark = MARKS


async def test_the_banner_says_where_the_demo_app_is(stack: DevStack) -> None:
    assert f"Demo app               {stack.base_url}/demo " in stack.output()


async def test_the_demo_app_signs_a_person_in(screen: Screen, database: SessionFactory) -> None:
    who = await make_person(database, make_settings(), first_name="Dee", last_name="Moe")
    await screen.goto("/demo/")
    await screen.check("demo-app")
    await screen.follow(f"Sign in to the demo app with {BRAND}")
    await screen.check("demo-app-login", screenshot=False)
    assert await screen.heading() == f"{BRAND} Single Sign-On"
    await screen.field("Email address").fill(who.email)
    await screen.field("Password").fill(PASSWORD)
    await screen.press("Sign in")
    await screen.page.wait_for_url("**/demo/")
    # The page that refreshes to the app (see test_oidc.py) is gone at once.
    screen.checked.update(range(len(screen.visits) - 1))
    await screen.check("demo-app-signed-in")
    text = await screen.text()
    assert "You're signed in to the demo app" in text
    assert "Dee Moe" in text and who.email in text and "pwd" in text

    await screen.press("Sign out of the demo app")
    await screen.check("demo-app")
    assert await screen.heading() == "Demo app"


@pytest.mark.parametrize("viewport", ["desktop"], indirect=True)
async def test_a_second_visit_to_the_demo_app_needs_no_screen(
    screen: Screen, database: SessionFactory
) -> None:
    who = await make_person(database, make_settings(), first_name="Lee", last_name="Poe")
    await screen.goto("/sso/login")
    await screen.check("demo-app-login", screenshot=False)
    await screen.field("Email address").fill(who.email)
    await screen.field("Password").fill(PASSWORD)
    await screen.press("Sign in")
    await screen.check("demo-app-account", screenshot=False)
    await screen.goto("/demo/login")
    assert screen.page.url.endswith("/demo/"), screen.page.url
    await screen.check("demo-app-signed-in", screenshot=False)
    assert "Lee Poe" in await screen.text()
