"""Housekeeping's steps (activities/housekeeping.py over core/retention.py) on SQLite and
PostgreSQL: rows of every kind, old and new, are seeded; exactly the finished ones kept past
SSO_RETENTION_DAYS go, and what something still reads stays (an unexpired session, a session
whose app grant is live, every token of a live refresh family, today's email sends). Small
batches loop until nothing is left; the run is audited once, with counts only."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.housekeeping import HousekeepingActivities
from activities.inputs import HousekeepingDoneInput, PurgeInput
from core import flow_errors
from core.batches import BatchState, ItemStatus
from core.db import SessionFactory
from core.models import (
    AuditEvent,
    Base,
    BrowserSession,
    EmailBudgetHour,
    EmailSend,
    OidcClient,
    OidcGrant,
    OidcRefreshToken,
    Organisation,
    OutboxEmail,
    RateCounter,
    ResetCodeFailure,
    ResetLink,
    SetupLink,
    SsoAccount,
    Staff,
    StaffBatch,
    StaffBatchItem,
    utcnow,
)
from core.oidc.clients import REFRESH_ABSOLUTE_DEFAULT
from core.retention import TABLES
from tests.support.config import make_settings

pytestmark = pytest.mark.asyncio(loop_scope="session")

DAYS = 30
LONG_AGO = timedelta(days=DAYS + 1)
# Past a family's default absolute lifetime and the retention after it.
FAMILY_OVER = timedelta(seconds=REFRESH_ABSOLUTE_DEFAULT) + LONG_AGO


@dataclass
class Seeded:
    """The rows seeded per table: those that must go and those that must stay (their keys)."""

    gone: dict[str, set[Any]] = field(default_factory=dict)
    kept: dict[str, set[Any]] = field(default_factory=dict)

    def add(self, table: str, key: Any, *, goes: bool) -> None:
        (self.gone if goes else self.kept).setdefault(table, set()).add(key)


def _key(row: Base) -> Any:
    if isinstance(row, BrowserSession):
        return row.id_hash
    if isinstance(row, RateCounter):
        return row.key
    if isinstance(row, EmailBudgetHour):
        return (row.budget_key, row.hour)
    return row.id  # type: ignore[attr-defined]


async def _seed(sessions: SessionFactory, now: datetime, extra_old_counters: int = 0) -> Seeded:
    seeded = Seeded()
    old, recent = now - LONG_AGO, now - timedelta(days=1)
    tag = uuid.uuid4().hex[:8]
    async with sessions() as db:
        org = Organisation(name="Harbour", slug=f"harbour-{tag}")
        db.add(org)
        await db.flush()
        staff = Staff(
            org_id=org.id, first_name="Ada", last_name="Lee", external_email_1=f"ada-{tag}@example.com"
        )
        db.add(staff)
        await db.flush()
        account = SsoAccount(staff_id=staff.id, login_email=staff.external_email_1)
        client = OidcClient(client_id=f"app-{tag}", client_name="App")
        db.add_all([account, client])
        await db.flush()

        pending: list[tuple[str, Base, bool]] = []

        def add(table: str, row: Base, goes: bool) -> None:
            db.add(row)
            pending.append((table, row, goes))

        def session(hash_: str, **values: Any) -> BrowserSession:
            return BrowserSession(id_hash=f"{hash_}-{tag}", staff_id=staff.id, purpose="signin", **values)

        def grant(**values: Any) -> OidcGrant:
            return OidcGrant(
                code_hash=uuid.uuid4().hex,
                client_id=client.client_id,
                staff_id=staff.id,
                redirect_uri="https://app.example.test/cb",
                scope="openid",
                **{"expires_at": now + timedelta(minutes=1), **values},
            )

        # Sessions: ended long ago, and expired long ago with no live grant, go; one that has
        # not expired, one ended yesterday, and one expired long ago whose app grant is live
        # (ending it still tells the app) stay.
        add("browser_sessions", session("revoked-old", expires_at=old, revoked_at=old), True)
        add("browser_sessions", session("expired-old", expires_at=old), True)
        add("browser_sessions", session("live", expires_at=now + timedelta(hours=1)), False)
        add("browser_sessions", session("revoked-recent", expires_at=recent, revoked_at=recent), False)
        add("browser_sessions", session("expired-app", expires_at=old), False)

        # Grants and refresh tokens: a family revoked long ago, one past its absolute
        # lifetime long ago and a code never redeemed go with their tokens; a live family
        # keeps every token, the rotated ones too (a reuse revokes the family).
        revoked = grant(redeemed_at=old, revoked_at=old, session_hash=f"revoked-old-{tag}")
        lived = grant(redeemed_at=now - FAMILY_OVER, session_hash=f"gone-{tag}")
        unused = grant(expires_at=old)
        live = grant(redeemed_at=now - timedelta(days=60), session_hash=f"expired-app-{tag}")
        for row, goes in ((revoked, True), (lived, True), (unused, True), (live, False)):
            add("oidc_grants", row, goes)
        await db.flush()
        add("oidc_refresh_tokens", _token(revoked.id, rotated_at=old), True)
        add("oidc_refresh_tokens", _token(lived.id), True)
        add("oidc_refresh_tokens", _token(live.id, rotated_at=now - timedelta(days=59)), False)
        add("oidc_refresh_tokens", _token(live.id), False)

        link = {"workflow_id": "setup-x", "run_id": "r", "staff_id": staff.id}
        add(
            "setup_links",
            SetupLink(token_hash=uuid.uuid4().hex, expires_at=old, consumed_at=old, **link),
            True,
        )
        add("setup_links", SetupLink(token_hash=uuid.uuid4().hex, expires_at=recent, **link), False)
        reset = {"workflow_id": "reset-x", "account_id": account.id}
        add("reset_links", ResetLink(token_hash=uuid.uuid4().hex, expires_at=old, **reset), True)
        add(
            "reset_links",
            ResetLink(token_hash=uuid.uuid4().hex, expires_at=now + timedelta(minutes=5), **reset),
            False,
        )
        add("reset_code_failures", ResetCodeFailure(subject="s", flow="f", failed_at=old), True)
        add("reset_code_failures", ResetCodeFailure(subject="s", flow="f", failed_at=recent), False)

        # Email sends: read by a retry of their activity only; today's stay.
        add("email_sends", _send(staff.id, old, accepted_at=old), True)
        add("email_sends", _send(staff.id, now - timedelta(minutes=5)), False)
        add("email_sends", _send(staff.id, now), False)
        add(
            "outbox_emails",
            OutboxEmail(to_address="a@example.com", subject="s", body_encrypted="x", created_at=old),
            True,
        )
        add(
            "outbox_emails",
            OutboxEmail(to_address="a@example.com", subject="s", body_encrypted="x", created_at=now),
            False,
        )

        add("rate_counters", RateCounter(key=f"old-{tag}", window_start=old, count=3), True)
        for n in range(extra_old_counters):
            add("rate_counters", RateCounter(key=f"old-{n}-{tag}", window_start=old, count=1), True)
        add("rate_counters", RateCounter(key=f"now-{tag}", window_start=now, count=3), False)
        hour = now.replace(minute=0, second=0, microsecond=0)
        add("email_budget_hours", EmailBudgetHour(budget_key=tag, hour=hour - LONG_AGO, used=5), True)
        add("email_budget_hours", EmailBudgetHour(budget_key=tag, hour=hour, used=5), False)

        # Batches: a closed one finished long ago goes with its items; a closed one finished
        # yesterday and a running one from long ago stay.
        for state, updated, goes in (
            (BatchState.done, old, True),
            (BatchState.cancelled, recent, False),
            (BatchState.running, old, False),
        ):
            batch = StaffBatch(
                org_id=org.id,
                action="send_email",
                state=state.value,
                requested_by="a",
                total=1,
                updated_at=updated,
            )
            add("staff_batches", batch, goes)
            await db.flush()
            item = StaffBatchItem(
                batch_id=batch.id, staff_id=staff.id, position=0, status=ItemStatus.sent.value
            )
            add("staff_batch_items", item, goes)
        await db.flush()
        for table, seeded_row, goes in pending:
            seeded.add(table, _key(seeded_row), goes=goes)
        await db.commit()
    return seeded


def _token(grant_id: uuid.UUID, **values: Any) -> OidcRefreshToken:
    return OidcRefreshToken(token_hash=uuid.uuid4().hex, grant_id=grant_id, scope="openid", **values)


def _send(staff_id: uuid.UUID, created: datetime, **values: Any) -> EmailSend:
    return EmailSend(
        request_key=uuid.uuid4().hex, kind="setup", staff_id=staff_id, created_at=created, **values
    )


async def _present(sessions: SessionFactory, table: str, keys: set[Any]) -> set[Any]:
    model = next(m for m in Base.registry.mappers if m.persist_selectable.name == table).class_  # type: ignore[attr-defined]
    async with sessions() as db:
        rows = await db.scalars(select(model))
        return {_key(row) for row in rows} & keys


def _activities(sessions: SessionFactory) -> HousekeepingActivities:
    return HousekeepingActivities(make_settings(retention_days=DAYS), sessions)


async def test_exactly_the_finished_rows_kept_past_retention_go(sessions: SessionFactory) -> None:
    seeded = await _seed(sessions, utcnow())
    steps = _activities(sessions)
    counts = {
        table: await ActivityEnvironment().run(steps.purge_table, PurgeInput(table=table)) for table in TABLES
    }
    assert set(seeded.gone) == set(TABLES)
    for table in TABLES:
        assert counts[table] == len(seeded.gone[table]), table
        assert await _present(sessions, table, seeded.gone[table]) == set(), table
        assert await _present(sessions, table, seeded.kept[table]) == seeded.kept[table], table
    # A second run finds nothing more to delete.
    again = [await ActivityEnvironment().run(steps.purge_table, PurgeInput(table=table)) for table in TABLES]
    assert again == [0] * len(TABLES)


async def test_small_batches_loop_until_none_is_left(sessions: SessionFactory) -> None:
    seeded = await _seed(sessions, utcnow(), extra_old_counters=6)
    env = ActivityEnvironment()
    beats: list[Any] = []
    env.on_heartbeat = lambda *details: beats.append(details[0])
    deleted = await env.run(
        _activities(sessions).purge_table, PurgeInput(table="rate_counters", batch_size=2)
    )
    assert deleted == 7
    # Batches of 2, 2, 2, 1: a heartbeat after each, with the running total.
    assert beats == [2, 4, 6, 7]
    assert await _present(sessions, "rate_counters", seeded.gone["rate_counters"]) == set()
    assert (
        await _present(sessions, "rate_counters", seeded.kept["rate_counters"])
        == seeded.kept["rate_counters"]
    )


async def test_an_unknown_table_or_an_empty_batch_is_refused(sessions: SessionFactory) -> None:
    steps = _activities(sessions)
    for bad in (PurgeInput(table="audit_events"), PurgeInput(table="rate_counters", batch_size=0)):
        with pytest.raises(ApplicationError) as refused:
            await ActivityEnvironment().run(steps.purge_table, bad)
        assert refused.value.non_retryable and refused.value.type == flow_errors.BAD_REQUEST


async def test_each_run_is_audited_once_with_counts_only(sessions: SessionFactory) -> None:
    steps = _activities(sessions)
    counts = dict.fromkeys(TABLES, 0) | {"browser_sessions": 4}
    done = HousekeepingDoneInput(run_id=str(uuid.uuid4()), counts=counts)
    await ActivityEnvironment().run(steps.record_housekeeping, done)
    await ActivityEnvironment().run(steps.record_housekeeping, done)  # a retry after its commit
    async with sessions() as db:
        events = list(await db.scalars(select(AuditEvent).where(AuditEvent.action == "housekeeping.purged")))
        assert await db.scalar(select(func.count()).select_from(AuditEvent)) == len(events)
    assert len(events) == 1
    assert events[0].actor == "system" and events[0].details == {"counts": counts}
