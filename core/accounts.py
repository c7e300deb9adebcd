"""Account rules shared by the web app and the worker: TOTP acceptance, session revocation,
sign-in lockout."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core import audit, passkeys, recovery
from core.crypto import Keyring
from core.models import BrowserSession, OidcGrant, SsoAccount, Staff
from core.totp import matching_step, totp_aad

FREE_FAILURES = 5  # failed sign-ins before any delay
MAX_FAILURES = 100  # failed sign-ins in a row before only a password reset helps
MAX_DELAY = timedelta(minutes=15)
# "entra" too: a Microsoft sign-in started before a sign-out-everywhere must not finish; and
# "mfa_setup", a sign-in held until MFA is set up (api/routes/signin_mfa_setup.py).
MFA_SETUP_PURPOSE = "mfa_setup"
SIGNED_IN_PURPOSES = ("signin", "mfa", "entra", MFA_SETUP_PURPOSE)
# What a disabled person (a leaver) is told wherever they try to get in.
ACCOUNT_DISABLED = "Your staff login is disabled. Ask your administrator."


def mfa_required(staff: Staff) -> bool:
    """Whether this person must keep a second factor. Administrators always must (the admin
    pages need a strong sign-in); everyone else is under the default `optional` policy."""
    return staff.is_admin


async def remove_second_factors(session: AsyncSession, account: SsoAccount) -> None:
    """The authenticator secret, every passkey and every recovery code: nothing of the old
    factors is kept."""
    account.totp_secret_encrypted = None
    account.totp_last_step = None
    account.mfa_enabled_at = None
    await recovery.remove(session, account.id)
    await passkeys.remove_all(session, account.id)


def lock_delay(failures: int) -> timedelta | None:
    """1 s after the fifth failure, doubling, at most 15 minutes."""
    if failures < FREE_FAILURES:
        return None
    return min(timedelta(seconds=2 ** min(failures - FREE_FAILURES, 20)), MAX_DELAY)


def is_locked(account: SsoAccount, now: datetime) -> bool:
    return account.failed_sign_ins >= MAX_FAILURES or (
        account.locked_until is not None and account.locked_until > now
    )


async def claim_attempt(session: AsyncSession, account_id: uuid.UUID, now: datetime) -> int | None:
    """Counts one sign-in attempt as failed before its password or code is checked: the count
    it reached, or None when the account is locked. One guarded increment, so guesses sent
    together (to any web app instance) are weighed one at a time, and the lock the count
    calls for is set before the next one is. Commits; the caller then checks the secret and
    either keeps the failure or clears it (`release_attempt`, or a success resetting)."""
    await session.commit()  # a transaction of its own, holding the row only this long
    claimed = await session.scalar(
        update(SsoAccount)
        .where(
            SsoAccount.id == account_id,
            SsoAccount.failed_sign_ins < MAX_FAILURES,
            or_(SsoAccount.locked_until.is_(None), SsoAccount.locked_until <= now),
        )
        .values(failed_sign_ins=SsoAccount.failed_sign_ins + 1)
        .returning(SsoAccount.failed_sign_ins)
        .execution_options(synchronize_session=False)
    )
    if claimed is not None:
        delay = lock_delay(claimed)
        if delay is not None:
            await session.execute(
                update(SsoAccount)
                .where(SsoAccount.id == account_id)
                .values(locked_until=now + delay)
                .execution_options(synchronize_session=False)
            )
    await session.commit()
    return claimed


async def release_attempt(session: AsyncSession, account_id: uuid.UUID, claimed: int) -> None:
    """Takes back a claimed attempt whose password was right (the authenticator step comes
    next): the count as it was, and no lock, unless other attempts have been counted since."""
    released = await session.execute(
        update(SsoAccount)
        .where(SsoAccount.id == account_id, SsoAccount.failed_sign_ins == claimed)
        .values(failed_sign_ins=claimed - 1, locked_until=None)
        .execution_options(synchronize_session=False)
    )
    if released.rowcount != 1:  # type: ignore[attr-defined]
        await session.execute(
            update(SsoAccount)
            .where(SsoAccount.id == account_id, SsoAccount.failed_sign_ins > 0)
            .values(failed_sign_ins=SsoAccount.failed_sign_ins - 1)
            .execution_options(synchronize_session=False)
        )


async def totp_accepted(
    session: AsyncSession, keyring: Keyring, account: SsoAccount, code: str, now: datetime
) -> str | None:
    """None when the code is right and not seen before; otherwise why not."""
    if account.totp_secret_encrypted is None:
        return "no authenticator is set up"
    secret = keyring.unseal(account.totp_secret_encrypted, totp_aad(account.staff_id)).decode()
    step = matching_step(secret, code, now)
    if step is None:
        return "wrong"
    accepted = await session.execute(
        update(SsoAccount)
        .where(
            SsoAccount.id == account.id,
            or_(SsoAccount.totp_last_step.is_(None), SsoAccount.totp_last_step < step),
        )
        .values(totp_last_step=step)
    )
    return None if accepted.rowcount == 1 else "replayed"  # type: ignore[attr-defined]


async def second_factor_accepted(
    session: AsyncSession,
    keyring: Keyring,
    secret_key: str,
    account: SsoAccount,
    code: str,
    now: datetime,
    ip: str | None = None,
) -> str | None:
    """An authenticator code, or in its place one of the person's unused recovery codes: None
    when accepted, otherwise why not (as `totp_accepted`)."""
    if recovery.normalise(code) is None:
        return await totp_accepted(session, keyring, account, code, now)
    if not await passkeys.has_second_factor(session, account) or not await recovery.redeem(
        session, secret_key, account.id, code, now
    ):
        return "wrong recovery code"
    staff_id = str(account.staff_id)
    left = await recovery.left(session, account.id)
    audit.by_staff(session, staff_id, "mfa.recovery_code_used", ip=ip, left=left)
    return None


async def revoke_sessions(
    session: AsyncSession,
    staff_id: uuid.UUID,
    now: datetime,
    purposes: Iterable[str] = SIGNED_IN_PURPOSES,
    keep: str | None = None,
) -> list[BrowserSession]:
    """The sessions it ended: the apps that got tokens in them are to be told (back-channel
    logout). `keep`: the id hash of one session left alone ("sign out everywhere else")."""
    which = [
        BrowserSession.staff_id == staff_id,
        BrowserSession.revoked_at.is_(None),
        BrowserSession.purpose.in_(list(purposes)),
    ]
    grants = [OidcGrant.staff_id == staff_id]
    if keep is not None:
        which.append(BrowserSession.id_hash != keep)
        grants.append(OidcGrant.session_hash != keep)
    ended = list(await session.scalars(select(BrowserSession).where(*which)))
    for row in ended:
        row.revoked_at = now
    await session.flush()
    await end_session_grants(session, now, and_(*grants))
    return ended


async def end_session_grants(session: AsyncSession, now: datetime, which: ColumnElement[bool]) -> None:
    """Ending sign-in sessions ends what apps got in them: their grants, so refresh tokens and
    access tokens stop working. A browser session that only timed out keeps them."""
    await revoke_grants(session, now, which, OidcGrant.session_hash.is_not(None))


async def revoke_grants(session: AsyncSession, now: datetime, *which: ColumnElement[bool]) -> int:
    """Ends the grants `which` selects, and with each its access tokens and refresh token
    family; how many were still live."""
    result = await session.execute(
        update(OidcGrant).where(*which, OidcGrant.revoked_at.is_(None)).values(revoked_at=now)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def account_for(session: AsyncSession, staff_id: uuid.UUID) -> SsoAccount | None:
    return await session.scalar(select(SsoAccount).where(SsoAccount.staff_id == staff_id))


async def email_in_use(session: AsyncSession, email: str, staff_id: uuid.UUID, pending: bool = True) -> bool:
    """Someone other than `staff_id` has this address as their External Email 1 or sign-in
    email (or, with `pending`, as the new address a change of theirs waits to confirm)."""
    return await email_holder_org(session, email, staff_id, pending) is not None


async def email_holder_org(
    session: AsyncSession, email: str, staff_id: uuid.UUID, pending: bool = True
) -> uuid.UUID | None:
    """The organisation of whoever else holds this address (as `email_in_use` counts it), or
    None: free. Who may learn which organisation it is, is the caller's to decide."""
    held = [Staff.external_email_1 == email]
    if pending:
        held.append(Staff.pending_external_email_1 == email)
    holder = await session.scalar(select(Staff.org_id).where(or_(*held), Staff.id != staff_id).limit(1))
    if holder is not None:
        return holder
    return await session.scalar(
        select(Staff.org_id)
        .join(SsoAccount, SsoAccount.staff_id == Staff.id)
        .where(SsoAccount.login_email == email, SsoAccount.staff_id != staff_id)
        .limit(1)
    )
