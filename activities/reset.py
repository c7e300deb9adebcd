"""Activities of the password reset flow: store the new password, tell the person."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.base import SecretActivities
from activities.inputs import (
    NoticeInput,
    ResetPasswordInput,
    ResetPasswordResult,
    SendResetLinkInput,
    SendResetLinkResult,
    WrongResetCodeInput,
    WrongResetCodeResult,
)
from activities.send_requests import AttemptClock
from activities.setup_email import ttl_words
from core import audit, flow_errors, passkeys
from core.accounts import account_for, revoke_sessions, second_factor_accepted
from core.crypto import new_token
from core.models import AccountStatus, ResetLink, SsoAccount, Staff, utcnow
from core.oidc import logout_outbox
from core.oidc.backchannel import logouts_due
from core.org_suspension import suspended_org_name
from core.passwords import PasswordPolicy, password_problems, personal_words
from core.reset_caps import (
    CODES_STOPPED,
    LINK_GONE,
    CodeCaps,
    codes_stopped,
    count_wrong_code,
    reset_link_hash,
)
from core.sealing import password_context, totp_context
from core.times import email_at

NEED_TOTP = "Your account uses MFA: also enter the current code from your authenticator app."
NEED_PASSKEY = (
    "Your account uses a passkey: also confirm it's you with your passkey, or enter a recovery code."
)
PASSKEY_AGAIN = "We couldn't confirm your passkey in time. Use your passkey again, or enter a recovery code."
WRONG_TOTP = "That authenticator code didn't match. Check the time on your phone and enter the newest code."


class ResetActivities(SecretActivities):
    @activity.defn(name="reset_password")
    async def reset_password(self, data: ResetPasswordInput) -> ResetPasswordResult:
        """Check the password rules, then the second factor (when the person has one: the
        authenticator code or a recovery code, or the proof of a passkey the web app checked);
        store the new hash, clear any lockout and sign out every session in one transaction."""
        password = self._unseal(data.sealed_password, password_context(data.workflow_id))
        account_id = uuid.UUID(data.account_id)
        async with self._sessions() as session:
            # Before anything that could tell a right code from a wrong one.
            if data.code_flow is not None and await codes_stopped(
                session, CodeCaps(data.account_id, data.code_flow, data.flow_limit, data.day_limit), utcnow()
            ):
                return ResetPasswordResult(ok=False, message=CODES_STOPPED, codes_stopped=True)
            if data.link_digest is not None and not await _link_usable(
                session, account_id, data.link_digest, utcnow()
            ):
                return ResetPasswordResult(ok=False, message=LINK_GONE)
            account = await session.get(SsoAccount, account_id)
            staff = await session.get(Staff, uuid.UUID(data.staff_id))
            if (
                account is None
                or staff is None
                or account.status != AccountStatus.active.value
                or await suspended_org_name(session, staff.id) is not None
            ):
                raise ApplicationError(
                    "account is not active", non_retryable=True, type=flow_errors.ACCOUNT_MISSING
                )
            personal = personal_words(
                staff.first_name, staff.last_name, staff.external_email_1, self._settings.brand_name
            )
            mfa = account.mfa_enabled_at is not None
            keys = await passkeys.count(session, account_id)
        if (mfa or keys) and not data.sealed_totp and not data.passkey_proof:
            return ResetPasswordResult(ok=False, message=NEED_TOTP if mfa else NEED_PASSKEY)
        # The password rules first: a refused password must not use up the authenticator code.
        policy = PasswordPolicy(min_length=self._settings.password_min_length)
        problems = await asyncio.to_thread(password_problems, password, policy, personal)
        if problems:
            return ResetPasswordResult(ok=False, problems=problems)
        if (mfa or keys) and not data.passkey_proof:
            assert data.sealed_totp is not None
            code = self._unseal(data.sealed_totp, totp_context(data.workflow_id))
            async with self._sessions() as session:
                account = await session.get(SsoAccount, account_id)
                assert account is not None
                problem = await second_factor_accepted(
                    session,
                    self._keyring,
                    self._settings.secret_key.get_secret_value(),
                    account,
                    code,
                    datetime.now(UTC),
                    data.ip,
                )
                if problem is not None:
                    audit.by_staff(session, data.staff_id, "reset.totp_failed", outcome="failure", ip=data.ip)
                # Commit either way: an accepted step is stored so it can't be replayed.
                await session.commit()
            if problem is not None:
                return ResetPasswordResult(ok=False, message=WRONG_TOTP, totp_failed=True)
        password_hash = await self._hash(password)
        del password
        now = utcnow()
        async with self._sessions() as session:
            # Spent with the change itself: a proof works for one reset, and only its own.
            if data.passkey_proof is not None and not await passkeys.spend_proof(
                session, data.passkey_proof, uuid.UUID(data.staff_id), data.workflow_id, now
            ):
                audit.by_staff(session, data.staff_id, "reset.passkey_failed", outcome="failure", ip=data.ip)
                await session.commit()
                return ResetPasswordResult(ok=False, message=PASSKEY_AGAIN, totp_failed=True)
            if data.link_digest is not None:
                consumed = await session.execute(
                    update(ResetLink)
                    .where(
                        ResetLink.token_hash == data.link_digest,
                        ResetLink.account_id == account_id,
                        ResetLink.consumed_at.is_(None),
                        ResetLink.expires_at > now,
                    )
                    .values(consumed_at=now)
                )
                if consumed.rowcount != 1:  # type: ignore[attr-defined]
                    return ResetPasswordResult(ok=False, message=LINK_GONE)
                # One reset per email's worth of links: any other one dies with this use.
                await session.execute(
                    delete(ResetLink).where(
                        ResetLink.account_id == account_id, ResetLink.consumed_at.is_(None)
                    )
                )
            account = await session.get(SsoAccount, account_id)
            assert account is not None
            account.password_hash = password_hash
            account.failed_sign_ins = 0
            account.locked_until = None
            ended = await revoke_sessions(session, account.staff_id, now)
            logouts = await logouts_due(self._settings, session, ended)
            # Owed with the reset: the flow starts them from this result, and should this
            # attempt's result be lost after the commit, the retry finds no session left to
            # end but the outbox's sweeper still starts them.
            await logout_outbox.queue(session, logouts)
            audit.by_staff(
                session,
                data.staff_id,
                "reset.completed",
                ip=data.ip,
                sessions_revoked=len(ended),
                workflow_id=data.workflow_id,
                **({"via": "link"} if data.link_digest is not None else {}),
                **({"second_factor": "passkey"} if data.passkey_proof is not None else {}),
            )
            await session.commit()
        return ResetPasswordResult(ok=True, logouts=logouts)

    @activity.defn(name="count_wrong_reset_code")
    async def count_wrong_reset_code(self, data: WrongResetCodeInput) -> WrongResetCodeResult:
        """A wrong reset code: counted against the flow's and the account's caps, and audited."""
        async with self._sessions() as session:
            counted = await count_wrong_code(
                session, CodeCaps(data.account_id, data.flow, data.flow_limit, data.day_limit), utcnow()
            )
            audit.by_staff(
                session,
                data.staff_id,
                "code.failed",
                outcome="failure",
                ip=data.ip,
                attempts_left=str(data.attempts_left),
                purpose="reset",
                codes_stopped=counted.stopped,
            )
            await session.commit()
        return WrongResetCodeResult(counted=counted.counted, stopped=counted.stopped)

    @activity.defn(name="send_reset_link")
    async def send_reset_link(self, data: SendResetLinkInput) -> SendResetLinkResult:
        """A single-use reset link (256 random bits, only its keyed hash stored) in place of a
        code, once codes stop for the account. Minted once per send request: a retried
        attempt emails the same link (both copies work), and using it ends every link of the
        account. Its lifetime counts from the hand-over to the mail server."""
        clock = AttemptClock()
        ttl = timedelta(seconds=data.link_ttl_seconds)
        staff_id = uuid.UUID(data.staff_id)
        async with self._sessions() as session:
            staff = await self._staff(session, staff_id)
            claim = await self._requests.claim(session, "password_reset_link", staff_id, new_token)
            if claim.accepted:
                # An earlier attempt's email was accepted and recorded; its answer was lost.
                assert claim.row.accepted_at is not None
                return SendResetLinkResult(
                    sent_at=claim.row.accepted_at, expires_at=claim.row.accepted_at + ttl
                )
            digest = reset_link_hash(self._settings.secret_key.get_secret_value(), claim.secret)
            if claim.minted:
                session.add(
                    ResetLink(
                        account_id=uuid.UUID(data.account_id),
                        workflow_id=data.workflow_id,
                        token_hash=digest,
                        expires_at=clock.now() + ttl,
                        created_at=utcnow(),
                    )
                )
            self._requests.hand_over(claim)
            email = await self._email_to(
                staff,
                "password_reset_link",
                link=f"{self._settings.public_url}/sso/reset/link/{claim.secret}",
                ttl_words=ttl_words(data.link_ttl_seconds),
            )
            await session.commit()

        async def record(session: AsyncSession, sent_at: datetime) -> None:
            await session.execute(
                update(ResetLink).where(ResetLink.token_hash == digest).values(expires_at=sent_at + ttl)
            )
            audit.by_system(session, data.staff_id, "reset.link_issued", workflow_id=data.workflow_id)

        sent_at = await self._deliver(claim, email, clock, record)
        return SendResetLinkResult(sent_at=sent_at, expires_at=sent_at + ttl)

    @activity.defn(name="send_password_changed")
    async def send_password_changed(self, data: NoticeInput) -> None:
        async with self._sessions() as session:
            staff = await session.get(Staff, uuid.UUID(data.staff_id))
            account = await account_for(session, uuid.UUID(data.staff_id))
        if staff is None:
            return
        email = await self._email_to(
            staff,
            "password_changed",
            login_email=account.login_email if account is not None else staff.external_email_1,
            changed_at=email_at(data.changed_at, self._settings.zone),
            kept_this_browser=data.kept_this_browser,
        )
        await self._notify("password_changed", staff.id, email)


async def _link_usable(session: AsyncSession, account_id: uuid.UUID, digest: str, now: datetime) -> bool:
    link = await session.scalar(select(ResetLink).where(ResetLink.token_hash == digest))
    return bool(
        link is not None
        and link.account_id == account_id
        and link.consumed_at is None
        and link.expires_at > now
    )
