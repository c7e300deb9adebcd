"""'Forgot your password?': ask for a reset code and change the password with it.

Known and unknown addresses are answered alike: both get a reset page and a browser session;
for an unknown address the session stands in for a flow and answers as a flow would.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from api.errors import ServiceUnavailable
from api.services.sessions import Current
from api.services.temporal import UNAVAILABLE, WORKFLOW_TASK_TIMEOUT, connected, email_retry
from core import metrics
from core.crypto import code_digest
from core.models import AccountStatus, BrowserSession, SsoAccount, utcnow
from core.sealing import password_context, seal, totp_context
from core.search_attributes import SSO_STAFF_ID, SSO_STEP
from core.settings import Settings
from core.temporal_client import TemporalGateway
from workflows.codes import CODE_ATTEMPTS
from workflows.common import StepResult
from workflows.password_reset import (
    RESET_PURPOSE,
    CodeRequest,
    PasswordResetInput,
    ResetOutcome,
    ResetProgress,
    ResetRequest,
)

STAND_IN_NAMESPACE = uuid.UUID("1f0c7f0e-3d7a-4b55-9d6e-5b1f3c2a9e10")


STAND_IN_PREFIX = "standin-"


def reset_workflow_id(account_id: uuid.UUID) -> str:
    return f"password-reset-{account_id}"


def is_stand_in(current: Current) -> bool:
    return (current.row.workflow_id or STAND_IN_PREFIX).startswith(STAND_IN_PREFIX)


@dataclass
class ResetSteps:
    settings: Settings
    db: AsyncSession
    temporal: TemporalGateway

    async def account(self, email: str) -> SsoAccount | None:
        address = email.strip().lower()
        if not address or "\x00" in address:  # no address holds NUL (PostgreSQL text can't)
            return None
        account = await self.db.scalar(select(SsoAccount).where(
            SsoAccount.login_email == address))
        return account if account and account.status == AccountStatus.active.value else None

    async def request_code(self, account: SsoAccount | None, email: str,
                           ip: str | None) -> None:
        """Start the reset flow, or ask the open one for a new code. A refusal (too soon, too
        many) is not shown here: the answer to this form is the same for every address."""
        client = await connected(self.temporal, self._timeout)
        if account is None:
            await self._stand_in_request(client, email)
            return
        workflow_id = reset_workflow_id(account.id)
        start: WithStartWorkflowOperation[Any, Any] = WithStartWorkflowOperation(
            "PasswordReset", self._input(account), id=workflow_id,
            task_queue=self.settings.task_queue, task_timeout=WORKFLOW_TASK_TIMEOUT,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            search_attributes=TypedSearchAttributes([
                SearchAttributePair(SSO_STEP, "code_requested"),
                SearchAttributePair(SSO_STAFF_ID, str(account.staff_id)),
            ]),
            static_summary=f"Password reset for staff {account.staff_id}")
        async with metrics.timed_step("reset_request") as timing:
            try:
                async with asyncio.timeout(self._timeout):
                    await client.execute_update_with_start_workflow(
                        "request_code", CodeRequest(ip=ip), start_workflow_operation=start,
                        result_type=StepResult)
            except WorkflowUpdateFailedError:
                timing.outcome = "refused"  # throttled: the code already sent still works
            except (RPCError, TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError) as exc:
                raise ServiceUnavailable(UNAVAILABLE) from exc

    async def _stand_in_request(self, client: Client, email: str) -> None:
        """Comparable work to the real thing: one round trip to Temporal."""
        stand_in = uuid.uuid5(STAND_IN_NAMESPACE, email.strip().lower())
        try:
            async with asyncio.timeout(self._timeout):
                await client.get_workflow_handle(reset_workflow_id(stand_in)).describe()
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise ServiceUnavailable(UNAVAILABLE) from exc
        except TimeoutError as exc:
            raise ServiceUnavailable(UNAVAILABLE) from exc

    def stand_in_id(self, email: str) -> str:
        """What stands in for a flow id for an address without an account (keyed, so the
        table does not list the addresses people tried)."""
        return STAND_IN_PREFIX + code_digest(self._secret, "standin", "reset",
                                             email.strip().lower())[-40:]

    async def stand_in_state(self, stand_in_id: str) -> dict[str, Any]:
        """Like asking the open flow for a code again: the same clock for every request for
        this address, throttled exactly as a real flow throttles."""
        newest = await self.db.scalar(
            # Revoked ones count too: the clock belongs to the address, not to a browser.
            select(BrowserSession).where(BrowserSession.workflow_id == stand_in_id,
                                         BrowserSession.expires_at > utcnow())
            .order_by(BrowserSession.created_at.desc()).limit(1))
        now = utcnow()
        if newest is None:
            return {"sends": 1, "last_request": now.isoformat(), "failures": 0}
        data = dict(newest.data)
        sends = int(data.get("sends", 1))
        last = datetime.fromisoformat(data["last_request"]) if data.get("last_request") else None
        throttled = (sends - 1 >= self.settings.code_max_resends or (
            last is not None and now < last + self.settings.code_resend_interval))
        if throttled:
            return data
        return {**data, "sends": sends + 1, "last_request": now.isoformat(), "failures": 0}

    async def resend(self, current: Current, ip: str | None) -> str:
        """The notice for the page (sent, or why not)."""
        if is_stand_in(current):
            return self._stand_in_resend(current)
        handle = await self._handle(current)
        async with metrics.timed_step("reset_resend") as timing:
            try:
                async with asyncio.timeout(self._timeout):
                    await handle.execute_update("request_code", CodeRequest(ip=ip),
                                                result_type=StepResult)
            except WorkflowUpdateFailedError as exc:
                cause = exc.cause
                if isinstance(cause, ApplicationError):
                    timing.outcome = "refused"
                    return cause.message
                raise ServiceUnavailable(UNAVAILABLE) from exc
            except RPCError as exc:
                if exc.status == RPCStatusCode.NOT_FOUND:
                    timing.outcome = "ended"
                    return "This reset has ended. Start again with Forgot your password?"
                raise ServiceUnavailable(UNAVAILABLE) from exc
            except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError) as exc:
                raise ServiceUnavailable(UNAVAILABLE) from exc
        return "We've sent you a new code. Earlier codes no longer work."

    async def reset(self, current: Current, code: str, password: str, totp: str,
                    ip: str | None, submission: str) -> StepResult:
        if is_stand_in(current):
            return self._stand_in_reset(current, submission)
        assert current.row.workflow_id is not None
        workflow_id = current.row.workflow_id
        public = self.settings.seal_public_key
        request = ResetRequest(
            code_digest=code_digest(self._secret, RESET_PURPOSE, workflow_id, code),
            sealed_password=seal(public, password.encode(), password_context(workflow_id)),
            sealed_totp=seal(public, totp.encode(), totp_context(workflow_id)) if totp else None,
            ip=ip)
        handle = await self._handle(current)
        async with metrics.timed_step("reset") as timing:
            result = await self._reset(handle, workflow_id, request, submission)
            timing.outcome = "ok" if result.ok else "rejected"
        return result

    async def _reset(self, handle: WorkflowHandle[Any, Any], workflow_id: str,
                     request: ResetRequest, submission: str) -> StepResult:
        try:
            async with asyncio.timeout(self._timeout):
                return await handle.execute_update("reset_password", request,
                                                   id=f"reset-{submission[:64]}",
                                                   result_type=StepResult)
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            if isinstance(cause, ApplicationError):
                return StepResult(ok=False, step="", message=cause.message)
            raise ServiceUnavailable(UNAVAILABLE) from exc
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise ServiceUnavailable(UNAVAILABLE) from exc
            if await self._finished_with_reset(workflow_id):
                # This form already went through (a double submit): same answer.
                return StepResult(ok=True, step="completed")
            return StepResult(ok=False, step="", message=(
                "This reset has ended. Start again with Forgot your password?"))
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError) as exc:
            raise ServiceUnavailable(UNAVAILABLE) from exc

    async def progress(self, current: Current) -> ResetProgress | None:
        if is_stand_in(current):
            return None
        handle = await self._handle(current)
        try:
            async with asyncio.timeout(self._timeout):
                return await handle.query("progress", result_type=ResetProgress)
        except (RPCError, TimeoutError, WorkflowQueryFailedError):
            return None

    async def _finished_with_reset(self, workflow_id: str) -> bool:
        finished = (await connected(self.temporal, self._timeout)).get_workflow_handle(workflow_id,
                                                              result_type=ResetOutcome)
        try:
            async with asyncio.timeout(self._timeout):
                outcome = await finished.result()
        except Exception:  # failed, terminated or unreachable: not a finished reset
            return False
        return bool(outcome.state == "reset")

    # -- the stand-in for unknown addresses answers as a flow would --------------------------

    def _stand_in_resend(self, current: Current) -> str:
        data = dict(current.row.data)
        now = utcnow()
        last = datetime.fromisoformat(data["last_request"]) if data.get("last_request") else None
        sends = int(data.get("sends", 1))
        interval = self.settings.code_resend_interval
        if sends - 1 >= self.settings.code_max_resends:
            return "You've asked for the most new codes we can send."
        if last is not None and now < last + interval:
            seconds = max(1, int((last + interval - now).total_seconds() + 0.999))
            return (f"You can ask for a new code in {seconds} second"
                    f"{'s' if seconds != 1 else ''}.")
        current.row.data = {**data, "sends": sends + 1, "last_request": now.isoformat(),
                            "failures": 0}
        return "We've sent you a new code. Earlier codes no longer work."

    def _stand_in_reset(self, current: Current, submission: str) -> StepResult:
        data = dict(current.row.data)
        if submission and data.get("last_submission") == submission:
            # The same form again: a flow answers it from its record, without counting.
            return StepResult(ok=False, step="code_sent", message=data.get("last_answer"))
        failures = int(data.get("failures", 0))
        if failures >= CODE_ATTEMPTS:
            message = "Too many incorrect codes. Click Send a new code."
        else:
            failures += 1
            left = CODE_ATTEMPTS - failures
            message = (f"Incorrect code, {left} attempt{'s' if left != 1 else ''} left" if left
                       else "Incorrect code. This code can no longer be used; click Send a new "
                       "code.")
        current.row.data = {**data, "failures": failures, "last_submission": submission,
                            "last_answer": message}
        return StepResult(ok=False, step="code_sent", message=message)

    # -- plumbing -------------------------------------------------------------------------

    def _input(self, account: SsoAccount) -> PasswordResetInput:
        s = self.settings
        return PasswordResetInput(
            account_id=str(account.id), staff_id=str(account.staff_id),
            email_retry=email_retry(s),
            code_ttl_seconds=int(s.code_ttl.total_seconds()),
            code_resend_interval_seconds=int(s.code_resend_interval.total_seconds()),
            code_max_resends=s.code_max_resends, ttl_seconds=int(s.reset_ttl.total_seconds()))

    @property
    def _secret(self) -> str:
        return self.settings.secret_key.get_secret_value()

    @property
    def _timeout(self) -> float:
        return self.settings.step_timeout.total_seconds()

    async def _handle(self, current: Current) -> WorkflowHandle[Any, Any]:
        assert current.row.workflow_id is not None
        return (await connected(self.temporal, self._timeout)).get_workflow_handle(current.row.workflow_id)



