"""The admin pages of a person's lifecycle: Edit (names, a new External Email 1, the leave
date) and Erase, each through the same service as the admin API, with the admin as the actor.
Registered before the admin pages' generic `POST /admin/staff/{id}/{action}`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from api.admin_words import day
from api.cookies import csrf_ok
from api.deps import SettingsDep, StaffLifecycleDep, UnitOfWorkDep, client_ip
from api.forms import AdminActionFormDep, StaffEditForm, StaffEditFormDep
from api.routes.admin import EXPIRED_FORM, _admin_and_person, _confirmation, _done, _page, scope_of
from api.routes.admin_confirm import confirmed
from api.schemas import StaffUpdate
from api.services.sessions import Current
from core.errors import ServiceUnavailable, SsoError
from core.models import Staff

router = APIRouter(prefix="/admin", tags=["admin pages"], include_in_schema=False)

EDIT_FIELDS = {
    "first_name": "First name",
    "last_name": "Last name",
    "external_email_1": "External Email 1",
    "leave_on": "Leave date",
}


def _edit_page(
    request: Request,
    current: Current,
    staff: Staff,
    values: dict[str, str],
    problems: dict[str, str],
    status_code: int = 200,
) -> HTMLResponse:
    return _page(
        request,
        current,
        "admin_edit",
        f"/admin/staff/{staff.id}",
        status_code=status_code,
        person=staff,
        values=values,
        problems=problems,
    )


def _values(staff: Staff) -> dict[str, str]:
    return {
        "first_name": staff.first_name,
        "last_name": staff.last_name,
        "external_email_1": staff.pending_external_email_1 or staff.external_email_1,
        "leave_on": staff.leave_on.isoformat() if staff.leave_on else "",
    }


def _staff_update(form: StaffEditForm) -> StaffUpdate | dict[str, str]:
    """The form as the API's StaffUpdate, or each refused field's message."""
    try:
        return StaffUpdate(
            first_name=form.first_name,
            last_name=form.last_name,
            external_email_1=form.external_email_1,
            leave_on=form.leave_on.strip() or None,  # type: ignore[arg-type]
        )
    except ValidationError as exc:
        problems: dict[str, str] = {}
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "first_name"
            problems.setdefault(field, f"{EDIT_FIELDS.get(field, field)}: {str(error['msg']).rstrip('.')}.")
        return problems


def _field_of(message: str) -> str:
    """The field a refusal is about, for the form to mark."""
    if "email" in message:
        return "external_email_1"
    return "leave_on" if "leave" in message else "form"


def _changes(before: dict[str, Any], staff: Staff, asked_email: str) -> str:
    """What the edit did, in words for the flash."""
    name = f"{staff.first_name} {staff.last_name}"
    said = []
    if (before["first_name"], before["last_name"]) != (staff.first_name, staff.last_name):
        said.append(f"Their name is now {name}.")
    if before["leave_on"] != staff.leave_on:
        said.append(
            f"They leave on {day(staff.leave_on)}: they are disabled at the start of that day."
            if staff.leave_on
            else "Their leave date was cleared."
        )
    if staff.pending_external_email_1 and staff.pending_external_email_1 != before["pending"]:
        said.append(
            f"A code was emailed to {asked_email}: it becomes their External Email 1 and sign-in "
            "email once they enter it on their account page."
        )
    return " ".join(said) or f"Nothing changed for {name}."


@router.get("/staff/{staff_id}/edit", response_class=HTMLResponse)
async def edit_page(request: Request, staff_id: str, settings: SettingsDep, uow: UnitOfWorkDep) -> Response:
    found = await _admin_and_person(request, settings, uow, staff_id)
    if isinstance(found, Response):
        return found
    current, staff = found
    return _edit_page(request, current, staff, _values(staff), {})


@router.post("/staff/{staff_id}/edit", response_class=HTMLResponse)
async def edit(
    request: Request,
    staff_id: str,
    settings: SettingsDep,
    uow: UnitOfWorkDep,
    lifecycle: StaffLifecycleDep,
    form: StaffEditFormDep,
) -> Response:
    found = await _admin_and_person(request, settings, uow, staff_id)
    if isinstance(found, Response):
        return found
    current, staff = found
    values = form.model_dump(include=set(EDIT_FIELDS))
    if not csrf_ok(request, settings, form.csrf):
        return _edit_page(request, current, staff, values, {"csrf": EXPIRED_FORM}, status_code=400)
    data = _staff_update(form)
    if isinstance(data, dict):
        return _edit_page(request, current, staff, values, data, status_code=400)
    before = {
        "first_name": staff.first_name,
        "last_name": staff.last_name,
        "leave_on": staff.leave_on,
        "pending": staff.pending_external_email_1,
    }
    try:
        await lifecycle.update(staff.id, data, await scope_of(uow, current), client_ip(request))
    except SsoError as exc:
        if not uow.session.is_active:
            raise
        await uow.session.refresh(staff)
        # Temporal away: nothing changed (the service starts the flows before it writes).
        status_code = 503 if isinstance(exc, ServiceUnavailable) else 409
        return _edit_page(
            request, current, staff, values, {_field_of(exc.message): exc.message}, status_code=status_code
        )
    return await _done(
        current, f"/admin/staff/{staff.id}", "notice", _changes(before, staff, form.external_email_1)
    )


@router.get("/staff/{staff_id}/erase", response_class=HTMLResponse)
async def erase_page(request: Request, staff_id: str, settings: SettingsDep, uow: UnitOfWorkDep) -> Response:
    """Erase asks first, naming everything it removes and what it keeps."""
    return await _confirmation(request, staff_id, settings, uow, "admin_erase")


@router.post("/staff/{staff_id}/erase", response_class=HTMLResponse)
async def erase(
    request: Request,
    staff_id: str,
    settings: SettingsDep,
    uow: UnitOfWorkDep,
    lifecycle: StaffLifecycleDep,
    form: AdminActionFormDep,
) -> Response:
    found = await _admin_and_person(request, settings, uow, staff_id)
    if isinstance(found, Response):
        return found
    current, staff = found
    assert current.staff is not None
    by = current.staff.id

    async def erase_them() -> str:
        await lifecycle.erase(staff.id, await scope_of(uow, current), client_ip(request), by=by)
        return (
            "The staff member was erased: their personal data is gone, and their audit trail is "
            "kept under a pseudonym."
        )

    return await confirmed(
        request,
        settings,
        current,
        form.csrf,
        f"/admin/staff/{staff.id}",
        erase_them,
        refused=f"Erase {staff.first_name} {staff.last_name}: ",
        then="/admin/staff",
    )
