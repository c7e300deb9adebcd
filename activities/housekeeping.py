"""The steps of the housekeeping flow (workflows/housekeeping.py): delete one table's finished
rows a batch at a time, then audit the run's counts. Deleting what is already gone deletes
nothing, so a retried step is harmless."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.inputs import HousekeepingDoneInput, PurgeInput
from core import audit, flow_errors
from core.db import SessionFactory
from core.models import AuditEvent, utcnow
from core.retention import TABLES, Cutoffs, purge_batch
from core.settings import Settings

logger = logging.getLogger(__name__)


@dataclass
class HousekeepingActivities:
    settings: Settings
    sessions: SessionFactory

    @activity.defn(name="purge_table")
    async def purge_table(self, data: PurgeInput) -> int:
        """Deletes the table's rows kept past SSO_RETENTION_DAYS, `batch_size` per transaction,
        until a batch comes back short; how many in all."""
        if data.table not in TABLES or data.batch_size < 1:
            raise ApplicationError(
                f"Housekeeping cannot purge {data.table!r} in batches of {data.batch_size}",
                non_retryable=True,
                type=flow_errors.BAD_REQUEST,
            )
        cutoffs = Cutoffs.of(self.settings, utcnow())
        total = 0
        while True:
            async with self.sessions() as session:
                deleted = await purge_batch(session, data.table, cutoffs, data.batch_size)
                await session.commit()
            total += deleted
            activity.heartbeat(total)
            if deleted < data.batch_size:
                return total

    @activity.defn(name="record_housekeeping")
    async def record_housekeeping(self, data: HousekeepingDoneInput) -> None:
        """One `housekeeping.purged` event per run (its target the run): a retry after the
        commit finds it written."""
        target = f"housekeeping:{data.run_id}"
        async with self.sessions() as session:
            if await session.scalar(select(AuditEvent.id).where(AuditEvent.target == target)) is not None:
                return
            audit.record(
                session,
                actor="system",
                action="housekeeping.purged",
                outcome="success",
                target=target,
                counts=data.counts,
            )
            await session.commit()
        logger.info(
            "housekeeping purged %d rows: %s",
            sum(data.counts.values()),
            ", ".join(f"{table} {count}" for table, count in data.counts.items()),
        )
