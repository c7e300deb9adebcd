"""Stand-in activities under the real activity names: no database, no email. Each call is
recorded (`calls`), so a test sees every activity a flow ran; every database row and audit
event the worker writes is written by one of these activities."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.inputs import (
    ActivateInput,
    AuditInput,
    BatchChunkInput,
    BatchCounts,
    BatchStateInput,
    CloseSetupInput,
    EmailChangeStep,
    EntraLinkedNoticeInput,
    LeaverInput,
    LinkEntraInput,
    LinkEntraResult,
    LogoutFailedInput,
    MfaReminderInput,
    NoticeInput,
    ObligationCheck,
    ObligationCheckInput,
    ObligationRecord,
    ResetPasswordInput,
    ResetPasswordResult,
    RolloutBatchInput,
    SendCodeInput,
    SendCodeResult,
    SendLogoutInput,
    SendSetupEmailInput,
    SendSetupEmailResult,
    StaffStepInput,
    StorePasswordInput,
    StorePasswordResult,
    VerifiedEntra,
    VerifyEntraInput,
    VerifyTotpInput,
    VerifyTotpResult,
)
from core import flow_errors


class Stand:
    """Stand-in activities under the real names: no database, no email."""

    # A staff batch's people, as many as this unless a test says otherwise (`batch_left`).
    BATCH_PEOPLE = 120

    def __init__(self) -> None:
        self.codes = 0
        self.calls: list[tuple[str, object]] = []
        self.batch_left: dict[str, int] = {}
        self.batch_sent: dict[str, int] = {}
        # The people an MFA rollout finds, by staff id (in order), unless a test says otherwise.
        self.rollout_people: list[str] = []

    def _ran(self, data: object) -> None:
        self.calls.append((activity.info().activity_type, data))

    @activity.defn(name="send_setup_email")
    async def send_setup_email(self, data: SendSetupEmailInput) -> SendSetupEmailResult:
        self._ran(data)
        at = activity.info().current_attempt_scheduled_time
        return SendSetupEmailResult(
            sent_at=at,
            link_expires_at=at + timedelta(seconds=data.link_ttl_seconds),
            masked_email="j***@example.com",
            attempts=1,
        )

    @activity.defn(name="close_setup")
    async def close_setup(self, data: CloseSetupInput) -> None:
        self._ran(data)

    @activity.defn(name="store_password")
    async def store_password(self, data: StorePasswordInput) -> StorePasswordResult:
        self._ran(data)
        return StorePasswordResult(ok=True)

    @activity.defn(name="send_code")
    async def send_code(self, data: SendCodeInput) -> SendCodeResult:
        self._ran(data)
        self.codes += 1
        return SendCodeResult(
            code_digest=f"digest-{data.workflow_id}", sent_at=activity.info().current_attempt_scheduled_time
        )

    @activity.defn(name="confirm_email")
    async def confirm_email(self, data: StaffStepInput) -> None:
        self._ran(data)

    @activity.defn(name="verify_totp")
    async def verify_totp(self, data: VerifyTotpInput) -> VerifyTotpResult:
        self._ran(data)
        return VerifyTotpResult(ok=True)

    @activity.defn(name="activate_account")
    async def activate_account(self, data: ActivateInput) -> None:
        self._ran(data)

    @activity.defn(name="record_audit")
    async def record_audit(self, data: AuditInput) -> None:
        self._ran(data)

    @activity.defn(name="record_link_opened")
    async def record_link_opened(self, data: StaffStepInput) -> None:
        self._ran(data)

    @activity.defn(name="reset_password")
    async def reset_password(self, data: ResetPasswordInput) -> ResetPasswordResult:
        self._ran(data)
        return ResetPasswordResult(ok=True)

    @activity.defn(name="send_password_changed")
    async def send_password_changed(self, data: NoticeInput) -> None:
        self._ran(data)

    @activity.defn(name="verify_entra_grant")
    async def verify_entra_grant(self, data: VerifyEntraInput) -> VerifiedEntra:
        self._ran(data)
        return VerifiedEntra(
            tenant_id="tenant-1",
            object_id=f"oid-{data.workflow_id}",
            name="Jo Example",
            email="jo@example.com",
        )

    @activity.defn(name="link_entra_identity")
    async def link_entra_identity(self, data: LinkEntraInput) -> LinkEntraResult:
        self._ran(data)
        return LinkEntraResult(ok=True, newly_linked=True)

    @activity.defn(name="send_entra_linked")
    async def send_entra_linked(self, data: EntraLinkedNoticeInput) -> None:
        self._ran(data)

    @activity.defn(name="send_batch_chunk")
    async def send_batch_chunk(self, data: BatchChunkInput) -> BatchCounts:
        self._ran(data)
        left = self.batch_left.get(data.batch_id, self.BATCH_PEOPLE)
        taken = min(data.limit, left)
        self.batch_left[data.batch_id] = left - taken
        self.batch_sent[data.batch_id] = self.batch_sent.get(data.batch_id, 0) + taken
        return BatchCounts(sent=self.batch_sent[data.batch_id], failed=0, left=left - taken)

    @activity.defn(name="record_batch_state")
    async def record_batch_state(self, data: BatchStateInput) -> BatchCounts:
        self._ran(data)
        left = self.batch_left.get(data.batch_id, self.BATCH_PEOPLE)
        return BatchCounts(sent=self.batch_sent.get(data.batch_id, 0), failed=0, left=left)

    @activity.defn(name="disable_leaver")
    async def disable_leaver(self, data: LeaverInput) -> str:
        self._ran(data)
        return "disabled"

    @activity.defn(name="apply_email_change")
    async def apply_email_change(self, data: EmailChangeStep) -> str:
        self._ran(data)
        return "changed"

    @activity.defn(name="send_email_changed")
    async def send_email_changed(self, data: EmailChangeStep) -> None:
        self._ran(data)

    @activity.defn(name="drop_email_change")
    async def drop_email_change(self, data: EmailChangeStep) -> None:
        self._ran(data)

    @activity.defn(name="next_mfa_rollout_batch")
    async def next_mfa_rollout_batch(self, data: RolloutBatchInput) -> list[str]:
        self._ran(data)
        after = [p for p in self.rollout_people if data.after is None or p > data.after]
        return after[: data.limit]

    @activity.defn(name="record_mfa_obligation")
    async def record_mfa_obligation(self, data: ObligationRecord) -> None:
        self._ran(data)

    @activity.defn(name="check_mfa_obligation")
    async def check_mfa_obligation(self, data: ObligationCheckInput) -> ObligationCheck:
        self._ran(data)
        return ObligationCheck(owed=True, reason="pending")

    @activity.defn(name="send_mfa_reminder")
    async def send_mfa_reminder(self, data: MfaReminderInput) -> None:
        self._ran(data)

    @activity.defn(name="send_logout_token")
    async def send_logout_token(self, data: SendLogoutInput) -> str:
        """Delivered, except to an app named `refused-…` (its URI is refused for good) or
        `down-…` (it never answers: tried again)."""
        self._ran(data)
        if data.client_id.startswith("refused-"):
            raise ApplicationError("refused", non_retryable=True, type=flow_errors.LOGOUT_URI_REFUSED)
        if data.client_id.startswith("down-"):
            raise ApplicationError("the app answered 503")
        return "delivered"

    @activity.defn(name="record_logout_failure")
    async def record_logout_failure(self, data: LogoutFailedInput) -> None:
        self._ran(data)

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.disable_leaver,
            self.apply_email_change,
            self.send_email_changed,
            self.drop_email_change,
            self.next_mfa_rollout_batch,
            self.record_mfa_obligation,
            self.check_mfa_obligation,
            self.send_mfa_reminder,
            self.send_logout_token,
            self.record_logout_failure,
            self.send_batch_chunk,
            self.record_batch_state,
            self.send_setup_email,
            self.close_setup,
            self.store_password,
            self.send_code,
            self.confirm_email,
            self.verify_totp,
            self.activate_account,
            self.record_audit,
            self.record_link_opened,
            self.reset_password,
            self.send_password_changed,
            self.verify_entra_grant,
            self.link_entra_identity,
            self.send_entra_linked,
        ]
