"""What a person's own account page changes asks of the worker: telling them by email."""

from __future__ import annotations

import uuid

from temporalio import activity

from activities.base import SecretActivities
from activities.inputs import MfaNoticeInput
from core.accounts import account_for
from core.times import email_at

# What each change is called in the email: "... on <date>, <what>."
CHANGES = {
    "enrolled": "an authenticator app was set up",
    "recovery_codes": "a new set of recovery codes was made (the earlier codes no longer work)",
    "removed": (
        "Multi-Factor Authentication was turned off (the authenticator app and recovery codes were removed)"
    ),
    "codes_low": (
        "a recovery code was used, and two or fewer are left; make a new set on your account page "
        "before you run out"
    ),
    "reset": (
        "an administrator reset your Multi-Factor Authentication (the authenticator app and recovery codes "
        "were removed, and you were signed out everywhere); you can set it up again from your account page"
    ),
}


class AccountActivities(SecretActivities):
    @activity.defn(name="send_mfa_changed")
    async def send_mfa_changed(self, data: MfaNoticeInput) -> None:
        async with self._sessions() as session:
            staff = await self._staff(session, uuid.UUID(data.staff_id))
            account = await account_for(session, staff.id)
        email = self._email_to(
            staff,
            "mfa_changed",
            login_email=account.login_email if account is not None else staff.external_email_1,
            what=CHANGES.get(data.change, data.change),
            changed_at=email_at(data.changed_at, self._settings.zone),
        )
        await self._notify("mfa_changed", staff.id, email)
