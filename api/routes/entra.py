"""Method 1: the Microsoft-Entra button, Microsoft's callback, and the signed-in "Setup
agentOS Single Sign-on" page that offers the link."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response

from api.cookies import (
    ENTRA_CONFIRM,
    ENTRA_PENDING,
    SIGNIN_SESSION,
    clear_cookie,
    csrf_ok,
    read_cookie,
    set_cookie,
)
from api.deps import SessionDep, SettingsDep, TemporalDep, UnitOfWorkDep, client_ip
from api.pages import redirect, render_page
from api.routes.setup import invalid_link
from api.services.entra import START_TTL, Callback, EntraResult, EntraSignOn, EntraStart, refused
from api.services.sessions import Current, Sessions
from api.services.setup import SetupSteps
from api.services.signin import safe_return_to
from core.db import UnitOfWork
from core.entra import EntraProvider
from core.errors import ServiceUnavailable
from core.models import utcnow
from core.orgs import owned_tenants
from workflows.entra import CONFIRM_LIMIT

router = APIRouter(tags=["pages"], include_in_schema=False)


def get_entra(request: Request, db: SessionDep, settings: SettingsDep, temporal: TemporalDep) -> EntraSignOn:
    provider = EntraProvider(settings, tenants=owned_tenants(request.app.state.sessions))
    return EntraSignOn(settings=settings, db=db, temporal=temporal, provider=provider)


EntraDep = Annotated[EntraSignOn, Depends(get_entra)]


def _problem(
    request: Request, message: str, status_code: int, title: str = "We couldn't sign you in with Microsoft"
) -> HTMLResponse:
    return render_page(request, "entra_problem", status_code=status_code, title=title, message=message)


def _unavailable(request: Request) -> HTMLResponse:
    return _problem(
        request,
        "We can't complete this right now, please try again in a minute.",
        503,
        title="We can't complete this right now",
    )


async def _signed_in(request: Request, entra: EntraSignOn) -> Current | None:
    return await Sessions(entra.settings, entra.db).signed_in(
        read_cookie(request, entra.settings, SIGNIN_SESSION)
    )


@router.post("/sso/entra/start", response_class=HTMLResponse)
async def start(
    request: Request,
    entra: EntraDep,
    uow: UnitOfWorkDep,
    intent: Annotated[Literal["signin", "link"], Form()] = "signin",
    csrf: Annotated[str, Form(max_length=200)] = "",
    token: Annotated[str, Form(max_length=200)] = "",
    return_to: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    settings = entra.settings
    if not settings.entra_enabled:
        return _problem(
            request,
            "Microsoft Entra sign-in isn't set up here.",
            404,
            title="Microsoft-Entra isn't available",
        )
    if not csrf_ok(request, settings, csrf):
        return _form_expired(request)
    plan = await _plan(request, entra, intent, token, safe_return_to(settings, return_to))
    if isinstance(plan, Response):
        return plan
    return await _to_microsoft(request, entra, uow, plan)


FORM_EXPIRED = "This form has expired. Go back, reload the page and try again."


def _form_expired(request: Request) -> HTMLResponse:
    return _problem(request, FORM_EXPIRED, 400, title="Please try again")


async def _to_microsoft(request: Request, entra: EntraSignOn, uow: UnitOfWork, plan: EntraStart) -> Response:
    # No write stays open while Microsoft is asked (a sign-in's last-seen time, a spent
    # confirmation).
    await uow.commit_now()
    try:
        url, pending = await entra.begin(plan)
    except ServiceUnavailable:
        return _unavailable(request)
    response = redirect(url)
    set_cookie(response, entra.settings, ENTRA_PENDING, pending, max_age=START_TTL)
    return response


async def _plan(
    request: Request, entra: EntraSignOn, intent: str, token: str, return_to: str | None
) -> EntraStart | Response:
    """Who may start what: anyone may sign in; linking needs a valid setup link or a recent
    sign-in of this very browser."""
    if intent == "signin":
        return EntraStart("signin", return_to=return_to)
    if token:
        view = await SetupSteps(settings=entra.settings, db=entra.db, temporal=entra.temporal).open_link(
            token
        )
        if not view.usable or view.link is None or view.staff is None:
            return invalid_link(request, view, token)
        return EntraStart(
            "link",
            staff_id=view.staff.id,
            via="setup_link",
            link_id=str(view.link.id),
            setup_workflow_id=view.link.workflow_id,
            setup_run_id=view.link.run_id,
        )
    current = await _signed_in(request, entra)
    if current is None:
        return redirect("/sso/login?return_to=/sso/setup")
    if utcnow() - current.row.created_at > entra.settings.entra_link_fresh:
        # An old session (or a borrowed laptop) must not bind someone's Microsoft account.
        return redirect("/sso/login?return_to=/sso/setup&notice=reauth")
    return EntraStart("link", staff_id=current.row.staff_id, via="session")


@router.get("/sso/entra/callback", response_class=HTMLResponse)
async def callback(
    request: Request,
    entra: EntraDep,
    uow: UnitOfWorkDep,
    state: str = "",
    code: str = "",
    error: str = "",
) -> Response:
    settings = entra.settings
    signed_in = await _signed_in(request, entra)
    pending = await entra.claim(read_cookie(request, settings, ENTRA_PENDING))
    # Spent before Microsoft or Temporal is asked, whatever the answer: a replayed callback
    # finds nothing, even when this request fails.
    await uow.commit_now()
    step = entra.finish(pending, Callback(state[:200], code, error[:100]), client_ip(request), signed_in)
    return await _answered(request, entra, step, signed_in, ENTRA_PENDING)


async def _answered(
    request: Request,
    entra: EntraSignOn,
    step: Coroutine[Any, Any, EntraResult],
    signed_in: Current | None,
    spent: str,
) -> Response:
    """The page for a step that spent this browser's `spent` session (cookie cleared)."""
    try:
        result = await step
    except ServiceUnavailable:
        response: Response = _unavailable(request)
    else:
        response = await _answer(request, entra, result, signed_in)
    clear_cookie(response, entra.settings, spent)
    return response


async def _answer(
    request: Request, entra: EntraSignOn, result: EntraResult, signed_in: Current | None
) -> Response:
    settings = entra.settings
    if result.kind == "refused":
        status = 503 if result.reason == "unavailable" else 403
        return _problem(request, result.message or "", status)
    if result.kind == "confirm":
        # Verified, not linked: the page's own address shows the account until Link. The
        # browser keeps whatever session it had (a setup link's person is not signed in yet).
        assert result.confirm_session is not None
        response: Response = redirect("/sso/entra/confirm")
        set_cookie(response, settings, ENTRA_CONFIRM, result.confirm_session, max_age=CONFIRM_LIMIT)
        return response
    assert result.staff_id is not None
    sessions = Sessions(settings, entra.db)
    # A new session id after every Entra callback: nothing set before it carries over.
    await sessions.revoke(read_cookie(request, settings, SIGNIN_SESSION))
    session_id = await sessions.sign_in(result.staff_id, "entra", request.headers.get("user-agent"))
    if result.kind == "signed_in":
        response = redirect(safe_return_to(settings, result.return_to) or "/sso/account")
    else:
        response = render_page(
            request, "entra_done", account=result.account, from_setup=result.via == "setup_link"
        )
    set_cookie(response, settings, SIGNIN_SESSION, session_id, max_age=settings.session_max_ttl)
    return response


@router.get("/sso/entra/confirm", response_class=HTMLResponse)
async def confirm_page(request: Request, entra: EntraDep) -> Response:
    pending = await entra.pending_confirmation(read_cookie(request, entra.settings, ENTRA_CONFIRM))
    if pending is None:
        return _problem(request, refused("expired").message or "", 403)
    return render_page(request, "entra_confirm", account=str(pending.row.data.get("account") or ""))


@router.post("/sso/entra/confirm", response_class=HTMLResponse)
async def confirm_submit(
    request: Request, entra: EntraDep, uow: UnitOfWorkDep, csrf: Annotated[str, Form(max_length=200)] = ""
) -> Response:
    """Link: the account on the page, once, from the browser it was shown in."""
    settings = entra.settings
    if not csrf_ok(request, settings, csrf):
        return _form_expired(request)
    signed_in = await _signed_in(request, entra)
    pending = await entra.claim_confirmation(read_cookie(request, settings, ENTRA_CONFIRM))
    # Spent before Temporal is asked: a second Link (another tab, a resubmit) finds nothing.
    await uow.commit_now()
    step = entra.confirm(pending, client_ip(request), signed_in)
    return await _answered(request, entra, step, signed_in, ENTRA_CONFIRM)


@router.post("/sso/entra/another", response_class=HTMLResponse)
async def another_account(
    request: Request, entra: EntraDep, uow: UnitOfWorkDep, csrf: Annotated[str, Form(max_length=200)] = ""
) -> Response:
    """Use another account: the same link, started again at Microsoft's account chooser
    (`prompt=select_account`); the account shown is dropped here, and in the flow once
    another is verified or its wait ends."""
    settings = entra.settings
    if not csrf_ok(request, settings, csrf):
        return _form_expired(request)
    pending = await entra.claim_confirmation(read_cookie(request, settings, ENTRA_CONFIRM))
    if pending is None:
        response: Response = _problem(request, refused("expired").message or "", 403)
    else:
        response = await _to_microsoft(request, entra, uow, entra.restart(pending))
    clear_cookie(response, settings, ENTRA_CONFIRM)
    return response


@router.get("/sso/setup", response_class=HTMLResponse)
async def setup_home(request: Request, entra: EntraDep, settings: SettingsDep) -> Response:
    """ "Setup agentOS Single Sign-on" from the person menu: link Microsoft Entra."""
    current = await _signed_in(request, entra)
    if current is None or current.staff is None:
        return redirect("/sso/login?return_to=/sso/setup")
    link = await entra.link_of(current.staff.id)
    return render_page(request, "setup_home", staff=current.staff, link=link)
