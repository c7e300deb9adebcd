"""Custom search attributes ops filter on in the Temporal UI. No personal data goes here."""

from temporalio.common import SearchAttributeKey

SSO_STEP = SearchAttributeKey.for_keyword("SsoStep")
SSO_STAFF_ID = SearchAttributeKey.for_keyword("SsoStaffId")

ALL = (SSO_STEP, SSO_STAFF_ID)
