"""The provider's endpoints: authorization (on top of the browser's sign-in session), token
and userinfo. Everything is loaded first, then authlib's grants decide; no workflow per
request."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import AccessDeniedError, InvalidGrantError, InvalidRequestError
from authlib.oidc.core.errors import ConsentRequiredError
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
from core import audit, passkeys
from core.accounts import revoke_grants
from core.models import (
    SIGN_IN_PAUSED,
    AccountStatus,
    OidcClient,
    OidcConsent,
    OidcGrant,
    Organisation,
    SsoAccount,
    Staff,
    utcnow,
)
from core.oidc.claims import Subject, session_claims, user_claims
from core.oidc.clients import OFFLINE, RegisteredClient
from core.oidc.keys import ALGORITHMS, KeyStore
from core.rate_limit import SlidingWindowLimiter
from core.settings import Settings


class PageProblem(Exception):
    """An authorization request that can't be answered to the app (no valid client or
    redirect URI yet): the person gets a page saying so, never a redirect."""

    status_code = 400


class NotForOrg(PageProblem):
    """The app is limited to other organisations than the signed-in person's: a page, never
    a code (and no error sent back to the app, which would learn who tried)."""

    status_code = 403

    def __init__(self, app: str, org: str) -> None:
        super().__init__(f"{app} isn't available to {org}. Ask your administrator if you need it.")


@dataclass
class SignInNeeded:
    login_hint: str


@dataclass
class ConsentNeeded:
    """The person must allow the app first (its name is what the page says)."""

    client_name: str


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
    return enabled(await db.scalar(select(OidcClient).where(OidcClient.client_id == client_id)), settings)


def enabled(row: OidcClient | None, settings: Settings) -> RegisteredClient | None:
    return RegisteredClient(row, settings) if row is not None and row.disabled_at is None else None


async def subject_of(db: AsyncSession, staff_id: uuid.UUID | None, session: dict[str, Any]) -> Subject | None:
    staff = await db.get(Staff, staff_id) if staff_id else None
    account = await db.scalar(select(SsoAccount).where(SsoAccount.staff_id == staff_id)) if staff else None
    org = await db.get(Organisation, staff.org_id) if staff else None
    return active_subject(staff, account, org, session)


def active_subject(
    staff: Staff | None, account: SsoAccount | None, org: Organisation | None, session: dict[str, Any]
) -> Subject | None:
    """The person, if their account is active and their organisation not suspended: nobody
    else gets a code or a token."""
    if staff is None or account is None or org is None or account.status != AccountStatus.active.value:
        return None
    if org.status in SIGN_IN_PAUSED:
        return None
    return Subject(staff, account, session, org)


@dataclass
class Oidc:
    settings: Settings
    db: AsyncSession
    state: OidcState
    now: datetime = field(default_factory=lambda: utcnow())  # read at each request, so tests can move it
    ip: str | None = None

    async def loaded_for(self, client: RegisteredClient | None) -> Loaded:
        keys = await self.state.keys.signing(self.db, self.now)
        return Loaded(self.settings, self.db, self.now, keys, client=client, per_client=self.state.per_client)

    # -- authorization endpoint ------------------------------------------------------------

    async def authorize(
        self, request: Request, current: Current | None, fresh_since: Any = None, consent: str | None = None
    ) -> Answer | SignInNeeded | ConsentNeeded:
        """`consent` is the person's answer on the consent page: "allow" or "deny"."""
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
        # Only a step-up asks whether the person has a second factor (an authenticator or a passkey).
        second_factor = (
            subject is not None
            and "mfa" in data.get("acr_values", "").split()
            and await passkeys.has_second_factor(self.db, subject.account)
        )
        if subject is not None and self._needs_sign_in(data, current, subject, fresh_since, second_factor):
            subject = None
        if subject is not None and not client.admits(subject.org.id):
            raise NotForOrg(client.row.client_name, subject.org.name)
        try:
            grant = provider.get_consent_grant(request, end_user=subject)
            self._check_max_age(data)
            if subject is not None and consent == "deny":
                raise AccessDeniedError("The person did not allow this app to sign them in")
            if (
                subject is not None
                and consent != "allow"
                and await self._needs_consent(client, subject, data)
            ):
                if "none" in data.get("prompt", "").split():
                    raise ConsentRequiredError()
                return ConsentNeeded(client.row.client_name)
        except OAuth2Error as error:
            if not error.redirect_uri:
                error.redirect_uri = redirect_uri
            error.state = data.get("state")
            return provider.error_with_issuer(provider.handle_error_response(request, error))
        if subject is None:
            return SignInNeeded(login_hint=(data.get("login_hint") or "")[:320])
        if consent == "allow":
            await self._remember_consent(client, subject, request.scope or "")
        answer: Answer = provider.create_authorization_response(request, grant_user=subject, grant=grant)
        if loaded.code_issued:
            audit.by_staff(
                self.db,
                str(subject.staff.id),
                "oidc.code_issued",
                ip=self.ip,
                client_id=client.get_client_id(),
                scope=request.scope or "",
            )
        await self.db.flush()
        return answer

    async def _needs_consent(self, client: RegisteredClient, subject: Subject, data: dict[str, str]) -> bool:
        """prompt=consent asks anyone; an app that requires consent asks once per person, and
        again when it asks to stay signed in (offline_access) beyond what the person allowed
        (OpenID Connect Core §11). An app registered by an administrator with the
        refresh_token grant and without require_consent has its registration as that
        condition."""
        if "consent" in data.get("prompt", "").split():
            return True
        if not client.registration.get("require_consent"):
            return False
        consent = await self._consent(client, subject)
        if consent is None:
            return True
        return asks_offline(client, data.get("scope")) and OFFLINE not in consent.scope.split()

    async def _consent(self, client: RegisteredClient, subject: Subject) -> OidcConsent | None:
        return await self.db.scalar(
            select(OidcConsent).where(
                OidcConsent.staff_id == subject.staff.id, OidcConsent.client_id == client.get_client_id()
            )
        )

    async def _remember_consent(self, client: RegisteredClient, subject: Subject, scope: str) -> None:
        scope = client.get_allowed_scope(scope)  # what the app may get, as the page showed it
        row = await self._consent(client, subject)
        if row is None:
            self.db.add(
                OidcConsent(
                    staff_id=subject.staff.id,
                    client_id=client.get_client_id(),
                    scope=scope,
                    granted_at=self.now,
                )
            )
        else:
            row.scope, row.granted_at = scope, self.now

    async def _subject(self, current: Current | None) -> Subject | None:
        if current is None or current.staff is None:
            return None
        return await subject_of(self.db, current.staff.id, session_claims(self.settings, current.row))

    def _needs_sign_in(
        self,
        data: dict[str, str],
        current: Current | None,
        subject: Subject,
        fresh_since: Any,
        second_factor: bool,
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
        return wants_mfa and subject.session["acr"] != "mfa" and second_factor

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
            return await self._reused(provider, request, grant, client_id)
        if grant is not None:
            loaded.subject = await subject_of(self.db, grant.staff_id, grant.claims)
        answer: Answer = provider.create_token_response(request)
        if answer.status != 200 or grant is None:
            self.token_refused(client_id, grant, answer.error)
            return answer
        claimed = await self.db.execute(
            update(OidcGrant)
            .where(OidcGrant.id == grant.id, OidcGrant.redeemed_at.is_(None))
            .values(redeemed_at=self.now)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            return await self._reused(provider, request, grant, client_id)
        await loaded.save_issued()
        self.token_issued(grant)
        return answer

    async def _reused(
        self, provider: Provider, request: Request, grant: OidcGrant, client_id: str | None
    ) -> Answer:
        await self.revoke_grant(grant)
        self.token_refused(client_id, grant, "code_reused")
        return invalid_grant(provider, request, "This code was already used; what it issued is now revoked.")

    def token_issued(self, grant: OidcGrant, action: str = "oidc.token_issued") -> None:
        """Tokens answered to the grant's app. It authenticated (or, if public, proved the PKCE
        verifier or held the refresh token): it is the actor."""
        audit.record(
            self.db,
            actor=f"oidc-client:{grant.client_id}",
            action=action,
            outcome="success",
            target=str(grant.staff_id),
            ip=self.ip,
            client_id=grant.client_id,
        )

    def token_refused(
        self, client_id: str | None, grant: OidcGrant | None, reason: str, action: str = "oidc.token_refused"
    ) -> None:
        """A refused token request, by its address: the client it names is not proven. Never
        the code, verifier, token or secret it sent."""
        audit.record(
            self.db,
            actor=f"ip:{self.ip}",
            action=action,
            outcome="refused",
            target=str(grant.staff_id) if grant is not None else None,
            ip=self.ip,
            client_id=(client_id or "")[:64],
            reason=reason[:40],
        )

    async def revoke_grant(self, grant: OidcGrant) -> None:
        """Ends the grant: its access tokens and its refresh token family with it."""
        await revoke_grants(self.db, self.now, OidcGrant.id == grant.id)

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


def asks_offline(client: RegisteredClient, scope: str | None) -> bool:
    """The request asks for a refresh token the app may be given."""
    return OFFLINE in client.get_allowed_scope(scope).split()


def invalid_grant(provider: Provider, request: Request, description: str) -> Answer:
    answer: Answer = provider.handle_error_response(request, InvalidGrantError(description))
    return answer
