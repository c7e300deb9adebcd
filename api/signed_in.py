"""What every page of a person's own account shares: only a live sign-in session sees one,
anyone else is sent to sign in."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import Response

from api.cookies import SIGNIN_SESSION, read_cookie
from api.deps import SessionDep, SettingsDep, TemporalDep
from api.pages import redirect, unavailable
from api.services.account import AccountSteps, Standing
from api.services.sessions import Current, Sessions
from core.errors import ServiceUnavailable
from core.models import Staff

FORM_PROBLEM = "This form has expired. Reload the page and try again."


def get_account_steps(
    request: Request, db: SessionDep, settings: SettingsDep, temporal: TemporalDep
) -> AccountSteps:
    return AccountSteps(settings=settings, db=db, temporal=temporal, hashing=request.app.state.hashing)


AccountDep = Annotated[AccountSteps, Depends(get_account_steps)]
Page = Callable[[Staff, Standing], Awaitable[Response]]
SessionPage = Callable[[Current, Standing], Awaitable[Response]]


async def as_signed_in(request: Request, steps: AccountSteps, page: Page) -> Response:
    """Every account page: only for a live sign-in session, else to the sign-in page."""

    async def with_staff(current: Current, standing: Standing) -> Response:
        assert current.staff is not None
        return await page(current.staff, standing)

    return await in_session(request, steps, with_staff)


async def in_session(request: Request, steps: AccountSteps, page: SessionPage) -> Response:
    """As `as_signed_in`, for a page that also needs the session itself (this browser's)."""
    cookie = read_cookie(request, steps.settings, SIGNIN_SESSION)
    current = await Sessions(steps.settings, steps.db).signed_in(cookie)
    if current is None or current.staff is None:
        return redirect("/sso/login?notice=expired" if cookie is not None else "/sso/login")
    try:
        return await page(current, await steps.standing(current.staff))
    except ServiceUnavailable:
        return unavailable(request)
