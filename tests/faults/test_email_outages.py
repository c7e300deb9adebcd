"""Email providers failing: the SMTP server refusing connections for a while, at the setup
email and at the code; SendGrid answering 429, then 500, then 202. Every email arrives once,
afterwards, and the status and the pages say it is still being tried meanwhile."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.support.e2e import CODE_SUBJECT, SUBJECT, World
from tests.support.fault_people import Person, admin_api, eventually, follow, text_of, words
from tests.support.faults import FaultStack, StackFactory
from tests.support.stack import SmtpSink

pytestmark = [pytest.mark.faults]


async def _attempts(stack: FaultStack, workflow_id: str, activity: str) -> int:
    for pending in await stack.pending_activities(workflow_id):
        if pending.activity_type.name == activity:
            return int(pending.attempt)
    return 0


async def test_smtp_refusing_connections(fault_stack: StackFactory, smtp: SmtpSink) -> None:
    """SMTP down while the setup email is sent, and again while the code is: each arrives once
    when the server is back; meanwhile the admin status says "retrying" with the error and the
    confirm page says the code is still being sent."""
    stack = fault_stack()
    world = World(stack, smtp)  # type: ignore[arg-type]
    async with admin_api(stack) as api:
        person = await Person.create(world, api, "sol", first="Sol")
        try:
            # 1. The setup email, while the server refuses connections.
            smtp.stop()
            await person.send()

            async def retrying() -> dict[str, Any] | None:
                body = await person.status()
                delivery = body["email_delivery"]
                return (
                    body
                    if delivery and delivery["state"] == "retrying" and delivery["attempts"] >= 3
                    else None
                )

            body = await eventually(retrying, 60, what="email_delivery retrying, 3 attempts")
            assert body["state"] == "sending_email"
            error = body["email_delivery"]["last_error"]
            assert error and "SMTP" in error and f"127.0.0.1:{smtp.port}" in error, error
            assert person.to not in error
            assert not person.setup_emails()

            smtp.start()
            token = await person.read_setup_email()
            sent = await person.wait_for_state("email_sent")
            assert sent["email_delivery"]["state"] == "sent"
            assert sent["email_delivery"]["attempts"] >= 3
            assert sent["email_delivery"]["last_error"] is None
            assert token and len(person.setup_emails()) == 1

            # 2. The code, while the server refuses connections again.
            page = await person.password_page()
            smtp.stop()
            response = await person.set_password(page)
            await follow(person.browser, response, "/sso/setup/confirm")
            await eventually(
                lambda: _attempts(stack, person.workflow_id, "send_code"),
                60,
                what="a first attempt to send the code",
            )

            async def still_trying() -> int | None:
                attempts = await _attempts(stack, person.workflow_id, "send_code")
                return attempts if attempts >= 3 else None

            await eventually(still_trying, 60, what="the code email to be tried 3 times")
            confirm = await person.browser.get(f"{stack.base_url}/sso/setup/confirm")
            assert confirm.status_code == 200, text_of(confirm)[:2000]
            shown = words(confirm)
            assert f"We're sending a verification code to {person.to}" in shown, shown
            assert "We've sent a 6-digit verification code" not in shown
            # A code typed now is not counted against the person; the page says why.
            early = await person.confirm(confirm, "123456")
            assert early.status_code == 400, text_of(early)[:2000]
            assert "Your code is still on its way" in text_of(early)
            body = await person.status()
            assert body["state"] == "password_set" and body["code"]["delivery"] == "sending"
            assert not person.code_emails()

            smtp.start()
            code = await person.read_code()
            confirm = await person.confirm_page()
            mfa = await follow(person.browser, await person.confirm(confirm, code), "/sso/setup/mfa")
            await person.finish(mfa)
            assert (await person.status())["state"] == "active"
            assert len(person.setup_emails()) == 1 and len(person.code_emails()) == 1
            audit = stack.audit(person.id)
            assert audit["sso_email.attempt_failed"] >= 3, audit
            assert audit["sso_email.sent"] == 1 and audit["code.issued"] == 1, audit
        finally:
            await person.close()


# --------------------------------------------------------------------------- SendGrid


@dataclass
class ScriptedSendgrid:
    """Stands in for api.sendgrid.com: answers each POST with the next status of `script`,
    then 202."""

    script: list[int]
    url: str = ""
    requests: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, path: str, body: bytes) -> int:
        with self.lock:
            status = self.script[len(self.requests)] if len(self.requests) < len(self.script) else 202
            self.requests.append((path, status, json.loads(body)))
            return status

    def mails(self, to: str, subject: str) -> list[tuple[int, dict[str, Any]]]:
        with self.lock:
            return [
                (status, mail)
                for _path, status, mail in self.requests
                if mail["personalizations"][0]["to"][0]["email"] == to and mail["subject"] == subject
            ]


@pytest.fixture
def sendgrid() -> Iterator[ScriptedSendgrid]:
    state = ScriptedSendgrid(script=[429, 500, 202])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status = state.answer(self.path, body)
            reply = (
                b"" if status == 202 else json.dumps({"errors": [{"message": f"scripted {status}"}]}).encode()
            )
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

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


def _text(mail: dict[str, Any]) -> str:
    return next(c["value"] for c in mail["content"] if c["type"] == "text/plain")


async def test_sendgrid_429_then_500_then_202(
    fault_stack: StackFactory, smtp: SmtpSink, sendgrid: ScriptedSendgrid
) -> None:
    """Three requests, one accepted email; the flow goes on to an active account."""
    stack = fault_stack(
        email="sendgrid",
        email_backend="sendgrid",
        sendgrid_api_host=sendgrid.url,
        sendgrid_api_key="SG.faults-test-key",
    )
    world = World(stack, smtp)  # type: ignore[arg-type]
    async with admin_api(stack) as api:
        person = await Person.create(world, api, "sky", first="Sky")
        try:
            await person.send()
            sent = await person.wait_for_state("email_sent")
            mails = sendgrid.mails(person.to, SUBJECT)
            assert [status for status, _mail in mails] == [429, 500, 202], mails
            assert all(path == "/v3/mail/send" for path, _s, _m in sendgrid.requests)
            assert sent["email_delivery"] == {"state": "sent", "attempts": 3, "last_error": None}, sent
            audit = stack.audit(person.id)
            assert audit["sso_email.attempt_failed"] == 2 and audit["sso_email.sent"] == 1, audit
            errors = [
                row[0]
                for row in stack.query(
                    "SELECT details FROM audit_events WHERE target = :t AND "
                    "action = 'sso_email.attempt_failed' ORDER BY occurred_at",
                    t=person.id,
                )
            ]
            assert [json.loads(d)["error"] if isinstance(d, str) else d["error"] for d in errors] == [
                "SendGrid answered 429",
                "SendGrid answered 500",
            ]

            # The accepted email's link is the one that works; the flow carries on.
            found = re.findall(
                re.escape(f"{stack.base_url}/sso/setup/") + r"([A-Za-z0-9_\-]+)", _text(mails[-1][1])
            )
            person.token = found[0]
            response = await person.set_password(await person.password_page())
            await follow(person.browser, response, "/sso/setup/confirm")

            async def code_mail() -> list[tuple[int, dict[str, Any]]]:
                return sendgrid.mails(person.to, CODE_SUBJECT)

            codes = await eventually(code_mail, 60, what="the code email at SendGrid")
            assert [status for status, _mail in codes] == [202]
            code = re.findall(r"^\s+(\d{6})\s*$", _text(codes[0][1]), re.MULTILINE)[0]
            mfa = await follow(
                person.browser, await person.confirm(await person.confirm_page(), code), "/sso/setup/mfa"
            )
            await person.finish(mfa)
            assert (await person.status())["state"] == "active"
            assert len(sendgrid.requests) == 4, [(p, s) for p, s, _m in sendgrid.requests]
            assert not smtp.messages
        finally:
            await person.close()
