"""Request and response bodies, named by role."""

from __future__ import annotations

import unicodedata
import uuid
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator

SsoStateName = Literal[
    "not_started",
    "sending_email",
    "email_sent",
    "link_opened",
    "password_set",
    "code_sent",
    "mfa_pending",
    "active",
    "expired",
    "superseded",
    "cancelled",
    "failed",
]
DeliveryStateName = Literal["pending", "sent", "retrying", "failed"]
# Names are shown on one line in pages, emails and the Temporal UI: no control characters (C0,
# DEL, C1) and no line or paragraph separators. Documented in the schema; enforced below.
NO_CONTROL_CHARACTERS = r"^[^\u0000-\u001f\u007f-\u009f\u2028\u2029]*$"
CONTROL_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})


def has_control_characters(value: str) -> bool:
    return any(unicodedata.category(ch) in CONTROL_CATEGORIES for ch in value)


class StaffCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    first_name: str = Field(
        min_length=1, max_length=100, json_schema_extra={"pattern": NO_CONTROL_CHARACTERS}
    )
    last_name: str = Field(min_length=1, max_length=100, json_schema_extra={"pattern": NO_CONTROL_CHARACTERS})
    external_email_1: EmailStr
    is_admin: bool = Field(
        default=False, description="May use the admin pages (must set up MFA or sign in with Microsoft-Entra)"
    )
    org_id: uuid.UUID | None = Field(
        default=None,
        description="The person's organisation. An organisation's key: its own (may be left out). "
        "An operator key: required once the deployment has more than one organisation",
    )

    @field_validator("first_name", "last_name", mode="before")
    @classmethod
    def _printable(cls, value: object) -> object:
        # Before whitespace is stripped: a control character at either end is refused too,
        # never silently dropped.
        if isinstance(value, str) and has_control_characters(value):
            raise ValueError("must not contain control characters")
        return value


class StaffUpdate(BaseModel):
    """Only the fields sent change; `leave_on: null` clears the leave date."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    first_name: str | None = Field(
        default=None, min_length=1, max_length=100, json_schema_extra={"pattern": NO_CONTROL_CHARACTERS}
    )
    last_name: str | None = Field(
        default=None, min_length=1, max_length=100, json_schema_extra={"pattern": NO_CONTROL_CHARACTERS}
    )
    external_email_1: EmailStr | None = Field(
        default=None,
        description="A new address is not used at once: a code is emailed to it, and it becomes "
        "External Email 1 and the sign-in email once the code is entered",
    )
    leave_on: date | None = Field(
        default=None, description="A day after today (SSO_TIME_ZONE); null clears the leave date"
    )

    @field_validator("first_name", "last_name", mode="before")
    @classmethod
    def _printable(cls, value: object) -> object:
        if isinstance(value, str) and has_control_characters(value):
            raise ValueError("must not contain control characters")
        return value


class EmailChangeCode(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    code: str = Field(pattern=r"^[0-9]{6}$", description="The six-digit code emailed to the new address")


class StaffErased(BaseModel):
    erased: bool = True
    pseudonym: str = Field(description="What the person's audit events now name them by")


class StaffMove(BaseModel):
    model_config = ConfigDict(extra="forbid")

    org_id: uuid.UUID = Field(description="The organisation the person moves to")


MFA_OBLIGATION = "The MFA obligation, once the person skipped MFA (or it was reset)"


class StaffPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    org_id: uuid.UUID
    first_name: str
    last_name: str
    external_email_1: str
    is_admin: bool
    disabled_at: datetime | None = Field(
        default=None, description="Set while the person is disabled (a leaver): no sign-in of any kind"
    )
    leave_on: date | None = Field(
        default=None,
        description="The day the person leaves: they are disabled at its start in SSO_TIME_ZONE",
    )
    pending_external_email_1: str | None = Field(
        default=None,
        description="A new External Email 1 waiting for the code emailed to it; "
        "external_email_1 stays in force until the code is entered",
    )
    created_at: datetime
    updated_at: datetime


class StaffListItem(StaffPublic):
    sso_state: SsoStateName
    link_expires_at: datetime | None = None
    mfa_enabled: bool = False
    entra_linked: bool = False
    has_password: bool = Field(
        default=False, description="Has a Single Sign-On password (an Entra-only person has none)"
    )
    locked: bool = Field(default=False, description="Sign-in refused for now, or until a reset")
    mfa_obligation: MfaObligationInfo | None = Field(default=None, description=MFA_OBLIGATION)


class StaffPage(BaseModel):
    items: list[StaffListItem]
    total: int
    limit: int
    offset: int


class EmailDelivery(BaseModel):
    state: DeliveryStateName
    attempts: int
    last_error: str | None


class CodeStatus(BaseModel):
    """The emailed verification code, while the person is at that step (read live from the
    flow; absent when the worker cannot be asked)."""

    delivery: Literal["none", "sending", "sent", "failed"]
    expires_at: datetime | None
    attempts_left: int
    resends_left: int
    next_resend_at: datetime | None
    wrong_codes_total: int


class EntraLinkInfo(BaseModel):
    """The Microsoft Entra account linked to this staff login."""

    model_config = ConfigDict(from_attributes=True)

    tenant_id: str
    object_id: str
    display_name: str
    email: str
    linked_via: Literal["setup_link", "session"]
    linked_at: datetime
    last_sign_in_at: datetime | None
    account_state: Literal["enabled", "disabled", "deleted"] | None = Field(
        default=None,
        description="What Graph last said of the Microsoft account (asked at a password sign-in, "
        "at most every SSO_ENTRA_STATE_TTL); disabled or deleted refuses password sign-in too",
    )
    account_checked_at: datetime | None = None


class MfaObligationInfo(BaseModel):
    """The person's MFA enrolment obligation (workflow `mfa-enrollment-<staff id>`), as its
    flow last recorded it."""

    model_config = ConfigDict(from_attributes=True)

    policy: Literal["optional", "required"]
    step: Literal["waiting", "reminded", "overdue", "done", "ended"] = Field(
        description="`overdue`: past a required deadline, sign-in asks for MFA set-up first"
    )
    started_at: datetime
    due_at: datetime = Field(description="The deadline (required) or the one reminder (optional)")
    reminders_sent: int
    extended: bool = Field(default=False, description="An admin has used this obligation's one extension")
    extended_by: str | None = None
    due_text: str | None = Field(default=None, description='What the admin pages say: "MFA due in 5 days"')


class MfaExtended(BaseModel):
    due_at: datetime
    extended_by: str


class SsoStatus(BaseModel):
    staff_id: uuid.UUID
    state: SsoStateName
    state_since: datetime | None
    link_expires_at: datetime | None
    setup_expires_at: datetime | None = None
    email_delivery: EmailDelivery | None
    code: CodeStatus | None = None
    mfa_enabled: bool = False
    last_sign_in_at: datetime | None = None
    failed_sign_ins: int = 0
    locked_until: datetime | None = Field(
        default=None, description="Sign-in refused until then (growing delay after failures)"
    )
    needs_reset: bool = Field(
        default=False,
        description="Too many failures in a row: only a password reset (or an "
        "admin unlock) lets this person sign in again",
    )
    workflow_id: str | None
    failure_reason: str | None
    requested_by: str | None
    disabled_at: datetime | None = Field(
        default=None, description="Set while the person is disabled: sign-in is refused whatever the state"
    )
    entra: EntraLinkInfo | None = Field(
        default=None, description="The linked Microsoft Entra account, if any"
    )
    mfa_obligation: MfaObligationInfo | None = Field(default=None, description=MFA_OBLIGATION)


class SsoEmailSent(BaseModel):
    workflow_id: str
    link_expires_at: datetime = Field(
        description="When the link will expire if the email goes out now; the link is valid "
        "for SSO_SETUP_LINK_TTL from the moment it is actually sent (see GET .../sso)."
    )
    email_delivery: DeliveryStateName
    status_url: str


class SsoCancelled(BaseModel):
    workflow_id: str
    state: SsoStateName


class SessionsRevoked(BaseModel):
    sessions_revoked: int


class MfaReset(BaseModel):
    mfa_enabled: bool
    sessions_revoked: int


class Unlocked(BaseModel):
    failed_sign_ins: int
    locked_until: datetime | None


class EntraUnlinked(BaseModel):
    tenant_id: str
    object_id: str


class ErrorBody(BaseModel):
    error: str
    message: str
