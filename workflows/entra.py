"""Linking a Microsoft Entra account to a staff login: one flow per person
(`entra-link-<staff uuid>`), driven by the sign-in callback with update-with-start.

History holds the sealed grant (only workers can open it) and the identity's claims (tid,
oid, name, email); the tokens stay inside the verifying activity.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from core import flow_errors

with workflow.unsafe.imports_passed_through():
    from activities.entra import EntraActivities
    from activities.inputs import (
        AuditInput,
        EntraLinkedNoticeInput,
        LinkEntraInput,
        VerifiedEntra,
        VerifyEntraInput,
    )
    from activities.shared import SharedActivities
    from core import metrics
    from core.search_attributes import SSO_STEP
    from workflows.common import (
        ENTRA_TIMEOUT,
        EmailRetry,
        required,
        run_step,
        start_email,
    )
    from workflows.setup import SsoSetupWorkflow

VIA = {"setup_link", "session"}
EXPIRED = "This Microsoft sign-in has expired or was already used. Please start again."
UNAVAILABLE = "Microsoft isn't answering right now. Please try again in a few minutes."
# A flow closes once idle; one started without a link request closes after this.
IDLE_LIMIT = timedelta(minutes=10)
# A verified account waiting for the person's Link: Microsoft's code is spent by then, so a
# confirmation that never comes ends the attempt rather than keeping the run open.
CONFIRM_LIMIT = timedelta(minutes=10)
AWAITING_CONFIRMATION = "awaiting_confirmation"
NOT_CONFIRMED = "not_confirmed"


def link_workflow_id(staff_id: str) -> str:
    return f"entra-link-{staff_id}"


@dataclass
class EntraLinkInput:
    staff_id: str
    email_retry: EmailRetry
    # The organisation's slug for the flow counters' `org` label: set only while
    # SSO_METRICS_ORG_LABELS is on ("" otherwise, and in flows started before it).
    org: str = ""


@dataclass
class LinkRequest:
    sealed_grant: str
    via: str
    # Who asked, for the audit: set by the web app from the session or setup link it
    # verified. Believed because the request arrives as AES-GCM ciphertext of this
    # deployment's key (core/codec.py); the link itself rests on the grant, which the
    # activity redeems with Microsoft and which is sealed to this flow's id.
    actor: str
    ip: str | None = None
    # With via="setup_link": the link used, and the setup flow it belongs to.
    link_id: str | None = None
    setup_workflow_id: str | None = None
    setup_run_id: str | None = None
    # Verify only and keep the identity until `confirm_link`, so the person sees which
    # Microsoft account came back before it is bound. Histories from before this field
    # decode it as False and replay the immediate link.
    hold: bool = False


@dataclass
class ConfirmRequest:
    # The `pending_id` the held `link` returned: a confirmation is for the account shown.
    pending_id: str
    actor: str
    ip: str | None = None


@dataclass
class LinkOutcome:
    ok: bool
    reason: str | None = None
    message: str | None = None
    name: str = ""
    email: str = ""
    # Set when a held link verified and now awaits `confirm_link` (ok is False: nothing linked).
    pending_id: str | None = None


@dataclass
class _Pending:
    pending_id: str
    request: LinkRequest
    identity: VerifiedEntra


@workflow.defn(name="EntraLink")
class EntraLinkWorkflow:
    @workflow.init
    def __init__(self, data: EntraLinkInput | None = None) -> None:
        self._input = data = required(data, "This start")
        self._busy = False
        self._handled = 0
        self._linked = False
        self._step = "waiting"  # for metrics only: the search attribute says it too
        self._notices: list[EntraLinkedNoticeInput] = []
        self._pending: _Pending | None = None

    @workflow.run
    async def run(self, data: EntraLinkInput | None = None) -> int:
        metrics.flow_started(metrics.ENTRA_LINK, self._input.org)
        workflow.set_current_details("Waiting for the Microsoft sign-in")
        try:
            await workflow.wait_condition(
                lambda: self._handled > 0, timeout=IDLE_LIMIT, timeout_summary="No link request arrived"
            )
        except TimeoutError:
            metrics.flow_ended(metrics.ENTRA_LINK, "expired", self._step, self._input.org)
            return 0
        while True:
            # `_pending` is never set on histories from before `hold`: they replay as before.
            await workflow.wait_condition(
                lambda: bool(self._notices) or self._pending is not None or workflow.all_handlers_finished()
            )
            if self._notices:
                await self._notify(self._notices.pop(0))
            elif self._pending is not None:
                await self._await_confirmation(self._pending)
            else:
                break
        outcome = "completed" if self._linked else "refused"
        metrics.flow_ended(metrics.ENTRA_LINK, outcome, self._step, self._input.org)
        return self._handled

    @workflow.update(name="link")
    async def link(self, request: LinkRequest) -> LinkOutcome:
        # Two tabs finishing at once: one link attempt at a time.
        await workflow.wait_condition(lambda: not self._busy)
        self._busy = True
        try:
            return await self._link(request)
        finally:
            self._busy = False
            self._handled += 1

    @link.validator
    def _validate_link(self, request: LinkRequest) -> None:
        if not request.sealed_grant.startswith("sealed1.") or request.via not in VIA:
            raise ApplicationError(
                "The sign-in was incomplete; please start again.",
                type=flow_errors.BAD_REQUEST,
                non_retryable=True,
            )
        if request.via == "setup_link" and not request.link_id:
            raise ApplicationError(
                "A setup link is needed to link from the setup page.",
                type=flow_errors.BAD_REQUEST,
                non_retryable=True,
            )

    @workflow.update(name="confirm_link")
    async def confirm_link(self, request: ConfirmRequest) -> LinkOutcome:
        await workflow.wait_condition(lambda: not self._busy)
        pending = self._pending
        if pending is None or pending.pending_id != request.pending_id:
            # Expired or replaced by another sign-in while this one waited its turn.
            return LinkOutcome(ok=False, reason=NOT_CONFIRMED, message=EXPIRED)
        # Single use: a second Link finds nothing, whatever this one's outcome.
        self._pending = None
        self._busy = True
        try:
            confirmed = replace(pending.request, actor=request.actor, ip=request.ip, hold=False)
            return await self._record(confirmed, pending.identity)
        finally:
            self._busy = False

    @confirm_link.validator
    def _validate_confirm(self, request: ConfirmRequest) -> None:
        pending = self._pending
        if (
            pending is None
            or pending.pending_id != request.pending_id
            or pending.request.actor != request.actor
        ):
            raise ApplicationError(
                "There is no Microsoft account waiting to be linked; please start again.",
                type=flow_errors.BAD_REQUEST,
                non_retryable=True,
            )

    async def _await_confirmation(self, pending: _Pending) -> None:
        try:
            await workflow.wait_condition(
                lambda: self._pending is not pending,
                timeout=CONFIRM_LIMIT,
                timeout_summary="No confirmation of the Microsoft account arrived",
            )
        except TimeoutError:
            if self._pending is pending:
                self._pending = None
                self._move_to("expired", "The Microsoft account was not confirmed in time")
                await self._audit(pending.request, "entra.link_refused", NOT_CONFIRMED)

    async def _link(self, request: LinkRequest) -> LinkOutcome:
        self._move_to("verifying", f"Checking a Microsoft sign-in (via {request.via})")
        workflow_id = workflow.info().workflow_id
        try:
            identity = await workflow.execute_activity_method(
                EntraActivities.verify_entra_grant,
                VerifyEntraInput(workflow_id=workflow_id, sealed_grant=request.sealed_grant),
                start_to_close_timeout=ENTRA_TIMEOUT,
                retry_policy=RetryPolicy(
                    maximum_attempts=3,
                    non_retryable_error_types=[flow_errors.BAD_SEAL, flow_errors.ENTRA_REFUSED],
                ),
                summary="Redeem the code, check the ID token, ask Graph",
            )
        except ActivityError as err:
            reason, message = _refusal(err)
            self._move_to("refused", f"Microsoft sign-in refused: {reason}")
            await self._audit(request, "entra.link_refused", reason)
            return LinkOutcome(ok=False, reason=reason, message=message)
        if request.hold:
            # Microsoft's code is redeemed: keep the claims (never the tokens) for the Link.
            pending_id = str(workflow.uuid4())
            self._pending = _Pending(pending_id, request, identity)
            self._move_to("confirming", "Waiting for the person to confirm the Microsoft account")
            return LinkOutcome(
                ok=False,
                reason=AWAITING_CONFIRMATION,
                name=identity.name,
                email=identity.email,
                pending_id=pending_id,
            )
        return await self._record(request, identity)

    async def _record(self, request: LinkRequest, identity: VerifiedEntra) -> LinkOutcome:
        workflow_id = workflow.info().workflow_id
        result = await run_step(
            EntraActivities.link_entra_identity,
            LinkEntraInput(
                staff_id=self._input.staff_id,
                workflow_id=workflow_id,
                identity=identity,
                via=request.via,
                actor=request.actor,
                ip=request.ip,
                link_id=request.link_id,
            ),
            "Record the link",
        )
        if not result.ok:
            self._move_to("refused", f"Link refused: {result.reason}")
            return LinkOutcome(ok=False, reason=result.reason, message=result.message)
        if request.via == "setup_link" and request.setup_workflow_id:
            await self._finish_setup(request)
        if result.newly_linked:
            self._notices.append(
                EntraLinkedNoticeInput(
                    staff_id=self._input.staff_id,
                    account=identity.email or identity.name,
                    linked_at=workflow.now(),
                )
            )
        self._linked = True
        self._move_to("linked", f"Linked to a Microsoft account of tenant {identity.tenant_id}")
        return LinkOutcome(ok=True, name=identity.name, email=identity.email)

    async def _finish_setup(self, request: LinkRequest) -> None:
        """A link made from the setup email completes that setup: Single Sign-On is active."""
        assert request.setup_workflow_id is not None
        handle = workflow.get_external_workflow_handle(request.setup_workflow_id, run_id=request.setup_run_id)
        try:
            await handle.signal(SsoSetupWorkflow.entra_linked, request.actor)
        except ApplicationError:
            # That setup already ended (expired or superseded): the link itself stands.
            workflow.logger.info("setup flow had already ended")

    async def _notify(self, notice: EntraLinkedNoticeInput) -> None:
        try:
            await start_email(
                EntraActivities.send_entra_linked,
                notice,
                self._input.email_retry,
                "Tell the person a Microsoft account was linked",
            )
        except ActivityError:
            workflow.logger.warning("the link notice could not be delivered")

    async def _audit(self, request: LinkRequest, action: str, reason: str) -> None:
        await run_step(
            SharedActivities.record_audit,
            AuditInput(
                actor=request.actor,
                action=action,
                outcome="failure",
                target=self._input.staff_id,
                ip=request.ip,
                details={"reason": reason, "via": request.via},
            ),
            f"Audit {action}",
        )

    def _move_to(self, step: str, details: str) -> None:
        self._step = step
        metrics.flow_step(metrics.ENTRA_LINK, step, self._input.org)
        workflow.upsert_search_attributes([SSO_STEP.value_set(step)])
        workflow.set_current_details(details)


def _refusal(err: ActivityError) -> tuple[str, str]:
    cause = err.cause
    if isinstance(cause, ApplicationError) and cause.type == flow_errors.ENTRA_REFUSED:
        reason = str(cause.details[0]) if cause.details else "invalid_token"
        return reason, cause.message
    if isinstance(cause, ApplicationError) and cause.type == flow_errors.BAD_SEAL:
        return "invalid_token", "We couldn't verify your sign-in with Microsoft. Please start again."
    return "unavailable", UNAVAILABLE
