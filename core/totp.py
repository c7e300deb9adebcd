"""TOTP (RFC 6238, SHA-1, 6 digits, 30 s) checked against server time only."""

from __future__ import annotations

import hmac
import uuid
from datetime import datetime

import pyotp

TOTP_DIGITS = 6


def totp_aad(staff_id: uuid.UUID | str) -> bytes:
    """Binds a sealed TOTP secret to its owner: a row copied to another person won't open."""
    return f"totp-secret:{staff_id}".encode()


def new_secret() -> str:
    return pyotp.random_base32(length=32)  # 32 base32 characters = 160 bits


def matching_step(secret: str, code: str, now: datetime) -> int | None:
    """The time step a code belongs to, within one step either side of server time."""
    code = code.strip()
    # ASCII only: the pages turn other digits into these, and compare_digest refuses the rest.
    if len(code) != TOTP_DIGITS or not (code.isascii() and code.isdigit()):
        return None
    totp = pyotp.TOTP(secret, digits=TOTP_DIGITS)
    current = totp.timecode(now)
    for step in (current - 1, current, current + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None
