"""The audit log: one row for every authentication and admin event, never a secret."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from core.addresses import canonical
from core.models import AuditEvent


def record(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    outcome: str,
    target: str | None = None,
    ip: str | None = None,
    **details: Any,
) -> AuditEvent:
    """Adds the event to the caller's transaction; the caller commits with its own change."""
    # Whatever a caller passes, only an address is stored (a forwarded header could say
    # anything, at any length).
    event = AuditEvent(
        actor=actor, action=action, target=target, outcome=outcome, ip=canonical(ip), details=details
    )
    session.add(event)
    return event
