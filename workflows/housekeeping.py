"""Housekeeping (`housekeeping`, one for the deployment): once a day, delete the rows that have
been kept SSO_RETENTION_DAYS after they stopped mattering (core/retention.py), a table per
step, then audit `housekeeping.purged` with the counts. Started at every worker start; a
start finds the running one.

Each run waits for its day first, then purges, then continues as new: a run that sleeps has
only its timer in history, so a new release (another table) replays nothing it changed. The
history holds table names and counts only; the counts show in the flow's current details,
`SsoStep` is `purging` or `waiting`.

A flow rather than a Temporal Schedule: nothing to create on the server (as with the logout
sweeper in worker.py), one start per worker start, and a day's wait costs one timer."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.housekeeping import HousekeepingActivities
    from activities.inputs import HousekeepingDoneInput, PurgeInput
    from core import flow_errors
    from core.retention import BATCH_SIZE, TABLES
    from core.search_attributes import SSO_STEP
    from workflows.common import DB_RETRY, required, run_step

HOUSEKEEPING_WORKFLOW_ID = "housekeeping"
# A table's step: batches of a thousand rows take milliseconds each; a worker that dies
# mid-table is noticed by the missing heartbeat and the table starts over elsewhere (what
# was deleted stays deleted).
PURGE_TIMEOUT = timedelta(hours=1)
PURGE_HEARTBEAT = timedelta(seconds=30)
MIN_EVERY = timedelta(hours=1)


@dataclass
class HousekeepingInput:
    every_seconds: float = 86400.0
    batch_size: int = BATCH_SIZE
    # When this run purges; None: at once (the first run).
    due: datetime | None = None


@workflow.defn(name="Housekeeping")
class HousekeepingWorkflow:
    @workflow.run
    async def run(self, start: HousekeepingInput | None = None) -> None:
        data = required(start, "This start")
        if data.every_seconds < MIN_EVERY.total_seconds() or data.batch_size < 1:
            raise ApplicationError(
                "Housekeeping runs at most hourly, in batches of at least one row",
                type=flow_errors.BAD_REQUEST,
            )
        if data.due is not None and data.due > workflow.now():
            workflow.set_current_details(f"Next run at {data.due.isoformat(timespec='minutes')}")
            self._step("waiting")
            await workflow.sleep(data.due - workflow.now(), summary="Wait for the next day's housekeeping")
        self._step("purging")
        counts: dict[str, int] = {}
        for table in TABLES:
            workflow.set_current_details(_details(f"Purging {table}", counts))
            counts[table] = await workflow.execute_activity_method(
                HousekeepingActivities.purge_table,
                PurgeInput(table=table, batch_size=data.batch_size),
                start_to_close_timeout=PURGE_TIMEOUT,
                heartbeat_timeout=PURGE_HEARTBEAT,
                retry_policy=DB_RETRY,
                summary=f"Delete {table} kept past SSO_RETENTION_DAYS",
            )
        await run_step(
            HousekeepingActivities.record_housekeeping,
            HousekeepingDoneInput(run_id=workflow.info().run_id, counts=counts),
            "Audit housekeeping.purged",
        )
        workflow.set_current_details(_details("Done", counts))
        workflow.continue_as_new(replace(data, due=workflow.now() + timedelta(seconds=data.every_seconds)))

    def _step(self, step: str) -> None:
        """Upserts SsoStep when it changes (each upsert is a billed action)."""
        if workflow.info().typed_search_attributes.get(SSO_STEP) != step:
            workflow.upsert_search_attributes([SSO_STEP.value_set(step)])


def _details(what: str, counts: dict[str, int]) -> str:
    deleted = ", ".join(f"{table} {count}" for table, count in counts.items() if count)
    return f"{what}: {sum(counts.values())} rows deleted" + (f" ({deleted})" if deleted else "")
