"""The web app restarts (SIGTERM, a new process on the same port): a person's browser carries
on, mid-setup and signed in. Sessions live on the server side in the database, not in the
process."""

from __future__ import annotations

import pytest

from tests.support.e2e import World
from tests.support.fault_people import Person, admin_api, follow, sign_in, text_of
from tests.support.faults import StackFactory
from tests.support.stack import SmtpSink

pytestmark = [pytest.mark.faults]


async def test_browser_sessions_survive_a_web_app_restart(fault_stack: StackFactory, smtp: SmtpSink) -> None:
    stack = fault_stack()
    world = World(stack, smtp)  # type: ignore[arg-type]
    async with admin_api(stack) as api:
        person = await Person.create(world, api, "wren", first="Wren")
        try:
            await person.send()
            confirm = await person.to_confirm_page()
            setup_cookie = person.browser.cookies.get("sso_setup")
            assert setup_cookie

            # Mid-setup: the web app goes away and a new one takes its place.
            first_api = stack.api.pid
            await stack.restart_api()
            assert stack.api.pid != first_api

            # The same browser, the same cookie: the confirm page and the form it showed
            # before the restart (its CSRF token and submission id) still work.
            again = await person.confirm_page()
            assert person.to in text_of(again)
            response = await person.confirm(confirm, person.codes[-1])
            mfa = await follow(person.browser, response, "/sso/setup/mfa")
            assert person.browser.cookies.get("sso_setup") == setup_cookie
            await person.finish(mfa)
            assert (await person.status())["state"] == "active"

            # Signed in: the account page before and after another restart.
            response = await sign_in(person.browser, world, person.to, person.password)
            account = await follow(person.browser, response, "/sso/account")
            assert "You're signed in" in text_of(account)
            signed_in = person.browser.cookies.get("sso_session")
            assert signed_in

            await stack.restart_api()
            after = await person.browser.get(f"{stack.base_url}/sso/account")
            assert after.status_code == 200, (after.status_code, text_of(after)[:1000])
            assert "You're signed in" in text_of(after)
            assert "Wren Bloggs" in text_of(after) and person.to in text_of(after)
            assert person.browser.cookies.get("sso_session") == signed_in
            # Nothing of the setup was repeated or lost across the restarts.
            assert len(person.setup_emails()) == 1 and len(person.code_emails()) == 1
            audit = stack.audit(person.id)
            for action in (
                "sso_email.sent",
                "sso_setup.password_set",
                "code.issued",
                "sso_setup.email_confirmed",
                "sso_setup.active",
            ):
                assert audit.get(action) == 1, (action, audit)
        finally:
            await person.close()
