"""Request ids and the JSON logs: every response names its request (X-Request-ID), every
log line written while serving it carries that id, and the real access log of `sso api`
(uvicorn) never shows a link token or the Entra callback's query (docs/security.md §27)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from core.logging import REQUEST_ID, JsonFormatter, RedactingFilter
from tests.support.config import TEST_ENCRYPTION_KEY, TEST_SEAL_PUBLIC_KEY, TEST_SECRET_KEY
from tests.support.harness import Stack, running_app
from tests.support.stack import running_sso_api

session_loop = pytest.mark.asyncio(loop_scope="session")

GENERATED = re.compile(r"[0-9a-f]{32}")
NOISY = "tests.request_logging"
LINK_TOKEN = "Zq7Kx2_link-token-" + "A" * 26
OAUTH_CODE = "0.AXoA-oauth-code-never-logged"
OAUTH_STATE = "state-value-never-logged"


# -- in-process: the middleware and the formatter --------------------------------------------


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """Root log lines as the app's handler writes them (JSON, redacted), into memory."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def events(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def messages(stream: io.StringIO, text: str) -> list[dict[str, Any]]:
    return [e for e in events(stream) if e["message"] == text]


@pytest_asyncio.fixture(loop_scope="session")
async def app(sqlite_url: str) -> AsyncIterator[Stack]:
    async with running_app(sqlite_url) as running:
        asgi = running.transport.app  # type: ignore[attr-defined]

        async def noisy() -> dict[str, str]:
            logging.getLogger(NOISY).info("inside the request")
            await asyncio.to_thread(logging.getLogger(NOISY).info, "in a worker thread")
            return {}

        async def broken() -> dict[str, str]:
            raise RuntimeError("boom")

        asgi.add_api_route("/test/noisy", noisy)
        asgi.add_api_route("/test/broken", broken)
        yield running


@session_loop
async def test_every_line_of_a_request_carries_its_generated_id(app: Stack, log_stream: io.StringIO) -> None:
    response = await app.http.get("/test/noisy")
    assert response.status_code == 200
    request_id = response.headers["x-request-id"]
    assert GENERATED.fullmatch(request_id)
    for text in ("inside the request", "in a worker thread"):
        [line] = messages(log_stream, text)
        assert line["request_id"] == request_id
    logging.getLogger(NOISY).info("between requests")
    [outside] = messages(log_stream, "between requests")
    assert "request_id" not in outside
    again = await app.http.get("/test/noisy")
    assert again.headers["x-request-id"] not in (request_id, "")


@session_loop
async def test_a_sane_incoming_id_is_kept(app: Stack, log_stream: io.StringIO) -> None:
    for sent in ("req-1", "Ab9._-z", "a" * 64, "0e3b2f1c-5d6a-4c8e-9b7f-2a1d3c4e5f60"):
        response = await app.http.get("/test/noisy", headers={"X-Request-ID": sent})
        assert response.headers["x-request-id"] == sent
        assert messages(log_stream, "inside the request")[-1]["request_id"] == sent


@session_loop
async def test_an_unsafe_incoming_id_is_replaced(app: Stack, log_stream: io.StringIO) -> None:
    unsafe: list[str | bytes] = [
        "",
        "a" * 65,
        "has space",
        'quote"d',
        "semi;colon",
        "new\\nline",
        '{"level":"error"}',
        "é".encode(),
    ]
    for sent in unsafe:
        response = await app.http.get("/test/noisy", headers={"X-Request-ID": sent})
        assert response.status_code == 200
        made = response.headers["x-request-id"]
        assert GENERATED.fullmatch(made), (sent, made)
        assert messages(log_stream, "inside the request")[-1]["request_id"] == made


@session_loop
async def test_pages_and_errors_carry_the_id(app: Stack, log_stream: io.StringIO) -> None:
    page = await app.http.get("/sso/login", headers={"X-Request-ID": "page-1"})
    assert page.status_code == 200
    assert page.headers["x-request-id"] == "page-1"
    assert page.headers["cache-control"] == "no-store"  # the other headers still apply
    asgi = app.transport.app  # type: ignore[attr-defined]
    failing = httpx.ASGITransport(app=asgi, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=failing, base_url="https://sso.example.test") as http:
            response = await http.get("/test/broken", headers={"X-Request-ID": "err-1"})
    finally:
        # In-process the app runs in this test's own context; a server gives each request one.
        REQUEST_ID.set(None)
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "err-1"
    [line] = messages(log_stream, "unhandled error")
    assert line["request_id"] == "err-1"
    assert "boom" in line["exception"]


# -- the real access log: `sso api` in a process of its own ----------------------------------


def sso_api_env(tmp_path: Path, database_url: str) -> dict[str, str]:
    return {
        "SSO_ENV": "test",
        "SSO_DATABASE_URL": database_url,
        "SSO_DATA_DIR": str(tmp_path),
        "SSO_SECRET_KEY": TEST_SECRET_KEY,
        "SSO_ENCRYPTION_KEYS": TEST_ENCRYPTION_KEY,
        "SSO_SEAL_PUBLIC_KEY": TEST_SEAL_PUBLIC_KEY,
        "SSO_PUBLIC_URL": "https://sso.example.test",
    }


def test_the_access_log_names_requests_and_hides_tokens(tmp_path: Path, sqlite_url: str) -> None:
    with (
        running_sso_api(sso_api_env(tmp_path, sqlite_url)) as (base, lines),
        httpx.Client(base_url=base, trust_env=False, timeout=30) as http,
    ):
        link = http.get(f"/sso/setup/{LINK_TOKEN}", headers={"X-Request-ID": "link-1"})
        password = http.get(f"/sso/setup/{LINK_TOKEN}/password", headers={"X-Request-ID": "link-2"})
        callback = http.get(
            "/sso/entra/callback",
            params={"code": OAUTH_CODE, "state": OAUTH_STATE},
            headers={"X-Request-ID": "callback-1"},
        )
        reset_link = http.get(f"/sso/reset/link/{LINK_TOKEN}", headers={"X-Request-ID": "reset-link-1"})
        made = http.get("/sso/login")
    output = "\n".join(lines)
    assert link.status_code == 404 and password.status_code == 404
    assert callback.status_code == 403 and reset_link.status_code == 410
    assert made.status_code == 200
    assert LINK_TOKEN not in output and OAUTH_CODE not in output and OAUTH_STATE not in output

    access = {}
    for line in output.splitlines():
        if not line.startswith("{"):
            continue
        event = json.loads(line)  # every log line is one JSON event
        if event["logger"] == "uvicorn.access":
            access[event.get("request_id")] = event["message"]
    assert '"GET /sso/setup/[redacted] HTTP/1.1" 404' in access["link-1"]
    assert '"GET /sso/setup/[redacted]/password HTTP/1.1" 404' in access["link-2"]
    assert '"GET /sso/entra/callback?[redacted] HTTP/1.1" 403' in access["callback-1"]
    assert '"GET /sso/reset/link/[redacted] HTTP/1.1" 410' in access["reset-link-1"]
    assert '"GET /sso/login HTTP/1.1" 200' in access[made.headers["x-request-id"]]
