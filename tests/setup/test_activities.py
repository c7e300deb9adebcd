"""SetupStepActivities and the shared send_code called directly (temporalio
ActivityEnvironment) on SQLite and PostgreSQL, with the outbox sender: what each step
stores, refuses and keeps secret.

Inputs are sealed as the web app seals them (core.sealing, with the flow's context).
"""

from __future__ import annotations

import base64
import dataclasses
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyotp
import pytest
import pytest_asyncio
from sqlalchemy import func, select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

import activities.setup as setup_steps_module
from activities.email_delivery import OutboxSender
from activities.inputs import (
    ActivateInput,
    SendCodeInput,
    StaffStepInput,
    StorePasswordInput,
    VerifyTotpInput,
)
from activities.setup import LINK_GONE, SetupStepActivities
from activities.shared import SharedActivities
from core.accounts import ACCOUNT_DISABLED
from core.codec import keyring_from_settings
from core.crypto import LINK_PURPOSE, Keyring, code_digest, token_hash
from core.db import SessionFactory, create_engine, session_factory
from core.models import (
    AuditEvent,
    BrowserSession,
    OutboxEmail,
    SetupLink,
    SsoAccount,
    SsoSetup,
    Staff,
    utcnow,
)
from core.orgs import DEFAULT_ORG_ID
from core.passwords import Hasher
from core.sealing import new_keypair, password_context, seal, totp_context
from core.settings import Settings
from core.totp import totp_aad
from tests.support.config import make_settings

pytestmark = pytest.mark.asyncio(loop_scope="session")

PASSWORD = "Velvet-Orbit-Lantern-Pixel-42"
ARGON2_PREFIX = "$argon2id$v=19$m=19456,t=2,p=1$"
SESSION_HASH = "session_" + "a" * 64
OTHER_SESSION_HASH = "session_" + "b" * 64
CODE_SUBJECT = "Your agentOS verification code"
CODE_LINE = re.compile(r"^\s+(\d{6})\s*$", re.M)
# Server time for the TOTP tests: 15 s into a 30-s step, so ±1 step is unambiguous.
NOW = datetime(2031, 5, 6, 7, 8, 15, tzinfo=UTC)
TOTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


@dataclass
class Flow:
    """One staff member with a setup flow in the database, as send_setup_email leaves it."""

    settings: Settings
    sessions: SessionFactory
    keyring: Keyring
    acts: SetupStepActivities
    staff_id: uuid.UUID
    email: str
    setup_id: uuid.UUID
    workflow_id: str
    run_id: str
    link_id: uuid.UUID
    token: str

    async def run(self, activity: Any, data: Any) -> Any:
        return await ActivityEnvironment().run(activity, data)

    @property
    def shared(self) -> SharedActivities:
        return SharedActivities(
            self.settings, self.sessions, OutboxSender(self.sessions, self.keyring), self.keyring
        )

    def password_input(
        self,
        password: str = PASSWORD,
        session_hash: str = SESSION_HASH,
        context: bytes | None = None,
        public_key: str | None = None,
    ) -> StorePasswordInput:
        sealed = seal(
            public_key or self.settings.seal_public_key,
            password.encode(),
            password_context(self.workflow_id) if context is None else context,
        )
        return StorePasswordInput(
            setup_id=str(self.setup_id),
            staff_id=str(self.staff_id),
            workflow_id=self.workflow_id,
            run_id=self.run_id,
            link_id=str(self.link_id),
            sealed_password=sealed,
            session_hash=session_hash,
            session_ttl_seconds=24 * 3600,
        )

    def step_input(self) -> StaffStepInput:
        return StaffStepInput(
            setup_id=str(self.setup_id), staff_id=str(self.staff_id), workflow_id=self.workflow_id
        )

    def totp_input(self, code: str, context: bytes | None = None) -> VerifyTotpInput:
        sealed = seal(
            self.settings.seal_public_key,
            code.encode(),
            totp_context(self.workflow_id) if context is None else context,
        )
        return VerifyTotpInput(staff_id=str(self.staff_id), workflow_id=self.workflow_id, sealed_code=sealed)

    def activate_input(self, mfa: bool) -> ActivateInput:
        return ActivateInput(
            setup_id=str(self.setup_id), staff_id=str(self.staff_id), workflow_id=self.workflow_id, mfa=mfa
        )

    async def account(self) -> SsoAccount | None:
        async with self.sessions() as session:
            return await session.scalar(select(SsoAccount).where(SsoAccount.staff_id == self.staff_id))

    async def link(self) -> SetupLink:
        async with self.sessions() as session:
            link = await session.get(SetupLink, self.link_id)
        assert link is not None
        return link

    async def setup_state(self) -> str:
        async with self.sessions() as session:
            setup = await session.get(SsoSetup, self.setup_id)
        assert setup is not None
        return setup.state

    async def set_setup_state(self, state: str) -> None:
        async with self.sessions() as session:
            setup = await session.get(SsoSetup, self.setup_id)
            assert setup is not None
            setup.state = state
            await session.commit()

    async def browser_sessions(self) -> list[BrowserSession]:
        async with self.sessions() as session:
            return list(
                (
                    await session.scalars(
                        select(BrowserSession).where(BrowserSession.staff_id == self.staff_id)
                    )
                ).all()
            )

    async def audit_actions(self) -> list[str]:
        async with self.sessions() as session:
            return list(
                (
                    await session.scalars(
                        select(AuditEvent.action)
                        .where(AuditEvent.target == str(self.staff_id))
                        .order_by(AuditEvent.occurred_at)
                    )
                ).all()
            )

    async def totp_secret(self) -> str:
        account = await self.account()
        assert account is not None and account.totp_secret_encrypted is not None
        return self.keyring.unseal(account.totp_secret_encrypted, totp_aad(self.staff_id)).decode()

    async def snapshot(self) -> tuple[Any, ...]:
        """Everything store_password may change."""
        link = await self.link()
        account = await self.account()
        return (
            link.consumed_at,
            await self.setup_state(),
            None if account is None else (account.password_hash, account.status),
            len(await self.browser_sessions()),
        )


@pytest_asyncio.fixture(loop_scope="session")
async def world(
    database_url: str,
) -> AsyncIterator[tuple[Settings, SessionFactory, Keyring, SetupStepActivities]]:
    settings = make_settings(database_url=database_url)
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    keyring = keyring_from_settings(settings)
    acts = SetupStepActivities(settings, sessions, OutboxSender(sessions, keyring), keyring)
    yield settings, sessions, keyring, acts
    await engine.dispose()


async def new_flow(
    world: tuple[Settings, SessionFactory, Keyring, SetupStepActivities],
    *,
    link_expires_in: timedelta = timedelta(minutes=15),
    revoked: bool = False,
    state: str = "link_opened",
) -> Flow:
    settings, sessions, keyring, acts = world
    now = utcnow()
    email = f"jo.{uuid.uuid4().hex[:8]}@example.com"
    token = base64.urlsafe_b64encode(uuid.uuid4().bytes * 2).decode().rstrip("=")
    run_id = str(uuid.uuid4())
    async with sessions() as session:
        staff = Staff(org_id=DEFAULT_ORG_ID, first_name="Jo", last_name="Bloggs", external_email_1=email)
        session.add(staff)
        await session.flush()
        workflow_id = f"sso-setup-{staff.id}"
        setup = SsoSetup(
            staff_id=staff.id,
            workflow_id=workflow_id,
            run_id=run_id,
            state=state,
            state_since=now,
            link_expires_at=now + link_expires_in,
            email_delivery="sent",
            requested_by="admin-key:test",
        )
        link = SetupLink(
            staff_id=staff.id,
            workflow_id=workflow_id,
            run_id=run_id,
            token_hash=token_hash(settings.secret_key.get_secret_value(), LINK_PURPOSE, token),
            expires_at=now + link_expires_in,
            revoked_at=now if revoked else None,
        )
        session.add_all([setup, link])
        await session.commit()
        flow = Flow(
            settings, sessions, keyring, acts, staff.id, email, setup.id, workflow_id, run_id, link.id, token
        )
    return flow


async def flow_with_password(world: Any) -> Flow:
    flow = await new_flow(world)
    assert (await flow.run(flow.acts.store_password, flow.password_input())).ok
    return flow


# -- store_password -----------------------------------------------------------------------


async def test_store_password_hashes_consumes_the_link_and_binds_the_session(world: Any) -> None:
    flow = await new_flow(world)
    result = await flow.run(flow.acts.store_password, flow.password_input())
    assert result.ok and not result.problems and result.message is None

    account = await flow.account()
    assert account is not None
    assert account.password_hash is not None
    assert account.password_hash.startswith(ARGON2_PREFIX)
    assert PASSWORD not in account.password_hash
    assert Hasher().verify(account.password_hash, PASSWORD)
    assert account.status == "pending" and account.login_email == flow.email
    assert account.verified_at is None and account.totp_secret_encrypted is None
    assert (await flow.link()).consumed_at is not None
    [bound] = await flow.browser_sessions()
    assert bound.id_hash == SESSION_HASH
    assert bound.purpose == "setup"  # drives this setup only; signs no one in
    assert (bound.workflow_id, bound.run_id) == (flow.workflow_id, flow.run_id)
    assert bound.expires_at > utcnow() and bound.revoked_at is None
    assert await flow.setup_state() == "password_set"
    assert (await flow.audit_actions()).count("sso_setup.password_set") == 1

    # A retry of the same attempt (same browser session) after the commit: same answer,
    # nothing done twice.
    again = await flow.run(flow.acts.store_password, flow.password_input())
    assert again.ok
    assert (await flow.account()).password_hash == account.password_hash  # type: ignore[union-attr]
    assert len(await flow.browser_sessions()) == 1
    assert (await flow.audit_actions()).count("sso_setup.password_set") == 1

    # Anyone else with the link, afterwards: refused, no session.
    other = await flow.run(
        flow.acts.store_password, flow.password_input("Another-Quiet-Harbour-Moth-77", OTHER_SESSION_HASH)
    )
    assert not other.ok
    assert other.message == LINK_GONE and "no longer valid" in other.message
    assert [s.id_hash for s in await flow.browser_sessions()] == [SESSION_HASH]
    assert Hasher().verify((await flow.account()).password_hash, PASSWORD)  # type: ignore[union-attr,arg-type]


async def test_store_password_attempts_that_overlap_both_answer_ok(
    world: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Temporal gave up on a slow attempt (its 10 s timeout) and started another, which read
    the link before the first committed: the person's step is done, not "link no longer
    valid"."""
    flow = await new_flow(world)
    original = flow.acts._hash

    async def hash_while_the_first_attempt_commits(password: str) -> str:
        monkeypatch.setattr(flow.acts, "_hash", original)
        assert (await flow.run(flow.acts.store_password, flow.password_input())).ok
        return await original(password)

    monkeypatch.setattr(flow.acts, "_hash", hash_while_the_first_attempt_commits)
    result = await flow.run(flow.acts.store_password, flow.password_input())
    assert result.ok, result
    assert len(await flow.browser_sessions()) == 1
    assert (await flow.audit_actions()).count("sso_setup.password_set") == 1


async def test_store_password_does_not_truncate(world: Any) -> None:
    """docs/security.md §1: long passwords are allowed (up to 256) and every character counts."""
    flow = await new_flow(world)
    long_password = ("Velvet Orbit Lantern Pixel " * 10)[:255] + "!"
    assert len(long_password) == 256
    assert (await flow.run(flow.acts.store_password, flow.password_input(long_password))).ok
    stored = (await flow.account()).password_hash  # type: ignore[union-attr]
    assert stored is not None
    assert Hasher().verify(stored, long_password)
    assert not Hasher().verify(stored, long_password[:-1] + "?")
    assert not Hasher().verify(stored, long_password[:72])


@pytest.mark.parametrize("kind", ["expired", "revoked"])
async def test_store_password_refuses_an_expired_or_revoked_link(world: Any, kind: str) -> None:
    if kind == "expired":
        flow = await new_flow(world, link_expires_in=timedelta(seconds=-1))
    else:
        flow = await new_flow(world, revoked=True)
    before = await flow.snapshot()
    result = await flow.run(flow.acts.store_password, flow.password_input())
    assert not result.ok
    assert result.message == LINK_GONE
    assert await flow.snapshot() == before
    assert await flow.account() is None
    assert "sso_setup.password_set" not in await flow.audit_actions()


async def disable_in_database(flow: Flow) -> None:
    """The person disabled while their setup was still open (Temporal could not be told)."""
    async with flow.sessions() as session:
        staff = await session.get(Staff, flow.staff_id)
        assert staff is not None
        staff.disabled_at = utcnow()
        account = await session.scalar(select(SsoAccount).where(SsoAccount.staff_id == flow.staff_id))
        if account is not None:
            account.status_before_disable, account.status = account.status, "disabled"
        await session.commit()


async def test_store_password_refuses_a_disabled_person_and_changes_nothing(world: Any) -> None:
    flow = await new_flow(world)
    await disable_in_database(flow)
    before = await flow.snapshot()
    result = await flow.run(flow.acts.store_password, flow.password_input())
    assert (result.ok, result.message) == (False, ACCOUNT_DISABLED)
    assert await flow.snapshot() == before


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("short", "Use at least 15 characters"),
        ("password12345678", "commonly used password"),
        ("Bloggs.agentOS.2024", "Don't build your password from your name"),
    ],
)
async def test_store_password_refuses_a_weak_password_and_changes_nothing(
    world: Any, password: str, reason: str
) -> None:
    flow = await new_flow(world)
    before = await flow.snapshot()
    result = await flow.run(flow.acts.store_password, flow.password_input(password))
    assert not result.ok
    assert result.problems and reason in " ".join(result.problems)
    assert await flow.snapshot() == before
    assert await flow.account() is None
    actions = await flow.audit_actions()
    assert "sso_setup.password_rejected" in actions and "sso_setup.password_set" not in actions
    # The link still works.
    assert (await flow.run(flow.acts.store_password, flow.password_input())).ok


async def test_store_password_refuses_a_value_sealed_for_something_else(world: Any) -> None:
    flow = await new_flow(world)
    before = await flow.snapshot()
    _private, stranger_public = new_keypair()
    wrong = [
        flow.password_input(context=password_context("sso-setup-someone-else")),  # other flow
        flow.password_input(context=totp_context(flow.workflow_id)),  # other purpose
        flow.password_input(public_key=stranger_public),  # not for our workers
    ]
    garbled = flow.password_input()
    garbled.sealed_password = garbled.sealed_password[:-4] + "AAAA"
    plain = flow.password_input()
    plain.sealed_password = PASSWORD
    for data in [*wrong, garbled, plain]:
        with pytest.raises(ApplicationError) as caught:
            await flow.run(flow.acts.store_password, data)
        assert caught.value.type == "BadSeal"
        assert caught.value.non_retryable
        assert PASSWORD not in str(caught.value)
    assert await flow.snapshot() == before


# -- send_code ----------------------------------------------------------------------------


async def test_send_code_emails_six_digits_and_returns_only_a_digest(world: Any) -> None:
    flow = await flow_with_password(world)
    result = await flow.run(
        flow.shared.send_code,
        SendCodeInput(
            setup_id=str(flow.setup_id),
            staff_id=str(flow.staff_id),
            workflow_id=flow.workflow_id,
            purpose="setup",
            code_ttl_seconds=600,
        ),
    )

    async with flow.sessions() as session:
        [email] = (
            await session.scalars(
                select(OutboxEmail).where(
                    OutboxEmail.to_address == flow.email, OutboxEmail.subject == CODE_SUBJECT
                )
            )
        ).all()
    body = flow.keyring.unseal(email.body_encrypted, b"outbox").decode()
    text, html = body.split("\0")
    match = CODE_LINE.search(text)
    assert match, text
    code = match.group(1)
    assert code in html and "10 minutes" in text

    secret = flow.settings.secret_key.get_secret_value()
    assert result.code_digest == code_digest(secret, "setup", flow.workflow_id, code)
    assert code not in result.code_digest
    # Bound to its purpose and flow: the same code means nothing elsewhere.
    assert result.code_digest != code_digest(secret, "reset", flow.workflow_id, code)
    assert result.code_digest != code_digest(secret, "setup", "sso-setup-other", code)
    assert result.sent_at is not None
    assert await flow.setup_state() == "code_sent"
    assert (await flow.audit_actions()).count("code.issued") == 1
    async with flow.sessions() as session:
        details = (
            await session.scalars(select(AuditEvent.details).where(AuditEvent.target == str(flow.staff_id)))
        ).all()
    assert all(code not in str(d) for d in details)


async def test_send_code_gives_a_new_code_each_time(world: Any) -> None:
    flow = await flow_with_password(world)
    data = SendCodeInput(
        setup_id=str(flow.setup_id),
        staff_id=str(flow.staff_id),
        workflow_id=flow.workflow_id,
        purpose="setup",
        code_ttl_seconds=600,
    )
    # Each "Send a new code" is a new activity of the flow (a new send request); attempts of
    # one request repeat its code (tests/core/test_email_sends.py).
    digests = set()
    for number in range(5):
        env = ActivityEnvironment()
        env.info = dataclasses.replace(env.info, activity_id=str(number))
        digests.add((await env.run(flow.shared.send_code, data)).code_digest)
    assert len(digests) >= 4  # six random digits: five equal draws are (nearly) impossible
    async with flow.sessions() as session:
        count = await session.scalar(
            select(func.count()).select_from(OutboxEmail).where(OutboxEmail.to_address == flow.email)
        )
    assert count == 5


async def test_send_code_moves_no_setup_without_a_setup_id(world: Any) -> None:
    """The reset flow sends codes without a setup (`setup_id` None); an input scheduled before
    the field was optional carries "" for the same. Neither touches the setup row."""
    flow = await flow_with_password(world)
    for number, setup_id in enumerate((None, "")):
        env = ActivityEnvironment()
        env.info = dataclasses.replace(env.info, activity_id=f"reset-{number}")
        result = await env.run(
            flow.shared.send_code,
            SendCodeInput(
                setup_id=setup_id,
                staff_id=str(flow.staff_id),
                workflow_id=flow.workflow_id,
                purpose="reset",
                code_ttl_seconds=600,
            ),
        )
        assert result.code_digest
    assert await flow.setup_state() == "password_set"
    assert (await flow.audit_actions()).count("code.issued") == 2


# -- confirm_email ------------------------------------------------------------------------


async def test_confirm_email_creates_a_sealed_160_bit_totp_secret(world: Any) -> None:
    flow = await flow_with_password(world)
    await flow.set_setup_state("code_sent")
    await flow.run(flow.acts.confirm_email, flow.step_input())

    account = await flow.account()
    assert account is not None and account.verified_at is not None
    assert account.totp_secret_encrypted is not None and account.mfa_enabled_at is None
    secret = await flow.totp_secret()
    assert re.fullmatch(r"[A-Z2-7]{32}", secret), secret
    assert len(base64.b32decode(secret)) == 20  # 160 bits
    assert secret not in account.totp_secret_encrypted
    assert secret.lower() not in account.totp_secret_encrypted.lower()
    # Sealed for this person only.
    with pytest.raises(ValueError):
        flow.keyring.unseal(account.totp_secret_encrypted, totp_aad(uuid.uuid4()))
    assert await flow.setup_state() == "mfa_pending"
    assert (await flow.audit_actions()).count("sso_setup.email_confirmed") == 1


async def test_confirm_email_twice_keeps_the_same_secret(world: Any) -> None:
    flow = await flow_with_password(world)
    await flow.set_setup_state("code_sent")
    await flow.run(flow.acts.confirm_email, flow.step_input())
    first = await flow.totp_secret()
    verified_at = (await flow.account()).verified_at  # type: ignore[union-attr]
    await flow.run(flow.acts.confirm_email, flow.step_input())
    assert (await flow.account()).verified_at == verified_at  # type: ignore[union-attr]
    assert await flow.totp_secret() == first


async def test_confirm_email_without_an_account_is_refused(world: Any) -> None:
    flow = await new_flow(world)
    with pytest.raises(ApplicationError) as caught:
        await flow.run(flow.acts.confirm_email, flow.step_input())
    assert caught.value.type == "AccountMissing" and caught.value.non_retryable


# -- verify_totp --------------------------------------------------------------------------


@pytest.fixture
def server_time(monkeypatch: pytest.MonkeyPatch) -> datetime:
    """Freeze the clock verify_totp reads (server time) at NOW."""

    class Frozen(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
            return NOW.astimezone(tz) if tz is not None else NOW.replace(tzinfo=None)

    monkeypatch.setattr(setup_steps_module, "datetime", Frozen)
    return NOW


async def flow_with_totp(world: Any) -> Flow:
    flow = await flow_with_password(world)
    async with flow.sessions() as session:
        account = await session.scalar(select(SsoAccount).where(SsoAccount.staff_id == flow.staff_id))
        assert account is not None
        account.totp_secret_encrypted = flow.keyring.seal(TOTP_SECRET.encode(), totp_aad(flow.staff_id))
        await session.commit()
    return flow


def totp_at(steps: int) -> str:
    """The code `steps` 30-second steps away from NOW."""
    return pyotp.TOTP(TOTP_SECRET).at(NOW + timedelta(seconds=30 * steps))


async def test_the_codes_around_now_are_distinct() -> None:
    codes = [totp_at(step) for step in range(-3, 4)]
    assert len(set(codes)) == len(codes)


@pytest.mark.parametrize("step", [-1, 0, 1])
async def test_verify_totp_accepts_one_step_either_side(world: Any, server_time: datetime, step: int) -> None:
    flow = await flow_with_totp(world)
    result = await flow.run(flow.acts.verify_totp, flow.totp_input(totp_at(step)))
    assert result.ok, result.message
    account = await flow.account()
    assert account is not None
    assert account.totp_last_step == pyotp.TOTP(TOTP_SECRET).timecode(NOW) + step


@pytest.mark.parametrize("step", [-3, -2, 2, 3])
async def test_verify_totp_refuses_codes_further_away(world: Any, server_time: datetime, step: int) -> None:
    flow = await flow_with_totp(world)
    result = await flow.run(flow.acts.verify_totp, flow.totp_input(totp_at(step)))
    assert not result.ok
    assert "didn't match" in (result.message or "")
    assert (await flow.account()).totp_last_step is None  # type: ignore[union-attr]
    assert "mfa.code_failed" in await flow.audit_actions()


async def test_verify_totp_refuses_malformed_codes(world: Any, server_time: datetime) -> None:
    flow = await flow_with_totp(world)
    for code in ("", "12345", "1234567", "abcdef", f" {totp_at(0)}x"):
        result = await flow.run(flow.acts.verify_totp, flow.totp_input(code))
        assert not result.ok, code
    # Surrounding spaces are not a different code.
    assert (await flow.run(flow.acts.verify_totp, flow.totp_input(f" {totp_at(0)} "))).ok


async def test_verify_totp_accepts_each_code_once(world: Any, server_time: datetime) -> None:
    flow = await flow_with_totp(world)
    assert (await flow.run(flow.acts.verify_totp, flow.totp_input(totp_at(0)))).ok
    replay = await flow.run(flow.acts.verify_totp, flow.totp_input(totp_at(0)))
    assert not replay.ok
    assert "already been used" in (replay.message or "")
    # An older step after a newer one was accepted: refused too.
    older = await flow.run(flow.acts.verify_totp, flow.totp_input(totp_at(-1)))
    assert not older.ok and "already been used" in (older.message or "")
    # The next step is newer: accepted once, then everything up to it is spent.
    assert (await flow.run(flow.acts.verify_totp, flow.totp_input(totp_at(1)))).ok
    for step in (-1, 0, 1):
        again = await flow.run(flow.acts.verify_totp, flow.totp_input(totp_at(step)))
        assert not again.ok, step
    assert (await flow.account()).totp_last_step == (  # type: ignore[union-attr]
        pyotp.TOTP(TOTP_SECRET).timecode(NOW) + 1
    )


async def test_verify_totp_refuses_a_code_sealed_for_something_else(
    world: Any, server_time: datetime
) -> None:
    flow = await flow_with_totp(world)
    for context in (totp_context("sso-setup-someone-else"), password_context(flow.workflow_id)):
        with pytest.raises(ApplicationError) as caught:
            await flow.run(flow.acts.verify_totp, flow.totp_input(totp_at(0), context))
        assert caught.value.type == "BadSeal"
    assert (await flow.account()).totp_last_step is None  # type: ignore[union-attr]
    # Still unused: the right box is accepted.
    assert (await flow.run(flow.acts.verify_totp, flow.totp_input(totp_at(0)))).ok


# -- activate_account ---------------------------------------------------------------------


async def confirmed_flow(world: Any) -> Flow:
    flow = await flow_with_password(world)
    await flow.set_setup_state("code_sent")
    await flow.run(flow.acts.confirm_email, flow.step_input())
    return flow


async def test_activate_without_mfa_drops_the_pending_secret(world: Any) -> None:
    flow = await confirmed_flow(world)
    await flow.run(flow.acts.activate_account, flow.activate_input(mfa=False))
    account = await flow.account()
    assert account is not None
    assert account.status == "active" and account.activated_at is not None
    assert account.totp_secret_encrypted is None
    assert account.mfa_enabled_at is None
    assert await flow.setup_state() == "active"
    actions = await flow.audit_actions()
    assert actions.count("mfa.skipped") == 1  # docs/security.md §14
    assert actions.count("sso_setup.active") == 1
    assert "mfa.enrolled" not in actions


async def test_activate_leaves_a_person_disabled_meanwhile_disabled(world: Any) -> None:
    """Active once enabled, not before."""
    flow = await confirmed_flow(world)
    await disable_in_database(flow)
    await flow.run(flow.acts.activate_account, flow.activate_input(mfa=False))
    account = await flow.account()
    assert account is not None and account.activated_at is not None
    assert (account.status, account.status_before_disable) == ("disabled", "active")


async def test_activate_with_mfa_keeps_the_secret(world: Any) -> None:
    flow = await confirmed_flow(world)
    secret = await flow.totp_secret()
    await flow.run(flow.acts.activate_account, flow.activate_input(mfa=True))
    account = await flow.account()
    assert account is not None
    assert account.status == "active" and account.activated_at is not None
    assert account.mfa_enabled_at is not None
    assert await flow.totp_secret() == secret
    assert await flow.setup_state() == "active"
    actions = await flow.audit_actions()
    assert actions.count("mfa.enrolled") == 1
    assert actions.count("sso_setup.active") == 1
    assert "mfa.skipped" not in actions


# -- retries of an attempt whose worker died (tests/faults shows them on the real stack) ----


async def retry(activity: Any, data: Any, scheduled: datetime) -> Any:
    """A second attempt of an activity first scheduled at `scheduled`, as Temporal runs it
    after the first attempt's worker died."""
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=2, scheduled_time=scheduled)
    return await env.run(activity, data)


async def test_confirm_email_retried_after_it_committed_records_it_once(world: Any) -> None:
    flow = await flow_with_password(world)
    await flow.set_setup_state("code_sent")
    await flow.run(flow.acts.confirm_email, flow.step_input())
    secret = await flow.totp_secret()
    await retry(flow.acts.confirm_email, flow.step_input(), utcnow())
    assert await flow.totp_secret() == secret
    assert await flow.setup_state() == "mfa_pending"
    assert (await flow.audit_actions()).count("sso_setup.email_confirmed") == 1


async def test_activate_retried_after_it_committed_records_it_once(world: Any) -> None:
    flow = await confirmed_flow(world)
    await flow.run(flow.acts.activate_account, flow.activate_input(mfa=True))
    await retry(flow.acts.activate_account, flow.activate_input(mfa=True), utcnow())
    account = await flow.account()
    assert account is not None and account.status == "active" and account.mfa_enabled_at
    actions = await flow.audit_actions()
    assert actions.count("mfa.enrolled") == 1 and actions.count("sso_setup.active") == 1


async def test_verify_totp_retry_judges_the_code_when_it_was_entered(
    world: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retry runs two minutes after the person typed the code (the first attempt's
    worker died before it committed): the code is judged at the time the step was
    scheduled."""

    class Later(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
            return (NOW + timedelta(minutes=2)).astimezone(tz or UTC)

    flow = await flow_with_totp(world)
    monkeypatch.setattr(setup_steps_module, "datetime", Later)
    assert not (await flow.run(flow.acts.verify_totp, flow.totp_input(totp_at(0)))).ok
    assert (await retry(flow.acts.verify_totp, flow.totp_input(totp_at(0)), NOW)).ok


async def test_verify_totp_retry_after_it_committed_is_accepted_once(world: Any) -> None:
    """The first attempt accepted the code and committed, and its answer was lost: the retry
    answers the same; every other use of the code is still a replay."""
    flow = await flow_with_totp(world)
    assert (await retry(flow.acts.verify_totp, flow.totp_input(totp_at(1)), NOW)).ok
    assert (await retry(flow.acts.verify_totp, flow.totp_input(totp_at(1)), NOW)).ok
    # Any other use of that code, or of an older one, is still a replay; a wrong one is wrong.
    replay = await flow.run(flow.acts.verify_totp, flow.totp_input(totp_at(1)))
    assert not replay.ok
    older = await retry(flow.acts.verify_totp, flow.totp_input(totp_at(0)), NOW)
    assert not older.ok and "already been used" in (older.message or "")
    wrong = await retry(flow.acts.verify_totp, flow.totp_input(totp_at(5)), NOW)
    assert not wrong.ok and "didn't match" in (wrong.message or "")


# -- record_link_opened ------------------------------------------------------------------


async def test_record_link_opened_moves_an_emailed_setup_once(world: Any) -> None:
    flow = await new_flow(world, state="email_sent")
    await flow.run(flow.acts.record_link_opened, flow.step_input())
    assert await flow.setup_state() == "link_opened"
    await retry(flow.acts.record_link_opened, flow.step_input(), utcnow())
    assert await flow.setup_state() == "link_opened"
    assert (await flow.audit_actions()).count("sso_setup.link_opened") == 1
    assert not (await flow.link()).consumed_at  # opening the link never consumes it


@pytest.mark.parametrize("state", ["password_set", "code_sent", "expired", "cancelled"])
async def test_record_link_opened_never_moves_a_setup_back(world: Any, state: str) -> None:
    flow = await new_flow(world, state=state)
    await flow.run(flow.acts.record_link_opened, flow.step_input())
    assert await flow.setup_state() == state
    assert "sso_setup.link_opened" not in await flow.audit_actions()


# -- IPs in the audit (issue 11) ----------------------------------------------------------


@pytest.mark.parametrize("mfa", [False, True])
async def test_every_setup_step_audit_event_carries_the_ip(world: Any, mfa: bool) -> None:
    """link_opened, email_confirmed, mfa.enrolled/skipped and active once carried no IP."""
    ip = "203.0.113.44"
    flow = await new_flow(world, state="email_sent")
    step = dataclasses.replace(flow.step_input(), ip=ip)
    await flow.run(flow.acts.record_link_opened, step)
    flow = await flow_with_password(world)
    await flow.set_setup_state("code_sent")
    await flow.run(flow.acts.confirm_email, dataclasses.replace(flow.step_input(), ip=ip))
    await flow.run(flow.acts.activate_account, dataclasses.replace(flow.activate_input(mfa=mfa), ip=ip))
    async with flow.sessions() as session:
        rows = (
            await session.execute(
                select(AuditEvent.action, AuditEvent.ip).where(
                    AuditEvent.action.in_(
                        [
                            "sso_setup.link_opened",
                            "sso_setup.email_confirmed",
                            "mfa.enrolled",
                            "mfa.skipped",
                            "sso_setup.active",
                        ]
                    )
                )
            )
        ).all()
    expected = {
        "sso_setup.link_opened",
        "sso_setup.email_confirmed",
        "sso_setup.active",
        "mfa.enrolled" if mfa else "mfa.skipped",
    }
    assert {action for action, _ in rows} == expected
    assert {address for _, address in rows} == {ip}
