"""A software passkey for the in-process tests: an EC P-256 key made with `cryptography`,
answering WebAuthn registration and assertion options as an authenticator would (attestation
"none"), with knobs for what an attacker or a broken authenticator would change: the relying
party id, the origin, the signature counter, user verification."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import cbor2
import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from webauthn.helpers import bytes_to_base64url

from core.db import SessionFactory
from core.models import Passkey
from core.settings import Settings
from tests.support.accounts import Browser, hidden_fields

UP, UV, BE, BS, AT = 0x01, 0x04, 0x08, 0x10, 0x40


@dataclass
class SoftKey:
    rp_id: str
    origin: str
    user_handle: bytes
    synced: bool = False
    count: int = 0
    credential_id: bytes = field(default_factory=lambda: os.urandom(32))
    private: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    def cose_public_key(self) -> bytes:
        numbers = self.private.public_key().public_numbers()
        return cbor2.dumps(
            {1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"), -3: numbers.y.to_bytes(32, "big")}
        )

    def _flags(self, verified: bool) -> int:
        flags = UP | (UV if verified else 0)
        return flags | (BE | BS if self.synced else 0)

    def _client_data(self, kind: str, options: dict[str, Any], origin: str | None) -> bytes:
        return json.dumps(
            {
                "type": kind,
                "challenge": options["challenge"],
                "origin": origin or self.origin,
                "crossOrigin": False,
            }
        ).encode()

    def register(
        self, options: dict[str, Any], *, rp_id: str | None = None, origin: str | None = None
    ) -> str:
        """The browser's answer to navigator.credentials.create(options), as JSON."""
        auth_data = (
            hashlib.sha256((rp_id or self.rp_id).encode()).digest()
            + bytes([self._flags(True) | AT])
            + struct.pack(">I", self.count)
            + bytes(16)
            + struct.pack(">H", len(self.credential_id))
            + self.credential_id
            + self.cose_public_key()
        )
        client_data = self._client_data("webauthn.create", options, origin)
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        return self._answer(
            {
                "clientDataJSON": bytes_to_base64url(client_data),
                "attestationObject": bytes_to_base64url(attestation),
                "transports": ["internal"],
            }
        )

    def sign_in(
        self,
        options: dict[str, Any],
        *,
        rp_id: str | None = None,
        origin: str | None = None,
        count: int | None = None,
        verified: bool = True,
    ) -> str:
        """The answer to navigator.credentials.get(options); the counter moves on by one
        unless `count` says what to send."""
        self.count = self.count + 1 if count is None else count
        auth_data = (
            hashlib.sha256((rp_id or self.rp_id).encode()).digest()
            + bytes([self._flags(verified)])
            + struct.pack(">I", self.count)
        )
        client_data = self._client_data("webauthn.get", options, origin)
        signature = self.private.sign(
            auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256())
        )
        return self._answer(
            {
                "clientDataJSON": bytes_to_base64url(client_data),
                "authenticatorData": bytes_to_base64url(auth_data),
                "signature": bytes_to_base64url(signature),
                "userHandle": bytes_to_base64url(self.user_handle),
            }
        )

    def _answer(self, response: dict[str, Any]) -> str:
        return json.dumps(
            {
                "id": bytes_to_base64url(self.credential_id),
                "rawId": bytes_to_base64url(self.credential_id),
                "type": "public-key",
                "response": response,
                "clientExtensionResults": {},
                "authenticatorAttachment": "platform",
            }
        )


def soft_key(settings: Settings, staff_id: uuid.UUID) -> SoftKey:
    """A key for this deployment's relying party, naming this person."""
    parts = urlsplit(settings.public_url)
    return SoftKey(
        rp_id=parts.hostname or "", origin=f"{parts.scheme}://{parts.netloc}", user_handle=staff_id.bytes
    )


async def store_passkey(
    sessions: SessionFactory, account_id: uuid.UUID, key: SoftKey, name: str = "Phone"
) -> None:
    """The key as the account page would have added it."""
    async with sessions() as session:
        session.add(
            Passkey(
                account_id=account_id,
                credential_id=bytes_to_base64url(key.credential_id),
                public_key=bytes_to_base64url(key.cose_public_key()),
                sign_count=key.count,
                transports=["internal"],
                name=name,
                backup_eligible=key.synced,
                backed_up=key.synced,
            )
        )
        await session.commit()


async def options(browser: Browser, page: httpx.Response, action: str, ceremony: str) -> dict[str, Any]:
    """The WebAuthn options the page's form at `action` asks for, for `ceremony`."""
    csrf = hidden_fields(page, action)["csrf"]
    answer = await browser.post("/sso/passkeys/options", {"csrf": csrf, "ceremony": ceremony})
    assert answer.status_code == 200, answer.text
    return dict(json.loads(answer.text))


async def passwordless(browser: Browser, key: SoftKey, **knobs: Any) -> httpx.Response:
    """Sign in with the passkey alone, from the sign-in page."""
    page = await browser.get("/sso/login")
    asked = await options(browser, page, "/sso/login/passkey", "signin")
    return await browser.submit(page, "/sso/login/passkey", credential=key.sign_in(asked, **knobs))
