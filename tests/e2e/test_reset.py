"""End to end: "Forgot your password?" on the real stack with real SMTP.

A person is set up through the setup pages (email, password, code, MFA skipped), signs in
and out, resets the password with the emailed code, gets the "password was changed" email,
and from then on only the new password works. The reset flow's history holds none of the
passwords or the code, raw or decoded with the app's codec.

The stack, the SMTP sink and the page and email helpers come from tests/support and
tests/e2e/conftest.py (a stack of this module's own).
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import uuid
from typing import Any
from urllib.parse import parse_qs, urljoin

import httpx
import pytest
from temporalio.client import Client, WorkflowExecutionStatus

from core.codec import EncryptionCodec, keyring_from_settings
from core.search_attributes import SSO_STAFF_ID, SSO_STEP
from tests.support.config import make_settings
from tests.support.e2e import (
    World,
    _leak_finder,
    _payloads,
    _sealed_fields,
    active_status,
    check_done,
    eventually,
    follow,
    links_of,
    open_page,
    press,
    setup_to_mfa,
    sign_in,
    submit,
    text_of,
    wait_for_subject,
)
from tests.support.stack import ReceivedEmail
from tests.support.workflows import payloads as encrypted_payloads
from workflows.reset import ResetOutcome

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

BRAND = "agentOS"
RESET_CODE_SUBJECT = f"Your {BRAND} password reset code"
CHANGED_SUBJECT = f"Your {BRAND} password was changed"
REFUSED = "Incorrect email or password"


# --------------------------------------------------------------------------- fixtures


# --------------------------------------------------------------------------- helpers


class Browser:
    """One person's browser (own cookies) that remembers every form it posted."""

    def __init__(self) -> None:
        self.posted: list[tuple[str, dict[str, list[str]], int, str]] = []
        self.client = httpx.AsyncClient(
            timeout=30, follow_redirects=False, event_hooks={"response": [self._record]}
        )

    async def _record(self, response: httpx.Response) -> None:
        request = response.request
        if request.method == "POST":
            form = parse_qs(request.content.decode(), keep_blank_values=True)
            self.posted.append(
                (request.url.path, form, response.status_code, response.headers.get("location", ""))
            )

    def password_set_at_setup(self) -> str:
        """The password the setup page accepted (the post answered by a 303 onwards)."""
        accepted = [
            form["password"][0]
            for path, form, status, location in self.posted
            if path.startswith("/sso/setup") and status == 303 and location == "/sso/setup/confirm"
        ]
        assert len(accepted) == 1, self.posted
        return accepted[0]


def bodies(received: ReceivedEmail) -> tuple[str, str]:
    text_part = received.message.get_body(preferencelist=("plain",))
    html_part = received.message.get_body(preferencelist=("html",))
    assert text_part is not None and html_part is not None, "needs text and HTML parts"
    return text_part.get_content(), html_part.get_content()


def account_id_of(world: World, staff_id: str) -> uuid.UUID:
    """The SSO account's id, read from the app's SQLite database (read-only)."""
    path = world.stack.data_dir / "sso.db"
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT id FROM sso_accounts WHERE staff_id = ?", (uuid.UUID(staff_id).hex,)
        ).fetchall()
    finally:
        db.close()
    assert len(rows) == 1, rows
    return uuid.UUID(str(rows[0][0]))


# --------------------------------------------------------------------------- the test


async def test_forgot_password_resets_with_the_emailed_code(
    api: httpx.AsyncClient, world: World, temporal: Client
) -> None:
    base = world.stack.base_url
    browser = Browser()
    person = browser.client
    try:
        # Set up through the setup pages: email, password, code, MFA skipped.
        staff, mfa = await setup_to_mfa(api, world, person, "rae", first="Rae")
        await check_done(person, await press(person, mfa, "No thanks, I'll set it up later"), staff)
        assert (await active_status(api, staff["id"]))["mfa_enabled"] is False
        to = staff["external_email_1"]
        old_password = browser.password_set_at_setup()
        world.secrets[old_password] = "the password set at setup (old)"

        # Sign in; the account page names them. Then sign out.
        response = await sign_in(person, world, to, old_password)
        account = await follow(person, response, "/sso/account")
        assert "You're signed in" in text_of(account)
        assert "Rae Bloggs" in text_of(account) and to in text_of(account)
        signed_out = await follow(
            person, await submit(person, account, "Sign out"), "/sso/login?notice=signed_out"
        )
        assert "You have signed out." in text_of(signed_out)
        gone = await person.get(f"{base}/sso/account")
        assert gone.status_code == 303 and gone.headers["location"].startswith("/sso/login")

        # "Forgot your password?" → "Reset my password".
        forgot_links = [href for label, href in links_of(signed_out) if label == "Forgot your password?"]
        assert forgot_links == ["/sso/forgot"], links_of(signed_out)
        forgot = await open_page(person, urljoin(str(signed_out.url), forgot_links[0]))
        assert "Forgot your password?" in text_of(forgot)
        reset = await follow(
            person, await submit(person, forgot, "Reset my password", email=to.upper()), "/sso/reset?sent=1"
        )
        assert "Reset your password" in text_of(reset)
        assert "If an account exists for that address, we've sent a code." in text_of(reset)

        # The code from the email.
        received = await wait_for_subject(world, to, RESET_CODE_SUBJECT)
        text, html_body = bodies(received)
        found = re.findall(r"^\s+(\d{6})\s*$", text, re.MULTILINE)
        assert len(found) == 1, text
        code = found[0]
        assert code in html_body
        assert "Hello Rae," in text and "Change Password" in text
        world.codes[code] = "the emailed password reset code"

        # A new password; "Change Password".
        new_password = f"{uuid.uuid4().hex[:10]} harbour kestrel {uuid.uuid4().hex[:8]}"
        world.secrets[new_password] = "the new password typed at reset"
        response = await press(
            person, reset, "Change Password", code=code, password=new_password, confirm=new_password
        )
        login = await follow(person, response, "/sso/login?notice=reset")
        assert "Your password was changed. Sign in with your new password." in text_of(login)
        assert "sso_reset" not in person.cookies

        # The "password was changed" email.
        changed = await wait_for_subject(world, to, CHANGED_SUBJECT)
        text, html_body = bodies(changed)
        assert "Hello Rae," in text and to in text
        for body in (text, html_body):
            assert new_password not in body and old_password not in body
        assert (
            len(
                [
                    m
                    for m in world.smtp.messages
                    if to in m.rcpt_tos and m.message["Subject"] == RESET_CODE_SUBJECT
                ]
            )
            == 1
        )

        # The old password no longer works; the new one does.
        refused = await sign_in(person, world, to, old_password)
        assert refused.status_code == 401, text_of(refused)[:2000]
        assert REFUSED in text_of(refused)
        assert "sso_session" not in person.cookies
        assert (await person.get(f"{base}/sso/account")).status_code == 303
        response = await sign_in(person, world, to, new_password)
        account = await follow(person, response, "/sso/account")
        assert "Rae Bloggs" in text_of(account) and to in text_of(account)
    finally:
        await person.aclose()

    # The reset flow, password-reset-<account id>, finished with "reset".
    account_id = account_id_of(world, staff["id"])
    workflow_id = f"password-reset-{account_id}"
    handle = temporal.get_workflow_handle(workflow_id, result_type=ResetOutcome)
    assert await asyncio.wait_for(handle.result(), timeout=30) == ResetOutcome(state="reset")
    described = await handle.describe()
    assert described.status == WorkflowExecutionStatus.COMPLETED
    attributes = described.typed_search_attributes
    assert (attributes.get(SSO_STEP), attributes.get(SSO_STAFF_ID)) == ("completed", staff["id"]), attributes

    async def listed() -> list[Any] | None:
        found = [
            wf
            async for wf in temporal.list_workflows(
                f"WorkflowType = 'PasswordReset' AND SsoStaffId = '{staff['id']}'"
            )
        ]
        return found or None

    runs = await eventually(listed, 30, what="the reset flow in visibility")
    assert [(wf.id, wf.run_id) for wf in runs] == [(workflow_id, described.run_id)]

    # Its history holds none of the passwords or the code: raw, nor decoded with the codec.
    history = await handle.fetch_history()
    raw = [history.to_json().encode()] + [e.SerializeToString() for e in history.events]
    payloads = [p for event in history.events for p in _payloads(event)]
    assert payloads
    # Search attribute values are plaintext by design (codecs don't touch them).
    coded = [p for event in history.events for _path, p in encrypted_payloads(event)]
    assert coded
    plaintext = [
        (p.metadata, p.data[:80]) for p in coded if p.metadata.get("encoding") != b"binary/encrypted"
    ]
    assert plaintext == []
    undecoded = b"\n".join(raw)
    assert b"sealed1." not in undecoded, "a sealed value outside the codec"
    codec = EncryptionCodec(keyring_from_settings(make_settings()))
    decoded = await codec.decode(payloads)
    plain = b"\n".join(p.data for p in decoded)
    assert str(account_id).encode() in plain and staff["id"].encode() in plain, "the decode really happened"
    leaks = _leak_finder(world)
    blob = b"\n".join(raw + [p.SerializeToString() for p in decoded] + [plain])
    found_leaks = leaks(blob)
    assert not found_leaks, f"{found_leaks} in the history of {workflow_id}"
    for secret in (old_password, new_password):
        assert secret.encode() not in blob
        assert json.dumps(secret).encode() not in blob
    assert re.search(rb"(?<![0-9A-Za-z.])" + code.encode() + rb"(?![0-9A-Za-z])", blob) is None
    sealed = _sealed_fields(decoded)
    assert sealed.get("sealed_password"), sealed
    for name, values in sealed.items():
        for value in values:
            assert value.startswith("sealed1.") and len(value) > 60, (name, value)
