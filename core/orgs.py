"""Organisations (agencies) on one deployment, and who an admin request acts for.

Every person belongs to one organisation. An admin of an organisation (an admin API key created
for it, or a signed-in admin of it) sees and changes only that organisation's people: anything
else answers as if it did not exist. Operators (agentOS ops: operator keys, or admins marked
`is_operator`) act across organisations and alone manage deployment-wide things.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import Forbidden, NotFound, SsoError
from core.models import Organisation, OrganisationTenant, Staff
from core.settings import Settings, _split_list

log = logging.getLogger(__name__)

# The organisation migration 0020 made for everyone already on the deployment.
DEFAULT_ORG_ID = uuid.UUID("00000000-0000-4000-8000-00000000d0a1")
DEFAULT_ORG_SLUG = "default"
DEFAULT_ORG_NAME = "Default organisation"

SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{0,61}[a-z0-9]$"
TENANT_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
OPERATORS_ONLY = "Only an agentOS operator can do this, not an organisation's admin"


@dataclass(frozen=True)
class AdminScope:
    """Who an admin request acts as (the audit actor) and for which organisation: None is an
    operator, who acts across organisations."""

    actor: str
    org_id: uuid.UUID | None

    @property
    def is_operator(self) -> bool:
        return self.org_id is None

    def sees(self, org_id: uuid.UUID) -> bool:
        return self.org_id is None or self.org_id == org_id

    def require_operator(self) -> None:
        if not self.is_operator:
            raise Forbidden(OPERATORS_ONLY)


def operator(actor: str) -> AdminScope:
    """The deployment acting for itself (the CLI, a person's own request for a new link)."""
    return AdminScope(actor=actor, org_id=None)


def check_tenant(tenant: str) -> str:
    """A Microsoft tenant id, as stored: a lower-case GUID."""
    value = tenant.strip().lower()
    if not TENANT_ID.match(value):
        raise SsoError(f"entra_tenant_ids: {tenant!r} is not a Microsoft tenant id (a GUID)")
    return value


class _TenantSettings(BaseSettings):
    """Only the two tenant settings, read from the environment as Settings reads them: the
    migration needs no other setting to be valid."""

    model_config = SettingsConfigDict(env_prefix="SSO_", extra="ignore")

    entra_tenant_id: str = ""
    entra_allowed_tenants: Annotated[list[str], NoDecode] = Field(default_factory=list)

    _lists = field_validator("entra_allowed_tenants", mode="before")(_split_list)


def configured_tenants() -> frozenset[str]:
    """The tenants SSO_ENTRA_TENANT_ID / SSO_ENTRA_ALLOWED_TENANTS name (lower-cased)."""
    return Settings.model_construct(**_TenantSettings().model_dump()).entra_tenants


async def org_count(session: AsyncSession) -> int:
    return await session.scalar(select(func.count()).select_from(Organisation)) or 0


async def get_org(session: AsyncSession, org_id: uuid.UUID, scope: AdminScope) -> Organisation:
    """The organisation, if the scope may see it: another organisation's is a 404."""
    org = await session.get(Organisation, org_id)
    if org is None or not scope.sees(org.id):
        raise NotFound("No organisation with that id")
    return org


async def org_by_slug(session: AsyncSession, slug: str) -> Organisation:
    org = await session.scalar(select(Organisation).where(Organisation.slug == slug.lower()))
    if org is None:
        raise NotFound(f"No organisation with the slug {slug!r}")
    return org


async def tenant_owner(session: AsyncSession, tenant: str) -> uuid.UUID | None:
    """The organisation whose people this Microsoft tenant signs in, or None: not allowed."""
    return await session.scalar(
        select(OrganisationTenant.org_id).where(OrganisationTenant.tenant_id == tenant.strip().lower())
    )


def owned_tenants(sessions: Callable[[], AsyncSession]) -> Callable[[str], Awaitable[bool]]:
    """The Entra provider's tenant check: a tenant some organisation owns (read afresh, so a
    tenant an operator just added signs in at once)."""

    async def owned(tenant: str) -> bool:
        async with sessions() as session:
            return await tenant_owner(session, tenant) is not None

    return owned


async def adopt_configured_tenants(session: AsyncSession, settings: Settings) -> list[str]:
    """Deployments that still name tenants in SSO_ENTRA_TENANT_ID / SSO_ENTRA_ALLOWED_TENANTS
    (tests, `sso dev`) keep working: a named tenant no organisation owns joins the default
    organisation. Idempotent; returns the tenants added (logged once, when added)."""
    added: list[str] = []
    if await session.get(Organisation, DEFAULT_ORG_ID) is None:
        return added  # removed by an operator: the settings' tenants join no one
    for tenant in sorted(settings.entra_tenants):
        if await tenant_owner(session, tenant) is None:
            session.add(OrganisationTenant(tenant_id=tenant, org_id=DEFAULT_ORG_ID))
            added.append(tenant)
    if added:
        await session.flush()
        log.info("Entra tenants from the settings joined the default organisation: %s", ", ".join(added))
    return added


async def staff_scope(session: AsyncSession, staff: Staff, actor: str) -> AdminScope:
    """A signed-in admin's scope: an operator's is every organisation; anyone else's is their
    own organisation. On a one-organisation deployment every admin acts as before (there is
    no other organisation to keep apart, and the deployment-wide pages stay theirs)."""
    if staff.is_operator or await org_count(session) <= 1:
        return AdminScope(actor=actor, org_id=None)
    return AdminScope(actor=actor, org_id=staff.org_id)
