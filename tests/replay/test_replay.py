"""Histories recorded before a change replay with the current workflow code.

Every file in histories/ (recorded with record_histories.py, at 980d269 for the first set;
the leave, email change, MFA rollout and logout flows at c125eba)
is replayed with the current workflow classes and the project's data converter: a change
that alters the commands an existing flow emits without `workflow.patched` fails here.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from core.codec import BINDING, data_converter
from tests.support.config import make_settings
from workflows.email_change import StaffEmailChangeWorkflow
from workflows.entra import EntraLinkWorkflow
from workflows.leave import StaffLeaveWorkflow
from workflows.logout import SessionLogoutWorkflow
from workflows.mfa_rollout import MfaPolicyRolloutWorkflow
from workflows.notices import PasswordChangedNoticeWorkflow
from workflows.reset import PasswordResetWorkflow
from workflows.setup import SsoSetupWorkflow
from workflows.staff_batch import StaffBatchWorkflow

HISTORIES = Path(__file__).parent / "histories"
FILES = sorted(HISTORIES.glob("*.json"))
PREFIXES = {
    "setup": "SsoSetup",
    "reset": "PasswordReset",
    "entra": "EntraLink",
    "notice": "PasswordChangedNotice",
    "batch": "StaffBatch",
    "leave": "StaffLeave",
    "email_change": "StaffEmailChange",
    "rollout": "MfaPolicyRollout",
    "logout": "SessionLogout",
}
WORKFLOWS = [
    SsoSetupWorkflow,
    PasswordResetWorkflow,
    PasswordChangedNoticeWorkflow,
    EntraLinkWorkflow,
    StaffBatchWorkflow,
    StaffLeaveWorkflow,
    StaffEmailChangeWorkflow,
    MfaPolicyRolloutWorkflow,
    SessionLogoutWorkflow,
]
# What record_histories.py and its stand-in activities put into payloads and failures in the
# clear (addresses, codes and their digests, passwords, an IP, actors, apps, error messages):
# none of it may be readable in a committed history.
PLAINTEXT = (
    "@example.com",
    "digest-",
    "wrong",
    "123456",
    "Correct-Horse-Battery-Staple-42",
    "Another-Long-Passphrase-77",
    "203.0.113.7",
    "admin-key:",
    "Jo Example",
    "app-one",
    "refused",
    "answered 503",
)
ADDRESS = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
UNBOUND_UNTIL = datetime(2100, 1, 1, tzinfo=UTC)
ENCRYPTED = base64.b64encode(b"binary/encrypted").decode()


def _payloads(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], dict]]:
    if isinstance(node, dict):
        if "metadata" in node and "encoding" in node.get("metadata", {}):
            yield path, node
        for key, value in node.items():
            yield from _payloads(value, (*path, key))
    elif isinstance(node, list):
        for item in node:
            yield from _payloads(item, path)


def _binding(text: str) -> tuple[str, str] | None:
    """The flow a later recording's payloads are bound to (core/codec.py): it replays only
    under that namespace and workflow id."""
    for _, payload in _payloads(json.loads(text)):
        named = payload["metadata"].get(BINDING)
        if named is not None:
            namespace, workflow_id = base64.b64decode(named).decode().split("/", 1)
            return namespace, workflow_id
    return None


def test_there_are_histories_of_every_workflow_type():
    kinds = {f.name.split("-", 1)[0] for f in FILES}
    assert kinds == set(PREFIXES)


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
async def test_history_replays_with_current_code(path: Path):
    text = path.read_text(encoding="utf-8")
    namespace, workflow_id = _binding(text) or ("ReplayNamespace", f"replay-{path.stem}")
    history = WorkflowHistory.from_json(workflow_id, text)
    first = json.loads(text)["events"][0]["workflowExecutionStartedEventAttributes"]
    assert first["workflowType"]["name"] == PREFIXES[path.name.split("-", 1)[0]]
    replayer = Replayer(
        workflows=WORKFLOWS,
        namespace=namespace,
        # The first set was recorded before payloads were bound to their flow: as a deploy
        # sets it.
        data_converter=data_converter(make_settings(temporal_unbound_until=UNBOUND_UNTIL)),
    )
    await replayer.replay_workflow(history)


@pytest.mark.asyncio(loop_scope="session")
async def test_unbound_payloads_do_not_replay_once_the_window_is_closed():
    path = HISTORIES / "setup-mfa-skipped-complete.json"
    history = WorkflowHistory.from_json("replay-closed", path.read_text(encoding="utf-8"))
    replayer = Replayer(workflows=[SsoSetupWorkflow], data_converter=data_converter(make_settings()))
    # The start input is refused, so the run fails where the history goes on.
    with pytest.raises(Exception, match="Nondeterminism"):
        await replayer.replay_workflow(history)


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_history_holds_only_encrypted_payloads(path: Path):
    """Committed histories carry no plaintext: every payload but a search attribute's (which
    hold step names and ids by design) is ciphertext of the test key."""
    for where, payload in _payloads(json.loads(path.read_text(encoding="utf-8"))):
        if payload["metadata"]["encoding"] == ENCRYPTED:
            continue
        assert "searchAttributes" in where, (where, payload)


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_history_holds_no_plaintext_secret_or_personal_data(path: Path):
    """Nothing the flows carried is readable anywhere in the file (failure messages and
    update results included), and no email address appears at all."""
    text = path.read_text(encoding="utf-8")
    assert [value for value in PLAINTEXT if value in text] == []
    assert ADDRESS.findall(text) == []


@pytest.mark.asyncio(loop_scope="session")
async def test_the_plaintext_scan_looks_for_what_the_flows_really_carried():
    """Decrypted with the test key, the payloads hold the values the scan above looks for: it
    would find them, were they ever written in the clear."""
    codec = data_converter(make_settings()).payload_codec
    assert codec is not None
    carried = b""
    for name in ("email_change-wrong-code-then-changed", "logout-done"):
        for _, payload in _payloads(json.loads((HISTORIES / f"{name}.json").read_text(encoding="utf-8"))):
            if payload["metadata"]["encoding"] != ENCRYPTED:
                continue
            encrypted = Payload(
                metadata={k: base64.b64decode(v) for k, v in payload["metadata"].items()},
                data=base64.b64decode(payload.get("data", "")),
            )
            carried += b"".join(p.data for p in await codec.decode([encrypted]))
    for value in ("digest-", "wrong", "203.0.113.7", "admin-key:", "app-one", "refused"):
        assert value.encode() in carried, value
