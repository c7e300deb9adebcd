"""Back-Channel Logout 1.0: the logout token an app is sent when a session it got tokens in
ends, and the guard that keeps the fan-out from reaching what it should not (SSRF)."""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

LOGOUT_TOKEN_TYPE = "logout+jwt"  # noqa: S105 (a JWT typ)
LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
LOGOUT_TOKEN_TTL = 120  # seconds: the app checks it on arrival


def logout_token_claims(
    issuer: str, client_id: str, sub: str, sid: str, jti: str, now: int
) -> dict[str, Any]:
    """§2.4: `events`, `sid` and `sub`, never a `nonce` (so it can't pass as an ID token)."""
    return {
        "iss": issuer,
        "aud": client_id,
        "iat": now,
        "exp": now + LOGOUT_TOKEN_TTL,
        "jti": jti,
        "sub": sub,
        "sid": sid,
        "events": {LOGOUT_EVENT: {}},
    }


def logout_uri_refusal(uri: str, addresses: list[str], internal: bool, development: bool) -> str | None:
    """Why the logout token may not be sent to `uri`, whose host resolved to `addresses`, or
    None. Only a client marked internal may be reached on loopback, link-local or private
    addresses; outside development only over https."""
    if urlsplit(uri).scheme != "https" and not development:
        return "the back-channel logout URI must use https"
    if internal:
        return None
    if not addresses:
        return "the back-channel logout URI's host does not resolve"
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if ip.is_loopback or ip.is_link_local or ip.is_private or ip.is_reserved or ip.is_multicast:
            return f"the back-channel logout URI resolves to {ip}, which only an internal client may use"
    return None
