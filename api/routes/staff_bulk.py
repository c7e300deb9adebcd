"""Admin API: bulk staff actions: a CSV import, and staff batches (bulk sends) with their
progress, pause, resume and cancel."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from api.bulk_schemas import (
    StaffBatchCreate,
    StaffBatchPublic,
    StaffImportPreview,
    StaffImportResult,
)
from api.deps import AdminDep, SessionDep, StaffBatchesDep, StaffImportsDep, client_ip
from api.routes.staff import ERRORS
from api.schemas import ErrorBody, StaffPublic
from api.services.staff import creation_org
from api.services.staff_batches import batch_url
from api.services.staff_import import MAX_IMPORT_BYTES, MAX_IMPORT_ROWS
from core.errors import TooLarge, UnsupportedMediaType

CSV_EXAMPLE = "first_name,last_name,external_email_1,is_admin\r\nAda,Lovelace,ada@example.com,FALSE\r\n"
CSV_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The CSV file: a header row naming first_name, last_name, external_email_1 and "
        "(optionally) is_admin, then one person per row. UTF-8 with or without a byte order "
        "mark, as Excel saves it (CRLF, quoted fields, TRUE/FALSE, yes/no or 1/0, blank rows "
        f"ignored); at most {MAX_IMPORT_BYTES // (1024 * 1024)} MB and {MAX_IMPORT_ROWS:,} people.",
        "content": {"text/csv": {"schema": {"type": "string"}, "example": CSV_EXAMPLE}},
    }
}
IMPORT_ERRORS: dict[int | str, dict[str, Any]] = {
    200: {"model": StaffImportPreview, "description": "Dry run: every row's outcome; nothing created"},
    201: {"model": StaffImportResult, "description": "The good rows created, the others skipped"},
    413: {"model": ErrorBody, "description": "The file is too large (bytes or rows)"},
    415: {"model": ErrorBody, "description": "The body is not text/csv"},
}

router = APIRouter(prefix="/api/v1/staff", tags=["staff"], responses=ERRORS)


async def csv_body(request: Request) -> bytes:
    """The request's CSV, refused early when it is not CSV or is too large."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "text/csv":
        raise UnsupportedMediaType("Send the file as the body with Content-Type: text/csv")
    too_large = TooLarge(f"The file is larger than {MAX_IMPORT_BYTES // (1024 * 1024)} MB; split it")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_IMPORT_BYTES:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_IMPORT_BYTES:
            raise too_large
    return bytes(body)


@router.post(
    "/imports",
    status_code=status.HTTP_201_CREATED,
    response_model=None,
    responses=IMPORT_ERRORS,
    openapi_extra=CSV_BODY,
)
async def import_staff(
    request: Request,
    imports: StaffImportsDep,
    session: SessionDep,
    scope: AdminDep,
    dry_run: bool = False,
    send_email: bool = False,
    org_id: Annotated[
        uuid.UUID | None,
        Query(
            description="The organisation the people join: an operator's choice (needed when "
            "there are several); an organisation's key imports into its own"
        ),
    ] = None,
) -> JSONResponse:
    """Import people from a CSV file. `dry_run=true` answers 200 with every row's outcome and
    every problem (row and column), creating nobody. Otherwise the rows without problems are
    created (each audited as a single create) and the others skipped: 201. `send_email=true`
    also sends each new person their Single Sign-On email through a staff batch (`batch_id`)."""
    body = await csv_body(request)
    org = await creation_org(session, scope, org_id)
    if dry_run:
        rows = await imports.preview(body, scope, org)
        preview = StaffImportPreview(
            rows=[r.shown("skipped" if r.problems else "create") for r in rows],
            would_create=sum(1 for r in rows if not r.problems),
            errors=[p for r in rows for p in r.problems],
        )
        return JSONResponse(jsonable_encoder(preview), status_code=status.HTTP_200_OK)
    outcome = await imports.run(body, send_email, scope, client_ip(request), org)
    result = StaffImportResult(
        created=[StaffPublic.model_validate(s) for s in outcome.created],
        skipped=[p for r in outcome.rows for p in r.problems],
        batch_id=outcome.batch_id,
        batch_url=batch_url(outcome.batch_id) if outcome.batch_id else None,
    )
    return JSONResponse(jsonable_encoder(result), status_code=status.HTTP_201_CREATED)


@router.post("/batches", status_code=status.HTTP_202_ACCEPTED, response_model=StaffBatchPublic)
async def start_batch(
    data: StaffBatchCreate, request: Request, batches: StaffBatchesDep, scope: AdminDep
) -> StaffBatchPublic:
    """Send each of these people their Single Sign-On email, at SSO_BATCH_SEND_RATE a minute
    and within the hourly email budget, in the durable flow `staff-batch-<id>`; follow it at
    `status_url`."""
    batch = await batches.create(data.staff_ids, scope, client_ip(request))
    return await batches.progress(batch.id, scope)


@router.get("/batches/{batch_id}", response_model=StaffBatchPublic)
async def batch_progress(batch_id: uuid.UUID, batches: StaffBatchesDep, scope: AdminDep) -> StaffBatchPublic:
    """A batch's state and counts (sent, failed, left), with each failure's reason."""
    return await batches.progress(batch_id, scope)


@router.post("/batches/{batch_id}/{control}", response_model=StaffBatchPublic)
async def control_batch(
    batch_id: uuid.UUID,
    control: Annotated[Literal["pause", "resume", "cancel"], Path(description="pause, resume or cancel")],
    request: Request,
    batches: StaffBatchesDep,
    scope: AdminDep,
) -> StaffBatchPublic:
    """Pause (the chunk in flight finishes), resume, or cancel (the people not yet sent to
    are left unsent). 409 when the batch's state cannot take it."""
    return await batches.control(batch_id, control, scope, client_ip(request))
