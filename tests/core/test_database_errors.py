"""An unreachable database is a clear 503 (a page for people, JSON for the admin API), never
a 500; tests/faults/test_database_outage.py shows it on the real stack with PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import httpx

from api.main import create_app
from core.temporal_client import TemporalGateway
from tests.support.config import make_settings

KEY = "ssoak_bootstrap_" + "b" * 40
MESSAGE = "We can't complete this right now, please try again in a minute"


async def test_unreachable_database_answers_503(tmp_path: Path) -> None:
    # A SQLite file in a directory that does not exist: every connection fails.
    settings = make_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/gone/sso.db", bootstrap_admin_key=KEY
    )
    app = create_app(settings, TemporalGateway(settings))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://sso.example.test") as http:
            listed = await http.get("/api/v1/staff", headers={"Authorization": f"Bearer {KEY}"})
            assert listed.status_code == 503, listed.text
            assert listed.json() == {"error": "unavailable", "message": MESSAGE}

            page = await http.get(f"/sso/setup/{'A' * 43}")
            assert page.status_code == 503, page.text
            assert page.headers["content-type"].startswith("text/html")
            assert f"{MESSAGE}." in page.text.replace("&#39;", "'")
            assert page.headers["cache-control"] == "no-store"

            health = await http.get("/healthz")
            assert health.status_code == 503 and "database" in health.json()["failed"]
