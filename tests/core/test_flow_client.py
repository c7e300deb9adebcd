"""The web app's flow client: names by reference resolve to the names recorded in running
flows' histories, every failure maps to refused / in doubt / ended / unavailable, and no
web-app code names a workflow or handler by string or imports a worker module."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowQueryFailedError, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.service import RPCError, RPCStatusCode

from api.services.flows import (
    Flow,
    FlowEnded,
    StepFailed,
    StepInDoubt,
    StepRefused,
    update_name,
    workflow_type,
)
from core import flow_errors
from core.errors import ServiceUnavailable
from workflows.entra import EntraLinkWorkflow
from workflows.reset import PasswordResetWorkflow
from workflows.setup import SsoSetupWorkflow

ROOT = Path(__file__).resolve().parents[2]


def test_names_by_reference_are_the_names_running_flows_know() -> None:
    assert workflow_type(SsoSetupWorkflow.run) == "SsoSetup"
    assert workflow_type(PasswordResetWorkflow.run) == "PasswordReset"
    assert workflow_type(EntraLinkWorkflow.run) == "EntraLink"
    assert [
        update_name(u)
        for u in (
            SsoSetupWorkflow.set_password,
            SsoSetupWorkflow.confirm_code,
            SsoSetupWorkflow.resend_code,
            SsoSetupWorkflow.complete_mfa,
            SsoSetupWorkflow.skip_mfa,
            SsoSetupWorkflow.cancel,
            SsoSetupWorkflow.supersede,
            PasswordResetWorkflow.request_code,
            PasswordResetWorkflow.reset_password,
            EntraLinkWorkflow.link,
        )
    ] == [
        "set_password",
        "confirm_code",
        "resend_code",
        "complete_mfa",
        "skip_mfa",
        "cancel",
        "supersede",
        "request_code",
        "reset_password",
        "link",
    ]


class FakeHandle:
    """Answers every call by raising `error` (or by never answering)."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error

    async def _answer(self, *_args: Any, **_kwargs: Any) -> Any:
        if self.error is None:
            await asyncio.sleep(10)
        raise self.error  # type: ignore[misc]

    execute_update = query = signal = _answer


def rpc(status: RPCStatusCode) -> RPCError:
    return RPCError("boom", status, b"")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            WorkflowUpdateFailedError(ApplicationError("Wait a moment", type=flow_errors.TOO_SOON)),
            StepRefused,
        ),
        (WorkflowUpdateFailedError(CancelledError("cancelled")), StepFailed),
        (rpc(RPCStatusCode.NOT_FOUND), FlowEnded),
        (rpc(RPCStatusCode.DEADLINE_EXCEEDED), StepInDoubt),
        (rpc(RPCStatusCode.CANCELLED), StepInDoubt),
        (rpc(RPCStatusCode.UNAVAILABLE), ServiceUnavailable),
        (None, StepInDoubt),  # no answer within the step timeout
    ],
)
async def test_an_update_fails_as_refused_in_doubt_ended_or_unavailable(
    error: BaseException | None, expected: type[Exception]
) -> None:
    flow = Flow(FakeHandle(error), 0.05)  # type: ignore[arg-type]
    with pytest.raises(expected) as raised:
        await flow.update(SsoSetupWorkflow.resend_code, None, id="resend_code-1")
    assert type(raised.value) is expected
    if expected is StepRefused:
        assert (raised.value.message, raised.value.kind) == (  # type: ignore[attr-defined]
            "Wait a moment",
            "TooSoon",
        )


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (rpc(RPCStatusCode.NOT_FOUND), FlowEnded),
        (rpc(RPCStatusCode.UNAVAILABLE), ServiceUnavailable),
        (WorkflowQueryFailedError("no such query"), ServiceUnavailable),
        (None, ServiceUnavailable),
    ],
)
async def test_a_query_fails_as_ended_or_unavailable(
    error: BaseException | None, expected: type[Exception]
) -> None:
    flow = Flow(FakeHandle(error), 0.05)  # type: ignore[arg-type]
    with pytest.raises(expected) as raised:
        await flow.query(SsoSetupWorkflow.progress)
    assert type(raised.value) is expected


def web_app_sources() -> list[Path]:
    return [*sorted((ROOT / "api").rglob("*.py")), ROOT / "cli.py"]


def test_the_web_app_names_no_workflow_or_handler_by_string() -> None:
    by_string = re.compile(
        r"(execute_update|start_workflow|execute_update_with_start_workflow|query|signal"
        r'|WithStartWorkflowOperation|clear_forged_run)\(\s*("|[A-Z_]+\b|[^)]*, ")'
    )
    found = [
        f"{path.relative_to(ROOT)}: {m.group(0)}"
        for path in web_app_sources()
        for m in by_string.finditer(path.read_text())
        if "signal.SIG" not in m.group(0)
    ]
    assert found == []


def test_the_web_app_imports_no_worker_module() -> None:
    found = [
        f"{path.relative_to(ROOT)}: {line}"
        for path in web_app_sources()
        for line in path.read_text().splitlines()
        if re.match(r"\s*(from|import) activities\b", line)
    ]
    assert found == []
