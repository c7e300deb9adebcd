"""Refresh tokens of the OpenID Connect provider: opaque, 256 random bits, recognisable by
their prefix, and kept only as an HMAC under the deployment's secret key."""

from __future__ import annotations

import secrets

from core.crypto import token_hash
from core.settings import Settings

REFRESH_PREFIX = "ssort_"
REFRESH_PURPOSE = "oidc-refresh-token"
MAX_TOKEN_LENGTH = 200


def new_refresh_token() -> str:
    return REFRESH_PREFIX + secrets.token_urlsafe(32)


def refresh_hash(settings: Settings, token: str) -> str:
    return token_hash(settings.secret_key.get_secret_value(), REFRESH_PURPOSE, token)
