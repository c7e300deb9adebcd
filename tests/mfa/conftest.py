"""The MFA tests' stacks: the web app and a real worker on the time-skipping server, under a
deployment policy of `required` (short reminders and grace) or `optional`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from tests.support.harness import Stack, running_stack
from tests.support.setup_pages import settle

DAY = timedelta(days=1)


SHORT = {"mfa_policy": "required", "mfa_reminders": [DAY], "mfa_grace": 2 * DAY, "signin_ip_limit": 1000}


@pytest_asyncio.fixture(loop_scope="session")
async def required(temporal_env: WorkflowEnvironment, database_url: str) -> AsyncIterator[Stack]:
    async with running_stack(temporal_env, database_url, **SHORT) as stack:
        yield stack
        await settle(stack)


@pytest_asyncio.fixture(loop_scope="session")
async def optional(temporal_env: WorkflowEnvironment, database_url: str) -> AsyncIterator[Stack]:
    async with running_stack(temporal_env, database_url, signin_ip_limit=1000) as stack:
        yield stack
        await settle(stack)
