"""'Send Single Sign-On Email', cancel, and where a person's setup stands."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.schemas import CodeStatus, EmailDelivery, EntraLinkInfo, SsoEmailSent, SsoStatus
from api.services.staff import get_staff, shown_state
from api.services.temporal import (
    UNAVAILABLE,
    WORKFLOW_TASK_TIMEOUT,
    clear_forged_run,
    connected,
    email_retry,
)
from core import audit
from core.accounts import MAX_FAILURES
from core.db import UnitOfWork
from core.errors import Conflict, NotFound, ServiceUnavailable, TooManyRequests
from core.models import (
    AccountStatus,
    DeliveryState,
    EntraLink,
    SetupState,
    SsoAccount,
    SsoSetup,
    utcnow,
)
from core.search_attributes import SSO_STAFF_ID, SSO_STEP
from core.settings import Settings
from core.temporal_client import TemporalGateway
from workflows.sso_setup import (
    EndRequest,
    SetupOutcome,
    SetupProgress,
    SsoSetupInput,
)

CODE_STATES = {SetupState.password_set.value, SetupState.code_sent.value}
LIVE_STATES = CODE_STATES | {SetupState.mfa_pending.value}


def _signin_fields(account: SsoAccount | None) -> dict[str, Any]:
    if account is None:
        return {}
    now = utcnow()
    locked = account.locked_until if account.locked_until and account.locked_until > now \
        else None
    return {"last_sign_in_at": account.last_sign_in_at,
            "failed_sign_ins": account.failed_sign_ins, "locked_until": locked,
            "needs_reset": account.failed_sign_ins >= MAX_FAILURES}


def setup_workflow_id(staff_id: uuid.UUID) -> str:
    return f"sso-setup-{staff_id}"


@dataclass
class Onboarding:
    settings: Settings
    session: AsyncSession
    temporal: TemporalGateway
    uow: UnitOfWork
    timeout: float = 10.0

    async def send_email(self, staff_id: uuid.UUID, actor: str, ip: str | None) -> SsoEmailSent:
        staff = await get_staff(self.session, staff_id)
        account = await self.session.scalar(
            select(SsoAccount).where(SsoAccount.staff_id == staff.id))
        if account is not None and account.status == AccountStatus.active.value:
            raise Conflict("Single Sign-On is already active for this person")
        await self._check_send_limit(staff.id)
        client = await connected(self.temporal)
        workflow_id = setup_workflow_id(staff.id)
        await self._end_running(client, workflow_id, "supersede",
                                EndRequest(actor, "a new Single Sign-On email was sent"))

        now = utcnow()
        setup = SsoSetup(id=uuid.uuid4(), staff_id=staff.id, workflow_id=workflow_id,
                         state=SetupState.sending_email.value, state_since=now,
                         email_delivery=DeliveryState.pending.value, requested_by=actor)
        self.session.add(setup)
        audit.record(self.session, actor=actor, action="sso_email.requested", outcome="accepted",
                     target=str(staff.id), ip=ip, workflow_id=workflow_id)
        # The flow's first activity reads this row: it must exist before the flow starts.
        await self.uow.commit_now()

        retry = email_retry(self.settings)
        ttl = int(self.settings.setup_link_ttl.total_seconds())
        try:
            async with asyncio.timeout(self.timeout):
                await client.start_workflow(
                    "SsoSetup",
                    SsoSetupInput(
                        setup_id=str(setup.id), staff_id=str(staff.id), link_ttl_seconds=ttl,
                        requested_by=actor, email_retry=retry,
                        setup_ttl_seconds=int(self.settings.setup_ttl.total_seconds()),
                        code_ttl_seconds=int(self.settings.code_ttl.total_seconds()),
                        code_resend_interval_seconds=int(
                            self.settings.code_resend_interval.total_seconds()),
                        code_max_resends=self.settings.code_max_resends,
                        mfa_required=staff.is_admin,
                    ),
                    id=workflow_id,
                    task_queue=self.settings.task_queue,
                    task_timeout=WORKFLOW_TASK_TIMEOUT,
                    id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                    search_attributes=TypedSearchAttributes([
                        SearchAttributePair(SSO_STEP, SetupState.sending_email.value),
                        SearchAttributePair(SSO_STAFF_ID, str(staff.id)),
                    ]),
                    static_summary=f"Single Sign-On setup for staff {staff.id}",
                    static_details=f"Requested by {actor}; link valid {ttl // 60} minutes "
                    "after the email is sent",
                )
        except WorkflowAlreadyStartedError as exc:
            await self._abandon(setup, "another email was sent at the same moment")
            raise Conflict("Another Single Sign-On email for this person is being sent; "
                           "check its status") from exc
        except (RPCError, TimeoutError) as exc:
            await self._abandon(setup, "Temporal was unavailable")
            raise ServiceUnavailable(UNAVAILABLE) from exc
        except BaseException:
            await self._abandon(setup, "the flow could not be started")
            raise
        return SsoEmailSent(
            workflow_id=workflow_id,
            link_expires_at=now + self.settings.setup_link_ttl,
            email_delivery="pending",
            status_url=f"/api/v1/staff/{staff.id}/sso",
        )

    async def cancel(self, staff_id: uuid.UUID, actor: str, ip: str | None) -> SetupOutcome:
        staff = await get_staff(self.session, staff_id)
        client = await connected(self.temporal)
        workflow_id = setup_workflow_id(staff.id)
        outcome = await self._end_running(client, workflow_id, "cancel",
                                          EndRequest(actor, "cancelled by an administrator"))
        if outcome is None:
            raise NotFound("No Single Sign-On setup is in progress for this person")
        audit.record(self.session, actor=actor, action="sso_email.cancel",
                     outcome=outcome.state, target=str(staff.id), ip=ip,
                     workflow_id=workflow_id)
        await self.session.flush()
        return outcome

    async def status(self, staff_id: uuid.UUID) -> SsoStatus:
        staff = await get_staff(self.session, staff_id)
        setup = await self.session.scalar(
            select(SsoSetup).where(SsoSetup.staff_id == staff.id)
            .order_by(SsoSetup.created_at.desc()).limit(1))
        account = await self.session.scalar(
            select(SsoAccount).where(SsoAccount.staff_id == staff.id))
        mfa_enabled = bool(account and account.mfa_enabled_at)
        link = await self.session.scalar(select(EntraLink).where(EntraLink.staff_id == staff.id))
        signin = {**_signin_fields(account),
                  "entra": EntraLinkInfo.model_validate(link) if link else None}
        if setup is None:
            active = link is not None or (account and account.status == AccountStatus.active.value)
            state = "active" if active else "not_started"
            return SsoStatus(staff_id=staff.id, state=state,  # type: ignore[arg-type]
                             state_since=None, mfa_enabled=mfa_enabled,
                             link_expires_at=None, email_delivery=None, workflow_id=None,
                             failure_reason=None, requested_by=None, **signin)
        state, state_since = shown_state(setup, utcnow())
        progress = await self._live_progress(setup) if state in LIVE_STATES else None
        return SsoStatus(
            staff_id=staff.id, state=state, state_since=state_since,  # type: ignore[arg-type]
            link_expires_at=setup.link_expires_at, mfa_enabled=mfa_enabled, **signin,
            setup_expires_at=progress.setup_expires_at if progress else None,
            code=CodeStatus(
                delivery=progress.code_delivery,  # type: ignore[arg-type]
                expires_at=progress.code_expires_at, attempts_left=progress.code_attempts_left,
                resends_left=progress.resends_left, next_resend_at=progress.next_resend_at,
                wrong_codes_total=progress.wrong_codes_total,
            ) if progress and state in CODE_STATES else None,
            email_delivery=EmailDelivery(state=setup.email_delivery,  # type: ignore[arg-type]
                                         attempts=setup.email_attempts,
                                         last_error=setup.email_last_error),
            workflow_id=setup.workflow_id, failure_reason=setup.failure_reason,
            requested_by=setup.requested_by,
        )

    async def _live_progress(self, setup: SsoSetup) -> SetupProgress | None:
        """Attempts and resend times live in the flow; ask it, briefly, and do without."""
        try:
            client = await self.temporal.client(connect_timeout=2)
            handle = client.get_workflow_handle(setup.workflow_id, run_id=setup.run_id)
            async with asyncio.timeout(2):
                return await handle.query("progress", result_type=SetupProgress)
        except Exception:  # the status page must answer even when the worker cannot
            return None

    async def _check_send_limit(self, staff_id: uuid.UUID) -> None:
        """Repeated sends flood a mailbox and get the sending domain blocked: cap them."""
        window = self.settings.setup_email_window
        since = utcnow() - window
        recent = (await self.session.scalars(
            select(SsoSetup.created_at).where(SsoSetup.staff_id == staff_id,
                                              SsoSetup.created_at > since)
            .order_by(SsoSetup.created_at))).all()
        if len(recent) >= self.settings.setup_email_limit:
            oldest = recent[-self.settings.setup_email_limit]
            wait = max(1, int((oldest + window - utcnow()).total_seconds()) + 1)
            raise TooManyRequests(
                f"{len(recent)} Single Sign-On emails were sent to this person in the last "
                f"{int(window.total_seconds() // 60)} minutes; try again in {wait // 60 + 1} minutes",
                wait)

    async def _end_running(
        self, client: Client, workflow_id: str, update: str, request: EndRequest
    ) -> SetupOutcome | None:
        """Ask the running flow to end and wait until it has; None when none is running."""
        handle = client.get_workflow_handle(workflow_id, result_type=SetupOutcome)
        try:
            async with asyncio.timeout(self.timeout):
                await clear_forged_run(client, workflow_id, "SsoSetup", self.settings.task_queue)
                try:
                    outcome = await handle.execute_update(update, request,
                                                          result_type=SetupOutcome)
                except WorkflowUpdateFailedError:
                    # Already ending on its own (expiry or another admin): wait for it.
                    outcome = await handle.result()
                await handle.result()
                return outcome
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return None
            raise ServiceUnavailable(UNAVAILABLE) from exc
        except WorkflowFailureError as exc:
            raise ServiceUnavailable(UNAVAILABLE) from exc
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError) as exc:
            raise ServiceUnavailable(UNAVAILABLE) from exc

    async def _abandon(self, setup: SsoSetup, reason: str) -> None:
        """The flow never started: leave no trace but the audit event."""
        await self.session.delete(setup)
        audit.record(self.session, actor=setup.requested_by, action="sso_email.start_failed",
                     outcome="failure", target=str(setup.staff_id), reason=reason)
        # Kept although the request answers with an error (which rolls back the rest).
        await self.uow.commit_now()
