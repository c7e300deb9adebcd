"""Domain errors, mapped to HTTP in one place."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from core.logging import REQUEST_ID

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
    step_outcome = "unavailable"  # in the step latency metric


class NotAuthenticated(SsoError):
    status_code = 401
    code = "not_authenticated"


class TooManyRequests(SsoError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def install(app: FastAPI) -> None:
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
