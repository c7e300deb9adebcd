"""The steps of a person's lifecycle that run in the worker: the leave date's disable."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from temporalio import activity

from activities.inputs import LeaverInput
from api.services.staff_status import StaffStatus
from core.db import SessionFactory, UnitOfWork
from core.models import Staff
from core.orgs import operator
from core.settings import Settings
from core.temporal_client import TemporalGateway

logger = logging.getLogger(__name__)

LEAVE_DATE_ACTOR = "system:leave-date"


@dataclass
class LifecycleActivities:
    settings: Settings
    sessions: SessionFactory

    @activity.defn(name="disable_leaver")
    async def disable_leaver(self, data: LeaverInput) -> str:
        """Disables the person, as the admin's Disable does, if their leave date (in the
        database) is the day the flow waited for or before it: "disabled", or "moved" (cleared,
        or moved later) / "gone". Idempotent (a
        retry finds them disabled and ends their flows once more)."""
        async with self.sessions() as session:
            staff = await session.get(Staff, uuid.UUID(data.staff_id))
            if staff is None:
                return "gone"
            # The day the flow waited for, or an earlier one it never heard of (a move whose
            # signal got through but whose commit failed is the later one, never this).
            if staff.leave_on is None or staff.leave_on.isoformat() > data.leave_on:
                return "moved"
            uow = UnitOfWork(session)
            temporal = TemporalGateway(self.settings, activity.client(), role="worker")
            await StaffStatus(uow, self.settings, temporal).disable(
                staff.id, operator(LEAVE_DATE_ACTOR), None
            )
            await uow.commit_now()
        logger.info("leaver disabled on their leave date: %s", data.staff_id)
        return "disabled"
