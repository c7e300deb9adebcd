"""Staff batches (bulk sends): start one, read its progress, pause, resume or cancel it.

The batch and its people are rows written before its flow (`staff-batch-<id>`) starts; the
flow records its state there, so progress is read from the database, not from Temporal."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.common import SearchAttributePair

from api.bulk_schemas import BatchFailure, StaffBatchPublic
from api.services.flows import FlowClient, FlowEnded, StepRefused, Update
from api.services.staff import staff_orgs
from core import audit
from core.batch_items import count_items, failed_items
from core.batches import BatchAction, BatchState, ItemStatus, batch_workflow_id
from core.db import UnitOfWork
from core.errors import Conflict, NotFound, Unprocessable
from core.models import StaffBatch, StaffBatchItem
from core.orgs import AdminScope
from core.search_attributes import SSO_BATCH_STATE, flow_attributes
from core.settings import Settings
from core.temporal_client import TemporalGateway
from workflows.staff_batch import BatchControl, StaffBatchInput, StaffBatchWorkflow, pace

FAILURES_SHOWN = 200
CONTROLS: dict[str, Update] = {
    "pause": StaffBatchWorkflow.pause,
    "resume": StaffBatchWorkflow.resume,
    "cancel": StaffBatchWorkflow.cancel,
}


def batch_url(batch_id: uuid.UUID) -> str:
    return f"/api/v1/staff/batches/{batch_id}"


@dataclass
class StaffBatches:
    settings: Settings
    uow: UnitOfWork
    temporal: TemporalGateway

    @property
    def session(self) -> AsyncSession:
        return self.uow.session

    async def create(self, staff_ids: Sequence[uuid.UUID], scope: AdminScope, ip: str | None) -> StaffBatch:
        """A batch sending each of these people (of one organisation, which the scope sees)
        their Single Sign-On email, started."""
        actor = scope.actor
        people = list(dict.fromkeys(staff_ids))
        orgs = await staff_orgs(self.session, people)
        # Another organisation's person is as unknown as an id that exists nowhere.
        missing = [i for i in people if i not in orgs or not scope.sees(orgs[i])]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise NotFound(f"No staff member with id {missing[0]}{more}")
        batch_orgs = set(orgs.values())
        if len(batch_orgs) > 1:  # only an operator's ids can span organisations
            raise Unprocessable("staff_ids", "a batch's people must all be of one organisation")
        batch = StaffBatch(
            id=uuid.uuid4(),
            org_id=batch_orgs.pop(),
            action=BatchAction.send_email.value,
            state=BatchState.running.value,
            requested_by=actor,
            total=len(people),
        )
        self.session.add(batch)
        self.session.add_all(
            StaffBatchItem(batch_id=batch.id, staff_id=staff_id, position=n, status=ItemStatus.pending.value)
            for n, staff_id in enumerate(people)
        )
        audit.record(
            self.session,
            actor=actor,
            action="staff_batch.create",
            outcome="accepted",
            target=str(batch.id),
            ip=ip,
            people=str(len(people)),
            workflow_id=batch_workflow_id(str(batch.id)),
        )
        # The flow's first chunk reads these rows: they must exist before it starts.
        await self.uow.commit_now()
        chunk_size, chunk_seconds = pace(self.settings.batch_send_rate)
        try:
            await self._flows.start(
                StaffBatchWorkflow.run,
                StaffBatchInput(
                    batch_id=str(batch.id),
                    chunk_size=chunk_size,
                    chunk_seconds=chunk_seconds,
                    left=len(people),
                ),
                id=batch_workflow_id(str(batch.id)),
                search_attributes=flow_attributes(
                    SearchAttributePair(SSO_BATCH_STATE, BatchState.running.value), org_id=batch.org_id
                ),
                static_summary=f"Send Single Sign-On emails to {len(people)} people",
                static_details=f"Requested by {actor}; at most {self.settings.batch_send_rate} a minute",
            )
        except BaseException:
            await self.session.delete(batch)
            audit.record(
                self.session,
                actor=actor,
                action="staff_batch.start_failed",
                outcome="failure",
                target=str(batch.id),
                ip=ip,
            )
            await self.uow.commit_now()
            raise
        return batch

    async def progress(self, batch_id: uuid.UUID, scope: AdminScope) -> StaffBatchPublic:
        batch = await self._batch(batch_id, scope)
        counts = await count_items(self.session, batch.id)
        failures = await failed_items(self.session, batch.id, FAILURES_SHOWN)
        return StaffBatchPublic(
            id=batch.id,
            action=batch.action,  # type: ignore[arg-type]
            state=batch.state,  # type: ignore[arg-type]
            workflow_id=batch_workflow_id(str(batch.id)),
            total=batch.total,
            sent=counts[ItemStatus.sent],
            failed=counts[ItemStatus.failed],
            left=counts[ItemStatus.pending],
            cancelled=counts[ItemStatus.cancelled],
            wait_until=batch.wait_until,
            requested_by=batch.requested_by,
            created_at=batch.created_at,
            failures=[BatchFailure(staff_id=f.staff_id, error=f.error or "") for f in failures],
            status_url=batch_url(batch.id),
        )

    async def control(
        self, batch_id: uuid.UUID, which: str, scope: AdminScope, ip: str | None
    ) -> StaffBatchPublic:
        """Pause, resume or cancel: 409 with the flow's reason when the batch's state cannot
        take it (paused already, not paused, ended)."""
        batch = await self._batch(batch_id, scope)
        actor = scope.actor
        if not BatchState(batch.state).is_open:
            raise Conflict(f"This batch is {batch.state}")
        # Nothing stays open while the flow records the change in the same database.
        await self.uow.commit_now()
        flow = await self._flows.flow(StaffBatchWorkflow.run, batch_workflow_id(str(batch.id)))
        try:
            await flow.update(CONTROLS[which], BatchControl(actor=actor))
        except StepRefused as refused:
            raise Conflict(refused.message) from refused
        except FlowEnded as ended:
            raise Conflict("This batch has ended") from ended
        audit.record(
            self.session,
            actor=actor,
            action=f"staff_batch.{which}",
            outcome="success",
            target=str(batch.id),
            ip=ip,
        )
        return await self.progress(batch_id, scope)

    async def _batch(self, batch_id: uuid.UUID, scope: AdminScope) -> StaffBatch:
        """The batch, if the scope sees its organisation: another's is a 404, as unknown."""
        batch = await self.session.get(StaffBatch, batch_id, populate_existing=True)
        if batch is None or not scope.sees(batch.org_id):
            raise NotFound("No staff batch with that id")
        return batch

    @property
    def _flows(self) -> FlowClient:
        # Connecting may take the usual 5 s: an admin action, not a page step.
        return FlowClient(self.temporal, 10.0, self.settings.task_queue, connect_timeout=5.0)
