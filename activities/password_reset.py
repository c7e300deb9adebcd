"""Activities of the password reset flow: store the new password, tell the person."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.base import SecretActivities
from activities.inputs import NoticeInput, ResetPasswordInput, ResetPasswordResult
from core import audit
from core.accounts import account_for, revoke_sessions, totp_accepted
from core.models import AccountStatus, SsoAccount, Staff, utcnow
from core.passwords import PasswordPolicy, password_problems, personal_words
from core.sealing import password_context, totp_context
from core.templating import render_email

NEED_TOTP = ("Your account uses MFA: also enter the current code from your authenticator app.")
WRONG_TOTP = ("That authenticator code didn't match. Check the time on your phone and enter "
              "the newest code.")


class ResetActivities(SecretActivities):
    @activity.defn(name="reset_password")
    async def reset_password(self, data: ResetPasswordInput) -> ResetPasswordResult:
        """Check the password rules, then the authenticator (when MFA is on); store the new
        hash, clear any lockout and sign out every session in one transaction."""
        password = self._unseal(data.sealed_password, password_context(data.workflow_id))
        account_id = uuid.UUID(data.account_id)
        actor = f"staff:{data.staff_id}"
        async with self._sessions() as session:
            account = await session.get(SsoAccount, account_id)
            staff = await session.get(Staff, uuid.UUID(data.staff_id))
            if account is None or staff is None or account.status != AccountStatus.active.value:
                raise ApplicationError("account is not active", non_retryable=True,
                                       type="AccountMissing")
            personal = personal_words(staff.first_name, staff.last_name,
                                      staff.external_email_1, self._settings.brand_name)
            mfa = account.mfa_enabled_at is not None
        if mfa and not data.sealed_totp:
            return ResetPasswordResult(ok=False, message=NEED_TOTP)
        # The password rules first: a refused password must not use up the authenticator code.
        policy = PasswordPolicy(min_length=self._settings.password_min_length)
        problems = await asyncio.to_thread(password_problems, password, policy, personal)
        if problems:
            return ResetPasswordResult(ok=False, problems=problems)
        if mfa:
            assert data.sealed_totp is not None
            code = self._unseal(data.sealed_totp, totp_context(data.workflow_id))
            async with self._sessions() as session:
                account = await session.get(SsoAccount, account_id)
                assert account is not None
                problem = await totp_accepted(session, self._keyring, account, code,
                                              datetime.now(UTC))
                if problem is not None:
                    audit.record(session, actor=actor, action="reset.totp_failed",
                                 outcome="failure", target=data.staff_id, ip=data.ip)
                # Commit either way: an accepted step is stored so it can't be replayed.
                await session.commit()
            if problem is not None:
                return ResetPasswordResult(ok=False, message=WRONG_TOTP, totp_failed=True)
        password_hash = await self._hash(password)
        del password
        now = utcnow()
        async with self._sessions() as session:
            account = await session.get(SsoAccount, account_id)
            assert account is not None
            account.password_hash = password_hash
            account.failed_sign_ins = 0
            account.locked_until = None
            revoked = await revoke_sessions(session, account.staff_id, now)
            audit.record(session, actor=actor, action="reset.completed", outcome="success",
                         target=data.staff_id, ip=data.ip, sessions_revoked=revoked,
                         workflow_id=data.workflow_id)
            await session.commit()
        return ResetPasswordResult(ok=True)

    @activity.defn(name="send_password_changed")
    async def send_password_changed(self, data: NoticeInput) -> None:
        async with self._sessions() as session:
            staff = await session.get(Staff, uuid.UUID(data.staff_id))
            account = await account_for(session, uuid.UUID(data.staff_id))
        if staff is None:
            return
        email = render_email(
            "password_changed", to=staff.external_email_1, brand=self._settings.brand_name,
            first_name=staff.first_name,
            login_email=account.login_email if account is not None else staff.external_email_1,
            changed_at=data.changed_at.strftime("%d %B %Y at %H:%M UTC"),
            support_email=self._settings.support_email)
        await self._notify("password_changed", staff.id, email)
