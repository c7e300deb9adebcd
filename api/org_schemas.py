"""Request and response bodies of the organisations API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.schemas import NO_CONTROL_CHARACTERS
from core.errors import SsoError
from core.orgs import SLUG_PATTERN, check_tenant

# A tenant id as Microsoft writes it (either case); stored lower-cased.
TENANT_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
TenantId = Annotated[str, Field(pattern=TENANT_PATTERN)]

OrgMfaPolicy = Literal["optional", "required"]
MFA_POLICY = "None: the deployment's SSO_MFA_POLICY; else this organisation's"
SENDER_NAME = 'The From name of its people\'s emails, e.g. "Harbour Lettings via agentOS"'
TENANTS = "Microsoft Entra tenant ids (GUIDs) whose people sign in to this organisation"


def _tenants(value: object) -> object:
    if not isinstance(value, list):
        return value
    try:
        tenants = [check_tenant(t) if isinstance(t, str) else t for t in value]
    except SsoError as exc:
        raise ValueError(exc.message.removeprefix("entra_tenant_ids: ")) from None
    # Anything but a string is the list type's own error to give (and may not be hashable).
    checked = [t for t in tenants if isinstance(t, str)]
    if len(set(checked)) != len(checked):
        raise ValueError("a tenant id is listed twice")
    return tenants


class OrgFields(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("entra_tenant_ids", mode="before", check_fields=False)
    @classmethod
    def _tenants(cls, value: object) -> object:
        return _tenants(value)


SLUG_TEXT = "2 to 63 lowercase letters, digits and hyphens; unique on the deployment"


class OrgCreate(OrgFields):
    name: str = Field(min_length=1, max_length=200, pattern=NO_CONTROL_CHARACTERS)
    slug: str = Field(min_length=2, max_length=63, pattern=SLUG_PATTERN, description=SLUG_TEXT)
    entra_tenant_ids: list[TenantId] = Field(default_factory=list, max_length=50, description=TENANTS)
    mfa_policy: OrgMfaPolicy | None = Field(default=None, description=MFA_POLICY)
    sender_name: str | None = Field(
        default=None, min_length=1, max_length=200, description=SENDER_NAME, pattern=NO_CONTROL_CHARACTERS
    )


class OrgUpdate(OrgFields):
    """Only the fields sent change; an organisation's own key may change only `mfa_policy`
    and `sender_name`."""

    name: str | None = Field(default=None, min_length=1, max_length=200, pattern=NO_CONTROL_CHARACTERS)
    slug: str | None = Field(
        default=None, min_length=2, max_length=63, pattern=SLUG_PATTERN, description=SLUG_TEXT
    )
    entra_tenant_ids: list[TenantId] | None = Field(default=None, max_length=50, description=TENANTS)
    mfa_policy: OrgMfaPolicy | None = Field(default=None, description=MFA_POLICY)
    sender_name: str | None = Field(
        default=None, min_length=1, max_length=200, description=SENDER_NAME, pattern=NO_CONTROL_CHARACTERS
    )


class OrgPublic(BaseModel):
    id: uuid.UUID
    name: str
    slug: str
    status: Literal["active", "suspended", "erasing"] = Field(
        description="`erasing`: suspended and being erased; it answers 404 once gone"
    )
    mfa_policy: OrgMfaPolicy | None
    sender_name: str | None
    entra_tenant_ids: list[str]
    suspended_at: datetime | None
    suspension: Literal["under_way", "done"] | None = Field(
        default=None,
        description="While suspended: whether its people's sessions, app tokens and open flows "
        "are still being ended (`under_way`) or all are (`done`)",
    )
    people_left: int | None = Field(default=None, description="While erasing: the people not yet erased")
    created_at: datetime
    updated_at: datetime


class OrgPage(BaseModel):
    items: list[OrgPublic]


class OrgKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=100, pattern=NO_CONTROL_CHARACTERS)


class OrgKeyCreated(BaseModel):
    name: str
    org_id: uuid.UUID
    key: str = Field(description="Shown once: store it now (only its HMAC is kept)")


class OrgErasing(BaseModel):
    """The erasure is under way: poll GET /api/v1/orgs/{id} (status `erasing`, `people_left`)
    until it answers 404."""

    id: uuid.UUID
    status: Literal["erasing"] = "erasing"
    workflow_id: str = Field(description="The durable flow erasing it, e.g. in the Temporal UI")
    people_left: int = Field(description="Each erased as DELETE /api/v1/staff/{id} erases one")
