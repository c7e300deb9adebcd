"""What a person's own account page changes asks of the worker: telling them by email."""

from __future__ import annotations

from temporalio import activity

from activities.base import SecretActivities
from activities.inputs import MfaNoticeInput
from core.times import email_at

# What each change is called in the email: "... on <date>, <what>."
CHANGES = {
    "enrolled": "an authenticator app was set up",
    "passkey_added": "a passkey was added",
    "passkey_removed": "a passkey was removed",
    "recovery_codes": "a new set of recovery codes was made (the earlier codes no longer work)",
    "removed": (
        "Multi-Factor Authentication was turned off (the authenticator app, passkeys and recovery codes "
        "were removed)"
    ),
    "codes_low": (
        "a recovery code was used, and two or fewer are left; make a new set on your account page "
        "before you run out"
    ),
    "reset": (
        "an administrator reset your Multi-Factor Authentication (the authenticator app, passkeys and "
        "recovery codes were removed, and you were signed out everywhere); you can set it up again "
        "from your account page"
    ),
}


class AccountActivities(SecretActivities):
    @activity.defn(name="send_mfa_changed")
    async def send_mfa_changed(self, data: MfaNoticeInput) -> None:
        staff, email = await self._email_to_account(
            data.staff_id,
            "mfa_changed",
            what=CHANGES.get(data.change, data.change),
            changed_at=email_at(data.changed_at, self._settings.zone),
        )
        await self._notify("mfa_changed", staff.id, email)
