"""The staff batch's activities: send a chunk of its people their Single Sign-On email, and
record where the batch stands. The people are rows (staff_batch_items), never the flow's
history; each row remembers the setup it started, so a retried chunk (after a worker died)
starts that setup's flow, or finds it running, instead of superseding it with a new link."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import WorkflowAlreadyStartedError

from activities.inputs import BatchChunkInput, BatchCounts, BatchStateInput
from api.services.setup_admin import SENDING_ALREADY, Onboarding
from api.services.staff import get_staff
from core import email_budget
from core.batch_items import count_items
from core.batches import BatchState, ItemStatus
from core.db import SessionFactory, UnitOfWork
from core.errors import Conflict, NotFound, TooManyRequests
from core.models import SsoSetup, StaffBatch, StaffBatchItem, utcnow
from core.orgs import AdminScope
from core.settings import Settings
from core.temporal_client import TemporalGateway

# Items of a chunk in flight at once: each is a few database writes and Temporal calls.
CONCURRENT_ITEMS = 8


@dataclass
class _Budget:
    """Set once an item found the hour's email budget spent: the chunk stops there."""

    spent: bool = False


class StaffBatchActivities:
    def __init__(self, settings: Settings, sessions: SessionFactory, client: Client) -> None:
        self._settings = settings
        self._sessions = sessions
        self._temporal = TemporalGateway(settings, client, role="worker")

    @activity.defn(name="send_batch_chunk")
    async def send_batch_chunk(self, data: BatchChunkInput) -> BatchCounts:
        batch_id = uuid.UUID(data.batch_id)
        async with self._sessions() as session:
            batch = await session.get(StaffBatch, batch_id)
            if batch is None:
                raise NotFound("No staff batch with that id")
            # Only the batch's organisation's people: one moved elsewhere since fails as unknown.
            scope = AdminScope(actor=batch.requested_by, org_id=batch.org_id)
            items = (
                await session.scalars(
                    select(StaffBatchItem.id)
                    .where(
                        StaffBatchItem.batch_id == batch_id,
                        StaffBatchItem.status == ItemStatus.pending.value,
                    )
                    .order_by(StaffBatchItem.position)
                    .limit(data.limit)
                )
            ).all()
        budget = _Budget()
        gate = asyncio.Semaphore(CONCURRENT_ITEMS)

        async def one(item_id: uuid.UUID) -> None:
            async with gate:
                activity.heartbeat()
                if not budget.spent:
                    await self._send_item(item_id, data.batch_id, scope, budget)
                    activity.heartbeat()

        # A failing item cancels the rest: the retried chunk picks them up again.
        async with asyncio.TaskGroup() as group:
            for item_id in items:
                group.create_task(one(item_id))
        async with self._sessions() as session:
            counts = await batch_counts(session, batch_id)
        if budget.spent:
            counts.budget_until = email_budget.next_hour(utcnow())
        return counts

    async def _send_item(self, item_id: uuid.UUID, batch_id: str, scope: AdminScope, budget: _Budget) -> None:
        async with self._sessions() as session:
            uow = UnitOfWork(session)
            item = await session.get(StaffBatchItem, item_id)
            if item is None or item.status != ItemStatus.pending.value:
                return
            onboarding = Onboarding(self._settings, session, self._temporal, uow)
            setup = await session.get(SsoSetup, item.setup_id) if item.setup_id else None
            # A setup found is this item's own, committed by an earlier attempt of it.
            retried = setup is not None
            try:
                staff = await get_staff(session, item.staff_id, scope)
                if setup is None:
                    key = email_budget.budget_key(staff)
                    if not await email_budget.spend(session, key, self._settings.org_email_budget, utcnow()):
                        budget.spent = True
                        return
                    setup = await onboarding.begin_setup(staff, scope.actor, None, batch_id=batch_id)
                    item.setup_id = setup.id
                    # The setup row, the item's claim on it and the budget spent, together.
                    await uow.commit_now()
            except (Conflict, NotFound, TooManyRequests) as refused:
                await session.rollback()
                await _finish(session, item_id, ItemStatus.failed, refused.message)
                return
            try:
                await onboarding.start_setup(staff, setup)
            except WorkflowAlreadyStartedError:
                if not retried:  # another send started this instant: its flow is not ours
                    await onboarding.abandon(setup, "another email was sent at the same moment")
                    await _finish(session, item_id, ItemStatus.failed, SENDING_ALREADY)
                    return
                # Else this item's earlier attempt started it before its worker died.
            await _finish(session, item_id, ItemStatus.sent, None)

    @activity.defn(name="record_batch_state")
    async def record_batch_state(self, data: BatchStateInput) -> BatchCounts:
        batch_id = uuid.UUID(data.batch_id)
        async with self._sessions() as session:
            await session.execute(
                update(StaffBatch)
                .where(StaffBatch.id == batch_id)
                .values(state=data.state, wait_until=data.wait_until, updated_at=utcnow())
            )
            if data.state == BatchState.cancelled.value:
                await session.execute(
                    update(StaffBatchItem)
                    .where(
                        StaffBatchItem.batch_id == batch_id,
                        StaffBatchItem.status == ItemStatus.pending.value,
                    )
                    .values(status=ItemStatus.cancelled.value, updated_at=utcnow())
                )
            await session.commit()
            return await batch_counts(session, batch_id)


async def _finish(session: AsyncSession, item_id: uuid.UUID, status: ItemStatus, error: str | None) -> None:
    await session.execute(
        update(StaffBatchItem)
        .where(StaffBatchItem.id == item_id)
        .values(status=status.value, error=error, updated_at=utcnow())
    )
    await session.commit()


async def batch_counts(session: AsyncSession, batch_id: uuid.UUID) -> BatchCounts:
    """The batch's items by outcome; `left` are those still to send."""
    counts = await count_items(session, batch_id)
    return BatchCounts(
        sent=counts[ItemStatus.sent], failed=counts[ItemStatus.failed], left=counts[ItemStatus.pending]
    )
