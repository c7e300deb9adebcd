"""Inputs and results of activities. Shared with workflows; holds no secrets by design."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass
class SendSetupEmailInput:
    setup_id: str
    staff_id: str
    workflow_id: str
    run_id: str
    link_ttl_seconds: int


@dataclass
class SendSetupEmailResult:
    sent_at: datetime
    link_expires_at: datetime
    masked_email: str
    attempts: int


@dataclass
class CloseSetupInput:
    setup_id: str
    staff_id: str
    run_id: str
    state: str
    reason: str | None = None
    actor: str = "system"
