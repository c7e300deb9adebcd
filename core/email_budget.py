"""An hourly email budget: how many emails an organisation's people may be sent per clock
hour, counted in the database so every worker shares it.

Every email to a person counts against their organisation (`count`, where every email goes
out: activities/send_requests.py); one a person asked for (a reset code, a new link) goes out
even past the budget, but a bulk send `spend`s before it sends and waits once the hour is
spent. `spend` is one statement on SQLite and PostgreSQL alike (an insert that, on conflict,
adds to the hour's count only while it stays within the limit), so two workers can never both
take the last email of an hour.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.models import EmailBudgetHour, Staff


def budget_key(staff: Staff) -> str:
    """Whose budget an email to this person counts against: their organisation's."""
    return org_budget_key(staff.org_id)


def org_budget_key(org_id: uuid.UUID) -> str:
    return str(org_id)


def hour_of(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def next_hour(moment: datetime) -> datetime:
    return hour_of(moment) + timedelta(hours=1)


async def spend(session: AsyncSession, key: str, limit: int, now: datetime, count: int = 1) -> bool:
    """Count `count` emails against `key` in `now`'s hour: True when they fit within
    `limit` (and are counted; the caller's transaction keeps them), False when the hour's
    budget would be exceeded (nothing counted)."""
    if count > limit:
        return False
    return await _add(session, key, now, count, EmailBudgetHour.used + count <= limit)


async def count(session: AsyncSession, key: str, now: datetime) -> None:
    """Count one email against `key` in `now`'s hour, whatever the budget: an email a person
    is waiting for goes out, and a bulk send waits for the hour it used."""
    await _add(session, key, now, 1, None)


async def _add(session: AsyncSession, key: str, now: datetime, count: int, within: Any) -> bool:
    dialect = session.get_bind().dialect.name
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    first = insert(EmailBudgetHour).values(budget_key=key, hour=hour_of(now), used=count)
    statement = first.on_conflict_do_update(
        index_elements=[EmailBudgetHour.budget_key, EmailBudgetHour.hour],
        set_={"used": EmailBudgetHour.used + count},
        where=within,
    ).returning(EmailBudgetHour.used)
    return (await session.execute(statement)).first() is not None


async def used(session: AsyncSession, key: str, now: datetime) -> int:
    """Emails counted against `key` in `now`'s hour."""
    found = await session.scalar(
        select(EmailBudgetHour.used).where(
            EmailBudgetHour.budget_key == key, EmailBudgetHour.hour == hour_of(now)
        )
    )
    return found or 0
