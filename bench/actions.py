"""Temporal Cloud billable actions, counted from finished histories by its published rules.

Counted: the workflow start; each activity attempt (retries included); each timer started
(explicit, or implied by a wait with a timeout); each search-attribute upsert after the start;
each signal received; each update accepted. Not visible in a history, so not counted here:
updates rejected by a validator, and queries (the pages ask flows for their progress); the
benchmark counts those it sent itself and reports them beside.
"""

from __future__ import annotations

from collections import Counter

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory

CHANGE_VERSION = "TemporalChangeVersion"


def billable_actions(history: WorkflowHistory) -> Counter[str]:
    found: Counter[str] = Counter()
    for event in history.events:
        kind = event.event_type
        if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            found["workflow started"] += 1
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            # One event per activity, carrying how many attempts it took.
            found["activity attempts"] += max(1, event.activity_task_started_event_attributes.attempt)
        elif kind == EventType.EVENT_TYPE_TIMER_STARTED:
            found["timers"] += 1
        elif kind == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes
            if set(fields.indexed_fields) - {CHANGE_VERSION}:
                found["search attribute upserts"] += 1
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            found["signals"] += 1
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            found["updates accepted"] += 1
    return found
