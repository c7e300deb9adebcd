"""The admin's bulk pages: Settings > Staff > Import from CSV (upload, a dry-run preview of
every row, then "Import N people"), and a staff batch's progress with Pause, Resume and
Cancel. The same services as the admin API, with the admin as the actor."""

from __future__ import annotations

import uuid
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from api.cookies import csrf_ok
from api.deps import SettingsDep, StaffBatchesDep, StaffImportsDep, UnitOfWorkDep, client_ip
from api.forms import CsrfFormDep
from api.routes.admin import EXPIRED_FORM, _admin, _done, _page, actor_of
from api.services.sessions import Current
from api.services.staff_import import MAX_IMPORT_BYTES, CheckedRow
from core.errors import Conflict, NotFound, SsoError

router = APIRouter(prefix="/admin/staff", tags=["admin pages"], include_in_schema=False)

IMPORT_PAGE = "/admin/staff/import"
CONTROL_WORDS = {"pause": "Paused", "resume": "Resumed", "cancel": "Cancelled"}


def _import_page(
    request: Request,
    current: Current,
    *,
    rows: list[CheckedRow] | None = None,
    csv_text: str = "",
    problem: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    good = sum(1 for r in rows or [] if not r.problems)
    return _page(
        request,
        current,
        "admin_staff_import",
        IMPORT_PAGE,
        status_code=status_code,
        rows=rows,
        good=good,
        csv_text=csv_text,
        problem=problem,
    )


async def _posted(request: Request) -> tuple[str, bytes, bool]:
    """The posted form's CSRF token, its CSV (an uploaded file or the preview's field) and
    whether to send the emails; multipart, so a whole file fits."""
    form = await request.form(max_files=1, max_fields=5, max_part_size=MAX_IMPORT_BYTES + 1)
    upload = form.get("file")
    if isinstance(upload, UploadFile):
        body = await upload.read(MAX_IMPORT_BYTES + 1)
    else:
        text = form.get("csv")
        body = text.encode() if isinstance(text, str) else b""
    csrf = form.get("csrf")
    return (csrf if isinstance(csrf, str) else ""), body, form.get("send_email") == "yes"


@router.get("/import", response_class=HTMLResponse)
async def import_form(request: Request, settings: SettingsDep, uow: UnitOfWorkDep) -> Response:
    current = await _admin(request, settings, uow)
    if isinstance(current, Response):
        return current
    return _import_page(request, current)


async def _import_post(
    request: Request, settings: SettingsDep, uow: UnitOfWorkDep, unreadable: str
) -> Response | tuple[Current, bytes, bool]:
    """The signed-in admin, the posted CSV and the send box, or the page saying what is wrong."""
    current = await _admin(request, settings, uow)
    if isinstance(current, Response):
        return current
    try:
        csrf, body, send_email = await _posted(request)
    except MultiPartException:
        return _import_page(request, current, problem=unreadable, status_code=400)
    if not csrf_ok(request, settings, csrf):
        return _import_page(request, current, problem=EXPIRED_FORM, status_code=400)
    return current, body, send_email


@router.post("/import", response_class=HTMLResponse)
async def import_preview(
    request: Request, settings: SettingsDep, uow: UnitOfWorkDep, imports: StaffImportsDep
) -> Response:
    """The dry run: every row's outcome and problems; nothing is created."""
    posted = await _import_post(request, settings, uow, "Choose a CSV file to upload.")
    if isinstance(posted, Response):
        return posted
    current, body, _ = posted
    try:
        rows = await imports.preview(body)
    except SsoError as exc:
        return _import_page(request, current, problem=exc.message, status_code=400)
    return _import_page(request, current, rows=rows, csv_text=body.decode("utf-8-sig"))


@router.post("/import/confirm", response_class=HTMLResponse)
async def import_confirm(
    request: Request, settings: SettingsDep, uow: UnitOfWorkDep, imports: StaffImportsDep
) -> Response:
    """Import the rows the preview showed as good (checked again: the file is the same, the
    staff may not be), and with the box ticked, send their emails through a batch."""
    posted = await _import_post(request, settings, uow, "Upload the file again.")
    if isinstance(posted, Response):
        return posted
    current, body, send_email = posted
    try:
        outcome = await imports.run(body, send_email, actor_of(current), client_ip(request))
    except SsoError as exc:
        if isinstance(exc, Conflict) and not uow.session.is_active:
            raise  # another admin added an address this instant: the boundary rolls back
        return _import_page(request, current, problem=exc.message, status_code=400)
    skipped = sum(1 for r in outcome.rows if r.problems)
    text = f"Imported {len(outcome.created)} people; skipped {skipped} rows with problems."
    if outcome.batch_id is not None:
        return await _done(
            current,
            f"/admin/staff/batches/{outcome.batch_id}",
            "notice",
            text + " Their emails are being sent.",
        )
    return await _done(current, "/admin/staff", "notice", text)


@router.get("/batches/{batch_id}", response_class=HTMLResponse)
async def batch_page(
    request: Request, batch_id: uuid.UUID, settings: SettingsDep, uow: UnitOfWorkDep, batches: StaffBatchesDep
) -> Response:
    current = await _admin(request, settings, uow)
    if isinstance(current, Response):
        return current
    batch = await batches.progress(batch_id)
    return _page(request, current, "admin_batch", f"/admin/staff/batches/{batch_id}", batch=batch)


@router.post("/batches/{batch_id}/{control}", response_class=HTMLResponse)
async def batch_control(
    request: Request,
    batch_id: uuid.UUID,
    control: Literal["pause", "resume", "cancel"],
    settings: SettingsDep,
    uow: UnitOfWorkDep,
    batches: StaffBatchesDep,
    form: CsrfFormDep,
) -> Response:
    current = await _admin(request, settings, uow)
    if isinstance(current, Response):
        return current
    page = f"/admin/staff/batches/{batch_id}"
    if not csrf_ok(request, settings, form.csrf):
        return await _done(current, page, "error", EXPIRED_FORM)
    try:
        await batches.control(batch_id, control, actor_of(current), client_ip(request))
    except (Conflict, NotFound) as exc:
        return await _done(current, page, "error", exc.message)
    return await _done(current, page, "notice", f"{CONTROL_WORDS[control]} the batch.")
