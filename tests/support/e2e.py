"""The end-to-end helpers: what a test learns about the real stack (World), and a person's
steps through the emails and pages (links, forms, codes, status, histories)."""

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
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote_plus, urljoin, urlsplit

import httpx
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload

from core.crypto import LINK_PURPOSE, token_hash
from core.db import SessionFactory, create_engine, session_factory
from tests.support.config import make_settings
from tests.support.stack import DevStack, ReceivedEmail, SmtpSink

SUBJECT = "Welcome to agentOS Single Sign-On"

SUPPORT = "support@agentos.com"

BUTTON = "Set Up Single Sign-On"

CODE_SUBJECT = "Your agentOS verification code"

EMAIL_TIMEOUT = 60.0  # seconds for an email to arrive (2 cores, cold worker)


@asynccontextmanager
async def admin_api(stack: DevStack) -> AsyncIterator[httpx.AsyncClient]:
    """The stack's admin API, with its development admin key."""
    headers = {"Authorization": f"Bearer {stack.admin_key}"}
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30, headers=headers) as client:
        yield client


@asynccontextmanager
async def stack_database(stack: DevStack) -> AsyncIterator[SessionFactory]:
    """The stack's own SQLite database, to read it or to add people who already have an
    account."""
    engine = create_engine(f"sqlite+aiosqlite:///{stack.data_dir / 'sso.db'}")
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


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


async def eventually(check: Any, timeout: float, interval: float = 0.25, what: str = "condition") -> Any:
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


async def create_staff(api: httpx.AsyncClient, world: World, label: str, first: str = "Jo") -> dict[str, Any]:
    address = f"{label}.{_uniq()}@example.com"
    response = await api.post(
        "/api/v1/staff", json={"first_name": first, "last_name": "Bloggs", "external_email_1": address}
    )
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
            self._form = {
                "action": values.get("action") or "",
                "method": (values.get("method") or "get").lower(),
                "fields": {},
                "buttons": [],
            }
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


async def press(person: httpx.AsyncClient, page: httpx.Response, button: str, **typed: str) -> httpx.Response:
    """Fill in the form holding `button` on `page` and press it. Its hidden fields (csrf,
    submission) go back as the page gave them."""
    parser = _Forms()
    parser.feed(page.text)
    forms = [f for f in parser.forms if button in f["buttons"]]
    # The person menu repeats "Sign out" on signed-in pages: the same form twice is one
    # action; two different forms behind one button name would be ambiguous.
    one = bool(forms) and all(f == forms[0] for f in forms)
    assert one, f"one form with a '{button}' button expected: {parser.forms}"
    form = forms[0]
    assert form["method"] == "post", form
    assert form["fields"].get("csrf") and form["fields"].get("submission"), form
    assert set(typed) <= set(form["fields"]), (typed.keys(), form)
    response = await person.post(urljoin(str(page.url), form["action"]), data={**form["fields"], **typed})
    assert response.status_code != 500, response.text
    return response


async def follow(person: httpx.AsyncClient, response: httpx.Response, to: str) -> httpx.Response:
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
        mine = [m for m in world.smtp.messages if to in m.rcpt_tos and m.message["Subject"] == CODE_SUBJECT]
        return mine[count - 1] if len(mine) >= count else None

    received: ReceivedEmail = await eventually(
        arrived, EMAIL_TIMEOUT, what=f"verification code email #{count} to {to}"
    )
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


async def setup_to_mfa(
    api: httpx.AsyncClient, world: World, person: httpx.AsyncClient, label: str, first: str
) -> tuple[dict[str, Any], httpx.Response]:
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
        ({"password": common, "confirm": common}, "This is similar to a commonly used password."),
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
    if resent.status_code == 409:  # within the resend interval, or the first is still being sent
        assert any(
            said in text_of(resent)
            for said in ("You can ask for a new code in", "Your code is still on its way")
        ), text_of(resent)
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
    assert grouped == " ".join(key[i : i + 4] for i in range(0, len(key), 4))
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


async def check_done(person: httpx.AsyncClient, response: httpx.Response, staff: dict[str, Any]) -> None:
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
        re.compile(
            rb"(?<![0-9A-Za-z.])" + re.escape(code.encode()) + rb"(?![0-9A-Za-z])"
        ): f"{label} ({code})"
        for code, label in world.codes.items()
    }

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


async def submit(
    person: httpx.AsyncClient, page: httpx.Response, button: str, **typed: str
) -> httpx.Response:
    """Like `press` above, for forms that carry a csrf field and, when they have
    one, a submission field (sign in, sign out and "Forgot your password?" have none)."""
    parser = _Forms()
    parser.feed(page.text)
    forms = [f for f in parser.forms if button in f["buttons"]]
    # The person menu repeats "Sign out" on signed-in pages: the same form twice is one
    # action; two different forms behind one button name would be ambiguous.
    one = bool(forms) and all(f == forms[0] for f in forms)
    assert one, f"one form with a '{button}' button expected: {parser.forms}"
    form = forms[0]
    assert form["method"] == "post", form
    assert form["fields"].get("csrf"), form
    if "submission" in form["fields"]:
        assert form["fields"]["submission"], form
    assert set(typed) <= set(form["fields"]), (typed.keys(), form)
    response = await person.post(urljoin(str(page.url), form["action"]), data={**form["fields"], **typed})
    assert response.status_code != 500, response.text
    return response


async def open_page(person: httpx.AsyncClient, url: str) -> httpx.Response:
    page = await person.get(url)
    assert page.status_code == 200, (url, page.status_code, text_of(page)[:2000])
    return page


async def sign_in(person: httpx.AsyncClient, world: World, email: str, password: str) -> httpx.Response:
    page = await open_page(person, f"{world.stack.base_url}/sso/login")
    return await submit(person, page, "Sign in", email=email, password=password)


async def wait_for_subject(world: World, to: str, subject: str) -> ReceivedEmail:
    def arrived() -> ReceivedEmail | None:
        mine = [m for m in world.smtp.messages if to in m.rcpt_tos and m.message["Subject"] == subject]
        return mine[0] if mine else None

    received: ReceivedEmail = await eventually(arrived, EMAIL_TIMEOUT, what=f"'{subject}' to {to}")
    assert received.message["To"] == to and received.rcpt_tos == [to]
    return received
