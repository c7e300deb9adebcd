"""Symmetric encryption with rotating keys, token hashing, and masking for display."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12
# What a setup link's token is hashed for: the activity that issues the link and the web
# app that looks it up must agree, and the web app does not import activities.
LINK_PURPOSE = "setup"


class DecryptionError(ValueError):
    pass


@dataclass(frozen=True)
class Key:
    key_id: str
    aead: AESGCM


class Keyring:
    """AES-256-GCM keys, newest first: encrypt with the first, decrypt with whichever matches."""

    def __init__(self, raw_keys: Sequence[bytes]) -> None:
        if not raw_keys:
            raise ValueError("at least one encryption key is required")
        self._keys = [Key(key_id_for(raw), AESGCM(raw)) for raw in raw_keys]
        self._by_id = {key.key_id: key for key in self._keys}

    @classmethod
    def from_b64(cls, encoded: Sequence[str]) -> Keyring:
        return cls([base64.urlsafe_b64decode(k + "=" * (-len(k) % 4)) for k in encoded])

    @property
    def current_key_id(self) -> str:
        return self._keys[0].key_id

    def encrypt(self, plaintext: bytes, associated_data: bytes = b"") -> tuple[str, bytes]:
        key = self._keys[0]
        nonce = os.urandom(NONCE_BYTES)
        return key.key_id, nonce + key.aead.encrypt(nonce, plaintext, associated_data)

    def decrypt(self, key_id: str, blob: bytes, associated_data: bytes = b"") -> bytes:
        key = self._by_id.get(key_id)
        if key is None:
            raise DecryptionError(f"unknown encryption key id {key_id!r}")
        try:
            return key.aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], associated_data)
        except Exception as exc:  # InvalidTag carries no message worth keeping
            raise DecryptionError("ciphertext failed authentication") from exc

    def seal(self, plaintext: bytes, associated_data: bytes = b"") -> str:
        """Self-describing text form `kid.base64` for database columns."""
        key_id, blob = self.encrypt(plaintext, associated_data)
        return f"{key_id}.{base64.urlsafe_b64encode(blob).decode()}"

    def unseal(self, sealed: str, associated_data: bytes = b"") -> bytes:
        key_id, _, encoded = sealed.partition(".")
        return self.decrypt(key_id, base64.urlsafe_b64decode(encoded), associated_data)


def key_id_for(raw_key: bytes) -> str:
    # A fingerprint, not the key: lets operators see which key sealed a payload.
    return hashlib.sha256(b"sso-key-id:" + raw_key).hexdigest()[:12]


def new_token() -> str:
    """256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def token_hash(secret_key: str, purpose: str, token: str) -> str:
    """Keyed hash for lookups: a leaked table row cannot be turned back into a working token."""
    digest = hmac.new(secret_key.encode(), f"{purpose}:{token}".encode(), hashlib.sha256).hexdigest()
    return f"{purpose}_{digest}"


def mask_email(address: str) -> str:
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}" if domain else "***"


def new_email_code() -> str:
    """Six random digits."""
    return f"{secrets.randbelow(1_000_000):06d}"


def code_digest(secret_key: str, purpose: str, scope: str, code: str) -> str:
    """What travels instead of an emailed code: bound to its purpose and flow, useless
    without the secret key even to someone who can read decoded workflow history."""
    return token_hash(secret_key, f"code-{purpose}", f"{scope}:{code.strip()}")
