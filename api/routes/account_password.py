"""Change password, from a person's own account page."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from api.cookies import SIGNIN_SESSION, csrf_ok, set_cookie
from api.deps import client_ip
from api.forms import ChangePasswordFormDep
from api.pages import redirect, render_page
from api.services.account import Standing
from api.services.account_password import PasswordSteps
from api.services.sessions import Current
from api.signed_in import FORM_PROBLEM, AccountDep, in_session

router = APIRouter(prefix="/sso/account/password", tags=["pages"], include_in_schema=False)


def _page(
    request: Request,
    passwords: PasswordSteps,
    current: Current,
    standing: Standing,
    problems: list[str] | None = None,
    wrong_current: bool = False,
    status: int = 200,
) -> HTMLResponse:
    assert current.staff is not None and standing.account is not None
    return render_page(
        request,
        "account_password",
        status_code=status,
        staff=current.staff,
        login_email=standing.account.login_email,
        problems=problems or [],
        wrong_current=wrong_current,
        min_length=passwords.steps.settings.password_min_length,
        personal=passwords.personal_words(current.staff),
    )


def _has_password(standing: Standing) -> bool:
    """A person who signs in only with Microsoft has no password here to change."""
    return standing.account is not None and standing.account.password_hash is not None


@router.get("", response_class=HTMLResponse)
async def password_page(request: Request, steps: AccountDep) -> Response:
    async def page(current: Current, standing: Standing) -> Response:
        if not _has_password(standing):
            return redirect("/sso/account")
        return _page(request, PasswordSteps(steps), current, standing)

    return await in_session(request, steps, page)


@router.post("", response_class=HTMLResponse)
async def change_password(request: Request, steps: AccountDep, form: ChangePasswordFormDep) -> Response:
    async def page(current: Current, standing: Standing) -> Response:
        if not _has_password(standing):
            return redirect("/sso/account")
        assert standing.account is not None
        passwords = PasswordSteps(steps)
        if not csrf_ok(request, steps.settings, form.csrf):
            return _page(request, passwords, current, standing, [FORM_PROBLEM], status=400)
        changed = await passwords.change(
            current,
            standing.account,
            (form.current, form.password, form.confirm),
            client_ip(request),
            request.headers.get("user-agent"),
        )
        if changed.session_id is None:
            return _page(
                request, passwords, current, standing, changed.problems, changed.wrong_current, status=400
            )
        response = redirect("/sso/account?notice=password_changed")
        settings = steps.settings
        set_cookie(response, settings, SIGNIN_SESSION, changed.session_id, max_age=settings.session_max_ttl)
        return response

    return await in_session(request, steps, page)
