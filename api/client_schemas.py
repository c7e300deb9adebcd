"""Bodies of the clients admin API, with RFC 7591's metadata names."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from api.schemas import NO_CONTROL_CHARACTERS

AuthMethod = Literal["client_secret_basic", "client_secret_post", "none"]
SigningAlg = Literal["RS256", "ES256"]
GrantType = Literal["authorization_code", "refresh_token"]
DAY = 86400
ALLOWED_ORGS = "Only people of these organisations may sign in to the app; empty: every organisation"


class ClientCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    client_name: str = Field(min_length=1, max_length=200, pattern=NO_CONTROL_CHARACTERS)
    redirect_uris: list[str] = Field(min_length=1, max_length=20, description="Matched exactly")
    post_logout_redirect_uris: list[str] = Field(default_factory=list, max_length=20)
    backchannel_logout_uri: str | None = Field(default=None, max_length=2000)
    token_endpoint_auth_method: AuthMethod = Field(
        default="client_secret_basic", description="`none`: a public client, which must use PKCE (S256)"
    )
    grant_types: list[GrantType] = Field(default_factory=lambda: list[GrantType](["authorization_code"]))
    id_token_signed_response_alg: SigningAlg = "RS256"  # noqa: S105 (an algorithm name)
    require_consent: bool = False
    internal: bool = Field(
        default=False,
        description="Ours, on the private network: its back-channel logout URI may be a private address",
    )
    refresh_token_idle_lifetime: int | None = Field(
        default=None, ge=60, le=365 * DAY, description="Seconds a refresh token may go unused (14 days)"
    )
    refresh_token_absolute_lifetime: int | None = Field(
        default=None, ge=60, le=365 * DAY, description="Seconds a refresh token family may live (90 days)"
    )
    allowed_org_ids: list[uuid.UUID] = Field(default_factory=list, max_length=200, description=ALLOWED_ORGS)


class ClientUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    client_name: str | None = Field(default=None, min_length=1, max_length=200, pattern=NO_CONTROL_CHARACTERS)
    redirect_uris: list[str] | None = Field(default=None, min_length=1, max_length=20)
    post_logout_redirect_uris: list[str] | None = Field(default=None, max_length=20)
    backchannel_logout_uri: str | None = Field(default=None, max_length=2000)
    id_token_signed_response_alg: SigningAlg | None = None
    require_consent: bool | None = None
    internal: bool | None = None
    grant_types: list[GrantType] | None = Field(default=None, min_length=1)
    refresh_token_idle_lifetime: int | None = Field(default=None, ge=60, le=365 * DAY)
    refresh_token_absolute_lifetime: int | None = Field(default=None, ge=60, le=365 * DAY)
    allowed_org_ids: list[uuid.UUID] | None = Field(default=None, max_length=200, description=ALLOWED_ORGS)
    disabled: bool | None = Field(default=None, description="A disabled client gets no code and no token")


class ClientPublic(BaseModel):
    client_id: str
    client_name: str
    redirect_uris: list[str]
    post_logout_redirect_uris: list[str]
    backchannel_logout_uri: str | None
    token_endpoint_auth_method: AuthMethod
    grant_types: list[str]
    response_types: list[str]
    id_token_signed_response_alg: SigningAlg
    require_consent: bool
    internal: bool = False
    refresh_token_idle_lifetime: int = 14 * DAY
    refresh_token_absolute_lifetime: int = 90 * DAY
    allowed_org_ids: list[uuid.UUID] = Field(default_factory=list, description=ALLOWED_ORGS)
    disabled: bool
    backchannel_logout_failing_since: datetime | None = Field(
        default=None, description="A session's back-channel logout gave up on the app; cleared by a delivery"
    )
    client_id_issued_at: int
    created_at: datetime
    updated_at: datetime


class ClientCreated(ClientPublic):
    client_secret: str | None = Field(description="Shown once, for confidential clients; only a hash is kept")
    client_secret_expires_at: int = 0


class ClientSecret(BaseModel):
    client_id: str
    client_secret: str = Field(description="Shown once; the previous secret stops working now")


class ClientPage(BaseModel):
    items: list[ClientPublic]
