"""An hourly email budget: how many emails one budget key (an organisation; today the whole
deployment) may be sent per clock hour, counted in the database so every worker shares it.

`spend` is one statement on SQLite and PostgreSQL alike (an insert that, on conflict, adds to
the hour's count only while it stays within the limit), so two workers can never both take
the last email of an hour.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.models import EmailBudgetHour, Staff

# The key while there are no organisations: one budget for the deployment.
DEPLOYMENT = "deployment"


def budget_key(staff: Staff) -> str:
    """Whose budget an email to this person counts against. With organisations (issue 19)
    this becomes `return str(staff.org_id)`."""
    org_id: Any = getattr(staff, "org_id", None)
    return str(org_id) if org_id is not None else DEPLOYMENT


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
    dialect = session.get_bind().dialect.name
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    first = insert(EmailBudgetHour).values(budget_key=key, hour=hour_of(now), used=count)
    statement = first.on_conflict_do_update(
        index_elements=[EmailBudgetHour.budget_key, EmailBudgetHour.hour],
        set_={"used": EmailBudgetHour.used + count},
        where=EmailBudgetHour.used + count <= limit,
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
