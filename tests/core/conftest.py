"""The email server fixtures (SendGrid and SMTP stand-ins) of the email and metrics tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.support.email_servers import (
    FakeSendgrid,
    RecordedRequest,
    RecordingHandler,
    SmtpServer,
    _authenticator,
    free_port,
)


@pytest.fixture
def sendgrid_server() -> Iterator[FakeSendgrid]:
    state = FakeSendgrid(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            state.requests.append(
                RecordedRequest(
                    method="POST",
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
            )
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(state.response_body)))
            self.end_headers()
            self.wfile.write(state.response_body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def smtp_server(request: pytest.FixtureRequest) -> Iterator[SmtpServer]:
    params: dict[str, Any] = getattr(request, "param", {})
    handler = RecordingHandler(
        mail_reply=params.get("mail"), rcpt_reply=params.get("rcpt"), data_reply=params.get("data")
    )
    logins: list[tuple[bytes, bytes]] = []
    port = free_port()
    kwargs: dict[str, Any] = {}
    if params.get("auth"):
        kwargs = {"authenticator": _authenticator(logins), "auth_require_tls": False}
    controller = Controller(handler, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield SmtpServer(handler=handler, port=port, logins=logins)
    finally:
        controller.stop()
