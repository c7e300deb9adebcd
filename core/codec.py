"""Temporal payload encryption: every payload in history is AES-GCM ciphertext."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import temporalio.converter
from temporalio.api.common.v1 import Payload

from core.crypto import Keyring
from core.settings import Settings

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"


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
        decoded = []
        for payload in payloads:
            if payload.metadata.get("encoding", b"") != ENCODING:
                decoded.append(payload)
                continue
            key_id = payload.metadata.get(KEY_ID, b"").decode()
            inner = Payload()
            inner.ParseFromString(self._keyring.decrypt(key_id, payload.data))
            decoded.append(inner)
        return decoded


def keyring_from_settings(settings: Settings) -> Keyring:
    return Keyring.from_b64([k.get_secret_value() for k in settings.encryption_keys])


def data_converter(settings: Settings) -> temporalio.converter.DataConverter:
    return dataclasses.replace(
        temporalio.converter.default(),
        payload_codec=EncryptionCodec(keyring_from_settings(settings)),
        # Failure messages would otherwise sit in history as plaintext.
        failure_converter_class=temporalio.converter.DefaultFailureConverterWithEncodedAttributes,
    )
