"""What the MFA obligation's flows take and answer. A module of its own, imported into the
workflows as passed through: the sandbox's stand-in for `datetime` would not convert."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from workflows.common import EmailRetry


@dataclass
class MfaEnrollmentInput:
    staff_id: str
    policy: str  # "required" or "optional"
    reminder_offsets_seconds: list[float]
    grace_seconds: float
    email_retry: EmailRetry = field(default_factory=EmailRetry)
    reason: str = "skipped"  # "skipped", "reset" or "policy"


@dataclass
class SecondFactorAdded:
    """A signal needs a payload sealed with the deployment's key (workflows/common.py)."""

    kind: str = "totp"


@dataclass
class RequirePolicy:
    """The policy changed to `required` while an `optional` obligation runs: it starts again
    under `required`, counted from now."""

    reminder_offsets_seconds: list[float]
    grace_seconds: float


@dataclass
class ExtendRequest:
    actor: str  # the admin, as the web app verified them


@dataclass
class ExtendResult:
    due_at: datetime


@dataclass
class MfaProgress:
    step: str
    policy: str
    due_at: datetime
    reminders_sent: int
    extended_by: str | None
