"""Where you're signed in: the person's own sessions, with Sign out for each other one and
Sign out everywhere else."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from api.cookies import csrf_ok
from api.deps import client_ip
from api.forms import CsrfFormDep, SessionFormDep
from api.pages import redirect, render_page
from api.services.account import AccountSteps, Standing
from api.services.account_sessions import SessionSteps
from api.services.sessions import Current
from api.signed_in import FORM_PROBLEM, AccountDep, in_session

router = APIRouter(prefix="/sso/account/sessions", tags=["pages"], include_in_schema=False)

GONE = "That browser is already signed out."
NOTICES = {
    "signed_out_other": "That browser is signed out.",
    "signed_out_others": "You're signed out everywhere else.",
}


async def _page(
    request: Request,
    sessions: SessionSteps,
    current: Current,
    message: str | None = None,
    status: int = 200,
    notice: str | None = None,
) -> HTMLResponse:
    return render_page(
        request,
        "account_sessions",
        status_code=status,
        staff=current.staff,
        sessions=await sessions.listed(current),
        message=message,
        notice=notice,
    )


@router.get("", response_class=HTMLResponse)
async def sessions_page(request: Request, steps: AccountDep, notice: str | None = None) -> Response:
    async def page(current: Current, _standing: Standing) -> Response:
        return await _page(request, SessionSteps(steps), current, notice=NOTICES.get(notice or ""))

    return await in_session(request, steps, page)


Act = Callable[[SessionSteps, Current], Awaitable[Response]]


async def _posted(request: Request, steps: AccountSteps, csrf: str, act: Act) -> Response:
    """A form of the page: a stale or forged one signs nothing out."""

    async def page(current: Current, _standing: Standing) -> Response:
        sessions = SessionSteps(steps)
        if not csrf_ok(request, steps.settings, csrf):
            return await _page(request, sessions, current, FORM_PROBLEM, 400)
        return await act(sessions, current)

    return await in_session(request, steps, page)


@router.post("/sign-out", response_class=HTMLResponse)
async def sign_out_one(request: Request, steps: AccountDep, form: SessionFormDep) -> Response:
    async def act(sessions: SessionSteps, current: Current) -> Response:
        if not await sessions.sign_out_one(current, form.session, client_ip(request)):
            return await _page(request, sessions, current, GONE, 400)
        return redirect("/sso/account/sessions?notice=signed_out_other")

    return await _posted(request, steps, form.csrf, act)


@router.post("/sign-out-others", response_class=HTMLResponse)
async def sign_out_others(request: Request, steps: AccountDep, form: CsrfFormDep) -> Response:
    async def act(sessions: SessionSteps, current: Current) -> Response:
        await sessions.sign_out_others(current, client_ip(request))
        return redirect("/sso/account/sessions?notice=signed_out_others")

    return await _posted(request, steps, form.csrf, act)
