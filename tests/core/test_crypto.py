import base64
import logging

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.exceptions import ApplicationError

from core.codec import (
    ENCODING,
    KEY_ID,
    REASON,
    UNAUTHENTICATED,
    EncryptionCodec,
    PayloadConverter,
)
from core.crypto import DecryptionError, Keyring, mask_email, new_token, token_hash
from core.logging import JsonFormatter, RedactingFilter, redact

OLD = b"o" * 32
NEW = b"n" * 32


def test_keyring_rotation_decrypts_old_and_encrypts_with_newest() -> None:
    old_ring = Keyring([OLD])
    sealed_with_old = old_ring.seal(b"secret")
    rotated = Keyring([NEW, OLD])
    assert rotated.unseal(sealed_with_old) == b"secret"
    assert rotated.seal(b"x").split(".")[0] == rotated.current_key_id != old_ring.current_key_id


def test_tampered_or_unknown_key_fails() -> None:
    ring = Keyring([NEW])
    key_id, blob = ring.encrypt(b"secret")
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(DecryptionError):
        ring.decrypt(key_id, tampered)
    with pytest.raises(DecryptionError, match="unknown"):
        Keyring([OLD]).decrypt(key_id, blob)


def test_associated_data_binds_context() -> None:
    ring = Keyring([NEW])
    sealed = ring.seal(b"body", associated_data=b"outbox")
    with pytest.raises(DecryptionError):
        ring.unseal(sealed, associated_data=b"other")


def test_tokens_have_256_bits_and_are_unique() -> None:
    tokens = {new_token() for _ in range(1000)}
    assert len(tokens) == 1000
    assert all(len(base64.urlsafe_b64decode(t + "=")) == 32 for t in tokens)


def test_token_hash_is_keyed_and_purpose_bound() -> None:
    token = new_token()
    digest = token_hash("k1" * 20, "setup", token)
    assert digest.startswith("setup_")
    assert token not in digest
    assert digest != token_hash("k2" * 20, "setup", token)
    assert digest != token_hash("k1" * 20, "reset", token)


def test_mask_email() -> None:
    assert mask_email("jo.bloggs@example.com") == "j***@example.com"


async def test_payload_codec_round_trip_and_rotation() -> None:
    payload = Payload(metadata={"encoding": b"json/plain"}, data=b'{"token":"abc"}')
    old_codec = EncryptionCodec(Keyring([OLD]))
    [encoded] = await old_codec.encode([payload])
    assert encoded.metadata["encoding"] == ENCODING
    assert b"abc" not in encoded.SerializeToString()
    [decoded] = await EncryptionCodec(Keyring([NEW, OLD])).decode([encoded])
    assert decoded == payload


async def test_codec_names_its_key_in_the_payload_metadata() -> None:
    """The key id travels with each payload, so after a rotation history written with the old
    key still decodes, new payloads use the new key, and a removed key is named when missing."""
    payload = Payload(metadata={"encoding": b"json/plain"}, data=b'"x"')
    [old] = await EncryptionCodec(Keyring([OLD])).encode([payload])
    rotated = EncryptionCodec(Keyring([NEW, OLD]))
    [new] = await rotated.encode([payload])
    assert old.metadata[KEY_ID].decode() == Keyring([OLD]).current_key_id
    assert new.metadata[KEY_ID].decode() == Keyring([NEW]).current_key_id != Keyring([OLD]).current_key_id
    assert OLD not in old.SerializeToString() and NEW not in new.SerializeToString()
    assert await rotated.decode([old, new]) == [payload, payload]
    # A removed key: not decoded (and no raise, see core/codec.py), the key id named.
    [missing] = await EncryptionCodec(Keyring([NEW])).decode([old])
    assert missing.metadata["encoding"] == UNAUTHENTICATED
    assert Keyring([OLD]).current_key_id.encode() in missing.metadata[REASON]


@pytest.mark.parametrize(
    "payload",
    [
        Payload(metadata={"encoding": b"binary/null"}),
        Payload(metadata={"encoding": b"json/plain"}, data=b'{"actor":"admin-key:forged"}'),
        Payload(metadata={"encoding": ENCODING, KEY_ID: b"nope"}, data=b"x" * 40),
        Payload(metadata={"encoding": UNAUTHENTICATED}),
    ],
)
async def test_codec_never_passes_through_what_it_did_not_encrypt(payload: Payload) -> None:
    """docs/security.md §32: plaintext (or anything not authenticated by the keyring) never comes
    out as a value; it comes out as the marker the payload converter refuses."""
    [decoded] = await EncryptionCodec(Keyring([NEW])).decode([payload])
    assert decoded.metadata["encoding"] == UNAUTHENTICATED and not decoded.data
    with pytest.raises(ApplicationError) as refused:
        PayloadConverter().from_payloads([decoded], [dict])
    assert refused.value.type == "Unauthenticated" and refused.value.non_retryable


async def test_codec_refuses_tampered_and_other_key_ciphertext() -> None:
    payload = Payload(metadata={"encoding": b"json/plain"}, data=b'"x"')
    [good] = await EncryptionCodec(Keyring([NEW])).encode([payload])
    tampered = Payload()
    tampered.CopyFrom(good)
    tampered.data = good.data[:-1] + bytes([good.data[-1] ^ 1])
    [other] = await EncryptionCodec(Keyring([OLD])).encode([payload])
    decoded = await EncryptionCodec(Keyring([NEW])).decode([good, tampered, other])
    assert decoded[0] == payload
    assert [d.metadata["encoding"] for d in decoded[1:]] == [UNAUTHENTICATED] * 2


def test_access_log_redacts_setup_tokens() -> None:
    token = new_token()
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:1", "GET", f"/sso/setup/{token}?x=1", "1.1", 200),
        None,
    )
    RedactingFilter().filter(record)
    line = JsonFormatter().format(record)
    assert token not in line
    assert "/sso/setup/[redacted]?x=1" in line
    assert redact(f"https://h/sso/setup/{token}") == "https://h/sso/setup/[redacted]"
    # An app's logout request carries its ID token as the hint.
    logout = "GET /oidc/logout?id_token_hint=eyJ.a.b&state=s HTTP/1.1"
    assert redact(logout) == "GET /oidc/logout?[redacted] HTTP/1.1"


def test_access_log_keeps_no_query_of_an_app_request_nor_a_login_hint() -> None:
    email = "jo.bloggs@agency.example"
    authorize = f"/oidc/authorize?client_id=crm&login_hint={email}&state=s&nonce=n"
    login = f"/sso/login?return_to=%2Fsso%2Fauthorize%2Fresume&login_hint={email.replace('@', '%40')}"
    for path, shown in (
        (authorize, "/oidc/authorize?[redacted]"),
        (login, "/sso/login?return_to=%2Fsso%2Fauthorize%2Fresume&login_hint=[redacted]"),
    ):
        record = logging.LogRecord(
            "uvicorn.access",
            logging.INFO,
            __file__,
            1,
            '%s - "%s %s HTTP/%s" %d',
            ("127.0.0.1:1", "GET", path, "1.1", 303),
            None,
        )
        RedactingFilter().filter(record)
        line = JsonFormatter().format(record)
        assert "jo.bloggs" not in line and shown in line, line
