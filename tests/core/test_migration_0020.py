"""Migration 0020: a deployment at 0019, with people, accounts and admin keys, upgrades into
one default organisation and keeps working; the settings' Entra tenants become its tenants;
and the downgrade gives 0019 back. On SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from core.admin_keys import PURPOSE, key_scope
from core.crypto import token_hash
from core.db import create_engine, session_factory
from core.migrate import alembic_config
from core.models import Organisation, OrganisationTenant, Staff
from core.orgs import DEFAULT_ORG_ID, DEFAULT_ORG_SLUG
from core.passwords import Hasher
from core.settings import to_sync_url
from tests.support.accounts import PASSWORD, browsing, redirected_to, sign_in
from tests.support.config import POSTGRES_URL, make_settings, postgres_database
from tests.support.harness import running_app

BEFORE = "0019_staff_disable"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
KEY = "ssoak_before-organisations"

STAFF_0019 = sa.table(
    "staff",
    sa.column("id", sa.Uuid()),
    sa.column("first_name", sa.String()),
    sa.column("last_name", sa.String()),
    sa.column("external_email_1", sa.String()),
    sa.column("is_admin", sa.Boolean()),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("updated_at", sa.DateTime(timezone=True)),
)
ACCOUNTS_0019 = sa.table(
    "sso_accounts",
    sa.column("id", sa.Uuid()),
    sa.column("staff_id", sa.Uuid()),
    sa.column("login_email", sa.String()),
    sa.column("password_hash", sa.Text()),
    sa.column("status", sa.String()),
    sa.column("failed_sign_ins", sa.Integer()),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("updated_at", sa.DateTime(timezone=True)),
)
KEYS_0019 = sa.table(
    "admin_api_keys",
    sa.column("id", sa.Uuid()),
    sa.column("name", sa.String()),
    sa.column("key_hash", sa.String()),
    sa.column("created_at", sa.DateTime(timezone=True)),
)


@pytest.fixture(params=["sqlite", "postgres"])
def blank_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database, not migrated."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'before.db'}"
        return
    if not POSTGRES_URL:
        pytest.skip("set SSO_TEST_DATABASE_URL to run the database tests on PostgreSQL too")
    with postgres_database() as url:
        yield url


def _at_0019_with_people(url: str, email: str, password_hash: str, secret_key: str) -> uuid.UUID:
    config = alembic_config(to_sync_url(url))
    command.upgrade(config, BEFORE)
    staff_id, now = uuid.uuid4(), datetime.now(UTC)
    engine = sa.create_engine(to_sync_url(url))
    with engine.begin() as conn:
        conn.execute(
            STAFF_0019.insert().values(
                id=staff_id,
                first_name="Olive",
                last_name="Older",
                external_email_1=email,
                is_admin=True,
                created_at=now,
                updated_at=now,
            )
        )
        conn.execute(
            ACCOUNTS_0019.insert().values(
                id=uuid.uuid4(),
                staff_id=staff_id,
                login_email=email,
                password_hash=password_hash,
                status="active",
                failed_sign_ins=0,
                created_at=now,
                updated_at=now,
            )
        )
        conn.execute(
            KEYS_0019.insert().values(
                id=uuid.uuid4(), name="ops", key_hash=token_hash(secret_key, PURPOSE, KEY), created_at=now
            )
        )
    engine.dispose()
    return staff_id


async def test_a_deployment_at_0019_upgrades_into_the_default_organisation(
    blank_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(database_url=blank_url)
    email = "olive.older@example.com"
    password_hash = Hasher(
        settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism
    ).hash(PASSWORD)
    staff_id = _at_0019_with_people(blank_url, email, password_hash, settings.secret_key.get_secret_value())
    # The tenant the deployment's settings allowed moves into the default organisation.
    monkeypatch.setenv("SSO_ENTRA_TENANT_ID", TENANT.upper())
    command.upgrade(alembic_config(to_sync_url(blank_url)), "head")

    engine = create_engine(blank_url)
    try:
        async with session_factory(engine)() as session:
            org = await session.get(Organisation, DEFAULT_ORG_ID)
            assert org is not None and org.slug == DEFAULT_ORG_SLUG and org.status == "active"
            assert org.mfa_policy is None and org.sender_name is None
            staff = await session.get(Staff, staff_id)
            assert staff is not None and staff.org_id == DEFAULT_ORG_ID and not staff.is_operator
            tenant = await session.get(OrganisationTenant, TENANT)
            assert tenant is not None and tenant.org_id == DEFAULT_ORG_ID
            # Keys made before organisations existed could do everything: they still can.
            scope = await key_scope(session, settings, KEY)
            assert scope is not None and scope.actor == "admin-key:ops" and scope.is_operator
    finally:
        await engine.dispose()

    async with running_app(blank_url) as stack:
        async with browsing(stack.transport) as browser:
            assert redirected_to(await sign_in(browser, email), "/sso/account")
        listed = await stack.http.get("/api/v1/staff", headers=stack.admin)
        assert [(i["id"], i["org_id"]) for i in listed.json()["items"]] == [
            (str(staff_id), str(DEFAULT_ORG_ID))
        ]

    command.downgrade(alembic_config(to_sync_url(blank_url)), BEFORE)
    engine_sync = sa.create_engine(to_sync_url(blank_url))
    with engine_sync.connect() as conn:
        tables = sa.inspect(conn).get_table_names()
        columns = {c["name"] for c in sa.inspect(conn).get_columns("staff")}
        kept = conn.execute(sa.select(STAFF_0019.c.external_email_1)).scalars().all()
    engine_sync.dispose()
    assert "organisations" not in tables and "organisation_tenants" not in tables
    assert "org_id" not in columns and "is_operator" not in columns
    assert kept == [email]


async def test_tenants_named_in_the_settings_join_the_default_organisation_at_start(
    database_url: str,
) -> None:
    """Deployments (tests, `sso dev`) that still name tenants in the settings keep working:
    the web app adopts them at start, once; a tenant an organisation owns stays its own."""
    other = "0f0f0f0f-1111-2222-3333-444444444444"
    async with running_app(database_url) as stack:
        created = await stack.http.post(
            "/api/v1/orgs",
            json={"name": "Owner", "slug": "owner", "entra_tenant_ids": [other]},
            headers=stack.admin,
        )
        assert created.status_code == 201, created.text
    for _ in range(2):
        async with running_app(database_url, entra_allowed_tenants=[TENANT, other]) as stack:
            async with stack.sessions() as session:
                owners = {
                    t.tenant_id: t.org_id
                    for t in (await session.scalars(sa.select(OrganisationTenant))).all()
                }
    assert owners == {TENANT: DEFAULT_ORG_ID, other: uuid.UUID(created.json()["id"])}
