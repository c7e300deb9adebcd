"""The fault tests' fixtures; the harness they start is tests/support/faults.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.config import POSTGRES_URL
from tests.support.config import postgres_schema as postgres_schema_of
from tests.support.faults import FaultStack, StackFactory
from tests.support.stack import SmtpSink, smtp_sink


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    with smtp_sink() as sink:
        yield sink


@pytest.fixture
def fault_stack(tmp_path: Path, smtp: SmtpSink) -> Iterator[StackFactory]:
    """make(**SSO_settings, database_url=None, worker_proxy=False, email="smtp") -> a started
    FaultStack; everything it started is stopped afterwards (and its logs kept in tmp_path)."""
    stacks: list[FaultStack] = []

    def make(*, email: str = "smtp", **options: Any) -> FaultStack:
        data_dir = tmp_path / f"stack{len(stacks)}"
        data_dir.mkdir()
        stack = FaultStack.create(data_dir, smtp if email == "smtp" else None, **options)
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
    with postgres_schema_of("faults") as found:
        yield found
