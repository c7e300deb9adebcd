"""Wrong reset codes counted in the database (core/reset_caps.py), on SQLite and PostgreSQL:
the caps hold for codes sent together, span flows, roll over a day, and an unlock clears
them (docs/security.md §16 and §18)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from core.db import SessionFactory
from core.models import ResetCodeFailure, utcnow
from core.reset_caps import CodeCaps, clear, codes_stopped, count_wrong_code

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def stored(sessions: SessionFactory, subject: str) -> int:
    async with sessions() as session:
        return int(
            await session.scalar(
                select(func.count()).select_from(ResetCodeFailure).where(ResetCodeFailure.subject == subject)
            )
            or 0
        )


async def count(sessions: SessionFactory, caps: CodeCaps) -> tuple[bool, bool]:
    async with sessions() as session:
        wrong = await count_wrong_code(session, caps, utcnow())
        return wrong.counted, wrong.stopped


async def test_wrong_codes_sent_together_never_exceed_the_flow_cap(sessions: SessionFactory) -> None:
    caps = CodeCaps("account-1", "run-1", flow_limit=10, day_limit=20)
    results = await asyncio.gather(*(count(sessions, caps) for _ in range(25)))
    counted = sum(1 for c, _ in results if c)
    assert 1 <= counted <= 10
    assert await stored(sessions, "account-1") == counted
    async with sessions() as session:
        assert await codes_stopped(session, caps, utcnow()) == (counted == 10)
    # Whatever the race left, counting on reaches the cap and stops there.
    while (await count(sessions, caps))[0]:
        pass
    assert await stored(sessions, "account-1") == 10
    assert await count(sessions, caps) == (False, True)


async def test_the_day_cap_spans_flows_and_rolls_over(sessions: SessionFactory) -> None:
    now = utcnow()
    async with sessions() as session:
        session.add_all(
            [
                ResetCodeFailure(
                    subject="account-2",
                    flow=f"run-{n % 4}",
                    failed_at=now - timedelta(hours=25 if n < 5 else 2),
                )
                for n in range(24)
            ]
        )
        await session.commit()
    # 19 within the last 24 hours: one more counts and stops codes, in a brand-new flow.
    assert await count(sessions, CodeCaps("account-2", "run-new")) == (True, True)
    assert await count(sessions, CodeCaps("account-2", "run-newer")) == (False, True)
    # Another account is not touched.
    assert await count(sessions, CodeCaps("account-3", "run-new")) == (True, False)
    # The five from more than a day ago are gone from the table.
    assert await stored(sessions, "account-2") == 20
    async with sessions() as session:
        assert await clear(session, "account-2") == 20
        await session.commit()
        assert not await codes_stopped(session, CodeCaps("account-2", "run-new"), utcnow())
