"""The admin's app pages: "person icon > Settings > Apps", the apps that sign people in
through the OpenID Connect provider. Every change goes through the service the clients admin
API uses (api/services/oidc_clients.py), with the signed-in admin as the actor."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from api.client_schemas import ClientCreate, ClientUpdate
from api.cookies import csrf_ok
from api.deps import SettingsDep, UnitOfWorkDep, client_ip
from api.forms import AppForm, AppFormDep, CsrfFormDep
from api.routes.admin import EXPIRED_FORM, _done, _operator, _page, actor_of
from api.services.oidc_clients import Clients, public_view
from api.services.sessions import Current
from core.errors import NotFound, SsoError

router = APIRouter(prefix="/admin/apps", tags=["admin pages"], include_in_schema=False)

LIST = "/admin/apps"
APP_TYPES = {"confidential": "client_secret_basic", "public": "none"}
FIELDS = {"client_name": "Name", "redirect_uris": "Redirect URIs"}
GONE = "That app no longer exists."


def _clients(request: Request, settings: SettingsDep, uow: UnitOfWorkDep, current: Current) -> Clients:
    return Clients(settings, uow.session, actor_of(current), client_ip(request))


def _uris(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _problems(exc: ValidationError) -> dict[str, str]:
    """Each refused field's message, said as the API says it (the same model checks both)."""
    problems: dict[str, str] = {}
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "client_name"
        problems.setdefault(field, f"{FIELDS.get(field, field)}: {str(error['msg']).rstrip('.')}.")
    return problems


def _form_page(
    request: Request,
    current: Current,
    name: str,
    form: AppForm,
    problems: dict[str, str],
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    return _page(
        request,
        current,
        name,
        LIST,
        status_code=status_code,
        values=form.model_dump(exclude={"csrf"}),
        problems=problems,
        **context,
    )


@router.get("", response_class=HTMLResponse)
async def apps(request: Request, settings: SettingsDep, uow: UnitOfWorkDep) -> Response:
    current = await _operator(request, settings, uow)
    if isinstance(current, Response):
        return current
    rows = await _clients(request, settings, uow, current).all()
    return _page(request, current, "admin_apps", LIST, rows=rows)


@router.get("/new", response_class=HTMLResponse)
async def new_app(request: Request, settings: SettingsDep, uow: UnitOfWorkDep) -> Response:
    current = await _operator(request, settings, uow)
    if isinstance(current, Response):
        return current
    return _form_page(request, current, "admin_app_new", AppForm(), {})


@router.post("/new", response_class=HTMLResponse)
async def register_app(
    request: Request, settings: SettingsDep, uow: UnitOfWorkDep, form: AppFormDep
) -> Response:
    """Register an app; a confidential app's secret is on the answer to this post only."""
    current = await _operator(request, settings, uow)
    if isinstance(current, Response):
        return current
    if not csrf_ok(request, settings, form.csrf):
        return _form_page(request, current, "admin_app_new", form, {"csrf": EXPIRED_FORM}, 400)
    if form.app_type not in APP_TYPES:
        return _form_page(request, current, "admin_app_new", form, {"app_type": "Type: choose one."}, 400)
    try:
        data = ClientCreate(
            client_name=form.client_name,
            redirect_uris=_uris(form.redirect_uris),
            token_endpoint_auth_method=APP_TYPES[form.app_type],  # type: ignore[arg-type]
            require_consent=form.require_consent == "yes",
        )
        created = await _clients(request, settings, uow, current).create(data)
    except ValidationError as exc:
        return _form_page(request, current, "admin_app_new", form, _problems(exc), 400)
    except SsoError as exc:
        return _form_page(request, current, "admin_app_new", form, {"redirect_uris": exc.message + "."}, 400)
    return _secret_page(
        request, current, created.client_id, created.client_name, created.client_secret, new=True
    )


def _secret_page(
    request: Request, current: Current, client_id: str, name: str, secret: str | None, *, new: bool
) -> HTMLResponse:
    return _page(
        request,
        current,
        "admin_app_secret",
        f"{LIST}/{client_id}",
        client_id=client_id,
        app_name=name,
        secret=secret,
        new=new,
        discovery=f"{request.app.state.settings.public_url}/.well-known/openid-configuration",
    )


async def _app_page(
    request: Request,
    current: Current,
    clients: Clients,
    client_id: str,
    form: AppForm | None = None,
    problems: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    app = public_view(await clients.get(client_id))
    if form is None:
        form = AppForm(
            client_name=app.client_name,
            redirect_uris="\n".join(app.redirect_uris),
            app_type="public" if app.token_endpoint_auth_method == "none" else "confidential",  # noqa: S105
            require_consent="yes" if app.require_consent else "no",
        )
    return _form_page(request, current, "admin_app", form, problems or {}, status_code, app=app)


@router.get("/{client_id}", response_class=HTMLResponse)
async def app_page(request: Request, client_id: str, settings: SettingsDep, uow: UnitOfWorkDep) -> Response:
    current = await _operator(request, settings, uow)
    if isinstance(current, Response):
        return current
    try:
        return await _app_page(request, current, _clients(request, settings, uow, current), client_id)
    except NotFound:
        return await _done(current, LIST, "error", GONE)


@router.post("/{client_id}", response_class=HTMLResponse)
async def save_app(
    request: Request, client_id: str, settings: SettingsDep, uow: UnitOfWorkDep, form: AppFormDep
) -> Response:
    current = await _operator(request, settings, uow)
    if isinstance(current, Response):
        return current
    clients = _clients(request, settings, uow, current)
    problems: dict[str, str] = {}
    try:
        if not csrf_ok(request, settings, form.csrf):
            problems = {"csrf": EXPIRED_FORM}
        else:
            data = ClientUpdate(
                client_name=form.client_name,
                redirect_uris=_uris(form.redirect_uris),
                require_consent=form.require_consent == "yes",
            )
            updated = await clients.update(client_id, data)
    except ValidationError as exc:
        problems = _problems(exc)
    except NotFound:
        return await _done(current, LIST, "error", GONE)
    except SsoError as exc:
        problems = {"redirect_uris": exc.message + "."}
    if problems:
        try:
            return await _app_page(request, current, clients, client_id, form, problems, 400)
        except NotFound:
            return await _done(current, LIST, "error", GONE)
    text = f"Saved the changes to {updated.client_name}."
    return await _done(current, f"{LIST}/{client_id}", "notice", text)


@router.get("/{client_id}/delete", response_class=HTMLResponse)
async def confirm_delete(
    request: Request, client_id: str, settings: SettingsDep, uow: UnitOfWorkDep
) -> Response:
    current = await _operator(request, settings, uow)
    if isinstance(current, Response):
        return current
    try:
        app = public_view(await _clients(request, settings, uow, current).get(client_id))
    except NotFound:
        return await _done(current, LIST, "error", GONE)
    return _page(request, current, "admin_app_delete", f"{LIST}/{client_id}", app=app)


@router.post("/{client_id}/{action}", response_class=HTMLResponse)
async def act(
    request: Request,
    client_id: str,
    action: str,
    settings: SettingsDep,
    uow: UnitOfWorkDep,
    form: CsrfFormDep,
) -> Response:
    """Switch an app off or on, give it a new secret, or delete it."""
    current = await _operator(request, settings, uow)
    if isinstance(current, Response):
        return current
    here = f"{LIST}/{client_id}"
    if action not in ("disable", "enable", "secret", "delete"):
        return await _done(current, LIST, "error", "That action doesn't exist.")
    if not csrf_ok(request, settings, form.csrf):
        return await _done(current, here, "error", EXPIRED_FORM)
    clients = _clients(request, settings, uow, current)
    try:
        name = (await clients.get(client_id)).client_name
        if action == "secret":
            rotated = await clients.rotate_secret(client_id)
            return _secret_page(request, current, client_id, name, rotated.client_secret, new=False)
        if action == "delete":
            await clients.delete(client_id)
            return await _done(current, LIST, "notice", f"Deleted {name}: it can no longer sign anyone in.")
        await clients.update(client_id, ClientUpdate(disabled=action == "disable"))
    except NotFound:
        return await _done(current, LIST, "error", GONE)
    except SsoError as exc:
        return await _done(current, here, "error", f"{name}: {exc.message}")
    text = (
        f"{name} is switched off: it gets no codes or tokens."
        if action == "disable"
        else f"{name} is on again."
    )
    return await _done(current, here, "notice", text)
