"""Facts about this deployment that the migrations record (core.models.DeploymentFact)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy.exc import SQLAlchemyError

from core.db import create_engine, session_factory
from core.models import DeploymentFact
from core.settings import Settings

PAYLOAD_BINDING_SINCE = "payload_binding_since"
# Longer than any flow runs (a setup: 15-minute link plus 24 hours to finish, and email
# retries), so every flow running at the deploy that brought the binding has ended by then.
UNBOUND_GRACE = timedelta(hours=48)

log = logging.getLogger(__name__)


async def unbound_payloads_until(settings: Settings) -> datetime | None:
    """Until when flows believe payloads written before payloads were bound to their flow:
    `SSO_TEMPORAL_UNBOUND_UNTIL` when set, else 48 hours after the migration that brought
    the binding ran. Such payloads exist only in histories written by the earlier version
    (nothing we run writes one now), so on a new install the window holds nothing."""
    if settings.temporal_unbound_until is not None:
        return settings.temporal_unbound_until
    engine = create_engine(settings.async_database_url)
    try:
        async with session_factory(engine)() as session:
            fact = await session.get(DeploymentFact, PAYLOAD_BINDING_SINCE)
    except SQLAlchemyError as exc:
        # Refusing is the safe side: flows from before the deploy wait until the database is
        # back and the process restarts; nothing is believed that should not be.
        log.warning(
            "could not read when payload binding began (%s); unbound payloads are refused", type(exc).__name__
        )
        return None
    finally:
        await engine.dispose()
    return fact.at + UNBOUND_GRACE if fact is not None else None
