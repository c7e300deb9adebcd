"""Temporal payload encryption: every payload in history is AES-GCM ciphertext, and nothing
else is believed.

Anyone who reaches the Temporal frontend can start, signal, update and query our flows. The
key is what tells our payloads from theirs: AES-GCM authenticates each payload, so a payload
that is not ours (plaintext, another key, tampered) is never decoded into a value. Decoding
must not raise, though: a raise fails the workflow *task*, and a forged signal in history
would then wedge the flow for good. So the codec turns such a payload into a marker, and the
payload converter refuses the marker with a non-retryable ApplicationError, which the SDK
turns into: a start fails the run at once, an update is rejected before its validator, a
signal is dropped (with a log line), a query fails, an activity input fails the activity.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import temporalio.converter
from temporalio.api.common.v1 import Payload
from temporalio.exceptions import ApplicationError

from core.crypto import DecryptionError, Keyring
from core.settings import Settings

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
UNAUTHENTICATED = b"binary/unauthenticated"
REASON = "unauthenticated-reason"
UNAUTHENTICATED_ERROR = "Unauthenticated"


def unauthenticated(reason: str) -> Payload:
    return Payload(metadata={"encoding": UNAUTHENTICATED, REASON: reason.encode()})


def is_unauthenticated(payload: Payload) -> bool:
    return payload.metadata.get("encoding", b"") == UNAUTHENTICATED


class EncryptionCodec(temporalio.converter.PayloadCodec):
    def __init__(self, keyring: Keyring) -> None:
        self._keyring = keyring

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        encoded = []
        for payload in payloads:
            key_id, blob = self._keyring.encrypt(payload.SerializeToString())
            encoded.append(
                Payload(
                    metadata={"encoding": ENCODING, KEY_ID: key_id.encode()},
                    data=blob,
                )
            )
        return encoded

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decode_one(payload) for payload in payloads]

    def decode_one(self, payload: Payload) -> Payload:
        """The payload inside, or a marker when it is not ours (never raises, see above)."""
        if payload.metadata.get("encoding", b"") != ENCODING:
            return unauthenticated("not encrypted")
        key_id = payload.metadata.get(KEY_ID, b"").decode(errors="replace")
        try:
            plain = self._keyring.decrypt(key_id, payload.data)
        except DecryptionError as exc:
            return unauthenticated(str(exc))
        inner = Payload()
        try:
            inner.ParseFromString(plain)
        except Exception:  # authenticated but not a payload: not something we encrypted
            return unauthenticated("not a payload")
        if is_unauthenticated(inner):
            return unauthenticated("a marker cannot be encrypted")
        return inner


class UnauthenticatedPayloadConverter(temporalio.converter.EncodingPayloadConverter):
    """Refuses the codec's marker: nothing a client without the key sent becomes a value."""

    @property
    def encoding(self) -> str:
        return UNAUTHENTICATED.decode()

    def to_payload(self, value: Any) -> Payload | None:
        return None

    def from_payload(self, payload: Payload, type_hint: type | None = None) -> Any:
        reason = payload.metadata.get(REASON, b"").decode(errors="replace")
        # A FailureError: the SDK fails the start, rejects the update or drops the signal,
        # instead of failing the workflow task over and over.
        raise ApplicationError(
            f"Refused a payload not encrypted with this deployment's key ({reason})",
            type=UNAUTHENTICATED_ERROR, non_retryable=True)


class PayloadConverter(temporalio.converter.CompositePayloadConverter):
    def __init__(self) -> None:
        super().__init__(
            UnauthenticatedPayloadConverter(),
            *temporalio.converter.DefaultPayloadConverter.default_encoding_payload_converters)


def keyring_from_settings(settings: Settings) -> Keyring:
    return Keyring.from_b64([k.get_secret_value() for k in settings.encryption_keys])


def data_converter(settings: Settings) -> temporalio.converter.DataConverter:
    """The one converter of every client, worker and Replayer."""
    return dataclasses.replace(
        temporalio.converter.default(),
        payload_converter_class=PayloadConverter,
        payload_codec=EncryptionCodec(keyring_from_settings(settings)),
        # Failure messages would otherwise sit in history as plaintext.
        failure_converter_class=temporalio.converter.DefaultFailureConverterWithEncodedAttributes,
    )
