"""What the provider says about a person: the claims of their ID token, access token and
userinfo. `sub` is the staff member's id (stable, opaque, never the email)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.crypto import token_hash
from core.models import AccountStatus, BrowserSession, Organisation, SsoAccount, Staff
from core.settings import Settings

# RFC 8176 values for how the browser session was signed in.
AMR = {"password": ["pwd"], "totp": ["pwd", "otp", "mfa"], "entra": ["fed"]}
STRONG = ("totp", "passkey", "entra")
ADMIN_ROLE = "sso_admin"


@dataclass(frozen=True)
class Subject:
    """The person a code or token is for, and what their session proved."""

    staff: Staff
    account: SsoAccount
    session: dict[str, Any]
    org: Organisation

    @property
    def usable(self) -> bool:
        return self.account.status == AccountStatus.active.value


def session_claims(settings: Settings, row: BrowserSession) -> dict[str, Any]:
    method = str(row.data.get("method") or "password")
    # A passkey's session keeps its own (hwk or swk, with or without the password).
    amr = row.data.get("amr") if method == "passkey" else None
    return {
        "auth_time": int(row.created_at.timestamp()),
        "amr": list(amr) if isinstance(amr, list) else AMR.get(method, ["pwd"]),
        "acr": "mfa" if method in STRONG else "pwd",
        # Names the session without giving away its id (a secret cookie value).
        "sid": token_hash(settings.secret_key.get_secret_value(), "oidc-sid", row.id_hash)[-32:],
    }


def org_claims(org: Organisation) -> dict[str, str]:
    """The agency the person belongs to, in every token and userinfo answer whatever the scope:
    apps decide by it which agency's data to show (a name of a business, not personal data)."""
    return {"org_id": str(org.id), "org_name": org.name}


def user_claims(subject: Subject, scope: str) -> dict[str, Any]:
    scopes = scope.split()
    claims: dict[str, Any] = {
        "sub": str(subject.staff.id),
        "roles": [ADMIN_ROLE] if subject.staff.is_admin else [],
        **org_claims(subject.org),
    }
    if "email" in scopes:
        claims["email"] = subject.account.login_email
        claims["email_verified"] = subject.account.verified_at is not None
    if "profile" in scopes:
        staff = subject.staff
        claims.update(
            name=f"{staff.first_name} {staff.last_name}",
            given_name=staff.first_name,
            family_name=staff.last_name,
        )
    return claims
