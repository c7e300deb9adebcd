"""Domain errors, mapped to HTTP in one place."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import exc as db_errors

from core.db import database_unreachable

logger = logging.getLogger(__name__)


class SsoError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(SsoError):
    status_code = 404
    code = "not_found"


class Conflict(SsoError):
    status_code = 409
    code = "conflict"


class ServiceUnavailable(SsoError):
    status_code = 503
    code = "unavailable"


class NotAuthenticated(SsoError):
    status_code = 401
    code = "not_authenticated"


class TooManyRequests(SsoError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


DATABASE_UNAVAILABLE = "We can't complete this right now, please try again in a minute"


def install(app: FastAPI) -> None:
    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error", exc_info=exc)
        return JSONResponse(
            {"error": "internal", "message": "Something went wrong on our side; it has been logged"},
            status_code=500,
        )

    @app.exception_handler(db_errors.SQLAlchemyError)
    async def _database(request: Request, exc: db_errors.SQLAlchemyError) -> Response:
        """An unreachable database is a clear 503 (a page for people, JSON for the API), like
        Temporal being down; anything else is the unexpected error it is."""
        if not database_unreachable(exc):
            return await _unexpected(request, exc)
        logger.warning("database unavailable: %s", type(exc.orig if isinstance(
            exc, db_errors.DBAPIError) else exc).__name__)
        if request.url.path.startswith(("/api/", "/codec")):
            return JSONResponse({"error": ServiceUnavailable.code,
                                 "message": DATABASE_UNAVAILABLE}, status_code=503)
        from api.pages import render_page

        return render_page(request, "setup_problem", status_code=503,
                           title="We can't complete this right now",
                           message=f"{DATABASE_UNAVAILABLE}.")

    @app.exception_handler(SsoError)
    async def _domain_error(_request: Request, exc: SsoError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, NotAuthenticated) else None
        if isinstance(exc, TooManyRequests):
            headers = {"Retry-After": str(exc.retry_after)}
        return JSONResponse(
            {"error": exc.code, "message": exc.message},
            status_code=exc.status_code,
            headers=headers,
        )
