"""Onboarding under faults: the scenario of tests/faults/test_onboarding_under_faults.py
(people onboarding at once while the worker is SIGKILLed twice and Temporal restarts once),
timed from the last fault to the last person done.

On PostgreSQL when SSO_TEST_DATABASE_URL is set (as in CI), else on SQLite (and says so).
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from core.settings import to_sync_url
from tests.support.config import POSTGRES_URL
from tests.support.faults import FaultStack, stack_env
from tests.support.onboarding_chaos import onboard_under_faults, seed_from_env
from tests.support.stack import SmtpSink, free_ports


async def onboarding_under_faults(data_dir: Path, people: int) -> dict[str, Any]:
    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    smtp = SmtpSink()
    smtp.start()
    schema = f"bench_faults_{uuid.uuid4().hex[:12]}" if POSTGRES_URL else None
    admin = create_engine(to_sync_url(POSTGRES_URL)) if POSTGRES_URL else None
    if admin is not None and schema is not None:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        separator = "&" if "?" in (POSTGRES_URL or "") else "?"
        url = f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    else:
        url = f"sqlite+aiosqlite:///{data_dir / 'sso.db'}"
    api_port, temporal_port, ui_port = free_ports(3)
    stack = FaultStack(
        data_dir=data_dir,
        env=stack_env(data_dir, api_port, temporal_port, smtp.port, url),
        api_port=api_port,
        temporal_port=temporal_port,
        ui_port=ui_port,
        database_url=url,
        direct_database_url=to_sync_url(url),
        smtp=smtp,
    )
    try:
        await asyncio.to_thread(stack.start)
        run = await onboard_under_faults(stack, smtp, people, seed_from_env())
    finally:
        stack.stop()
        smtp.stop()
        if admin is not None:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
    return {**run.summary(), "database": "postgresql" if POSTGRES_URL else "sqlite"}
