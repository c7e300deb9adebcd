"""Signing in with email and password, then the second factor (authenticator code or
passkey) when the person has one.

Unknown, wrong, locked and not-yet-active accounts all get the same answer after the same
work (one argon2 verification, against a stand-in hash when there is no real one).
"""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api.services.entra_state import microsoft_refusal
from core import audit, metrics, passkeys
from core.accounts import (
    MAX_FAILURES,
    claim_attempt,
    lock_delay,
    release_attempt,
    second_factor_accepted,
)
from core.addresses import rate_key
from core.codec import keyring_from_settings
from core.models import AccountStatus, SsoAccount, Staff, utcnow
from core.org_suspension import suspended_org_name
from core.orgs import metrics_org
from core.passwords import Hasher
from core.settings import Settings
from core.throttle import Counter

IP_WINDOW = timedelta(minutes=15)
MFA_WINDOW = timedelta(minutes=5)
MFA_ATTEMPTS = 5

Outcome = Literal[
    "signed_in", "needs_totp", "refused", "throttled", "restart", "disabled", "suspended", "entra_disabled"
]


@dataclass
class Hashing:
    """argon2 off the event loop, in a pool of one low-priority thread per core; one stand-in
    hash."""

    hasher: Hasher
    pool: ThreadPoolExecutor
    stand_in: str

    async def verify(self, stored: str | None, password: str) -> bool:
        return await asyncio.get_running_loop().run_in_executor(
            self.pool, self.hasher.verify, stored or self.stand_in, password
        )

    async def hash(self, password: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(self.pool, self.hasher.hash, password)


@dataclass
class SignInResult:
    outcome: Outcome
    account: SsoAccount | None = None
    retry_after: int | None = None
    # "suspended": the name of the person's organisation, for the page that says so.
    org_name: str | None = None


@dataclass
class SignIn:
    settings: Settings
    db: AsyncSession
    hashing: Hashing
    counter: Counter

    async def password(self, email: str, password: str, ip: str | None) -> SignInResult:
        ip_key = f"signin-ip:{rate_key(ip)}"
        # Counted as a failure first, taken back if it is not one: see Counter.undo.
        wait = await self.counter.hit(ip_key, self.settings.signin_ip_limit, IP_WINDOW)
        if wait is not None:
            await self.counter.undo(ip_key, IP_WINDOW)
            metrics.sign_in("throttled")
            return SignInResult("throttled", retry_after=wait)
        address = email.strip().lower()
        # No address holds NUL (PostgreSQL text can't): such input is an unknown address.
        account = (
            await self.db.scalar(select(SsoAccount).where(SsoAccount.login_email == address))
            if address and "\x00" not in address
            else None
        )
        now = utcnow()
        org = await metrics_org(self.db, account.staff_id if account is not None else None)
        usable = (
            account is not None
            and account.status == AccountStatus.active.value
            and account.password_hash is not None
        )
        # The attempt counts as failed before the password is checked: see claim_attempt.
        claimed = await claim_attempt(self.db, account.id, now) if account is not None and usable else None
        right = await self.hashing.verify(account.password_hash if account else None, password)
        if right and account is not None and account.status == AccountStatus.disabled.value:
            # Said only to whoever knows the password, as the Microsoft-Entra button says it.
            self._failed(account, ip, "account_disabled")
            await self.db.flush()
            metrics.sign_in("refused", "account_disabled", org=org)
            return SignInResult("disabled")
        if right and claimed is not None and account is not None:
            suspended = await self._suspended(account, ip, org)
            if suspended is not None:
                await release_attempt(self.db, account.id, claimed)
                await self.db.flush()
                return suspended
        if account is None or claimed is None or not right:
            reason = _reason(account, usable, claimed)
            self._failed(account, ip, reason)
            if account is not None and claimed is not None:
                self._locked_out(account, claimed, ip)
            await self.db.flush()
            metrics.sign_in("refused", reason, org=org)
            return SignInResult("refused")
        await self.counter.undo(ip_key, IP_WINDOW)
        await self.db.refresh(account)
        assert account.password_hash is not None
        refusal = await microsoft_refusal(self.db, self.settings, account.staff_id)
        if refusal is not None:
            # The right password, but the organisation ended the person's Microsoft account:
            # refused as the Microsoft-Entra button refuses it (not counted towards a lock).
            await release_attempt(self.db, account.id, claimed)
            self._failed(account, ip, f"entra_account_{refusal}")
            await self.db.flush()
            metrics.sign_in("refused", "entra_account_disabled", org=org)
            return SignInResult("entra_disabled", account)
        if self.hashing.hasher.needs_rehash(account.password_hash):
            # Parameters were raised since this hash was made: upgrade it while we can.
            account.password_hash = await self.hashing.hash(password)
        if await passkeys.has_second_factor(self.db, account):
            await release_attempt(self.db, account.id, claimed)
            await self.db.flush()
            metrics.sign_in("needs_totp", org=org)
            return SignInResult("needs_totp", account)
        self._succeeded(account, now, ip, mfa=False)
        await self.db.flush()
        metrics.sign_in("signed_in", org=org)
        return SignInResult("signed_in", account)

    async def totp(self, staff_id: object, code: str, ip: str | None, attempts: int) -> SignInResult:
        account = await self.db.scalar(select(SsoAccount).where(SsoAccount.staff_id == staff_id))
        now = utcnow()
        org = await metrics_org(self.db, account.staff_id if account is not None else None)
        if account is not None and account.status == AccountStatus.disabled.value:
            return SignInResult("disabled")  # disabled between the password and the code
        if account is not None and (suspended := await self._suspended(account, ip, org)) is not None:
            await self.db.flush()
            return suspended  # suspended between the password and the code
        if account is None or account.status != AccountStatus.active.value or attempts >= MFA_ATTEMPTS:
            metrics.sign_in("totp_restart", org=org)
            return SignInResult("restart")
        # Counted before the code is checked, like a password: see claim_attempt.
        claimed = await claim_attempt(self.db, account.id, now)
        if claimed is None:
            metrics.sign_in("totp_restart", org=org)
            return SignInResult("restart")
        await self.db.refresh(account)
        problem = await second_factor_accepted(
            self.db,
            keyring_from_settings(self.settings),
            self.settings.secret_key.get_secret_value(),
            account,
            code,
            datetime.now(UTC),
            ip,
        )
        if problem is not None:
            record_own(self.db, account.staff_id, "sign_in.totp_failed", "failure", ip, reason=problem)
            self._locked_out(account, claimed, ip)
            await self.db.flush()
            metrics.sign_in("totp_refused", problem.replace(" ", "_"), org=org)
            return SignInResult("refused", account)
        self._succeeded(account, now, ip, mfa=True)
        await self.db.flush()
        metrics.sign_in("totp_signed_in", org=org)
        return SignInResult("signed_in", account)

    async def _suspended(self, account: SsoAccount, ip: str | None, org: str | None) -> SignInResult | None:
        """Said, like a disable, only to whoever proved who they are."""
        name = await suspended_org_name(self.db, account.staff_id)
        if name is None:
            return None
        self._failed(account, ip, "org_suspended")
        metrics.sign_in("refused", "org_suspended", org=org)
        return SignInResult("suspended", org_name=name)

    def _failed(self, account: SsoAccount | None, ip: str | None, reason: str) -> None:
        audit.record(
            self.db,
            actor=f"ip:{ip}",
            action="sign_in.failed",
            outcome="failure",
            target=str(account.staff_id) if account else None,
            ip=ip,
            reason=reason,
        )

    def _locked_out(self, account: SsoAccount, failures: int, ip: str | None) -> None:
        """Records the lock this failure set (claim_attempt sets one per counted failure
        from the fifth on, and none while one lasts): each lock-out once, with its IP."""
        details: dict[str, Any]
        if failures == MAX_FAILURES:
            action = "sign_in.locked_out"
            details = {"detail": "too many failures in a row; a password reset unlocks"}
        elif (delay := lock_delay(failures)) is not None:
            action = "sign_in.locked_temporarily"
            details = {
                "failures": failures,
                "seconds": int(delay.total_seconds()),
                "detail": "failures in a row; sign-in waits before the next try",
            }
        else:
            return
        audit.record(
            self.db,
            actor="system",
            action=action,
            outcome="locked",
            target=str(account.staff_id),
            ip=ip,
            **details,
        )

    def _succeeded(self, account: SsoAccount, now: datetime, ip: str | None, mfa: bool) -> None:
        succeeded(self.db, account, now, ip, mfa=mfa)

    async def staff(self, account: SsoAccount) -> Staff | None:
        return await self.db.get(Staff, account.staff_id)


def succeeded(db: AsyncSession, account: SsoAccount, now: datetime, ip: str | None, **details: Any) -> None:
    """A sign-in went through: the failures before it are forgiven, and it is recorded."""
    account.failed_sign_ins = 0
    account.locked_until = None
    account.last_sign_in_at = now
    record_own(db, account.staff_id, "sign_in.success", "success", ip, **details)


def record_own(
    db: AsyncSession, staff_id: uuid.UUID, action: str, outcome: str, ip: str | None, **details: Any
) -> None:
    """An event of a person's own sign-in: they are its actor and its target."""
    audit.record(
        db, actor=f"staff:{staff_id}", action=action, outcome=outcome, target=str(staff_id), ip=ip, **details
    )


def _reason(account: SsoAccount | None, usable: bool, claimed: int | None) -> str:
    if account is None:
        return "unknown_account"
    if not usable:
        return "account_not_active"
    return "locked" if claimed is None else "wrong_password"


def safe_return_to(settings: Settings, value: str | None) -> str | None:
    """Only to our own sign-on and admin pages or configured places: exact URLs, or prefixes given with
    a trailing slash."""
    if not value or len(value) > 2000:
        return None
    if (
        value.startswith(("/sso/", "/admin/"))
        and "//" not in value
        and "\\" not in value
        and "/../" not in value
        and not any(ch.isspace() or ord(ch) < 32 for ch in value)
    ):
        return value
    for allowed in settings.allowed_return_urls:
        if value == allowed or (
            allowed.endswith("/") and value.startswith(allowed) and "/../" not in value and "\\" not in value
        ):
            return value
    return None
