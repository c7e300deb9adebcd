"""Passkeys (WebAuthn): adding, renaming and removing them on the account page, and checking
one at sign-in (without a password, or as the second factor after it) and in a reset.

Challenges are made here, in the web app, never in a flow: 32 random bytes, kept only as a
keyed digest in a browser session of their own (the cookie binds them to the browser that
asked), for five minutes and one use. Every check the standard asks for is made by the
`webauthn` package (origin, relying party id, user verification, signature); the counter is
compared here, after the signature is known to be good, so only a real clone is audited as
one.
"""

from __future__ import annotations

import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import (
    base64url_to_bytes,
    bytes_to_base64url,
    parse_authentication_credential_json,
    parse_client_data_json,
    parse_registration_credential_json,
)
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    CredentialDeviceType,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from api.services.account import MfaNotices
from api.services.mfa_obligation import second_factor_added
from api.services.page_steps import PageSteps
from api.services.sessions import Sessions, session_hash
from api.services.signin import succeeded
from core import audit, metrics, passkeys, recovery
from core.accounts import ACCOUNT_DISABLED
from core.crypto import token_hash
from core.models import AccountStatus, BrowserSession, Passkey, SsoAccount, Staff, utcnow
from core.org_suspension import suspended_message, suspended_org_name
from core.orgs import metrics_org, org_of
from core.settings import Settings

CHALLENGE_TTL = timedelta(minutes=5)
CHALLENGE_PURPOSE = "passkey"
# register: the account page; signin: without a password; mfa: after the password; reset:
# after the emailed reset code.
CEREMONIES = ("register", "signin", "mfa", "reset")
MAX_PASSKEYS = 10
NAME_LENGTH = 60
TIMEOUT_MS = 120_000

NOT_VERIFIED = "That passkey didn't work. Try again, or use another way to sign in."
ALREADY_ADDED = "That passkey is already added."
TOO_MANY = f"You can add up to {MAX_PASSKEYS} passkeys. Remove one you no longer use first."
NOTICES = {
    "passkey_added": "Passkey added. We've emailed you to say so.",
    "passkey_renamed": "Passkey renamed.",
    "passkey_removed": "Passkey removed: it no longer signs you in. We've emailed you to say so.",
}
BAD_NAME = f"Give the passkey a name of up to {NAME_LENGTH} characters, such as Office PC."


class PasskeyRefused(Exception):
    """A passkey step that was refused: `message` for the page, `reason` for the audit log."""

    def __init__(self, reason: str, message: str = NOT_VERIFIED) -> None:
        super().__init__(reason)
        self.reason = reason
        self.message = message


class PasskeyOfDisabled(PasskeyRefused):
    """The passkey verified, but its owner is disabled (a leaver): they are told so plainly."""

    def __init__(self, reason: str = "account disabled", message: str = ACCOUNT_DISABLED) -> None:
        super().__init__(reason, message)


class PasskeyOfSuspended(PasskeyOfDisabled):
    """The passkey verified, but its owner's organisation is suspended: told whose sign-in
    is paused."""

    def __init__(self, org_name: str, brand: str) -> None:
        super().__init__("organisation suspended", suspended_message(org_name, brand))
        self.org_name = org_name


def relying_party(settings: Settings) -> tuple[str, str]:
    """The relying party id (the public URL's host) and the one origin accepted."""
    parts = urlsplit(settings.public_url)
    return parts.hostname or "localhost", f"{parts.scheme}://{parts.netloc}"


def amr_of(passkey: Passkey, after_password: bool) -> list[str]:
    """RFC 8176: a synced (backup-eligible) passkey is a software key, one bound to its
    device a hardware key; user verification was required, so a user test was made."""
    key = "swk" if passkey.backup_eligible else "hwk"
    return ["pwd", key, "user", "mfa"] if after_password else [key, "user", "mfa"]


def clean_name(typed: str) -> str | None:
    name = " ".join(typed.split())
    if not name or len(name) > NAME_LENGTH or any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        return None
    return name


@dataclass
class Checked:
    """A passkey that just verified its owner."""

    passkey: Passkey
    account: SsoAccount


@dataclass
class PasskeySteps(PageSteps):
    async def of(self, account: SsoAccount) -> list[Passkey]:
        return await passkeys.of_account(self.db, account.id)

    # -- ceremonies -----------------------------------------------------------------------

    async def begin(
        self,
        ceremony: str,
        staff: Staff | None = None,
        account: SsoAccount | None = None,
        workflow_id: str | None = None,
    ) -> tuple[str, str]:
        """The options for the browser (JSON) and the cookie value that binds their challenge
        to it. Adding needs the signed-in person; the second factor and a reset their
        account, whose passkeys the browser is told to offer."""
        rp_id, _origin = relying_party(self.settings)
        challenge = secrets.token_bytes(32)
        options: Any
        if ceremony == "register":
            assert staff is not None and account is not None
            options = generate_registration_options(
                rp_id=rp_id,
                rp_name=f"{self.settings.brand_name} Single Sign-On",
                user_id=staff.id.bytes,
                user_name=account.login_email,
                user_display_name=f"{staff.first_name} {staff.last_name}",
                challenge=challenge,
                timeout=TIMEOUT_MS,
                authenticator_selection=AuthenticatorSelectionCriteria(
                    resident_key=ResidentKeyRequirement.REQUIRED,
                    user_verification=UserVerificationRequirement.REQUIRED,
                ),
                exclude_credentials=_descriptors(await self.of(account)),
            )
        else:
            options = generate_authentication_options(
                rp_id=rp_id,
                challenge=challenge,
                timeout=TIMEOUT_MS,
                allow_credentials=_descriptors(await self.of(account)) if account is not None else [],
                user_verification=UserVerificationRequirement.REQUIRED,
            )
        cookie = await Sessions(self.settings, self.db).create(
            CHALLENGE_PURPOSE,
            staff.id if staff is not None else (account.staff_id if account is not None else None),
            CHALLENGE_TTL,
            workflow_id=workflow_id,
            data={"ceremony": ceremony, "challenge": self._challenge_digest(bytes_to_base64url(challenge))},
        )
        return options_to_json(options), cookie

    async def add(
        self,
        cookie: str | None,
        staff: Staff,
        account: SsoAccount,
        credential: str,
        name: str,
        ip: str | None,
    ) -> tuple[Passkey, list[str] | None]:
        """The new passkey, and recovery codes to show once when it is the person's first
        second factor (so a lost passkey does not lock them out)."""
        named = clean_name(name)
        if named is None:
            raise PasskeyRefused("bad name", BAD_NAME)
        try:
            parsed = parse_registration_credential_json(credential)
            challenge = parse_client_data_json(parsed.response.client_data_json).challenge
        except (WebAuthnException, ValueError, KeyError, TypeError) as exc:
            raise await self._refused("register", staff.id, ip, "malformed") from exc
        await self._spend_challenge(cookie, "register", staff.id, bytes_to_base64url(challenge), ip)
        if len(await self.of(account)) >= MAX_PASSKEYS:
            raise PasskeyRefused("too many", TOO_MANY)
        try:
            verified = verify_registration_response(credential=parsed, **self._expected(challenge))
        except WebAuthnException as exc:
            raise await self._refused("register", staff.id, ip, str(exc)) from exc
        credential_id = bytes_to_base64url(verified.credential_id)
        if await self.db.scalar(select(Passkey.id).where(Passkey.credential_id == credential_id)):
            raise PasskeyRefused("already added", ALREADY_ADDED)
        first = not await passkeys.has_second_factor(self.db, account)
        now = utcnow()
        passkey = Passkey(
            account_id=account.id,
            credential_id=credential_id,
            public_key=bytes_to_base64url(verified.credential_public_key),
            sign_count=verified.sign_count,
            transports=[t.value for t in parsed.response.transports or []],
            name=named,
            backup_eligible=verified.credential_device_type == CredentialDeviceType.MULTI_DEVICE,
            backed_up=verified.credential_backed_up,
            created_at=now,
        )
        self.db.add(passkey)
        await self.db.flush()
        codes = await recovery.issue(self.db, self._secret, account.id, now) if first else None
        audit.by_staff(
            self.db,
            str(staff.id),
            "passkey.added",
            ip=ip,
            passkey=str(passkey.id),
            synced=passkey.backup_eligible,
        )
        await self._notify(staff.id, "passkey_added")
        await _factor_added(self, account)
        return passkey, codes

    async def check(
        self,
        cookie: str | None,
        ceremony: str,
        credential: str,
        ip: str | None,
        staff_id: uuid.UUID | None = None,
    ) -> Checked:
        """The passkey the browser answered with, verified; for the second factor and a reset
        it must be `staff_id`'s own. Refused otherwise, and audited."""
        try:
            parsed = parse_authentication_credential_json(credential)
            challenge = parse_client_data_json(parsed.response.client_data_json).challenge
        except (WebAuthnException, ValueError, KeyError, TypeError) as exc:
            raise await self._refused(ceremony, staff_id, ip, "malformed") from exc
        passkey = await self.db.scalar(select(Passkey).where(Passkey.credential_id == parsed.id))
        account = await self.db.get(SsoAccount, passkey.account_id) if passkey is not None else None
        # Refusals are recorded against the passkey's owner when it is known.
        owner = account.staff_id if account is not None else staff_id
        await self._spend_challenge(
            cookie, ceremony, staff_id, bytes_to_base64url(challenge), ip, target=owner
        )
        if passkey is None or account is None:
            raise await self._refused(ceremony, staff_id, ip, "unknown passkey")
        if staff_id is not None and account.staff_id != staff_id:
            raise await self._refused(
                ceremony, staff_id, ip, "another person's passkey", owner=str(account.staff_id)
            )
        handle = parsed.response.user_handle
        if handle is not None and handle != account.staff_id.bytes:
            raise await self._refused(ceremony, account.staff_id, ip, "user handle does not match")
        if account.status not in (AccountStatus.active.value, AccountStatus.disabled.value):
            raise await self._refused(ceremony, account.staff_id, ip, "account not active")
        try:
            # The stored count is compared below, once the signature is known to be good.
            verified = verify_authentication_response(
                credential=parsed,
                credential_public_key=base64url_to_bytes(passkey.public_key),
                credential_current_sign_count=0,
                **self._expected(challenge),
            )
        except WebAuthnException as exc:
            raise await self._refused(ceremony, account.staff_id, ip, str(exc)) from exc
        count = verified.new_sign_count
        if (count > 0 or passkey.sign_count > 0) and count <= passkey.sign_count:
            audit.by_staff(
                self.db,
                str(account.staff_id),
                "passkey.counter_regressed",
                outcome="refused",
                ip=ip,
                passkey=str(passkey.id),
                stored=passkey.sign_count,
                presented=count,
                detail="the signature counter went back: a cloned authenticator",
            )
            raise PasskeyRefused("counter went back")
        if account.status == AccountStatus.disabled.value:
            # Said only once the signature proved the passkey's holder, as the password path
            # says it only to whoever knows the password; the passkey is not counted as used.
            raise await self._disabled(ceremony, account, ip, passkey)
        org_name = await suspended_org_name(self.db, account.staff_id)
        if org_name is not None:
            raise await self._disabled(
                ceremony, account, ip, passkey, PasskeyOfSuspended(org_name, self.settings.brand_name)
            )
        passkey.sign_count = count
        passkey.backed_up = verified.credential_backed_up
        passkey.last_used_at = utcnow()
        await self.db.flush()
        return Checked(passkey, account)

    async def signed_in(self, checked: Checked, ip: str | None, after_password: bool) -> None:
        org = await metrics_org(self.db, checked.account.staff_id)
        metrics.sign_in("passkey_signed_in", "after_password" if after_password else "passwordless", org=org)
        succeeded(
            self.db,
            checked.account,
            utcnow(),
            ip,
            mfa=True,
            method="passkey",
            passkey=str(checked.passkey.id),
            password=after_password,
        )

    async def reset_proof(self, checked: Checked, workflow_id: str) -> str:
        """What the reset flow is told of a passkey checked in its step: a one-time row the
        reset activity spends (its key's HMAC; nothing that works as a cookie or signs)."""
        token = secrets.token_urlsafe(32)
        row = BrowserSession(
            id_hash=session_hash(self.settings, token),
            staff_id=checked.account.staff_id,
            purpose=passkeys.PROOF_PURPOSE,
            workflow_id=workflow_id,
            expires_at=utcnow() + CHALLENGE_TTL,
            data={"passkey": str(checked.passkey.id)},
        )
        self.db.add(row)
        await self.db.flush()
        return row.id_hash

    # -- the account page -----------------------------------------------------------------

    async def rename(self, account: SsoAccount, passkey_id: uuid.UUID, name: str, ip: str | None) -> None:
        named = clean_name(name)
        if named is None:
            raise PasskeyRefused("bad name", BAD_NAME)
        passkey = await self._own(account, passkey_id)
        passkey.name = named
        audit.by_staff(self.db, str(account.staff_id), "passkey.renamed", ip=ip, passkey=str(passkey.id))
        await self.db.flush()

    async def remove(
        self, account: SsoAccount, passkey_id: uuid.UUID, ip: str | None, required: bool
    ) -> None:
        """Removes one passkey; refused when it is the last second factor someone who must
        keep one has."""
        passkey = await self._own(account, passkey_id)
        if required and account.mfa_enabled_at is None and len(await self.of(account)) <= 1:
            raise PasskeyRefused(
                "last factor",
                "As an administrator, you keep a second factor: add another before removing this one.",
            )
        await self.db.delete(passkey)
        await self.db.flush()
        if not await passkeys.has_second_factor(self.db, account):
            # No factor left for the recovery codes to stand in for.
            await recovery.remove(self.db, account.id)
        audit.by_staff(self.db, str(account.staff_id), "passkey.removed", ip=ip, passkey=str(passkey_id))
        await self._notify(account.staff_id, "passkey_removed")

    # -- plumbing -------------------------------------------------------------------------

    async def _own(self, account: SsoAccount, passkey_id: uuid.UUID) -> Passkey:
        passkey = await self.db.get(Passkey, passkey_id)
        if passkey is None or passkey.account_id != account.id:
            raise PasskeyRefused("not found", "That passkey is no longer on your account.")
        return passkey

    def _expected(self, challenge: bytes) -> dict[str, Any]:
        """What every answer is checked against: its challenge (already matched to the one this
        browser was given), our relying party id and origin, and user verification."""
        rp_id, origin = relying_party(self.settings)
        return {
            "expected_challenge": challenge,
            "expected_rp_id": rp_id,
            "expected_origin": origin,
            "require_user_verification": True,
        }

    def _challenge_digest(self, challenge: str) -> str:
        return token_hash(self._secret, "passkey-challenge", challenge)

    async def _spend_challenge(
        self,
        cookie: str | None,
        ceremony: str,
        staff_id: uuid.UUID | None,
        challenge: str,
        ip: str | None,
        target: uuid.UUID | None = None,
    ) -> None:
        """The browser's challenge, used up whatever happens next (one guarded update, so a
        replay, even a concurrent one, finds it spent); it must be the one signed, for this
        ceremony and person, within five minutes."""
        if not cookie or len(cookie) > 128:
            raise await self._refused(ceremony, target or staff_id, ip, "no challenge")
        now = utcnow()
        id_hash = session_hash(self.settings, cookie)
        spent = await passkeys.spend(self.db, id_hash, CHALLENGE_PURPOSE, now)
        row = await self.db.get(BrowserSession, id_hash)
        if not spent or row is None:
            raise await self._refused(ceremony, target or staff_id, ip, "challenge used or expired")
        await self.db.refresh(row)
        expected = str(row.data.get("challenge", ""))
        if (
            row.data.get("ceremony") != ceremony
            or row.staff_id != staff_id
            or not hmac.compare_digest(expected, self._challenge_digest(challenge))
        ):
            raise await self._refused(ceremony, target or staff_id, ip, "challenge does not match")

    async def _refused(
        self, ceremony: str, staff_id: uuid.UUID | None, ip: str | None, reason: str, **details: Any
    ) -> PasskeyRefused:
        if ceremony in ("signin", "mfa"):
            # The person signing in, else the passkey's owner once known ("none" before).
            metrics.sign_in("passkey_refused", ceremony, org=await metrics_org(self.db, staff_id))
        audit.record(
            self.db,
            actor=f"staff:{staff_id}" if staff_id is not None and ceremony == "register" else f"ip:{ip}",
            action="passkey.failed",
            outcome="failure",
            target=str(staff_id) if staff_id is not None else None,
            ip=ip,
            ceremony=ceremony,
            reason=reason[:200],
            **details,
        )
        return PasskeyRefused(reason)

    async def _disabled(
        self,
        ceremony: str,
        account: SsoAccount,
        ip: str | None,
        passkey: Passkey,
        refusal: PasskeyOfDisabled | None = None,
    ) -> PasskeyOfDisabled:
        """Recorded as the password sign-in records a disabled person (or one of a suspended
        organisation) who knew the password."""
        refusal = refusal or PasskeyOfDisabled()
        reason = "org_suspended" if isinstance(refusal, PasskeyOfSuspended) else "account_disabled"
        metrics.sign_in("refused", reason, org=await metrics_org(self.db, account.staff_id))
        audit.record(
            self.db,
            actor=f"ip:{ip}",
            action="sign_in.failed" if ceremony in ("signin", "mfa") else "passkey.failed",
            outcome="failure",
            target=str(account.staff_id),
            ip=ip,
            reason=reason,
            method="passkey",
            ceremony=ceremony,
            passkey=str(passkey.id),
        )
        return refusal

    async def _notify(self, staff_id: uuid.UUID, change: str) -> None:
        await MfaNotices(self.settings, self._flows).changed(
            staff_id, change, org_id=await org_of(self.db, staff_id)
        )


def _descriptors(keys: list[Passkey]) -> list[PublicKeyCredentialDescriptor]:
    known = {t.value for t in AuthenticatorTransport}
    return [
        PublicKeyCredentialDescriptor(
            id=base64url_to_bytes(key.credential_id),
            transports=[AuthenticatorTransport(t) for t in key.transports if t in known] or None,
        )
        for key in keys
    ]


async def _factor_added(steps: PasskeySteps, account: SsoAccount) -> None:
    """A passkey is a second factor: it ends the person's MFA obligation early."""
    await second_factor_added(steps.settings, steps.temporal, account.staff_id)
