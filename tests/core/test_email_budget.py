"""The hourly email budget (core/email_budget.py) on SQLite and PostgreSQL: it counts up to
its limit and no further, even with many sessions spending at once; each hour and each key
has its own count."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from core import email_budget
from core.db import SessionFactory
from core.models import Staff

pytestmark = pytest.mark.asyncio(loop_scope="session")

NOON = datetime(2026, 12, 7, 12, 30, tzinfo=UTC)


async def _spend(sessions: SessionFactory, key: str, limit: int, now: datetime) -> bool:
    async with sessions() as session:
        spent = await email_budget.spend(session, key, limit, now)
        await session.commit()
        return spent


async def test_spends_up_to_the_limit_per_hour_and_key(sessions: SessionFactory) -> None:
    assert [await _spend(sessions, "org-a", 3, NOON) for _ in range(4)] == [True, True, True, False]
    # The same hour, another key; the next hour, the same key: their own counts.
    assert await _spend(sessions, "org-b", 3, NOON + timedelta(minutes=29))
    assert await _spend(sessions, "org-a", 3, NOON + timedelta(minutes=30))
    async with sessions() as session:
        assert await email_budget.used(session, "org-a", NOON) == 3
        assert await email_budget.used(session, "org-a", NOON + timedelta(hours=1)) == 1
        assert await email_budget.used(session, "org-b", NOON) == 1


async def test_a_rolled_back_spend_is_not_counted(sessions: SessionFactory) -> None:
    async with sessions() as session:
        assert await email_budget.spend(session, "k", 5, NOON, count=4)
        await session.rollback()
    async with sessions() as session:
        assert await email_budget.used(session, "k", NOON) == 0
        assert not await email_budget.spend(session, "k", 5, NOON, count=6)


async def test_concurrent_spends_never_exceed_the_limit(sessions: SessionFactory) -> None:
    results = await asyncio.gather(*(_spend(sessions, "busy", 10, NOON) for _ in range(30)))
    assert results.count(True) == 10
    async with sessions() as session:
        assert await email_budget.used(session, "busy", NOON) == 10


async def test_the_key_is_the_persons_organisation() -> None:
    org_id = uuid.UUID("4e0c0f6a-0000-4000-8000-000000000001")
    person = Staff(first_name="A", last_name="B", external_email_1="a@example.com", org_id=org_id)
    assert email_budget.budget_key(person) == "4e0c0f6a-0000-4000-8000-000000000001"
    assert email_budget.budget_key(person) == email_budget.org_budget_key(org_id)


async def test_the_next_hour_starts_on_the_hour() -> None:
    assert email_budget.next_hour(NOON) == datetime(2026, 12, 7, 13, tzinfo=UTC)
