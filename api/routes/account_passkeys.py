"""Passkeys on the account page: add one (the browser's answer to the options of
/sso/passkeys/options), rename one, remove one. Each change is audited and, except a new
name, emailed to the person."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from api.cookies import PASSKEY_CHALLENGE, clear_cookie, csrf_ok, read_cookie
from api.deps import client_ip
from api.forms import PasskeyFormDep, PasskeyNameFormDep
from api.pages import redirect, render_page
from api.routes.account import _account_page
from api.services.account import AccountSteps, Standing
from api.services.passkeys import PasskeyRefused, PasskeySteps
from api.signed_in import FORM_PROBLEM, AccountDep, as_signed_in
from core.models import SsoAccount, Staff

router = APIRouter(prefix="/sso/account/passkeys", tags=["pages"], include_in_schema=False)


def _steps(steps: AccountSteps) -> PasskeySteps:
    return PasskeySteps(settings=steps.settings, db=steps.db, temporal=steps.temporal)


async def _refused(
    request: Request, steps: AccountSteps, staff: Staff, standing: Standing, message: str
) -> HTMLResponse:
    return await _account_page(request, steps, staff, standing, status=400, passkey_message=message)


@router.post("", response_class=HTMLResponse)
async def add_passkey(request: Request, steps: AccountDep, form: PasskeyFormDep) -> Response:
    async def page(staff: Staff, standing: Standing) -> Response:
        if not standing.can_add_passkey:
            return redirect("/sso/account")
        assert standing.account is not None
        if not csrf_ok(request, steps.settings, form.csrf):
            return await _refused(request, steps, staff, standing, FORM_PROBLEM)
        cookie = read_cookie(request, steps.settings, PASSKEY_CHALLENGE)
        response: Response
        try:
            _passkey, codes = await _steps(steps).add(
                cookie, staff, standing.account, form.credential, form.name, client_ip(request)
            )
        except PasskeyRefused as refused:
            response = await _refused(request, steps, staff, await steps.standing(staff), refused.message)
        else:
            response = (
                render_page(
                    request, "recovery_codes", codes=codes, next_page="/sso/account?notice=passkey_added"
                )
                if codes is not None
                else redirect("/sso/account?notice=passkey_added")
            )
        clear_cookie(response, steps.settings, PASSKEY_CHALLENGE)
        return response

    return await as_signed_in(request, steps, page)


Change = Callable[[PasskeySteps, SsoAccount, Standing, str | None], Awaitable[None]]


async def _change(request: Request, steps: AccountSteps, csrf: str, change: Change, notice: str) -> Response:
    """A change to one of the person's passkeys, from a form on the account page."""

    async def page(staff: Staff, standing: Standing) -> Response:
        if standing.account is None:
            return redirect("/sso/account")
        if not csrf_ok(request, steps.settings, csrf):
            return await _refused(request, steps, staff, standing, FORM_PROBLEM)
        try:
            await change(_steps(steps), standing.account, standing, client_ip(request))
        except PasskeyRefused as refused:
            return await _refused(request, steps, staff, standing, refused.message)
        return redirect(f"/sso/account?notice={notice}")

    return await as_signed_in(request, steps, page)


@router.post("/{passkey_id}/name", response_class=HTMLResponse)
async def rename_passkey(
    request: Request, passkey_id: uuid.UUID, steps: AccountDep, form: PasskeyNameFormDep
) -> Response:
    async def rename(
        passkeys: PasskeySteps, account: SsoAccount, _standing: Standing, ip: str | None
    ) -> None:
        await passkeys.rename(account, passkey_id, form.name, ip)

    return await _change(request, steps, form.csrf, rename, "passkey_renamed")


@router.post("/{passkey_id}/remove", response_class=HTMLResponse)
async def remove_passkey(
    request: Request, passkey_id: uuid.UUID, steps: AccountDep, form: PasskeyNameFormDep
) -> Response:
    async def remove(passkeys: PasskeySteps, account: SsoAccount, standing: Standing, ip: str | None) -> None:
        await passkeys.remove(account, passkey_id, ip, standing.required)

    return await _change(request, steps, form.csrf, remove, "passkey_removed")
