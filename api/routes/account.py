"""A signed-in person's own page: their sign-in, MFA set up later, and recovery codes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from api.cookies import csrf_ok
from api.deps import client_ip, get_temporal
from api.forms import CodeFormDep, CsrfFormDep, CurrentPasswordFormDep
from api.pages import redirect, render_page, six_digits
from api.services.account import AccountSteps, Standing
from api.services.account_apps import AccountApps
from api.services.email_change import EmailChanges
from api.services.passkeys import NOTICES as PASSKEY_NOTICES
from api.signed_in import FORM_PROBLEM, AccountDep, as_signed_in
from core.db import UnitOfWork
from core.errors import SsoError
from core.models import SsoAccount, Staff
from core.orgs import AdminScope

router = APIRouter(prefix="/sso/account", tags=["pages"], include_in_schema=False)

NOT_A_CODE = "Enter the 6-digit code from your authenticator app."
NOT_AN_EMAIL_CODE = "Enter the 6-digit code from the email to your new address."
STILL_ON = "That password didn't match, so Multi-Factor Authentication is still on."
WRONG_CODE = (
    "That code didn't match, or it was already used. Enter the newest code from your authenticator app."
)


NOTICES = {
    "mfa_off": "Multi-Factor Authentication is off. We've emailed you to say so.",
    "email_changed": "Your sign-in email was changed. We've told your old address.",
    "password_changed": (
        "Your password was changed, and you were signed out everywhere else. We've emailed you to say so."
    ),
    **PASSKEY_NOTICES,
}


@router.get("", response_class=HTMLResponse)
async def account_page(request: Request, steps: AccountDep, notice: str | None = None) -> Response:
    async def page(staff: Staff, standing: Standing) -> Response:
        return await _account_page(request, steps, staff, standing, notice=NOTICES.get(notice or ""))

    return await as_signed_in(request, steps, page)


async def _account_page(
    request: Request,
    steps: AccountSteps,
    staff: Staff,
    standing: Standing,
    message: str | None = None,
    status: int = 200,
    notice: str | None = None,
    **section_messages: str,
) -> HTMLResponse:
    """The whole account page; a section's refusal (`apps_message`, `passkey_message`) is
    shown in that section."""
    return render_page(
        request,
        "account",
        status_code=status,
        staff=staff,
        standing=standing,
        message=message,
        notice=notice,
        apps=await AccountApps(steps.db, steps.settings, steps.temporal).allowed(staff),
        **section_messages,
    )


def enrol_page(
    request: Request,
    steps: AccountSteps,
    account: SsoAccount,
    message: str | None = None,
    status: int = 200,
    action: str = "/sso/account/mfa",
) -> HTMLResponse:
    """The setup's MFA step for a signed-in person (or one whose sign-in waits for it, at
    another `action`: then with no way out)."""
    forced = action != "/sso/account/mfa"
    return render_page(
        request,
        "setup_mfa",
        status_code=status,
        message=message,
        mfa_required=forced,
        mfa_forced=forced,
        mfa_action=action,
        **steps.enrolment(account),
    )


@router.get("/mfa", response_class=HTMLResponse)
async def mfa_page(request: Request, steps: AccountDep) -> Response:
    async def page(_staff: Staff, standing: Standing) -> Response:
        if not standing.can_enrol:
            return redirect("/sso/account")
        assert standing.account is not None
        return enrol_page(request, steps, standing.account)

    return await as_signed_in(request, steps, page)


@router.post("/mfa", response_class=HTMLResponse)
async def mfa_submit(request: Request, steps: AccountDep, form: CodeFormDep) -> Response:
    async def page(_staff: Staff, standing: Standing) -> Response:
        if not standing.can_enrol:
            return redirect("/sso/account")
        account = standing.account
        assert account is not None
        if not csrf_ok(request, steps.settings, form.csrf):
            return enrol_page(request, steps, account, FORM_PROBLEM, 400)
        digits = six_digits(form.code)
        if digits is None:
            return enrol_page(request, steps, account, NOT_A_CODE, 400)
        codes = await steps.enrol(account, digits, client_ip(request))
        if codes is None:
            return enrol_page(request, steps, account, WRONG_CODE, 400)
        return render_page(request, "recovery_codes", codes=codes, next_page="/sso/account")

    return await as_signed_in(request, steps, page)


@router.post("/recovery-codes", response_class=HTMLResponse)
async def new_recovery_codes(request: Request, steps: AccountDep, form: CsrfFormDep) -> Response:
    async def page(_staff: Staff, standing: Standing) -> Response:
        if not standing.mfa_on or not csrf_ok(request, steps.settings, form.csrf):
            return redirect("/sso/account")
        assert standing.account is not None
        codes = await steps.new_recovery_codes(standing.account, client_ip(request))
        return render_page(request, "recovery_codes", codes=codes, next_page="/sso/account")

    return await as_signed_in(request, steps, page)


@router.post("/mfa/off", response_class=HTMLResponse)
async def turn_mfa_off(request: Request, steps: AccountDep, form: CurrentPasswordFormDep) -> Response:
    async def page(staff: Staff, standing: Standing) -> Response:
        if not standing.can_turn_off:
            return redirect("/sso/account")
        if not csrf_ok(request, steps.settings, form.csrf):
            return await _account_page(request, steps, staff, standing, FORM_PROBLEM, 400)
        if not await steps.turn_off(standing, form.password, client_ip(request)):
            return await _account_page(request, steps, staff, standing, STILL_ON, 400)
        return redirect("/sso/account?notice=mfa_off")

    return await as_signed_in(request, steps, page)


@router.post("/email-change", response_class=HTMLResponse)
async def confirm_email_change(request: Request, steps: AccountDep, form: CodeFormDep) -> Response:
    """The code emailed to the new address an admin gave: entered by the person, signed in
    with their old one."""

    async def page(staff: Staff, standing: Standing) -> Response:
        if staff.pending_external_email_1 is None:
            return redirect("/sso/account")

        async def refused(message: str) -> Response:
            return await _account_page(request, steps, staff, standing, status=400, email_message=message)

        if not csrf_ok(request, steps.settings, form.csrf):
            return await refused(FORM_PROBLEM)
        digits = six_digits(form.code)
        if digits is None:
            return await refused(NOT_AN_EMAIL_CODE)
        changes = EmailChanges(UnitOfWork(steps.db), steps.settings, get_temporal(request))
        try:
            own = AdminScope(actor=f"staff:{staff.id}", org_id=staff.org_id)
            await changes.confirm(staff.id, digits, own, client_ip(request))
        except SsoError as exc:
            await steps.db.refresh(staff)
            return await refused(exc.message)
        return redirect("/sso/account?notice=email_changed")

    return await as_signed_in(request, steps, page)
