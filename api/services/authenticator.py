"""The authenticator app step, wherever MFA is set up (the setup flow, the account page): one
QR code and key, shown with the same words."""

from __future__ import annotations

import base64
from typing import Any

import pyotp
import qrcode
import qrcode.image.svg

from core.codec import keyring_from_settings
from core.models import SsoAccount
from core.settings import Settings
from core.totp import new_secret, totp_aad


def ensure_secret(settings: Settings, account: SsoAccount) -> None:
    """A secret to enrol, sealed to its owner; kept while the person has not finished."""
    if account.totp_secret_encrypted is None:
        keyring = keyring_from_settings(settings)
        account.totp_secret_encrypted = keyring.seal(new_secret().encode(), totp_aad(account.staff_id))
        account.totp_last_step = None


def page_values(settings: Settings, account: SsoAccount) -> dict[str, Any]:
    """What the setup_mfa page shows: the key for typing in (in groups of four), the otpauth
    URI and the QR code of it as an SVG data URI."""
    assert account.totp_secret_encrypted is not None
    keyring = keyring_from_settings(settings)
    secret = keyring.unseal(account.totp_secret_encrypted, totp_aad(account.staff_id)).decode()
    uri = pyotp.TOTP(secret).provisioning_uri(name=account.login_email, issuer_name=settings.brand_name)
    svg = qrcode.make(uri, image_factory=qrcode.image.svg.SvgPathImage, box_size=8, border=2).to_string()
    return {
        "secret": " ".join(secret[i : i + 4] for i in range(0, len(secret), 4)),
        "otpauth_uri": uri,
        "qr": "data:image/svg+xml;base64," + base64.b64encode(svg).decode(),
        "email": account.login_email,
    }
