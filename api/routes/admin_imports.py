"""The admin's bulk pages: Settings > Staff > Import from CSV (upload, a dry-run preview of
every row, then "Import N people"), and a staff batch's progress with Pause, Resume and
Cancel. The same services as the admin API, with the admin as the actor."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from api.cookies import csrf_ok
from api.deps import SettingsDep, StaffBatchesDep, StaffImportsDep, UnitOfWorkDep, client_ip
from api.forms import CsrfFormDep
from api.routes.admin import EXPIRED_FORM, _admin, _done, _page, chosen_org, org_choices, scope_of
from api.services.sessions import Current
from api.services.staff_import import MAX_IMPORT_BYTES, CheckedRow
from core.errors import Conflict, NotFound, SsoError
from core.orgs import AdminScope

router = APIRouter(prefix="/admin/staff", tags=["admin pages"], include_in_schema=False)

IMPORT_PAGE = "/admin/staff/import"
UNKNOWN_ORG = "Choose the organisation the people join from the list."
CONTROL_WORDS = {"pause": "Paused", "resume": "Resumed", "cancel": "Cancelled"}


async def _import_page(
    request: Request,
    uow: UnitOfWorkDep,
    current: Current,
    *,
    rows: list[CheckedRow] | None = None,
    csv_text: str = "",
    org: str | None = None,
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
        **await org_choices(uow, current, org),
    )


@dataclass
class _Posted:
    csrf: str
    body: bytes
    send_email: bool
    org: str  # the organisation an operator chose (its slug), or ""


async def _posted(request: Request) -> _Posted:
    """The posted form's CSRF token, its CSV (an uploaded file or the preview's field),
    whether to send the emails and the organisation chosen; multipart, so a whole file fits."""
    form = await request.form(max_files=1, max_fields=5, max_part_size=MAX_IMPORT_BYTES + 1)
    upload = form.get("file")
    if isinstance(upload, UploadFile):
        body = await upload.read(MAX_IMPORT_BYTES + 1)
    else:
        text = form.get("csv")
        body = text.encode() if isinstance(text, str) else b""
    csrf, org = form.get("csrf"), form.get("org")
    return _Posted(
        csrf if isinstance(csrf, str) else "",
        body,
        form.get("send_email") == "yes",
        org if isinstance(org, str) else "",
    )


@router.get("/import", response_class=HTMLResponse)
async def import_form(request: Request, settings: SettingsDep, uow: UnitOfWorkDep) -> Response:
    current = await _admin(request, settings, uow)
    if isinstance(current, Response):
        return current
    return await _import_page(request, uow, current)


async def _import_post(
    request: Request, settings: SettingsDep, uow: UnitOfWorkDep, unreadable: str
) -> Response | tuple[Current, _Posted, AdminScope, uuid.UUID]:
    """The signed-in admin, the posted form, the admin's scope and the organisation the
    people join, or the page saying what is wrong."""
    current = await _admin(request, settings, uow)
    if isinstance(current, Response):
        return current
    try:
        posted = await _posted(request)
    except MultiPartException:
        return await _import_page(request, uow, current, problem=unreadable, status_code=400)
    if not csrf_ok(request, settings, posted.csrf):
        return await _import_page(request, uow, current, problem=EXPIRED_FORM, status_code=400)
    org_id = await chosen_org(uow, current, posted.org)
    if org_id is None:
        return await _import_page(request, uow, current, problem=UNKNOWN_ORG, status_code=400)
    return current, posted, await scope_of(uow, current), org_id


@router.post("/import", response_class=HTMLResponse)
async def import_preview(
    request: Request, settings: SettingsDep, uow: UnitOfWorkDep, imports: StaffImportsDep
) -> Response:
    """The dry run: every row's outcome and problems; nothing is created."""
    posted = await _import_post(request, settings, uow, "Choose a CSV file to upload.")
    if isinstance(posted, Response):
        return posted
    current, form, scope, org_id = posted
    try:
        rows = await imports.preview(form.body, scope, org_id)
    except SsoError as exc:
        return await _import_page(request, uow, current, problem=exc.message, status_code=400)
    return await _import_page(
        request, uow, current, rows=rows, csv_text=form.body.decode("utf-8-sig"), org=form.org
    )


@router.post("/import/confirm", response_class=HTMLResponse)
async def import_confirm(
    request: Request, settings: SettingsDep, uow: UnitOfWorkDep, imports: StaffImportsDep
) -> Response:
    """Import the rows the preview showed as good (checked again: the file is the same, the
    staff may not be), and with the box ticked, send their emails through a batch."""
    posted = await _import_post(request, settings, uow, "Upload the file again.")
    if isinstance(posted, Response):
        return posted
    current, form, scope, org_id = posted
    try:
        outcome = await imports.run(form.body, form.send_email, scope, client_ip(request), org_id)
    except SsoError as exc:
        if isinstance(exc, Conflict) and not uow.session.is_active:
            raise  # another admin added an address this instant: the boundary rolls back
        return await _import_page(request, uow, current, problem=exc.message, status_code=400, org=form.org)
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
    batch = await batches.progress(batch_id, await scope_of(uow, current))
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
        await batches.control(batch_id, control, await scope_of(uow, current), client_ip(request))
    except (Conflict, NotFound) as exc:
        return await _done(current, page, "error", exc.message)
    return await _done(current, page, "notice", f"{CONTROL_WORDS[control]} the batch.")
