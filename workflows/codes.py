"""The emailed six-digit code, as both the setup and the reset flow keep it.

Plain state inside a workflow (deterministic: the caller passes `workflow.now()`). The flow
only ever sees the code's keyed digest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from temporalio import workflow

from core import flow_errors

with workflow.unsafe.imports_passed_through():
    from activities.inputs import SendCodeInput, SendCodeResult
    from activities.shared import SharedActivities
    from workflows.common import EmailRetry, start_email

CODE_ATTEMPTS = 5
ON_ITS_WAY = "Your code is still on its way. Check your inbox (and spam folder) in a moment."


@dataclass
class CodeRules:
    ttl_seconds: int = 600
    resend_interval_seconds: int = 60
    max_resends: int = 5


@dataclass(kw_only=True)
class CodeTerms:
    """A flow's start input carries its code rules as these fields (keyword-only, so they
    can follow the input's own fields)."""

    code_ttl_seconds: int = 600
    code_resend_interval_seconds: int = 60
    code_max_resends: int = 5

    def code_rules(self) -> CodeRules:
        return CodeRules(
            ttl_seconds=self.code_ttl_seconds,
            resend_interval_seconds=self.code_resend_interval_seconds,
            max_resends=self.code_max_resends,
        )


async def email_code(
    terms: CodeTerms,
    staff_id: str,
    purpose: str,
    retry: EmailRetry,
    summary: str,
    setup_id: str | None = None,
) -> SendCodeResult:
    """Email the person a new code; the flow gets back only its keyed digest."""
    return await start_email(
        SharedActivities.send_code,
        SendCodeInput(
            staff_id=staff_id,
            workflow_id=workflow.info().workflow_id,
            purpose=purpose,
            code_ttl_seconds=terms.code_ttl_seconds,
            setup_id=setup_id,
        ),
        retry,
        summary,
    )


@dataclass
class CodeCheck:
    ok: bool
    message: str | None = None
    counted: bool = False  # a wrong guess that counts against the code
    attempts_left: int = 0


class EmailedCode:
    def __init__(self, rules: CodeRules) -> None:
        self.rules = rules
        self.digest: str | None = None
        self.delivery = "none"  # none | sending | sent | failed
        self.sent_at: datetime | None = None
        self.expires_at: datetime | None = None
        self.failures = 0  # on the current code; five kill it
        self.wrong_total = 0  # across every code of the flow, never reset
        self.sends = 0
        self.last_request: datetime | None = None

    def replace(self, now: datetime) -> int:
        """A new code is on its way: the current one stops working at once. Returns the
        send's number, so a late answer for an older send can be told apart."""
        self.sends += 1
        self.last_request = now
        self.digest = None
        self.failures = 0
        self.delivery = "sending"
        return self.sends

    def delivered(self, number: int, digest: str, sent_at: datetime, now: datetime) -> bool:
        if number != self.sends:
            return False  # a newer code was asked for meanwhile; this one never works
        self.digest = digest
        self.delivery = "sent"
        # The send's own (server-clock) time: a slow result must not stretch the lifetime.
        self.sent_at = min(sent_at, now)
        self.expires_at = self.sent_at + timedelta(seconds=self.rules.ttl_seconds)
        return True

    def failed(self, number: int) -> None:
        if number == self.sends:
            self.delivery = "failed"

    def check(self, digest: str, now: datetime, tell_delivery: bool = True) -> CodeCheck:
        """`tell_delivery=False` answers a try before the email is out like a wrong code: where
        the page must not reveal that a flow exists at all (password reset)."""
        if self.digest is None and tell_delivery:
            return CodeCheck(
                False,
                "We couldn't send your code. Click Send a new code."
                if self.delivery == "failed"
                else ON_ITS_WAY,
            )
        if self.failures >= CODE_ATTEMPTS:
            return CodeCheck(False, "Too many incorrect codes. Click Send a new code.")
        if self.expires_at is not None and now >= self.expires_at and self.digest is not None:
            return CodeCheck(False, "This code has expired. Click Send a new code.")
        if self.digest is None or digest != self.digest:
            self.failures += 1
            self.wrong_total += 1
            left = CODE_ATTEMPTS - self.failures
            message = (
                f"Incorrect code, {left} attempt{'s' if left != 1 else ''} left"
                if left
                else "Incorrect code. This code can no longer be used; click Send a new code."
            )
            return CodeCheck(False, message, counted=True, attempts_left=left)
        return CodeCheck(True)

    def count_failure(self) -> None:
        """A wrong second factor alongside this code counts like a wrong code."""
        self.failures += 1
        self.wrong_total += 1

    def use(self) -> None:
        self.digest = None  # single use

    def resend_refusal(self, now: datetime) -> tuple[str, str] | None:
        """(message, kind) when a new code may not be sent now."""
        if self.sends - 1 >= self.rules.max_resends:
            return ("You've asked for the most new codes we can send.", flow_errors.TOO_MANY_CODES)
        next_at = self.next_request_at
        if next_at is not None and now < next_at:
            seconds = math.ceil((next_at - now).total_seconds())
            return (
                f"You can ask for a new code in {seconds} second{'s' if seconds != 1 else ''}.",
                flow_errors.TOO_SOON,
            )
        return None

    @property
    def next_request_at(self) -> datetime | None:
        if self.last_request is None:
            return None
        return self.last_request + timedelta(seconds=self.rules.resend_interval_seconds)

    @property
    def attempts_left(self) -> int:
        return max(0, CODE_ATTEMPTS - self.failures) if self.digest is not None else 0

    @property
    def resends_left(self) -> int:
        return max(0, self.rules.max_resends - max(0, self.sends - 1))
