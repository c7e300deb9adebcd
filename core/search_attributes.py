"""Custom search attributes ops filter on in the Temporal UI. No personal data goes here."""

from typing import Any

from temporalio.common import SearchAttributeIndexedValueType, SearchAttributeKey, SearchAttributePair

SSO_STEP = SearchAttributeKey.for_keyword("SsoStep")
SSO_STAFF_ID = SearchAttributeKey.for_keyword("SsoStaffId")
# The organisation (agency) a flow concerns: ops filter any flow by agency.
SSO_ORG_ID = SearchAttributeKey.for_keyword("SsoOrgId")
# The MFA obligation (workflows/mfa_enrollment.py): its step, deadline and reminders sent.
SSO_MFA_STEP = SearchAttributeKey.for_keyword("SsoMfaStep")
SSO_MFA_DUE = SearchAttributeKey.for_datetime("SsoMfaDue")
SSO_MFA_REMINDERS = SearchAttributeKey.for_int("SsoMfaReminders")
# A staff batch (workflows/staff_batch.py): running, paused, waiting_for_email_budget,
# cancelled or done (core.batches.BatchState); set once per change.
SSO_BATCH_STATE = SearchAttributeKey.for_keyword("SsoBatchState")

ALL = (SSO_STEP, SSO_STAFF_ID, SSO_ORG_ID, SSO_MFA_STEP, SSO_MFA_DUE, SSO_MFA_REMINDERS, SSO_BATCH_STATE)

# The type names the Temporal CLI takes (`--search-attribute Name=Type`).
CLI_TYPES = {
    SearchAttributeIndexedValueType.KEYWORD: "Keyword",
    SearchAttributeIndexedValueType.INT: "Int",
    SearchAttributeIndexedValueType.DATETIME: "Datetime",
}


def cli_type(key: SearchAttributeKey[Any]) -> str:
    return CLI_TYPES[key.indexed_value_type]


def flow_attributes(
    *own: SearchAttributePair[Any], org_id: object, staff_id: object | None = None
) -> list[SearchAttributePair[Any]]:
    """What a flow about a person or an organisation starts with: its own attributes (its
    step...), then whom it concerns (SsoStaffId) and their organisation (SsoOrgId). Every flow
    builds its attributes here, so a new flow is found by agency like the others. An unknown
    organisation (a person removed meanwhile) is left out rather than written empty."""
    pairs = list(own)
    if staff_id is not None:
        pairs.append(SearchAttributePair(SSO_STAFF_ID, str(staff_id)))
    if org_id:
        pairs.append(SearchAttributePair(SSO_ORG_ID, str(org_id)))
    return pairs
