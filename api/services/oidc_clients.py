"""Registering, changing and removing the apps that sign people in through the provider."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api.client_schemas import ClientCreate, ClientCreated, ClientPublic, ClientSecret, ClientUpdate
from core import audit
from core.errors import NotFound, SsoError, Unprocessable
from core.models import OidcClient, Organisation, utcnow
from core.oidc.clients import (
    check_registration,
    confidential,
    new_client_id,
    new_client_secret,
    normalised,
    secret_hash,
)
from core.settings import Settings


def public_view(row: OidcClient) -> ClientPublic:
    return ClientPublic(
        client_id=row.client_id,
        client_name=row.client_name,
        disabled=row.disabled_at is not None,
        backchannel_logout_failing_since=row.backchannel_failing_since,
        client_id_issued_at=int(row.created_at.timestamp()),
        created_at=row.created_at,
        updated_at=row.updated_at,
        **row.registration,
    )


@dataclass
class Clients:
    settings: Settings
    db: AsyncSession
    actor: str
    ip: str | None

    async def create(self, data: ClientCreate, client_id: str | None = None) -> ClientCreated:
        registration = normalised(data.model_dump(exclude={"client_name"}))
        check_registration(registration, self.settings)
        await self._check_orgs(registration)
        secret = new_client_secret() if confidential(registration) else None
        row = OidcClient(
            client_id=client_id or new_client_id(),
            client_name=data.client_name,
            registration=registration,
            secret_hash=secret_hash(self.settings, secret) if secret else None,
        )
        self.db.add(row)
        await self.db.flush()
        self._record("oidc_client.created", row)
        return ClientCreated(**public_view(row).model_dump(), client_secret=secret)

    async def ensure(self, client_id: str, data: ClientCreate) -> None:
        """A client with this id registered as `data` says, written only when it differs
        (or is missing, or switched off): a command run on every start audits what changed."""
        row = await self.db.scalar(select(OidcClient).where(OidcClient.client_id == client_id))
        if row is None:
            await self.create(data, client_id=client_id)
            return
        wanted = normalised(data.model_dump(exclude={"client_name"}))
        if row.client_name != data.client_name or row.registration != wanted or row.disabled_at:
            changes = data.model_dump(
                exclude={"token_endpoint_auth_method", "grant_types"}, exclude_none=True
            )
            await self.update(client_id, ClientUpdate(**changes, disabled=False))

    async def all(self) -> list[ClientPublic]:
        rows = (await self.db.scalars(select(OidcClient).order_by(OidcClient.created_at))).all()
        return [public_view(row) for row in rows]

    async def get(self, client_id: str) -> OidcClient:
        row = await self.db.scalar(select(OidcClient).where(OidcClient.client_id == client_id))
        if row is None:
            raise NotFound("No client with this client_id")
        return row

    async def update(self, client_id: str, data: ClientUpdate) -> ClientPublic:
        row = await self.get(client_id)
        changes = data.model_dump(exclude_unset=True)
        if any(changes.get(name) is None for name in changes if name not in ("backchannel_logout_uri",)):
            raise SsoError("A field given in the update must have a value")
        disabled = changes.pop("disabled", None)
        name = changes.pop("client_name", row.client_name)
        registration: dict[str, Any] = normalised({**row.registration, **changes})
        # Checked before anything changes: a refused update leaves the row as it was.
        check_registration(registration, self.settings)
        await self._check_orgs(registration)
        row.client_name = name
        row.registration = registration
        if disabled is not None:
            row.disabled_at = (row.disabled_at or utcnow()) if disabled else None
        row.updated_at = utcnow()
        await self.db.flush()
        self._record("oidc_client.updated", row, fields=sorted(data.model_dump(exclude_unset=True)))
        return public_view(row)

    async def delete(self, client_id: str) -> None:
        row = await self.get(client_id)
        self._record("oidc_client.deleted", row)
        await self.db.delete(row)
        await self.db.flush()

    async def rotate_secret(self, client_id: str) -> ClientSecret:
        row = await self.get(client_id)
        if not confidential(row.registration):
            raise SsoError("A public client (token_endpoint_auth_method none) has no secret")
        secret = new_client_secret()
        row.secret_hash = secret_hash(self.settings, secret)
        row.updated_at = utcnow()
        await self.db.flush()
        self._record("oidc_client.secret_rotated", row)
        return ClientSecret(client_id=row.client_id, client_secret=secret)

    async def _check_orgs(self, registration: dict[str, Any]) -> None:
        named = registration["allowed_org_ids"]
        if not named:
            return
        ids = [uuid.UUID(org_id) for org_id in named]
        found = await self.db.scalars(select(Organisation.id).where(Organisation.id.in_(ids)))
        known = {str(org_id) for org_id in found}
        missing = [org_id for org_id in named if org_id not in known]
        if missing:
            raise Unprocessable("allowed_org_ids", f"no organisation with the id {missing[0]}")

    def _record(self, action: str, row: OidcClient, **details: Any) -> None:
        audit.record(
            self.db,
            actor=self.actor,
            action=action,
            outcome="success",
            target=row.client_id,
            ip=self.ip,
            **details,
        )
