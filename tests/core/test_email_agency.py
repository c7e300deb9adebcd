"""Which organisation an email names, as the worker's activities decide it: a one-organisation
deployment without a sender name reads as before; a sender name goes into From and the
organisation's name into the text; with several organisations every email names its agency;
the email change's code and notice too."""

from __future__ import annotations

from dataclasses import replace

import pytest
from sqlalchemy import update
from temporalio.testing import ActivityEnvironment

from activities.base import SecretActivities
from activities.email_change import EmailChangeActivities
from activities.email_delivery import OutboxSender
from activities.inputs import EmailChangeStep, SendCodeInput
from activities.shared import SharedActivities
from core.codec import keyring_from_settings
from core.models import Organisation, Staff
from core.orgs import DEFAULT_ORG_ID, DEFAULT_ORG_NAME, DEFAULT_ORG_SLUG
from core.templating import Agency, RenderedEmail
from tests.support.harness import running_app
from tests.support.orgs import add_org

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_an_email_names_its_agency_where_it_helps(database_url: str) -> None:
    async with running_app(database_url) as stack:
        keyring = keyring_from_settings(stack.settings)
        sender = OutboxSender(stack.sessions, keyring)
        activities = SecretActivities(stack.settings, stack.sessions, sender, keyring)
        assert await activities._agency(DEFAULT_ORG_ID) == Agency(slug=DEFAULT_ORG_SLUG)
        async with stack.sessions() as db:
            default = update(Organisation).where(Organisation.id == DEFAULT_ORG_ID)
            await db.execute(default.values(sender_name="Ours via agentOS"))
            await db.commit()
        assert await activities._agency(DEFAULT_ORG_ID) == Agency(
            slug=DEFAULT_ORG_SLUG, name=DEFAULT_ORG_NAME, sender_name="Ours via agentOS"
        )
        harbour = await add_org(stack.sessions, "Harbour Lettings")
        named = await activities._agency(harbour)
        assert (named.name, named.sender_name) == ("Harbour Lettings", None)


async def test_an_email_change_code_and_notice_go_out_in_the_agencys_name(database_url: str) -> None:
    """The code to the new address and the notice to the old one (p20a's emails) are sent for
    the person's organisation like every other email: its sender name in From, its slug for
    the email metrics."""
    async with running_app(database_url) as stack:
        keyring = keyring_from_settings(stack.settings)
        sent: list[RenderedEmail] = []

        class Capturing(OutboxSender):
            async def send(self, email: RenderedEmail) -> None:
                sent.append(email)
                await super().send(email)

        sender = Capturing(stack.sessions, keyring)
        harbour = await add_org(
            stack.sessions, "Harbour Lettings", sender_name="Harbour Lettings via agentOS"
        )
        person = await stack.person(org_id=harbour)
        async with stack.sessions() as db:
            staff = await db.get(Staff, person.staff_id)
            assert staff is not None
            staff.pending_external_email_1 = "new.address@example.com"
            staff.previous_external_email_1 = "old.address@example.com"
            await db.commit()
        env = ActivityEnvironment()
        workflow_id = f"staff-email-change-{person.staff_id}"
        codes = SharedActivities(stack.settings, stack.sessions, sender, keyring)
        await env.run(
            codes.send_code,
            SendCodeInput(
                staff_id=str(person.staff_id),
                workflow_id=workflow_id,
                purpose="email_change",
                code_ttl_seconds=600,
            ),
        )
        notices = EmailChangeActivities(stack.settings, stack.sessions, sender, keyring)
        # Another activity of the flow: its own request (the same id would be a retry, sending nothing).
        env.info = replace(env.info, activity_id="notice")
        await env.run(
            notices.send_email_changed,
            EmailChangeStep(staff_id=str(person.staff_id), workflow_id=workflow_id, outcome="changed"),
        )
        async with stack.sessions() as db:
            slug = (await db.get(Organisation, harbour)).slug  # type: ignore[union-attr]
        assert [(email.to, email.sender_name, email.org) for email in sent] == [
            ("new.address@example.com", "Harbour Lettings via agentOS", slug),
            ("old.address@example.com", "Harbour Lettings via agentOS", slug),
        ]
