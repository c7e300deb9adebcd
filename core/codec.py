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

The key alone would still let anyone who can read histories copy one flow's ciphertext (a
`skip_mfa`, a `cancel`, an activity's result) into another flow. So each payload is bound to
the flow it was made for: the SDK hands the codec a serialization context on every workflow
path (the target's id for child starts and external signals, the workflow's id for its
activities), and the codec puts the namespace and workflow id into the AES-GCM associated
data. The binding is also named in plaintext metadata, so a codec without a context (the
Temporal UI's codec endpoint, `sso audit boundary`) can still read and check a payload.
Payloads from before the binding carry none; a flow believes them only until
SSO_TEMPORAL_UNBOUND_UNTIL (replays of flows that were running at deploy).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import temporalio.converter
from temporalio.api.common.v1 import Payload
from temporalio.exceptions import ApplicationError

from core import flow_errors
from core.crypto import DecryptionError, Keyring
from core.settings import Settings

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
BINDING = "encryption-binding"  # "<namespace>/<workflow id>": namespaces hold no "/"
BINDING_AD = b"agentos-sso flow binding v1\n"
OTHER_FLOW = "made for another flow"
NOT_BOUND = "not bound to a flow"
CONTEXT_REASONS = (OTHER_FLOW, NOT_BOUND)
UNAUTHENTICATED = b"binary/unauthenticated"
REASON = "unauthenticated-reason"
UNAUTHENTICATED_ERROR = flow_errors.UNAUTHENTICATED


def unauthenticated(reason: str) -> Payload:
    return Payload(metadata={"encoding": UNAUTHENTICATED, REASON: reason.encode()})


def refusal(reason: str) -> str:
    if reason in CONTEXT_REASONS:
        return f"Refused a payload encrypted with this deployment's key but {reason}"
    return f"Refused a payload not encrypted with this deployment's key ({reason})"


def is_unauthenticated(payload: Payload) -> bool:
    return payload.metadata.get("encoding", b"") == UNAUTHENTICATED


def binding_of(namespace: str, workflow_id: str) -> str:
    return f"{namespace}/{workflow_id}"


class EncryptionCodec(temporalio.converter.PayloadCodec, temporalio.converter.WithSerializationContext):
    """Without a binding (no workflow in the context) it encodes unbound payloads and decodes
    a bound one with the binding the payload names; with one, it encodes for that flow and
    decodes only what was made for it."""

    def __init__(
        self,
        keyring: Keyring,
        unbound_until: datetime | None = None,
        binding: str | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._keyring = keyring
        self._unbound_until = unbound_until
        self._binding = binding
        self._now = now

    def with_context(self, context: temporalio.converter.SerializationContext) -> EncryptionCodec:
        workflow_id = getattr(context, "workflow_id", None)
        namespace = getattr(context, "namespace", None)
        if (
            not isinstance(
                context,
                (
                    temporalio.converter.WorkflowSerializationContext,
                    temporalio.converter.ActivitySerializationContext,
                ),
            )
            or not workflow_id
            or not namespace
        ):
            return self
        return self.bound_to(namespace, workflow_id)

    def bound_to(self, namespace: str, workflow_id: str) -> EncryptionCodec:
        return EncryptionCodec(
            self._keyring, self._unbound_until, binding_of(namespace, workflow_id), self._now
        )

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        encoded = []
        for payload in payloads:
            metadata = {"encoding": ENCODING}
            associated = b""
            if self._binding is not None:
                metadata[BINDING] = self._binding.encode()
                associated = BINDING_AD + self._binding.encode()
            key_id, blob = self._keyring.encrypt(payload.SerializeToString(), associated)
            metadata[KEY_ID] = key_id.encode()
            encoded.append(Payload(metadata=metadata, data=blob))
        return encoded

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decode_one(payload) for payload in payloads]

    def decode_one(self, payload: Payload) -> Payload:
        """The payload inside, or a marker when it is not ours (never raises, see above)."""
        if payload.metadata.get("encoding", b"") != ENCODING:
            return unauthenticated("not encrypted")
        named = payload.metadata.get(BINDING)
        if named is None:
            if self._binding is not None and not self._unbound_open():
                return unauthenticated(NOT_BOUND)
            associated = b""
        else:
            if self._binding is not None and named != self._binding.encode():
                return unauthenticated(OTHER_FLOW)
            associated = BINDING_AD + named
        key_id = payload.metadata.get(KEY_ID, b"").decode(errors="replace")
        try:
            plain = self._keyring.decrypt(key_id, payload.data, associated)
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

    def _unbound_open(self) -> bool:
        """Payloads written before the binding: believed until the flows running at deploy
        are over. After that an unbound payload can only be a copy of an old one."""
        return self._unbound_until is not None and self._now() < self._unbound_until


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
        raise ApplicationError(refusal(reason), type=UNAUTHENTICATED_ERROR, non_retryable=True)


class PayloadConverter(temporalio.converter.CompositePayloadConverter):
    def __init__(self) -> None:
        super().__init__(
            UnauthenticatedPayloadConverter(),
            *temporalio.converter.DefaultPayloadConverter.default_encoding_payload_converters,
        )


def keyring_from_settings(settings: Settings) -> Keyring:
    return Keyring.from_b64([k.get_secret_value() for k in settings.encryption_keys])


def codec(settings: Settings, unbound_until: datetime | None = None) -> EncryptionCodec:
    return EncryptionCodec(keyring_from_settings(settings), unbound_until or settings.temporal_unbound_until)


def data_converter(
    settings: Settings, unbound_until: datetime | None = None
) -> temporalio.converter.DataConverter:
    """The one converter of every client, worker and Replayer. `unbound_until` is what
    core.deployment.unbound_payloads_until found, when the caller looked it up."""
    return dataclasses.replace(
        temporalio.converter.default(),
        payload_converter_class=PayloadConverter,
        payload_codec=codec(settings, unbound_until),
        # Failure messages would otherwise sit in history as plaintext.
        failure_converter_class=temporalio.converter.DefaultFailureConverterWithEncodedAttributes,
    )
