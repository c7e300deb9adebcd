"""The worker is killed (SIGKILL) while a session's back-channel logout is being delivered to
two apps, each holding its first request unanswered: once the worker is back, each app is sent
its logout token again, and every copy an app got is the same valid token (one `jti`), so an
app that drops duplicates is told exactly once."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from core.oidc.backchannel import SessionLogoutInput
from core.oidc.logout import LOGOUT_EVENT
from tests.support.fault_people import RECOVERY, admin_api, eventually
from tests.support.faults import TASK_QUEUE, StackFactory
from workflows.logout import SessionLogoutWorkflow, logout_workflow_id

pytestmark = [pytest.mark.faults]

Received = list[tuple[str, str]]  # (the app's path, its logout token)


@contextmanager
def holding_receiver() -> Iterator[tuple[str, Received, threading.Event]]:
    """Apps' back-channel logout endpoints on one loopback port (an app per path): each holds
    its first request unanswered until the event is set; what they were sent, as it arrives."""
    received: Received = []
    release = threading.Event()
    held: set[str] = set()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            token = parse_qs(self.rfile.read(length).decode())["logout_token"][0]
            with lock:
                received.append((self.path, token))
                first = self.path not in held
                held.add(self.path)
            if first:
                release.wait(60)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", received, release
    finally:
        release.set()
        server.shutdown()


async def test_a_worker_killed_mid_fan_out_tells_each_app_once(fault_stack: StackFactory) -> None:
    # Development: the apps listen over plain http on loopback (registered as internal).
    stack = fault_stack(env="development")
    with holding_receiver() as (base, received, release):
        async with admin_api(stack) as api:
            apps = {}
            for path in ("/crm", "/lettings"):
                registered = await api.post(
                    "/api/v1/clients",
                    json={
                        "client_name": path.strip("/"),
                        "redirect_uris": ["https://app.example.test/callback"],
                        "backchannel_logout_uri": base + path,
                        "internal": True,
                    },
                )
                assert registered.status_code == 201, registered.text
                apps[path] = registered.json()["client_id"]
            jwks = KeySet.import_key_set((await api.get("/oidc/jwks")).json())
        sid, sub = uuid.uuid4().hex, str(uuid.uuid4())
        client = await stack.client()
        handle = await client.start_workflow(
            SessionLogoutWorkflow.run,
            SessionLogoutInput(sid, sub, sorted(apps.values())),
            id=logout_workflow_id(sid),
            task_queue=TASK_QUEUE,
        )
        await eventually(lambda: len(received) == 2, 60, what="both apps holding their first token")
        stack.kill_worker()
        release.set()
        await stack.restart_worker()
        result = await asyncio.wait_for(handle.result(), RECOVERY)
    assert result == dict.fromkeys(apps.values(), "delivered"), stack.logs()
    for path, client_id in apps.items():
        tokens = [token for to, token in received if to == path]
        assert len(tokens) >= 2  # the answer to the first was lost with the worker
        claims = [jwt.decode(token, jwks).claims for token in tokens]
        assert len({c["jti"] for c in claims}) == 1
        for c in claims:
            assert (c["aud"], c["sid"], c["sub"]) == (client_id, sid, sub) and "nonce" not in c
            assert c["events"] == {LOGOUT_EVENT: {}}
