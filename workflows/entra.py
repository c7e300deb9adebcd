"""Linking a Microsoft Entra account to a staff login: one flow per person
(`entra-link-<staff uuid>`), driven by the sign-in callback with update-with-start.

History holds the sealed grant (only workers can open it) and the identity's claims (tid,
oid, name, email); the tokens stay inside the verifying activity.
"""

from __future__ import annotations

from dataclasses import dataclass
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
UNAVAILABLE = "Microsoft isn't answering right now. Please try again in a few minutes."
# A flow closes once idle; one started without a link request closes after this.
IDLE_LIMIT = timedelta(minutes=10)


def link_workflow_id(staff_id: str) -> str:
    return f"entra-link-{staff_id}"


@dataclass
class EntraLinkInput:
    staff_id: str
    email_retry: EmailRetry


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


@dataclass
class LinkOutcome:
    ok: bool
    reason: str | None = None
    message: str | None = None
    name: str = ""
    email: str = ""


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

    @workflow.run
    async def run(self, data: EntraLinkInput | None = None) -> int:
        metrics.flow_started(metrics.ENTRA_LINK)
        workflow.set_current_details("Waiting for the Microsoft sign-in")
        try:
            await workflow.wait_condition(
                lambda: self._handled > 0, timeout=IDLE_LIMIT, timeout_summary="No link request arrived"
            )
        except TimeoutError:
            metrics.flow_ended(metrics.ENTRA_LINK, "expired", self._step)
            return 0
        while True:
            await workflow.wait_condition(lambda: bool(self._notices) or workflow.all_handlers_finished())
            if not self._notices:
                break
            await self._notify(self._notices.pop(0))
        metrics.flow_ended(metrics.ENTRA_LINK, "completed" if self._linked else "refused", self._step)
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
        metrics.flow_step(metrics.ENTRA_LINK, step)
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
