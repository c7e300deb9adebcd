"""A staff batch (a bulk Single Sign-On send): its states and its items' outcomes.

Pure (standard library only), so workflows import it through `imports_passed_through`. The
values are stored in the database, in the `SsoBatchState` search attribute and in workflow
histories: never change one.
"""

from __future__ import annotations

from enum import StrEnum


class BatchState(StrEnum):
    running = "running"
    paused = "paused"
    waiting_for_email_budget = "waiting_for_email_budget"
    cancelled = "cancelled"
    done = "done"

    @property
    def is_open(self) -> bool:
        return self not in {BatchState.cancelled, BatchState.done}


class ItemStatus(StrEnum):
    pending = "pending"
    sent = "sent"
    failed = "failed"
    cancelled = "cancelled"


class BatchAction(StrEnum):
    send_email = "send_email"


# A supported batch: its items live in the database, its flow continues as new.
MAX_BATCH_SIZE = 10_000


def batch_workflow_id(batch_id: str) -> str:
    return f"staff-batch-{batch_id}"
