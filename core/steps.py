"""The steps of the setup flow: one enum for the database rows, the workflow and the pages.

Pure (no I/O, no imports beyond the standard library), so workflows import it through
`imports_passed_through`. The values are stored in the database, in the `SsoStep` search
attribute and in workflow histories: never change one.
"""

from __future__ import annotations

from enum import StrEnum


class SetupState(StrEnum):
    not_started = "not_started"
    sending_email = "sending_email"
    email_sent = "email_sent"
    link_opened = "link_opened"
    password_set = "password_set"  # noqa: S105 (a state name)
    code_sent = "code_sent"
    mfa_pending = "mfa_pending"
    active = "active"
    expired = "expired"
    superseded = "superseded"
    cancelled = "cancelled"
    failed = "failed"

    @property
    def is_open(self) -> bool:
        return self in OPEN_SETUP_STATES


OPEN_SETUP_STATES = frozenset(
    {
        SetupState.sending_email,
        SetupState.email_sent,
        SetupState.link_opened,
        SetupState.password_set,
        SetupState.code_sent,
        SetupState.mfa_pending,
    }
)
# Where a flow ends; `active` is the good one.
FINAL_SETUP_STATES = frozenset(
    {
        SetupState.active,
        SetupState.expired,
        SetupState.superseded,
        SetupState.cancelled,
        SetupState.failed,
    }
)
