"""Passkeys at sign-in: the options (and challenge) for any passkey ceremony, signing in with a
passkey and no password, and a passkey as the second factor after the password.

The browser's script (templates/static/passkeys.js) asks for the options, runs the ceremony,
and posts the answer in an ordinary form, so every answer is a page as for any other form.
"""

from __future__ import annotations

import math
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from api.cookies import (
    PASSKEY_CHALLENGE,
    PENDING_MFA,
    RESET_SESSION,
    SIGNIN_SESSION,
    clear_cookie,
    csrf_ok,
    read_cookie,
    set_cookie,
)
from api.deps import CounterDep, SessionDep, SettingsDep, TemporalDep, client_ip
from api.forms import PasskeyFormDep, PasskeyOptionsFormDep
from api.pages import disabled_page, redirect, render_page, suspended_page
from api.routes.signin import FORM_PROBLEM, _signed_in, second_factors
from api.services.passkeys import (
    CEREMONIES,
    CHALLENGE_TTL,
    Checked,
    PasskeyOfDisabled,
    PasskeyOfSuspended,
    PasskeyRefused,
    PasskeySteps,
    amr_of,
)
from api.services.sessions import Sessions
from api.services.signin import IP_WINDOW, safe_return_to
from core.accounts import account_for
from core.addresses import rate_key

router = APIRouter(prefix="/sso", tags=["pages"], include_in_schema=False)

NO_CEREMONY = "This page has expired. Reload it and try again."


def get_passkey_steps(db: SessionDep, settings: SettingsDep, temporal: TemporalDep) -> PasskeySteps:
    return PasskeySteps(settings=settings, db=db, temporal=temporal)


PasskeyDep = Annotated[PasskeySteps, Depends(get_passkey_steps)]


@router.post("/passkeys/options")
async def passkey_options(
    request: Request, steps: PasskeyDep, counter: CounterDep, form: PasskeyOptionsFormDep
) -> Response:
    """Options for the ceremony the page is about to run; its challenge is bound to this
    browser by a cookie. Adding needs a signed-in person, the second factor a password just
    checked, a reset the browser's reset session."""
    settings = steps.settings
    if not csrf_ok(request, settings, form.csrf) or form.ceremony not in CEREMONIES:
        return JSONResponse({"error": NO_CEREMONY}, status_code=400)
    wait = await counter.hit(
        f"passkey-ip:{rate_key(client_ip(request))}", settings.passkey_ip_limit, IP_WINDOW
    )
    if wait is not None:
        minutes = math.ceil(wait / 60)
        return JSONResponse(
            {"error": f"Too many passkey attempts from your network. Try again in {minutes} minutes."},
            status_code=429,
        )
    sessions = Sessions(settings, steps.db)
    staff, account, workflow_id = None, None, None
    if form.ceremony == "register":
        current = await sessions.signed_in(read_cookie(request, settings, SIGNIN_SESSION))
        staff = current.staff if current is not None else None
        account = await account_for(steps.db, staff.id) if staff is not None else None
    elif form.ceremony in ("mfa", "reset"):
        cookie, purpose = (PENDING_MFA, "mfa") if form.ceremony == "mfa" else (RESET_SESSION, "reset")
        pending = await sessions.get(read_cookie(request, settings, cookie), purpose)
        if pending is not None and pending.row.staff_id is not None:
            account = await account_for(steps.db, pending.row.staff_id)
            workflow_id = pending.row.workflow_id
    if form.ceremony != "signin" and account is None:
        return JSONResponse({"error": NO_CEREMONY}, status_code=400)
    options, challenge = await steps.begin(form.ceremony, staff, account, workflow_id)
    response = Response(options, media_type="application/json")
    set_cookie(response, settings, PASSKEY_CHALLENGE, challenge, max_age=CHALLENGE_TTL)
    return response


def _login_refused(request: Request, message: str, status: int, return_to: str | None) -> HTMLResponse:
    return render_page(
        request,
        "login",
        status_code=status,
        email="",
        message=message,
        notice=None,
        return_to=return_to or "",
    )


@router.post("/login/passkey", response_class=HTMLResponse)
async def passkey_sign_in(request: Request, steps: PasskeyDep, form: PasskeyFormDep) -> Response:
    """Signs in with a passkey alone: it verified the person (user verification), so it is
    both factors."""
    settings = steps.settings
    target = safe_return_to(settings, form.return_to)
    if not csrf_ok(request, settings, form.csrf):
        return _login_refused(request, FORM_PROBLEM, 400, target)
    ip = client_ip(request)
    try:
        checked = await steps.check(
            read_cookie(request, settings, PASSKEY_CHALLENGE), "signin", form.credential, ip
        )
    except PasskeyOfDisabled as refused:
        return _disabled(request, steps, refused)
    except PasskeyRefused as refused:
        refusal = _login_refused(request, refused.message, 401, target)
        clear_cookie(refusal, settings, PASSKEY_CHALLENGE)
        return refusal
    sessions = Sessions(settings, steps.db)
    await sessions.revoke(read_cookie(request, settings, SIGNIN_SESSION))
    return await _passkey_signed_in(request, steps, sessions, checked, target, ip, after_password=False)


def _disabled(request: Request, steps: PasskeySteps, refused: PasskeyOfDisabled) -> HTMLResponse:
    """The passkey proved a disabled person (a leaver), or one of a suspended organisation:
    the page the password sign-in shows."""
    response = (
        suspended_page(request, refused.org_name)
        if isinstance(refused, PasskeyOfSuspended)
        else disabled_page(request)
    )
    clear_cookie(response, steps.settings, PASSKEY_CHALLENGE)
    return response


async def _mfa_refused(
    request: Request, steps: PasskeySteps, staff_id: uuid.UUID, message: str, status: int
) -> HTMLResponse:
    return render_page(
        request,
        "login_mfa",
        status_code=status,
        message=message,
        recovery=False,
        **await second_factors(steps.db, staff_id),
    )


@router.post("/login/mfa/passkey", response_class=HTMLResponse)
async def passkey_second_factor(request: Request, steps: PasskeyDep, form: PasskeyFormDep) -> Response:
    """The password was right; this person's own passkey finishes the sign-in."""
    settings = steps.settings
    sessions = Sessions(settings, steps.db)
    pending_id = read_cookie(request, settings, PENDING_MFA)
    pending = await sessions.get(pending_id, "mfa")
    if pending is None or pending.row.staff_id is None:
        return redirect("/sso/login?notice=expired")
    if not csrf_ok(request, settings, form.csrf):
        return await _mfa_refused(request, steps, pending.row.staff_id, FORM_PROBLEM, 400)
    ip = client_ip(request)
    try:
        checked = await steps.check(
            read_cookie(request, settings, PASSKEY_CHALLENGE),
            "mfa",
            form.credential,
            ip,
            pending.row.staff_id,
        )
    except PasskeyOfDisabled as refused:  # disabled between the password and the passkey
        await sessions.revoke(pending_id)
        response = _disabled(request, steps, refused)
        clear_cookie(response, settings, PENDING_MFA)
        return response
    except PasskeyRefused as refused:
        return await _mfa_refused(request, steps, pending.row.staff_id, refused.message, 401)
    await sessions.revoke(pending_id)
    target = safe_return_to(settings, str(pending.row.data.get("return_to") or ""))
    return await _passkey_signed_in(request, steps, sessions, checked, target, ip, after_password=True)


async def _passkey_signed_in(
    request: Request,
    steps: PasskeySteps,
    sessions: Sessions,
    checked: Checked,
    target: str | None,
    ip: str | None,
    after_password: bool,
) -> Response:
    """A new signed-in session that says how: the passkey's kind, with the password or not."""
    await steps.signed_in(checked, ip, after_password)
    amr = amr_of(checked.passkey, after_password)
    response = await _signed_in(
        request, steps.settings, sessions, checked.account.staff_id, target, "passkey", amr
    )
    clear_cookie(response, steps.settings, PASSKEY_CHALLENGE)
    return response
