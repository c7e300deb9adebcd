"""Activities behind the setup pages: password, emailed code, authenticator, activation."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.base import SecretActivities
from activities.email_delivery import PermanentEmailError, record_after_send
from activities.inputs import (
    ActivateInput,
    AuditInput,
    SendCodeInput,
    SendCodeResult,
    StaffStepInput,
    StorePasswordInput,
    StorePasswordResult,
    VerifyTotpInput,
    VerifyTotpResult,
)
from activities.send_requests import AttemptClock
from activities.sso_setup import ttl_words
from core import audit
from core.accounts import totp_accepted
from core.crypto import code_digest, new_email_code
from core.models import (
    OPEN_SETUP_STATES,
    AccountStatus,
    BrowserSession,
    SetupLink,
    SetupState,
    SsoAccount,
    SsoSetup,
    Staff,
    utcnow,
)
from core.passwords import PasswordPolicy, password_problems, personal_words
from core.sealing import password_context, totp_context
from core.templating import render_email
from core.totp import matching_step, new_secret, totp_aad

CODE_TEMPLATES = {"setup": "verification_code", "reset": "password_reset_code"}
LINK_GONE = ("This link is no longer valid. Ask your administrator to send you a new "
             "Single Sign-On email.")


class SetupStepActivities(SecretActivities):
    @activity.defn(name="store_password")
    async def store_password(self, data: StorePasswordInput) -> StorePasswordResult:
        """Check the password, hash it, and in one transaction consume the link, store the
        hash and bind the browser session that submitted it."""
        password = self._unseal(data.sealed_password, password_context(data.workflow_id))
        staff_id = uuid.UUID(data.staff_id)
        async with self._sessions() as session:
            staff = await session.get(Staff, staff_id)
            link = await session.get(SetupLink, uuid.UUID(data.link_id))
            if staff is None or link is None or link.run_id != data.run_id:
                return StorePasswordResult(ok=False, message=LINK_GONE)
            if link.consumed_at is not None:
                # A retry of an attempt that already committed: same browser, same answer.
                bound = await session.get(BrowserSession, data.session_hash)
                if bound is not None and bound.run_id == data.run_id:
                    return StorePasswordResult(ok=True)
                return StorePasswordResult(ok=False, message=LINK_GONE)
            personal = personal_words(staff.first_name, staff.last_name,
                                      staff.external_email_1, self._settings.brand_name)
            login_email = staff.external_email_1
        policy = PasswordPolicy(min_length=self._settings.password_min_length)
        problems = await asyncio.to_thread(password_problems, password, policy, personal)
        if problems:
            await self._audit(AuditInput("staff:" + data.staff_id, "sso_setup.password_rejected",
                                         "failure", data.staff_id, ip=data.ip))
            return StorePasswordResult(ok=False, problems=problems)
        password_hash = await self._hash(password)
        del password

        now = utcnow()
        async with self._sessions() as session:
            consumed = await session.execute(
                update(SetupLink)
                .where(SetupLink.id == uuid.UUID(data.link_id), SetupLink.consumed_at.is_(None),
                       SetupLink.revoked_at.is_(None), SetupLink.expires_at > now)
                .values(consumed_at=now))
            if consumed.rowcount != 1:  # type: ignore[attr-defined]
                # An earlier attempt of this step, still running when Temporal gave up on
                # its worker, may have committed while this one hashed: same browser, done.
                bound = await session.get(BrowserSession, data.session_hash)
                if bound is not None and bound.run_id == data.run_id:
                    return StorePasswordResult(ok=True)
                return StorePasswordResult(ok=False, message=LINK_GONE)
            account = await session.scalar(select(SsoAccount).where(
                SsoAccount.staff_id == staff_id))
            if account is None:
                account = SsoAccount(staff_id=staff_id, login_email=login_email)
                session.add(account)
            account.password_hash = password_hash
            account.status = AccountStatus.pending.value
            session.add(BrowserSession(
                id_hash=data.session_hash, staff_id=staff_id, purpose="setup",
                workflow_id=data.workflow_id, run_id=data.run_id,
                expires_at=now + timedelta(seconds=data.session_ttl_seconds)))
            await _move_setup(session, data.setup_id, SetupState.password_set, now)
            audit.record(session, actor=f"staff:{data.staff_id}", action="sso_setup.password_set",
                         outcome="success", target=data.staff_id, ip=data.ip,
                         workflow_id=data.workflow_id)
            await session.commit()
        return StorePasswordResult(ok=True)

    @activity.defn(name="record_link_opened")
    async def record_link_opened(self, data: StaffStepInput) -> None:
        """The person opened the password form from their link (which stays unconsumed):
        the setup shows `link_opened`, recorded once (a retry, or a step already past it,
        changes nothing)."""
        async with self._sessions() as session:
            moved = await _move_setup(session, data.setup_id, SetupState.link_opened, utcnow(),
                                      only_from={SetupState.email_sent})
            if moved:
                audit.record(session, actor=f"staff:{data.staff_id}",
                             action="sso_setup.link_opened", outcome="success",
                             target=data.staff_id, ip=data.ip, workflow_id=data.workflow_id)
            await session.commit()

    @activity.defn(name="send_code")
    async def send_code(self, data: SendCodeInput) -> SendCodeResult:
        """A six-digit code, emailed; only its keyed digest is returned. Minted once per send
        request: a retry emails the same code (both copies work), "Send a new code" is a new
        request and a new code."""
        clock = AttemptClock()
        staff_id = uuid.UUID(data.staff_id)
        async with self._sessions() as session:
            staff = await session.get(Staff, staff_id)
            if staff is None:
                raise ApplicationError("staff member no longer exists", non_retryable=True,
                                       type="StaffNotFound")
            claim = await self._requests.claim(session, CODE_TEMPLATES[data.purpose], staff_id,
                                               new_email_code)
            if claim.accepted:
                # An earlier attempt's email was accepted and recorded; its answer was lost.
                assert claim.row.digest is not None and claim.row.accepted_at is not None
                return SendCodeResult(code_digest=claim.row.digest,
                                      sent_at=claim.row.accepted_at)
            digest = code_digest(self._settings.secret_key.get_secret_value(), data.purpose,
                                 data.workflow_id, claim.secret)
            claim.row.digest = digest
            self._requests.hand_over(claim)
            email = render_email(
                CODE_TEMPLATES[data.purpose], to=staff.external_email_1,
                brand=self._settings.brand_name, first_name=staff.first_name,
                code=claim.secret, ttl_words=ttl_words(data.code_ttl_seconds),
                support_email=self._settings.support_email)
            await session.commit()
        claim.secret = ""
        try:
            await self._requests.send(self._sessions, self._sender, claim, email)
        except PermanentEmailError as exc:
            raise ApplicationError(str(exc), non_retryable=True,
                                   type="PermanentEmailError") from exc
        # Server clock, like the workflow's: the code's lifetime counts from the hand-over.
        sent_at = clock.now()

        async def record_sent() -> None:
            async with self._sessions() as session:
                if data.setup_id:
                    await _move_setup(session, data.setup_id, SetupState.code_sent, utcnow(),
                                      only_from={SetupState.password_set, SetupState.code_sent})
                await self._requests.accepted(session, claim, sent_at)
                audit.record(session, actor="system", action="code.issued", outcome="success",
                             target=data.staff_id, purpose=data.purpose,
                             workflow_id=data.workflow_id)
                await session.commit()

        # The code is out: failing now would make Temporal email it again.
        await record_after_send(record_sent)
        return SendCodeResult(code_digest=digest, sent_at=sent_at)

    @activity.defn(name="confirm_email")
    async def confirm_email(self, data: StaffStepInput) -> None:
        """The code matched: the address is verified; prepare the authenticator secret."""
        now = utcnow()
        staff_id = uuid.UUID(data.staff_id)
        async with self._sessions() as session:
            account = await session.scalar(select(SsoAccount).where(
                SsoAccount.staff_id == staff_id))
            if account is None:
                raise ApplicationError("no account for this setup", non_retryable=True,
                                       type="AccountMissing")
            setup = await session.get(SsoSetup, uuid.UUID(data.setup_id))
            # A retry of an attempt that committed (its worker died before Temporal heard):
            # the step is done; record it once.
            retried = setup is not None and setup.state == SetupState.mfa_pending.value
            account.verified_at = account.verified_at or now
            if account.totp_secret_encrypted is None:
                # Only when there is none: a retried activity must not change the QR code.
                secret = new_secret()
                account.totp_secret_encrypted = self._keyring.seal(secret.encode(),
                                                                   totp_aad(staff_id))
                account.totp_last_step = None
            await _move_setup(session, data.setup_id, SetupState.mfa_pending, now)
            if not retried:
                audit.record(session, actor=f"staff:{data.staff_id}",
                             action="sso_setup.email_confirmed", outcome="success",
                             target=data.staff_id, ip=data.ip, workflow_id=data.workflow_id)
            await session.commit()

    @activity.defn(name="verify_totp")
    async def verify_totp(self, data: VerifyTotpInput) -> VerifyTotpResult:
        code = self._unseal(data.sealed_code, totp_context(data.workflow_id)).strip()
        staff_id = uuid.UUID(data.staff_id)
        async with self._sessions() as session:
            account = await session.scalar(select(SsoAccount).where(
                SsoAccount.staff_id == staff_id))
            if account is None or account.totp_secret_encrypted is None:
                raise ApplicationError("no authenticator secret to check against",
                                       non_retryable=True, type="AccountMissing")
            info = activity.info()
            # A retry runs after our worker failed, maybe a minute later: judge the code at the
            # time the person entered it (when this step was scheduled), not at the retry.
            at = info.scheduled_time if info.attempt > 1 else datetime.now(UTC)
            problem = await totp_accepted(session, self._keyring, account, code, at)
            if (problem == "replayed" and info.attempt > 1 and account.totp_last_step is not None
                    and matching_step(self._keyring.unseal(
                        account.totp_secret_encrypted, totp_aad(staff_id)).decode(), code, at)
                    == account.totp_last_step):
                # An earlier attempt of this very step accepted it; its answer was lost.
                problem = None
            if problem == "wrong":
                audit.record(session, actor=f"staff:{data.staff_id}", action="mfa.code_failed",
                             outcome="failure", target=data.staff_id, ip=data.ip)
            await session.commit()
        if problem == "wrong":
            return VerifyTotpResult(ok=False, message=(
                "That code didn't match. Check that the time on your phone is right and "
                "enter the newest code."))
        if problem is not None:
            return VerifyTotpResult(ok=False, message=(
                "That code has already been used. Wait for your app to show a new one."))
        return VerifyTotpResult(ok=True)

    @activity.defn(name="activate_account")
    async def activate_account(self, data: ActivateInput) -> None:
        now = utcnow()
        staff_id = uuid.UUID(data.staff_id)
        actor = f"staff:{data.staff_id}"
        async with self._sessions() as session:
            account = await session.scalar(select(SsoAccount).where(
                SsoAccount.staff_id == staff_id))
            if account is None:
                raise ApplicationError("no account for this setup", non_retryable=True,
                                       type="AccountMissing")
            setup = await session.get(SsoSetup, uuid.UUID(data.setup_id))
            retried = setup is not None and setup.state == SetupState.active.value
            account.status = AccountStatus.active.value
            account.activated_at = account.activated_at or now
            if data.mfa:
                account.mfa_enabled_at = account.mfa_enabled_at or now
            elif account.mfa_enabled_at is None:
                account.totp_secret_encrypted = None  # never enrolled: keep no secret around
            await _move_setup(session, data.setup_id, SetupState.active, now)
            if not retried:  # else a retry of an attempt that committed: recorded already
                audit.record(session, actor=actor,
                             action="mfa.enrolled" if data.mfa else "mfa.skipped",
                             outcome="success", target=data.staff_id, ip=data.ip,
                             workflow_id=data.workflow_id)
                audit.record(session, actor=actor, action="sso_setup.active", outcome="success",
                             target=data.staff_id, ip=data.ip, workflow_id=data.workflow_id,
                             mfa=data.mfa)
            await session.commit()

    @activity.defn(name="record_audit")
    async def record_audit(self, data: AuditInput) -> None:
        await self._audit(data)

    async def _audit(self, data: AuditInput) -> None:
        async with self._sessions() as session:
            audit.record(session, actor=data.actor, action=data.action, outcome=data.outcome,
                         target=data.target, ip=data.ip, **data.details)
            await session.commit()


async def _move_setup(session: AsyncSession, setup_id: str, state: SetupState, now: datetime,
                      only_from: set[SetupState] | None = None) -> bool:
    """Whether the setup moved (it only moves from the `only_from` states)."""
    allowed = only_from or set(OPEN_SETUP_STATES)
    moved = await session.execute(
        update(SsoSetup)
        .where(SsoSetup.id == uuid.UUID(setup_id),
               SsoSetup.state.in_([s.value for s in allowed]))
        .values(state=state.value, state_since=now))
    return bool(moved.rowcount == 1)  # type: ignore[attr-defined]
