"""Strict-Transport-Security on every response when the public URL is https, none over plain
http (development), where it would pin a local host name to https. The production-like
compose stack needs an https public URL given to it (production refuses plain http)."""

from __future__ import annotations

from pathlib import Path

import httpx
import yaml

from api.main import STRICT_TRANSPORT_SECURITY
from tests.support.harness import running_app

PATHS = ("/sso/login", "/api/v1/staff", "/docs", "/static/app.css", "/no/such/page", "/healthz")


async def test_https_answers_carry_hsts(sqlite_url: str) -> None:
    async with running_app(sqlite_url) as app:
        assert app.settings.public_url.startswith("https://")
        for path in PATHS:
            response = await app.http.get(path)
            assert response.headers.get("Strict-Transport-Security") == STRICT_TRANSPORT_SECURITY, (
                path,
                response.status_code,
            )
        posted = await app.http.post("/sso/login", data={"email": "a@b.example"})
        assert posted.headers["Strict-Transport-Security"] == STRICT_TRANSPORT_SECURITY
    assert "max-age=63072000" in STRICT_TRANSPORT_SECURITY
    assert "includeSubDomains" in STRICT_TRANSPORT_SECURITY


async def test_plain_http_development_sends_none(sqlite_url: str) -> None:
    async with running_app(sqlite_url, env="development", public_url="http://localhost:8000") as app:
        async with httpx.AsyncClient(transport=app.transport, base_url="http://localhost:8000") as http:
            for path in PATHS:
                assert "Strict-Transport-Security" not in (await http.get(path)).headers


def test_compose_is_given_its_public_url_and_proxies() -> None:
    compose = yaml.safe_load((Path(__file__).resolve().parents[2] / "docker-compose.yml").read_text())
    env = compose["x-sso-env"]
    assert env["SSO_ENV"] == "production"
    # No http default to fall back on: compose refuses to start until it is set.
    assert env["SSO_PUBLIC_URL"].startswith("${SSO_PUBLIC_URL:?"), env["SSO_PUBLIC_URL"]
    assert env["SSO_TRUSTED_PROXIES"] == "${SSO_TRUSTED_PROXIES:-}"
