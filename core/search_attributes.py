"""Custom search attributes ops filter on in the Temporal UI. No personal data goes here."""

from typing import Any

from temporalio.common import SearchAttributeIndexedValueType, SearchAttributeKey

SSO_STEP = SearchAttributeKey.for_keyword("SsoStep")
SSO_STAFF_ID = SearchAttributeKey.for_keyword("SsoStaffId")
# The MFA obligation (workflows/mfa_enrollment.py): its step, deadline and reminders sent.
SSO_MFA_STEP = SearchAttributeKey.for_keyword("SsoMfaStep")
SSO_MFA_DUE = SearchAttributeKey.for_datetime("SsoMfaDue")
SSO_MFA_REMINDERS = SearchAttributeKey.for_int("SsoMfaReminders")
# A staff batch (workflows/staff_batch.py): running, paused, waiting_for_email_budget,
# cancelled or done (core.batches.BatchState); set once per change.
SSO_BATCH_STATE = SearchAttributeKey.for_keyword("SsoBatchState")

ALL = (SSO_STEP, SSO_STAFF_ID, SSO_MFA_STEP, SSO_MFA_DUE, SSO_MFA_REMINDERS, SSO_BATCH_STATE)

# The type names the Temporal CLI takes (`--search-attribute Name=Type`).
CLI_TYPES = {
    SearchAttributeIndexedValueType.KEYWORD: "Keyword",
    SearchAttributeIndexedValueType.INT: "Int",
    SearchAttributeIndexedValueType.DATETIME: "Datetime",
}


def cli_type(key: SearchAttributeKey[Any]) -> str:
    return CLI_TYPES[key.indexed_value_type]
