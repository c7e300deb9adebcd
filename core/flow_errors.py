"""The `type` of every ApplicationError a flow raises or reads: the workflows, activities and
codec raise them, the web app's flow client and pages tell them apart. They are recorded in
workflow histories, so a value never changes (a renamed constant keeps its string)."""

from __future__ import annotations

# A step the flow refuses (update validators and handlers).
BAD_REQUEST = "BadRequest"
BUSY = "Busy"
CODE_SENDING = "CodeSending"
LINK_EXPIRED = "LinkExpired"
LINK_SPENT = "LinkSpent"
MFA_REQUIRED = "MfaRequired"
MFA_ALREADY_EXTENDED = "MfaAlreadyExtended"
MFA_NOTHING_DUE = "MfaNothingDue"
RESET_DONE = "ResetDone"
RESET_ENDED = "ResetEnded"
SETUP_ENDED = "SetupEnded"
SETUP_ALREADY_ENDED = "SetupAlreadyEnded"
TOO_MANY_ATTEMPTS = "TooManyAttempts"
TOO_MANY_CODES = "TooManyCodes"
TOO_SOON = "TooSoon"
# Followed by ":<the flow's step>", e.g. "WrongStep:code_sent".
WRONG_STEP = "WrongStep"

# A pause, resume or cancel a staff batch cannot take in its state (paused already, ended).
BATCH_STATE = "BatchState"

# A start, update or signal without a payload sealed with this deployment's key.
UNAUTHENTICATED = "Unauthenticated"

# Raised by activities and read by the workflow that called them (or by its retry policy,
# which stops retrying on them).
ACCOUNT_MISSING = "AccountMissing"
BAD_SEAL = "BadSeal"
ENTRA_REFUSED = "EntraRefused"
ENTRA_UNAVAILABLE = "EntraUnavailable"
PERMANENT_EMAIL_ERROR = "PermanentEmailError"
STAFF_NOT_FOUND = "StaffNotFound"
# SETUP_ENDED too: the setup was cancelled or superseded while its email step ran.
# A back-channel logout URI the guard refuses (core/oidc/logout.py): retrying can't help.
LOGOUT_URI_REFUSED = "LogoutUriRefused"
