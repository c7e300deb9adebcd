"""The admin's staff pages: "person icon > Settings > Staff", the Actions menu on each record,
and a person's flow history and audit trail.

Admins are staff with the admin role, signed in through the same Single Sign-On with a second
factor (authenticator code or Microsoft-Entra). Every action goes through the same services
as the admin API, with the admin as the actor.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from sqlalchemy import select

from api import admin_words
from api.cookies import SIGNIN_SESSION, csrf_ok, read_cookie
from api.deps import MfaNoticesDep, OnboardingDep, SettingsDep, UnitOfWorkDep, client_ip, get_temporal
from api.forms import AdminActionFormDep, StaffForm, StaffFormDep
from api.pages import redirect, render_page
from api.schemas import StaffCreate
from api.services import staff as staff_service
from api.services.accounts import AccountAdmin
from api.services.mfa_obligation import MfaObligations
from api.services.sessions import Current, Sessions
from api.services.staff_status import StaffStatus
from core.errors import Conflict, NotFound, SsoError
from core.models import Organisation, Staff, utcnow
from core.orgs import AdminScope, staff_scope
from core.times import email_at

router = APIRouter(prefix="/admin", tags=["admin pages"], include_in_schema=False)

PAGE_SIZE = 25
ACTIONS = {
    "send-email": "Send Single Sign-On Email",
    "cancel-setup": "Cancel the setup in progress",
    "revoke-sessions": "Sign out everywhere",
    "unlock": "Unlock sign-in",
    "unlink-entra": "Unlink Microsoft-Entra",
    "reset-mfa": "Reset MFA",
    "disable": "Disable",
    "enable": "Enable",
    "extend-mfa": "Extend the MFA deadline",
}


EXPIRED_FORM = "That form had expired, so nothing was done. Please try again."
ACTOR_LIMIT = 200  # audit_events.actor and sso_setups.requested_by


def actor_of(current: Current) -> str:
    """Audit entries name the admin, not just an id (long names shortened to fit)."""
    assert current.staff is not None
    prefix = f"staff:{current.staff.id} ("
    name = f"{current.staff.first_name} {current.staff.last_name}"
    room = ACTOR_LIMIT - len(prefix) - 1
    return f"{prefix}{name if len(name) <= room else name[: room - 1] + '…'})"


async def _admin(request: Request, settings: SettingsDep, uow: UnitOfWorkDep) -> Current | Response:
    current = await Sessions(settings, uow.session).signed_in(read_cookie(request, settings, SIGNIN_SESSION))
    # The session's last-seen time is kept now: no write stays open while the actions wait
    # on Temporal, whose worker writes to the same database.
    await uow.commit_now()
    if current is None or current.staff is None:
        # After signing in again, a form's action can't be replayed: land on its page.
        path = request.url.path if request.method == "GET" else request.url.path.rsplit("/", 1)[0]
        return redirect(f"/sso/login?return_to={quote(path, safe='/')}")
    if not current.staff.is_admin:
        return _denied(
            request,
            current.staff,
            403,
            "This page is for administrators",
            "Your staff login doesn't have the administrator role. Ask an administrator if you need it.",
        )
    if not current.strong:
        return _denied(
            request,
            current.staff,
            403,
            "Sign in with MFA to manage staff",
            "Staff administration needs a sign-in with your "
            "authenticator app or with Microsoft-Entra. Sign out, then sign in "
            "again with one of them.",
        )
    return current


APPS_BY_OPERATORS = (
    "Apps are managed for every agency at once, by agentOS. Contact agentOS support to change one."
)


async def _operator(
    request: Request, settings: SettingsDep, uow: UnitOfWorkDep, why: str = APPS_BY_OPERATORS
) -> Current | Response:
    """A deployment-wide page (the apps, the organisations): for operators; an agency's admin
    gets a 403 that says only that."""
    current = await _admin(request, settings, uow)
    if isinstance(current, Response) or (await scope_of(uow, current)).is_operator:
        return current
    return _denied(request, current.staff, 403, "This page is for agentOS operators", why)


async def scope_of(uow: UnitOfWorkDep, current: Current) -> AdminScope:
    """The signed-in admin's scope: their organisation, or every one for an operator."""
    assert current.staff is not None
    return await staff_scope(uow.session, current.staff, actor_of(current))


async def _organisations(uow: UnitOfWorkDep) -> dict[uuid.UUID, Organisation]:
    """Every organisation by id, for the headers and the operator's column and filter."""
    rows = await uow.session.scalars(select(Organisation).order_by(Organisation.name))
    return {org.id: org for org in rows.all()}


def _denied(request: Request, me: Staff | None, status_code: int, title: str, message: str) -> HTMLResponse:
    return render_page(request, "admin_denied", status_code, title=title, message=message, me=me)


def _uuid(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


def _flash(current: Current) -> dict[str, str] | None:
    flash = current.row.data.get("flash")
    if isinstance(flash, dict):
        current.row.data = {k: v for k, v in current.row.data.items() if k != "flash"}
        return {"kind": str(flash.get("kind", "notice")), "text": str(flash.get("text", ""))}
    return None


def _page(request: Request, current: Current, name: str, back: str, **context: Any) -> HTMLResponse:
    """An admin page: the admin's name, what their last action did (once), and where an
    action taken on this page comes back to."""
    return render_page(
        request,
        name,
        flash=_flash(current),
        back=back,
        admin=current.staff,
        now=utcnow(),
        words=admin_words,
        **context,
    )


@router.get("/staff", response_class=HTMLResponse)
async def staff_list(
    request: Request,
    settings: SettingsDep,
    uow: UnitOfWorkDep,
    q: Annotated[str, Query(max_length=100)] = "",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    org: Annotated[str, Query(max_length=63)] = "",
) -> Response:
    """The admin's agency's people; an operator's list has every organisation's, with an
    Organisation column and a filter (when there is more than one)."""
    current = await _admin(request, settings, uow)
    if isinstance(current, Response):
        return current
    scope = await scope_of(uow, current)
    orgs = await _organisations(uow)
    query = q.strip()
    chosen = next((o for o in orgs.values() if o.slug == org), None) if scope.is_operator else None
    rows, total = await staff_service.list_staff(
        uow.session, PAGE_SIZE, (page - 1) * PAGE_SIZE, query or None, scope, chosen.id if chosen else None
    )
    filters = {"q": query} if query else {}
    if chosen is not None:
        filters["org"] = chosen.slug
    back = "/admin/staff?" + "&".join(f"{k}={quote(str(v))}" for k, v in {**filters, "page": page}.items())
    pages = max(1, math.ceil(total / PAGE_SIZE))
    return _page(
        request,
        current,
        "admin_staff",
        back,
        rows=rows,
        total=total,
        q=query,
        page=page,
        pages=pages,
        filters=filters,
        orgs=orgs if scope.is_operator and len(orgs) > 1 else {},
        chosen=chosen,
        agency=_agency(scope, orgs),
    )


def _agency(scope: AdminScope, orgs: dict[uuid.UUID, Organisation]) -> str | None:
    """The agency an organisation's admin manages, named in the header once there are
    several (a one-organisation deployment looks as it always did)."""
    if scope.org_id is None or len(orgs) <= 1:
        return None
    org = orgs.get(scope.org_id)
    return org.name if org else None


STAFF_FIELDS = {
    "first_name": "First name",
    "last_name": "Last name",
    "external_email_1": "External Email 1",
    "is_admin": "Administrator",
}
ADMIN_CHOICES = {"no": False, "yes": True}


async def _new_staff_page(
    request: Request,
    uow: UnitOfWorkDep,
    current: Current,
    form: StaffForm,
    problems: dict[str, str],
    status_code: int = 200,
) -> HTMLResponse:
    """The Add staff form; an operator also chooses the organisation (their own at first)."""
    values = form.model_dump(include=set(STAFF_FIELDS))
    return _page(
        request,
        current,
        "admin_staff_new",
        "/admin/staff",
        status_code=status_code,
        values=values,
        problems=problems,
        **await org_choices(uow, current, form.org),
    )


async def _new_staff_org(uow: UnitOfWorkDep, current: Current, form: StaffForm) -> uuid.UUID | None:
    return await chosen_org(uow, current, form.org)


async def chosen_org(uow: UnitOfWorkDep, current: Current, slug: str | None) -> uuid.UUID | None:
    """Where a page adds people: an admin's own organisation; for an operator, the one chosen
    by its slug, or their own (None: no such organisation)."""
    assert current.staff is not None
    scope = await scope_of(uow, current)
    if scope.org_id is not None:
        return scope.org_id
    if not slug:
        return current.staff.org_id
    chosen = next((o for o in (await _organisations(uow)).values() if o.slug == slug), None)
    return chosen.id if chosen else None


async def org_choices(uow: UnitOfWorkDep, current: Current, slug: str | None) -> dict[str, Any]:
    """The organisation picker's context on a page adding people: shown to an operator of a
    deployment of several organisations, their own preselected."""
    assert current.staff is not None
    orgs = await _organisations(uow)
    scope = await scope_of(uow, current)
    own = orgs.get(current.staff.org_id)
    return {
        "orgs": orgs if scope.is_operator and len(orgs) > 1 else {},
        "chosen_org": slug or (own.slug if own else ""),
    }


def _staff_create(form: StaffForm) -> StaffCreate | dict[str, str]:
    """The form as the API's StaffCreate, or each refused field's message, said as the API
    says it (the same model checks both)."""
    if form.is_admin not in ADMIN_CHOICES:
        return {"is_admin": "Administrator: must be yes or no."}
    try:
        return StaffCreate(
            first_name=form.first_name,
            last_name=form.last_name,
            external_email_1=form.external_email_1,
            is_admin=ADMIN_CHOICES[form.is_admin],
        )
    except ValidationError as exc:
        problems: dict[str, str] = {}
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "first_name"
            problems.setdefault(field, f"{STAFF_FIELDS.get(field, field)}: {str(error['msg']).rstrip('.')}.")
        return problems


@router.get("/staff/new", response_class=HTMLResponse)
async def new_staff(request: Request, settings: SettingsDep, uow: UnitOfWorkDep) -> Response:
    current = await _admin(request, settings, uow)
    if isinstance(current, Response):
        return current
    return await _new_staff_page(request, uow, current, StaffForm(), {})


@router.post("/staff/new", response_class=HTMLResponse)
async def add_staff(
    request: Request, settings: SettingsDep, uow: UnitOfWorkDep, form: StaffFormDep
) -> Response:
    """Add staff: the API's create, audited with the admin as the actor, then their page."""
    current = await _admin(request, settings, uow)
    if isinstance(current, Response):
        return current
    if not csrf_ok(request, settings, form.csrf):
        return await _new_staff_page(request, uow, current, form, {"csrf": EXPIRED_FORM}, status_code=400)
    data = _staff_create(form)
    if isinstance(data, dict):
        return await _new_staff_page(request, uow, current, form, data, status_code=400)
    org_id = await _new_staff_org(uow, current, form)
    if org_id is None:
        problem = {"org": "Organisation: choose one from the list."}
        return await _new_staff_page(request, uow, current, form, problem, status_code=400)
    scope = await scope_of(uow, current)
    try:
        staff = await staff_service.create_staff(uow.session, data, scope, client_ip(request), org_id)
    except Conflict as exc:
        if not uow.session.is_active:
            raise  # another admin added the address this instant: the boundary rolls back
        return await _new_staff_page(
            request, uow, current, form, {"external_email_1": exc.message + "."}, status_code=409
        )
    return await _done(
        current,
        f"/admin/staff/{staff.id}",
        "notice",
        f"Added {staff.first_name} {staff.last_name}. To set up their Single Sign-On, open Actions "
        "and choose Send Single Sign-On Email.",
    )


@router.get("/staff/{staff_id}", response_class=HTMLResponse)
async def person(
    request: Request, staff_id: str, settings: SettingsDep, uow: UnitOfWorkDep, onboarding: OnboardingDep
) -> Response:
    found = await _admin_and_person(request, settings, uow, staff_id)
    if isinstance(found, Response):
        return found
    current, staff = found
    scope = await scope_of(uow, current)
    [overview] = await staff_service.overviews(uow.session, [staff])
    orgs = await _organisations(uow)
    return _page(
        request,
        current,
        "admin_person",
        f"/admin/staff/{staff.id}",
        person=staff,
        view=overview,
        status=await onboarding.status(staff.id, scope),
        history=await staff_service.history(uow.session, staff.id),
        agency=_agency(scope, orgs),
        person_org=orgs[staff.org_id].name if scope.is_operator and len(orgs) > 1 else None,
    )


async def _admin_and_person(
    request: Request, settings: SettingsDep, uow: UnitOfWorkDep, staff_id: str
) -> tuple[Current, Staff] | Response:
    """A person's page: for an administrator only, and a 404 page for an unknown id or a
    person of another organisation (whose existence an agency's admin never learns)."""
    current = await _admin(request, settings, uow)
    if isinstance(current, Response):
        return current
    staff = await _person(uow, current, _uuid(staff_id))
    if staff is None:
        return _denied(
            request, current.staff, 404, "No such person", "There is no staff member with that id."
        )
    return current, staff


async def _person(uow: UnitOfWorkDep, current: Current, staff_id: uuid.UUID | None) -> Staff | None:
    """The person, when the admin's scope sees them."""
    if staff_id is None:
        return None
    try:
        return await staff_service.get_staff(uow.session, staff_id, await scope_of(uow, current))
    except NotFound:
        return None


@router.get("/staff/{staff_id}/reset-mfa", response_class=HTMLResponse)
async def confirm_reset_mfa(
    request: Request, staff_id: str, settings: SettingsDep, uow: UnitOfWorkDep
) -> Response:
    """Reset MFA asks first: it signs the person out everywhere."""
    return await _confirmation(request, staff_id, settings, uow, "admin_reset_mfa")


@router.get("/staff/{staff_id}/disable", response_class=HTMLResponse)
async def confirm_disable(
    request: Request, staff_id: str, settings: SettingsDep, uow: UnitOfWorkDep
) -> Response:
    """Disable asks first, naming what it ends."""
    return await _confirmation(request, staff_id, settings, uow, "admin_disable", change="disable")


@router.get("/staff/{staff_id}/enable", response_class=HTMLResponse)
async def confirm_enable(
    request: Request, staff_id: str, settings: SettingsDep, uow: UnitOfWorkDep
) -> Response:
    return await _confirmation(request, staff_id, settings, uow, "admin_disable", change="enable")


async def _confirmation(
    request: Request, staff_id: str, settings: SettingsDep, uow: UnitOfWorkDep, page: str, **context: str
) -> Response:
    """The page an action asks on first; its button posts the action."""
    found = await _admin_and_person(request, settings, uow, staff_id)
    if isinstance(found, Response):
        return found
    current, staff = found
    return _page(request, current, page, f"/admin/staff/{staff.id}", person=staff, **context)


def _sessions_ended(count: int) -> str:
    return f"{count} session{'s' if count != 1 else ''}"


@router.post("/staff/{staff_id}/{action}", response_class=HTMLResponse)
async def act(
    request: Request,
    staff_id: uuid.UUID,
    action: str,
    settings: SettingsDep,
    uow: UnitOfWorkDep,
    onboarding: OnboardingDep,
    notices: MfaNoticesDep,
    form: AdminActionFormDep,
) -> Response:
    current = await _admin(request, settings, uow)
    if isinstance(current, Response):
        return current
    back = form.back
    target = back if back.startswith("/admin/staff") and "//" not in back else "/admin/staff"
    if action not in ACTIONS:
        return _denied(
            request,
            current.staff,
            404,
            "No such action",
            "That action doesn't exist.",
        )
    if not csrf_ok(request, settings, form.csrf):
        return await _done(current, target, "error", EXPIRED_FORM)
    db = uow.session
    staff = await _person(uow, current, staff_id)
    if staff is None:
        return await _done(current, target, "error", "That person no longer exists.")
    scope = await scope_of(uow, current)
    actor, ip = scope.actor, client_ip(request)
    name = f"{staff.first_name} {staff.last_name}"
    accounts = AccountAdmin(db, settings, get_temporal(request))

    async def send() -> str:
        await onboarding.send_email(staff_id, scope, ip)
        return (
            f"Single Sign-On email sent to {staff.external_email_1}. The link is valid for "
            f"{int(settings.setup_link_ttl.total_seconds() // 60)} minutes."
        )

    async def cancel() -> str:
        await onboarding.cancel(staff_id, scope, ip)
        return f"The Single Sign-On setup for {name} was cancelled; its link no longer works."

    async def revoke() -> str:
        count = await accounts.revoke_sessions(staff_id, scope, ip)
        return f"{name} was signed out everywhere ({_sessions_ended(count)})."

    async def unlock() -> str:
        await accounts.unlock(staff_id, scope, ip)
        return f"Sign-in for {name} is unlocked."

    async def unlink() -> str:
        link = await accounts.unlink_entra(staff_id, scope, ip)
        return (
            f"The Microsoft account {link.email or link.object_id} was unlinked from {name}, "
            "and their sessions were ended."
        )

    async def reset_mfa() -> str:
        count = await accounts.reset_mfa(staff_id, scope, ip, notices)
        return (
            f"MFA for {name} was reset: their authenticator app and recovery codes were removed, "
            f"they were signed out everywhere ({_sessions_ended(count)}) and told by email. They "
            "sign in with their password and can set up MFA again from their account page."
        )

    staff_status = StaffStatus(uow, settings, get_temporal(request))

    async def disable() -> str:
        assert current.staff is not None
        await staff_status.disable(staff_id, scope, ip, by=current.staff.id)
        return f"{name} was disabled: signed out of every app, and can't sign in until enabled."

    async def enable() -> str:
        await staff_status.enable(staff_id, scope, ip)
        return f"{name} was enabled: they can sign in again (their old sessions stay ended)."

    async def extend_mfa() -> str:
        obligations = MfaObligations(settings, db, accounts.flows)
        obligation = await obligations.extend(staff, actor, ip)
        due = email_at(obligation.due_at, settings.zone)
        return f"The MFA deadline for {name} was extended once, to {due}. It can't be extended again."

    steps: dict[str, Callable[[], Awaitable[str]]] = {
        "send-email": send,
        "cancel-setup": cancel,
        "revoke-sessions": revoke,
        "unlock": unlock,
        "unlink-entra": unlink,
        "reset-mfa": reset_mfa,
        "disable": disable,
        "enable": enable,
        "extend-mfa": extend_mfa,
    }
    try:
        text = await steps[action]()
    except SsoError as problem:
        return await _done(current, target, "error", f"{ACTIONS[action]} for {name}: {problem.message}")
    return await _done(current, target, "notice", text)


async def _done(current: Current, target: str, kind: str, text: str) -> Response:
    """Post/redirect/get: the next page shows what happened, once."""
    current.row.data = {**current.row.data, "flash": {"kind": kind, "text": text}}
    return redirect(target)
