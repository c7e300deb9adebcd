"""Starts the back-channel logout of an ended sign-in session: one SessionLogout flow for the
apps that got tokens in it and registered a back-channel logout URI."""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.common import SearchAttributePair
from temporalio.exceptions import WorkflowAlreadyStartedError

from api.services.flows import FlowClient
from core.errors import ServiceUnavailable
from core.models import BrowserSession, OidcClient, OidcGrant
from core.oidc.claims import session_claims
from core.search_attributes import SSO_STAFF_ID
from core.settings import Settings
from core.temporal_client import TemporalGateway
from workflows.logout import SessionLogoutInput, SessionLogoutWorkflow, logout_workflow_id

logger = logging.getLogger(__name__)
START_TIMEOUT = 5.0


async def start_session_logout(
    temporal: TemporalGateway, settings: Settings, db: AsyncSession, ended: BrowserSession
) -> str | None:
    """The fan-out flow's id, or None when no app is to be told (or Temporal can't be
    reached: then the session has still ended, and its refresh tokens with it)."""
    if ended.staff_id is None:
        return None
    rows = await db.execute(
        select(OidcClient.client_id, OidcClient.registration)
        .join(OidcGrant, OidcGrant.client_id == OidcClient.client_id)
        .where(OidcGrant.session_hash == ended.id_hash, OidcGrant.redeemed_at.is_not(None))
    )
    client_ids = sorted({client_id for client_id, metadata in rows if metadata.get("backchannel_logout_uri")})
    if not client_ids:
        return None
    sid = session_claims(settings, ended)["sid"]
    workflow_id = logout_workflow_id(sid)
    flows = FlowClient(temporal, START_TIMEOUT, settings.task_queue)
    try:
        await flows.start(
            SessionLogoutWorkflow.run,
            SessionLogoutInput(sid, str(ended.staff_id), client_ids),
            id=workflow_id,
            search_attributes=[SearchAttributePair(SSO_STAFF_ID, str(ended.staff_id))],
            static_summary=f"Back-channel logout to {len(client_ids)} app(s)",
        )
    except WorkflowAlreadyStartedError:
        pass  # this session's logout is already on its way
    except ServiceUnavailable:
        logger.warning("back-channel logout not started, Temporal unavailable: %s", workflow_id)
        return None
    return workflow_id
