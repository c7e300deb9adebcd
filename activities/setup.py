"""Activities behind the setup pages: password, emailed code, authenticator, activation."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.base import SecretActivities
from activities.inputs import (
    ActivateInput,
    AuditInput,
    StaffStepInput,
    StorePasswordInput,
    StorePasswordResult,
    VerifyTotpInput,
    VerifyTotpResult,
)
from core import audit, flow_errors
from core.accounts import ACCOUNT_DISABLED, totp_accepted
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
from core.org_suspension import suspended_message, suspended_org_name
from core.passwords import PasswordPolicy, password_problems, personal_words
from core.sealing import password_context, totp_context
from core.totp import matching_step, new_secret, totp_aad

LINK_GONE = "This link is no longer valid. Ask your administrator to send you a new Single Sign-On email."


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
            if staff.disabled_at is not None:  # disabled while the setup was ending
                return StorePasswordResult(ok=False, message=ACCOUNT_DISABLED)
            if (org_name := await suspended_org_name(session, staff_id)) is not None:
                return StorePasswordResult(
                    ok=False, message=suspended_message(org_name, self._settings.brand_name)
                )
            if link.consumed_at is not None:
                # A retry of an attempt that already committed: same browser, same answer.
                bound = await session.get(BrowserSession, data.session_hash)
                if bound is not None and bound.run_id == data.run_id:
                    return StorePasswordResult(ok=True)
                return StorePasswordResult(ok=False, message=LINK_GONE)
            personal = personal_words(
                staff.first_name, staff.last_name, staff.external_email_1, self._settings.brand_name
            )
            login_email = staff.external_email_1
        policy = PasswordPolicy(min_length=self._settings.password_min_length)
        problems = await asyncio.to_thread(password_problems, password, policy, personal)
        if problems:
            await self._audit(
                AuditInput(
                    "staff:" + data.staff_id,
                    "sso_setup.password_rejected",
                    "failure",
                    data.staff_id,
                    ip=data.ip,
                )
            )
            return StorePasswordResult(ok=False, problems=problems)
        password_hash = await self._hash(password)
        del password

        now = utcnow()
        async with self._sessions() as session:
            consumed = await session.execute(
                update(SetupLink)
                .where(
                    SetupLink.id == uuid.UUID(data.link_id),
                    SetupLink.consumed_at.is_(None),
                    SetupLink.revoked_at.is_(None),
                    SetupLink.expires_at > now,
                )
                .values(consumed_at=now)
            )
            if consumed.rowcount != 1:  # type: ignore[attr-defined]
                # An earlier attempt of this step, still running when Temporal gave up on
                # its worker, may have committed while this one hashed: same browser, done.
                bound = await session.get(BrowserSession, data.session_hash)
                if bound is not None and bound.run_id == data.run_id:
                    return StorePasswordResult(ok=True)
                return StorePasswordResult(ok=False, message=LINK_GONE)
            account = await session.scalar(select(SsoAccount).where(SsoAccount.staff_id == staff_id))
            if account is None:
                account = SsoAccount(staff_id=staff_id, login_email=login_email)
                session.add(account)
            account.password_hash = password_hash
            if account.status != AccountStatus.disabled.value:
                account.status = AccountStatus.pending.value
            session.add(
                BrowserSession(
                    id_hash=data.session_hash,
                    staff_id=staff_id,
                    purpose="setup",
                    workflow_id=data.workflow_id,
                    run_id=data.run_id,
                    expires_at=now + timedelta(seconds=data.session_ttl_seconds),
                )
            )
            await move_setup(session, data.setup_id, SetupState.password_set, now)
            _record_step(session, data, "sso_setup.password_set")
            await session.commit()
        return StorePasswordResult(ok=True)

    @activity.defn(name="record_link_opened")
    async def record_link_opened(self, data: StaffStepInput) -> None:
        """The person opened the password form from their link (which stays unconsumed):
        the setup shows `link_opened`, recorded once (a retry, or a step already past it,
        changes nothing)."""
        async with self._sessions() as session:
            moved = await move_setup(
                session, data.setup_id, SetupState.link_opened, utcnow(), only_from={SetupState.email_sent}
            )
            if moved:
                _record_step(session, data, "sso_setup.link_opened")
            await session.commit()

    @activity.defn(name="confirm_email")
    async def confirm_email(self, data: StaffStepInput) -> None:
        """The code matched: the address is verified; prepare the authenticator secret."""
        now = utcnow()
        staff_id = uuid.UUID(data.staff_id)
        async with self._sessions() as session:
            account = await _account(session, staff_id)
            # A retry of an attempt that committed (its worker died before Temporal heard):
            # the step is done; record it once.
            retried = await _setup_at(session, data.setup_id, SetupState.mfa_pending)
            account.verified_at = account.verified_at or now
            if account.totp_secret_encrypted is None:
                # Only when there is none: a retried activity must not change the QR code.
                secret = new_secret()
                account.totp_secret_encrypted = self._keyring.seal(secret.encode(), totp_aad(staff_id))
                account.totp_last_step = None
            await move_setup(session, data.setup_id, SetupState.mfa_pending, now)
            if not retried:
                _record_step(session, data, "sso_setup.email_confirmed")
            await session.commit()

    @activity.defn(name="verify_totp")
    async def verify_totp(self, data: VerifyTotpInput) -> VerifyTotpResult:
        code = self._unseal(data.sealed_code, totp_context(data.workflow_id)).strip()
        staff_id = uuid.UUID(data.staff_id)
        async with self._sessions() as session:
            account = await _account(session, staff_id, needs_secret=True)
            assert account.totp_secret_encrypted is not None
            info = activity.info()
            # A retry runs after our worker failed, maybe a minute later: judge the code at the
            # time the person entered it (when this step was scheduled), not at the retry.
            at = info.scheduled_time if info.attempt > 1 else datetime.now(UTC)
            problem = await totp_accepted(session, self._keyring, account, code, at)
            if (
                problem == "replayed"
                and info.attempt > 1
                and account.totp_last_step is not None
                and matching_step(
                    self._keyring.unseal(account.totp_secret_encrypted, totp_aad(staff_id)).decode(), code, at
                )
                == account.totp_last_step
            ):
                # An earlier attempt of this very step accepted it; its answer was lost.
                problem = None
            if problem == "wrong":
                audit.by_staff(session, data.staff_id, "mfa.code_failed", outcome="failure", ip=data.ip)
            await session.commit()
        if problem == "wrong":
            return VerifyTotpResult(
                ok=False,
                message=(
                    "That code didn't match. Check that the time on your phone is right and "
                    "enter the newest code."
                ),
            )
        if problem is not None:
            return VerifyTotpResult(
                ok=False, message=("That code has already been used. Wait for your app to show a new one.")
            )
        return VerifyTotpResult(ok=True)

    @activity.defn(name="activate_account")
    async def activate_account(self, data: ActivateInput) -> None:
        now = utcnow()
        async with self._sessions() as session:
            account = await _account(session, uuid.UUID(data.staff_id))
            # Else a retry of an attempt that committed: recorded already.
            retried = await _setup_at(session, data.setup_id, SetupState.active)
            if account.status == AccountStatus.disabled.value:
                # Disabled while the setup was ending: active once enabled, not before.
                account.status_before_disable = AccountStatus.active.value
            else:
                account.status = AccountStatus.active.value
            account.activated_at = account.activated_at or now
            if data.mfa:
                account.mfa_enabled_at = account.mfa_enabled_at or now
            elif account.mfa_enabled_at is None:
                account.totp_secret_encrypted = None  # never enrolled: keep no secret around
            await move_setup(session, data.setup_id, SetupState.active, now)
            if not retried:
                _record_step(session, data, "mfa.enrolled" if data.mfa else "mfa.skipped")
                _record_step(session, data, "sso_setup.active", mfa=data.mfa)
            await session.commit()


async def move_setup(
    session: AsyncSession,
    setup_id: str,
    state: SetupState,
    now: datetime,
    only_from: set[SetupState] | None = None,
) -> bool:
    """Whether the setup moved (it only moves from the `only_from` states)."""
    allowed = only_from or set(OPEN_SETUP_STATES)
    moved = await session.execute(
        update(SsoSetup)
        .where(SsoSetup.id == uuid.UUID(setup_id), SsoSetup.state.in_([s.value for s in allowed]))
        .values(state=state.value, state_since=now)
    )
    return bool(moved.rowcount == 1)  # type: ignore[attr-defined]


async def _account(session: AsyncSession, staff_id: uuid.UUID, needs_secret: bool = False) -> SsoAccount:
    """The account this setup made; without it (or its authenticator secret, when the step
    needs one) no retry can succeed."""
    account = await session.scalar(select(SsoAccount).where(SsoAccount.staff_id == staff_id))
    if account is None or (needs_secret and account.totp_secret_encrypted is None):
        why = "no authenticator secret to check against" if needs_secret else "no account for this setup"
        raise ApplicationError(why, non_retryable=True, type=flow_errors.ACCOUNT_MISSING)
    return account


async def _setup_at(session: AsyncSession, setup_id: str, state: SetupState) -> bool:
    setup = await session.get(SsoSetup, uuid.UUID(setup_id))
    return setup is not None and setup.state == state.value


def _record_step(
    session: AsyncSession,
    data: StorePasswordInput | StaffStepInput | ActivateInput,
    action: str,
    **details: Any,
) -> None:
    """A setup step the person took, with the flow it belongs to."""
    audit.by_staff(session, data.staff_id, action, ip=data.ip, workflow_id=data.workflow_id, **details)
