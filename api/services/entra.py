"""Microsoft-Entra from the sign-on pages: start the authorization request, take the callback,
then sign a linked person in or drive the link flow.

`state`, `nonce` and the PKCE verifier live in a short server-side session bound to this
browser (sealed with the keyring in the database) and are used once: the callback revokes
the session before it looks at anything else.
"""

from __future__ import annotations

import hmac
import json
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.common import SearchAttributePair

from api.services.flows import FlowClient, FlowEnded, StepFailed, StepRefused
from api.services.sessions import Current, Sessions
from api.services.signin import record_own
from api.services.temporal import UNAVAILABLE, email_retry
from core import audit, metrics
from core.accounts import ACCOUNT_DISABLED
from core.codec import keyring_from_settings
from core.crypto import DecryptionError
from core.entra import MESSAGES as ENTRA_MESSAGES
from core.entra import EntraProvider, EntraRefused, EntraUnavailable, Grant
from core.errors import ServiceUnavailable
from core.models import AccountStatus, EntraLink, SsoAccount, Staff, utcnow
from core.org_suspension import suspended_message, suspended_org_name
from core.orgs import metrics_org, org_of, tenant_owner
from core.sealing import entra_context, seal
from core.search_attributes import SSO_STEP, flow_attributes
from core.settings import Settings
from core.temporal_client import TemporalGateway
from workflows.entra import (
    AWAITING_CONFIRMATION,
    CONFIRM_LIMIT,
    ConfirmRequest,
    EntraLinkInput,
    EntraLinkWorkflow,
    LinkOutcome,
    LinkRequest,
    link_workflow_id,
)

PURPOSE = "entra"
# The verified Microsoft account waiting for this browser's Link: its session lasts as long
# as the link flow keeps the account (workflows/entra.py).
CONFIRM_PURPOSE = "entra_confirm"
# Time allowed at Microsoft (password, number matching) before the callback must arrive.
START_TTL = timedelta(minutes=10)
# The link flow verifies with Microsoft and Graph: allow it more than a page step.
LINK_TIMEOUT = 30.0

Intent = Literal["signin", "link"]

REFUSALS = {
    "expired": "This sign-in has expired or was already used. Please start again.",
    "state_mismatch": "This sign-in didn't start in this browser. Please start again.",
    "cancelled": "The sign-in with Microsoft was cancelled.",
    "provider_error": "Microsoft didn't complete the sign-in. Please start again.",
    "unlinked": "This Microsoft account isn't linked to an agentOS staff login; ask your administrator.",
    "account_disabled": ACCOUNT_DISABLED,
    "not_confirmed": "This Microsoft sign-in has expired or was already used. Please start again.",
    "session_ended": "Your session ended before the Microsoft account could be linked. Sign in "
    "and try again.",
}


@dataclass
class EntraStart:
    intent: Intent
    staff_id: uuid.UUID | None = None
    via: str | None = None  # "setup_link" | "session" when linking
    link_id: str | None = None
    setup_workflow_id: str | None = None
    setup_run_id: str | None = None
    return_to: str | None = None


@dataclass
class EntraResult:
    kind: Literal["signed_in", "linked", "confirm", "refused"]
    # The person, once known; a refusal carries it only for the metrics' `org` label.
    staff_id: uuid.UUID | None = None
    reason: str | None = None
    message: str | None = None
    account: str = ""
    return_to: str | None = None
    via: str | None = None
    # With kind="confirm": the session (cookie value) that holds the account until Link.
    confirm_session: str | None = None


def refused(reason: str, message: str | None = None, staff_id: uuid.UUID | None = None) -> EntraResult:
    return EntraResult("refused", staff_id=staff_id, reason=reason, message=message or REFUSALS[reason])


@dataclass
class Callback:
    """What Microsoft's redirect back to us carries."""

    state: str
    code: str
    error: str


@dataclass
class EntraSignOn:
    settings: Settings
    db: AsyncSession
    temporal: TemporalGateway
    provider: EntraProvider

    async def begin(self, start: EntraStart) -> tuple[str, str]:
        """The URL to send the browser to, and the id of the session that waits for it."""
        try:
            request = await self.provider.authorization_request()
        except EntraUnavailable as exc:
            raise ServiceUnavailable(UNAVAILABLE) from exc
        secrets_blob = json.dumps(
            {"state": request.state, "nonce": request.nonce, "verifier": request.code_verifier}
        ).encode()
        session_id = await Sessions(self.settings, self.db).create(
            PURPOSE,
            start.staff_id,
            START_TTL,
            workflow_id=start.setup_workflow_id,
            data={
                "intent": start.intent,
                "via": start.via,
                "link_id": start.link_id,
                "setup_run_id": start.setup_run_id,
                "return_to": start.return_to,
                "sealed": self._keyring.seal(secrets_blob, PURPOSE.encode()),
            },
        )
        await self.db.flush()
        return request.url, session_id

    async def claim(self, session_id: str | None) -> Current | None:
        """The session waiting for this callback, revoked: single use, whatever happens next.
        The caller commits before it goes on, so a replayed callback finds nothing."""
        sessions = Sessions(self.settings, self.db)
        pending = await sessions.get(session_id, PURPOSE)
        if pending is not None:
            await sessions.revoke(session_id)
        return pending

    async def finish(
        self, pending: Current | None, callback: Callback, ip: str | None, signed_in: Current | None
    ) -> EntraResult:
        """`pending` is what `claim` returned (and the caller committed)."""
        return await self._counted(self._finish(pending, callback, ip, signed_in), pending)

    async def _counted(self, step: Awaitable[EntraResult], pending: Current | None) -> EntraResult:
        """The step's outcome, counted. Under SSO_METRICS_ORG_LABELS its `org` is the person's
        organisation once known: the result's person, else the one a link started for (its
        pending session's), else none."""
        waiting = pending.row.staff_id if pending is not None else None
        try:
            result = await step
        except ServiceUnavailable:
            metrics.sign_in("entra_refused", "unavailable", org=await metrics_org(self.db, waiting))
            raise
        org = await metrics_org(self.db, result.staff_id or waiting)
        metrics.sign_in(f"entra_{result.kind}", result.reason, org=org)
        return result

    async def _finish(
        self, pending: Current | None, callback: Callback, ip: str | None, signed_in: Current | None
    ) -> EntraResult:
        state, code, error = callback.state, callback.code, callback.error
        if pending is None:
            return refused("expired")
        data = pending.row.data
        try:
            opened = json.loads(self._keyring.unseal(str(data.get("sealed", "")), PURPOSE.encode()))
        except (DecryptionError, ValueError):
            return refused("expired")
        if error:
            # Nothing is granted on this path, so the answer need not wait for a state check
            # (some providers leave the state off their error redirects).
            return refused("cancelled" if error == "access_denied" else "provider_error")
        if not state or not hmac.compare_digest(state.encode(), str(opened["state"]).encode()):
            return refused("state_mismatch")
        if not code or len(code) > 4096:
            return refused("provider_error")
        grant = Grant(code=code, code_verifier=str(opened["verifier"]), nonce=str(opened["nonce"]))
        return_to = data.get("return_to")
        if data.get("intent") == "link":
            return await self._link(pending, grant, ip, signed_in)
        result = await self._sign_in(grant, ip)
        result.return_to = return_to if isinstance(return_to, str) else None
        return result

    # -- sign-in --------------------------------------------------------------------------

    async def _sign_in(self, grant: Grant, ip: str | None) -> EntraResult:
        async with metrics.timed_step("entra_signin") as timing:
            result = await self._redeem_and_sign_in(grant, ip)
            timing.outcome = "ok" if result.kind == "signed_in" else "rejected"
        return result

    async def _redeem_and_sign_in(self, grant: Grant, ip: str | None) -> EntraResult:
        try:
            identity = await self.provider.redeem(grant)
        except EntraRefused as exc:
            self._audit_signin_failure(None, ip, exc.reason)
            await self.db.flush()
            return refused(exc.reason, exc.message)
        except EntraUnavailable as exc:
            raise ServiceUnavailable(UNAVAILABLE) from exc
        link = await self.db.scalar(
            select(EntraLink).where(
                EntraLink.tenant_id == identity.tenant_id, EntraLink.object_id == identity.object_id
            )
        )
        if link is None:
            self._audit_signin_failure(None, ip, "unlinked", tenant_id=identity.tenant_id)
            await self.db.flush()
            return refused("unlinked")
        account = await self.db.scalar(select(SsoAccount).where(SsoAccount.staff_id == link.staff_id))
        staff = await self.db.get(Staff, link.staff_id)
        owner = await tenant_owner(self.db, identity.tenant_id)
        if staff is not None and owner is not None and owner != staff.org_id:
            # The tenant belongs to another organisation than the person (one of them moved
            # since the link was made): its accounts sign in only that organisation's people.
            # (A tenant nobody owns never gets here: the provider refuses it.)
            self._audit_signin_failure(link.staff_id, ip, "wrong_tenant", tenant_id=identity.tenant_id)
            await self.db.flush()
            return refused("wrong_tenant", ENTRA_MESSAGES["wrong_tenant"], link.staff_id)
        if (staff is not None and staff.disabled_at is not None) or (
            account is not None and account.status == AccountStatus.disabled.value
        ):
            self._audit_signin_failure(link.staff_id, ip, "account_disabled")
            await self.db.flush()
            return refused("account_disabled", staff_id=link.staff_id)
        if (suspended := await self._suspended(link.staff_id, ip)) is not None:
            return suspended
        now = utcnow()
        link.last_sign_in_at = now
        if account is not None:
            account.last_sign_in_at = now
        record_own(self.db, link.staff_id, "sign_in.success", "success", ip, method="entra")
        await self.db.flush()
        return EntraResult("signed_in", staff_id=link.staff_id)

    async def _suspended(self, staff_id: uuid.UUID, ip: str | None) -> EntraResult | None:
        """The person's organisation is suspended: no sign-in and no link (which signs in)."""
        org_name = await suspended_org_name(self.db, staff_id)
        if org_name is None:
            return None
        self._audit_signin_failure(staff_id, ip, "org_suspended")
        await self.db.flush()
        return refused("org_suspended", suspended_message(org_name, self.settings.brand_name), staff_id)

    def _audit_signin_failure(
        self, staff_id: uuid.UUID | None, ip: str | None, reason: str, **details: Any
    ) -> None:
        audit.record(
            self.db,
            actor=f"ip:{ip}",
            action="sign_in.failed",
            outcome="failure",
            target=str(staff_id) if staff_id else None,
            ip=ip,
            reason=reason,
            method="entra",
            **details,
        )

    # -- linking --------------------------------------------------------------------------

    async def _link(
        self, pending: Current, grant: Grant, ip: str | None, signed_in: Current | None
    ) -> EntraResult:
        data = pending.row.data
        staff_id = pending.row.staff_id
        via = str(data.get("via") or "")
        if staff_id is None or via not in ("setup_link", "session"):
            return refused("expired")
        if via == "session" and (signed_in is None or signed_in.row.staff_id != staff_id):
            # Signed out (or in as someone else) while at Microsoft.
            return refused("session_ended")
        if (suspended := await self._suspended(staff_id, ip)) is not None:
            return suspended
        workflow_id = link_workflow_id(str(staff_id))
        request = LinkRequest(
            sealed_grant=seal(self.settings.seal_public_key, grant.to_json(), entra_context(workflow_id)),
            via=via,
            actor=f"staff:{staff_id}",
            ip=ip,
            link_id=data.get("link_id"),
            setup_workflow_id=pending.row.workflow_id,
            setup_run_id=data.get("setup_run_id"),
            # Nothing is linked until the person sees the account and presses Link.
            hold=True,
        )
        async with metrics.timed_step("entra_link") as timing:
            outcome = await self._drive_link(staff_id, workflow_id, request)
            timing.outcome = "ok" if outcome.reason == AWAITING_CONFIRMATION else "rejected"
        if outcome.reason != AWAITING_CONFIRMATION or not outcome.pending_id:
            return refused(outcome.reason or "provider_error", outcome.message)
        account = outcome.email or outcome.name
        # What "Use another account" starts again with, and what Link confirms.
        session_id = await Sessions(self.settings, self.db).create(
            CONFIRM_PURPOSE,
            staff_id,
            CONFIRM_LIMIT,
            workflow_id=pending.row.workflow_id,
            data={
                "pending_id": outcome.pending_id,
                "account": account,
                "via": via,
                "link_id": data.get("link_id"),
                "setup_run_id": data.get("setup_run_id"),
            },
        )
        return EntraResult("confirm", staff_id=staff_id, account=account, via=via, confirm_session=session_id)

    async def pending_confirmation(self, session_id: str | None) -> Current | None:
        """The account this browser was shown and may link (the page's GET: not spent)."""
        return await Sessions(self.settings, self.db).get(session_id, CONFIRM_PURPOSE)

    async def claim_confirmation(self, session_id: str | None) -> Current | None:
        """Link or "Use another account": the waiting account, revoked at once (single use;
        the caller commits before it goes on)."""
        sessions = Sessions(self.settings, self.db)
        pending = await sessions.get(session_id, CONFIRM_PURPOSE)
        if pending is not None:
            await sessions.revoke(session_id)
        return pending

    @staticmethod
    def restart(pending: Current) -> EntraStart:
        """The same link, started again at Microsoft (which asks which account to use)."""
        data = pending.row.data
        return EntraStart(
            "link",
            staff_id=pending.row.staff_id,
            via=str(data.get("via") or ""),
            link_id=data.get("link_id"),
            setup_workflow_id=pending.row.workflow_id,
            setup_run_id=data.get("setup_run_id"),
        )

    async def confirm(
        self, pending: Current | None, ip: str | None, signed_in: Current | None
    ) -> EntraResult:
        """Link pressed: the flow links the account it verified and holds for this browser."""
        return await self._counted(self._confirm(pending, ip, signed_in), pending)

    async def _confirm(
        self, pending: Current | None, ip: str | None, signed_in: Current | None
    ) -> EntraResult:
        if pending is None or pending.row.staff_id is None:
            return refused("expired")
        staff_id = pending.row.staff_id
        data = pending.row.data
        via = str(data.get("via") or "")
        if via == "session" and (signed_in is None or signed_in.row.staff_id != staff_id):
            return refused("session_ended")
        if (suspended := await self._suspended(staff_id, ip)) is not None:
            return suspended
        flows = FlowClient(
            self.temporal,
            LINK_TIMEOUT,
            self.settings.task_queue,
            connect_timeout=self.settings.step_timeout.total_seconds(),
        )
        request = ConfirmRequest(pending_id=str(data.get("pending_id")), actor=f"staff:{staff_id}", ip=ip)
        async with metrics.timed_step("entra_confirm") as timing:
            try:
                flow = await flows.flow(EntraLinkWorkflow.run, link_workflow_id(str(staff_id)))
                outcome: LinkOutcome = await flow.update(EntraLinkWorkflow.confirm_link, request)
            except (StepRefused, FlowEnded):
                timing.outcome = "rejected"
                return refused("expired")
            timing.outcome = "ok" if outcome.ok else "rejected"
        if not outcome.ok:
            return refused(outcome.reason or "provider_error", outcome.message)
        return EntraResult("linked", staff_id=staff_id, account=outcome.email or outcome.name, via=via)

    async def _drive_link(self, staff_id: uuid.UUID, workflow_id: str, request: LinkRequest) -> LinkOutcome:
        # The link verifies with Microsoft first: it may take longer than a page step.
        flows = FlowClient(
            self.temporal,
            LINK_TIMEOUT,
            self.settings.task_queue,
            connect_timeout=self.settings.step_timeout.total_seconds(),
        )
        try:
            result: LinkOutcome = await flows.update_with_start(
                EntraLinkWorkflow.link,
                request,
                run=EntraLinkWorkflow.run,
                start_arg=EntraLinkInput(
                    staff_id=str(staff_id),
                    email_retry=email_retry(self.settings),
                    org=await metrics_org(self.db, staff_id) or "",
                ),
                id=workflow_id,
                search_attributes=flow_attributes(
                    SearchAttributePair(SSO_STEP, "verifying"),
                    org_id=await org_of(self.db, staff_id),
                    staff_id=staff_id,
                ),
                static_summary=f"Microsoft Entra link for staff {staff_id}",
            )
            return result
        except StepRefused as refused:
            return LinkOutcome(
                ok=False, reason="provider_error", message=refused.message or REFUSALS["provider_error"]
            )
        except StepFailed as failed:
            return LinkOutcome(
                ok=False, reason="provider_error", message=failed.cause_message or REFUSALS["provider_error"]
            )
        except FlowEnded as exc:
            raise ServiceUnavailable(UNAVAILABLE) from exc

    # -- what the admin API and the account page show -------------------------------------

    async def link_of(self, staff_id: uuid.UUID) -> EntraLink | None:
        return await self.db.scalar(select(EntraLink).where(EntraLink.staff_id == staff_id))

    @property
    def _keyring(self) -> Any:
        return keyring_from_settings(self.settings)
