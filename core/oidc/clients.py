"""Client apps of the OpenID Connect provider: their registration rules, their secrets (shown
once, kept as an HMAC, compared in constant time) and the view authlib's grants take of them."""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from core.crypto import token_hash
from core.errors import SsoError
from core.models import OidcClient
from core.oidc.keys import ALGORITHMS, DEFAULT_ALGORITHM
from core.settings import Settings

AUTH_METHODS = ("client_secret_basic", "client_secret_post", "none")
GRANT_TYPES = ("authorization_code", "refresh_token")
SCOPES = ("openid", "profile", "email", "offline_access")
OFFLINE = "offline_access"
# A refresh token unused this long ends; its family ends this long after the code was redeemed.
REFRESH_IDLE_DEFAULT = 14 * 86400
REFRESH_ABSOLUTE_DEFAULT = 90 * 86400
REFRESH_LIFETIME_MAX = 365 * 86400
LIFETIMES = ("refresh_token_idle_lifetime", "refresh_token_absolute_lifetime")
SECRET_PREFIX = "ssocs_"  # noqa: S105 (a prefix, not a secret)
SECRET_PURPOSE = "oidc-client-secret"  # noqa: S105 (an HMAC purpose)
# RFC 8252 §7.3: native apps listen on a loopback address over plain http.
LOOPBACK_HOSTS = ("localhost",)
MAX_URIS = 20
MAX_URI_LENGTH = 2000


def new_client_id() -> str:
    return secrets.token_urlsafe(18)


def new_client_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def secret_hash(settings: Settings, secret: str) -> str:
    return token_hash(settings.secret_key.get_secret_value(), SECRET_PURPOSE, secret)


def _loopback(host: str) -> bool:
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def uri_problem(uri: str, development: bool) -> str | None:
    """Why a redirect or logout URI can't be registered, or None."""
    if len(uri) > MAX_URI_LENGTH or any(ch.isspace() or ord(ch) < 32 for ch in uri):
        return f"{uri[:80]!r} is too long or holds spaces or control characters"
    try:
        parts = urlsplit(uri)
        host = parts.hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return f"{uri!r} is not a valid address"
    if not host or parts.scheme not in ("https", "http"):
        return f"{uri!r} must be an absolute https:// address"
    if parts.fragment or "#" in uri:
        return f"{uri!r} must not have a fragment"
    if parts.username or parts.password:
        return f"{uri!r} must not carry a user name or password"
    if parts.scheme == "http" and not development and not _loopback(host):
        return f"{uri!r} must use https (plain http only for a loopback address, RFC 8252)"
    return None


def check_registration(registration: dict[str, Any], settings: Settings) -> None:
    """Refuses, with what to change, a registration the provider can't honour."""
    redirect_uris = registration.get("redirect_uris") or []
    if not redirect_uris:
        raise SsoError("redirect_uris: register at least one redirect URI")
    uris = [*redirect_uris, *(registration.get("post_logout_redirect_uris") or [])]
    if registration.get("backchannel_logout_uri"):
        uris.append(registration["backchannel_logout_uri"])
    if len(uris) > MAX_URIS * 2 + 1 or len(redirect_uris) > MAX_URIS:
        raise SsoError(f"redirect_uris: at most {MAX_URIS} redirect URIs")
    for uri in uris:
        problem = uri_problem(uri, settings.is_development)
        if problem is not None:
            raise SsoError(problem)
    backchannel = registration.get("backchannel_logout_uri")
    if backchannel and not settings.is_development and not backchannel.startswith("https://"):
        raise SsoError(f"{backchannel!r}: a back-channel logout URI must use https")
    method = registration.get("token_endpoint_auth_method")
    if method not in AUTH_METHODS:
        raise SsoError(f"token_endpoint_auth_method must be one of {', '.join(AUTH_METHODS)}")
    grant_types = set(registration.get("grant_types") or [])
    unsupported = grant_types - set(GRANT_TYPES)
    if unsupported:
        raise SsoError(f"grant_types: {', '.join(sorted(unsupported))} not supported")
    if "authorization_code" not in grant_types:
        raise SsoError("grant_types: authorization_code is required")
    idle, absolute = refresh_lifetimes(registration)
    if not 60 <= idle <= absolute <= REFRESH_LIFETIME_MAX:
        raise SsoError(
            "refresh_token_idle_lifetime and refresh_token_absolute_lifetime: seconds, at least 60, "
            f"idle no longer than absolute, at most {REFRESH_LIFETIME_MAX}"
        )
    if registration.get("id_token_signed_response_alg") not in ALGORITHMS:
        raise SsoError(f"id_token_signed_response_alg must be one of {', '.join(ALGORITHMS)}")


def normalised(registration: dict[str, Any]) -> dict[str, Any]:
    return {
        "redirect_uris": list(registration.get("redirect_uris") or []),
        "post_logout_redirect_uris": list(registration.get("post_logout_redirect_uris") or []),
        "backchannel_logout_uri": registration.get("backchannel_logout_uri") or None,
        "token_endpoint_auth_method": registration.get("token_endpoint_auth_method") or "client_secret_basic",
        "grant_types": list(registration.get("grant_types") or ["authorization_code"]),
        "response_types": ["code"],
        "id_token_signed_response_alg": registration.get("id_token_signed_response_alg") or DEFAULT_ALGORITHM,
        "require_consent": bool(registration.get("require_consent", False)),
        "internal": bool(registration.get("internal", False)),
        # Empty: people of every organisation; else only those of the organisations named.
        "allowed_org_ids": sorted({str(org_id) for org_id in registration.get("allowed_org_ids") or []}),
        **dict(zip(LIFETIMES, refresh_lifetimes(registration), strict=True)),
    }


def refresh_lifetimes(registration: dict[str, Any]) -> tuple[int, int]:
    """Seconds a refresh token may go unused, and that its family may live."""
    idle, absolute = (registration.get(name) for name in LIFETIMES)
    return int(idle or REFRESH_IDLE_DEFAULT), int(absolute or REFRESH_ABSOLUTE_DEFAULT)


def refresh_within_lifetimes(
    registration: dict[str, Any], issued_at: datetime, family_started_at: datetime, now: datetime
) -> bool:
    """A refresh token issued at `issued_at`, of a family begun at `family_started_at`, is
    neither idle too long nor past its family's absolute lifetime."""
    idle, absolute = refresh_lifetimes(registration)
    return issued_at + timedelta(seconds=idle) > now and family_started_at + timedelta(seconds=absolute) > now


def confidential(registration: dict[str, Any]) -> bool:
    return registration.get("token_endpoint_auth_method") != "none"


@dataclass
class RegisteredClient:
    """authlib's ClientMixin over a client row, for an enabled client."""

    row: OidcClient
    settings: Settings

    @property
    def registration(self) -> dict[str, Any]:
        return self.row.registration

    @property
    def id_token_signed_response_alg(self) -> str:
        return str(self.registration.get("id_token_signed_response_alg") or DEFAULT_ALGORITHM)

    @property
    def public(self) -> bool:
        return not confidential(self.registration)

    def get_client_id(self) -> str:
        return self.row.client_id

    def get_default_redirect_uri(self) -> str | None:
        return None  # OpenID Connect requires redirect_uri in every request

    def get_allowed_scope(self, scope: str | None) -> str:
        asked = (scope or "").split()
        offline = self.check_grant_type("refresh_token")
        return " ".join(s for s in dict.fromkeys(asked) if s in SCOPES and (s != OFFLINE or offline))

    def admits(self, org_id: uuid.UUID) -> bool:
        """People of this organisation may sign in to the app."""
        allowed = self.registration.get("allowed_org_ids") or []
        return not allowed or str(org_id) in allowed

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.registration.get("redirect_uris", [])

    def check_client_secret(self, client_secret: str) -> bool:
        stored = self.row.secret_hash
        presented = secret_hash(self.settings, client_secret)
        return stored is not None and hmac.compare_digest(presented.encode(), stored.encode())

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        """The registered method at the token and revocation endpoints; introspection
        (RFC 7662) is for confidential clients only."""
        if endpoint == "introspection" and self.public:
            return False
        allowed = endpoint in ("token", "revocation", "introspection")
        return allowed and method == self.registration.get("token_endpoint_auth_method")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.registration.get("grant_types", [])
