"""Every email-sending activity is idempotent per send request (issue 12), on SQLite and
PostgreSQL with the real database.

A worker can die after the mail server accepted an email and before Temporal heard of it;
Temporal then runs the same scheduled activity again (same workflow id, run id and activity
id, next attempt number). Here the first attempt's sender hands the email over (it lands in
the outbox, the stand-in mail server) and then the attempt dies; the second attempt must
email the same link or code, counted as a duplicate. A new send request (another activity)
mints a new one. Sealed at rest, never plaintext.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select, text
from temporalio.runtime import Runtime
from temporalio.testing import ActivityEnvironment

from activities.email_delivery import OutboxSender, SmtpSender, TransientEmailError
from activities.inputs import NoticeInput, SendCodeInput, SendResetLinkInput, SendSetupEmailInput
from activities.reset import ResetActivities
from activities.setup import SetupStepActivities
from activities.setup_email import SetupActivities
from activities.shared import SharedActivities
from api.services.temporal import email_retry
from core.codec import keyring_from_settings
from core.crypto import LINK_PURPOSE, Keyring, code_digest, token_hash
from core.db import SessionFactory, create_engine, session_factory
from core.models import (
    AuditEvent,
    EmailSend,
    OutboxEmail,
    ResetLink,
    SetupLink,
    SsoAccount,
    SsoSetup,
    Staff,
    utcnow,
)
from core.orgs import DEFAULT_ORG_ID
from core.reset_caps import reset_link_hash
from core.settings import Settings
from core.templating import RenderedEmail
from core.times import email_until, time_zone
from tests.support.config import make_settings
from tests.support.stack import SmtpSink, free_port
from worker import metrics_runtime

pytestmark = pytest.mark.asyncio(loop_scope="session")

WELCOME = "Welcome to agentOS Single Sign-On"
CODE_SUBJECT = "Your agentOS verification code"
CHANGED = "Your agentOS password was changed"
RESET_LINK_SUBJECT = "Your agentOS password reset link"
RESET_LINK = re.compile(r"https://sso\.example\.test/sso/reset/link/([A-Za-z0-9_\-]{32,128})")
CODE_LINE = re.compile(r"^\s+(\d{6})\s*$", re.M)
LINK = re.compile(r"https://sso\.example\.test/sso/setup/([A-Za-z0-9_\-]{32,128})")


class WorkerDied(Exception):
    """Stands in for a SIGKILL between the server's "250 accepted" and the activity's answer."""


class Flaky:
    """The outbox sender, with the next `die` sends accepted and then the attempt dies, and the
    next `refuse` sends refused before anything was handed over (a server that is down)."""

    name = "outbox"

    def __init__(self, sessions: SessionFactory, keyring: Keyring) -> None:
        self._inner = OutboxSender(sessions, keyring)
        self.die = 0
        self.refuse = 0

    async def send(self, email: RenderedEmail) -> None:
        if self.refuse:
            self.refuse -= 1
            raise TransientEmailError("cannot reach SMTP server: ConnectionRefusedError")
        await self._inner.send(email)
        if self.die:
            self.die -= 1
            raise WorkerDied


@dataclass
class World:
    settings: Settings
    sessions: SessionFactory
    keyring: Keyring
    sender: Flaky
    setup: SetupActivities
    steps: SetupStepActivities
    reset: ResetActivities
    shared: SharedActivities
    runtime: Runtime
    metrics_url: str

    async def attempt(
        self,
        activity: Any,
        data: Any,
        *,
        workflow_id: str,
        run_id: str,
        activity_id: str = "1",
        attempt: int = 1,
        scheduled: datetime | None = None,
        started: datetime | None = None,
    ) -> Any:
        """One attempt of one scheduled activity, as Temporal hands it to a worker."""
        env = ActivityEnvironment()
        now = datetime.now(UTC)
        env.info = dataclasses.replace(
            env.info,
            workflow_id=workflow_id,
            workflow_run_id=run_id,
            activity_id=activity_id,
            attempt=attempt,
            scheduled_time=scheduled or now,
            current_attempt_scheduled_time=scheduled or now,
            started_time=started or now,
            start_to_close_timeout=timedelta(seconds=30),
        )
        env.metric_meter = self.runtime.metric_meter
        return await env.run(activity, data)

    async def outbox(self, to: str, subject: str) -> list[str]:
        """Text bodies of the emails to `to` with `subject`, oldest first."""
        async with self.sessions() as session:
            rows = (
                await session.scalars(
                    select(OutboxEmail)
                    .where(OutboxEmail.to_address == to, OutboxEmail.subject == subject)
                    .order_by(OutboxEmail.created_at)
                )
            ).all()
        return [self.keyring.unseal(r.body_encrypted, b"outbox").decode().split("\0")[0] for r in rows]

    async def duplicates(self, kind: str) -> float:
        async with httpx.AsyncClient(trust_env=False) as http:
            scraped = (await http.get(self.metrics_url)).text
        return sum(
            s.value
            for family in text_string_to_metric_families(scraped)
            for s in family.samples
            if s.name == "sso_emails_duplicate_total" and s.labels.get("kind") == kind
        )

    async def every_stored_value(self) -> str:
        """Every table's rows as text: what someone reading the database sees."""
        async with self.sessions() as session:
            dump = []
            for table in (
                "email_sends",
                "setup_links",
                "sso_setups",
                "audit_events",
                "sso_accounts",
                "reset_links",
            ):
                dump += [
                    repr(tuple(row)) for row in (await session.execute(text(f"SELECT * FROM {table}"))).all()
                ]
        return "\n".join(dump)

    async def send_rows(self, staff_id: uuid.UUID) -> list[EmailSend]:
        async with self.sessions() as session:
            return list(
                (await session.scalars(select(EmailSend).where(EmailSend.staff_id == staff_id))).all()
            )


_RUNTIME: tuple[Runtime, str] | None = None


def _metrics() -> tuple[Runtime, str]:
    global _RUNTIME
    if _RUNTIME is None:
        address = f"127.0.0.1:{free_port()}"
        runtime = metrics_runtime(address)
        assert runtime is not None
        _RUNTIME = runtime, f"http://{address}/metrics"
    return _RUNTIME


@pytest_asyncio.fixture(loop_scope="session")
async def world(database_url: str) -> AsyncIterator[World]:
    settings = make_settings(database_url=database_url)
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    keyring = keyring_from_settings(settings)
    sender = Flaky(sessions, keyring)
    runtime, url = _metrics()
    yield World(
        settings,
        sessions,
        keyring,
        sender,
        SetupActivities(settings, sessions, sender, keyring),
        SetupStepActivities(settings, sessions, sender, keyring),
        ResetActivities(settings, sessions, sender, keyring),
        SharedActivities(settings, sessions, sender, keyring),
        runtime,
        url,
    )
    await engine.dispose()


@dataclass
class Person:
    staff_id: uuid.UUID
    email: str
    setup_id: uuid.UUID
    workflow_id: str
    run_id: str


async def new_person(world: World, state: str = "sending_email") -> Person:
    email = f"jo.{uuid.uuid4().hex[:8]}@example.com"
    run_id = str(uuid.uuid4())
    async with world.sessions() as session:
        staff = Staff(org_id=DEFAULT_ORG_ID, first_name="Jo", last_name="Bloggs", external_email_1=email)
        session.add(staff)
        await session.flush()
        workflow_id = f"sso-setup-{staff.id}"
        setup = SsoSetup(
            staff_id=staff.id,
            workflow_id=workflow_id,
            state=state,
            state_since=utcnow(),
            requested_by="admin-key:test",
        )
        session.add(setup)
        session.add(SsoAccount(staff_id=staff.id, login_email=email, status="active"))
        await session.commit()
        return Person(staff.id, email, setup.id, workflow_id, run_id)


def setup_input(person: Person, ttl: int = 900) -> SendSetupEmailInput:
    return SendSetupEmailInput(
        setup_id=str(person.setup_id),
        staff_id=str(person.staff_id),
        workflow_id=person.workflow_id,
        run_id=person.run_id,
        link_ttl_seconds=ttl,
    )


def code_input(person: Person, purpose: str = "setup") -> SendCodeInput:
    return SendCodeInput(
        setup_id=str(person.setup_id) if purpose == "setup" else None,
        staff_id=str(person.staff_id),
        workflow_id=person.workflow_id,
        purpose=purpose,
        code_ttl_seconds=600,
    )


async def link_of(world: World, token: str) -> SetupLink | None:
    digest = token_hash(world.settings.secret_key.get_secret_value(), LINK_PURPOSE, token)
    async with world.sessions() as session:
        return await session.scalar(select(SetupLink).where(SetupLink.token_hash == digest))


def usable(link: SetupLink | None) -> bool:
    return (
        link is not None
        and link.revoked_at is None
        and link.consumed_at is None
        and link.expires_at > utcnow()
    )


# -- the setup email ------------------------------------------------------------------------


async def test_a_retried_setup_email_sends_the_same_link(world: World) -> None:
    person = await new_person(world)
    flow = {"workflow_id": person.workflow_id, "run_id": person.run_id}
    duplicates = await world.duplicates("sso_welcome")
    world.sender.die = 1
    with pytest.raises(WorkerDied):
        await world.attempt(world.setup.send_setup_email, setup_input(person), **flow)
    [first] = await world.outbox(person.email, WELCOME)
    token = LINK.findall(first)[0]
    assert usable(await link_of(world, token))  # the delivered link works meanwhile
    [row] = await world.send_rows(person.staff_id)
    assert row.in_flight and row.accepted_at is None and row.secret_sealed is not None
    assert token not in await world.every_stored_value()

    result = await world.attempt(world.setup.send_setup_email, setup_input(person), attempt=2, **flow)
    first, second = await world.outbox(person.email, WELCOME)
    assert LINK.findall(second) == [token]  # the same link: both copies work
    link = await link_of(world, token)
    assert usable(link)
    assert link is not None and link.expires_at == result.link_expires_at
    assert await world.duplicates("sso_welcome") == duplicates + 1
    async with world.sessions() as session:
        links = (await session.scalars(select(SetupLink).where(SetupLink.staff_id == person.staff_id))).all()
        setup = await session.get(SsoSetup, person.setup_id)
        sent = (
            await session.scalars(
                select(AuditEvent).where(
                    AuditEvent.target == str(person.staff_id), AuditEvent.action == "sso_email.sent"
                )
            )
        ).all()
    assert len(links) == 1 and setup is not None and setup.state == "email_sent"
    assert len(sent) == 1
    # Accepted and recorded: the sealed token is gone, nothing keeps it but the email.
    [row] = await world.send_rows(person.staff_id)
    assert row.accepted_at is not None and not row.in_flight and row.secret_sealed is None
    assert token not in await world.every_stored_value()

    # A third attempt (the second's answer lost too) sends nothing more: it was recorded.
    again = await world.attempt(world.setup.send_setup_email, setup_input(person), attempt=3, **flow)
    assert (again.sent_at, again.link_expires_at) == (row.accepted_at, link.expires_at)
    assert len(await world.outbox(person.email, WELCOME)) == 2
    assert await world.duplicates("sso_welcome") == duplicates + 1


async def test_a_new_setup_email_replaces_the_links_of_earlier_ones(world: World) -> None:
    person = await new_person(world)
    world.sender.die = 1
    with pytest.raises(WorkerDied):
        await world.attempt(
            world.setup.send_setup_email,
            setup_input(person),
            workflow_id=person.workflow_id,
            run_id=person.run_id,
        )
    await world.attempt(
        world.setup.send_setup_email,
        setup_input(person),
        attempt=2,
        workflow_id=person.workflow_id,
        run_id=person.run_id,
    )
    old = LINK.findall((await world.outbox(person.email, WELCOME))[0])[0]
    # The admin sends a new Single Sign-On email: a new flow, a new request, a new link.
    newer = dataclasses.replace(person, run_id=str(uuid.uuid4()))
    await world.attempt(
        world.setup.send_setup_email, setup_input(newer), workflow_id=newer.workflow_id, run_id=newer.run_id
    )
    bodies = await world.outbox(person.email, WELCOME)
    assert len(bodies) == 3
    new = LINK.findall(bodies[2])[0]
    assert new != old
    assert usable(await link_of(world, new))
    assert not usable(await link_of(world, old))


async def test_a_link_expires_counting_from_the_hand_over_and_the_email_says_when(world: World) -> None:
    """A retry that starts long after it was scheduled (no worker was up) must not deliver a
    link that is already half spent: its 15 minutes start when the email is handed over."""
    person = await new_person(world)
    started = datetime.now(UTC)
    result = await world.attempt(
        world.setup.send_setup_email,
        setup_input(person),
        workflow_id=person.workflow_id,
        run_id=person.run_id,
        attempt=4,
        scheduled=started - timedelta(minutes=10),
        started=started,
    )
    assert started + timedelta(minutes=15) <= result.link_expires_at
    assert result.link_expires_at < started + timedelta(minutes=15, seconds=30)
    [body] = await world.outbox(person.email, WELCOME)
    # In the default SSO_TIME_ZONE, as an agent in Britain reads it ("20:43 BST on 1 July 2026").
    assert email_until(result.link_expires_at, time_zone("Europe/London")) in body
    link = await link_of(world, LINK.findall(body)[0])
    assert link is not None and link.expires_at == result.link_expires_at


# -- emailed codes --------------------------------------------------------------------------


@pytest.mark.parametrize("purpose", ["setup", "reset"])
async def test_a_retried_code_email_sends_the_same_code(world: World, purpose: str) -> None:
    person = await new_person(world, state="password_set")
    subject = CODE_SUBJECT if purpose == "setup" else "Your agentOS password reset code"
    kind = "verification_code" if purpose == "setup" else "password_reset_code"
    flow = {"workflow_id": person.workflow_id, "run_id": person.run_id, "activity_id": "7"}
    duplicates = await world.duplicates(kind)
    world.sender.die = 1
    with pytest.raises(WorkerDied):
        await world.attempt(world.shared.send_code, code_input(person, purpose), **flow)
    [first] = await world.outbox(person.email, subject)
    code = CODE_LINE.findall(first)[0]
    assert code not in await world.every_stored_value()

    result = await world.attempt(world.shared.send_code, code_input(person, purpose), attempt=2, **flow)
    bodies = await world.outbox(person.email, subject)
    assert [CODE_LINE.findall(b) for b in bodies] == [[code], [code]]
    # What the flow checks a typed code against: either email's code matches it.
    secret = world.settings.secret_key.get_secret_value()
    assert result.code_digest == code_digest(secret, purpose, person.workflow_id, code)
    assert await world.duplicates(kind) == duplicates + 1
    [row] = await world.send_rows(person.staff_id)
    assert row.accepted_at is not None and row.secret_sealed is None
    assert code not in await world.every_stored_value()

    # Recorded: a later attempt sends nothing and answers the same.
    again = await world.attempt(world.shared.send_code, code_input(person, purpose), attempt=3, **flow)
    assert (again.code_digest, again.sent_at) == (result.code_digest, result.sent_at)
    assert len(await world.outbox(person.email, subject)) == 2

    # "Send a new code": a new request, a new code.
    newer = await world.attempt(
        world.shared.send_code,
        code_input(person, purpose),
        workflow_id=person.workflow_id,
        run_id=person.run_id,
        activity_id="8",
    )
    latest = CODE_LINE.findall((await world.outbox(person.email, subject))[-1])[0]
    assert newer.code_digest == code_digest(secret, purpose, person.workflow_id, latest)
    assert newer.code_digest != result.code_digest or latest == code


async def test_a_code_retried_after_a_refused_connection_is_the_same_and_no_duplicate(world: World) -> None:
    person = await new_person(world, state="password_set")
    flow = {"workflow_id": person.workflow_id, "run_id": person.run_id}
    duplicates = await world.duplicates("verification_code")
    world.sender.refuse = 1
    with pytest.raises(TransientEmailError):
        await world.attempt(world.shared.send_code, code_input(person), **flow)
    [row] = await world.send_rows(person.staff_id)
    assert not row.in_flight and row.handovers == 1  # the server never had it
    result = await world.attempt(world.shared.send_code, code_input(person), attempt=2, **flow)
    [body] = await world.outbox(person.email, CODE_SUBJECT)
    code = CODE_LINE.findall(body)[0]
    secret = world.settings.secret_key.get_secret_value()
    assert result.code_digest == code_digest(secret, "setup", person.workflow_id, code)
    assert await world.duplicates("verification_code") == duplicates


async def test_a_retried_reset_link_email_sends_the_same_link(world: World) -> None:
    """Past the wrong-code caps a reset link is emailed in place of a code: a retry after the
    mail server took the email repeats that link, and it is the one that works."""
    person = await new_person(world)
    async with world.sessions() as session:
        account = await session.scalar(select(SsoAccount).where(SsoAccount.staff_id == person.staff_id))
        assert account is not None
    data = SendResetLinkInput(
        account_id=str(account.id),
        staff_id=str(person.staff_id),
        workflow_id=f"password-reset-{account.id}",
        link_ttl_seconds=900,
    )
    flow = {"workflow_id": data.workflow_id, "run_id": person.run_id, "activity_id": "3"}
    duplicates = await world.duplicates("password_reset_link")
    world.sender.die = 1
    with pytest.raises(WorkerDied):
        await world.attempt(world.reset.send_reset_link, data, **flow)
    [first] = await world.outbox(person.email, RESET_LINK_SUBJECT)
    token = RESET_LINK.findall(first)[0]
    assert token not in await world.every_stored_value()

    result = await world.attempt(world.reset.send_reset_link, data, attempt=2, **flow)
    bodies = await world.outbox(person.email, RESET_LINK_SUBJECT)
    assert [RESET_LINK.findall(b) for b in bodies] == [[token], [token]]
    assert await world.duplicates("password_reset_link") == duplicates + 1
    secret = world.settings.secret_key.get_secret_value()
    async with world.sessions() as session:
        [link] = (await session.scalars(select(ResetLink).where(ResetLink.account_id == account.id))).all()
    assert link.token_hash == reset_link_hash(secret, token)
    # Its lifetime counts from the hand-over that was recorded, and the flow is told so.
    assert link.expires_at.replace(tzinfo=UTC) == result.expires_at.replace(tzinfo=UTC)
    assert token not in await world.every_stored_value()

    # Recorded: a later attempt sends nothing and answers the same.
    again = await world.attempt(world.reset.send_reset_link, data, attempt=3, **flow)
    assert (again.sent_at, again.expires_at) == (result.sent_at, result.expires_at)
    assert len(await world.outbox(person.email, RESET_LINK_SUBJECT)) == 2


# -- notices --------------------------------------------------------------------------------


async def test_a_retried_notice_is_sent_again_once_and_then_never(world: World) -> None:
    person = await new_person(world)
    notice = NoticeInput(staff_id=str(person.staff_id), changed_at=utcnow())
    flow = {"workflow_id": f"password-changed-{uuid.uuid4()}", "run_id": str(uuid.uuid4())}
    duplicates = await world.duplicates("password_changed")
    world.sender.die = 1
    with pytest.raises(WorkerDied):
        await world.attempt(world.reset.send_password_changed, notice, **flow)
    await world.attempt(world.reset.send_password_changed, notice, attempt=2, **flow)
    await world.attempt(world.reset.send_password_changed, notice, attempt=3, **flow)
    assert len(await world.outbox(person.email, CHANGED)) == 2
    assert await world.duplicates("password_changed") == duplicates + 1


# -- what a failed hand-over may have done ------------------------------------------------


def _welcome(to: str) -> RenderedEmail:
    return RenderedEmail(to=to, subject=WELCOME, html="<p>hi</p>", text="hi")


async def test_a_send_that_dies_while_the_server_holds_the_message_may_have_delivered() -> None:
    sink = SmtpSink()
    sink.start()
    sink.hold()
    settings = make_settings(
        email_backend="smtp", smtp_host="127.0.0.1", smtp_port=sink.port, email_timeout=1
    )
    try:
        with pytest.raises(TransientEmailError) as held:
            await SmtpSender(settings).send(_welcome("held@example.com"))
        assert held.value.maybe_delivered  # the server had the message: a retry is a copy
    finally:
        sink.release()
        sink.stop()
    with pytest.raises(TransientEmailError) as refused:
        await SmtpSender(settings).send(_welcome("refused@example.com"))
    assert not refused.value.maybe_delivered  # nothing reached a server
    # The whole exchange ends inside the activity's attempt timeout.
    assert email_retry(settings).attempt_timeout() > timedelta(seconds=settings.email_timeout)
