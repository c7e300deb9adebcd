"""The apps a person has let sign them in, on their account page: those they allowed on the
consent screen, and those holding live refresh tokens for them; and Remove access, which
withdraws the consent, ends every token that app holds for the person at once and signs them
out of the app (back-channel logout of the sessions it signed in to)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.services.backchannel import tell_app_its_access_removed
from core import audit
from core.accounts import revoke_grants
from core.models import OidcClient, OidcConsent, OidcGrant, OidcRefreshToken, Staff, utcnow
from core.oidc.clients import refresh_within_lifetimes
from core.settings import Settings
from core.temporal_client import TemporalGateway


@dataclass
class AllowedApp:
    """One app on the list. `ref` is what Remove access names: the consent's id, or for an
    app that never asked, its newest live grant's (both the person's own)."""

    ref: uuid.UUID
    client_id: str
    name: str
    asks_consent: bool
    allowed_at: datetime | None
    last_used_at: datetime | None


@dataclass
class RemovedApp:
    name: str
    asks_consent: bool


@dataclass
class AccountApps:
    db: AsyncSession
    settings: Settings
    temporal: TemporalGateway

    async def allowed(self, staff: Staff) -> list[AllowedApp]:
        now = utcnow()
        consents = await self.db.execute(
            select(OidcConsent, OidcClient)
            .join(OidcClient, OidcClient.client_id == OidcConsent.client_id)
            .where(OidcConsent.staff_id == staff.id)
        )
        apps = {
            client.client_id: _listed(consent.id, client, consent.granted_at) for consent, client in consents
        }
        # Each live refresh token, with the grant (family) it belongs to: a token is created
        # at every refresh, so the newest one says when the app last used its access.
        live = await self.db.execute(
            select(OidcGrant, OidcClient, func.max(OidcRefreshToken.created_at))
            .join(OidcClient, OidcClient.client_id == OidcGrant.client_id)
            .join(OidcRefreshToken, OidcRefreshToken.grant_id == OidcGrant.id)
            .where(
                OidcGrant.staff_id == staff.id,
                OidcGrant.revoked_at.is_(None),
                OidcGrant.session_hash.is_not(None),
                OidcClient.disabled_at.is_(None),
            )
            .group_by(OidcGrant.id, OidcClient.id)
        )
        for grant, client, last_used in live:
            started = grant.redeemed_at or grant.created_at
            if not refresh_within_lifetimes(client.registration, last_used, started, now):
                continue
            app = apps.setdefault(client.client_id, _listed(grant.id, client, None))
            if app.last_used_at is None or last_used > app.last_used_at:
                app.last_used_at = last_used
                if app.allowed_at is None:
                    app.ref = grant.id
        return sorted(apps.values(), key=lambda app: (app.name.casefold(), app.client_id))

    async def remove(self, staff: Staff, ref: uuid.UUID, ip: str | None) -> RemovedApp | None:
        """Withdraws the consent, revokes the app's grants for this person (their access
        tokens and refresh token families) and tells the app they signed out; None when `ref`
        is none of theirs."""
        client_id = await self.db.scalar(
            select(OidcConsent.client_id).where(OidcConsent.id == ref, OidcConsent.staff_id == staff.id)
        ) or await self.db.scalar(
            select(OidcGrant.client_id).where(OidcGrant.id == ref, OidcGrant.staff_id == staff.id)
        )
        client = (
            await self.db.scalar(select(OidcClient).where(OidcClient.client_id == client_id))
            if client_id is not None
            else None
        )
        if client is None:
            return None
        withdrawn = await self.db.execute(
            delete(OidcConsent).where(OidcConsent.staff_id == staff.id, OidcConsent.client_id == client_id)
        )
        await tell_app_its_access_removed(self.temporal, self.settings, self.db, staff.id, client.client_id)
        revoked = await revoke_grants(
            self.db, utcnow(), OidcGrant.staff_id == staff.id, OidcGrant.client_id == client_id
        )
        audit.by_staff(
            self.db,
            str(staff.id),
            "oidc.access_removed",
            ip=ip,
            client_id=client_id,
            consent_withdrawn=withdrawn.rowcount > 0,  # type: ignore[attr-defined]
            grants_revoked=revoked,
        )
        await self.db.flush()
        return RemovedApp(client.client_name, _asks_consent(client))


def _asks_consent(client: OidcClient) -> bool:
    return bool(client.registration.get("require_consent"))


def _listed(ref: uuid.UUID, client: OidcClient, allowed_at: datetime | None) -> AllowedApp:
    return AllowedApp(ref, client.client_id, client.client_name, _asks_consent(client), allowed_at, None)
