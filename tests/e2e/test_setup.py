"""End to end: the real stack as a new user runs it (`sso dev`), a real SMTP server, the admin
API, the emailed link, the setup pages to an active account (help page, Method 2), Temporal
history.

One stack for the module (`python -m cli dev` with Temporal's dev server on SQLite, the worker
and the web app), an aiosmtpd server collecting what the app sends, a Temporal client that
decodes payloads with the app's own codec. The tests run in order and share that state.
"""

from __future__ import annotations

import asyncio
import html
import html.parser
import json
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote_plus, urljoin, urlsplit

import httpx
import pyotp
import pytest
import pytest_asyncio
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from activities.sso_setup import LINK_PURPOSE
from core.codec import EncryptionCodec, data_converter, keyring_from_settings
from core.crypto import token_hash
from tests.conftest import make_settings
from tests.support.stack import DevStack, ReceivedEmail, SmtpSink, running_sso_dev, smtp_sink
from workflows.sso_setup import SetupOutcome

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

SUBJECT = "Welcome to agentOS Single Sign-On"
SUPPORT = "support@agentos.com"
BUTTON = "Set Up Single Sign-On"
CODE_SUBJECT = "Your agentOS verification code"
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
        # Every other secret a person typed or was shown ({value: what it is}); six-digit
        # codes apart, since short digit runs need a bounded search.
        self.secrets: dict[str, str] = {}
        self.codes: dict[str, str] = {}
        self.active: dict[str, bool] = {}  # staff id -> MFA enrolled, for finished setups


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpSink]:
    with smtp_sink() as sink:
        yield sink


@pytest.fixture(scope="module")
def stack(smtp: SmtpSink, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    with running_sso_dev(tmp_path_factory.mktemp("sso-dev-data"), smtp.port) as dev:
        yield dev


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


class _Forms(html.parser.HTMLParser):
    """Every form on a page: its action, its fields with their values, its buttons' text."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []
        self._form: dict[str, Any] | None = None
        self._button: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "form":
            self._form = {"action": values.get("action") or "",
                          "method": (values.get("method") or "get").lower(),
                          "fields": {}, "buttons": []}
        elif self._form is not None and tag == "input" and values.get("name"):
            self._form["fields"][values["name"]] = values.get("value") or ""
        elif self._form is not None and tag == "button":
            self._button = []

    def handle_data(self, data: str) -> None:
        if self._button is not None:
            self._button.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "button" and self._form is not None and self._button is not None:
            self._form["buttons"].append(" ".join("".join(self._button).split()))
            self._button = None
        elif tag == "form" and self._form is not None:
            self.forms.append(self._form)
            self._form = None


def links_of(page: httpx.Response) -> list[tuple[str, str]]:
    parser = _Links()
    parser.feed(page.text)
    return parser.links


def text_of(page: httpx.Response) -> str:
    """The page as a person reads it (entities such as &#39; turned back into characters)."""
    return html.unescape(page.text)


async def press(person: httpx.AsyncClient, page: httpx.Response, button: str,
                **typed: str) -> httpx.Response:
    """Fill in the form holding `button` on `page` and press it. Its hidden fields (csrf,
    submission) go back as the page gave them."""
    parser = _Forms()
    parser.feed(page.text)
    forms = [f for f in parser.forms if button in f["buttons"]]
    assert len(forms) == 1, f"one form with a '{button}' button expected: {parser.forms}"
    form = forms[0]
    assert form["method"] == "post", form
    assert form["fields"].get("csrf") and form["fields"].get("submission"), form
    assert set(typed) <= set(form["fields"]), (typed.keys(), form)
    response = await person.post(urljoin(str(page.url), form["action"]),
                                 data={**form["fields"], **typed})
    assert response.status_code != 500, response.text
    return response


async def follow(person: httpx.AsyncClient, response: httpx.Response,
                 to: str) -> httpx.Response:
    """A 303 to `to` (a path), then the page it leads to."""
    assert response.status_code == 303, (response.status_code, text_of(response)[:2000])
    assert response.headers["location"] == to, response.headers["location"]
    page = await person.get(urljoin(str(response.url), to))
    assert page.status_code == 200, (to, page.status_code, text_of(page)[:2000])
    assert page.headers["cache-control"] == "no-store"
    return page


def new_browser() -> httpx.AsyncClient:
    """A browser of its own (own cookies) for one person."""
    return httpx.AsyncClient(timeout=30, follow_redirects=False)


async def wait_for_code_email(world: World, to: str, count: int = 1) -> str:
    """The code in the `count`-th verification-code email to `to`."""
    def arrived() -> ReceivedEmail | None:
        mine = [m for m in world.smtp.messages
                if to in m.rcpt_tos and m.message["Subject"] == CODE_SUBJECT]
        return mine[count - 1] if len(mine) >= count else None
    received: ReceivedEmail = await eventually(arrived, EMAIL_TIMEOUT,
                                               what=f"verification code email #{count} to {to}")
    assert received.message["To"] == to and received.rcpt_tos == [to]
    text_part = received.message.get_body(preferencelist=("plain",))
    html_part = received.message.get_body(preferencelist=("html",))
    assert text_part is not None and html_part is not None
    text = text_part.get_content()
    found = re.findall(r"^\s+(\d{6})\s*$", text, re.MULTILINE)
    assert len(found) == 1, text
    code = found[0]
    assert code in html_part.get_content()
    assert "Confirm Your Account" in text
    world.codes[code] = f"emailed verification code #{count} to {to}"
    return code


def other_code(avoid: set[str]) -> str:
    while True:
        code = f"{secrets.randbelow(1_000_000):06d}"
        if code not in avoid:
            return code


async def setup_to_mfa(api: httpx.AsyncClient, world: World, person: httpx.AsyncClient,
                       label: str, first: str) -> tuple[dict[str, Any], httpx.Response]:
    """The help page's Method 2, steps 1 to 4: the email, its link, "Forgot your password?",
    a password, the emailed code, "Confirm account". Returns the staff member and the MFA
    page (step 5)."""
    staff = await create_staff(api, world, label, first=first)
    to = staff["external_email_1"]
    await send_email(api, world, staff["id"])
    token = check_setup_email(world, await wait_for_email(world, to), to)

    # Step 3: the agentOS Single Sign-On screen, then "Forgot your password?".
    start = await open_link(person, world, token)
    assert start.status_code == 200, start.text
    assert "agentOS Single Sign-On" in text_of(start) and to in text_of(start)
    forgot = [href for text, href in links_of(start) if text == "Forgot your password?"]
    assert len(forgot) == 1, links_of(start)
    page = await person.get(urljoin(str(start.url), forgot[0]))
    assert page.status_code == 200, page.text
    assert "Set your password" in text_of(page) and to in text_of(page)
    assert page.headers["cache-control"] == "no-store"

    # The admin now sees that the link was opened (the link itself is not used yet).
    async def opened() -> bool:
        return (await status(api, staff["id"]))["state"] == "link_opened"
    await eventually(opened, 30, what="state link_opened")

    # Weak or mistyped passwords are refused with a reason; nothing is set yet.
    short = f"tulip{secrets.token_hex(2)}"
    common = "Password12345678"
    strong = f"{secrets.token_urlsafe(12)} lantern {secrets.token_urlsafe(9)}"
    attempts = [
        ({"password": short, "confirm": short}, "Use at least 15 characters (this has 9)."),
        ({"password": common, "confirm": common},
         "This is similar to a commonly used password."),
        ({"password": strong, "confirm": strong + "x"}, "The two passwords don't match."),
    ]
    for typed, reason in attempts:
        for field_name, value in typed.items():
            world.secrets.setdefault(value, f"a password typed for {label} ({field_name})")
        page = await press(person, page, "Set password", **typed)
        assert page.status_code == 400, (typed, page.status_code, text_of(page)[:2000])
        assert reason in text_of(page), (reason, text_of(page))
        assert 'role="alert"' in page.text
        assert typed["password"] not in page.text, "the page echoes the password back"
        assert "sso_setup" not in person.cookies
        assert (await status(api, staff["id"]))["state"] == "link_opened"

    response = await press(person, page, "Set password", password=strong, confirm=strong)
    confirm = await follow(person, response, "/sso/setup/confirm")
    session_cookie = person.cookies.get("sso_setup")
    assert session_cookie, "the setup session cookie"
    world.secrets[session_cookie] = f"the setup session cookie of {label}"
    csrf_cookie = person.cookies.get("sso_csrf")
    assert csrf_cookie, "the CSRF cookie"
    world.secrets[csrf_cookie] = f"the CSRF cookie of {label}"
    assert token not in str(confirm.url)
    # The link did its job: it can't set a password again. Opened again in this browser it
    # leads on to this browser's step; anywhere else it says it has been used.
    for path in ("", "/password"):
        again = await person.get(link(world, token) + path)
        assert again.status_code == 303, (path, again.status_code, text_of(again)[:2000])
        assert again.headers["location"] == "/sso/setup/confirm"
    async with new_browser() as elsewhere:
        used = await open_link(elsewhere, world, token)
        assert used.status_code == 410 and "already been used" in text_of(used)

    # Step 4: the code comes by email; "Confirm Your Account", "Confirm account".
    assert "Confirm Your Account" in text_of(confirm) and to in text_of(confirm)
    resent = await press(person, confirm, "Send a new code")
    codes = 1
    if resent.status_code == 409:  # within the resend interval: it says when
        assert "You can ask for a new code in" in text_of(resent), text_of(resent)
    else:  # a very slow machine: past the interval, a new code replaced the first
        assert resent.status_code == 200, text_of(resent)
        assert "We've sent you a new code" in text_of(resent)
        codes = 2
    code = await wait_for_code_email(world, to, count=codes)

    async def code_ready() -> httpx.Response | None:
        page = await person.get(f"{world.stack.base_url}/sso/setup/confirm")
        assert page.status_code == 200, text_of(page)
        return page if "We've sent a 6-digit verification code" in text_of(page) else None
    confirm = await eventually(code_ready, 30, what="the confirm page to show the code as sent")

    wrong = other_code({code})
    world.codes[wrong] = f"a wrong verification code typed for {label}"
    refused = await press(person, confirm, "Confirm account", code=wrong)
    assert refused.status_code == 400, text_of(refused)
    assert "Incorrect code, 4 attempts left" in text_of(refused)
    assert f"{wrong}" not in refused.text

    response = await press(person, refused, "Confirm account", code=code)
    mfa = await follow(person, response, "/sso/setup/mfa")

    # Step 5: the authenticator page offers a QR code and a key to type.
    assert "Multi-Factor Authentication" in text_of(mfa)
    assert 'src="data:image/svg+xml;base64,' in mfa.text, "the QR code"
    keys = re.findall(r'<code id="manual-key" class="key">([^<]*)</code>', mfa.text)
    assert len(keys) == 1, mfa.text
    grouped = keys[0]
    key = grouped.replace(" ", "")
    assert re.fullmatch(r"[A-Z2-7]{32}", key), grouped
    assert grouped == " ".join(key[i:i + 4] for i in range(0, len(key), 4))
    uris = [href for _text, href in links_of(mfa) if href.startswith("otpauth://")]
    assert len(uris) == 1, links_of(mfa)
    assert parse_qs(urlsplit(html.unescape(uris[0])).query)["secret"] == [key]
    world.secrets[key] = f"the TOTP secret shown to {label}"
    world.secrets[grouped] = f"the TOTP secret shown to {label}, grouped"
    for label_text in ("Complete Setup", "No thanks, I'll set it up later"):
        assert label_text in text_of(mfa)
    body = await status(api, staff["id"])
    assert body["state"] == "mfa_pending" and body["mfa_enabled"] is False, body
    return staff, mfa


async def check_done(person: httpx.AsyncClient, response: httpx.Response,
                     staff: dict[str, Any]) -> None:
    """Step 6: the success page names the address to sign in with."""
    done = await follow(person, response, "/sso/setup/done")
    assert "Your Single Sign-On is now active" in text_of(done)
    assert staff["external_email_1"] in text_of(done)
    assert "You can now use this email address" in text_of(done)
    # The earlier pages now lead here, and the steps can't be run again.
    again = await person.get(f"{done.url.scheme}://{done.url.netloc.decode()}/sso/setup/mfa")
    assert again.status_code == 303 and again.headers["location"] == "/sso/setup/done"


async def active_status(api: httpx.AsyncClient, staff_id: str) -> dict[str, Any]:
    body = await status(api, staff_id)
    assert body["state"] == "active", body
    return body


# --------------------------------------------------------------------------- tests


async def test_healthz(stack: DevStack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        async def healthy() -> dict[str, Any] | None:
            response = await client.get("/healthz")
            return response.json() if response.status_code == 200 else None
        body = await eventually(healthy, 30, what="GET /healthz to be 200")
    assert body["status"] == "ok"
    assert body["checks"] == {"database": "ok", "temporal": "ok"}


async def test_temporal_ui_decodes_through_the_codec_endpoint(stack: DevStack) -> None:
    """sso dev starts the Temporal UI pointed at the web app's codec endpoint, which the UI's
    origin may call without a key (development only)."""
    async with httpx.AsyncClient(timeout=30) as client:
        async def ui_settings() -> dict[str, Any] | None:
            try:
                response = await client.get(f"http://127.0.0.1:{stack.ui_port}/api/v1/settings")
            except httpx.TransportError:
                return None
            return response.json() if response.status_code == 200 else None
        settings = await eventually(ui_settings, 30, what="the Temporal UI to answer")
        assert settings["Codec"]["Endpoint"] == f"http://localhost:{stack.port}/codec"

        origin = f"http://localhost:{stack.ui_port}"
        plain = {"payloads": [{"metadata": {"encoding": "anNvbi9wbGFpbg=="}, "data": "IngiCg=="}]}
        encoded = await client.post(f"{stack.base_url}/codec/encode", json=plain,
                                    headers={"Origin": origin})
        assert encoded.status_code == 200, encoded.text
        assert encoded.headers["access-control-allow-origin"] == origin
        payload = encoded.json()["payloads"][0]
        assert payload["metadata"]["encoding"] == "YmluYXJ5L2VuY3J5cHRlZA=="  # binary/encrypted
        assert payload["metadata"]["encryption-key-id"]
        decoded = await client.post(f"{stack.base_url}/codec/decode", json=encoded.json(),
                                    headers={"Origin": origin})
        assert decoded.status_code == 200 and decoded.json() == plain
        preflight = await client.options(f"{stack.base_url}/codec/decode", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-namespace"})
        assert preflight.status_code == 200
        elsewhere = await client.options(f"{stack.base_url}/codec/decode", headers={
            "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in elsewhere.headers


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
        "role": "superuser"})
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


async def test_setup_to_active_skipping_mfa(api: httpx.AsyncClient, world: World) -> None:
    """The help page's Method 2 from the email to "now active", MFA skipped."""
    async with new_browser() as person:
        staff, mfa = await setup_to_mfa(api, world, person, "dee", first="Dee")
        response = await press(person, mfa, "No thanks, I'll set it up later")
        await check_done(person, response, staff)
    body = await active_status(api, staff["id"])
    assert body["mfa_enabled"] is False, body
    world.active[staff["id"]] = False


async def test_setup_to_active_with_mfa(api: httpx.AsyncClient, world: World) -> None:
    """The same with an authenticator app: the code from the manual key, "Complete Setup"."""
    async with new_browser() as person:
        staff, mfa = await setup_to_mfa(api, world, person, "eli", first="Eli")
        key = re.findall(r'<code id="manual-key" class="key">([^<]*)</code>', mfa.text)[0]
        totp = pyotp.TOTP(key.replace(" ", ""))

        # A code the app would not show now is refused, and the page says what to check.
        near = {totp.at(time.time() + 30 * step) for step in range(-3, 4)}
        wrong = other_code(near)
        world.codes[wrong] = "a wrong TOTP code typed for eli"
        refused = await press(person, mfa, "Complete Setup", code=wrong)
        assert refused.status_code == 400, text_of(refused)
        assert "That code didn't match" in text_of(refused)
        assert (await status(api, staff["id"]))["state"] == "mfa_pending"

        code = totp.now()
        world.codes[code] = "the TOTP code typed for eli"
        response = await press(person, refused, "Complete Setup", code=code)
        await check_done(person, response, staff)
    body = await active_status(api, staff["id"])
    assert body["mfa_enabled"] is True, body
    world.active[staff["id"]] = True


async def test_status_of_active_people(api: httpx.AsyncClient, world: World,
                                       temporal: Client) -> None:
    assert sorted(world.active.values()) == [False, True], world.active
    for staff_id, mfa in world.active.items():
        body = await active_status(api, staff_id)
        assert body["mfa_enabled"] is mfa, body
        assert body["workflow_id"] == f"sso-setup-{staff_id}"
        assert body["state_since"] is not None
        assert body["code"] is None and body["failure_reason"] is None
        assert body["email_delivery"]["state"] == "sent"

        staff = next(s for s in world.staff.values() if s["id"] == staff_id)
        listed = await api.get("/api/v1/staff", params={"q": staff["external_email_1"]})
        assert listed.status_code == 200, listed.text
        assert [(i["id"], i["sso_state"]) for i in listed.json()["items"]] == [
            (staff_id, "active")]

        handle = temporal.get_workflow_handle(f"sso-setup-{staff_id}", result_type=SetupOutcome)
        assert (await asyncio.wait_for(handle.result(), timeout=30)).state == "active"

        # Nobody can start a second setup over an active account (and no flow starts).
        again = await api.post(f"/api/v1/staff/{staff_id}/sso-email")
        assert again.status_code == 409, again.text
        assert again.json()["error"] == "conflict"
        assert (await active_status(api, staff_id))["workflow_id"] == body["workflow_id"]


async def test_history_holds_no_secrets(
        api: httpx.AsyncClient, world: World, temporal: Client) -> None:
    """SECURITY.md 25/26: the full history of every finished flow, raw and decoded with the
    codec, the SQLite files behind Temporal and the app, and the logs hold none of the
    secrets a person was mailed, shown or typed. Covers flows that ended early and flows that
    ran to an active account, with and without MFA."""
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

    # Every send mailed a link; two of the flows ran to the end, one of them with MFA.
    assert len(world.tokens) == world.sends >= 6
    assert sorted(world.active.values()) == [False, True], world.active
    kinds = " ".join(world.secrets.values()) + " ".join(world.codes.values())
    for kind in ("password typed", "TOTP secret", "grouped", "verification code",
                 "TOTP code typed", "session cookie"):
        assert kind in kinds, f"no {kind} collected: {kinds}"
    leaks = _leak_finder(world)
    emails = sorted(world.emails_used)
    codec = EncryptionCodec(keyring_from_settings(make_settings()))
    staff_ids = {s["id"] for s in world.staff.values()}

    decrypted_count = 0
    finished_active = set()
    for wf in workflows:
        assert wf.status == WorkflowExecutionStatus.COMPLETED, (wf.id, wf.status)
        for address in emails:
            assert address not in wf.id
            assert address.split("@")[0] not in wf.id
        staff_id = wf.id.removeprefix("sso-setup-")
        attributes = {key.name: value for key, value in
                      ((pair.key, pair.value) for pair in wf.typed_search_attributes)}
        assert attributes.get("SsoStaffId") in staff_ids, attributes
        if staff_id in world.active:
            assert attributes.get("SsoStep") == "active", attributes
            finished_active.add(staff_id)
        else:
            assert attributes.get("SsoStep") in {"superseded", "cancelled"}, attributes
        for value in attributes.values():
            for address in emails:
                assert address not in str(value)
            assert not leaks(str(value).encode()), (wf.id, attributes)

        history = await temporal.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
        raw = [history.to_json().encode()]
        raw += [event.SerializeToString() for event in history.events]
        payloads = [p for event in history.events for p in _payloads(event)]
        decoded = await codec.decode(payloads)
        decrypted_count += sum(1 for p in payloads if p.metadata.get("encoding")
                               == b"binary/encrypted")
        undecoded = b"\n".join(raw)
        # The codec hides everything, the sealed boxes included.
        assert b"sealed1." not in undecoded, f"a sealed value outside the codec in {wf.id}"
        raw += [p.SerializeToString() for p in decoded] + [p.data for p in decoded]
        blob = b"\n".join(raw)
        found = leaks(blob)
        assert not found, f"{found} in the history of {wf.id}/{wf.run_id}"
        for address in emails:
            assert address.encode() not in blob, f"{address} in the history of {wf.id}"
        # The decode really happened: the activity input (plaintext only after decoding)
        # names the staff member.
        plain = b"\n".join(p.data for p in decoded)
        assert staff_id.encode() in plain
        assert b"setup_id" in plain

        # What ops could read with the codec key holds the password and the TOTP codes only
        # sealed to the workers' key.
        sealed = _sealed_fields(decoded)
        if staff_id in world.active:
            assert sealed.get("sealed_password"), (wf.id, sealed)
            if world.active[staff_id]:
                assert len(sealed.get("sealed_code", [])) >= 2, (wf.id, sealed)  # wrong, right
            else:
                assert "sealed_code" not in sealed, (wf.id, sealed)
        for name, values in sealed.items():
            for value in values:
                assert value.startswith("sealed1.") and len(value) > 60, (wf.id, name, value)
    assert decrypted_count > 0
    assert finished_active == set(world.active)

    # The stores behind both (Temporal's SQLite file and the app's database, with their
    # journals) and every other file sso dev keeps.
    files = sorted(p for p in world.stack.data_dir.rglob("*") if p.is_file())
    names = {p.name for p in files}
    assert {"temporal.db", "sso.db"} <= names, names
    app_store = _leak_finder(world, link_hmacs=False)  # it looks links up by their HMAC
    for path in files:
        found = (app_store if path.name.startswith("sso.db") else leaks)(path.read_bytes())
        assert not found, f"{found} stored in {path.name}"

    # The logs: everything sso dev printed (web app access log, worker, Temporal).
    found = leaks(world.stack.output().encode())
    assert not found, f"{found} in the sso dev output"


def _leak_finder(world: World, link_hmacs: bool = True) -> Callable[[bytes], list[str]]:
    """A function naming every secret the tests saw that occurs in some bytes.

    Long secrets are looked for as typed, form-encoded and hex-encoded. Six-digit codes are
    looked for as a number of their own: inside a longer run of digits, letters or after a
    decimal point (a timestamp's fraction, a hex digest) they would match by chance."""
    secret = make_settings().secret_key.get_secret_value()
    needles: dict[bytes, str] = {}
    for token in world.tokens:
        needles[token.encode()] = f"link token {token[:6]}…"
        needles[token.encode().hex().encode()] = f"hex of link token {token[:6]}…"
        if link_hmacs:
            needles[token_hash(secret, LINK_PURPOSE, token).encode()] = f"HMAC of {token[:6]}…"
    for value, label in world.secrets.items():
        needles[value.encode()] = label
        needles[quote_plus(value).encode()] = f"{label} (form-encoded)"
        needles[value.encode().hex().encode()] = f"{label} (hex)"
    codes = {
        re.compile(rb"(?<![0-9A-Za-z.])" + re.escape(code.encode()) + rb"(?![0-9A-Za-z])"):
        f"{label} ({code})" for code, label in world.codes.items()}

    def leaks(data: bytes) -> list[str]:
        found = [label for needle, label in needles.items() if needle in data]
        return found + [label for pattern, label in codes.items() if pattern.search(data)]
    return leaks


def _sealed_fields(decoded: list[Payload]) -> dict[str, list[str]]:
    """Every `sealed_*` value in the JSON payloads, by field name."""
    found: dict[str, list[str]] = {}

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str) and key.startswith("sealed_") and isinstance(item, str):
                    found.setdefault(key, []).append(item)
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
    for payload in decoded:
        if payload.metadata.get("encoding") == b"json/plain":
            walk(json.loads(payload.data))
    return found


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
