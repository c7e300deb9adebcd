"""Cookies and CSRF for the server-rendered pages.

CSRF is a signed double-submit: a random cookie, and in each form an HMAC of it that only the
server can make. Cookies are HttpOnly and SameSite=Lax, and `Secure` with the `__Host-` prefix
when the public URL is https.
"""

from __future__ import annotations

import hmac
import secrets
from datetime import timedelta

from fastapi import Request, Response

from core.crypto import token_hash
from core.settings import Settings

CSRF = "sso_csrf"
SETUP_SESSION = "sso_setup"
SIGNIN_SESSION = "sso_session"
PENDING_MFA = "sso_pending"
RESET_SESSION = "sso_reset"
# Which browser asked for a reset: its codes and throttle are its own (never a session).
RESET_BROWSER = "sso_reset_browser"
ENTRA_PENDING = "sso_entra"
# The passkey ceremony this browser began: its challenge is single use and bound to it.
PASSKEY_CHALLENGE = "sso_passkey"
# The verified Microsoft account this browser may link (or swap) on the confirm page.
ENTRA_CONFIRM = "sso_entra_confirm"


def secure(settings: Settings) -> bool:
    return settings.public_url.startswith("https://")


def cookie_name(settings: Settings, base: str) -> str:
    return f"__Host-{base}" if secure(settings) else base


def set_cookie(
    response: Response, settings: Settings, base: str, value: str, max_age: timedelta | None
) -> None:
    response.set_cookie(
        cookie_name(settings, base),
        value,
        httponly=True,
        samesite="lax",
        path="/",
        secure=secure(settings),
        max_age=int(max_age.total_seconds()) if max_age else None,
    )


def clear_cookie(response: Response, settings: Settings, base: str) -> None:
    response.delete_cookie(
        cookie_name(settings, base), path="/", secure=secure(settings), httponly=True, samesite="lax"
    )


def read_cookie(request: Request, settings: Settings, base: str) -> str | None:
    return request.cookies.get(cookie_name(settings, base))


def csrf_seed(request: Request, settings: Settings) -> tuple[str, bool]:
    """The browser's CSRF cookie value, and whether it still has to be set."""
    existing = read_cookie(request, settings, CSRF)
    if existing and 20 <= len(existing) <= 100:
        return existing, False
    return secrets.token_urlsafe(32), True


def csrf_token(settings: Settings, seed: str) -> str:
    return token_hash(settings.secret_key.get_secret_value(), "csrf", seed)


def csrf_ok(request: Request, settings: Settings, submitted: str | None) -> bool:
    seed = read_cookie(request, settings, CSRF)
    if not seed or not submitted:
        return False
    return hmac.compare_digest(csrf_token(settings, seed), submitted)
