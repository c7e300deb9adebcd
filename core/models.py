"""Database tables. Alembic migrations in core/migrations are the only way the schema changes."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# The setup steps live in core/steps.py (workflows import them); re-exported for the tables.
from core.steps import OPEN_SETUP_STATES as OPEN_SETUP_STATES
from core.steps import SetupState as SetupState


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """SQLite drops tz info; this hands back aware UTC datetimes on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


class DeliveryState(StrEnum):
    pending = "pending"
    sent = "sent"
    retrying = "retrying"
    failed = "failed"


class AccountStatus(StrEnum):
    pending = "pending"
    active = "active"
    disabled = "disabled"


class OrgStatus(StrEnum):
    active = "active"
    suspended = "suspended"
    # Suspended and being erased (workflows/org_erasure.py): gone once its flow finishes.
    erasing = "erasing"


# No sign-in of any kind for these organisations' people, no use of their admin keys.
SIGN_IN_PAUSED = (OrgStatus.suspended.value, OrgStatus.erasing.value)


class Organisation(Base):
    """An agency on the deployment: its people, admins and keys see only each other."""

    __tablename__ = "organisations"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(63), unique=True)
    status: Mapped[str] = mapped_column(String(20), default=OrgStatus.active.value)
    # None: the deployment's SSO_MFA_POLICY; else "optional" or "required".
    mfa_policy: Mapped[str | None] = mapped_column(String(20))
    # The From name of the emails its people get, e.g. "Harbour Lettings via agentOS".
    sender_name: Mapped[str | None] = mapped_column(String(200))
    suspended_at: Mapped[datetime | None]
    # When the suspension's flow (workflows/org_suspension.py) had ended every person's
    # sessions, tokens and open flows; None while it is under way.
    suspension_done_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class OrganisationTenant(Base):
    """A Microsoft Entra tenant and the one organisation whose people it signs in."""

    __tablename__ = "organisation_tenants"

    # Lower-cased GUID: unique across the deployment (one tenant, one organisation).
    tenant_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Staff(Base):
    __tablename__ = "staff"
    # An operator acts as an admin everywhere: never one without the admin role.
    __table_args__ = (CheckConstraint("NOT is_operator OR is_admin", name="ck_staff_operator_is_admin"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisations.id"), index=True)
    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str] = mapped_column(String(100))
    # Stored lower-cased so uniqueness holds whatever case an admin types.
    external_email_1: Mapped[str] = mapped_column(String(320), unique=True)
    # Admins use the staff pages; they sign in through the same Single Sign-On, with MFA.
    is_admin: Mapped[bool] = mapped_column(default=False)
    # agentOS operations: an admin who acts across organisations (and on deployment-wide
    # things: apps, the codec, organisations).
    is_operator: Mapped[bool] = mapped_column(default=False)
    # Set while the person is disabled (a leaver): no sign-in of any kind, no setup email.
    disabled_at: Mapped[datetime | None]
    # The day the person leaves: a durable timer (workflows/leave.py) disables them at its
    # start in SSO_TIME_ZONE.
    leave_on: Mapped[date | None]
    # A new External Email 1 waiting for the code emailed to it; the old one stays in force.
    pending_external_email_1: Mapped[str | None] = mapped_column(String(320))
    # The address the person just moved from, kept only until it has been told of the change.
    previous_external_email_1: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SsoAccount(Base):
    __tablename__ = "sso_accounts"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    staff_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff.id", ondelete="CASCADE"), unique=True)
    login_email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str | None] = mapped_column(Text)
    verified_at: Mapped[datetime | None]
    # Sealed with the encryption keyring; never stored in the clear.
    totp_secret_encrypted: Mapped[str | None] = mapped_column(Text)
    mfa_enabled_at: Mapped[datetime | None]
    # The last TOTP time step accepted: a code is never accepted twice.
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    activated_at: Mapped[datetime | None]
    last_sign_in_at: Mapped[datetime | None]
    # Consecutive failed sign-ins; reset by a success, a password reset or an admin unlock.
    failed_sign_ins: Mapped[int] = mapped_column(default=0)
    locked_until: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(20), default=AccountStatus.pending.value)
    # What enabling the person gives back (status is `disabled` meanwhile).
    status_before_disable: Mapped[str | None] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class RecoveryCode(Base):
    """One single-use MFA recovery code: only its keyed digest, bound to the account, so a
    leaked table opens nothing and one person's code never matches another's."""

    __tablename__ = "recovery_codes"
    __table_args__ = (Index("ix_recovery_codes_account", "account_id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sso_accounts.id", ondelete="CASCADE"))
    digest: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    used_at: Mapped[datetime | None]


class Passkey(Base):
    """A passkey (WebAuthn credential) of a person: its public key only, never anything that
    signs. `sign_count` only moves forward (a count going back is a cloned authenticator);
    `backup_eligible` tells a synced passkey (swk) from one bound to its device (hwk)."""

    __tablename__ = "passkeys"
    __table_args__ = (Index("ix_passkeys_account", "account_id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sso_accounts.id", ondelete="CASCADE"))
    # base64url of the authenticator's credential id (at most 1023 bytes).
    credential_id: Mapped[str] = mapped_column(String(1400), unique=True)
    public_key: Mapped[str] = mapped_column(Text)
    sign_count: Mapped[int] = mapped_column(BigInteger, default=0)
    transports: Mapped[list[str]] = mapped_column(JSON, default=list)
    name: Mapped[str] = mapped_column(String(100))
    backup_eligible: Mapped[bool] = mapped_column(default=False)
    backed_up: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]


class SsoSetup(Base):
    """One row per "Send Single Sign-On Email": written by the flow's activities, read by the API."""

    __tablename__ = "sso_setups"
    __table_args__ = (Index("ix_sso_setups_staff", "staff_id", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    staff_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff.id", ondelete="CASCADE"))
    workflow_id: Mapped[str] = mapped_column(String(100))
    # Filled in by the flow's first activity; links are bound to this run.
    run_id: Mapped[str | None] = mapped_column(String(100), unique=True)
    state: Mapped[str] = mapped_column(String(30))
    state_since: Mapped[datetime]
    link_expires_at: Mapped[datetime | None]
    email_delivery: Mapped[str] = mapped_column(String(20), default=DeliveryState.pending.value)
    email_attempts: Mapped[int] = mapped_column(default=0)
    email_last_error: Mapped[str | None] = mapped_column(Text)
    failure_reason: Mapped[str | None] = mapped_column(Text)
    requested_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SetupLink(Base):
    __tablename__ = "setup_links"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    staff_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff.id", ondelete="CASCADE"))
    workflow_id: Mapped[str] = mapped_column(String(100))
    run_id: Mapped[str] = mapped_column(String(100))
    # HMAC of the token; the token itself exists only in the email.
    token_hash: Mapped[str] = mapped_column(String(128), unique=True)
    expires_at: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    consumed_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_setup_links_staff", "staff_id"),
        Index("ix_setup_links_expires", "expires_at"),
    )


class AdminApiKey(Base):
    __tablename__ = "admin_api_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(100))
    key_hash: Mapped[str] = mapped_column(String(128), unique=True)
    # The organisation the key administers; None: an operator key (every organisation).
    org_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100))
    target: Mapped[str | None] = mapped_column(String(100))
    outcome: Mapped[str] = mapped_column(String(30))
    ip: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)

    __table_args__ = (Index("ix_audit_target", "target", "occurred_at"),)


class OutboxEmail(Base):
    """Development mailbox. Bodies are sealed: even dev links are not plaintext at rest."""

    __tablename__ = "outbox_emails"
    __table_args__ = (Index("ix_outbox_emails_created", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    to_address: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(300))
    body_encrypted: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EmailSend(Base):
    """One email a flow asked for: what every attempt of its activity repeats. The link token
    or code is minted once and kept sealed until the mail server has accepted the email, so a
    retry after a worker died mid-send emails the same one (a duplicate is then harmless)."""

    __tablename__ = "email_sends"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    # Workflow id, run id and activity id: the same for every attempt of one scheduled send.
    request_key: Mapped[str] = mapped_column(String(300), unique=True)
    kind: Mapped[str] = mapped_column(String(40))
    staff_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("staff.id", ondelete="CASCADE"))
    # Keyring-sealed, bound to request_key; dropped once the email was accepted.
    secret_sealed: Mapped[str | None] = mapped_column(Text)
    # What the flow keeps of a code (its keyed digest), returned again by a retry.
    digest: Mapped[str | None] = mapped_column(String(128))
    expires_at: Mapped[datetime | None]
    handovers: Mapped[int] = mapped_column(default=0)
    # An attempt began handing the email to the mail server and never recorded how it went.
    in_flight: Mapped[bool] = mapped_column(default=False)
    accepted_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        Index("ix_email_sends_staff", "staff_id"),
        Index("ix_email_sends_created", "created_at"),
    )


class BrowserSession(Base):
    """Server-side browser sessions; the cookie holds the id, the table only its HMAC."""

    __tablename__ = "browser_sessions"

    id_hash: Mapped[str] = mapped_column(String(128), primary_key=True)
    # Empty only for the stand-in session of a reset asked for an unknown address.
    staff_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("staff.id", ondelete="CASCADE"))
    # "setup" drives one setup flow and never signs anyone in; "reset" drives one reset flow;
    # "mfa" is a password-checked sign-in waiting for its TOTP code; "signin" is signed in.
    purpose: Mapped[str] = mapped_column(String(20))
    workflow_id: Mapped[str | None] = mapped_column(String(100))
    run_id: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime | None]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    # Small per-session state (e.g. attempts on a reset page for an unknown address).
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)

    __table_args__ = (
        Index("ix_browser_sessions_staff", "staff_id"),
        Index("ix_browser_sessions_expires", "expires_at"),
    )


class EntraLink(Base):
    """A Microsoft Entra identity linked to a staff login: one per person, one person per
    identity. Matched on (tenant, object id) only, never on the email claim."""

    __tablename__ = "entra_links"
    __table_args__ = (UniqueConstraint("tenant_id", "object_id", name="uq_entra_identity"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    staff_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff.id", ondelete="CASCADE"), unique=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    object_id: Mapped[str] = mapped_column(String(64))
    # As Microsoft gave them when linked, to show admins which account it is.
    display_name: Mapped[str] = mapped_column(String(200), default="")
    email: Mapped[str] = mapped_column(String(320), default="")
    # "setup_link" or "session": how the person proved who they were when linking.
    linked_via: Mapped[str] = mapped_column(String(20))
    linked_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_sign_in_at: Mapped[datetime | None]
    # What Graph last said of the Microsoft account ("enabled", "disabled", "deleted") and
    # when: a password sign-in asks again once SSO_ENTRA_STATE_TTL has passed.
    account_state: Mapped[str | None] = mapped_column(String(20))
    account_checked_at: Mapped[datetime | None]


class ResetCodeFailure(Base):
    """A wrong password reset code: counted per flow and per subject (an account id, or the
    stand-in id of an address without one) over a rolling day, across browsers and flows."""

    __tablename__ = "reset_code_failures"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    subject: Mapped[str] = mapped_column(String(100))
    flow: Mapped[str] = mapped_column(String(100))
    failed_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        Index("ix_reset_code_failures_subject", "subject", "failed_at"),
        Index("ix_reset_code_failures_failed", "failed_at"),
    )


class ResetLink(Base):
    """A single-use password reset link, emailed once codes stop working for an account."""

    __tablename__ = "reset_links"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sso_accounts.id", ondelete="CASCADE"))
    workflow_id: Mapped[str] = mapped_column(String(100))
    # HMAC of the token; the token itself exists only in the email.
    token_hash: Mapped[str] = mapped_column(String(128), unique=True)
    expires_at: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    consumed_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_reset_links_account", "account_id"),
        Index("ix_reset_links_expires", "expires_at"),
    )


class RateCounter(Base):
    """Fixed-window counters shared by all web app instances (when Redis is not configured)."""

    __tablename__ = "rate_counters"
    __table_args__ = (Index("ix_rate_counters_window", "window_start"),)

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    window_start: Mapped[datetime]
    count: Mapped[int] = mapped_column(default=0)


class DeploymentFact(Base):
    """A moment in this deployment's life that later code needs to know (e.g. when payloads
    started to be bound to their flow), recorded by the migration that brought it."""

    __tablename__ = "deployment_facts"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    at: Mapped[datetime]


class OidcClient(Base):
    """An app that signs people in through the OpenID Connect provider. Its secret is kept
    only as an HMAC; `registration` holds the RFC 7591 metadata it was registered with."""

    __tablename__ = "oidc_clients"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    client_name: Mapped[str] = mapped_column(String(200))
    registration: Mapped[dict[str, Any]] = mapped_column(default=dict)
    secret_hash: Mapped[str | None] = mapped_column(String(128))
    disabled_at: Mapped[datetime | None]
    # Set when a session's back-channel logout gave up on the app, cleared by a delivery.
    backchannel_failing_since: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class OidcGrant(Base):
    """One authorization code and what it was issued for. The code itself is never stored,
    only its HMAC; the access token issued for it carries this row's id as `jti`, so a second
    redemption of the code can revoke it."""

    __tablename__ = "oidc_grants"
    __table_args__ = (
        Index("ix_oidc_grants_staff", "staff_id"),
        Index("ix_oidc_grants_session", "session_hash"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    code_hash: Mapped[str] = mapped_column(String(128), unique=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("oidc_clients.client_id", ondelete="CASCADE"))
    staff_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff.id", ondelete="CASCADE"))
    redirect_uri: Mapped[str] = mapped_column(Text)
    scope: Mapped[str] = mapped_column(Text)
    # What the browser session proved, fixed when the code is issued.
    claims: Mapped[dict[str, Any]] = mapped_column(default=dict)
    code_challenge: Mapped[str | None] = mapped_column(String(128))
    expires_at: Mapped[datetime]
    redeemed_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The browser session (its id's HMAC) the code came from: its refresh tokens end with it.
    session_hash: Mapped[str | None] = mapped_column(String(128))


class OidcRefreshToken(Base):
    """One refresh token of a grant, kept only as an HMAC. The grant is the token family:
    each use rotates the token (`rotated_at`), and a rotated token presented again revokes
    the grant with every token it issued (RFC 9700 §4.14.2)."""

    __tablename__ = "oidc_refresh_tokens"
    __table_args__ = (Index("ix_oidc_refresh_tokens_grant", "grant_id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    token_hash: Mapped[str] = mapped_column(String(128), unique=True)
    grant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("oidc_grants.id", ondelete="CASCADE"))
    scope: Mapped[str] = mapped_column(Text)
    rotated_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class OidcConsent(Base):
    """A person allowed an app that asks for consent to sign them in (with these scopes);
    asked again only when the app sends prompt=consent."""

    __tablename__ = "oidc_consents"
    __table_args__ = (UniqueConstraint("staff_id", "client_id", name="uq_oidc_consent"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    staff_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff.id", ondelete="CASCADE"))
    client_id: Mapped[str] = mapped_column(ForeignKey("oidc_clients.client_id", ondelete="CASCADE"))
    scope: Mapped[str] = mapped_column(Text)
    granted_at: Mapped[datetime] = mapped_column(default=utcnow)


class OidcSigningKey(Base):
    """A token signing key: the private JWK sealed with the encryption keyring. It is in the
    JWKS from `created_at` until `retire_at`, and signs from `signs_from`."""

    __tablename__ = "oidc_signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    alg: Mapped[str] = mapped_column(String(10))
    public_jwk: Mapped[dict[str, Any]] = mapped_column(default=dict)
    private_sealed: Mapped[str] = mapped_column(Text)
    signs_from: Mapped[datetime]
    retire_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LogoutOutbox(Base):
    """A back-channel logout owed for an ended sign-in session, written in the transaction
    that ended it: a failed commit owes nothing, and a logout the web app could not start
    after its commit is started by the worker's sweeper. Deleted once its SessionLogout flow
    has started. Names the session as the apps know it (`sid`, a keyed hash of its id; for an
    app's access removed, "<sid>.<removal id>": SessionLogoutInput.key) and the apps to tell;
    never a token or secret."""

    __tablename__ = "logout_outbox"
    __table_args__ = (Index("ix_logout_outbox_created", "created_at"),)

    sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    staff_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    client_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class MfaObligation(Base):
    """Where a person's MFA enrolment obligation stands, written by the MfaEnrollment flow's
    activities so the admin pages and sign-in read it without asking Temporal."""

    __tablename__ = "mfa_obligations"

    staff_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff.id", ondelete="CASCADE"), primary_key=True)
    # The run this row belongs to: a restarted obligation's old run cannot overwrite it.
    run_id: Mapped[str] = mapped_column(String(64))
    policy: Mapped[str] = mapped_column(String(20))
    # waiting, reminded, overdue, done or ended (core.mfa_policy.ObligationStep)
    step: Mapped[str] = mapped_column(String(20))
    started_at: Mapped[datetime]
    due_at: Mapped[datetime]
    reminders_sent: Mapped[int] = mapped_column(default=0)
    extended_by: Mapped[str | None] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class StaffBatch(Base):
    """A bulk action on many people (today: send each their Single Sign-On email), run by
    the `staff-batch-<id>` flow; its people are its items, not the flow's history."""

    __tablename__ = "staff_batches"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    # Every person of a batch is of this organisation (the batch's admins are its admins).
    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    action: Mapped[str] = mapped_column(String(30))
    # core.batches.BatchState, as the flow last recorded it.
    state: Mapped[str] = mapped_column(String(40))
    requested_by: Mapped[str] = mapped_column(String(200))
    total: Mapped[int]
    # While the email budget is spent: when the flow's timer goes on.
    wait_until: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class StaffBatchItem(Base):
    __tablename__ = "staff_batch_items"
    __table_args__ = (
        UniqueConstraint("batch_id", "staff_id"),
        Index("ix_staff_batch_items_next", "batch_id", "status", "position"),
        Index("ix_staff_batch_items_setup", "setup_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    batch_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_batches.id", ondelete="CASCADE"))
    staff_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff.id", ondelete="CASCADE"))
    position: Mapped[int]
    # core.batches.ItemStatus
    status: Mapped[str] = mapped_column(String(20))
    # The setup this item started, committed before its flow starts: a retried item finds
    # it and starts that setup's flow (or sees it running) instead of superseding it.
    setup_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class EmailBudgetHour(Base):
    """Emails counted against a budget (core/email_budget.py) in one clock hour."""

    __tablename__ = "email_budget_hours"

    budget_key: Mapped[str] = mapped_column(String(100), primary_key=True)
    hour: Mapped[datetime] = mapped_column(primary_key=True)
    used: Mapped[int] = mapped_column(default=0)
