"""Domain errors: what the service refuses, and why, in words for the person or client.

They say nothing of HTTP: api/errors.py maps each to its HTTP answer, in one place, and the
`sso` command prints their messages.
"""

from __future__ import annotations


class SsoError(Exception):
    """A request refused as it stands (bad input); the message says what to do instead."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(SsoError):
    pass


class Conflict(SsoError):
    pass


class InvalidInput(SsoError):
    """A value that is well-formed but not acceptable now (a leave date that has passed)."""


class Forbidden(SsoError):
    """The caller is known but may not do this (an organisation's key on a deployment-wide
    route); says nothing about other organisations."""


class Unprocessable(SsoError):
    """A well-formed request that leaves out or gets wrong a field only the service can
    judge (answered 422 as a validation error of that field)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class ServiceUnavailable(SsoError):
    """Something the service needs (Temporal, Microsoft, the database) did not answer in
    time; trying again later may work."""

    step_outcome = "unavailable"  # in the step latency metric


class NotAuthenticated(SsoError):
    pass


class TooLarge(SsoError):
    """A request bigger than the service takes in one go (a file of too many bytes or rows)."""


class UnsupportedMediaType(SsoError):
    pass


class TooManyRequests(SsoError):
    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


__all__ = [
    "Conflict",
    "Forbidden",
    "InvalidInput",
    "NotAuthenticated",
    "NotFound",
    "ServiceUnavailable",
    "SsoError",
    "TooLarge",
    "TooManyRequests",
    "Unprocessable",
    "UnsupportedMediaType",
]
