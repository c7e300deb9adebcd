"""Engine and session factory. Transactions commit at the request or activity boundary."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy import event
from sqlalchemy import exc as db_errors
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

SessionFactory = async_sessionmaker[AsyncSession]


def create_engine(async_url: str) -> AsyncEngine:
    kwargs: dict[str, object] = {"pool_pre_ping": True}
    if async_url.startswith("sqlite"):
        # No rollback as a connection goes back to the pool: a session that ends with its
        # transaction open rolls it back itself, and each aiosqlite call is a trip to the
        # connection's thread and back (a tenth of a refresh grant's database calls).
        kwargs = {"connect_args": {"timeout": 30}, "pool_reset_on_return": None}
    engine = create_async_engine(async_url, **kwargs)
    if async_url.startswith("sqlite"):
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    # WAL lets the web app read while the worker writes; foreign keys are off by default.
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
    # SQLite's own lower() folds ASCII only: "Émile" would never match "émile".
    dbapi_connection.create_function("lower", 1, _lower, deterministic=True)  # type: ignore[attr-defined]


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def session_factory(engine: AsyncEngine) -> SessionFactory:
    return async_sessionmaker(engine, expire_on_commit=False)


AfterCommit = Callable[[AsyncSession], Awaitable[None]]
_AFTER_COMMIT = "after_commit"


def after_commit(session: AsyncSession, action: AfterCommit) -> None:
    """Runs `action` once the request's transaction has committed (api/deps.py), with the
    same session for its own work; never when the transaction fails. An action must read
    back what it relies on: a rollback part-way through the request may have undone it."""
    session.info.setdefault(_AFTER_COMMIT, []).append(action)


async def run_after_commit(session: AsyncSession) -> None:
    actions: list[AfterCommit] = session.info.pop(_AFTER_COMMIT, [])
    for action in actions:
        await action(session)


class UnitOfWork:
    """One request's or one command's transaction, owned by its boundary: the request
    dependency (api/deps.py) or the `sso` command commits it when the work succeeded and
    rolls it back when it failed; services only flush.

    `commit_now` makes what was written so far durable part-way, for the few steps that
    cannot wait for the end: a row a flow's first activity reads before the flow starts, a
    single-use session spent before anything else is tried, a refusal kept although an
    error answer follows. It also ends the transaction before a wait on Temporal, whose
    worker writes to the same database (SQLite locks all of it while a write is open)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def commit_now(self) -> None:
        # What waited for the commit (a logout owed to apps) need not wait for the request.
        await self.session.commit()
        await run_after_commit(self.session)


def database_unreachable(exc: BaseException) -> bool:
    """The database could not be reached (refused, dropped, pool exhausted, locked): an error
    that goes away by itself, unlike a bad query or a broken constraint."""
    return isinstance(
        exc, db_errors.OperationalError | db_errors.InterfaceError | db_errors.TimeoutError
    ) or (isinstance(exc, db_errors.DBAPIError) and exc.connection_invalidated)


__all__ = [
    "Engine",
    "SessionFactory",
    "UnitOfWork",
    "create_engine",
    "database_unreachable",
    "session_factory",
]
