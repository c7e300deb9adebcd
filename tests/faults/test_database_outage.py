"""PostgreSQL unreachable for a moment (every connection dropped, new ones refused, through a
TCP proxy the test controls): pages and the admin API answer a clear 503, never a 500 or a
hang; activities retry; once the database is back every step and flow completes, once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import make_url

from tests.support.config import POSTGRES_URL
from tests.support.e2e import World
from tests.support.fault_people import (
    UNAVAILABLE,
    Person,
    admin_api,
    eventually,
    follow,
    repost,
    text_of,
)
from tests.support.faults import FaultStack, StackFactory, TcpProxy
from tests.support.stack import SmtpSink

pytestmark = [pytest.mark.faults, pytest.mark.postgres]


@pytest.fixture
def db_proxy() -> Iterator[TcpProxy]:
    if not POSTGRES_URL:
        pytest.skip(
            "the database fault test needs PostgreSQL: set SSO_TEST_DATABASE_URL, e.g. "
            "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        )
    proxy = TcpProxy(
        make_url(POSTGRES_URL).port or 5432, target_host=make_url(POSTGRES_URL).host or "127.0.0.1"
    ).start()
    try:
        yield proxy
    finally:
        proxy.close()


def _stack(fault_stack: StackFactory, schema_url: str, proxy: TcpProxy) -> FaultStack:
    through_proxy = make_url(schema_url).set(host="127.0.0.1", port=proxy.port)
    return fault_stack(
        database_url=through_proxy.render_as_string(hide_password=False), direct_database_url=schema_url
    )


async def test_database_unreachable_for_a_moment(
    fault_stack: StackFactory, smtp: SmtpSink, postgres_schema: tuple[str, str], db_proxy: TcpProxy
) -> None:
    stack = _stack(fault_stack, postgres_schema[1], db_proxy)
    world = World(stack, smtp)  # type: ignore[arg-type]
    async with admin_api(stack) as api:
        pia = await Person.create(world, api, "pia", first="Pia")  # at the code step
        quill = await Person.create(world, api, "quill", first="Quill")  # choosing a password
        ros = await Person.create(world, api, "ros", first="Ros")  # her email is being sent
        try:
            await pia.send()
            await quill.send()
            confirm = await pia.to_confirm_page()
            await quill.read_setup_email()
            password_page = await quill.password_page()

            # Ros's email is requested, and the worker takes it up only once the database has
            # gone: its activity meets the outage.
            stack.worker.pause()
            try:
                await ros.send()
                db_proxy.cut()
            finally:
                stack.worker.resume()

            # Every page and API answer while the database is unreachable: clear, not a 500.
            step, code_step, code_page, admin, health = await asyncio.gather(
                quill.set_password(password_page),
                pia.confirm(confirm, pia.codes[-1]),
                pia.browser.get(f"{stack.base_url}/sso/setup/confirm"),
                api.get(f"/api/v1/staff/{ros.id}/sso"),
                api.get("/healthz"),
            )
            for page in (step, code_step, code_page):
                assert page.status_code == 503, (page.request.url, page.status_code, text_of(page)[:2000])
                assert UNAVAILABLE in text_of(page), text_of(page)[:2000]
                assert page.headers["content-type"].startswith("text/html")
            assert admin.status_code == 503, admin.text
            assert admin.json()["error"] == "unavailable", admin.text
            assert health.status_code == 503 and health.json()["failed"] == ["database"]

            # The activity that met the outage is retried meanwhile.
            async def retried() -> bool:
                pending = await stack.started(ros.workflow_id, "send_setup_email") or next(
                    iter(await stack.pending_activities(ros.workflow_id)), None
                )
                return pending is not None and pending.attempt >= 3

            await eventually(retried, 60, what="send_setup_email to be retried 3 times")
            assert not ros.setup_emails()

            db_proxy.restore()

            # Ros's email goes out once, and its link works.
            await ros.read_setup_email()
            sent = await ros.wait_for_state("email_sent")
            assert sent["email_delivery"]["state"] == "sent"
            assert (await ros.password_page()).status_code == 200

            # The pages that answered 503 run their step when pressed again, once.
            await follow(quill.browser, await repost(quill, step), "/sso/setup/confirm")
            await quill.read_code()
            mfa = await follow(pia.browser, await repost(pia, code_step), "/sso/setup/mfa")
            await pia.finish(mfa)
            assert (await pia.status())["state"] == "active"

            await asyncio.sleep(2)  # anything doubled would have shown up by now
            for person in (pia, quill, ros):
                assert len(person.setup_emails()) == 1, person.staff["first_name"]
            assert len(pia.code_emails()) == 1 and len(quill.code_emails()) == 1
            assert not ros.code_emails()
            for person, actions in (
                (
                    pia,
                    (
                        "sso_email.sent",
                        "sso_setup.password_set",
                        "code.issued",
                        "sso_setup.email_confirmed",
                        "sso_setup.active",
                    ),
                ),
                (quill, ("sso_email.sent", "sso_setup.password_set", "code.issued")),
                (ros, ("sso_email.sent",)),
            ):
                audit = stack.audit(person.id)
                for action in actions:
                    assert audit.get(action) == 1, (person.staff["first_name"], action, audit)
        finally:
            for person in (pia, quill, ros):
                await person.close()


async def test_email_accepted_just_as_the_database_goes(
    fault_stack: StackFactory, smtp: SmtpSink, postgres_schema: tuple[str, str], db_proxy: TcpProxy
) -> None:
    """The SMTP server takes the setup email (and later the code) at the moment the database
    drops: the activity cannot record that it was sent. It must not send it again with a new
    link (or code), leaving the person with a dead first email."""
    stack = _stack(fault_stack, postgres_schema[1], db_proxy)
    world = World(stack, smtp)  # type: ignore[arg-type]
    async with admin_api(stack) as api:
        uma = await Person.create(world, api, "uma", first="Uma")
        try:
            for step in ("setup email", "code"):
                smtp.hold()
                try:
                    if step == "setup email":
                        await uma.send()
                    else:
                        response = await uma.set_password(await uma.password_page())
                        await follow(uma.browser, response, "/sso/setup/confirm")
                    await eventually(
                        lambda: any(
                            uma.to in r
                            for r in smtp.arrivals[len(uma.setup_emails()) + len(uma.code_emails()) :]
                        ),
                        60,
                        what=f"the {step} to reach the SMTP server",
                    )
                    db_proxy.cut()
                finally:
                    smtp.release()
                accepted = 1 if step == "setup email" else 2
                await eventually(
                    lambda: len(uma.setup_emails()) + len(uma.code_emails()) == accepted,  # noqa: B023
                    30,
                    what=f"the {step} to be accepted",
                )
                await asyncio.sleep(3)  # the activity meets the outage meanwhile
                db_proxy.restore()
                if step == "setup email":
                    await uma.wait_for_state("email_sent")
                    await uma.read_setup_email()
                else:
                    await uma.read_code()
                    confirm = await uma.confirm_page()
                await asyncio.sleep(3)  # a second email would be on its way by now
                assert len(uma.setup_emails()) == 1, "the setup email was sent twice"
                assert len(uma.code_emails()) == (0 if step == "setup email" else 1), (
                    "the code was sent twice"
                )
            mfa = await follow(uma.browser, await uma.confirm(confirm, uma.codes[-1]), "/sso/setup/mfa")
            await uma.finish(mfa)
            audit = stack.audit(uma.id)
            assert audit["sso_email.sent"] == 1 and audit["code.issued"] == 1, audit
        finally:
            await uma.close()
