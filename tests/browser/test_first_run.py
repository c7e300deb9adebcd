"""A newcomer's first ten minutes, twice on the same data directory: `sso dev`'s banner gives
an admin key and "Try it" steps that work on every start, the email arrives in the
development mailbox, and its Set Up Single Sign-On button opens the setup page."""

from __future__ import annotations

import asyncio
import getpass
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser, Route
from sqlalchemy import select

from core.models import AuditEvent
from tests.support.e2e import stack_database
from tests.support.screens import MARKS, VIEWPORTS, Screen
from tests.support.stack import ROOT, DevStack, SmtpSink, running_sso_dev, stack_env

pytestmark = MARKS

MAILBOX_GUARD_SECONDS = 60  # a guard against a hang, never a duration asserted
OUTBOX = {"SSO_EMAIL_BACKEND": "outbox"}  # what `make dev` uses: the mailbox shows the email
WELCOME = "Welcome to agentOS Single Sign-On"


def try_it_steps(banner: str) -> list[list[str]]:
    """The banner's curl commands, each as the shell would split it."""
    section = banner.rsplit("Try it:", 1)[1].split("Press Ctrl-C", 1)[0]
    joined = section.replace("\\\n", " ")
    return [shlex.split(line) for line in joined.splitlines() if line.strip().startswith("curl ")]


def run_curl(command: list[str]) -> tuple[int, dict[str, object]]:
    """Runs a step as printed (with curl), and reads the status and the JSON it answered."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("the banner's steps are curl commands: install curl")
    result = subprocess.run(
        [curl, *command[1:], "-w", "\n%{http_code}"], capture_output=True, text=True, timeout=60, check=True
    )
    body, _, status = result.stdout.rpartition("\n")
    return int(status), json.loads(body)


async def setup_page_from_mailbox(chromium: Browser, stack: DevStack, viewport: str) -> None:
    """Mailbox, the newest welcome email, its button: the setup page, in the same tab."""
    context = await chromium.new_context(
        base_url=stack.base_url, locale="en-GB", timezone_id="UTC", **VIEWPORTS[viewport]
    )
    try:
        screen = Screen(await context.new_page(), viewport, stack.base_url)
        await screen.goto("/dev/mailbox")
        # The worker sends the email after the 202: reload, as a person would, until it is in.
        welcome = screen.page.get_by_role("link", name=WELCOME)
        async with asyncio.timeout(MAILBOX_GUARD_SECONDS):
            while await welcome.count() == 0:
                await asyncio.sleep(0.25)
                await screen.page.reload()
        await screen.check("dev-mailbox", screenshot=False)
        async with screen.navigating():
            await screen.page.get_by_role("link", name=WELCOME).first.click()
        await screen.check("dev-email", screenshot=False)
        assert await screen.page.locator("iframe").count() == 0
        await screen.follow("Set Up Single Sign-On")
        assert re.search(r"/sso/setup/[A-Za-z0-9_-]+$", screen.page.url), screen.page.url
        await screen.check("setup-start", screenshot=False)
        assert await screen.heading() == "agentOS Single Sign-On"
        assert screen.page.url.startswith(stack.base_url)
    finally:
        await context.close()


async def api_docs_render_offline(chromium: Browser, stack: DevStack) -> None:
    """/docs draws the admin API with no other host reachable and no CSP complaint."""
    context = await chromium.new_context(base_url=stack.base_url)
    elsewhere: list[str] = []

    async def local_only(route: Route) -> None:
        if urlsplit(route.request.url).hostname in ("127.0.0.1", "localhost"):
            await route.continue_()
        else:
            elsewhere.append(route.request.url)
            await route.abort("blockedbyclient")

    await context.route("**/*", local_only)
    try:
        page = await context.new_page()
        problems: list[str] = []
        page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
        await page.goto("/docs")
        title = page.locator(".swagger-ui .info .title")
        await title.wait_for(timeout=30_000)
        assert "agentOS Single Sign-On" in await title.inner_text()
        assert await page.locator(".opblock").count() > 5
        assert not elsewhere and not problems, (elsewhere, problems)
    finally:
        await context.close()


async def test_the_banner_steps_work_on_every_run(chromium: Browser, smtp: SmtpSink, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with running_sso_dev(data_dir, smtp.port, OUTBOX) as first:
        create, send = try_it_steps(first.output())
        status, staff = run_curl(create)
        assert status == 201, staff
        status, sent = run_curl([part.replace("<id>", str(staff["id"])) for part in send])
        assert status == 202, sent
        await setup_page_from_mailbox(chromium, first, "desktop")
        await api_docs_render_offline(chromium, first)
        key = first.admin_key

    with running_sso_dev(data_dir, smtp.port, OUTBOX) as second:
        output = second.output()
        # The same key as before, and the banner says so; the first run's key still works.
        assert second.admin_key == key
        assert "Development admin API key (the same as the last run, kept in" in output
        [again] = try_it_steps(output)
        assert f"/api/v1/staff/{staff['id']}/sso-email" in " ".join(again)
        assert "here from an earlier run" in output
        status, sent = run_curl(again)
        assert status == 202, sent  # not 409: the steps work again

        # The same email from the command line: `sso staff send-email`, audited as the CLI.
        cli = subprocess.run(
            [sys.executable, "-m", "cli", "staff", "send-email", "JO@example.com"],
            cwd=ROOT,
            env={
                **stack_env(second.port, None, **OUTBOX),
                "SSO_DATA_DIR": str(data_dir),
                "SSO_TEMPORAL_ADDRESS": second.temporal_address,
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert cli.returncode == 0, cli.stderr
        assert cli.stdout.startswith("Single Sign-On email sent to jo@example.com;"), cli.stdout
        async with stack_database(second) as sessions, sessions() as session:
            requests = (
                await session.scalars(
                    select(AuditEvent.actor).where(
                        AuditEvent.action == "sso_email.requested", AuditEvent.target == str(staff["id"])
                    )
                )
            ).all()
        assert sorted(requests) == sorted(["admin-key:sso-dev"] * 2 + [f"cli:{getpass.getuser()}"]), requests
        await setup_page_from_mailbox(chromium, second, "phone")
