"""Types and policies the setup and reset flows share."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from temporalio.common import RetryPolicy

NON_RETRYABLE_EMAIL = ["PermanentEmailError", "StaffNotFound", "SetupEnded"]
DB_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=30))
STEP_TIMEOUT = timedelta(seconds=60)


@dataclass
class EmailRetry:
    initial_interval_seconds: float = 2.0
    maximum_interval_seconds: float = 120.0
    window_seconds: float = 3600.0

    def policy(self) -> RetryPolicy:
        return RetryPolicy(
            initial_interval=timedelta(seconds=self.initial_interval_seconds),
            backoff_coefficient=2.0,
            maximum_interval=timedelta(seconds=self.maximum_interval_seconds),
            non_retryable_error_types=NON_RETRYABLE_EMAIL,
        )


@dataclass
class StepResult:
    """What a page step answers: the page shows `message` and `problems` when not ok."""

    ok: bool
    step: str
    message: str | None = None
    problems: list[str] = field(default_factory=list)
