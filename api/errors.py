"""Every error's HTTP answer, in one place: the domain errors of core/errors.py, the
framework's own refusals, an unreachable database, and anything unexpected."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy import exc as db_errors
from starlette.exceptions import HTTPException

from api.pages import UNAVAILABLE_TITLE, problem
from core.db import database_unreachable
from core.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    ServiceUnavailable,
    SsoError,
    TooLarge,
    TooManyRequests,
    Unprocessable,
    UnsupportedMediaType,
)
from core.logging import REQUEST_ID

logger = logging.getLogger(__name__)

PAGE_PREFIXES = ("/sso/", "/admin/")  # server-rendered pages; everything else answers JSON
API_PREFIXES = ("/api/", "/codec", "/metrics", "/healthz")  # machines' addresses: always JSON
NOT_FOUND_TITLE = "Page not found"
NOT_FOUND_MESSAGE = (
    "There is no page at this address. Check the link you followed, or sign in and start from there."
)


def wants_page(request: Request) -> bool:
    """A browser asking for a page (not an API client, not an API address)."""
    if request.url.path.startswith(API_PREFIXES):
        return False
    return "text/html" in request.headers.get("accept", "")


# Each domain error's HTTP answer: status and the `error` code of the JSON body. The first
# class in an error's MRO found here wins, so a subclass answers as its parent unless listed.
HTTP_ANSWERS: dict[type[SsoError], tuple[int, str]] = {
    NotFound: (404, "not_found"),
    Conflict: (409, "conflict"),
    InvalidInput: (422, "invalid"),
    Forbidden: (403, "forbidden"),
    Unprocessable: (422, "invalid_request"),
    ServiceUnavailable: (503, "unavailable"),
    NotAuthenticated: (401, "not_authenticated"),
    TooManyRequests: (429, "rate_limited"),
    TooLarge: (413, "too_large"),
    UnsupportedMediaType: (415, "unsupported_media_type"),
    SsoError: (400, "bad_request"),
}


def http_answer(exc: SsoError) -> tuple[int, str]:
    """The status and `error` code a domain error answers with."""
    for cls in type(exc).__mro__:
        if cls in HTTP_ANSWERS:
            return HTTP_ANSWERS[cls]  # type: ignore[index]
    raise AssertionError("SsoError is always mapped")


def _encodable(value: object) -> object:
    """The errors echo each refused input; JSON (`"\\ud800"`) can carry a lone surrogate that
    UTF-8 can't, which would turn the 422 into a 500. Such characters become "?"."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {_encodable(k): _encodable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_encodable(v) for v in value]
    return value


DATABASE_UNAVAILABLE = "We can't complete this right now, please try again in a minute"
VALIDATION_ERROR = "invalid_request"


def _invalid_message(detail: object) -> str:
    """One sentence naming each refused field and why (the entries stay in `detail`)."""
    problems = []
    for entry in detail if isinstance(detail, list) else []:
        if not isinstance(entry, dict):
            continue
        where = [str(part) for part in entry.get("loc", ()) if part not in ("body", "query", "path")]
        problems.append(f"{'.'.join(where) or 'body'}: {str(entry.get('msg', 'invalid')).rstrip('.')}")
    return "The request is invalid: " + ("; ".join(problems) or "check its fields") + "."


def _document_validation_errors(app: FastAPI) -> None:
    """The 422 body in the OpenAPI document: the usual `error` and `message`, then `detail`."""
    default = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = default()
            component = schema.get("components", {}).get("schemas", {}).get("HTTPValidationError")
            if component is not None:
                component["properties"] = {
                    "error": {"type": "string", "const": VALIDATION_ERROR, "title": "Error"},
                    "message": {"type": "string", "title": "Message"},
                    **component.get("properties", {}),
                }
                component["required"] = ["error", "message", "detail"]
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def install(app: FastAPI) -> None:
    _document_validation_errors(app)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error", exc_info=exc)
        # This handler answers outside the request id middleware: name the request here.
        request_id = REQUEST_ID.get()
        return JSONResponse(
            {"error": "internal", "message": "Something went wrong on our side; it has been logged"},
            status_code=500,
            headers={"X-Request-ID": request_id} if request_id else None,
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError) -> Response:
        """A form field too long or of the wrong type. The API answers 422 with one entry per
        field; a page answers with a page, and never echoes what was typed (it may be a
        password)."""
        if not request.url.path.startswith(PAGE_PREFIXES):
            detail = _encodable(jsonable_encoder(exc.errors()))
            return JSONResponse(
                {"error": VALIDATION_ERROR, "message": _invalid_message(detail), "detail": detail},
                status_code=422,
            )
        return problem(
            request,
            422,
            "Please check what you entered",
            "Something in this form is too long or not what we expected. "
            "Go back, check what you entered and try again.",
        )

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        """The framework's own refusals (a body that can't be parsed, an unknown path, a
        method not allowed) in the same shape as every other error; an unknown address asked
        for by a browser gets a page in the product's look."""
        if exc.status_code == 404 and wants_page(request):
            return problem(request, 404, NOT_FOUND_TITLE, NOT_FOUND_MESSAGE, page="not_found")
        try:
            code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_")
        except ValueError:
            code = f"http_{exc.status_code}"
        return JSONResponse(
            {"error": code, "message": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(db_errors.SQLAlchemyError)
    async def _database(request: Request, exc: db_errors.SQLAlchemyError) -> Response:
        """An unreachable database is a clear 503 (a page for people, JSON for the API), like
        Temporal being down; anything else is the unexpected error it is."""
        if not database_unreachable(exc):
            return await _unexpected(request, exc)
        logger.warning(
            "database unavailable: %s",
            type(exc.orig if isinstance(exc, db_errors.DBAPIError) else exc).__name__,
        )
        if request.url.path.startswith(("/api/", "/codec")):
            return JSONResponse(
                {"error": HTTP_ANSWERS[ServiceUnavailable][1], "message": DATABASE_UNAVAILABLE},
                status_code=503,
            )
        return problem(request, 503, UNAVAILABLE_TITLE, f"{DATABASE_UNAVAILABLE}.")

    @app.exception_handler(SsoError)
    async def _domain_error(_request: Request, exc: SsoError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, NotAuthenticated) else None
        if isinstance(exc, TooManyRequests):
            headers = {"Retry-After": str(exc.retry_after)}
        if isinstance(exc, Unprocessable):
            # As the request validation's 422, which the document describes.
            entry = {"loc": ["body", exc.field], "msg": exc.problem, "type": "value_error"}
            return JSONResponse(
                {"error": VALIDATION_ERROR, "message": _invalid_message([entry]), "detail": [entry]},
                status_code=422,
            )
        status_code, code = http_answer(exc)
        return JSONResponse({"error": code, "message": exc.message}, status_code=status_code, headers=headers)
