"""Sign in (email and password, then the authenticator code when MFA is on), the signed-in
page, and sign out."""

from __future__ import annotations

import math
import uuid
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from api.cookies import (
    PENDING_MFA,
    SIGNIN_SESSION,
    clear_cookie,
    csrf_ok,
    read_cookie,
    set_cookie,
)
from api.deps import MfaNoticesDep, SessionDep, SettingsDep, SignInDep, TemporalDep, client_ip
from api.forms import CsrfFormDep, LoginCodeFormDep, LoginFormDep
from api.pages import (
    disabled_page,
    microsoft_disabled_page,
    redirect,
    render_page,
    second_factor,
    suspended_page,
)
from api.services.backchannel import queue_session_logouts
from api.services.sessions import Sessions
from api.services.signin import MFA_ATTEMPTS, MFA_WINDOW, record_own, safe_return_to
from core import passkeys
from core.accounts import MFA_SETUP_PURPOSE, account_for
from core.mfa_policy import must_set_up_mfa
from core.models import SsoAccount, utcnow

router = APIRouter(prefix="/sso", tags=["pages"], include_in_schema=False)

REFUSED = "Incorrect email or password"
# The forced MFA set-up after the deadline: long enough to install an app and scan the code.
MFA_SETUP_PAGE = "/sso/login/mfa-setup"
MFA_SETUP_WINDOW = timedelta(minutes=15)
FORM_PROBLEM = "This form has expired. Please try again."
NOTICES = {
    "reset": "Your password was changed. Sign in with your new password.",
    "signed_out": "You have signed out.",
    "expired": "Your session has ended. Please sign in again.",
    "reauth": "For your security, sign in again to link a Microsoft account.",
}


def _login(
    request: Request,
    return_to: str | None,
    email: str = "",
    message: str | None = None,
    notice: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    return render_page(
        request,
        "login",
        status_code=status_code,
        email=email,
        message=message,
        notice=notice,
        return_to=return_to or "",
    )


@router.get("/login", response_class=HTMLResponse)
async def login_page(
    request: Request,
    settings: SettingsDep,
    return_to: str | None = None,
    notice: str | None = None,
    # An app's OpenID Connect login_hint: the email field starts with it.
    login_hint: Annotated[str, Query(max_length=320)] = "",
) -> HTMLResponse:
    return _login(
        request, safe_return_to(settings, return_to), email=login_hint, notice=NOTICES.get(notice or "")
    )


@router.post("/login", response_class=HTMLResponse)
async def login_submit(request: Request, signin: SignInDep, form: LoginFormDep) -> Response:
    settings, email = signin.settings, form.email
    target = safe_return_to(settings, form.return_to)
    if not csrf_ok(request, settings, form.csrf):
        return _login(request, target, email, FORM_PROBLEM, status_code=400)
    result = await signin.password(email, form.password, client_ip(request))
    if result.outcome == "throttled":
        minutes = math.ceil((result.retry_after or 60) / 60)
        return _login(
            request,
            target,
            email,
            f"Too many sign-in attempts from your network. "
            f"Try again in {minutes} minute{'s' if minutes != 1 else ''}.",
            status_code=429,
        )
    if result.outcome == "disabled":
        return disabled_page(request)
    if result.outcome == "suspended":
        return suspended_page(request, result.org_name or "")
    if result.outcome == "entra_disabled":
        return microsoft_disabled_page(request)
    if result.outcome != "signed_in" and result.outcome != "needs_totp":
        return _login(request, target, email, REFUSED, status_code=401)
    assert result.account is not None
    sessions = Sessions(settings, signin.db)
    await sessions.revoke(read_cookie(request, settings, SIGNIN_SESSION))
    if result.outcome == "needs_totp":
        pending = await sessions.create(
            "mfa", result.account.staff_id, MFA_WINDOW, data={"return_to": target or "", "attempts": 0}
        )
        response = redirect("/sso/login/mfa")
        set_cookie(response, settings, PENDING_MFA, pending, max_age=MFA_WINDOW)
        return response
    if await must_set_up_mfa(signin.db, settings, result.account, utcnow()):
        return await start_mfa_setup(request, signin.db, settings, sessions, result.account, target)
    return await _signed_in(request, settings, sessions, result.account.staff_id, target, "password")


async def _signed_in(
    request: Request,
    settings: SettingsDep,
    sessions: Sessions,
    staff_id: object,
    target: str | None,
    method: str,
    amr: list[str] | None = None,
) -> Response:
    return await signed_in_with(
        request, settings, sessions, staff_id, method, redirect(target or "/sso/account"), amr
    )


async def signed_in_with(
    request: Request,
    settings: SettingsDep,
    sessions: Sessions,
    staff_id: object,
    method: str,
    response: Response,
    amr: list[str] | None = None,
) -> Response:
    """`response`, signed in: the new session's cookie set, the pending second step's cleared."""
    session_id = await sessions.sign_in(
        staff_id,  # type: ignore[arg-type]
        method,
        request.headers.get("user-agent"),
        amr,
    )
    set_cookie(response, settings, SIGNIN_SESSION, session_id, max_age=settings.session_max_ttl)
    clear_cookie(response, settings, PENDING_MFA)
    return response


async def start_mfa_setup(
    request: Request,
    db: SessionDep,
    settings: SettingsDep,
    sessions: Sessions,
    account: SsoAccount,
    target: str | None,
) -> Response:
    """Past the MFA deadline: the password was right, but the sign-in completes only once
    an authenticator is set up (api/routes/signin_mfa_setup.py)."""
    staff_id = account.staff_id
    record_own(db, staff_id, "sign_in.mfa_setup_required", "pending", client_ip(request))
    pending = await sessions.create(
        MFA_SETUP_PURPOSE, staff_id, MFA_SETUP_WINDOW, data={"return_to": target or "", "attempts": 0}
    )
    response = redirect(MFA_SETUP_PAGE)
    set_cookie(response, settings, PENDING_MFA, pending, max_age=MFA_SETUP_WINDOW)
    return response


@router.get("/login/mfa", response_class=HTMLResponse)
async def mfa_page(
    request: Request,
    settings: SettingsDep,
    db: SessionDep,
    recovery: Annotated[str, Query(max_length=1)] = "",
) -> Response:
    pending = await Sessions(settings, db).get(read_cookie(request, settings, PENDING_MFA), "mfa")
    if pending is None or pending.row.staff_id is None:
        return redirect("/sso/login?notice=expired")
    return render_page(
        request,
        "login_mfa",
        message=None,
        recovery=recovery == "1",
        **await second_factors(db, pending.row.staff_id),
    )


async def second_factors(db: SessionDep, staff_id: uuid.UUID) -> dict[str, bool]:
    """What the second-factor page offers: a passkey button, and the code form unless
    passkeys are all the person has."""
    account = await account_for(db, staff_id)
    keys = await passkeys.count(db, account.id) if account is not None else 0
    return {
        "has_passkeys": keys > 0,
        "passkey_only": keys > 0 and account is not None and account.mfa_enabled_at is None,
    }


@router.post("/login/mfa", response_class=HTMLResponse)
async def mfa_submit(
    request: Request, signin: SignInDep, notices: MfaNoticesDep, form: LoginCodeFormDep
) -> Response:
    settings = signin.settings
    sessions = Sessions(settings, signin.db)
    pending_id = read_cookie(request, settings, PENDING_MFA)
    pending = await sessions.get(pending_id, "mfa")
    if pending is None:
        return redirect("/sso/login?notice=expired")
    # Answered on the form the person used: the recovery code one when what they typed has letters.
    recovery = any(ch.isalpha() for ch in form.code)
    if not csrf_ok(request, settings, form.csrf):
        return render_page(request, "login_mfa", status_code=400, message=FORM_PROBLEM, recovery=recovery)
    digits = second_factor(form.code)
    if digits is None:  # not a code at all: said so, and not counted as an attempt
        return render_page(
            request,
            "login_mfa",
            status_code=400,
            message="Enter the 6-digit code from your authenticator app, or a recovery code.",
            recovery=recovery,
        )
    attempts = int(pending.row.data.get("attempts", 0))
    result = await signin.totp(pending.row.staff_id, digits, client_ip(request), attempts)
    if result.outcome == "signed_in":
        await notices.codes_low(signin.db, pending.row.staff_id, digits)
        await sessions.revoke(pending_id)
        target = safe_return_to(settings, str(pending.row.data.get("return_to") or ""))
        return await _signed_in(request, settings, sessions, pending.row.staff_id, target, "totp")
    if result.outcome in ("disabled", "suspended"):
        await sessions.revoke(pending_id)
        response = (
            disabled_page(request)
            if result.outcome == "disabled"
            else suspended_page(request, result.org_name or "")
        )
        clear_cookie(response, settings, PENDING_MFA)
        return response
    if result.outcome == "restart" or attempts + 1 >= MFA_ATTEMPTS:
        await sessions.revoke(pending_id)
        response = _login(
            request, None, message="Too many incorrect codes. Please sign in again.", status_code=401
        )
        clear_cookie(response, settings, PENDING_MFA)
        return response
    pending.row.data = {**pending.row.data, "attempts": attempts + 1}
    return render_page(
        request,
        "login_mfa",
        status_code=401,
        message=(
            "That code didn't match, or it was already used. Enter the newest code from your "
            "authenticator app."
            if not recovery
            else "That recovery code didn't match, or it was already used."
        ),
        recovery=recovery,
    )


@router.post("/logout", response_class=HTMLResponse)
async def logout(
    request: Request, settings: SettingsDep, db: SessionDep, temporal: TemporalDep, form: CsrfFormDep
) -> Response:
    if not csrf_ok(request, settings, form.csrf):
        return redirect("/sso/account")
    session_id = read_cookie(request, settings, SIGNIN_SESSION)
    ended = await Sessions(settings, db).sign_out(session_id, client_ip(request))
    if ended is not None:
        await queue_session_logouts(temporal, settings, db, [ended])
    response = redirect("/sso/login?notice=signed_out")
    clear_cookie(response, settings, SIGNIN_SESSION)
    return response
