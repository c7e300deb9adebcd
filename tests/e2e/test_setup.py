"""End to end: the real stack as a new user runs it (`sso dev`), a real SMTP server, the admin
API, the emailed link, the setup pages to an active account (help page, Method 2), Temporal
history.

One stack for the module (`python -m cli dev` with Temporal's dev server on SQLite, the worker
and the web app), an aiosmtpd server collecting what the app sends, a Temporal client that
decodes payloads with the app's own codec. The tests run in order and share that state.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
import pytest_asyncio
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from core.codec import EncryptionCodec, keyring_from_settings
from core.search_attributes import SSO_MFA_STEP, SSO_STAFF_ID
from tests.support.config import make_settings
from tests.support.e2e import (
    EMAIL_TIMEOUT,
    World,
    _leak_finder,
    _payloads,
    _sealed_fields,
    _uniq,
    active_status,
    check_done,
    check_setup_email,
    create_staff,
    eventually,
    link,
    new_browser,
    open_link,
    other_code,
    parse_time,
    press,
    send_email,
    setup_to_mfa,
    status,
    text_of,
    wait_for_email,
)
from tests.support.stack import DevStack
from workflows.setup import SetupOutcome

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

TTL = timedelta(minutes=15)


# --------------------------------------------------------------------------- fixtures


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(stack: DevStack) -> AsyncIterator[httpx.AsyncClient]:
    """No credentials: a person clicking the emailed link."""
    async with httpx.AsyncClient(timeout=30, follow_redirects=False) as client:
        yield client


# --------------------------------------------------------------------------- helpers


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
        encoded = await client.post(f"{stack.base_url}/codec/encode", json=plain, headers={"Origin": origin})
        assert encoded.status_code == 200, encoded.text
        assert encoded.headers["access-control-allow-origin"] == origin
        payload = encoded.json()["payloads"][0]
        assert payload["metadata"]["encoding"] == "YmluYXJ5L2VuY3J5cHRlZA=="  # binary/encrypted
        assert payload["metadata"]["encryption-key-id"]
        decoded = await client.post(
            f"{stack.base_url}/codec/decode", json=encoded.json(), headers={"Origin": origin}
        )
        assert decoded.status_code == 200 and decoded.json() == plain
        preflight = await client.options(
            f"{stack.base_url}/codec/decode",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,x-namespace",
            },
        )
        assert preflight.status_code == 200
        elsewhere = await client.options(
            f"{stack.base_url}/codec/decode",
            headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in elsewhere.headers


async def test_admin_api_creates_staff_and_rejects_bad_requests(
    api: httpx.AsyncClient, world: World, stack: DevStack
) -> None:
    staff = await create_staff(api, world, "ana", first="Ana")
    assert uuid.UUID(staff["id"])
    assert staff["first_name"] == "Ana" and staff["last_name"] == "Bloggs"

    fetched = await api.get(f"/api/v1/staff/{staff['id']}")
    assert fetched.status_code == 200 and fetched.json()["id"] == staff["id"]

    # Same External Email 1, in another case: still the same person.
    duplicate = await api.post(
        "/api/v1/staff",
        json={
            "first_name": "Other",
            "last_name": "Person",
            "external_email_1": staff["external_email_1"].upper(),
        },
    )
    assert duplicate.status_code == 409, duplicate.text
    assert duplicate.json()["error"] == "conflict"

    bad = await api.post(
        "/api/v1/staff", json={"first_name": "", "last_name": "Bloggs", "external_email_1": "not-an-email"}
    )
    assert bad.status_code == 422, bad.text
    detail = bad.json()["detail"]
    fields = {tuple(item["loc"])[-1]: item["msg"] for item in detail}
    assert set(fields) >= {"first_name", "external_email_1"}, detail
    assert all(msg for msg in fields.values())

    missing = await api.post("/api/v1/staff", json={"first_name": "Jo"})
    assert missing.status_code == 422
    missing_fields = {tuple(item["loc"])[-1] for item in missing.json()["detail"]}
    assert missing_fields >= {"last_name", "external_email_1"}

    extra = await api.post(
        "/api/v1/staff",
        json={
            "first_name": "Jo",
            "last_name": "B",
            "external_email_1": f"x{_uniq()}@example.com",
            "role": "superuser",
        },
    )
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
    api: httpx.AsyncClient, browser: httpx.AsyncClient, world: World
) -> None:
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
    api: httpx.AsyncClient, browser: httpx.AsyncClient, world: World, temporal: Client
) -> None:
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
    # Replaced: the newer email is what to use, and nothing else is suggested.
    assert "Use the link in the newer email." in old_page.text
    assert "administrator" not in old_page.text
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
    api: httpx.AsyncClient, browser: httpx.AsyncClient, world: World, temporal: Client
) -> None:
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
    api: httpx.AsyncClient, browser: httpx.AsyncClient, world: World
) -> None:
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
        await eventually(lambda: _attempts_at_least(api, staff["id"], 2), 30, what="a second attempt")
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
    assert len([m for m in world.smtp.messages if staff["external_email_1"] in m.rcpt_tos]) == 1, (
        "exactly one email"
    )


async def _attempts_at_least(api: httpx.AsyncClient, staff_id: str, count: int) -> bool:
    delivery = (await status(api, staff_id))["email_delivery"]
    return bool(delivery) and delivery["attempts"] >= count


async def test_cancel_while_email_is_being_delivered(
    api: httpx.AsyncClient, browser: httpx.AsyncClient, world: World, temporal: Client
) -> None:
    """An admin cancels while the SMTP server is still taking the message: the flow ends as
    cancelled, the late email's link does not work, and the late delivery must not bring the
    setup back to life."""
    staff = await create_staff(api, world, "cy", first="Cy")
    to = staff["external_email_1"]
    world.smtp.hold()
    try:
        await send_email(api, world, staff["id"])
        await eventually(
            lambda: any(to in r for r in world.smtp.arrivals),
            EMAIL_TIMEOUT,
            what="the SMTP transaction to reach DATA",
        )
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


async def test_status_of_active_people(api: httpx.AsyncClient, world: World, temporal: Client) -> None:
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
        assert [(i["id"], i["sso_state"]) for i in listed.json()["items"]] == [(staff_id, "active")]

        handle = temporal.get_workflow_handle(f"sso-setup-{staff_id}", result_type=SetupOutcome)
        assert (await asyncio.wait_for(handle.result(), timeout=30)).state == "active"

        # Skipping MFA started its obligation (docs/flows.md), searchable by its step.
        obligation = temporal.get_workflow_handle(f"mfa-enrollment-{staff_id}")
        if mfa:
            with pytest.raises(RPCError):
                await obligation.describe()
        else:
            described = await obligation.describe()
            assert described.workflow_type == "MfaEnrollment"
            attributes = described.typed_search_attributes
            assert (attributes.get(SSO_MFA_STEP), attributes.get(SSO_STAFF_ID)) == ("waiting", staff_id)

        # Nobody can start a second setup over an active account (and no flow starts).
        again = await api.post(f"/api/v1/staff/{staff_id}/sso-email")
        assert again.status_code == 409, again.text
        assert again.json()["error"] == "conflict"
        assert (await active_status(api, staff_id))["workflow_id"] == body["workflow_id"]


async def test_history_holds_no_secrets(api: httpx.AsyncClient, world: World, temporal: Client) -> None:
    """docs/security.md §26/§27: the full history of every flow this module ran, raw and decoded
    with the codec, the SQLite files behind Temporal and the app, and the logs hold none of
    the secrets a person was mailed, shown or typed. Covers flows that ended early and flows that
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

    # This module's flows: other tests on the shared stack run setups of their own.
    own = {f"sso-setup-{staff['id']}" for staff in world.staff.values()}

    async def all_finished() -> list[Any] | None:
        found = [wf async for wf in temporal.list_workflows("WorkflowType='SsoSetup'") if wf.id in own]
        done = [wf for wf in found if wf.status != WorkflowExecutionStatus.RUNNING]
        return found if len(found) >= world.sends and len(done) == len(found) else None

    workflows = await eventually(
        all_finished, 30, interval=0.5, what=f"{world.sends} finished SsoSetup runs in visibility"
    )
    assert len(workflows) == world.sends

    # Every send mailed a link; two of the flows ran to the end, one of them with MFA.
    assert len(world.tokens) == world.sends >= 6
    assert sorted(world.active.values()) == [False, True], world.active
    kinds = " ".join(world.secrets.values()) + " ".join(world.codes.values())
    for kind in (
        "password typed",
        "TOTP secret",
        "grouped",
        "verification code",
        "TOTP code typed",
        "session cookie",
    ):
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
        attributes = {
            key.name: value for key, value in ((pair.key, pair.value) for pair in wf.typed_search_attributes)
        }
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
        decrypted_count += sum(1 for p in payloads if p.metadata.get("encoding") == b"binary/encrypted")
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
