"""Types and policies the setup and reset flows share."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar

from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

NON_RETRYABLE_EMAIL = ["PermanentEmailError", "StaffNotFound", "SetupEnded"]
DB_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=30))
STEP_TIMEOUT = timedelta(seconds=60)
UNAUTHENTICATED = "Unauthenticated"

T = TypeVar("T")


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


@dataclass
class StepRequest:
    """A page step with nothing else to say. Its encrypted payload is what proves it came
    from a holder of the key (the web app): a step without any payload would be open to
    every client that reaches the Temporal frontend."""

    ip: str | None = None  # for the audit log


def unauthenticated(what: str) -> ApplicationError:
    return ApplicationError(f"{what} carries no payload encrypted with this deployment's key",
                            type=UNAUTHENTICATED, non_retryable=True)


def required(data: T | None, what: str) -> T:
    """The input of a start, update or signal; None when the client sent no payload at all,
    which only a client without the key does. Raised from a workflow's `__init__`, this
    fails the run at once (an ApplicationError fails the workflow, not the task)."""
    if data is None:
        raise unauthenticated(what)
    return data
