"""The browser suite's fixtures: the shared `sso dev` stack (real Temporal, worker, web app,
the Microsoft Entra stand-in, an SMTP sink; tests/conftest.py), Debian's Chromium driven by
Playwright, and a fresh browser context per test at each viewport."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser, Route, async_playwright

from core.db import SessionFactory
from tests.support.e2e import World, admin_api, stack_database
from tests.support.screens import CHROMIUM, CHROMIUM_ARGS, VIEWPORTS, Screen
from tests.support.stack import DevStack, SmtpSink

LOCAL_HOSTS = {"127.0.0.1", "localhost"}


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="package")
def smtp(shared_smtp: SmtpSink) -> SmtpSink:
    return shared_smtp


@pytest.fixture(scope="package")
def stack(shared_stack: DevStack) -> DevStack:
    return shared_stack


# The rest follow whichever `stack` a test gets (a module may bring its own).


@pytest.fixture
def world(stack: DevStack, smtp: SmtpSink) -> World:
    return World(stack, smtp)


@pytest_asyncio.fixture(loop_scope="session")
async def api(stack: DevStack) -> AsyncIterator[httpx.AsyncClient]:
    async with admin_api(stack) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="session")
async def provider(stack: DevStack) -> AsyncIterator[httpx.AsyncClient]:
    """The Microsoft Entra stand-in's API, to add people to it."""
    async with httpx.AsyncClient(base_url=stack.entra_url, timeout=30) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="session")
async def database(stack: DevStack) -> AsyncIterator[SessionFactory]:
    async with stack_database(stack) as sessions:
        yield sessions


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def chromium() -> AsyncIterator[Browser]:
    """Debian's Chromium (never a downloaded browser build), headless."""
    args = list(CHROMIUM_ARGS)
    if os.geteuid() == 0:
        args.append("--no-sandbox")  # Chromium refuses to sandbox as root
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture(params=list(VIEWPORTS))
def viewport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def _local_only(route: Route) -> None:
    """Only the stack on this machine: anything else is cut (nothing may need another host)."""
    if urlsplit(route.request.url).hostname in LOCAL_HOSTS:
        await route.continue_()
    else:
        await route.abort("blockedbyclient")


@pytest_asyncio.fixture(loop_scope="session")
async def screen(
    request: pytest.FixtureRequest, chromium: Browser, stack: DevStack, viewport: str
) -> AsyncIterator[Screen]:
    """A new browser (own cookies) at this viewport; at the end, every page of the app it
    visited must have been checked."""
    context = await chromium.new_context(
        base_url=stack.base_url, locale="en-GB", timezone_id="UTC", **VIEWPORTS[viewport]
    )
    await context.route("**/*", _local_only)
    page = await context.new_page()
    shown = Screen(page, viewport, stack.base_url)
    try:
        yield shown
    finally:
        await context.close()
    report = getattr(request.node, "report_call", None)
    if report is not None and report.passed:
        assert not shown.unchecked(), f"pages visited but never checked: {shown.unchecked()}"
