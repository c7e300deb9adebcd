"""Sign-in past the MFA deadline: the password was right, and the sign-in completes once an
authenticator app is set up here. There is no way to skip; the return address (an app's
authorization request included) is kept, so the person lands where they were going."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from api.cookies import PENDING_MFA, clear_cookie, csrf_ok, read_cookie
from api.deps import SettingsDep, client_ip
from api.forms import CodeFormDep
from api.pages import redirect, render_page, six_digits
from api.routes.account import FORM_PROBLEM, NOT_A_CODE, WRONG_CODE, AccountDep, enrol_page
from api.routes.signin import MFA_SETUP_PAGE, signed_in_with
from api.services.account import AccountSteps
from api.services.sessions import Current, Sessions
from api.services.signin import MFA_ATTEMPTS, safe_return_to
from core.accounts import MFA_SETUP_PURPOSE, account_for
from core.models import SsoAccount

router = APIRouter(prefix="/sso/login", tags=["pages"], include_in_schema=False)

EXPIRED = "/sso/login?notice=expired"


def _page(
    request: Request, steps: AccountSteps, account: SsoAccount, message: str | None = None, status: int = 200
) -> HTMLResponse:
    return enrol_page(request, steps, account, message, status, action=MFA_SETUP_PAGE)


async def _pending(
    request: Request, settings: SettingsDep, steps: AccountSteps
) -> tuple[Current, SsoAccount] | None:
    pending = await Sessions(settings, steps.db).get(
        read_cookie(request, settings, PENDING_MFA), MFA_SETUP_PURPOSE
    )
    if pending is None or pending.row.staff_id is None:
        return None
    account = await account_for(steps.db, pending.row.staff_id)
    return None if account is None else (pending, account)


@router.get("/mfa-setup", response_class=HTMLResponse)
async def mfa_setup_page(request: Request, settings: SettingsDep, steps: AccountDep) -> Response:
    found = await _pending(request, settings, steps)
    if found is None:
        return redirect(EXPIRED)
    return _page(request, steps, found[1])


@router.post("/mfa-setup", response_class=HTMLResponse)
async def mfa_setup_submit(
    request: Request, settings: SettingsDep, steps: AccountDep, form: CodeFormDep
) -> Response:
    found = await _pending(request, settings, steps)
    if found is None:
        return redirect(EXPIRED)
    pending, account = found
    if not csrf_ok(request, settings, form.csrf):
        return _page(request, steps, account, FORM_PROBLEM, 400)
    digits = six_digits(form.code)
    if digits is None:
        return _page(request, steps, account, NOT_A_CODE, 400)
    sessions = Sessions(settings, steps.db)
    codes = await steps.enrol(account, digits, client_ip(request))
    if codes is None:
        attempts = int(pending.row.data.get("attempts", 0)) + 1
        if attempts >= MFA_ATTEMPTS:
            await sessions.revoke(read_cookie(request, settings, PENDING_MFA))
            response = redirect("/sso/login?notice=expired")
            clear_cookie(response, settings, PENDING_MFA)
            return response
        pending.row.data = {**pending.row.data, "attempts": attempts}
        return _page(request, steps, account, WRONG_CODE, 400)
    await sessions.revoke(read_cookie(request, settings, PENDING_MFA))
    target = safe_return_to(settings, str(pending.row.data.get("return_to") or "")) or "/sso/account"
    page = render_page(request, "recovery_codes", codes=codes, next_page=target)
    return await signed_in_with(request, settings, sessions, account.staff_id, "totp", page)
