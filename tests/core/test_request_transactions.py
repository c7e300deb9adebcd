"""The transaction and error boundaries: domain errors live in core/ and are mapped to HTTP in
api/errors.py; transactions are committed by the request dependency (or a CLI command), and
services only flush."""

from __future__ import annotations

import ast
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

import api.errors
import core.errors
from api.main import create_app
from api.routes import staff as staff_routes
from api.services.sessions import Sessions
from core.admin_keys import create_admin_key
from core.db import SessionFactory, create_engine, session_factory
from core.errors import (
    Conflict,
    NotAuthenticated,
    NotFound,
    ServiceUnavailable,
    SsoError,
    TooManyRequests,
)
from core.models import AuditEvent, SsoAccount, Staff
from tests.support.accounts import PUBLIC_URL, browsing, make_person, sign_in
from tests.support.config import make_settings

ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_domain_errors_know_nothing_of_http() -> None:
    imported = _imports(Path(core.errors.__file__))
    assert not {m for m in imported if m.split(".")[0] in {"fastapi", "starlette", "http", "api"}}
    for error in (SsoError, NotFound, Conflict, ServiceUnavailable, NotAuthenticated, TooManyRequests):
        assert not hasattr(error, "status_code"), error


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (SsoError("x"), 400, "bad_request"),
        (NotFound("x"), 404, "not_found"),
        (Conflict("x"), 409, "conflict"),
        (ServiceUnavailable("x"), 503, "unavailable"),
        (NotAuthenticated("x"), 401, "not_authenticated"),
        (TooManyRequests("x", 5), 429, "rate_limited"),
    ],
)
def test_each_domain_error_has_one_http_answer(error: SsoError, status: int, code: str) -> None:
    assert api.errors.http_answer(error) == (status, code)


def test_a_subclass_answers_as_its_parent() -> None:
    class Later(ServiceUnavailable):
        pass

    assert api.errors.http_answer(Later("x")) == (503, "unavailable")


def test_product_code_takes_domain_errors_from_core() -> None:
    """The CLI and the services raise and catch the domain errors of core/, not the HTTP
    layer's module."""
    product = [
        ROOT / "cli.py",
        ROOT / "worker.py",
        *sorted((ROOT / "api").rglob("*.py")),
        *sorted((ROOT / "core").rglob("*.py")),
    ]
    importers = [str(p.relative_to(ROOT)) for p in product if "api.errors" in _imports(p)]
    assert importers == ["api/main.py"], importers


# -- transactions -------------------------------------------------------------------------


def _calls(path: Path, name: str) -> list[str]:
    """`function:line` of every call of a method named `name` in the module."""
    found = []
    tree = ast.parse(path.read_text())
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(function):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == name:
                found.append(f"{function.name}:{node.lineno}")
    return found


def test_services_and_routes_never_commit() -> None:
    """Only the request dependency commits a session; a route or service that needs a write
    durable part-way says so with the boundary's UnitOfWork.commit_now()."""
    for folder in ("api/services", "api/routes"):
        for path in sorted((ROOT / folder).glob("*.py")):
            assert not _calls(path, "commit"), f"{path.relative_to(ROOT)} commits"
    deps = _calls(ROOT / "api" / "deps.py", "commit")
    assert [call.split(":")[0] for call in deps] == ["get_session"], deps


def test_services_commit_part_way_only_where_a_flow_must_see_the_row() -> None:
    """The steps of a service that cannot wait for the end of the request: the setup row a
    flow's first activity reads, the audit of a flow that could not start (kept although an
    error answer follows), and a disable, which must hold before the person's flows are
    ended (their activities write the same rows, and a slow Temporal must not leave a leaver
    able to sign in); a staff batch's rows, which its flow's first chunk reads, and the end
    of the transaction before a pause, resume or cancel waits on the flow that records it in
    the same database; an edit of a person, committed once the flows it needs have started
    (their first activity waits on the row the edit holds until then, and the commit must be
    known to have failed to put a moved leave timer back), and the end of the transaction
    before an email change's confirmation waits on the flow that writes the same row.
    Likewise an organisation's suspension, which holds (sign-in refused) before its flow
    starts ending its people's sessions, and its erasure, whose `erasing` status refuses
    sign-in and must be what the erasure flow's first chunk reads; and an organisation's MFA
    policy, which its rollout's first activity reads. A new one needs as good a reason."""
    found = {
        f"{path.name}:{call.split(':')[0]}"
        for path in (ROOT / "api" / "services").glob("*.py")
        for call in _calls(path, "commit_now")
    }
    assert found == {
        "setup_admin.py:send_email",
        "setup_admin.py:abandon",
        "staff_status.py:disable",
        "staff_batches.py:create",
        "staff_batches.py:control",
        "staff_lifecycle.py:update",
        "email_change.py:confirm",
        "org_suspension.py:suspend",
        "org_erasure.py:erase",
        "org_mfa.py:after_change",
    }


@asynccontextmanager
async def web_app(
    database_url: str, wrap: Any = None
) -> AsyncIterator[tuple[httpx.AsyncBaseTransport, dict[str, str], SessionFactory, Any]]:
    """The web app in-process (no Temporal needed here), optionally behind an ASGI wrapper;
    yields its transport, admin headers, a session factory of its own and the settings."""
    settings = make_settings(database_url=database_url)
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    async with sessions() as session:
        key = await create_admin_key(session, settings, "boundary")
        await session.commit()
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            # A 500 is an answer here, not an exception in the test.
            transport = httpx.ASGITransport(app=wrap(app) if wrap else app, raise_app_exceptions=False)
            yield transport, {"Authorization": f"Bearer {key}"}, sessions, settings
    finally:
        await engine.dispose()


async def _count(sessions: SessionFactory, *where: Any, model: Any = Staff) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def test_the_write_is_committed_before_the_answer_is_sent(database_url: str) -> None:
    """A client that sees 201 must find the record: FastAPI's default scope for a dependency
    with yield would commit only after the response went out."""
    seen_at_answer: list[int] = []
    email = f"kai.{uuid.uuid4().hex[:8]}@example.com"
    holder: dict[str, SessionFactory] = {}

    def wrap(app: Any) -> Any:
        async def spying(scope: Any, receive: Any, send: Any) -> None:
            async def sending(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start" and scope["method"] == "POST":
                    seen_at_answer.append(await _count(holder["sessions"], Staff.external_email_1 == email))
                await send(message)

            await app(scope, receive, sending)

        return spying

    async with web_app(database_url, wrap) as (transport, admin, sessions, _settings):
        holder["sessions"] = sessions
        async with httpx.AsyncClient(transport=transport, base_url=PUBLIC_URL) as http:
            created = await http.post(
                "/api/v1/staff",
                headers=admin,
                json={"first_name": "Kai", "last_name": "Moana", "external_email_1": email},
            )
    assert created.status_code == 201, created.text
    assert seen_at_answer == [1]


async def test_a_request_that_fails_after_writing_leaves_nothing(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The staff record and its audit entry are written, then the answer cannot be built:
    the 500 leaves neither behind."""

    def broken(_staff: object) -> object:
        raise RuntimeError("the answer could not be built")

    email = f"ari.{uuid.uuid4().hex[:8]}@example.com"
    async with web_app(database_url) as (transport, admin, sessions, _settings):
        monkeypatch.setattr(staff_routes.StaffPublic, "model_validate", broken)
        async with httpx.AsyncClient(transport=transport, base_url=PUBLIC_URL) as http:
            failed = await http.post(
                "/api/v1/staff",
                headers=admin,
                json={"first_name": "Ari", "last_name": "Lee", "external_email_1": email},
            )
        assert failed.status_code == 500
        assert await _count(sessions, Staff.external_email_1 == email) == 0
        assert await _count(sessions, AuditEvent.action == "staff.create", model=AuditEvent) == 0


async def test_a_sign_in_that_fails_at_the_end_records_no_success(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The password was right, then the session could not be made: no "sign_in.success" in
    the audit and no last sign-in time for a sign-in that never happened."""
    create = Sessions.create

    async def failing(self: Sessions, purpose: str, *args: Any, **kwargs: Any) -> str:
        if purpose == "signin":
            raise RuntimeError("the session could not be made")
        return await create(self, purpose, *args, **kwargs)

    async with web_app(database_url) as (transport, _admin, sessions, settings):
        person = await make_person(sessions, settings)
        monkeypatch.setattr(Sessions, "create", failing)
        async with browsing(transport) as browser:
            answer = await sign_in(browser, person.email)
            assert answer.status_code == 500
        assert await _count(sessions, AuditEvent.action == "sign_in.success", model=AuditEvent) == 0
        async with sessions() as session:
            account = await session.get(SsoAccount, person.account_id)
            assert account is not None and account.last_sign_in_at is None


async def test_a_refusal_answered_with_an_error_page_keeps_its_audit(database_url: str) -> None:
    """A 401 page is a normal answer: what it recorded is committed."""
    async with web_app(database_url) as (transport, _admin, sessions, settings):
        person = await make_person(sessions, settings)
        async with browsing(transport) as browser:
            answer = await sign_in(browser, person.email, password="not-the-password-at-all")
            assert answer.status_code == 401
        assert (
            await _count(
                sessions,
                AuditEvent.action == "sign_in.failed",
                AuditEvent.target == str(person.staff_id),
                model=AuditEvent,
            )
            == 1
        )


async def test_health_keeps_its_own_answer_when_the_connection_dies_mid_check(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request's commit must not turn a failed database check into a 500."""
    from sqlalchemy.ext.asyncio import AsyncSession

    execute = AsyncSession.execute

    async def dying(self: AsyncSession, *args: Any, **kwargs: Any) -> Any:
        connection = await self.connection()
        await connection.invalidate()  # as when the server drops it mid-query
        return await execute(self, *args, **kwargs)

    async with web_app(sqlite_url) as (transport, _admin, _sessions, _settings):
        monkeypatch.setattr(AsyncSession, "execute", dying)
        async with httpx.AsyncClient(transport=transport, base_url=PUBLIC_URL) as http:
            health = await http.get("/healthz")
    assert health.status_code == 503, health.text
    assert "database" in health.json()["failed"]
