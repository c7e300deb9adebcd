"""The transaction and error boundaries: domain errors live in core/ and are mapped to HTTP in
api/errors.py; transactions are committed by the request dependency (or a CLI command), and
services only flush."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import api.errors
import core.errors
from core.errors import (
    Conflict,
    NotAuthenticated,
    NotFound,
    ServiceUnavailable,
    SsoError,
    TooManyRequests,
)

ROOT = Path(__file__).resolve().parent.parent


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
    for error in (SsoError, NotFound, Conflict, ServiceUnavailable, NotAuthenticated,
                  TooManyRequests):
        assert not hasattr(error, "status_code"), error


@pytest.mark.parametrize(("error", "status", "code"), [
    (SsoError("x"), 400, "bad_request"),
    (NotFound("x"), 404, "not_found"),
    (Conflict("x"), 409, "conflict"),
    (ServiceUnavailable("x"), 503, "unavailable"),
    (NotAuthenticated("x"), 401, "not_authenticated"),
    (TooManyRequests("x", 5), 429, "rate_limited"),
])
def test_each_domain_error_has_one_http_answer(error: SsoError, status: int, code: str) -> None:
    assert api.errors.http_answer(error) == (status, code)


def test_a_subclass_answers_as_its_parent() -> None:
    class Later(ServiceUnavailable):
        pass

    assert api.errors.http_answer(Later("x")) == (503, "unavailable")


def test_product_code_takes_domain_errors_from_core() -> None:
    """The CLI and the services raise and catch the domain errors of core/, not the HTTP
    layer's module."""
    product = [ROOT / "cli.py", ROOT / "worker.py", *sorted((ROOT / "api").rglob("*.py")),
               *sorted((ROOT / "core").rglob("*.py"))]
    importers = [str(p.relative_to(ROOT)) for p in product if "api.errors" in _imports(p)]
    assert importers == ["api/main.py"], importers
