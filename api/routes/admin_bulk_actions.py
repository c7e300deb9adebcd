"""The staff list's bulk actions: the people selected, an action (Send Single Sign-On Email,
Sign out everywhere, Disable), a confirmation naming how many people and what will happen,
then each person's outcome. Each person goes through the same service as the single action."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from api.admin_words import BULK_ACTIONS, BULK_EXPLANATIONS
from api.cookies import csrf_ok
from api.deps import OnboardingDep, SettingsDep, UnitOfWorkDep, client_ip, get_temporal
from api.forms import BulkFormDep
from api.routes.admin import EXPIRED_FORM, _admin, _done, _page, _sessions_ended, scope_of
from api.services.accounts import AccountAdmin
from api.services.staff import get_staff
from api.services.staff_status import StaffStatus
from core.errors import NotFound, SsoError
from core.models import Staff
from core.orgs import AdminScope

router = APIRouter(prefix="/admin", tags=["admin pages"], include_in_schema=False)

NOTHING_SELECTED = "Select the people first: tick the box in front of each name."


@router.post("/staff/bulk", response_class=HTMLResponse)
async def bulk(
    request: Request, settings: SettingsDep, uow: UnitOfWorkDep, onboarding: OnboardingDep, form: BulkFormDep
) -> Response:
    current = await _admin(request, settings, uow)
    if isinstance(current, Response):
        return current
    back = form.back if form.back.startswith("/admin/staff") and "//" not in form.back else "/admin/staff"
    if not csrf_ok(request, settings, form.csrf):
        return await _done(current, back, "error", EXPIRED_FORM)
    if form.action not in BULK_ACTIONS:
        return await _done(current, back, "error", "Choose what to do with the people selected.")
    scope = await scope_of(uow, current)
    people = await _people(uow.session, form.ids, scope)
    if not people:
        return await _done(current, back, "error", NOTHING_SELECTED)
    label = BULK_ACTIONS[form.action]
    if form.confirmed != "yes":
        return _page(
            request,
            current,
            "admin_bulk",
            back,
            people=people,
            action=form.action,
            label=label,
            explanation=BULK_EXPLANATIONS[form.action],
            outcomes=None,
        )
    ip = client_ip(request)
    assert current.staff is not None
    me = current.staff.id
    accounts = AccountAdmin(uow.session, settings, get_temporal(request))
    staff_status = StaffStatus(uow, settings, get_temporal(request))

    async def send(staff: Staff) -> str:
        await onboarding.send_email(staff.id, scope, ip)
        return f"Single Sign-On email sent to {staff.external_email_1}."

    async def revoke(staff: Staff) -> str:
        count = await accounts.revoke_sessions(staff.id, scope, ip)
        return f"Signed out everywhere ({_sessions_ended(count)})."

    async def disable(staff: Staff) -> str:
        await staff_status.disable(staff.id, scope, ip, by=me)
        return "Disabled: signed out of every app, and can't sign in until enabled."

    steps: dict[str, Callable[[Staff], Awaitable[str]]] = {
        "send-email": send,
        "revoke-sessions": revoke,
        "disable": disable,
    }
    outcomes: list[tuple[Staff, bool, str]] = []
    for staff in people:
        try:
            outcomes.append((staff, True, await steps[form.action](staff)))
        except SsoError as problem:
            outcomes.append((staff, False, problem.message))
    return _page(
        request,
        current,
        "admin_bulk",
        back,
        people=people,
        action=form.action,
        label=label,
        outcomes=outcomes,
        done=sum(1 for _staff, ok, _text in outcomes if ok),
    )


async def _people(session: AsyncSession, ids: list[str], scope: AdminScope) -> list[Staff]:
    """The selected people that exist and the admin's scope sees (another organisation's
    are left out as unknown ids are), each once, in the order selected."""
    people: dict[uuid.UUID, Staff] = {}
    for text in ids:
        try:
            staff_id = uuid.UUID(text)
        except ValueError:
            continue
        if staff_id in people:
            continue
        try:
            people[staff_id] = await get_staff(session, staff_id, scope)
        except NotFound:
            continue
    return list(people.values())
