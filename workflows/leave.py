"""A person's leave date: a durable timer that disables them at the start of that day.

Its id is `staff-leave-<staff uuid>`. The web app starts it with signal-with-start when an
admin sets a date, and signals it again to move the date or to clear it (the flow then ends
without disabling anyone). At the moment it disables the person through the same service as
the admin's Disable (activities/lifecycle.py), which first checks the database still holds
this date: a flow that missed a change never disables anyone on a stale date. Only the staff
id and the moment pass through it; the Temporal UI shows the moment in the flow's details.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.inputs import LeaverInput
    from activities.lifecycle import LifecycleActivities
    from core.search_attributes import SSO_STEP
    from workflows.common import DB_RETRY, required

# Disabling ends sessions and flows through Temporal and the database: longer than a step.
DISABLE_TIMEOUT = timedelta(seconds=60)


def leave_workflow_id(staff_id: str) -> str:
    return f"staff-leave-{staff_id}"


@dataclass
class LeaveInput:
    staff_id: str


@dataclass
class LeaveMove:
    """The new moment the person is disabled at (the start of the leave day in
    SSO_TIME_ZONE, in UTC), or None: the date was cleared."""

    leave_at: datetime | None
    leave_on: str | None = None  # the day itself (ISO), what the database must still hold


@workflow.defn(name="StaffLeave")
class StaffLeaveWorkflow:
    @workflow.init
    def __init__(self, start: LeaveInput | None = None) -> None:
        self._start = required(start, "This start")
        self._move: LeaveMove | None = None
        self._moves = 0

    @workflow.run
    async def run(self, start: LeaveInput | None = None) -> str:
        await workflow.wait_condition(lambda: self._moves > 0)
        while True:
            move = self._move
            assert move is not None
            if move.leave_at is None:
                await self._step("cleared", "The leave date was cleared")
                return "cleared"
            seen = self._moves
            workflow.set_current_details(f"Disables the person at {move.leave_at.isoformat()}")
            wait = max(timedelta(0), move.leave_at - workflow.now())
            try:
                await workflow.wait_condition(self._moved_since(seen), timeout=wait)
                continue  # moved or cleared meanwhile
            except TimeoutError:
                pass
            outcome = await workflow.execute_activity_method(
                LifecycleActivities.disable_leaver,
                LeaverInput(staff_id=self._start.staff_id, leave_on=move.leave_on or ""),
                start_to_close_timeout=DISABLE_TIMEOUT,
                retry_policy=DB_RETRY,
                summary="Disable the leaver",
            )
            await self._step(outcome, f"Leave date reached: {outcome}")
            await workflow.wait_condition(workflow.all_handlers_finished)
            return outcome

    def _moved_since(self, seen: int) -> Callable[[], bool]:
        return lambda: self._moves != seen

    async def _step(self, step: str, details: str) -> None:
        workflow.set_current_details(details)
        workflow.upsert_search_attributes([SSO_STEP.value_set(step)])

    @workflow.signal(name="move")
    def move(self, move: LeaveMove) -> None:
        self._move = move
        self._moves += 1
