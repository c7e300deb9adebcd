"""A signed-in person's own sign-in settings: MFA set up later, recovery codes, MFA off
(passkeys: api/services/passkeys.py).

Every change is audited and emailed to the person (a notice flow retries the email), so a
takeover that adds or removes a factor does not go unnoticed.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.exceptions import WorkflowAlreadyStartedError

from api.services import authenticator
from api.services.flows import FlowClient
from api.services.mfa_obligation import second_factor_added
from api.services.page_steps import PageSteps
from api.services.signin import Hashing
from api.services.temporal import email_retry
from core import audit, passkeys, recovery
from core.accounts import (
    account_for,
    claim_attempt,
    release_attempt,
    remove_second_factors,
    totp_accepted,
)
from core.codec import keyring_from_settings
from core.errors import ServiceUnavailable
from core.mfa_policy import policy_for
from core.models import AccountStatus, Passkey, SsoAccount, Staff, utcnow
from core.orgs import org_of
from core.search_attributes import flow_attributes
from core.settings import MfaPolicy, Settings
from workflows.notices import MfaChangedNoticeWorkflow, MfaNoticeInput, MfaNoticeStart

logger = logging.getLogger(__name__)
# Recovery codes left at which the person is told to make a new set.
CODES_LOW = 2


@dataclass
class Standing:
    """What the account page says about the person's second factor."""

    account: SsoAccount | None
    codes_left: int = 0
    required: bool = False
    passkeys: list[Passkey] = field(default_factory=list)

    @property
    def totp_on(self) -> bool:
        return self.account is not None and self.account.mfa_enabled_at is not None

    @property
    def mfa_on(self) -> bool:
        """An authenticator app or a passkey."""
        return self.totp_on or bool(self.passkeys)

    @property
    def can_add_passkey(self) -> bool:
        """Like the authenticator: only a password account that is active."""
        return (
            self.account is not None
            and self.account.status == AccountStatus.active.value
            and self.account.password_hash is not None
        )

    @property
    def can_enrol(self) -> bool:
        """Only a password account that is active (a Microsoft-only person has none)."""
        return self.can_add_passkey and not self.totp_on

    @property
    def can_turn_off(self) -> bool:
        return self.mfa_on and not self.required


@dataclass
class AccountSteps(PageSteps):
    hashing: Hashing

    async def standing(self, staff: Staff) -> Standing:
        account = await self.db.scalar(select(SsoAccount).where(SsoAccount.staff_id == staff.id))
        must = await policy_for(self.db, staff, self.settings) is MfaPolicy.required
        if account is None:
            return Standing(account, required=must)
        keys = await passkeys.of_account(self.db, account.id)
        if account.mfa_enabled_at is None and not keys:
            return Standing(account, required=must)
        return Standing(account, await recovery.left(self.db, account.id), must, keys)

    def enrolment(self, account: SsoAccount) -> dict[str, Any]:
        """The setup_mfa page's values; the secret is kept, sealed, until the person finishes."""
        authenticator.ensure_secret(self.settings, account)
        return authenticator.page_values(self.settings, account)

    async def enrol(self, account: SsoAccount, code: str, ip: str | None) -> list[str] | None:
        """MFA on with the app's first code, and the recovery codes to show once; None when the
        code is wrong or was used already."""
        now = utcnow()
        problem = await totp_accepted(self.db, keyring_from_settings(self.settings), account, code, now)
        staff_id = str(account.staff_id)
        if problem is not None:
            audit.by_staff(self.db, staff_id, "mfa.code_failed", outcome="failure", ip=ip, reason=problem)
            return None
        await self.db.refresh(account)
        account.mfa_enabled_at = now
        codes = await recovery.issue(self.db, self._secret, account.id, now)
        audit.by_staff(self.db, staff_id, "mfa.enrolled", ip=ip, via="account")
        await self._notify(account.staff_id, "enrolled")
        await second_factor_added(self.settings, self.temporal, account.staff_id)
        return codes

    async def new_recovery_codes(self, account: SsoAccount, ip: str | None) -> list[str]:
        codes = await recovery.issue(self.db, self._secret, account.id, utcnow())
        audit.by_staff(self.db, str(account.staff_id), "mfa.recovery_codes_issued", ip=ip, via="account")
        await self._notify(account.staff_id, "recovery_codes")
        return codes

    async def turn_off(self, standing: Standing, password: str, ip: str | None) -> bool:
        """MFA off after the current password, counted like a sign-in attempt (a stolen
        session must not guess its way to removing the factor); False when refused."""
        account = standing.account
        assert account is not None and standing.can_turn_off
        if not await self.password_again(account, password, ip, "mfa.remove_failed"):
            return False
        staff_id = str(account.staff_id)
        await remove_second_factors(self.db, account)
        audit.by_staff(self.db, staff_id, "mfa.removed", ip=ip, via="account")
        await self._notify(account.staff_id, "removed")
        return True

    async def password_again(self, account: SsoAccount, password: str, ip: str | None, refused: str) -> bool:
        """The current password, typed again for a change, counted like a sign-in attempt (a
        stolen session must not guess its way to the change); a refusal is audited as
        `refused`. The account is fresh from the database afterwards."""
        assert account.password_hash is not None
        claimed = await claim_attempt(self.db, account.id, utcnow())
        right = claimed is not None and await self.hashing.verify(account.password_hash, password)
        if claimed is None or not right:
            reason = "locked" if claimed is None else "wrong password"
            audit.by_staff(self.db, str(account.staff_id), refused, outcome="failure", ip=ip, reason=reason)
            return False
        await release_attempt(self.db, account.id, claimed)
        await self.db.refresh(account)
        return True

    async def _notify(self, staff_id: uuid.UUID, change: str) -> None:
        await MfaNotices(self.settings, self._flows).changed(
            staff_id, change, org_id=await org_of(self.db, staff_id)
        )


@dataclass
class MfaNotices:
    """ "Your Multi-Factor Authentication was changed", from the account page or an admin."""

    settings: Settings
    flows: FlowClient

    async def changed(
        self, staff_id: uuid.UUID, change: str, once: str | None = None, *, org_id: uuid.UUID | None
    ) -> None:
        """Started before the request commits: if Temporal can't take it, the change is not
        made either (ServiceUnavailable rolls the request back). `once`: what names the one
        email of its kind (a second start of it sends nothing)."""
        try:
            await self.flows.start(
                MfaChangedNoticeWorkflow.run,
                MfaNoticeStart(
                    MfaNoticeInput(staff_id=str(staff_id), change=change, changed_at=utcnow()),
                    email_retry(self.settings),
                ),
                id=f"mfa-changed-{staff_id}-{once or uuid.uuid4()}",
                search_attributes=flow_attributes(org_id=org_id, staff_id=staff_id),
                static_summary="Email: your Multi-Factor Authentication was changed",
                once=once is not None,
            )
        except WorkflowAlreadyStartedError:
            if once is None:
                raise

    async def codes_low(self, db: AsyncSession, staff_id: uuid.UUID | None, typed: str) -> None:
        """After a sign-in or reset took `typed` as its second factor: when that was a recovery
        code and two or fewer are left, the person is told, once per set (the email never holds
        a code). What was done stands if Temporal can't take the email."""
        if staff_id is None or recovery.normalise(typed) is None:
            return
        account = await account_for(db, staff_id)
        if (
            account is None
            or account.mfa_enabled_at is None
            or await recovery.left(db, account.id) > CODES_LOW
        ):
            return
        made_at = await recovery.set_made_at(db, account.id)
        if made_at is None:
            return
        try:
            once = f"codes-low-{made_at:%Y%m%d%H%M%S%f}"
            await self.changed(staff_id, "codes_low", once, org_id=await org_of(db, staff_id))
        except ServiceUnavailable:
            logger.warning("recovery codes running low: notice not started for %s", staff_id)
