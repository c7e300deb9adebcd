"""The one place the web app decides who a request is from (core.addresses.client_address):
it replaces the ASGI scope's client, which every rate limit, audit event and log line reads
(uvicorn's access log too, whose own proxy-header handling `sso api` turns off)."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from core.addresses import Networks, client_address


class ClientAddressMiddleware:
    def __init__(self, app: ASGIApp, proxies: Networks) -> None:
        self.app = app
        self.proxies = proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            peer = scope.get("client")
            forwarded = [
                value.decode("latin-1")
                for name, value in scope.get("headers", [])
                if name.lower() == b"x-forwarded-for"
            ]
            address = client_address(peer[0] if peer else None, forwarded, self.proxies)
            # In place: the server (its access log) holds this very scope.
            scope["client"] = None if address is None else (str(address), int(peer[1]) if peer else 0)
        await self.app(scope, receive, send)
