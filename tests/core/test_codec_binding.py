"""core/codec.py binds each payload to its flow (namespace and workflow id in the AES-GCM
associated data); a codec without a context reads a payload by the binding it names."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.converter import ActivitySerializationContext, WorkflowSerializationContext

from core.codec import (
    BINDING,
    EncryptionCodec,
    data_converter,
    is_unauthenticated,
    keyring_from_settings,
    refusal,
)
from core.crypto import Keyring
from core.db import create_engine, session_factory
from core.deployment import PAYLOAD_BINDING_SINCE, UNBOUND_GRACE, unbound_payloads_until
from core.models import DeploymentFact
from tests.support.config import POSTGRES_URL, _migrate, make_settings, postgres_database

KEY = base64.urlsafe_b64encode(b"k" * 32).decode()
PLAIN = Payload(metadata={"encoding": b"json/plain"}, data=b'{"ip": null}')
NOW = datetime(2027, 1, 1, tzinfo=UTC)


def codec(unbound_until: datetime | None = None) -> EncryptionCodec:
    return EncryptionCodec(Keyring.from_b64([KEY]), unbound_until, now=lambda: NOW)


def flow(
    workflow_id: str, namespace: str = "default", unbound_until: datetime | None = None
) -> EncryptionCodec:
    return codec(unbound_until).with_context(WorkflowSerializationContext(namespace, workflow_id))


def reason(payload: Payload) -> str:
    assert is_unauthenticated(payload)
    return payload.metadata["unauthenticated-reason"].decode()


@pytest.mark.asyncio
async def test_a_payload_decodes_only_in_the_flow_it_was_made_for() -> None:
    [sealed] = await flow("sso-setup-a").encode([PLAIN])
    assert sealed.metadata[BINDING] == b"default/sso-setup-a"
    assert flow("sso-setup-a").decode_one(sealed) == PLAIN
    assert reason(flow("sso-setup-b").decode_one(sealed)) == "made for another flow"
    assert reason(flow("sso-setup-a", namespace="other").decode_one(sealed)) == "made for another flow"
    # Renaming the binding in the metadata does not move it: the ciphertext says otherwise.
    sealed.metadata[BINDING] = b"default/sso-setup-b"
    assert is_unauthenticated(flow("sso-setup-b").decode_one(sealed))


@pytest.mark.asyncio
async def test_an_activity_shares_its_workflows_binding() -> None:
    activity = codec().with_context(
        ActivitySerializationContext(
            namespace="default",
            workflow_id="sso-setup-a",
            workflow_type="SsoSetup",
            activity_type="close_setup",
            activity_id="1",
            activity_task_queue="sso",
            is_local=False,
        )
    )
    [sealed] = await activity.encode([PLAIN])
    assert flow("sso-setup-a").decode_one(sealed) == PLAIN
    assert is_unauthenticated(flow("sso-setup-b").decode_one(sealed))


@pytest.mark.asyncio
async def test_without_a_context_the_named_binding_is_read() -> None:
    """The Temporal UI's codec endpoint and sso audit boundary know no workflow id."""
    [sealed] = await flow("sso-setup-a").encode([PLAIN])
    assert codec().decode_one(sealed) == PLAIN


@pytest.mark.asyncio
async def test_unbound_payloads_are_believed_only_inside_the_window() -> None:
    [unbound] = await codec().encode([PLAIN])
    assert BINDING not in unbound.metadata
    assert reason(flow("sso-setup-a").decode_one(unbound)) == "not bound to a flow"
    assert is_unauthenticated(flow("sso-setup-a", unbound_until=NOW).decode_one(unbound))
    assert flow("sso-setup-a", unbound_until=NOW + timedelta(seconds=1)).decode_one(unbound) == PLAIN
    assert codec().decode_one(unbound) == PLAIN  # read only: ops and the audit


def test_the_refusal_says_why() -> None:
    assert refusal("made for another flow") == (
        "Refused a payload encrypted with this deployment's key but made for another flow"
    )
    assert "not encrypted" in refusal("authentication failed")


async def test_the_boundary_audit_names_a_payload_copied_from_another_flow() -> None:
    """A copied signal is dropped by the worker but stays in history: `sso audit boundary`
    checks it against the flow it sits in, as the worker did."""
    from temporalio.api.enums.v1 import EventType
    from temporalio.api.history.v1 import HistoryEvent

    from core.boundary_audit import IDENTITY_PREFIX, findings

    [copied] = await flow("sso-setup-a").encode([PLAIN])
    [own] = await flow("sso-setup-b").encode([PLAIN])
    events = []
    for payload in (copied, own):
        event = HistoryEvent(event_type=EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED)
        signal = event.workflow_execution_signaled_event_attributes
        signal.signal_name = "link_opened"
        signal.identity = f"1@host {IDENTITY_PREFIX}web"
        signal.input.payloads.append(payload)
        events.append(event)
    found = findings(codec().bound_to("default", "sso-setup-b"), "sso-setup-b", "r", events)
    assert [(f.what, f.why) for f in found] == [
        ("signal link_opened", "payload encrypted with this deployment's key but made for another flow")
    ]


@pytest.fixture(params=["sqlite", "postgres"])
def migrated_now(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, datetime]]:
    """A database migrated by this test, not a copy of the session's template (migrated when
    the run began, maybe half an hour earlier on a busy machine), with the moment before."""
    started = datetime.now(UTC)
    if request.param == "sqlite":
        path = tmp_path / "sso.db"
        _migrate(f"sqlite:///{path}")
        yield f"sqlite+aiosqlite:///{path}", started
        return
    if not POSTGRES_URL:
        pytest.skip("set SSO_TEST_DATABASE_URL to run the database tests on PostgreSQL too")
    with postgres_database() as url:
        _migrate(url)
        yield url, started


@pytest.mark.asyncio(loop_scope="session")
async def test_the_window_opens_at_the_migration_that_brought_the_binding(
    migrated_now: tuple[str, datetime],
) -> None:
    """Left unset, flows running at the deploy keep working: unbound payloads are believed
    for 48 hours after the migration recorded when binding began, and refused after."""
    database_url, started = migrated_now
    settings = make_settings(database_url=database_url)
    until = await unbound_payloads_until(settings)
    engine = create_engine(database_url)
    async with session_factory(engine)() as session:
        fact = await session.get(DeploymentFact, PAYLOAD_BINDING_SINCE)
    await engine.dispose()
    assert fact is not None and until is not None and until == fact.at + UNBOUND_GRACE
    assert started <= fact.at <= datetime.now(UTC)  # recorded by the migration
    assert data_converter(settings, until).payload_codec is not None
    old = await codec().encode([PLAIN])  # as the earlier version wrote it: no binding
    context = WorkflowSerializationContext("default", "sso-setup-1")
    for moment, believed in ((until - timedelta(seconds=1), True), (until + timedelta(seconds=1), False)):
        at = EncryptionCodec(keyring_from_settings(settings), until, now=lambda m=moment: m)
        [decoded] = await at.with_context(context).decode(old)
        assert (decoded == PLAIN) is believed
        assert is_unauthenticated(decoded) is not believed


@pytest.mark.asyncio(loop_scope="session")
async def test_a_set_window_wins_and_an_unreadable_database_refuses(tmp_path: Path) -> None:
    chosen = datetime(2027, 1, 15, tzinfo=UTC)
    assert await unbound_payloads_until(make_settings(temporal_unbound_until=chosen)) == chosen
    missing = make_settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'not-migrated.db'}")
    assert await unbound_payloads_until(missing) is None
