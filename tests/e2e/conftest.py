"""The end-to-end fixtures: each module runs against a real stack of its own (`sso dev` with the
default settings, real SMTP), shared by that module's tests in order."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import pytest_asyncio
from temporalio.client import Client

from core.codec import data_converter
from tests.support.config import make_settings
from tests.support.e2e import World
from tests.support.stack import DevStack, SmtpSink, running_sso_dev, smtp_sink


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpSink]:
    with smtp_sink() as sink:
        yield sink


@pytest.fixture(scope="module")
def stack(
    smtp: SmtpSink, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[DevStack]:
    name = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    with running_sso_dev(tmp_path_factory.mktemp(f"sso-dev-{name}"), smtp.port) as dev:
        yield dev


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(stack: DevStack) -> AsyncIterator[httpx.AsyncClient]:
    """The admin API with the stack's admin key."""
    async with httpx.AsyncClient(
        base_url=stack.base_url,
        timeout=30,
        headers={"Authorization": f"Bearer {stack.admin_key}"},
    ) as client:
        yield client


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def temporal(stack: DevStack) -> Client:
    return await Client.connect(stack.temporal_address, data_converter=data_converter(make_settings()))


@pytest.fixture(scope="module")
def world(stack: DevStack, smtp: SmtpSink) -> World:
    return World(stack, smtp)
