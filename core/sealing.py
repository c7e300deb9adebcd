"""Sealed boxes for values only workers may read (passwords and codes on their way to an
activity). The web app holds the public key and can seal but not open; workflow history,
even decoded with the codec key, shows only the sealed form.

X25519 key agreement with a fresh ephemeral key per message, HKDF-SHA256, AES-256-GCM.
"""

from __future__ import annotations

import base64
import os

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from core.crypto import DecryptionError

VERSION = "sealed1"
_RAW = serialization.Encoding.Raw


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_keypair() -> tuple[str, str]:
    """(private, public), urlsafe base64 of the raw 32-byte keys."""
    private = X25519PrivateKey.generate()
    public = private.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)
    raw_private = private.private_bytes(_RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    return _b64(raw_private), _b64(public)


def public_key_of(private_b64: str) -> str:
    private = X25519PrivateKey.from_private_bytes(_unb64(private_b64))
    return _b64(private.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw))


def _key(shared: bytes, ephemeral: bytes, recipient: bytes, context: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"sso-seal:" + ephemeral + recipient + context
    ).derive(shared)


def seal(public_b64: str, plaintext: bytes, context: bytes) -> str:
    """`context` binds the box to its use (e.g. b"password:<workflow id>"): no replay elsewhere."""
    recipient_raw = _unb64(public_b64)
    recipient = X25519PublicKey.from_public_bytes(recipient_raw)
    ephemeral = X25519PrivateKey.generate()
    ephemeral_raw = ephemeral.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)
    key = _key(ephemeral.exchange(recipient), ephemeral_raw, recipient_raw, context)
    nonce = os.urandom(12)
    ciphertext = AESGCM(key).encrypt(nonce, plaintext, context)
    return f"{VERSION}.{_b64(ephemeral_raw + nonce + ciphertext)}"


def unseal(private_b64: str, sealed: str, context: bytes) -> bytes:
    version, _, body = sealed.partition(".")
    if version != VERSION:
        raise DecryptionError("not a sealed box")
    private = X25519PrivateKey.from_private_bytes(_unb64(private_b64))
    recipient_raw = private.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)
    raw = _unb64(body)
    ephemeral_raw, nonce, ciphertext = raw[:32], raw[32:44], raw[44:]
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(ephemeral_raw))
        return AESGCM(_key(shared, ephemeral_raw, recipient_raw, context)).decrypt(nonce, ciphertext, context)
    except Exception as exc:
        raise DecryptionError("sealed box failed authentication") from exc


def password_context(workflow_id: str) -> bytes:
    return f"password:{workflow_id}".encode()


def totp_context(workflow_id: str) -> bytes:
    return f"totp:{workflow_id}".encode()


def entra_context(workflow_id: str) -> bytes:
    return f"entra:{workflow_id}".encode()
