"""What an app does with the tokens it holds: refresh them (RFC 6749 §6, rotated on every
use, RFC 9700 §4.14.2), revoke them (RFC 7009) and, for a confidential client, introspect
them (RFC 7662). authlib's grant and endpoints decide; what they read is loaded first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from authlib.oauth2.rfc6749 import InvalidGrantError, grants
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import load_only

from api.services.oidc import Oidc, active_subject, enabled, enabled_client, invalid_grant, subject_of
from api.services.oidc_server import Answer, Loaded, Provider, Request
from core.models import (
    SIGN_IN_PAUSED,
    AccountStatus,
    OidcClient,
    OidcGrant,
    OidcRefreshToken,
    Organisation,
    SsoAccount,
    Staff,
)
from core.oidc.claims import Subject, org_claims
from core.oidc.clients import AUTH_METHODS, RegisteredClient, refresh_lifetimes, refresh_within_lifetimes
from core.oidc.refresh import MAX_TOKEN_LENGTH, REFRESH_PREFIX, refresh_hash

# A refused refresh is audited, a successful one when SSO_OIDC_AUDIT_REFRESHES is on (never
# the token or its digest).
REFRESHED = "oidc.token_refreshed"
REFRESH_REFUSED = "oidc.refresh_refused"
NO_PERSON = "The person this refresh token was issued to can no longer sign in to this app."
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
    # The person, while they may still sign in: an introspection answer names their agency as
    # every token and userinfo answer does.
    subject: Subject | None = None

    def check_client(self, client: RegisteredClient) -> bool:
        return client.get_client_id() == self.grant.client_id

    def get_scope(self) -> str:
        return self.scope

    def is_expired(self) -> bool:
        return not self.active

    def is_revoked(self) -> bool:
        return not self.active

    def introspection(self, issuer: str) -> dict[str, Any]:
        assert self.subject is not None  # Tokens.introspection answers inactive without one
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
            **org_claims(self.subject.org),
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

    def authenticate_user(self, refresh_token: HeldToken) -> Subject:
        subject = self.server.loaded.subject
        if subject is None or not self.server.signs_in(subject):
            # authlib would answer invalid_request; the grant is what is no longer valid (a
            # disabled or removed person, an app limited to other organisations since), so
            # RFC 6749 §5.2 says invalid_grant, as for a code.
            raise InvalidGrantError(NO_PERSON)
        return subject

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


# Built once, not per grant: the provider's most frequent query.
FAMILY = (
    select(OidcRefreshToken, OidcGrant, OidcClient, Staff, SsoAccount, Organisation)
    .join(OidcGrant, OidcGrant.id == OidcRefreshToken.grant_id)
    .join(OidcClient, OidcClient.client_id == OidcGrant.client_id)
    .outerjoin(Staff, Staff.id == OidcGrant.staff_id)
    .outerjoin(SsoAccount, SsoAccount.staff_id == OidcGrant.staff_id)
    .outerjoin(Organisation, Organisation.id == Staff.org_id)
    .where(OidcRefreshToken.token_hash == bindparam("token_hash"))
    # A refresh reads who the person is, their agency and whether they may still sign in, no more.
    .options(
        load_only(Staff.id, Staff.org_id),
        load_only(SsoAccount.staff_id, SsoAccount.status),
        load_only(Organisation.id, Organisation.name, Organisation.status),
    )
)


@dataclass
class Family:
    """A refresh token's row with what a refresh reads besides: its grant, the grant's client
    and the person (None if gone), loaded in one query."""

    row: OidcRefreshToken
    grant: OidcGrant
    client: OidcClient
    staff: Staff | None
    account: SsoAccount | None
    org: Organisation | None


def refusal(answer: Answer, family: Family | None, loaded: Loaded) -> str:
    """Why a refresh was refused, for the audit: authlib's error, made precise when it is
    the token (`invalid_grant`) or the person it was issued to."""
    if answer.error != "invalid_grant":
        return answer.error  # the app's authentication, the request or its scope
    if family is None:
        return "unknown_token"
    grant, client = family.grant, loaded.client
    if client is None or client.get_client_id() != grant.client_id:
        return "wrong_client"
    if grant.revoked_at is not None:
        return "revoked"  # by its sign-in session's end, the app, a disable or a suspension
    if grant.session_hash is None:
        return "no_session"
    if not loaded.refresh_usable:
        return "expired"
    staff, account, org = family.staff, family.account, family.org
    if staff is None or account is None or org is None:
        return "person_removed"
    if account.status != AccountStatus.active.value:
        return f"account_{account.status}"  # account_disabled
    if org.status in SIGN_IN_PAUSED:
        return f"org_{org.status}"
    return "org_not_admitted"  # the app was limited to other organisations since


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

    async def _server(self, client_id: str | None, family: Family | None = None) -> TokenServer:
        """The server for the client named `client_id`: the family's own client (already
        loaded) when it is that one, else read by its id."""
        oidc = self.oidc
        if family is not None and family.client.client_id == client_id:
            client = enabled(family.client, oidc.settings)
        else:
            client = await enabled_client(oidc.db, oidc.settings, client_id)
        return TokenServer(await oidc.loaded_for(client))

    # -- refresh_token grant ----------------------------------------------------------------

    async def refresh(self, request: Request, client_id: str | None) -> Answer:
        """Reads are one query (the token, its grant, client and person) and the signing keys
        the process already holds; writes are the rotation and the new token."""
        db, now = self.oidc.db, self.oidc.now
        family = await self._family(request.payload.data.get("refresh_token"))
        server = await self._server(client_id, family)
        loaded = server.loaded
        row = self._use(family, loaded)
        if family is not None and row is not None:
            if row.rotated_at is not None:
                # Rotated already: either the app or a thief holds the newer one; end both.
                return await self._reused(server, request, family, client_id)
            loaded.subject = active_subject(family.staff, family.account, family.org, family.grant.claims)
        answer: Answer = server.create_token_response(request)
        if answer.status != 200 or row is None or family is None:
            grant = family.grant if family is not None else None
            self.oidc.token_refused(client_id, grant, refusal(answer, family, loaded), REFRESH_REFUSED)
            return answer
        # Race-safe: of two requests with the same token, only one changes the row.
        rotated = await db.execute(
            update(OidcRefreshToken)
            .where(OidcRefreshToken.id == row.id, OidcRefreshToken.rotated_at.is_(None))
            .values(rotated_at=now)
            .execution_options(synchronize_session=False)
        )
        if rotated.rowcount != 1:  # type: ignore[attr-defined]
            return await self._reused(server, request, family, client_id)
        await loaded.save_issued()
        if self.oidc.settings.oidc_audit_refreshes:
            self.oidc.token_issued(family.grant, REFRESHED)
        return answer

    async def _reused(
        self, server: TokenServer, request: Request, family: Family, client_id: str | None
    ) -> Answer:
        await self.oidc.revoke_grant(family.grant)
        self.oidc.token_refused(client_id, family.grant, "reused", REFRESH_REFUSED)
        return invalid_grant(server, request, REUSED)

    async def _family(self, token: str | None) -> Family | None:
        """The refresh token behind `token` and what a refresh reads with it, in one query."""
        if not token or len(token) > MAX_TOKEN_LENGTH or not token.startswith(REFRESH_PREFIX):
            return None
        found = (
            await self.oidc.db.execute(FAMILY, {"token_hash": refresh_hash(self.oidc.settings, token)})
        ).first()
        return Family(*found) if found is not None else None

    def _use(self, family: Family | None, loaded: Loaded) -> OidcRefreshToken | None:
        """The family's refresh token row (its grant put in `loaded`) and whether it may be
        used: not rotated, grant not revoked (as ending its sign-in session does), within the
        client's lifetimes, presented by its own client."""
        if family is None:
            return None
        row, grant = family.row, family.grant
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
        held = await self._held(request, server.loaded)
        # Active only while its person may still sign in, as userinfo answers.
        server.held = held if held is not None and held.subject is not None else None
        answer: Answer = server.create_endpoint_response("introspection", request)
        return answer

    async def _held(self, request: Request, loaded: Loaded) -> HeldToken | None:
        token = request.payload.data.get("token") or ""
        if token.startswith(REFRESH_PREFIX):
            family = await self._family(token)
            row = self._use(family, loaded)
            if family is None or row is None or loaded.client is None:
                return None
            held = held_refresh(loaded, row)
            held.subject = active_subject(family.staff, family.account, family.org, family.grant.claims)
            return held
        found = await self.oidc.access_token(token)
        if found is None:
            return None
        claims, grant = found
        scope = str(claims.get("scope", ""))
        subject = await subject_of(self.oidc.db, grant.staff_id, grant.claims)
        return HeldToken(
            "access_token", grant, scope, claims["iat"], claims["exp"], True, claims.get("sid"), subject
        )
