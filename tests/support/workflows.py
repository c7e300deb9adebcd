"""Helpers for the workflow tests on the time-skipping server: polling, refused updates,
the payloads a history holds."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

T = TypeVar("T")


async def eventually(read: Callable[..., Awaitable[T]], ok: Callable[[T], bool], *args: Any) -> T:
    """Poll `read(*args)` until `ok` (the test's asyncio.timeout guards against a hang)."""
    while True:
        value = await read(*args)
        if ok(value):
            return value
        await asyncio.sleep(0.02)


async def rejected(call: Awaitable[Any]) -> ApplicationError:
    """The validator's refusal of an update."""
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await call
    cause = refused.value.cause
    assert isinstance(cause, ApplicationError)
    return cause


async def not_found(call: Awaitable[Any]) -> RPCError:
    """The server's refusal of an update to a completed flow."""
    with pytest.raises(RPCError) as refused:
        await call
    assert refused.value.status == RPCStatusCode.NOT_FOUND
    return refused.value


def payloads(message: Message, path: str = "") -> Iterator[tuple[str, Payload]]:
    """Every Payload inside a proto message, except search attribute values (plaintext by
    design: codecs don't touch them)."""
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None or descriptor.name == "search_attributes":
            continue
        name = f"{path}.{descriptor.name}"
        if isinstance(value, Message):
            items = [(name, value)]
        elif hasattr(value, "items"):
            items = [(f"{name}[{key}]", item) for key, item in value.items()]
        else:
            items = [(f"{name}[{index}]", item) for index, item in enumerate(value)]
        for item_path, item in items:
            if not isinstance(item, Message):
                continue
            if isinstance(item, Payload):
                yield item_path, item
            else:
                yield from payloads(item, item_path)


def fields_named(value: Any, names: set[str]) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key in names:
                yield key, item
            yield from fields_named(item, names)
    elif isinstance(value, list):
        for item in value:
            yield from fields_named(item, names)
