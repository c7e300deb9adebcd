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


def by_staff(
    session: AsyncSession, staff_id: str, action: str, *, outcome: str = "success", **details: Any
) -> AuditEvent:
    """An event a staff member caused on their own login (`ip` and any details as `record`)."""
    return record(
        session, actor=f"staff:{staff_id}", action=action, outcome=outcome, target=staff_id, **details
    )


def by_system(session: AsyncSession, staff_id: str, action: str, **details: Any) -> AuditEvent:
    """A step the flows took on a staff member's behalf, such as an email sent."""
    return record(session, actor="system", action=action, outcome="success", target=staff_id, **details)
