"""RP-initiated logout 1.0: an app sends the browser here to sign out of the provider, and
may have it sent back to a post-logout address it registered."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from joserfc import jwt
from joserfc.errors import JoseError

from api.services.oidc import Oidc, PageProblem, enabled_client
from api.services.sessions import Current
from core.oidc.claims import session_claims
from core.oidc.clients import RegisteredClient
from core.oidc.keys import ALGORITHMS

MAX_HINT_LENGTH = 8192


@dataclass
class Logout:
    """What a logout request asks, once checked."""

    client: RegisteredClient | None
    return_to: str | None  # the registered post-logout address, with the app's state
    confirmed: bool  # the hint names the browser's own session: no need to ask

    @property
    def fields(self) -> dict[str, str]:
        """What the confirmation form carries to its POST, the hint aside."""
        return {"client_id": self.client.get_client_id()} if self.client is not None else {}


async def check_logout(oidc: Oidc, data: dict[str, str], current: Current | None) -> Logout:
    """The request's app, return address and whether the person must confirm; a request
    whose return address can't be trusted is a PageProblem, never a redirect."""
    hint = await _hint_claims(oidc, data.get("id_token_hint"))
    audience = hint.get("aud") if hint else None
    hinted = (audience[0] if isinstance(audience, list) and audience else audience) or None
    client_id = data.get("client_id") or hinted
    if data.get("client_id") and hinted and data["client_id"] != hinted:
        raise PageProblem("The app that sent you here named a different app than its sign-in did.")
    client = await enabled_client(oidc.db, oidc.settings, client_id) if client_id else None
    return_to = None
    if uri := data.get("post_logout_redirect_uri"):
        if client is None or uri not in client.registration.get("post_logout_redirect_uris", []):
            raise PageProblem(
                "The app that sent you here gave an address to return to that it hasn't registered."
            )
        state = data.get("state")
        return_to = f"{uri}{'&' if '?' in uri else '?'}{urlencode({'state': state})}" if state else uri
    own_session = (
        current is not None
        and hint is not None
        and hint.get("sid") == session_claims(oidc.settings, current.row)["sid"]
        and current.staff is not None
        and hint.get("sub") == str(current.staff.id)
    )
    return Logout(client, return_to, confirmed=current is None or own_session)


async def _hint_claims(oidc: Oidc, hint: str | None) -> dict[str, Any] | None:
    """The claims of an ID token this provider signed, expired or not (a hint only says who
    the app thinks is signed in), or None."""
    if not hint or len(hint) > MAX_HINT_LENGTH:
        return None
    published = await oidc.state.keys.published(oidc.db, oidc.now)
    try:
        decoded = jwt.decode(hint, oidc.state.keys.verification_keys(published), algorithms=list(ALGORITHMS))
    except (JoseError, ValueError):
        return None
    claims = decoded.claims
    if claims.get("iss") != oidc.settings.public_url or decoded.header.get("typ") not in (None, "JWT"):
        return None
    return claims
