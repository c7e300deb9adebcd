"""'Send Single Sign-On Email', cancel, and where a person's setup stands."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.common import SearchAttributePair
from temporalio.exceptions import WorkflowAlreadyStartedError

from api.schemas import CodeStatus, EmailDelivery, EntraLinkInfo, MfaObligationInfo, SsoEmailSent, SsoStatus
from api.services.flows import FlowClient
from api.services.staff import get_staff, shown_state
from api.services.temporal import email_retry
from core import audit, passkeys
from core.accounts import MAX_FAILURES, mfa_required
from core.db import UnitOfWork
from core.errors import Conflict, NotFound, ServiceUnavailable, TooManyRequests
from core.mfa_policy import due_text, obligation_for
from core.models import (
    AccountStatus,
    DeliveryState,
    EntraLink,
    MfaObligation,
    SetupState,
    SsoAccount,
    SsoSetup,
    Staff,
    utcnow,
)
from core.org_suspension import suspended_org_name
from core.orgs import AdminScope, metrics_org
from core.search_attributes import SSO_STEP, flow_attributes
from core.settings import Settings
from core.temporal_client import TemporalGateway
from workflows.setup import (
    EndRequest,
    SetupOutcome,
    SetupProgress,
    SsoSetupInput,
    SsoSetupWorkflow,
)

SENDING_ALREADY = "Another Single Sign-On email for this person is being sent; check its status"
CODE_STATES = {SetupState.password_set.value, SetupState.code_sent.value}
LIVE_STATES = CODE_STATES | {SetupState.mfa_pending.value}


def _signin_fields(account: SsoAccount | None) -> dict[str, Any]:
    if account is None:
        return {}
    now = utcnow()
    locked = account.locked_until if account.locked_until and account.locked_until > now else None
    return {
        "last_sign_in_at": account.last_sign_in_at,
        "failed_sign_ins": account.failed_sign_ins,
        "locked_until": locked,
        "needs_reset": account.failed_sign_ins >= MAX_FAILURES,
    }


def obligation_info(obligation: MfaObligation | None, mfa_enabled: bool) -> MfaObligationInfo | None:
    if obligation is None:
        return None
    info = MfaObligationInfo.model_validate(obligation)
    info.extended = obligation.extended_by is not None
    info.due_text = None if mfa_enabled else due_text(obligation, utcnow())
    return info


def setup_workflow_id(staff_id: uuid.UUID) -> str:
    return f"sso-setup-{staff_id}"


@dataclass
class Onboarding:
    settings: Settings
    session: AsyncSession
    temporal: TemporalGateway
    uow: UnitOfWork
    timeout: float = 10.0

    async def send_email(self, staff_id: uuid.UUID, scope: AdminScope, ip: str | None) -> SsoEmailSent:
        staff = await get_staff(self.session, staff_id, scope)
        setup = await self.begin_setup(staff, scope.actor, ip)
        # The flow's first activity reads this row: it must exist before the flow starts.
        await self.uow.commit_now()
        try:
            await self.start_setup(staff, setup)
        except WorkflowAlreadyStartedError as exc:
            await self.abandon(setup, "another email was sent at the same moment")
            raise Conflict(SENDING_ALREADY) from exc
        except ServiceUnavailable:
            await self.abandon(setup, "Temporal was unavailable")
            raise
        except BaseException:
            await self.abandon(setup, "the flow could not be started")
            raise
        return SsoEmailSent(
            workflow_id=setup.workflow_id,
            link_expires_at=setup.state_since + self.settings.setup_link_ttl,
            email_delivery="pending",
            status_url=f"/api/v1/staff/{staff.id}/sso",
        )

    async def begin_setup(self, staff: Staff, actor: str, ip: str | None, **details: str) -> SsoSetup:
        """Refuse a send the person cannot take, end (supersede) their setup in progress and
        add the new setup's row, audited; the caller commits it before `start_setup`."""
        if staff.disabled_at is not None:
            raise Conflict("This person is disabled; enable them before sending a Single Sign-On email")
        if (org_name := await suspended_org_name(self.session, staff.id)) is not None:
            raise Conflict(f"{org_name} is suspended; resume it before sending a Single Sign-On email")
        account = await self.session.scalar(select(SsoAccount).where(SsoAccount.staff_id == staff.id))
        if account is not None and account.status == AccountStatus.active.value:
            raise Conflict("Single Sign-On is already active for this person")
        await self._check_send_limit(staff.id)
        workflow_id = setup_workflow_id(staff.id)
        await self._flows.end(
            workflow_id,
            SsoSetupWorkflow.run,
            SsoSetupWorkflow.supersede,
            EndRequest(actor, "a new Single Sign-On email was sent"),
        )
        setup = SsoSetup(
            id=uuid.uuid4(),
            staff_id=staff.id,
            workflow_id=workflow_id,
            state=SetupState.sending_email.value,
            state_since=utcnow(),
            email_delivery=DeliveryState.pending.value,
            requested_by=actor,
        )
        self.session.add(setup)
        audit.record(
            self.session,
            actor=actor,
            action="sso_email.requested",
            outcome="accepted",
            target=str(staff.id),
            ip=ip,
            workflow_id=workflow_id,
            **details,
        )
        return setup

    async def start_setup(self, staff: Staff, setup: SsoSetup) -> None:
        """Start the flow of a committed setup row (WorkflowAlreadyStartedError when a flow
        runs under the person's setup id)."""
        ttl = int(self.settings.setup_link_ttl.total_seconds())
        await self._flows.start(
            SsoSetupWorkflow.run,
            SsoSetupInput(
                setup_id=str(setup.id),
                staff_id=str(staff.id),
                link_ttl_seconds=ttl,
                requested_by=setup.requested_by,
                email_retry=email_retry(self.settings),
                setup_ttl_seconds=int(self.settings.setup_ttl.total_seconds()),
                code_ttl_seconds=int(self.settings.code_ttl.total_seconds()),
                code_resend_interval_seconds=int(self.settings.code_resend_interval.total_seconds()),
                code_max_resends=self.settings.code_max_resends,
                mfa_required=mfa_required(staff),
                quiet_delivery=True,
                org=await metrics_org(self.session, staff.id) or "",
            ),
            id=setup.workflow_id,
            search_attributes=flow_attributes(
                SearchAttributePair(SSO_STEP, SetupState.sending_email.value),
                org_id=staff.org_id,
                staff_id=staff.id,
            ),
            static_summary=f"Single Sign-On setup for staff {staff.id}",
            static_details=f"Requested by {setup.requested_by}; link valid {ttl // 60} minutes "
            "after the email is sent",
        )

    async def cancel(self, staff_id: uuid.UUID, scope: AdminScope, ip: str | None) -> SetupOutcome:
        staff = await get_staff(self.session, staff_id, scope)
        actor = scope.actor
        workflow_id = setup_workflow_id(staff.id)
        outcome: SetupOutcome | None = await self._flows.end(
            workflow_id,
            SsoSetupWorkflow.run,
            SsoSetupWorkflow.cancel,
            EndRequest(actor, "cancelled by an administrator"),
        )
        if outcome is None:
            raise NotFound("No Single Sign-On setup is in progress for this person")
        audit.record(
            self.session,
            actor=actor,
            action="sso_email.cancel",
            outcome=outcome.state,
            target=str(staff.id),
            ip=ip,
            workflow_id=workflow_id,
        )
        await self.session.flush()
        return outcome

    async def status(self, staff_id: uuid.UUID, scope: AdminScope) -> SsoStatus:
        staff = await get_staff(self.session, staff_id, scope)
        setup = await self.session.scalar(
            select(SsoSetup)
            .where(SsoSetup.staff_id == staff.id)
            .order_by(SsoSetup.created_at.desc())
            .limit(1)
        )
        account = await self.session.scalar(select(SsoAccount).where(SsoAccount.staff_id == staff.id))
        mfa_enabled = account is not None and await passkeys.has_second_factor(self.session, account)
        link = await self.session.scalar(select(EntraLink).where(EntraLink.staff_id == staff.id))
        signin = {
            **_signin_fields(account),
            "entra": EntraLinkInfo.model_validate(link) if link else None,
            "disabled_at": staff.disabled_at,
            "mfa_obligation": obligation_info(await obligation_for(self.session, staff.id), mfa_enabled),
        }
        if setup is None:
            active = link is not None or (account and account.status == AccountStatus.active.value)
            state = "active" if active else "not_started"
            return SsoStatus(
                staff_id=staff.id,
                state=state,  # type: ignore[arg-type]
                state_since=None,
                mfa_enabled=mfa_enabled,
                link_expires_at=None,
                email_delivery=None,
                workflow_id=None,
                failure_reason=None,
                requested_by=None,
                **signin,
            )
        state, state_since = shown_state(setup, utcnow())
        progress = await self._live_progress(setup) if state in LIVE_STATES else None
        return SsoStatus(
            staff_id=staff.id,
            state=state,  # type: ignore[arg-type]
            state_since=state_since,
            link_expires_at=setup.link_expires_at,
            mfa_enabled=mfa_enabled,
            **signin,
            setup_expires_at=progress.setup_expires_at if progress else None,
            code=CodeStatus(
                delivery=progress.code_delivery,  # type: ignore[arg-type]
                expires_at=progress.code_expires_at,
                attempts_left=progress.code_attempts_left,
                resends_left=progress.resends_left,
                next_resend_at=progress.next_resend_at,
                wrong_codes_total=progress.wrong_codes_total,
            )
            if progress and state in CODE_STATES
            else None,
            email_delivery=EmailDelivery(
                state=setup.email_delivery,  # type: ignore[arg-type]
                attempts=setup.email_attempts,
                last_error=setup.email_last_error,
            ),
            workflow_id=setup.workflow_id,
            failure_reason=setup.failure_reason,
            requested_by=setup.requested_by,
        )

    async def _live_progress(self, setup: SsoSetup) -> SetupProgress | None:
        """Attempts and resend times live in the flow; ask it, briefly, and do without."""
        try:
            flows = FlowClient(self.temporal, 2, self.settings.task_queue)
            flow = await flows.flow(SsoSetupWorkflow.run, setup.workflow_id, run_id=setup.run_id)
            progress: SetupProgress = await flow.query(SsoSetupWorkflow.progress)
            return progress
        except Exception:  # the status page must answer even when the worker cannot
            return None

    async def _check_send_limit(self, staff_id: uuid.UUID) -> None:
        """Repeated sends flood a mailbox and get the sending domain blocked: cap them."""
        window = self.settings.setup_email_window
        since = utcnow() - window
        recent = (
            await self.session.scalars(
                select(SsoSetup.created_at)
                .where(SsoSetup.staff_id == staff_id, SsoSetup.created_at > since)
                .order_by(SsoSetup.created_at)
            )
        ).all()
        if len(recent) >= self.settings.setup_email_limit:
            oldest = recent[-self.settings.setup_email_limit]
            wait = max(1, int((oldest + window - utcnow()).total_seconds()) + 1)
            raise TooManyRequests(
                f"{len(recent)} Single Sign-On emails were sent to this person in the last "
                f"{int(window.total_seconds() // 60)} minutes; try again in {wait // 60 + 1} minutes",
                wait,
            )

    @property
    def _flows(self) -> FlowClient:
        # Connecting may take the usual 5 s: an admin action, not a page step.
        return FlowClient(self.temporal, self.timeout, self.settings.task_queue, connect_timeout=5.0)

    async def abandon(self, setup: SsoSetup, reason: str) -> None:
        """The flow never started: leave no trace but the audit event."""
        await self.session.delete(setup)
        audit.record(
            self.session,
            actor=setup.requested_by,
            action="sso_email.start_failed",
            outcome="failure",
            target=str(setup.staff_id),
            reason=reason,
        )
        # Kept although the request answers with an error (which rolls back the rest).
        await self.uow.commit_now()
