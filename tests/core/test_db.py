"""The schema on SQLite and PostgreSQL: migrations match the models, constraints hold."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from core.db import SessionFactory
from core.models import Base, SetupLink, Staff
from core.orgs import DEFAULT_ORG_ID
from core.settings import to_sync_url


def test_migrations_match_models(database_url: str) -> None:
    engine = create_sync_engine(to_sync_url(database_url))
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == [], "models changed without a migration: run alembic revision --autogenerate"


async def test_external_email_is_unique(sessions: SessionFactory) -> None:
    async with sessions() as session:
        session.add(
            Staff(org_id=DEFAULT_ORG_ID, first_name="A", last_name="B", external_email_1="a@example.com")
        )
        await session.commit()
    async with sessions() as session:
        session.add(
            Staff(org_id=DEFAULT_ORG_ID, first_name="C", last_name="D", external_email_1="a@example.com")
        )
        with pytest.raises(IntegrityError):
            await session.commit()


async def test_datetimes_come_back_aware_utc(sessions: SessionFactory) -> None:
    moment = datetime(2026, 11, 27, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    async with sessions() as session:
        staff = Staff(org_id=DEFAULT_ORG_ID, first_name="A", last_name="B", external_email_1="t@example.com")
        session.add(staff)
        await session.flush()
        link = SetupLink(
            staff_id=staff.id, workflow_id="w", run_id="r", token_hash="setup_x", expires_at=moment
        )
        session.add(link)
        await session.commit()
        link_id = link.id
    async with sessions() as session:
        stored = await session.get(SetupLink, link_id)
        assert stored is not None
        assert stored.expires_at == moment
        assert stored.expires_at.tzinfo is not None
        assert stored.expires_at.utcoffset() == UTC.utcoffset(None)


async def test_deleting_staff_cascades_to_links(sessions: SessionFactory) -> None:
    async with sessions() as session:
        staff = Staff(org_id=DEFAULT_ORG_ID, first_name="A", last_name="B", external_email_1="c@example.com")
        session.add(staff)
        await session.flush()
        session.add(
            SetupLink(
                staff_id=staff.id,
                workflow_id="w",
                run_id=str(uuid.uuid4()),
                token_hash=f"setup_{uuid.uuid4().hex}",
                expires_at=datetime.now(UTC),
            )
        )
        await session.commit()
        await session.delete(staff)
        await session.commit()
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(SetupLink)) == 0


async def test_an_operator_is_always_an_admin(sessions: SessionFactory) -> None:
    async with sessions() as session:
        session.add(
            Staff(
                org_id=DEFAULT_ORG_ID,
                first_name="O",
                last_name="P",
                external_email_1="op@example.com",
                is_operator=True,
                is_admin=False,
            )
        )
        with pytest.raises(IntegrityError):
            await session.commit()
