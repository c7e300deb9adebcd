"""Temporal's dev server stops (SIGTERM) and starts again on the same SQLite file: flows and
their timers carry on; while it is down the pages and the admin API say so clearly and change
nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus

from tests.support.e2e import World, parse_time
from tests.support.fault_people import UNAVAILABLE, Person, admin_api, follow, repost, text_of
from tests.support.faults import StackFactory
from tests.support.stack import SmtpSink
from workflows.setup import SetupOutcome

pytestmark = [pytest.mark.faults]

LINK_TTL = 30  # seconds: P's link expires after Temporal is back


async def test_flows_and_timers_survive_a_temporal_restart(fault_stack: StackFactory, smtp: SmtpSink) -> None:
    stack = fault_stack(setup_link_ttl=str(LINK_TTL))
    world = World(stack, smtp)  # type: ignore[arg-type]
    worker_pid, api_pid = stack.worker.pid, stack.api.pid
    async with admin_api(stack) as api:
        quinn = await Person.create(world, api, "quinn", first="Quinn")  # mid-setup
        pat = await Person.create(world, api, "pat", first="Pat")  # waits on the link timer
        rory = await Person.create(world, api, "rory", first="Rory")  # not sent yet
        try:
            await quinn.send()
            confirm = await quinn.to_confirm_page()
            code = quinn.codes[-1]
            await pat.send()
            await pat.read_setup_email()
            expires_at = parse_time((await pat.wait_for_state("email_sent"))["link_expires_at"])

            await stack.halt_temporal()

            # While Temporal is down: a clear 503 for the page step and the admin's send, and
            # nothing changes.
            step, send, health = await asyncio.gather(
                quinn.confirm(confirm, code),
                api.post(f"/api/v1/staff/{rory.id}/sso-email"),
                api.get("/healthz"),
            )
            assert step.status_code == 503, (step.status_code, text_of(step)[:2000])
            assert UNAVAILABLE in text_of(step)
            assert send.status_code == 503, send.text
            assert send.json() == {"error": "unavailable", "message": UNAVAILABLE[:-1]}
            assert health.status_code == 503 and health.json()["failed"] == ["temporal"]
            assert (await rory.status())["state"] == "not_started"
            assert (await quinn.status())["state"] == "code_sent"
            # A link page needs only the database: it still opens.
            assert (await pat.password_page()).status_code == 200

            await stack.restart_temporal()
            assert datetime.now(UTC) < expires_at, (
                "Temporal came back after Pat's link expired; the test needs a longer TTL"
            )

            # The person mid-setup presses the button again: the step runs, once.
            mfa = await follow(quinn.browser, await repost(quinn, step), "/sso/setup/mfa")
            await quinn.finish(mfa)
            assert (await quinn.status())["state"] == "active"
            assert len(quinn.setup_emails()) == 1 and len(quinn.code_emails()) == 1

            # The admin's send works again.
            await rory.send()
            await rory.read_setup_email()

            # Pat's link timer, started before the restart, fires after it.
            expired = await pat.wait_for_state("expired", timeout=LINK_TTL + 60)
            assert parse_time(expired["state_since"]) >= expires_at, expired
            client = await stack.client()
            handle = client.get_workflow_handle(pat.workflow_id, result_type=SetupOutcome)
            outcome = await asyncio.wait_for(handle.result(), timeout=60)
            assert outcome.state == "expired", outcome
            history = await handle.fetch_history()
            fired = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_TIMER_FIRED]
            assert len(fired) == 1
            assert fired[0].event_time.ToDatetime(tzinfo=UTC) >= expires_at
            assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
            assert pat.token is not None
            page = await pat.browser.get(f"{stack.base_url}/sso/setup/{pat.token}")
            assert page.status_code == 410 and "no longer valid" in text_of(page)

            # The worker and the web app rode it out without a restart of their own.
            assert stack.worker.running and stack.worker.pid == worker_pid
            assert stack.api.running and stack.api.pid == api_pid
            for person, actions in (
                (
                    quinn,
                    (
                        "sso_email.sent",
                        "sso_setup.password_set",
                        "code.issued",
                        "sso_setup.email_confirmed",
                        "sso_setup.active",
                    ),
                ),
                (pat, ("sso_email.sent", "sso_setup.expired")),
            ):
                audit = stack.audit(person.id)
                for action in actions:
                    assert audit.get(action) == 1, (person.staff["first_name"], action, audit)
        finally:
            for person in (quinn, pat, rory):
                await person.close()
