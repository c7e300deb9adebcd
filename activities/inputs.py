"""Inputs and results of activities. Shared with workflows; holds no secrets by design."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from core.oidc.backchannel import SessionLogoutInput


@dataclass
class SendSetupEmailInput:
    setup_id: str
    staff_id: str
    workflow_id: str
    run_id: str
    link_ttl_seconds: int


@dataclass
class SendSetupEmailResult:
    sent_at: datetime
    link_expires_at: datetime
    masked_email: str
    attempts: int


@dataclass
class CloseSetupInput:
    setup_id: str
    staff_id: str
    run_id: str
    state: str
    reason: str | None = None
    actor: str = "system"


@dataclass
class StorePasswordInput:
    setup_id: str
    staff_id: str
    workflow_id: str
    run_id: str
    link_id: str
    # Sealed to the workers' key (core/sealing.py); never plaintext, even in decoded history.
    sealed_password: str
    session_hash: str
    session_ttl_seconds: int
    ip: str | None = None


@dataclass
class StorePasswordResult:
    ok: bool
    message: str | None = None
    problems: list[str] = field(default_factory=list)


@dataclass
class SendCodeInput:
    staff_id: str
    workflow_id: str
    purpose: str
    code_ttl_seconds: int
    # The setup whose row moves to code_sent once the code is out; None outside a setup.
    setup_id: str | None = None


@dataclass
class SendCodeResult:
    code_digest: str
    sent_at: datetime


@dataclass
class StaffStepInput:
    setup_id: str
    staff_id: str
    workflow_id: str
    ip: str | None = None  # for the audit log


@dataclass
class VerifyTotpInput:
    staff_id: str
    workflow_id: str
    sealed_code: str
    ip: str | None = None


@dataclass
class VerifyTotpResult:
    ok: bool
    message: str | None = None


@dataclass
class ActivateInput:
    setup_id: str
    staff_id: str
    workflow_id: str
    mfa: bool
    ip: str | None = None  # for the audit log


@dataclass
class AuditInput:
    actor: str
    action: str
    outcome: str
    target: str
    details: dict[str, str] = field(default_factory=dict)
    ip: str | None = None


@dataclass
class ResetPasswordInput:
    account_id: str
    staff_id: str
    workflow_id: str
    sealed_password: str
    # Sealed TOTP code; required when the account has MFA on.
    sealed_totp: str | None = None
    ip: str | None = None
    # Set when the flow accepted a code (its run id): the account's caps on wrong codes are
    # checked first, so past them even the right code gets the same answer as a wrong one.
    code_flow: str | None = None
    flow_limit: int = 10
    day_limit: int = 20
    # Instead of a code: the keyed hash of a reset link's token, consumed with the change.
    link_digest: str | None = None
    # Instead of the authenticator code: the key of the one-time row the web app wrote once
    # it checked the person's passkey (core/passkeys.py), spent with the change.
    passkey_proof: str | None = None


@dataclass
class ResetPasswordResult:
    ok: bool
    message: str | None = None
    problems: list[str] = field(default_factory=list)
    # A wrong authenticator code counts against the emailed code like a wrong code does.
    totp_failed: bool = False
    codes_stopped: bool = False
    # The sessions it ended whose apps are to be told; absent from results recorded before
    # back-channel logout, so those histories replay without the child flows.
    logouts: list[SessionLogoutInput] = field(default_factory=list)


@dataclass
class WrongResetCodeInput:
    staff_id: str
    account_id: str
    flow: str
    flow_limit: int
    day_limit: int
    attempts_left: int
    ip: str | None = None


@dataclass
class WrongResetCodeResult:
    counted: bool
    stopped: bool


@dataclass
class SendResetLinkInput:
    account_id: str
    staff_id: str
    workflow_id: str
    link_ttl_seconds: int


@dataclass
class SendResetLinkResult:
    sent_at: datetime
    expires_at: datetime


@dataclass
class NoticeInput:
    staff_id: str
    changed_at: datetime
    # Changed from the account page: the browser it was changed in stays signed in.
    kept_this_browser: bool = False


@dataclass
class MfaNoticeInput:
    staff_id: str
    change: str  # a key of activities.account.CHANGES
    changed_at: datetime


@dataclass
class VerifyEntraInput:
    workflow_id: str
    # Code, PKCE verifier and nonce, sealed by the web app to the workers' key.
    sealed_grant: str


@dataclass
class VerifiedEntra:
    """The claims a link needs: no token or code ever comes back from the activity."""

    tenant_id: str
    object_id: str
    name: str
    email: str


@dataclass
class LinkEntraInput:
    staff_id: str
    workflow_id: str
    identity: VerifiedEntra
    via: str
    actor: str
    ip: str | None = None
    link_id: str | None = None


@dataclass
class LinkEntraResult:
    ok: bool
    newly_linked: bool = False
    reason: str | None = None
    message: str | None = None


@dataclass
class EntraLinkedNoticeInput:
    staff_id: str
    account: str
    linked_at: datetime


@dataclass
class LogoutFailedInput:
    """An app that was still not told after the delivery window, and since when it was tried."""

    client_id: str
    since: datetime


@dataclass
class SendLogoutInput:
    """One app's logout token for an ended session; `jti` is fixed by the workflow, so every
    attempt (and a duplicate delivery) carries the same one."""

    client_id: str
    staff_id: str
    sid: str
    jti: str


@dataclass
class ObligationRecord:
    """Where an MFA obligation stands, as its flow records it for the pages."""

    staff_id: str
    run_id: str
    policy: str
    step: str
    started_at: datetime
    due_at: datetime
    reminders_sent: int
    extended_by: str | None = None


@dataclass
class ObligationCheckInput:
    staff_id: str


@dataclass
class ObligationCheck:
    """Whether the obligation is still owed: not once a second factor is set up, nor for a
    person who now signs in only with Microsoft, nor for one who is gone."""

    owed: bool
    reason: str  # "pending", "enrolled", "exempt" or "gone"


@dataclass
class MfaReminderInput:
    staff_id: str
    due_at: datetime
    required: bool


@dataclass
class RolloutBatchInput:
    after: str | None
    limit: int
    org_id: str | None = None  # one organisation's people only


@dataclass
class RolloutPerson:
    """Whom a rollout obliges, and their organisation (the obligation's SsoOrgId)."""

    staff_id: str
    org_id: str | None


@dataclass
class LeaverInput:
    staff_id: str
    # The leave day (ISO) the flow waited for: the person is disabled only if it still stands.
    leave_on: str


@dataclass
class EmailChangeStep:
    staff_id: str
    workflow_id: str
    outcome: str
    actor: str = "system"
    ip: str | None = None


@dataclass
class BatchChunkInput:
    batch_id: str
    limit: int


@dataclass
class BatchCounts:
    """A staff batch's items by outcome, and, when the email budget ran out part-way, when
    the next hour (and budget) begins."""

    sent: int
    failed: int
    left: int
    budget_until: datetime | None = None


@dataclass
class BatchStateInput:
    batch_id: str
    state: str
    wait_until: datetime | None = None


@dataclass
class OrgChunkInput:
    """A chunk of an organisation's people (by id order, those after `after`); `actor` is the
    operator who asked, for the audit (a verified key or session, never free text)."""

    org_id: str
    actor: str
    limit: int = 50
    after: str | None = None


@dataclass
class OrgSuspendChunk:
    people: int = 0
    sessions_revoked: int = 0
    grants_revoked: int = 0
    flows_ended: int = 0
    # The chunk's last person: the next chunk starts after them. None: no one was left.
    last: str | None = None
    # The organisation was resumed (or erased) meanwhile: its people are no longer to be ended.
    stopped: bool = False


@dataclass
class OrgSuspensionDoneInput:
    org_id: str
    actor: str
    counts: OrgSuspendChunk


@dataclass
class OrgEraseChunk:
    erased: int
    left: int


@dataclass
class OrgErasedInput:
    org_id: str
    actor: str
    people_erased: int


@dataclass
class OrgErasedResult:
    """`done` False: people were added meanwhile, to erase before the organisation goes."""

    done: bool
    keys_deleted: int = 0
    tenants_released: list[str] = field(default_factory=list)


@dataclass
class PurgeInput:
    """One table of the housekeeping run (core/retention.py), `batch_size` rows per statement."""

    table: str
    batch_size: int = 1000


@dataclass
class HousekeepingDoneInput:
    """Rows deleted per table in one housekeeping run (`run_id`): counts only, nothing about
    anyone."""

    run_id: str
    counts: dict[str, int]
