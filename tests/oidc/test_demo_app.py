"""`sso dev`'s demo app: registered once however often the stack starts (its redirect URI
following the web app's address), served in development only. Signing in through it is
tests/browser/test_demo_app.py, on the real stack."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

import cli
from api.routes import dev_demo
from core.db import SessionFactory
from core.models import AuditEvent, OidcClient
from tests.support.config import make_settings
from tests.support.harness import running_app

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_registering_the_demo_app_again_changes_nothing_until_the_address_moves(
    sessions: SessionFactory, database_url: str
) -> None:
    settings = make_settings(database_url=database_url, env="development", public_url="http://localhost:8000")
    for _ in range(2):
        await cli._register_demo_app(settings)
    async with sessions() as db:
        row = await db.scalar(select(OidcClient).where(OidcClient.client_id == dev_demo.CLIENT_ID))
        assert row is not None and row.secret_hash is None
        assert row.registration["redirect_uris"] == ["http://localhost:8000/demo/callback"]
        assert row.registration["token_endpoint_auth_method"] == "none"
        assert await db.scalar(select(func.count()).select_from(AuditEvent)) == 1
        row.disabled_at = row.created_at
        await db.commit()

    moved = make_settings(database_url=database_url, env="development", public_url="http://localhost:8100")
    await cli._register_demo_app(moved)
    async with sessions() as db:
        row = await db.scalar(select(OidcClient).where(OidcClient.client_id == dev_demo.CLIENT_ID))
        assert row is not None and row.disabled_at is None
        assert row.registration["redirect_uris"] == ["http://localhost:8100/demo/callback"]
        actions = (await db.scalars(select(AuditEvent.action).order_by(AuditEvent.occurred_at))).all()
        assert actions == ["oidc_client.created", "oidc_client.updated"]


@pytest.mark.pages
async def test_the_demo_app_is_served_in_development_only(sqlite_url: str) -> None:
    async with running_app(sqlite_url, env="development") as dev:
        page = await dev.http.get("/demo/")
        assert page.status_code == 200
        assert "Sign in to the demo app with agentOS" in page.text
        assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    async with running_app(sqlite_url) as elsewhere:
        for path in ("/demo/", "/demo/login", "/demo/callback"):
            assert (await elsewhere.http.get(path)).status_code == 404
