"""Onboarding under faults: the scenario of tests/faults/test_onboarding_under_faults.py
(people onboarding at once while the worker is SIGKILLed twice and Temporal restarts once),
timed from the last fault to the last person done.

On PostgreSQL when SSO_TEST_DATABASE_URL is set (as in CI), else on SQLite (and says so).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from tests.support.config import POSTGRES_URL, postgres_schema
from tests.support.faults import FaultStack
from tests.support.onboarding_chaos import onboard_under_faults, seed_from_env
from tests.support.stack import SmtpSink


async def onboarding_under_faults(data_dir: Path, people: int) -> dict[str, Any]:
    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    with contextlib.ExitStack() as cleanup:
        # A schema of its own on PostgreSQL; FaultStack.create's SQLite file otherwise.
        url = cleanup.enter_context(postgres_schema("bench_faults"))[1] if POSTGRES_URL else None
        smtp = SmtpSink()
        smtp.start()
        cleanup.callback(smtp.stop)
        stack = FaultStack.create(data_dir, smtp, database_url=url)
        cleanup.callback(stack.stop)
        await asyncio.to_thread(stack.start)
        run = await onboard_under_faults(stack, smtp, people, seed_from_env())
    return {**run.summary(), "database": "postgresql" if POSTGRES_URL else "sqlite"}
