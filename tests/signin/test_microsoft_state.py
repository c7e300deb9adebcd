"""A person whose linked Microsoft account Graph reports disabled or deleted is refused at
password sign-in too, with a clear page, and admins see it (API and person page). What Graph
said is kept on the link for SSO_ENTRA_STATE_TTL; Graph not answering leaves the last answer
standing. In-process on SQLite and PostgreSQL, Graph played by a stand-in of
EntraProvider.account_state (its own requests are tested in tests/entra/test_unit.py)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import pytest_asyncio
from sqlalchemy import select, update

from core.entra import EntraProvider, EntraUnavailable
from core.models import AuditEvent, EntraLink
from tests.support.accounts import Person, page_text, redirected_to, sign_in
from tests.support.harness import Stack, running_app

pytestmark = [pytest.mark.pages, pytest.mark.asyncio(loop_scope="session")]

TENANT = "0b1c2d3e-0000-4000-8000-00000000a9e7"
REFUSED_PAGE = "Your organisation has disabled or deleted the Microsoft account linked to your staff login"


class Graph:
    """What Graph answers, one per question, and which accounts it was asked about."""

    def __init__(self) -> None:
        self.answers: list[str | Exception] = []
        self.asked: list[str] = []

    async def account_state(self, _provider: EntraProvider, object_id: str) -> str:
        self.asked.append(object_id)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def graph(monkeypatch: pytest.MonkeyPatch) -> Graph:
    stand_in = Graph()

    async def account_state(provider: EntraProvider, object_id: str) -> str:
        return await stand_in.account_state(provider, object_id)

    monkeypatch.setattr(EntraProvider, "account_state", account_state)
    return stand_in


@pytest_asyncio.fixture(loop_scope="session")
async def app(database_url: str) -> AsyncIterator[Stack]:
    async with running_app(
        database_url,
        entra_tenant_id=TENANT,
        entra_client_id="agentos-sso-state",
        entra_client_secret="a-test-entra-client-secret-that-is-long",
        signin_ip_limit=1000,
    ) as running:
        yield running


async def linked(app: Stack) -> tuple[Person, str]:
    person = await app.person()
    object_id = str(uuid.uuid4())
    async with app.sessions() as session:
        session.add(
            EntraLink(
                staff_id=person.staff_id,
                tenant_id=TENANT,
                object_id=object_id,
                display_name="Alex Entra",
                email="alex@agency.example",
                linked_via="session",
            )
        )
        await session.commit()
    return person, object_id


async def link_of(app: Stack, person: Person) -> EntraLink:
    async with app.sessions() as session:
        link = await session.scalar(select(EntraLink).where(EntraLink.staff_id == person.staff_id))
    assert link is not None
    return link


async def test_a_disabled_microsoft_account_is_refused_at_password_sign_in_and_admins_see_it(
    app: Stack, graph: Graph
) -> None:
    person, object_id = await linked(app)
    graph.answers = ["disabled"]
    refused = await sign_in(app.browser(), person.email)
    assert refused.status_code == 403
    assert REFUSED_PAGE in page_text(refused).replace("&#39;", "'")
    assert graph.asked == [object_id]
    link = await link_of(app, person)
    assert link.account_state == "disabled" and link.account_checked_at is not None
    async with app.sessions() as session:
        events = (
            await session.scalars(
                select(AuditEvent).where(
                    AuditEvent.target == str(person.staff_id), AuditEvent.action == "sign_in.failed"
                )
            )
        ).all()
    assert [e.details["reason"] for e in events] == ["entra_account_disabled"]
    status = await app.http.get(f"/api/v1/staff/{person.staff_id}/sso", headers=app.admin)
    assert status.json()["entra"]["account_state"] == "disabled"
    # Within SSO_ENTRA_STATE_TTL the answer is kept: Graph is not asked again.
    assert (await sign_in(app.browser(), person.email)).status_code == 403
    assert graph.asked == [object_id]


async def test_a_deleted_account_is_refused_and_an_enabled_one_signs_in(app: Stack, graph: Graph) -> None:
    gone, _ = await linked(app)
    graph.answers = ["deleted"]
    assert (await sign_in(app.browser(), gone.email)).status_code == 403
    assert (await link_of(app, gone)).account_state == "deleted"
    fine, _ = await linked(app)
    graph.answers = ["enabled"]
    assert redirected_to(await sign_in(app.browser(), fine.email), "/sso/account")


async def test_the_answer_is_asked_again_once_stale_and_graph_down_keeps_the_last_one(
    app: Stack, graph: Graph
) -> None:
    person, _ = await linked(app)
    graph.answers = ["enabled"]
    assert redirected_to(await sign_in(app.browser(), person.email), "/sso/account")

    async def age() -> None:
        checked = (await link_of(app, person)).account_checked_at
        assert checked is not None
        async with app.sessions() as session:
            await session.execute(
                update(EntraLink)
                .where(EntraLink.staff_id == person.staff_id)
                .values(account_checked_at=checked - app.settings.entra_state_ttl - timedelta(seconds=1))
            )
            await session.commit()

    await age()
    graph.answers = [EntraUnavailable("graph answered 503")]
    assert redirected_to(await sign_in(app.browser(), person.email), "/sso/account")  # last: enabled
    graph.answers = ["disabled"]  # still stale (a failed ask keeps the old time): asked again
    assert (await sign_in(app.browser(), person.email)).status_code == 403
    await age()
    graph.answers = [EntraUnavailable("graph answered 503")]
    assert (await sign_in(app.browser(), person.email)).status_code == 403  # last: disabled
    assert len(graph.asked) == 4


async def test_a_person_without_a_microsoft_link_is_never_asked_about(app: Stack, graph: Graph) -> None:
    person = await app.person()
    assert redirected_to(await sign_in(app.browser(), person.email), "/sso/account")
    assert graph.asked == []


async def test_a_wrong_password_says_nothing_of_the_microsoft_account(app: Stack, graph: Graph) -> None:
    person, _ = await linked(app)
    refused = await sign_in(app.browser(), person.email, password="not-the-password-at-all")
    assert refused.status_code == 401 and REFUSED_PAGE not in page_text(refused)
    assert graph.asked == []
