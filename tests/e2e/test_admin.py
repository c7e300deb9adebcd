"""End to end: the first admin, bootstrapped on the command line, runs Method 2 from the staff
page, on the real stack (`sso dev`, real SMTP), and ops find the flows in Temporal.

`sso staff create --admin` creates the admin and sends their setup email; the admin sets up
with MFA (an admin can't skip it), signs in with password and authenticator code, opens
Settings > Staff, and presses Actions > Send Single Sign-On Email on a person's record. The
person receives "Welcome to agentOS Single Sign-On"; the audit log names the admin.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
import uuid
from urllib.parse import urljoin

import httpx
import pyotp
import pytest
from temporalio.client import Client

from tests.support.config import TEST_ENCRYPTION_KEY, TEST_SECRET_KEY
from tests.support.e2e import (
    World,
    _Forms,
    check_setup_email,
    eventually,
    follow,
    press,
    text_of,
    wait_for_code_email,
    wait_for_email,
)
from tests.support.stack import ROOT, DevStack

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

SKIP = "No thanks, I'll set it up later"


def sso(stack: DevStack, *args: str) -> subprocess.CompletedProcess[str]:
    """The `sso` command as an operator runs it beside the stack, from another directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSO_")}
    env.update(
        {
            "SSO_ENV": "development",
            "SSO_DATA_DIR": str(stack.data_dir),
            "SSO_TEMPORAL_ADDRESS": stack.temporal_address,
            "SSO_SECRET_KEY": TEST_SECRET_KEY,
            "SSO_ENCRYPTION_KEYS": TEST_ENCRYPTION_KEY,
            "SSO_PUBLIC_URL": stack.base_url,
            "PYTHONPATH": str(ROOT),
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        env=env,
        cwd=stack.data_dir,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_first_admin_runs_method_2_from_the_staff_page(
    stack: DevStack, world: World, api: httpx.AsyncClient, temporal: Client
) -> None:
    address = f"ada.{uuid.uuid4().hex[:8]}@example.com"
    made = sso(
        stack, "staff", "create", "--first-name", "Ada", "--last-name", "Admin", "--email", address, "--admin"
    )
    assert made.returncode == 0, made.stderr
    assert "Created Ada Admin (admin)" in made.stdout and f"sent to {address}" in made.stdout
    again = sso(stack, "staff", "create", "--first-name", "Ada", "--last-name", "Admin", "--email", address)
    assert again.returncode != 0 and "already exists" in again.stderr

    # The admin's own setup: password, code, then MFA, which an admin can't skip.
    admin = httpx.AsyncClient(base_url=stack.base_url, timeout=30, follow_redirects=False)
    async with admin:
        token = check_setup_email(world, await wait_for_email(world, address), address)
        start = await admin.get(f"/sso/setup/{token}")
        password_page = await admin.get(f"/sso/setup/{token}/password")
        assert start.status_code == 200 and password_page.status_code == 200
        password = f"Admin {uuid.uuid4().hex[:10]} lantern quartz"
        confirm = await follow(
            admin,
            await press(admin, password_page, "Set password", password=password, confirm=password),
            "/sso/setup/confirm",
        )
        code = await wait_for_code_email(world, address)

        async def code_ready() -> httpx.Response | None:
            page = await admin.get("/sso/setup/confirm")
            return page if "We've sent a 6-digit verification code" in text_of(page) else None

        confirm = await eventually(code_ready, 30, what="the code to be sent")
        mfa = await follow(admin, await press(admin, confirm, "Confirm account", code=code), "/sso/setup/mfa")
        assert SKIP not in text_of(mfa)
        assert "As an administrator you must set up MFA" in text_of(mfa)
        parser = _Forms()
        parser.feed(mfa.text)
        skip = await admin.post(
            "/sso/setup/mfa/skip",
            data={"csrf": parser.forms[0]["fields"]["csrf"], "submission": uuid.uuid4().hex},
        )
        assert "Administrators must set up MFA" in text_of(skip), text_of(skip)
        key = re.findall(r'<code id="manual-key" class="key">([^<]*)</code>', mfa.text)[0]
        totp = pyotp.TOTP(key.replace(" ", ""))
        done = await press(admin, mfa, "Complete Setup", code=totp.now())
        await follow(admin, done, "/sso/setup/done")

        # Sign in as a person would: password, then the authenticator code.
        login = await admin.get("/sso/login?return_to=/admin/staff")
        answer = await press_login(admin, login, address, password)
        assert answer.headers["location"] == "/sso/login/mfa"
        mfa_page = await admin.get("/sso/login/mfa")
        code_form = _Forms()
        code_form.feed(mfa_page.text)
        fields = next(f for f in code_form.forms if f["action"] == "/sso/login/mfa")["fields"]
        # The code of the next step (within the accepted drift): the current one was used at
        # setup, and each code is accepted once.
        answer = await admin.post("/sso/login/mfa", data={**fields, "code": totp.at(time.time() + 30)})
        assert answer.status_code == 303 and answer.headers["location"] == "/admin/staff"

        # Settings > Staff: find the person, Actions > Send Single Sign-On Email.
        person = (
            await api.post(
                "/api/v1/staff",
                json={
                    "first_name": "Pat",
                    "last_name": "Person",
                    "external_email_1": f"pat.{uuid.uuid4().hex[:8]}@example.com",
                },
            )
        ).json()
        staff_page = await admin.get(f"/admin/staff?q={person['external_email_1']}")
        assert staff_page.status_code == 200, text_of(staff_page)
        assert "Not set up" in text_of(staff_page)
        sent = await press_action(admin, staff_page, person["id"], "send-email")
        assert sent.status_code == 303
        after = await admin.get(sent.headers["location"])
        assert f"Single Sign-On email sent to {person['external_email_1']}" in text_of(after)

    received = await wait_for_email(world, person["external_email_1"])
    check_setup_email(world, received, person["external_email_1"])
    status = (await api.get(f"/api/v1/staff/{person['id']}/sso")).json()
    assert status["state"] in ("email_sent", "sending_email"), status
    assert status["requested_by"].endswith("(Ada Admin)"), status

    # The audit log names the admin; ops find the flow by step and by staff id.
    with sqlite3.connect(stack.data_dir / "sso.db") as db:
        actors = [
            row[0]
            for row in db.execute(
                "SELECT actor FROM audit_events WHERE action = 'sso_email.requested' AND target = ?",
                (person["id"],),
            )
        ]
    assert len(actors) == 1 and actors[0].endswith("(Ada Admin)"), actors
    found = [
        wf.id
        async for wf in temporal.list_workflows(
            f"WorkflowType = 'SsoSetup' AND SsoStaffId = '{person['id']}'"
        )
    ]
    assert found == [f"sso-setup-{person['id']}"], found
    # Other tests' flows wait on the shared stack too: wait for this one to be listed.
    flow_id = f"sso-setup-{person['id']}"

    async def listed_as_waiting() -> list[str] | None:
        waiting = await _ids(temporal, "SsoStep = 'email_sent'")
        return waiting if flow_id in waiting else None

    await eventually(listed_as_waiting, 30, what="the flow to be listed as email_sent")


async def _ids(temporal: Client, query: str) -> list[str]:
    return [wf.id async for wf in temporal.list_workflows(query)]


async def press_login(
    browser: httpx.AsyncClient, page: httpx.Response, email: str, password: str
) -> httpx.Response:
    parser = _Forms()
    parser.feed(page.text)
    form = next(f for f in parser.forms if f["action"] == "/sso/login")
    answer = await browser.post("/sso/login", data={**form["fields"], "email": email, "password": password})
    assert answer.status_code == 303, text_of(answer)
    return answer


async def press_action(
    browser: httpx.AsyncClient, page: httpx.Response, staff_id: str, action: str
) -> httpx.Response:
    parser = _Forms()
    parser.feed(page.text)
    forms = [f for f in parser.forms if f["action"] == f"/admin/staff/{staff_id}/{action}"]
    assert len(forms) == 1, (action, [f["action"] for f in parser.forms])
    return await browser.post(urljoin(str(page.url), forms[0]["action"]), data=forms[0]["fields"])
