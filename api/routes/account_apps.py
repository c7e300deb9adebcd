"""The apps a signed-in person has let sign them in, on their account page, and Remove access."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from api.cookies import csrf_ok
from api.deps import client_ip
from api.forms import CsrfFormDep
from api.routes.account import _account_page
from api.services.account import Standing
from api.services.account_apps import AccountApps, RemovedApp
from api.signed_in import FORM_PROBLEM, AccountDep, as_signed_in
from core.models import Staff

router = APIRouter(prefix="/sso/account/apps", tags=["pages"], include_in_schema=False)


def removed_notice(app: RemovedApp) -> str:
    again = (
        "it will ask for your permission again the next time you use it"
        if app.asks_consent
        else "you'll sign in to it again the next time you use it"
    )
    return f"{app.name} no longer has access to your account: it was signed out, and {again}."


@router.post("/{ref}/remove", response_class=HTMLResponse)
async def remove_access(request: Request, ref: str, steps: AccountDep, form: CsrfFormDep) -> Response:
    async def page(staff: Staff, standing: Standing) -> Response:
        try:
            which = uuid.UUID(ref)
        except ValueError:
            raise HTTPException(status_code=404) from None
        if not csrf_ok(request, steps.settings, form.csrf):
            return await _account_page(request, steps, staff, standing, status=400, apps_message=FORM_PROBLEM)
        removed = await AccountApps(steps.db, steps.settings, steps.temporal).remove(
            staff, which, client_ip(request)
        )
        if removed is None:  # another person's, or already removed
            raise HTTPException(status_code=404)
        return await _account_page(request, steps, staff, standing, notice=removed_notice(removed))

    return await as_signed_in(request, steps, page)
