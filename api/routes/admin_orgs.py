"""The organisation pages: an operator's "person icon > Settings > Organisations" (every
agency: add, change, suspend and resume), and an agency admin's "Settings > Organisation"
(their own: its name shown, its MFA policy and sender name theirs to change). Every change
goes through the services the orgs admin API uses, with the signed-in admin as the actor."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from sqlalchemy import func, select

from api.cookies import csrf_ok
from api.deps import SettingsDep, TemporalDep, UnitOfWorkDep, client_ip
from api.forms import CsrfFormDep, OrgForm, OrgFormDep
from api.org_schemas import OrgCreate, OrgPublic, OrgUpdate
from api.pages import redirect
from api.routes.admin import EXPIRED_FORM, _admin, _denied, _done, _operator, _page, _uuid, scope_of
from api.routes.admin_confirm import confirmed
from api.services.org_mfa import OrgMfaRollout, update_org
from api.services.org_suspension import OrgSuspension
from api.services.orgs import OWN_FIELDS, Orgs
from api.services.sessions import Current
from core.errors import NotFound, SsoError
from core.models import Staff
from core.orgs import AdminScope

router = APIRouter(prefix="/admin", tags=["admin pages"], include_in_schema=False)

LIST = "/admin/orgs"
GONE = "That organisation no longer exists."
OPERATORS_ONLY = (
    "Organisations are managed by agentOS. Your own organisation's MFA policy and sender name "
    "are under Settings > Organisation."
)
FIELDS = {
    "name": "Name",
    "slug": "Slug",
    "entra_tenant_ids": "Microsoft tenant ids",
    "mfa_policy": "MFA policy",
    "sender_name": "Sender name",
}
ACTIONS = ("suspend", "resume")


def _orgs(request: Request, settings: SettingsDep, uow: UnitOfWorkDep, scope: AdminScope) -> Orgs:
    return Orgs(uow.session, settings, scope, client_ip(request))


def _tenants(text: str) -> list[str]:
    return [t.strip() for t in text.replace(",", "\n").splitlines() if t.strip()]


def _body(form: OrgForm, fields: frozenset[str] | None = None) -> dict[str, Any]:
    """The form as the API's body: empty optional fields are None; `fields` limits it to
    what the admin may change."""
    body: dict[str, Any] = {
        "name": form.name,
        "slug": form.slug,
        "entra_tenant_ids": _tenants(form.entra_tenant_ids),
        "mfa_policy": form.mfa_policy or None,
        "sender_name": form.sender_name.strip() or None,
    }
    return {k: v for k, v in body.items() if fields is None or k in fields}


def _problems(exc: ValidationError) -> dict[str, str]:
    """Each refused field's message, as the API says it (the same model checks both)."""
    problems: dict[str, str] = {}
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "name"
        problems.setdefault(field, f"{FIELDS.get(field, field)}: {str(error['msg']).rstrip('.')}.")
    return problems


def _conflict(exc: SsoError) -> dict[str, str]:
    field = exc.message.split(":", 1)[0]
    return {field if field in FIELDS else "name": exc.message.rstrip(".") + "."}


def _values(org: OrgPublic) -> dict[str, str]:
    return {
        "name": org.name,
        "slug": org.slug,
        "entra_tenant_ids": "\n".join(org.entra_tenant_ids),
        "mfa_policy": org.mfa_policy or "",
        "sender_name": org.sender_name or "",
    }


async def _people(uow: UnitOfWorkDep) -> dict[uuid.UUID, int]:
    rows = await uow.session.execute(select(Staff.org_id, func.count()).group_by(Staff.org_id))
    return {org_id: count for org_id, count in rows.all()}


@router.get("/organisation", response_class=HTMLResponse)
async def own_org(request: Request, settings: SettingsDep, uow: UnitOfWorkDep) -> Response:
    """ "Settings > Organisation": the admin's own organisation."""
    current = await _admin(request, settings, uow)
    if isinstance(current, Response):
        return current
    assert current.staff is not None
    return redirect(f"{LIST}/{current.staff.org_id}")


@router.get("/orgs", response_class=HTMLResponse)
async def orgs_list(request: Request, settings: SettingsDep, uow: UnitOfWorkDep) -> Response:
    current = await _operator(request, settings, uow, OPERATORS_ONLY)
    if isinstance(current, Response):
        return current
    rows = await _orgs(request, settings, uow, await scope_of(uow, current)).all()
    return _page(request, current, "admin_orgs", LIST, rows=rows, people=await _people(uow))


@router.get("/orgs/new", response_class=HTMLResponse)
async def new_org(request: Request, settings: SettingsDep, uow: UnitOfWorkDep) -> Response:
    current = await _operator(request, settings, uow, OPERATORS_ONLY)
    if isinstance(current, Response):
        return current
    return _page(
        request,
        current,
        "admin_org_new",
        LIST,
        values=_values_of(OrgForm()),
        problems={},
        deployment_policy=settings.mfa_policy.value,
    )


def _values_of(form: OrgForm) -> dict[str, Any]:
    return form.model_dump(exclude={"csrf"})


@router.post("/orgs/new", response_class=HTMLResponse)
async def add_org(request: Request, settings: SettingsDep, uow: UnitOfWorkDep, form: OrgFormDep) -> Response:
    current = await _operator(request, settings, uow, OPERATORS_ONLY)
    if isinstance(current, Response):
        return current

    def again(problems: dict[str, str]) -> HTMLResponse:
        values = _values_of(form)
        return _page(
            request,
            current,
            "admin_org_new",
            LIST,
            status_code=400,
            values=values,
            problems=problems,
            deployment_policy=settings.mfa_policy.value,
        )

    if not csrf_ok(request, settings, form.csrf):
        return again({"csrf": EXPIRED_FORM})
    try:
        data = OrgCreate(**_body(form))
        created = await _orgs(request, settings, uow, await scope_of(uow, current)).create(data)
    except ValidationError as exc:
        return again(_problems(exc))
    except SsoError as exc:
        return again(_conflict(exc))
    return await _done(current, f"{LIST}/{created.id}", "notice", f"Added {created.name}.")


async def _org_page(
    request: Request,
    current: Current,
    orgs: Orgs,
    org_id: uuid.UUID,
    form: OrgForm | None = None,
    problems: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    org = await orgs.one(org_id)
    values = _values(org) if form is None else {**_values(org), **_body_text(form, orgs.scope)}
    return _page(
        request,
        current,
        "admin_org",
        f"{LIST}/{org.id}",
        status_code=status_code,
        org=org,
        values=values,
        problems=problems or {},
        operator=orgs.scope.is_operator,
        deployment_policy=orgs.settings.mfa_policy.value,
    )


def _body_text(form: OrgForm, scope: AdminScope) -> dict[str, str]:
    """What the admin typed, kept on a refused form (only the fields they may change)."""
    typed = _values_of(form)
    return {k: v for k, v in typed.items() if scope.is_operator or k in OWN_FIELDS}


async def _scoped(
    request: Request, settings: SettingsDep, uow: UnitOfWorkDep, org_id: str
) -> tuple[Current, Orgs, uuid.UUID] | Response:
    """An organisation's page: an operator's any, an agency admin's own; another agency's is
    the 404 page an unknown id gets."""
    current = await _admin(request, settings, uow)
    if isinstance(current, Response):
        return current
    orgs = _orgs(request, settings, uow, await scope_of(uow, current))
    wanted = _uuid(org_id)
    try:
        if wanted is None:
            raise NotFound(GONE)
        await orgs.one(wanted)
    except NotFound:
        return _denied(
            request, current.staff, 404, "No such organisation", "There is no organisation with that id."
        )
    return current, orgs, wanted


@router.get("/orgs/{org_id}", response_class=HTMLResponse)
async def org_page(request: Request, org_id: str, settings: SettingsDep, uow: UnitOfWorkDep) -> Response:
    found = await _scoped(request, settings, uow, org_id)
    if isinstance(found, Response):
        return found
    current, orgs, wanted = found
    return await _org_page(request, current, orgs, wanted)


@router.post("/orgs/{org_id}", response_class=HTMLResponse)
async def save_org(
    request: Request,
    org_id: str,
    settings: SettingsDep,
    uow: UnitOfWorkDep,
    temporal: TemporalDep,
    form: OrgFormDep,
) -> Response:
    """An operator changes every field; an agency admin only its MFA policy and sender name."""
    found = await _scoped(request, settings, uow, org_id)
    if isinstance(found, Response):
        return found
    current, orgs, wanted = found
    problems: dict[str, str] = {}
    if not csrf_ok(request, settings, form.csrf):
        problems = {"csrf": EXPIRED_FORM}
    else:
        try:
            data = OrgUpdate(**_body(form, None if orgs.scope.is_operator else OWN_FIELDS))
            updated = await update_org(orgs, OrgMfaRollout(uow, settings, temporal), wanted, data)
        except ValidationError as exc:
            problems = _problems(exc)
        except NotFound:
            return await _done(current, "/admin/staff", "error", GONE)
        except SsoError as exc:
            problems = _conflict(exc)
    if problems:
        return await _org_page(request, current, orgs, wanted, form, problems, 400)
    return await _done(current, f"{LIST}/{wanted}", "notice", f"Saved the changes to {updated.name}.")


@router.get("/orgs/{org_id}/{action}", response_class=HTMLResponse)
async def confirm_action(
    request: Request, org_id: str, action: str, settings: SettingsDep, uow: UnitOfWorkDep
) -> Response:
    """Suspend or resume: a page that says what will happen, and its one button."""
    current = await _operator(request, settings, uow, OPERATORS_ONLY)
    if isinstance(current, Response):
        return current
    wanted = _uuid(org_id)
    if action not in ACTIONS or wanted is None:
        return await _done(current, LIST, "error", "That page doesn't exist.")
    orgs = _orgs(request, settings, uow, await scope_of(uow, current))
    try:
        org = await orgs.one(wanted)
    except NotFound:
        return await _done(current, LIST, "error", GONE)
    people = (await _people(uow)).get(org.id, 0)
    return _page(
        request, current, "admin_org_confirm", f"{LIST}/{org.id}", org=org, action=action, people=people
    )


@router.post("/orgs/{org_id}/{action}", response_class=HTMLResponse)
async def act(
    request: Request,
    org_id: str,
    action: str,
    settings: SettingsDep,
    uow: UnitOfWorkDep,
    temporal: TemporalDep,
    form: CsrfFormDep,
) -> Response:
    current = await _operator(request, settings, uow, OPERATORS_ONLY)
    if isinstance(current, Response):
        return current
    wanted = _uuid(org_id)
    if action not in ACTIONS or wanted is None:
        return await _done(current, LIST, "error", "That action doesn't exist.")
    scope = await scope_of(uow, current)

    async def change() -> str:
        suspension = OrgSuspension(uow, settings, temporal, scope, client_ip(request))
        org = await (suspension.suspend(wanted) if action == "suspend" else suspension.resume(wanted))
        if action == "suspend":
            return (
                f"{org.name} is suspended: its people can't sign in until you resume it, and they are "
                "being signed out of every app (the organisation's page shows when that is done)."
            )
        return f"{org.name} is resumed: its people can sign in again."

    # A refusal (being erased, or Temporal away: the suspension itself holds) shows on its page.
    return await confirmed(
        request, settings, current, form.csrf, f"{LIST}/{wanted}", change, gone=(LIST, GONE)
    )
