"""One id per request: taken from a sane incoming X-Request-ID (so a proxy's id carries
through) or made here, returned in the response header, and on every log line of the request."""

from __future__ import annotations

import re
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.logging import REQUEST_ID

HEADER = "X-Request-ID"
# Anything else could forge log fields or flood them: such ids are replaced, not trusted.
SANE = re.compile(r"[A-Za-z0-9._-]{1,64}")


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name.lower() == b"x-request-id":
            incoming = value.decode("latin-1")
            if SANE.fullmatch(incoming):
                return incoming
            break
    return uuid.uuid4().hex


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope.get("headers", []))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[HEADER] = request_id
            await send(message)

        token = REQUEST_ID.set(request_id)
        # Not reset when the app raises: the 500 handler runs outside this middleware, and
        # its log line should still name the request (each request has its own task anyway).
        await self.app(scope, receive, send_with_id)
        REQUEST_ID.reset(token)
