"""What an app does with the tokens it holds: refresh them (RFC 6749 §6, rotated on every
use, RFC 9700 §4.14.2), revoke them (RFC 7009) and, for a confidential client, introspect
them (RFC 7662). authlib's grant and endpoints decide; what they read is loaded first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from sqlalchemy import select, update

from api.services.oidc import Oidc, enabled_client, invalid_grant, subject_of
from api.services.oidc_server import Answer, Loaded, Provider, Request
from core.models import OidcGrant, OidcRefreshToken
from core.oidc.claims import Subject
from core.oidc.clients import AUTH_METHODS, RegisteredClient, refresh_lifetimes, refresh_within_lifetimes
from core.oidc.refresh import MAX_TOKEN_LENGTH, REFRESH_PREFIX, refresh_hash

REUSED = "This refresh token was already used; everything issued with it is now revoked."


@dataclass
class HeldToken:
    """A token an app presents, as authlib's grant and endpoints see it."""

    kind: str  # "access_token" or "refresh_token"
    grant: OidcGrant
    scope: str
    issued_at: int
    expires_at: int
    active: bool
    sid: str | None = None

    def check_client(self, client: RegisteredClient) -> bool:
        return client.get_client_id() == self.grant.client_id

    def get_scope(self) -> str:
        return self.scope

    def is_expired(self) -> bool:
        return not self.active

    def is_revoked(self) -> bool:
        return not self.active

    def introspection(self, issuer: str) -> dict[str, Any]:
        return {
            "active": True,
            "token_type": self.kind,
            "client_id": self.grant.client_id,
            "sub": str(self.grant.staff_id),
            "scope": self.scope,
            "iss": issuer,
            "iat": self.issued_at,
            "exp": self.expires_at,
            **({"sid": self.sid} if self.sid else {}),
        }


class RefreshGrant(grants.RefreshTokenGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = list(AUTH_METHODS)
    INCLUDE_NEW_REFRESH_TOKEN = True
    server: Provider

    def authenticate_refresh_token(self, refresh_token: str) -> HeldToken | None:
        loaded = self.server.loaded
        row = loaded.refresh
        if row is None or row.token_hash != refresh_hash(loaded.settings, refresh_token):
            return None
        return held_refresh(loaded, row) if loaded.refresh_usable else None

    def authenticate_user(self, refresh_token: HeldToken) -> Subject | None:
        subject = self.server.loaded.subject
        return subject if subject is not None and subject.usable else None

    def revoke_old_credential(self, refresh_token: HeldToken) -> None:
        pass  # rotated (atomically) once the answer is ready: see Tokens.refresh


class Revocation(RevocationEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS = list(AUTH_METHODS)
    server: TokenServer

    def query_token(self, token_string: str, token_type_hint: str | None) -> HeldToken | None:
        return self.server.held

    def revoke_token(self, token: HeldToken, request: Request) -> None:
        self.server.revoke = token.grant


class Introspection(IntrospectionEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
    server: TokenServer

    def query_token(self, token_string: str, token_type_hint: str | None) -> HeldToken | None:
        return self.server.held

    def check_permission(self, token: HeldToken, client: RegisteredClient, request: Request) -> bool:
        return token.check_client(client)  # an app learns about its own tokens only

    def introspect_token(self, token: HeldToken) -> dict[str, Any]:
        return token.introspection(self.server.loaded.settings.public_url)


class TokenServer(Provider):
    """The provider with the refresh grant and the revocation and introspection endpoints,
    and what those read (`held`) and decide (`revoke`)."""

    def __init__(self, loaded: Loaded) -> None:
        super().__init__(loaded)
        self.held: HeldToken | None = None
        self.revoke: OidcGrant | None = None
        self.register_grant(RefreshGrant)
        self.register_endpoint(Revocation)
        self.register_endpoint(Introspection)


def held_refresh(loaded: Loaded, row: OidcRefreshToken) -> HeldToken:
    assert loaded.grant is not None and loaded.client is not None
    idle, _ = refresh_lifetimes(loaded.client.registration)
    issued = int(row.created_at.timestamp())
    return HeldToken(
        "refresh_token",
        loaded.grant,
        row.scope,
        issued,
        issued + idle,
        loaded.refresh_usable,
        loaded.grant.claims.get("sid"),
    )


@dataclass
class Tokens:
    oidc: Oidc

    async def _server(self, client_id: str | None) -> TokenServer:
        oidc = self.oidc
        return TokenServer(await oidc.loaded_for(await enabled_client(oidc.db, oidc.settings, client_id)))

    # -- refresh_token grant ----------------------------------------------------------------

    async def refresh(self, request: Request, client_id: str | None) -> Answer:
        db, now = self.oidc.db, self.oidc.now
        server = await self._server(client_id)
        loaded = server.loaded
        row = await self._refresh_row(request.payload.data.get("refresh_token"), loaded)
        if row is not None and loaded.grant is not None:
            if row.rotated_at is not None:
                # Rotated already: either the app or a thief holds the newer one; end both.
                await self.oidc.revoke_grant(loaded.grant)
                return invalid_grant(server, request, REUSED)
            loaded.subject = await subject_of(db, loaded.grant.staff_id, loaded.grant.claims)
        answer: Answer = server.create_token_response(request)
        if answer.status != 200 or row is None or loaded.grant is None:
            return answer
        rotated = await db.execute(
            update(OidcRefreshToken)
            .where(OidcRefreshToken.id == row.id, OidcRefreshToken.rotated_at.is_(None))
            .values(rotated_at=now)
        )
        if rotated.rowcount != 1:  # type: ignore[attr-defined]
            await self.oidc.revoke_grant(loaded.grant)
            return invalid_grant(server, request, REUSED)
        await db.flush()
        return answer

    async def _refresh_row(self, token: str | None, loaded: Loaded) -> OidcRefreshToken | None:
        """The refresh token row behind `token`, its grant in `loaded` and whether it may be
        used: not rotated, grant not revoked (as ending its sign-in session does), within the
        client's lifetimes."""
        if not token or len(token) > MAX_TOKEN_LENGTH or not token.startswith(REFRESH_PREFIX):
            return None
        db, settings = self.oidc.db, self.oidc.settings
        row = await db.scalar(
            select(OidcRefreshToken).where(OidcRefreshToken.token_hash == refresh_hash(settings, token))
        )
        grant = await db.get(OidcGrant, row.grant_id) if row is not None else None
        if row is None or grant is None:
            return None
        loaded.grant, loaded.refresh = grant, row
        client = loaded.client
        if client is None or client.get_client_id() != grant.client_id or grant.revoked_at is not None:
            return row
        started = grant.redeemed_at or grant.created_at
        # Ending the sign-in session revoked the grant (core/accounts.py end_session_grants).
        loaded.refresh_usable = (
            row.rotated_at is None
            and grant.session_hash is not None
            and refresh_within_lifetimes(client.registration, row.created_at, started, self.oidc.now)
        )
        return row

    # -- revocation and introspection --------------------------------------------------------

    async def revocation(self, request: Request, client_id: str | None) -> Answer:
        server = await self._server(client_id)
        server.held = await self._held(request, server.loaded)
        answer: Answer = server.create_endpoint_response("revocation", request)
        if answer.status == 200 and server.revoke is not None:
            await self.oidc.revoke_grant(server.revoke)
        return answer

    async def introspection(self, request: Request, client_id: str | None) -> Answer:
        server = await self._server(client_id)
        server.held = await self._held(request, server.loaded)
        answer: Answer = server.create_endpoint_response("introspection", request)
        return answer

    async def _held(self, request: Request, loaded: Loaded) -> HeldToken | None:
        token = request.payload.data.get("token") or ""
        if token.startswith(REFRESH_PREFIX):
            row = await self._refresh_row(token, loaded)
            return held_refresh(loaded, row) if row is not None and loaded.client is not None else None
        found = await self.oidc.access_token(token)
        if found is None:
            return None
        claims, grant = found
        scope = str(claims.get("scope", ""))
        return HeldToken("access_token", grant, scope, claims["iat"], claims["exp"], True, claims.get("sid"))
