"""The fault tests' fixtures; the harness they start is tests/support/faults.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import text

from core.settings import to_sync_url
from tests.support.config import POSTGRES_URL
from tests.support.faults import FaultStack, StackFactory, TcpProxy, stack_env
from tests.support.stack import SmtpSink, free_ports


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.start()
    try:
        yield sink
    finally:
        sink.release()
        if sink.running:
            sink.stop()


@pytest.fixture
def fault_stack(tmp_path: Path, smtp: SmtpSink) -> Iterator[StackFactory]:
    """make(**SSO_settings, database_url=None, worker_proxy=False, email="smtp") -> a started
    FaultStack; everything it started is stopped afterwards (and its logs kept in tmp_path)."""
    stacks: list[FaultStack] = []

    def make(
        *,
        database_url: str | None = None,
        direct_database_url: str | None = None,
        worker_proxy: bool = False,
        email: str = "smtp",
        **settings: str,
    ) -> FaultStack:
        data_dir = tmp_path / f"stack{len(stacks)}"
        data_dir.mkdir()
        api_port, temporal_port, ui_port = free_ports(3)
        url = database_url or f"sqlite+aiosqlite:///{data_dir / 'sso.db'}"
        env = stack_env(
            data_dir,
            api_port,
            temporal_port,
            smtp.port if email == "smtp" else None,
            url,
            **{f"SSO_{k.upper()}": v for k, v in settings.items()},
        )
        proxy = TcpProxy(temporal_port).start() if worker_proxy else None
        stack = FaultStack(
            data_dir=data_dir,
            env=env,
            api_port=api_port,
            temporal_port=temporal_port,
            ui_port=ui_port,
            database_url=url,
            direct_database_url=to_sync_url(direct_database_url or url),
            smtp=smtp if email == "smtp" else None,
            worker_proxy=proxy,
        )
        stacks.append(stack)
        stack.start()
        return stack

    try:
        yield make
    finally:
        for stack in stacks:
            stack.stop()


@pytest.fixture
def postgres_schema() -> Iterator[tuple[str, str]]:
    """A fresh, empty schema in SSO_TEST_DATABASE_URL: (schema name, its URL)."""
    if not POSTGRES_URL:
        pytest.skip(
            "the database fault test needs PostgreSQL: set SSO_TEST_DATABASE_URL, e.g. "
            "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        )
    schema = f"faults_{uuid.uuid4().hex[:12]}"
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
