"""What the account page tests share: a browser of their own per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from tests.support.accounts import Browser, browsing
from tests.support.harness import Stack


@pytest_asyncio.fixture(loop_scope="session")
async def browser(stack: Stack) -> AsyncIterator[Browser]:
    async with browsing(stack.transport) as person:
        yield person
