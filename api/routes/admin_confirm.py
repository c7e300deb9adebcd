"""Confirm, then act: the button of an admin page that asks first (Erase a person; Suspend or
Resume an organisation). Each route loads what its scope lets the admin see and says what
differs: the action, its words and where they land; this checks the form and says how it went."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request
from fastapi.responses import Response

from api.cookies import csrf_ok
from api.routes.admin import EXPIRED_FORM, _done
from api.services.sessions import Current
from core.errors import NotFound, SsoError
from core.settings import Settings


async def confirmed(
    request: Request,
    settings: Settings,
    current: Current,
    csrf: str,
    back: str,
    action: Callable[[], Awaitable[str]],
    *,
    refused: str = "",
    then: str | None = None,
    gone: tuple[str, str] | None = None,
) -> Response:
    """Post/redirect/get of a confirmed action. An expired form does nothing and says so on
    `back`; the action's notice shows on `then` (`back` if None); a refusal shows on `back`,
    after `refused`, but when `gone` is given, a NotFound shows its text on its page instead
    (the thing went while the page was open)."""
    if not csrf_ok(request, settings, csrf):
        return await _done(current, back, "error", EXPIRED_FORM)
    try:
        text = await action()
    except SsoError as problem:
        if gone is not None and isinstance(problem, NotFound):
            return await _done(current, gone[0], "error", gone[1])
        return await _done(current, back, "error", refused + problem.message)
    return await _done(current, then or back, "notice", text)
