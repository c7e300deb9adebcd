"""End to end: the real stack as a new user runs it (`sso dev`), a real SMTP server, the admin
API, the emailed link, Temporal history.

One stack for the module (`python -m cli dev` with Temporal's dev server on SQLite, the worker
and the web app), an aiosmtpd server collecting what the app sends, a Temporal client that
decodes payloads with the app's own codec. The tests run in order and share that state.
"""

from __future__ import annotations

import asyncio
import html.parser
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from activities.sso_setup import LINK_PURPOSE
from core.codec import EncryptionCodec, data_converter, keyring_from_settings
from core.crypto import token_hash
from tests.conftest import TEST_ENCRYPTION_KEY, TEST_SECRET_KEY, make_settings
from tests.stack import DevStack, ReceivedEmail, SmtpSink, free_ports
from workflows.sso_setup import SetupOutcome

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

SUBJECT = "Welcome to agentOS Single Sign-On"
SUPPORT = "support@agentos.com"
BUTTON = "Set Up Single Sign-On"
TTL = timedelta(minutes=15)
EMAIL_TIMEOUT = 60.0  # seconds for an email to arrive (2 cores, cold worker)


# --------------------------------------------------------------------------- fixtures


class World:
    """What the tests learn as they go: staff created, tokens mailed, runs started."""

    def __init__(self, stack: DevStack, smtp: SmtpSink) -> None:
        self.stack = stack
        self.smtp = smtp
        self.staff: dict[str, dict[str, Any]] = {}
        self.emails_used: set[str] = set()
        self.tokens: list[str] = []
        self.sends = 0


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()


@pytest.fixture(scope="module")
def stack(smtp: SmtpSink, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    data_dir = tmp_path_factory.mktemp("sso-dev-data")
    port, temporal_port, ui_port = free_ports(3)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSO_")}
    env.update({
        "PYTHONUNBUFFERED": "1",
        "SSO_ENV": "development",
        "SSO_EMAIL_BACKEND": "smtp",
        "SSO_SMTP_HOST": "127.0.0.1",
        "SSO_SMTP_PORT": str(smtp.port),
        "SSO_EMAIL_RETRY_INITIAL_INTERVAL": "1",
        "SSO_EMAIL_RETRY_MAX_INTERVAL": "2",
        "SSO_SECRET_KEY": TEST_SECRET_KEY,
        "SSO_ENCRYPTION_KEYS": TEST_ENCRYPTION_KEY,
        "SSO_PUBLIC_URL": f"http://127.0.0.1:{port}",
    })
    dev = DevStack.start(data_dir, env, port=port, temporal_port=temporal_port,
                         ui_port=ui_port, timeout=90)
    try:
        yield dev
    finally:
        report = dev.stop(timeout=20)
        # Kept with pytest's temporary directories for whoever debugs a failure.
        (data_dir / "sso-dev-output.log").write_text(dev.output())
        (data_dir / "stop-report.txt").write_text(repr(report))
        problems = []
        if report.needed_kill:
            problems.append("sso dev did not stop within 20 s of Ctrl-C and was killed")
        if report.left_running:
            problems.append(f"processes left running after sso dev stopped: "
                            f"{report.left_running}")
        if report.returncode != 0 and not report.needed_kill:
            problems.append(f"sso dev exited with {report.returncode} after Ctrl-C")
        if report.open_ports:
            problems.append(f"ports still answering after sso dev stopped: {report.open_ports}")
        if len(report.children) < 3:
            problems.append(f"expected temporal, worker and api as children of sso dev, saw "
                            f"{report.children}")
        assert not problems, "; ".join(problems) + "\n--- output ---\n" + dev.output()[-5000:]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(stack: DevStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=stack.base_url, timeout=30,
        headers={"Authorization": f"Bearer {stack.admin_key}"},
    ) as client:
        yield client


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(stack: DevStack) -> AsyncIterator[httpx.AsyncClient]:
    """No credentials: a person clicking the emailed link."""
    async with httpx.AsyncClient(timeout=30, follow_redirects=False) as client:
        yield client


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def temporal(stack: DevStack) -> Client:
    return await Client.connect(stack.temporal_address,
                                data_converter=data_converter(make_settings()))


@pytest.fixture(scope="module")
def world(stack: DevStack, smtp: SmtpSink) -> World:
    return World(stack, smtp)


# --------------------------------------------------------------------------- helpers


async def eventually(check: Any, timeout: float, interval: float = 0.25,
                     what: str = "condition") -> Any:
    """Poll an async or sync callable until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(interval)


def _uniq() -> str:
    return uuid.uuid4().hex[:8]


async def create_staff(api: httpx.AsyncClient, world: World, label: str,
                       first: str = "Jo") -> dict[str, Any]:
    address = f"{label}.{_uniq()}@example.com"
    response = await api.post("/api/v1/staff", json={
        "first_name": first, "last_name": "Bloggs", "external_email_1": address})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["external_email_1"] == address
    world.staff[label] = body
    world.emails_used.add(address)
    return body


async def send_email(api: httpx.AsyncClient, world: World, staff_id: str) -> dict[str, Any]:
    response = await api.post(f"/api/v1/staff/{staff_id}/sso-email")
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["workflow_id"] == f"sso-setup-{staff_id}"
    assert body["status_url"] == f"/api/v1/staff/{staff_id}/sso"
    world.sends += 1
    return body


async def status(api: httpx.AsyncClient, staff_id: str) -> dict[str, Any]:
    response = await api.get(f"/api/v1/staff/{staff_id}/sso")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def wait_for_email(world: World, to: str, count: int = 1) -> ReceivedEmail:
    """The `count`-th email to `to` (1-based)."""
    def arrived() -> ReceivedEmail | None:
        mine = [m for m in world.smtp.messages if to in m.rcpt_tos]
        return mine[count - 1] if len(mine) >= count else None
    return await eventually(arrived, EMAIL_TIMEOUT, what=f"email #{count} to {to}")  # type: ignore[no-any-return]


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href") or ""
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links.append((" ".join("".join(self._text).split()), self._href))
            self._href = None


def check_setup_email(world: World, received: ReceivedEmail, to: str) -> str:
    """Assert everything a person sees in the email; return the link token."""
    message = received.message
    assert message["Subject"] == SUBJECT
    assert message["To"] == to
    assert received.rcpt_tos == [to]
    assert message.get_content_type() == "multipart/alternative"
    text_part = message.get_body(preferencelist=("plain",))
    html_part = message.get_body(preferencelist=("html",))
    assert text_part is not None and html_part is not None, "needs text and HTML parts"
    text = text_part.get_content()
    html_body = html_part.get_content()

    parser = _Links()
    parser.feed(html_body)
    buttons = [href for label, href in parser.links if label == BUTTON]
    assert len(buttons) == 1, f"one '{BUTTON}' button expected, found {parser.links}"
    href = buttons[0]
    prefix = f"{world.stack.base_url}/sso/setup/"
    assert href.startswith(prefix), href
    token = href.removeprefix(prefix)
    assert re.fullmatch(r"[A-Za-z0-9_\-]{32,128}", token), token
    assert href in text, "the text part carries the same link"

    for body in (text, html_body):
        assert "15 minutes" in body
        assert SUPPORT in body
    assert f"mailto:{SUPPORT}" in html_body
    world.tokens.append(token)
    return token


def link(world: World, token: str) -> str:
    return f"{world.stack.base_url}/sso/setup/{token}"


async def open_link(browser: httpx.AsyncClient, world: World, token: str) -> httpx.Response:
    response = await browser.get(link(world, token))
    assert response.status_code != 500, response.text
    return response


def parse_time(value: str) -> datetime:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --------------------------------------------------------------------------- tests


async def test_healthz(stack: DevStack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        async def healthy() -> dict[str, Any] | None:
            response = await client.get("/healthz")
            return response.json() if response.status_code == 200 else None
        body = await eventually(healthy, 30, what="GET /healthz to be 200")
    assert body["status"] == "ok"
    assert body["checks"] == {"database": "ok", "temporal": "ok"}


async def test_admin_api_creates_staff_and_rejects_bad_requests(
        api: httpx.AsyncClient, world: World, stack: DevStack) -> None:
    staff = await create_staff(api, world, "ana", first="Ana")
    assert uuid.UUID(staff["id"])
    assert staff["first_name"] == "Ana" and staff["last_name"] == "Bloggs"

    fetched = await api.get(f"/api/v1/staff/{staff['id']}")
    assert fetched.status_code == 200 and fetched.json()["id"] == staff["id"]

    # Same External Email 1, in another case: still the same person.
    duplicate = await api.post("/api/v1/staff", json={
        "first_name": "Other", "last_name": "Person",
        "external_email_1": staff["external_email_1"].upper()})
    assert duplicate.status_code == 409, duplicate.text
    assert duplicate.json()["error"] == "conflict"

    bad = await api.post("/api/v1/staff", json={
        "first_name": "", "last_name": "Bloggs", "external_email_1": "not-an-email"})
    assert bad.status_code == 422, bad.text
    detail = bad.json()["detail"]
    fields = {tuple(item["loc"])[-1]: item["msg"] for item in detail}
    assert set(fields) >= {"first_name", "external_email_1"}, detail
    assert all(msg for msg in fields.values())

    missing = await api.post("/api/v1/staff", json={"first_name": "Jo"})
    assert missing.status_code == 422
    missing_fields = {tuple(item["loc"])[-1] for item in missing.json()["detail"]}
    assert missing_fields >= {"last_name", "external_email_1"}

    extra = await api.post("/api/v1/staff", json={
        "first_name": "Jo", "last_name": "B", "external_email_1": f"x{_uniq()}@example.com",
        "is_admin": True})
    assert extra.status_code == 422

    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as anonymous:
        body = {"first_name": "Jo", "last_name": "B", "external_email_1": "jo@example.com"}
        requests = [
            ("POST", "/api/v1/staff", body),
            ("GET", f"/api/v1/staff/{staff['id']}", None),
            ("POST", f"/api/v1/staff/{staff['id']}/sso-email", None),
            ("GET", f"/api/v1/staff/{staff['id']}/sso", None),
            ("DELETE", f"/api/v1/staff/{staff['id']}/sso-email", None),
        ]
        # Kept well under the failed-authentication limit per IP (SSO_AUTH_FAILURE_LIMIT).
        attempts = [({}, r) for r in requests] + [
            ({"Authorization": "Bearer ssoak_wrong"}, requests[0]),
            ({"Authorization": "Bearer ssoak_wrong"}, requests[2]),
            ({"Authorization": f"Basic {stack.admin_key}"}, requests[0]),
            ({"Authorization": f"Bearer {stack.admin_key}x"}, requests[2]),
        ]
        for headers, (method, path, payload) in attempts:
            response = await anonymous.request(method, path, json=payload, headers=headers)
            assert response.status_code == 401, (method, path, headers, response.text)
            assert response.json()["error"] == "not_authenticated"
            assert response.headers.get("www-authenticate") == "Bearer"

    unknown = await api.post(f"/api/v1/staff/{uuid.uuid4()}/sso-email")
    assert unknown.status_code == 404
    not_started = await status(api, staff["id"])
    assert not_started["state"] == "not_started"


async def test_send_email_and_open_link(
        api: httpx.AsyncClient, browser: httpx.AsyncClient, world: World) -> None:
    staff = world.staff["ana"]
    before = datetime.now(UTC)
    sent = await send_email(api, world, staff["id"])
    assert sent["email_delivery"] == "pending"

    received = await wait_for_email(world, staff["external_email_1"])
    token = check_setup_email(world, received, staff["external_email_1"])
    assert "Hello Ana," in received.message.get_body(preferencelist=("plain",)).get_content()

    for attempt in range(2):  # a GET never consumes the link (mail scanners open links too)
        page = await open_link(browser, world, token)
        assert page.status_code == 200, (attempt, page.text)
        assert "agentOS Single Sign-On" in page.text
        assert staff["external_email_1"] in page.text
        assert page.headers["cache-control"] == "no-store"
        assert page.headers["referrer-policy"] == "no-referrer"
        assert page.headers["content-type"].startswith("text/html")

    async def sent_status() -> dict[str, Any] | None:
        body = await status(api, staff["id"])
        return body if body["state"] == "email_sent" else None
    body = await eventually(sent_status, 30, what="state email_sent")
    after = datetime.now(UTC)
    assert body["workflow_id"] == f"sso-setup-{staff['id']}"
    assert body["email_delivery"]["state"] == "sent"
    assert body["email_delivery"]["attempts"] == 1
    assert body["email_delivery"]["last_error"] is None
    expires = parse_time(body["link_expires_at"])
    sent_at = parse_time(body["state_since"])
    slack = timedelta(seconds=10)
    assert before + TTL - slack <= expires <= after + TTL + slack, (before, expires, after)
    assert abs((expires - sent_at) - TTL) < timedelta(seconds=30), (sent_at, expires)
    assert body["requested_by"] == "admin-key:sso-dev"


async def test_resend_supersedes_old_link(
        api: httpx.AsyncClient, browser: httpx.AsyncClient, world: World,
        temporal: Client) -> None:
    staff = world.staff["ana"]
    workflow_id = f"sso-setup-{staff['id']}"
    old_token = world.tokens[-1]
    old_run = (await temporal.get_workflow_handle(workflow_id).describe()).run_id

    await send_email(api, world, staff["id"])
    received = await wait_for_email(world, staff["external_email_1"], count=2)
    new_token = check_setup_email(world, received, staff["external_email_1"])
    assert new_token != old_token

    old_page = await open_link(browser, world, old_token)
    assert old_page.status_code == 410, old_page.text
    assert "no longer valid" in old_page.text
    assert "replaced or cancelled" in old_page.text
    assert old_page.headers["cache-control"] == "no-store"
    new_page = await open_link(browser, world, new_token)
    assert new_page.status_code == 200, new_page.text
    assert staff["external_email_1"] in new_page.text

    old = temporal.get_workflow_handle(workflow_id, run_id=old_run, result_type=SetupOutcome)
    assert (await old.describe()).status == WorkflowExecutionStatus.COMPLETED
    outcome = await asyncio.wait_for(old.result(), timeout=30)
    assert outcome.state == "superseded"
    current = await temporal.get_workflow_handle(workflow_id).describe()
    assert current.run_id != old_run
    assert current.status == WorkflowExecutionStatus.RUNNING

    async def sent_status() -> dict[str, Any] | None:
        body = await status(api, staff["id"])
        return body if body["state"] == "email_sent" else None
    await eventually(sent_status, 30, what="the new setup to be email_sent")


async def test_cancel_invalidates_link(
        api: httpx.AsyncClient, browser: httpx.AsyncClient, world: World,
        temporal: Client) -> None:
    staff = world.staff["ana"]
    token = world.tokens[-1]
    assert (await open_link(browser, world, token)).status_code == 200

    response = await api.delete(f"/api/v1/staff/{staff['id']}/sso-email")
    assert response.status_code == 200, response.text
    assert response.json() == {"workflow_id": f"sso-setup-{staff['id']}", "state": "cancelled"}

    page = await open_link(browser, world, token)
    assert page.status_code == 410, page.text
    assert "no longer valid" in page.text
    body = await status(api, staff["id"])
    assert body["state"] == "cancelled"

    handle = temporal.get_workflow_handle(f"sso-setup-{staff['id']}", result_type=SetupOutcome)
    assert (await asyncio.wait_for(handle.result(), timeout=30)).state == "cancelled"

    again = await api.delete(f"/api/v1/staff/{staff['id']}/sso-email")
    assert again.status_code == 404, again.text
    assert again.json()["error"] == "not_found"


async def test_smtp_outage_is_retried_until_delivered(
        api: httpx.AsyncClient, browser: httpx.AsyncClient, world: World) -> None:
    staff = await create_staff(api, world, "bea", first="Bea")
    world.smtp.stop()
    try:
        await send_email(api, world, staff["id"])

        async def retrying() -> dict[str, Any] | None:
            body = await status(api, staff["id"])
            delivery = body["email_delivery"]
            if delivery and delivery["state"] == "retrying" and delivery["last_error"]:
                return body
            return None
        body = await eventually(retrying, 30, what="email_delivery retrying")
        assert body["state"] == "sending_email"
        assert "SMTP" in body["email_delivery"]["last_error"]
        assert f"127.0.0.1:{world.smtp.port}" in body["email_delivery"]["last_error"]
        assert staff["external_email_1"] not in body["email_delivery"]["last_error"]
        # Retries go on (1 s, then every 2 s) while the server is down.
        await eventually(
            lambda: _attempts_at_least(api, staff["id"], 2), 30, what="a second attempt")
        assert not [m for m in world.smtp.messages if staff["external_email_1"] in m.rcpt_tos]
    finally:
        world.smtp.start()

    received = await wait_for_email(world, staff["external_email_1"])
    token = check_setup_email(world, received, staff["external_email_1"])

    async def sent() -> dict[str, Any] | None:
        body = await status(api, staff["id"])
        return body if body["email_delivery"]["state"] == "sent" else None
    body = await eventually(sent, 30, what="email_delivery sent after SMTP came back")
    assert body["state"] == "email_sent"
    assert body["email_delivery"]["attempts"] >= 2
    assert body["email_delivery"]["last_error"] is None
    page = await open_link(browser, world, token)
    assert page.status_code == 200, page.text
    assert len([m for m in world.smtp.messages
                if staff["external_email_1"] in m.rcpt_tos]) == 1, "exactly one email"


async def _attempts_at_least(api: httpx.AsyncClient, staff_id: str, count: int) -> bool:
    delivery = (await status(api, staff_id))["email_delivery"]
    return bool(delivery) and delivery["attempts"] >= count


async def test_cancel_while_email_is_being_delivered(
        api: httpx.AsyncClient, browser: httpx.AsyncClient, world: World,
        temporal: Client) -> None:
    """An admin cancels while the SMTP server is still taking the message: the flow ends as
    cancelled, the late email's link does not work, and the late delivery must not bring the
    setup back to life."""
    staff = await create_staff(api, world, "cy", first="Cy")
    to = staff["external_email_1"]
    world.smtp.hold()
    try:
        await send_email(api, world, staff["id"])
        await eventually(lambda: any(to in r for r in world.smtp.arrivals), EMAIL_TIMEOUT,
                         what="the SMTP transaction to reach DATA")
        response = await api.delete(f"/api/v1/staff/{staff['id']}/sso-email")
        assert response.status_code == 200, response.text
        assert response.json()["state"] == "cancelled"
    finally:
        world.smtp.release()
    received = await wait_for_email(world, to)
    token = check_setup_email(world, received, to)
    handle = temporal.get_workflow_handle(f"sso-setup-{staff['id']}", result_type=SetupOutcome)
    assert (await asyncio.wait_for(handle.result(), timeout=30)).state == "cancelled"
    # The worker finishes the delivering activity moments after the server took the message.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        assert (await open_link(browser, world, token)).status_code == 410
        body = await status(api, staff["id"])
        assert body["state"] == "cancelled", body
        await asyncio.sleep(0.25)


async def test_unknown_and_oversized_tokens(browser: httpx.AsyncClient, world: World) -> None:
    cases = {
        "unknown": "A" * 43,
        "short": "x",
        "limit": "b" * 128,
        "just over the limit": "c" * 129,
        "long": "d" * 4000,
        "very long": "e" * 12000,
        "odd characters": "%00%ff..%3Cscript%3E",
    }
    for name, token in cases.items():
        response = await browser.get(link(world, token))
        assert response.status_code == 404, (name, response.status_code, response.text[:300])
        assert "We don't recognise this Single Sign-On setup link" in response.text, name
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["referrer-policy"] == "no-referrer"


async def test_history_holds_no_secrets(
        api: httpx.AsyncClient, world: World, temporal: Client) -> None:
    # End every flow still waiting for its link to be used, so all of them are finished.
    for staff in world.staff.values():
        handle = temporal.get_workflow_handle(f"sso-setup-{staff['id']}")
        try:
            running = (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            continue  # never sent
        if running:
            response = await api.delete(f"/api/v1/staff/{staff['id']}/sso-email")
            assert response.status_code == 200, response.text

    async def all_finished() -> list[Any] | None:
        found = [wf async for wf in temporal.list_workflows("WorkflowType='SsoSetup'")]
        done = [wf for wf in found if wf.status != WorkflowExecutionStatus.RUNNING]
        return found if len(found) >= world.sends and len(done) == len(found) else None
    workflows = await eventually(all_finished, 30, interval=0.5,
                                 what=f"{world.sends} finished SsoSetup runs in visibility")
    assert len(workflows) == world.sends

    assert len(world.tokens) == world.sends == 4
    secret = make_settings().secret_key.get_secret_value()
    needles = {t: f"token {t[:6]}…" for t in world.tokens}
    needles.update({token_hash(secret, LINK_PURPOSE, t): f"HMAC of {t[:6]}…"
                    for t in world.tokens})
    needles.update({t.encode().hex(): f"hex of token {t[:6]}…" for t in world.tokens})
    emails = sorted(world.emails_used)
    codec = EncryptionCodec(keyring_from_settings(make_settings()))
    staff_ids = {s["id"] for s in world.staff.values()}

    decrypted_count = 0
    for wf in workflows:
        assert wf.status == WorkflowExecutionStatus.COMPLETED, (wf.id, wf.status)
        for address in emails:
            assert address not in wf.id
            assert address.split("@")[0] not in wf.id
        attributes = {key.name: value for key, value in
                      ((pair.key, pair.value) for pair in wf.typed_search_attributes)}
        assert attributes.get("SsoStaffId") in staff_ids, attributes
        assert attributes.get("SsoStep") in {"superseded", "cancelled"}, attributes
        for value in attributes.values():
            for address in emails:
                assert address not in str(value)

        history = await temporal.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
        raw = [history.to_json().encode()]
        raw += [event.SerializeToString() for event in history.events]
        payloads = [p for event in history.events for p in _payloads(event)]
        decoded = await codec.decode(payloads)
        decrypted_count += sum(1 for p in payloads if p.metadata.get("encoding")
                               == b"binary/encrypted")
        raw += [p.SerializeToString() for p in decoded] + [p.data for p in decoded]
        blob = b"\n".join(raw)
        for needle, label in needles.items():
            assert needle.encode() not in blob, f"{label} in the history of {wf.id}/{wf.run_id}"
        for address in emails:
            assert address.encode() not in blob, f"{address} in the history of {wf.id}"
        # The decode really happened: the activity input (plaintext only after decoding)
        # names the staff member.
        plain = b"\n".join(p.data for p in decoded)
        assert wf.id.removeprefix("sso-setup-").encode() in plain
        assert b"setup_id" in plain
    assert decrypted_count > 0

    # The stores behind both: Temporal's SQLite file and the app's database.
    for name in ("temporal.db", "temporal.db-wal", "sso.db", "sso.db-wal"):
        path = world.stack.data_dir / name
        if not path.exists():
            continue
        content = path.read_bytes()
        for token in world.tokens:
            assert token.encode() not in content, f"a link token is stored in {name}"


def _payloads(message: Message) -> Iterator[Payload]:
    """Every Payload anywhere inside a protobuf message (inputs, results, failures, headers,
    search attributes, user metadata)."""
    if isinstance(message, Payload):
        yield message
        return
    for _field, value in message.ListFields():
        if isinstance(value, Message):
            yield from _payloads(value)
        elif hasattr(value, "values") and callable(value.values):  # map field
            for item in value.values():
                if isinstance(item, Message):
                    yield from _payloads(item)
        elif not isinstance(value, str | bytes | int | float | bool):  # repeated field
            for item in value:
                if isinstance(item, Message):
                    yield from _payloads(item)


async def test_web_log_never_holds_a_token(world: World) -> None:
    output = world.stack.output()
    assert world.tokens
    for token in world.tokens:
        assert token not in output, "a link token is in the sso dev output"
    # The access log is on and shows the redacted path instead, so the check above means
    # something.
    assert "/sso/setup/[redacted]" in output, output[-3000:]
    assert "/sso/setup/A" not in output
    temporal_log = Path(world.stack.data_dir / "temporal.log")
    if temporal_log.exists():
        text = temporal_log.read_text(errors="replace")
        for token in world.tokens:
            assert token not in text, "a link token is in the Temporal server log"
