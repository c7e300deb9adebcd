"""`sso audit boundary`: did anyone use the Temporal frontend without the key?

Before the boundary fix (docs/security.md §32) a client that reached Temporal could link any
Microsoft account to any staff login and move or end flows. This lists, since install:
every Entra link from the database (who, tenant/oid, when, how, by whom, from where), and
every flow change in the retained Temporal histories that no web request stands behind: a
start, update or signal whose payload is not encrypted with the keyring (or that carries no
payload), every cancel and terminate request, and every change made by a client that did
not name itself as ours (core/temporal_client.identity).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client

from core.codec import CONTEXT_REASONS, REASON, EncryptionCodec, is_unauthenticated
from core.models import AuditEvent, EntraLink
from core.temporal_client import IDENTITY_PREFIX

WORKFLOW_TYPES = ("SsoSetup", "PasswordReset", "EntraLink", "PasswordChangedNotice")


@dataclass
class LinkRecord:
    at: datetime
    staff_id: str
    tenant_id: str
    object_id: str
    via: str
    actor: str
    ip: str | None
    still_linked: bool


@dataclass
class Finding:
    at: datetime | None
    workflow_id: str
    run_id: str
    what: str  # start | update <name> | signal <name> | cancel request | terminate
    why: str
    identity: str


async def entra_links(session: AsyncSession) -> list[LinkRecord]:
    current = {
        (link.tenant_id, link.object_id): link for link in (await session.scalars(select(EntraLink))).all()
    }
    found = []
    for event in (
        await session.scalars(
            select(AuditEvent).where(AuditEvent.action == "entra.linked").order_by(AuditEvent.occurred_at)
        )
    ).all():
        key = (str(event.details.get("tenant_id", "")), str(event.details.get("object_id", "")))
        link = current.pop(key, None)
        found.append(
            LinkRecord(
                at=event.occurred_at,
                staff_id=event.target or "",
                tenant_id=key[0],
                object_id=key[1],
                via=str(event.details.get("via", "")),
                actor=event.actor,
                ip=event.ip,
                still_linked=link is not None and str(link.staff_id) == event.target,
            )
        )
    for link in current.values():  # a link with no audit event at all
        found.append(
            LinkRecord(
                at=link.linked_at,
                staff_id=str(link.staff_id),
                tenant_id=link.tenant_id,
                object_id=link.object_id,
                via=link.linked_via,
                actor="(no audit event)",
                ip=None,
                still_linked=True,
            )
        )
    return found


def _ours(identity: str) -> bool:
    return f" {IDENTITY_PREFIX}" in identity


def _payload_problem(codec: EncryptionCodec, payloads: Sequence[Payload]) -> str | None:
    if not payloads:
        return "no payload"
    for payload in payloads:
        decoded = codec.decode_one(payload)
        if is_unauthenticated(decoded):
            reason = decoded.metadata.get(REASON, b"").decode(errors="replace")
            if reason in CONTEXT_REASONS:
                return f"payload encrypted with this deployment's key but {reason}"
            return "payload not encrypted with this deployment's key"
    return None


def findings(
    codec: EncryptionCodec, workflow_id: str, run_id: str, events: Sequence[HistoryEvent]
) -> list[Finding]:
    found = []

    def note(event: HistoryEvent, what: str, why: str | None, identity: str) -> None:
        if why is None and not _ours(identity):
            why = "sent by a client that is not ours"
        if why is not None:
            found.append(
                Finding(
                    event.event_time.ToDatetime() if event.HasField("event_time") else None,
                    workflow_id,
                    run_id,
                    what,
                    why,
                    identity,
                )
            )

    for event in events:
        kind = event.event_type
        if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            started = event.workflow_execution_started_event_attributes
            if started.parent_workflow_execution.workflow_id:
                continue  # a child our own workflow started, with our converter
            note(event, "start", _payload_problem(codec, started.input.payloads), started.identity)
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            signal = event.workflow_execution_signaled_event_attributes
            if signal.HasField("external_workflow_execution"):
                continue  # from one of our workflows
            note(
                event,
                f"signal {signal.signal_name}",
                _payload_problem(codec, signal.input.payloads),
                signal.identity,
            )
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            request = event.workflow_execution_update_accepted_event_attributes.accepted_request
            note(
                event,
                f"update {request.input.name}",
                _payload_problem(codec, request.input.args.payloads),
                request.meta.identity,
            )
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED:
            cancel = event.workflow_execution_cancel_requested_event_attributes
            note(event, "cancel request", "no payload to authenticate", cancel.identity)
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED:
            ended = event.workflow_execution_terminated_event_attributes
            note(event, "terminate", "no payload to authenticate", ended.identity)
    return found


async def unbacked_changes(client: Client, codec: EncryptionCodec) -> AsyncIterator[Finding]:
    query = " OR ".join(f"WorkflowType = '{name}'" for name in WORKFLOW_TYPES)
    async for execution in client.list_workflows(query):
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
        history = await handle.fetch_history()
        # Checked as the worker checks it: a payload made for another flow is not this one's.
        bound = codec.bound_to(client.namespace, execution.id)
        for finding in findings(bound, execution.id, execution.run_id, history.events):
            yield finding
