"""What the admin pages call each setup state, email delivery, audit event, outcome and
actor: words for a branch manager. One table each, so a new state or event gets its words
here, once; the technical names stay one click away ("Technical details") for ops."""

from __future__ import annotations

import re
from datetime import date

from core.models import DeliveryState, SetupState

SETUP_STATES: dict[str, str] = {
    SetupState.not_started: "Not set up",
    SetupState.sending_email: "Sending the email",
    SetupState.email_sent: "Email sent",
    SetupState.link_opened: "Link opened, choosing a password",
    SetupState.password_set: "At step: confirm the emailed code",
    SetupState.code_sent: "At step: confirm the emailed code",
    SetupState.mfa_pending: "At step: MFA",
    SetupState.active: "Active",
    SetupState.expired: "Link expired",
    SetupState.superseded: "Replaced by a newer email",
    SetupState.cancelled: "Cancelled",
    SetupState.failed: "Email could not be sent",
}

DELIVERY: dict[str, str] = {
    DeliveryState.pending: "Waiting to send",
    DeliveryState.sent: "Delivered",
    DeliveryState.retrying: "Still trying to send",
    DeliveryState.failed: "Could not be sent",
}

AUDIT_EVENTS: dict[str, str] = {
    "staff.create": "Staff profile created",
    "sso_email.requested": "Single Sign-On email requested",
    "sso_email.sent": "Single Sign-On email delivered",
    "sso_email.attempt_failed": "Sending the email failed, trying again",
    "sso_email.start_failed": "The email could not be started",
    "sso_email.cancel": "Setup cancelled",
    "sso_email.new_link_asked": "New link asked for by the person (from an expired or used link)",
    # The flow records where it ended as sso_setup.<state>; the steps have their own words.
    **{f"sso_setup.{state}": words for state, words in SETUP_STATES.items()},
    "sso_setup.link_opened": "Opened the link",
    "sso_setup.password_set": "Chose a password",
    "sso_setup.password_rejected": "A password was refused",
    "sso_setup.email_confirmed": "Confirmed the emailed code",
    "sso_setup.active": "Single Sign-On active",
    "code.issued": "Verification code emailed",
    "code.failed": "Wrong code entered",
    "mfa.enrolled": "Set up MFA",
    "mfa.skipped": "Skipped MFA for now",
    "mfa.code_failed": "Wrong authenticator code while setting up MFA",
    "mfa.recovery_codes_issued": "Got a new set of recovery codes",
    "mfa.recovery_code_used": "Used a recovery code",
    "mfa.removed": "Turned MFA off",
    "mfa.remove_failed": "Wrong password while turning MFA off",
    "mfa.reset": "MFA reset by an administrator (lost phone)",
    "passkey.added": "Added a passkey",
    "passkey.renamed": "Renamed a passkey",
    "passkey.removed": "Removed a passkey",
    "passkey.failed": "A passkey was refused",
    "passkey.counter_regressed": "A passkey's counter went back (a cloned authenticator?): refused",
    "reset.passkey_failed": "Passkey not confirmed in time during a password reset",
    "mfa.deadline_extended": "MFA deadline extended by an administrator",
    "mfa.obligation_not_started": "MFA reminders could not be scheduled (Temporal was unavailable)",
    "sign_in.success": "Signed in",
    "sign_in.mfa_setup_required": "Password accepted; asked to set up MFA (deadline passed)",
    "sign_in.failed": "Sign-in failed",
    "sign_in.totp_failed": "Wrong authenticator code at sign-in",
    "sign_in.locked_temporarily": "Sign-in locked for a while",
    "sign_in.locked_out": "Sign-in locked until a password reset or an unlock",
    "sign_out": "Signed out",
    "sessions.revoke": "Signed out everywhere",
    "sessions.signed_out_one": "Signed out another browser on the account page",
    "sessions.signed_out_others": "Signed out everywhere else on the account page",
    "password.changed": "Changed the password on the account page",
    "password.change_failed": "A password change was refused",
    "account.unlock": "Sign-in unlocked",
    "staff.disabled": "Disabled: signed out everywhere, sign-in refused",
    "staff.updated": "Details changed",
    "staff.email_change_requested": "New External Email 1: code emailed to it",
    "staff.email_changed": "External Email 1 and sign-in email changed",
    "staff.email_change_ended": "Change of External Email 1 dropped",
    "staff.erased": "Erased: personal data removed",
    "staff.enabled": "Enabled again: can sign in",
    "staff.moved": "Moved to another organisation by agentOS",
    "org.create": "Organisation created",
    "org.update": "Organisation settings changed",
    "org.suspended": "Organisation suspended: its people signed out everywhere, sign-in refused",
    "org.resumed": "Organisation resumed: its people can sign in again",
    "org.erased": "Organisation erased: its people, keys and tenants removed",
    "staff.import": "People imported from a CSV file",
    "admin_key.create": "Admin API key created",
    "reset.requested": "Asked to reset the password",
    "reset.resend": "Asked for a new reset code",
    "reset.link_issued": "Password reset link emailed",
    "reset.totp_failed": "Wrong authenticator code at password reset",
    "reset.completed": "Changed the password",
    "entra.linked": "Microsoft account linked",
    "entra.unlinked": "Microsoft account unlinked",
    "entra.link_refused": "Microsoft account not linked",
    "oidc_client.created": "App registered",
    "oidc_client.updated": "App changed",
    "oidc_client.deleted": "App deleted",
    "oidc_client.secret_rotated": "App given a new secret",
    "oidc.code_issued": "Signed in to an app",
    "oidc.token_issued": "An app collected its sign-in",
    "oidc.token_refused": "An app's sign-in refused",
    "oidc.token_refreshed": "An app refreshed its sign-in",
    "oidc.refresh_refused": "An app's refresh of its sign-in refused",
    "oidc.access_removed": "Removed an app's access",
}

OUTCOMES: dict[str, str] = {
    "success": "Done",
    "accepted": "Accepted",
    "superseded": "Replaced",
    "expired": "Expired",
    "cancelled": "Cancelled",
    "failure": "Failed",
    "refused": "Refused",
    "rejected": "Refused",
    "locked": "Locked",
    "rate_limited": "Too many requests",
    "unknown_address": "Unknown address",
    "throttled": "Too soon",
    "sent": "Sent",
    "link_sent": "Link sent",
    "ended": "Already ended",
    "wrong_password": "Wrong password",
    "needs_totp": "Needed the authenticator code",
}

_STAFF_ACTOR = re.compile(r"staff:(?P<id>[0-9a-f-]{36})(?: \((?P<name>.*)\))?", re.S)


def humane(technical: str) -> str:
    """The fallback for a name no table has yet: readable, never blank."""
    return technical.replace("_", " ").replace(".", ": ").capitalize() or "Unknown"


def setup_state(state: str) -> str:
    return SETUP_STATES.get(state) or humane(state)


def delivery(state: str) -> str:
    return DELIVERY.get(state) or humane(state)


# The staff list's bulk actions (api/routes/admin_bulk_actions.py): what each is called, and what it
# does, as its confirmation says it.
BULK_ACTIONS: dict[str, str] = {
    "send-email": "Send Single Sign-On Email",
    "revoke-sessions": "Sign out everywhere",
    "disable": "Disable",
}
BULK_EXPLANATIONS: dict[str, str] = {
    "send-email": "Each person is emailed a new Single Sign-On link; a setup already in progress is "
    "replaced by it. Anyone who can't be sent one (already active, or disabled) is left as they are, "
    "and the result says why.",
    "revoke-sessions": "Each person is signed out of every session and every app (each app is told). "
    "They can sign in again.",
    "disable": "For leavers. Each person is signed out of every app and can't sign in until enabled: "
    "their sessions end, every app is told, their app tokens stop working, and any setup, password "
    "reset or Microsoft-Entra link in progress is cancelled. Nothing is deleted.",
}


def day(value: date) -> str:
    """ "31 Jan 2027": a day on its own, such as a leave date."""
    return f"{value.day} {value.strftime('%b')} {value.year}"


def event(action: str) -> str:
    return AUDIT_EVENTS.get(action) or humane(action)


def outcome(result: str) -> str:
    return OUTCOMES.get(result) or humane(result)


def actor(recorded: str, person_id: str, person_name: str) -> str:
    """Who did it, by name: "Ada Admin" for "staff:<id> (Ada Admin)", the page's person for
    their own steps, and words for the flows, API keys, the command line and the public pages."""
    kind, _, rest = recorded.partition(":")
    staff = _STAFF_ACTOR.fullmatch(recorded)
    if staff:
        if staff.group("name"):
            return staff.group("name")
        return person_name if staff.group("id") == person_id else "Another staff member"
    if recorded == "system":
        return "Single Sign-On (automatic)"
    if kind == "admin-key":
        return f"Admin API key “{rest}”"
    if kind == "cli":
        return f"Command line ({rest})"
    if kind == "oidc-client":
        return f"App {rest}"
    if kind == "ip":
        return "Someone on the sign-in pages"
    return recorded
