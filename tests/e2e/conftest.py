"""The end-to-end fixtures: every module runs against the shared real stack (`sso dev`, real
SMTP; tests/conftest.py), with its own API and Temporal clients and its own record of what
it sent (`world`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from temporalio.client import Client

from core.codec import data_converter
from tests.support.config import make_settings
from tests.support.e2e import World, admin_api
from tests.support.stack import DevStack, SmtpSink


@pytest.fixture(scope="module")
def smtp(shared_smtp: SmtpSink) -> SmtpSink:
    return shared_smtp


@pytest.fixture(scope="module")
def stack(shared_stack: DevStack) -> DevStack:
    return shared_stack


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(stack: DevStack) -> AsyncIterator[httpx.AsyncClient]:
    async with admin_api(stack) as client:
        yield client


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def temporal(stack: DevStack) -> Client:
    return await Client.connect(stack.temporal_address, data_converter=data_converter(make_settings()))


@pytest.fixture(scope="module")
def world(stack: DevStack, smtp: SmtpSink) -> World:
    return World(stack, smtp)
