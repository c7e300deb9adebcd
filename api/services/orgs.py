"""Organisations: created and listed by operators; an organisation's own admin may change its
MFA policy and sender name, and make keys for it. Every change is audited."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.org_schemas import OrgCreate, OrgKeyCreated, OrgPublic, OrgUpdate
from core import audit
from core.admin_keys import create_admin_key
from core.errors import Conflict, Forbidden
from core.models import Organisation, OrganisationTenant, OrgStatus, Staff
from core.orgs import AdminScope, get_org
from core.settings import Settings

SLUG_TAKEN = "slug: another organisation already uses this slug"
# What an organisation's own admin may change; the rest is for operators.
OWN_FIELDS = frozenset({"mfa_policy", "sender_name"})


@dataclass
class Orgs:
    db: AsyncSession
    settings: Settings
    scope: AdminScope
    ip: str | None

    async def create(self, data: OrgCreate) -> OrgPublic:
        self.scope.require_operator()
        if await self.db.scalar(select(Organisation.id).where(Organisation.slug == data.slug)):
            raise Conflict(SLUG_TAKEN)
        org = Organisation(
            name=data.name, slug=data.slug, mfa_policy=data.mfa_policy, sender_name=data.sender_name
        )
        self.db.add(org)
        await self._flush()
        await self._set_tenants(org, data.entra_tenant_ids)
        self._audit("org.create", org, slug=org.slug, entra_tenant_ids=data.entra_tenant_ids)
        return await self.view(org)

    async def all(self) -> list[OrgPublic]:
        self.scope.require_operator()
        rows = await self.db.scalars(select(Organisation).order_by(Organisation.name, Organisation.slug))
        return [await self.view(org) for org in rows.all()]

    async def one(self, org_id: uuid.UUID) -> OrgPublic:
        return await self.view(await get_org(self.db, org_id, self.scope))

    async def update(self, org_id: uuid.UUID, data: OrgUpdate) -> OrgPublic:
        org = await get_org(self.db, org_id, self.scope)
        changed = data.model_fields_set
        if not self.scope.is_operator and changed - OWN_FIELDS:
            raise Forbidden(
                "An organisation's admin key may change only mfa_policy and sender_name; "
                f"not {', '.join(sorted(changed - OWN_FIELDS))}"
            )
        for field in ("name", "slug"):
            if field in changed and getattr(data, field) is None:
                raise Conflict(f"{field}: can't be removed")
        if data.slug is not None and data.slug != org.slug:
            if await self.db.scalar(select(Organisation.id).where(Organisation.slug == data.slug)):
                raise Conflict(SLUG_TAKEN)
        details: dict[str, Any] = {}
        for field in ("name", "slug", "mfa_policy", "sender_name"):
            if field in changed and getattr(org, field) != getattr(data, field):
                details[field] = {"from": getattr(org, field), "to": getattr(data, field)}
                setattr(org, field, getattr(data, field))
        if "entra_tenant_ids" in changed:
            tenants = data.entra_tenant_ids or []
            before = await self._tenant_ids(org)
            if set(before) != set(tenants):
                await self._set_tenants(org, tenants)
                details["entra_tenant_ids"] = {"from": before, "to": tenants}
        await self._flush()
        self._audit("org.update", org, **details)
        return await self.view(org)

    async def create_key(self, org_id: uuid.UUID, name: str) -> OrgKeyCreated:
        """A key for the organisation: by an operator, or by that organisation's own key."""
        org = await get_org(self.db, org_id, self.scope)
        key = await create_admin_key(self.db, self.settings, name, org.id)
        self._audit("admin_key.create", org, name=name)
        return OrgKeyCreated(name=name, org_id=org.id, key=key)

    async def view(self, org: Organisation) -> OrgPublic:
        return OrgPublic(
            id=org.id,
            name=org.name,
            slug=org.slug,
            status=org.status,  # type: ignore[arg-type]
            mfa_policy=org.mfa_policy,  # type: ignore[arg-type]
            sender_name=org.sender_name,
            entra_tenant_ids=await self._tenant_ids(org),
            suspended_at=org.suspended_at,
            suspension=_suspension(org),
            people_left=await people_left(self.db, org.id) if org.status == OrgStatus.erasing.value else None,
            created_at=org.created_at,
            updated_at=org.updated_at,
        )

    async def _tenant_ids(self, org: Organisation) -> list[str]:
        rows = await self.db.scalars(
            select(OrganisationTenant.tenant_id)
            .where(OrganisationTenant.org_id == org.id)
            .order_by(OrganisationTenant.tenant_id)
        )
        return list(rows.all())

    async def _set_tenants(self, org: Organisation, tenants: list[str]) -> None:
        """One tenant, one organisation: a tenant another organisation owns is a 409."""
        owned = (
            await self.db.scalars(select(OrganisationTenant).where(OrganisationTenant.tenant_id.in_(tenants)))
        ).all()
        taken = sorted(t.tenant_id for t in owned if t.org_id != org.id)
        if taken:
            raise Conflict(f"entra_tenant_ids: {', '.join(taken)} already belongs to another organisation")
        for row in (
            await self.db.scalars(select(OrganisationTenant).where(OrganisationTenant.org_id == org.id))
        ).all():
            if row.tenant_id not in tenants:
                await self.db.delete(row)
        kept = {t.tenant_id for t in owned}
        for tenant in tenants:
            if tenant not in kept:
                self.db.add(OrganisationTenant(tenant_id=tenant, org_id=org.id))
        await self._flush()

    async def _flush(self) -> None:
        try:
            await self.db.flush()
        except IntegrityError as exc:
            # Another operator took the slug or a tenant this instant.
            raise Conflict("slug or entra_tenant_ids: taken by another organisation just now") from exc

    def _audit(self, action: str, org: Organisation, **details: Any) -> None:
        audit.record(
            self.db,
            actor=self.scope.actor,
            action=action,
            outcome="success",
            target=str(org.id),
            ip=self.ip,
            **details,
        )


def _suspension(org: Organisation) -> Literal["under_way", "done"] | None:
    if org.status != OrgStatus.suspended.value:
        return None
    return "under_way" if org.suspension_done_at is None else "done"


async def people_left(db: AsyncSession, org_id: uuid.UUID) -> int:
    """The organisation's people: while it is erasing, those not yet erased."""
    return int(await db.scalar(select(func.count()).select_from(Staff).where(Staff.org_id == org_id)) or 0)
