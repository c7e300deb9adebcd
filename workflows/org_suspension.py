"""An organisation's suspension (`org-suspend-<org id>`): the web app has committed the status
(sign-in is refused from then on); this flow then ends, a chunk of people at a time, every
person's sessions (the apps told by back-channel logout), their apps' tokens and their open
setup, reset and Microsoft-link flows, as a Disable does for one person. Each chunk is one
idempotent activity: a retried chunk ends nothing twice. A resume part-way stops it.

The history holds the organisation's id, person ids (the chunk cursor) and counts only. The
counts show in the flow's current details; `SsoStep` is `running`, then `done` or `stopped`.
It ends with `org.suspension_completed` in the audit (the request audited `org.suspended`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.inputs import OrgChunkInput, OrgSuspendChunk, OrgSuspensionDoneInput
    from activities.orgs import OrgActivities
    from core.search_attributes import SSO_STEP
    from workflows.common import DB_RETRY, required, run_step

# A chunk of 50 people: their sessions in one transaction, then each one's flows asked to end
# (a few Temporal calls each, 10 s at most); a worker that dies mid-chunk is noticed by the
# missing heartbeat and the chunk runs again elsewhere.
CHUNK_TIMEOUT = timedelta(minutes=10)
CHUNK_HEARTBEAT = timedelta(seconds=30)


def org_suspend_workflow_id(org_id: object) -> str:
    return f"org-suspend-{org_id}"


@dataclass
class OrgSuspendInput:
    org_id: str
    actor: str
    chunk_size: int = 50


@workflow.defn(name="OrgSuspension")
class OrgSuspensionWorkflow:
    @workflow.run
    async def run(self, start: OrgSuspendInput | None = None) -> OrgSuspendChunk:
        data = required(start, "This start")
        total = OrgSuspendChunk()
        after: str | None = None
        while True:
            workflow.set_current_details(_details("Ending sessions", total))
            chunk: OrgSuspendChunk = await workflow.execute_activity_method(
                OrgActivities.suspend_org_chunk,
                OrgChunkInput(org_id=data.org_id, actor=data.actor, limit=data.chunk_size, after=after),
                start_to_close_timeout=CHUNK_TIMEOUT,
                heartbeat_timeout=CHUNK_HEARTBEAT,
                retry_policy=DB_RETRY,
                summary="End a chunk of the organisation's people's sessions and flows",
            )
            if chunk.stopped:
                workflow.set_current_details(
                    _details("Stopped: the organisation was resumed or is being erased", total)
                )
                workflow.upsert_search_attributes([SSO_STEP.value_set("stopped")])
                total.stopped = True
                return total
            total = _add(total, chunk)
            if chunk.last is None or chunk.people < data.chunk_size:
                break
            after = chunk.last
        await run_step(
            OrgActivities.record_org_suspension,
            OrgSuspensionDoneInput(org_id=data.org_id, actor=data.actor, counts=total),
            "Record the suspension as done",
        )
        workflow.set_current_details(_details("Done", total))
        workflow.upsert_search_attributes([SSO_STEP.value_set("done")])
        return total


def _add(total: OrgSuspendChunk, chunk: OrgSuspendChunk) -> OrgSuspendChunk:
    return OrgSuspendChunk(
        people=total.people + chunk.people,
        sessions_revoked=total.sessions_revoked + chunk.sessions_revoked,
        grants_revoked=total.grants_revoked + chunk.grants_revoked,
        flows_ended=total.flows_ended + chunk.flows_ended,
    )


def _details(what: str, c: OrgSuspendChunk) -> str:
    return (
        f"{what}: {c.people} people done, {c.sessions_revoked} sessions ended, "
        f"{c.grants_revoked} app grants revoked, {c.flows_ended} open flows ended"
    )
