"""Stand-in activities under the real activity names: no database, no email. Each call is
recorded (`calls`), so a test sees every activity a flow ran; every database row and audit
event the worker writes is written by one of these activities."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio import activity

from activities.inputs import (
    ActivateInput,
    AuditInput,
    BatchChunkInput,
    BatchCounts,
    BatchStateInput,
    CloseSetupInput,
    EntraLinkedNoticeInput,
    LinkEntraInput,
    LinkEntraResult,
    NoticeInput,
    ResetPasswordInput,
    ResetPasswordResult,
    SendCodeInput,
    SendCodeResult,
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


class Stand:
    """Stand-in activities under the real names: no database, no email."""

    # A staff batch's people, as many as this unless a test says otherwise (`batch_left`).
    BATCH_PEOPLE = 120

    def __init__(self) -> None:
        self.codes = 0
        self.calls: list[tuple[str, object]] = []
        self.batch_left: dict[str, int] = {}
        self.batch_sent: dict[str, int] = {}

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

    def all(self) -> list[Callable[..., Any]]:
        return [
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
