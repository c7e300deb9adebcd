"""Admin API shapes of the bulk staff actions: a CSV import and a staff batch (bulk send)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from api.schemas import StaffPublic
from core.batches import MAX_BATCH_SIZE

BatchStateName = Literal["running", "paused", "waiting_for_email_budget", "cancelled", "done"]


class StaffBatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    staff_ids: list[uuid.UUID] = Field(
        min_length=1,
        max_length=MAX_BATCH_SIZE,
        description=f"The people to act on (at most {MAX_BATCH_SIZE:,}; a repeated id counts once)",
    )
    action: Literal["send_email"] = Field(description="send_email: send each their Single Sign-On email")


class BatchFailure(BaseModel):
    staff_id: uuid.UUID
    error: str


class StaffBatchPublic(BaseModel):
    id: uuid.UUID
    action: Literal["send_email"]
    state: BatchStateName
    workflow_id: str
    total: int
    sent: int = Field(description="Single Sign-On emails started (each flow then delivers its email)")
    failed: int = Field(description="People it could not send to; `failures` says why")
    left: int = Field(description="People still to send to")
    cancelled: int = Field(description="People left unsent when the batch was cancelled")
    wait_until: datetime | None = Field(
        description="While `waiting_for_email_budget`: when the next hour's budget lets it go on"
    )
    requested_by: str
    created_at: datetime
    failures: list[BatchFailure] = Field(description="The first 200 failures, in the batch's order")
    status_url: str


class ImportProblem(BaseModel):
    row: int = Field(description="The row in the file (the header is row 1)")
    column: str | None = Field(description="The column at fault, or null when the row as a whole is")
    error: str


class ImportRow(BaseModel):
    row: int
    outcome: Literal["create", "created", "skipped"]
    first_name: str
    last_name: str
    external_email_1: str
    is_admin: bool | None
    errors: list[ImportProblem]


class StaffImportPreview(BaseModel):
    """A dry run: what an import of this file would do; nothing was created."""

    dry_run: Literal[True] = True
    rows: list[ImportRow]
    would_create: int
    errors: list[ImportProblem]


class StaffImportResult(BaseModel):
    created: list[StaffPublic]
    skipped: list[ImportProblem] = Field(description="Each problem of each row that was not imported")
    batch_id: uuid.UUID | None = Field(description="The batch sending their emails (`send_email=true`)")
    batch_url: str | None
