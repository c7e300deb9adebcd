"""An organisation's erasure (`org-erase-<org id>`): the web app has marked the suspended
organisation `erasing`; this flow erases its people a chunk at a time, each as `DELETE
/api/v1/staff/{id}` erases one (their flows deleted from Temporal, their rows deleted, their
audit trail pseudonymised), then deletes its admin keys, releases its Microsoft tenants,
removes its email budget and the organisation itself, audited as `org.erased`.

Each person is erased in their own transaction, so a retried chunk carries on with those
left. The history holds the organisation's id and counts only; the counts show in the flow's
current details, and `GET /api/v1/orgs/{id}` shows the people left until it answers 404."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.inputs import OrgChunkInput, OrgEraseChunk, OrgErasedInput, OrgErasedResult
    from activities.orgs import OrgActivities
    from core.search_attributes import SSO_STEP
    from workflows.common import DB_RETRY, required, run_step

# Erasing a person takes several Temporal calls (their flows ended, their runs listed and
# deleted): a chunk of 50 a minute or so; heartbeats after each person.
CHUNK_TIMEOUT = timedelta(minutes=15)
CHUNK_HEARTBEAT = timedelta(seconds=60)


def org_erase_workflow_id(org_id: object) -> str:
    return f"org-erase-{org_id}"


@dataclass
class OrgEraseInput:
    org_id: str
    actor: str
    chunk_size: int = 50


@dataclass
class OrgEraseOutcome:
    people_erased: int
    keys_deleted: int
    tenants_released: list[str]


@workflow.defn(name="OrgErasure")
class OrgErasureWorkflow:
    @workflow.run
    async def run(self, start: OrgEraseInput | None = None) -> OrgEraseOutcome:
        data = required(start, "This start")
        erased = 0
        while True:
            chunk: OrgEraseChunk = await workflow.execute_activity_method(
                OrgActivities.erase_org_chunk,
                OrgChunkInput(org_id=data.org_id, actor=data.actor, limit=data.chunk_size),
                start_to_close_timeout=CHUNK_TIMEOUT,
                heartbeat_timeout=CHUNK_HEARTBEAT,
                retry_policy=DB_RETRY,
                summary="Erase a chunk of the organisation's people",
            )
            erased += chunk.erased
            workflow.set_current_details(f"Erasing people: {erased} erased, {chunk.left} left")
            if chunk.left > 0:
                continue
            result: OrgErasedResult = await run_step(
                OrgActivities.finish_org_erasure,
                OrgErasedInput(org_id=data.org_id, actor=data.actor, people_erased=erased),
                "Delete the organisation's keys, tenants, budget and row",
            )
            if result.done:  # else people were added meanwhile: erase them first
                break
        workflow.set_current_details(
            f"Erased: {erased} people, {result.keys_deleted} keys, "
            f"{len(result.tenants_released)} tenants released"
        )
        workflow.upsert_search_attributes([SSO_STEP.value_set("erased")])
        return OrgEraseOutcome(
            people_erased=erased, keys_deleted=result.keys_deleted, tenants_released=result.tenants_released
        )
