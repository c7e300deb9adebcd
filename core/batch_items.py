"""Reading a staff batch's items: its counts by outcome and the people it could not send to."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.batches import ItemStatus
from core.models import StaffBatchItem


async def count_items(session: AsyncSession, batch_id: uuid.UUID) -> dict[ItemStatus, int]:
    rows = (
        await session.execute(
            select(StaffBatchItem.status, func.count())
            .where(StaffBatchItem.batch_id == batch_id)
            .group_by(StaffBatchItem.status)
        )
    ).all()
    found = {status: count for status, count in rows}
    return {status: found.get(status.value, 0) for status in ItemStatus}


async def failed_items(session: AsyncSession, batch_id: uuid.UUID, limit: int) -> Sequence[StaffBatchItem]:
    return (
        await session.scalars(
            select(StaffBatchItem)
            .where(StaffBatchItem.batch_id == batch_id, StaffBatchItem.status == ItemStatus.failed.value)
            .order_by(StaffBatchItem.position)
            .limit(limit)
        )
    ).all()
