"""Starts the back-channel logout of ended sign-in sessions: one SessionLogout flow per
session, for the apps that got tokens in it and registered a back-channel logout URI."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.common import SearchAttributePair
from temporalio.exceptions import WorkflowAlreadyStartedError

from api.services.flows import FlowClient
from core.accounts import revoke_sessions
from core.errors import ServiceUnavailable
from core.models import BrowserSession, utcnow
from core.oidc.backchannel import logouts_due
from core.search_attributes import SSO_STAFF_ID
from core.settings import Settings
from core.temporal_client import TemporalGateway
from workflows.logout import SessionLogoutWorkflow, logout_summary, logout_workflow_id

logger = logging.getLogger(__name__)
START_TIMEOUT = 5.0


async def start_session_logouts(
    temporal: TemporalGateway, settings: Settings, db: AsyncSession, ended: Sequence[BrowserSession]
) -> list[str]:
    """The fan-out flows' ids; none for a session no app is to be told of, nor once Temporal
    can't be reached (the sessions have still ended, and their refresh tokens with them)."""
    flows = FlowClient(temporal, START_TIMEOUT, settings.task_queue)
    started = []
    for logout in await logouts_due(settings, db, ended):
        workflow_id = logout_workflow_id(logout.sid)
        try:
            await flows.start(
                SessionLogoutWorkflow.run,
                logout,
                id=workflow_id,
                search_attributes=[SearchAttributePair(SSO_STAFF_ID, logout.staff_id)],
                static_summary=logout_summary(logout),
            )
        except WorkflowAlreadyStartedError:
            pass  # this session's logout is already on its way
        except ServiceUnavailable:
            logger.warning("back-channel logout not started, Temporal unavailable: %s", workflow_id)
            break
        started.append(workflow_id)
    return started


async def end_sessions(
    temporal: TemporalGateway,
    settings: Settings,
    db: AsyncSession,
    staff_id: uuid.UUID,
    keep: str | None = None,
) -> list[BrowserSession]:
    """Ends a person's sign-in sessions (all, or all but the one whose id hash is `keep`),
    their refresh tokens with them, and tells the apps; the sessions it ended."""
    ended = await revoke_sessions(db, staff_id, utcnow(), keep=keep)
    await start_session_logouts(temporal, settings, db, ended)
    return ended
