"""Which organisation an email names, as the worker's activities decide it: a one-organisation
deployment without a sender name reads as before; a sender name goes into From and the
organisation's name into the text; with several organisations every email names its agency."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from activities.base import SecretActivities
from activities.email_delivery import OutboxSender
from core.codec import keyring_from_settings
from core.models import Organisation
from core.orgs import DEFAULT_ORG_ID, DEFAULT_ORG_NAME, DEFAULT_ORG_SLUG
from core.templating import Agency
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
