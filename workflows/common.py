"""Types, policies and steps the flows share."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

from core import flow_errors

with workflow.unsafe.imports_passed_through():
    from activities.inputs import AuditInput
    from activities.shared import SharedActivities

NON_RETRYABLE_EMAIL = [
    flow_errors.PERMANENT_EMAIL_ERROR,
    flow_errors.STAFF_NOT_FOUND,
    flow_errors.SETUP_ENDED,
]
DB_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=30))
# A step that opens a sealed secret for an account: a seal that does not open, or an account
# that is gone, stays so however often the step is tried.
SEALED_ACCOUNT_STEP_RETRY = RetryPolicy(
    maximum_attempts=5, non_retryable_error_types=[flow_errors.BAD_SEAL, flow_errors.ACCOUNT_MISSING]
)
# An attempt's start-to-close timeout is how long a step stalls when its worker dies mid-way
# (Temporal only then retries it elsewhere): sized to what the step takes. Database steps
# take milliseconds; the slowest, a password step (rules check plus argon2id, queued behind
# the worker's other hashes), about a second under load.
STEP_TIMEOUT = timedelta(seconds=10)
# A workflow task takes milliseconds; one caught on a killed worker is handed to another
# after this (Temporal's default is 10 s).
WORKFLOW_TASK_TIMEOUT = timedelta(seconds=5)
# Redeeming a Microsoft sign-in: up to four HTTP calls, bounded together (25 s) in
# the activity (core.entra's client times out each call sooner).
ENTRA_TIMEOUT = timedelta(seconds=30)
UNAUTHENTICATED = flow_errors.UNAUTHENTICATED

T = TypeVar("T")
A = TypeVar("A")


@dataclass
class EmailRetry:
    initial_interval_seconds: float = 2.0
    maximum_interval_seconds: float = 120.0
    window_seconds: float = 3600.0
    # One attempt: the whole SMTP or SendGrid exchange (bounded by SSO_EMAIL_TIMEOUT) plus
    # the database writes around it. Flows started before this field existed get the default.
    attempt_timeout_seconds: float = 15.0

    def attempt_timeout(self) -> timedelta:
        return timedelta(seconds=self.attempt_timeout_seconds)

    def policy(self) -> RetryPolicy:
        return RetryPolicy(
            initial_interval=timedelta(seconds=self.initial_interval_seconds),
            backoff_coefficient=2.0,
            maximum_interval=timedelta(seconds=self.maximum_interval_seconds),
            non_retryable_error_types=NON_RETRYABLE_EMAIL,
        )


def start_email(
    activity: Callable[[Any, A], Awaitable[T]],
    data: A,
    retry: EmailRetry,
    summary: str,
    attempt_timeout: timedelta | None = None,
) -> workflow.ActivityHandle[T]:
    """An email step: each attempt bounded like one mail exchange (or `attempt_timeout`),
    retried with backoff for as long as the flow's email window lasts."""
    return workflow.start_activity_method(
        activity,
        data,
        start_to_close_timeout=attempt_timeout or retry.attempt_timeout(),
        schedule_to_close_timeout=timedelta(seconds=retry.window_seconds),
        retry_policy=retry.policy(),
        summary=summary,
    )


async def run_step(
    activity: Callable[[Any, A], Awaitable[T]], data: A, summary: str, retry: RetryPolicy = DB_RETRY
) -> T:
    """A database step: each attempt bounded by STEP_TIMEOUT."""
    return await workflow.execute_activity_method(
        activity, data, start_to_close_timeout=STEP_TIMEOUT, retry_policy=retry, summary=summary
    )


async def audit_by_staff(
    staff_id: str, action: str, outcome: str, ip: str | None, details: dict[str, str]
) -> None:
    """An event the person caused in a flow, such as a refused step; an activity records it."""
    await run_step(
        SharedActivities.record_audit,
        AuditInput(
            actor=f"staff:{staff_id}", action=action, outcome=outcome, target=staff_id, details=details, ip=ip
        ),
        f"Audit {action}",
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
    return ApplicationError(
        f"{what} carries no payload encrypted with this deployment's key",
        type=UNAUTHENTICATED,
        non_retryable=True,
    )


def required(data: T | None, what: str) -> T:
    """The input of a start, update or signal; None when the client sent no payload at all,
    which only a client without the key does. Raised from a workflow's `__init__`, this
    fails the run at once (an ApplicationError fails the workflow, not the task)."""
    if data is None:
        raise unauthenticated(what)
    return data
