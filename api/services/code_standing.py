"""Where the setup's emailed code stands, as the Confirm Your Account page says it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from api.services.reset import NEW_CODE_SENT
from workflows.setup import SetupProgress

# Said after the redirect that follows Send a new code (the flow's answer says the same).
RESENT = NEW_CODE_SENT


# The flow's answers about the code itself (workflows/codes.py): on a spent code the page's
# own sentence says all of them, with when a new code can be sent.
ABOUT_THE_CODE = ("Incorrect code", "Too many incorrect codes", "You can ask for a new code in")


@dataclass(frozen=True)
class CodeStanding:
    spent: bool  # entered wrongly too often: only a new code helps
    wait_seconds: int  # until Send a new code is taken (0: now, or never when none are left)
    message: str | None  # what the page says besides (an input or form problem), if anything

    @classmethod
    def of(cls, progress: SetupProgress, now: datetime, message: str | None) -> CodeStanding:
        wait = 0
        if progress.next_resend_at is not None and progress.resends_left > 0:
            wait = max(0, math.ceil((progress.next_resend_at - now).total_seconds()))
        # A sent code with no attempts left is spent: a used one ends the step instead.
        spent = progress.code_delivery == "sent" and progress.code_attempts_left == 0
        if spent and message is not None and message.startswith(ABOUT_THE_CODE):
            message = None
        return cls(spent=spent, wait_seconds=wait, message=message)
