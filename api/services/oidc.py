"""The provider's endpoints: authorization (on top of the browser's sign-in session), token
and userinfo. Everything is loaded first, then authlib's grants decide; no workflow per
request."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import InvalidGrantError, InvalidRequestError
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwt import JWTClaimsRegistry
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.services.oidc_server import (
    ACCESS_TOKEN_TYPE,
    Answer,
    Loaded,
    Provider,
    Request,
    access_token_audience,
    code_hash,
    grant_id_of,
)
from api.services.sessions import Current
from core.models import AccountStatus, OidcClient, OidcGrant, SsoAccount, Staff, utcnow
from core.oidc.claims import Subject, session_claims, user_claims
from core.oidc.clients import RegisteredClient
from core.oidc.keys import ALGORITHMS, KeyStore
from core.rate_limit import SlidingWindowLimiter
from core.settings import Settings


class PageProblem(Exception):
    """An authorization request that can't be answered to the app (no valid client or
    redirect URI yet): the person gets a page saying so, never a redirect."""


@dataclass
class SignInNeeded:
    login_hint: str


class OidcState:
    """What the provider keeps per web app process: unsealed keys and the token limits."""

    def __init__(self, settings: Settings) -> None:
        self.keys = KeyStore(settings)
        self.per_client = SlidingWindowLimiter(settings.oidc_token_client_limit, 60)
        self.per_ip = SlidingWindowLimiter(settings.oidc_token_ip_limit, 60)


async def enabled_client(
    db: AsyncSession, settings: Settings, client_id: str | None
) -> RegisteredClient | None:
    if not client_id or len(client_id) > 64:
        return None
    row = await db.scalar(select(OidcClient).where(OidcClient.client_id == client_id))
    return RegisteredClient(row, settings) if row is not None and row.disabled_at is None else None


async def subject_of(db: AsyncSession, staff_id: uuid.UUID | None, session: dict[str, Any]) -> Subject | None:
    staff = await db.get(Staff, staff_id) if staff_id else None
    account = await db.scalar(select(SsoAccount).where(SsoAccount.staff_id == staff_id)) if staff else None
    if staff is None or account is None or account.status != AccountStatus.active.value:
        return None
    return Subject(staff, account, session)


@dataclass
class Oidc:
    settings: Settings
    db: AsyncSession
    state: OidcState
    now: datetime = field(default_factory=lambda: utcnow())  # read at each request, so tests can move it

    async def loaded_for(self, client: RegisteredClient | None) -> Loaded:
        keys = await self.state.keys.signing(self.db, self.now)
        return Loaded(self.settings, self.db, self.now, keys, client=client)

    # -- authorization endpoint ------------------------------------------------------------

    async def authorize(
        self, request: Request, current: Current | None, fresh_since: Any = None
    ) -> Answer | SignInNeeded:
        data = request.payload.data
        client = await enabled_client(self.db, self.settings, data.get("client_id"))
        if client is None:
            raise PageProblem(
                "The app that sent you here isn't registered with this sign-in service, or is switched off."
            )
        redirect_uri = data.get("redirect_uri")
        if not redirect_uri or not client.check_redirect_uri(redirect_uri):
            raise PageProblem(
                "The app that sent you here gave an address to return to that it hasn't registered."
            )
        loaded = await self.loaded_for(client)
        loaded.session_hash = current.row.id_hash if current is not None else None
        provider = Provider(loaded)
        subject = await self._subject(current)
        if subject is not None and self._needs_sign_in(data, current, subject, fresh_since):
            subject = None
        try:
            grant = provider.get_consent_grant(request, end_user=subject)
            self._check_max_age(data)
        except OAuth2Error as error:
            if not error.redirect_uri:
                error.redirect_uri = redirect_uri
            error.state = data.get("state")
            return provider.error_with_issuer(provider.handle_error_response(request, error))
        if subject is None:
            return SignInNeeded(login_hint=(data.get("login_hint") or "")[:320])
        answer: Answer = provider.create_authorization_response(request, grant_user=subject, grant=grant)
        await self.db.flush()
        return answer

    async def _subject(self, current: Current | None) -> Subject | None:
        if current is None or current.staff is None:
            return None
        return await subject_of(self.db, current.staff.id, session_claims(self.settings, current.row))

    def _needs_sign_in(
        self, data: dict[str, str], current: Current | None, subject: Subject, fresh_since: Any
    ) -> bool:
        """prompt=login, max_age and acr_values=mfa ask for a sign-in made for this request
        (after it began), unless the session already satisfies them."""
        assert current is not None
        if fresh_since is not None and current.row.created_at >= fresh_since:
            return False
        if "login" in data.get("prompt", "").split():
            return True
        max_age = data.get("max_age", "")
        if max_age.isdigit() and (self.now - current.row.created_at).total_seconds() > int(max_age):
            return True
        wants_mfa = "mfa" in data.get("acr_values", "").split()
        # Someone without a second factor can't give one: their code then says acr "pwd".
        return wants_mfa and subject.session["acr"] != "mfa" and subject.account.mfa_enabled_at is not None

    @staticmethod
    def _check_max_age(data: dict[str, str]) -> None:
        max_age = data.get("max_age")
        if max_age is not None and (not max_age.isdigit() or len(max_age) > 9):
            raise InvalidRequestError("max_age must be a whole number of seconds")

    # -- token endpoint --------------------------------------------------------------------

    async def token(self, request: Request, client_id: str | None) -> Answer:
        client = await enabled_client(self.db, self.settings, client_id)
        loaded = await self.loaded_for(client)
        provider = Provider(loaded)
        code = request.payload.data.get("code")
        if code and len(code) <= 200:
            loaded.grant = await self.db.scalar(
                select(OidcGrant).where(OidcGrant.code_hash == code_hash(self.settings, code))
            )
        grant = loaded.grant
        if grant is not None and grant.redeemed_at is not None:
            # A code used twice was stolen on one of the two uses: what it gave is revoked.
            await self.revoke_grant(grant)
            return invalid_grant(
                provider, request, "This code was already used; what it issued is now revoked."
            )
        if grant is not None:
            loaded.subject = await subject_of(self.db, grant.staff_id, grant.claims)
        answer: Answer = provider.create_token_response(request)
        if answer.status != 200 or grant is None:
            return answer
        claimed = await self.db.execute(
            update(OidcGrant)
            .where(OidcGrant.id == grant.id, OidcGrant.redeemed_at.is_(None))
            .values(redeemed_at=self.now)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            await self.revoke_grant(grant)
            return invalid_grant(
                provider, request, "This code was already used; what it issued is now revoked."
            )
        return answer

    async def revoke_grant(self, grant: OidcGrant) -> None:
        """Ends the grant: its access tokens and its refresh token family with it."""
        await self.db.execute(
            update(OidcGrant)
            .where(OidcGrant.id == grant.id, OidcGrant.revoked_at.is_(None))
            .values(revoked_at=self.now)
        )

    # -- userinfo --------------------------------------------------------------------------

    async def userinfo(self, token: str) -> dict[str, Any] | None:
        """The claims for a live access token's subject, or None for any token that isn't one."""
        found = await self.access_token(token)
        if found is None:
            return None
        claims, grant = found
        subject = await subject_of(self.db, grant.staff_id, grant.claims)
        return user_claims(subject, str(claims.get("scope", ""))) if subject is not None else None

    async def access_token(self, token: str) -> tuple[dict[str, Any], OidcGrant] | None:
        """A live access token's claims and grant: signed by a published key, unexpired, for
        this provider, its grant not revoked and its client enabled."""
        if not token or len(token) > 4096:
            return None
        published = await self.state.keys.published(self.db, self.now)
        try:
            decoded = jwt.decode(
                token, self.state.keys.verification_keys(published), algorithms=list(ALGORITHMS)
            )
            if decoded.header.get("typ") != ACCESS_TOKEN_TYPE:
                return None
            JWTClaimsRegistry(
                now=int(self.now.timestamp()),
                leeway=0,
                iss={"essential": True, "value": self.settings.public_url},
                aud={"essential": True, "value": access_token_audience(self.settings)},
                exp={"essential": True},
                jti={"essential": True},
                sub={"essential": True},
            ).validate(decoded.claims)
        except (JoseError, ValueError):
            return None
        claims = decoded.claims
        grant_id = grant_id_of(claims["jti"])
        grant = await self.db.get(OidcGrant, grant_id) if grant_id is not None else None
        if grant is None or grant.revoked_at is not None or str(grant.staff_id) != claims["sub"]:
            return None
        if await enabled_client(self.db, self.settings, grant.client_id) is None:
            return None
        return claims, grant


def invalid_grant(provider: Provider, request: Request, description: str) -> Answer:
    answer: Answer = provider.handle_error_response(request, InvalidGrantError(description))
    return answer
