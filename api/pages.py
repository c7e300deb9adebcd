"""Server-rendered pages share one Jinja environment and one set of page defaults."""

from __future__ import annotations

import secrets
import unicodedata
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse

from api.cookies import CSRF, csrf_seed, csrf_token, set_cookie
from core import recovery
from core.accounts import ACCOUNT_DISABLED
from core.org_suspension import SUSPENDED_TITLE, suspended_message
from core.templating import environment


def render_page(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Every page gets the brand, a CSRF token for its forms and a fresh submission id, so a
    double-submitted form runs its step once."""
    settings = request.app.state.settings
    seed, new_seed = csrf_seed(request, settings)
    html = (
        environment()
        .get_template(f"pages/{name}.html")
        .render(
            brand=settings.brand_name,
            support_email=settings.support_email,
            time_zone=settings.zone,
            entra_enabled=settings.entra_enabled,
            csrf_token=csrf_token(settings, seed),
            submission=secrets.token_urlsafe(16),
            **context,
        )
    )
    response = HTMLResponse(html, status_code=status_code)
    if new_seed:
        set_cookie(response, settings, CSRF, seed, max_age=None)
    return response


def problem(
    request: Request, status_code: int, title: str, message: str, page: str = "setup_problem"
) -> HTMLResponse:
    """A page that only says what went wrong (a title and a sentence), with the status that says it too."""
    return render_page(request, page, status_code=status_code, title=title, message=message)


UNAVAILABLE_TITLE = "We can't complete this right now"
DISABLED_TITLE = "Your staff login is disabled"


def disabled_page(request: Request) -> HTMLResponse:
    """A disabled person (a leaver) who proved who they are: told plainly, signed in nowhere."""
    return problem(request, 403, DISABLED_TITLE, ACCOUNT_DISABLED)


def suspended_page(request: Request, org_name: str) -> HTMLResponse:
    """A person of a suspended organisation who proved who they are: told whose sign-in is
    paused, signed in nowhere."""
    brand = request.app.state.settings.brand_name
    return problem(request, 403, SUSPENDED_TITLE, suspended_message(org_name, brand))


ENTRA_DISABLED_TITLE = "Your Microsoft account is disabled"
ENTRA_DISABLED = (
    "Your organisation has disabled or deleted the Microsoft account linked to your staff login, "
    "so you can't sign in with your password either. Ask your administrator."
)


def microsoft_disabled_page(request: Request) -> HTMLResponse:
    """A person whose linked Microsoft account Graph reports disabled or deleted, at a
    password sign-in: told plainly, signed in nowhere."""
    return problem(request, 403, ENTRA_DISABLED_TITLE, ENTRA_DISABLED)


def unavailable(request: Request) -> HTMLResponse:
    """A flow's step could not be answered (Temporal or its worker is away): try again later."""
    return problem(
        request, 503, UNAVAILABLE_TITLE, "We can't complete this right now, please try again in a minute."
    )


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def six_digits(typed: str) -> str | None:
    """A typed code as six ASCII digits, or None when it isn't one.

    Spaces anywhere are ignored, and every Unicode decimal digit counts as the ASCII digit it
    is (a phone set to Arabic-Indic digits, or a fullwidth Japanese keyboard, types the code
    the email shows). Anything else is not a code: letters, superscripts or circled digits,
    five or seven digits. Such input is refused on the page and never counts as an attempt.
    """
    digits = []
    for ch in typed:
        if ch.isspace():
            continue
        if unicodedata.category(ch) != "Nd":
            return None
        digits.append(str(unicodedata.decimal(ch)))
    return "".join(digits) if len(digits) == 6 else None


def second_factor(typed: str) -> str | None:
    """An authenticator code as six digits, or a recovery code as its ten characters."""
    return six_digits(typed) or recovery.normalise(typed)
