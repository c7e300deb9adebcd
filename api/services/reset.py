"""'Forgot your password?': ask for a reset code and change the password with it.

Known and unknown addresses are answered alike: both get a reset page and a browser session;
for an unknown address the session stands in for a flow and answers as a flow would, with the
same words and the same steps (the code's digest, the sealing, one Temporal round trip, the
wrong code counted against the same caps in the database).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from temporalio.common import SearchAttributePair

from api.services.flows import Flow, FlowEnded, StepFailed, StepRefused
from api.services.page_steps import PageSteps
from api.services.sessions import Current
from api.services.temporal import UNAVAILABLE, email_retry
from core import audit, metrics
from core.crypto import code_digest, token_hash
from core.errors import ServiceUnavailable
from core.models import AccountStatus, BrowserSession, ResetLink, SsoAccount, utcnow
from core.org_suspension import suspended_org_name
from core.orgs import metrics_org, org_of
from core.reset_caps import (
    CODES_STOPPED,
    LINK_GONE,
    LINK_SENT,
    CodeCaps,
    codes_stopped,
    count_wrong_code,
    reset_link_hash,
)
from core.sealing import password_context, seal, totp_context
from core.search_attributes import SSO_STEP, flow_attributes
from workflows.codes import CODE_ATTEMPTS
from workflows.common import StepResult
from workflows.reset import (
    RESET_PURPOSE,
    CodeRequest,
    PasswordResetInput,
    PasswordResetWorkflow,
    ResetOutcome,
    ResetProgress,
    ResetRequest,
)

STAND_IN_NAMESPACE = uuid.UUID("1f0c7f0e-3d7a-4b55-9d6e-5b1f3c2a9e10")


STAND_IN_PREFIX = "standin-"
NEW_CODE_SENT = "We've sent you a new code. Earlier codes no longer work."
RESET_ENDED = "This reset has ended. Start again with Forgot your password?"


def reset_workflow_id(account_id: uuid.UUID) -> str:
    return f"password-reset-{account_id}"


def is_stand_in(current: Current) -> bool:
    return (current.row.workflow_id or STAND_IN_PREFIX).startswith(STAND_IN_PREFIX)


@dataclass
class ResetSteps(PageSteps):
    async def account(self, email: str) -> SsoAccount | None:
        address = email.strip().lower()
        if not address or "\x00" in address:  # no address holds NUL (PostgreSQL text can't)
            return None
        account = await self.db.scalar(select(SsoAccount).where(SsoAccount.login_email == address))
        if account is None or account.status != AccountStatus.active.value:
            return None
        # A suspended organisation's people reset nothing: treated as an unknown address.
        return None if await suspended_org_name(self.db, account.staff_id) else account

    def browser_key(self, browser_id: str) -> str:
        """What the flow knows of a browser: a keyed hash of its cookie, which grants nothing."""
        return token_hash(self._secret, "reset-browser", browser_id)

    def subject(self, account: SsoAccount | None, email: str) -> str:
        """Whose wrong codes count together: the account, or the address's stand-in."""
        return str(account.id) if account is not None else self.stand_in_id(email)

    async def links_only(self, subject: str) -> bool:
        """Past the day's cap on wrong codes: reset emails carry a link, not a code."""
        return await codes_stopped(self.db, self._caps(subject, ""), utcnow())

    async def request_code(
        self, account: SsoAccount | None, email: str, ip: str | None, browser: str, links_only: bool
    ) -> str:
        """Start the reset flow, or ask the open one for a new code for this browser. A refusal
        (too soon, too many) is not shown here: the answer to this form is the same for every
        address. Returns what happened, for the audit log only."""
        flows = self._flows
        await flows.connect()
        if account is None:
            await self._stand_in_request(email)
            self._audit_request("reset.requested", "unknown_address", None, ip)
            return "unknown_address"
        workflow_id = reset_workflow_id(account.id)
        org_id = await org_of(self.db, account.staff_id)
        org = await metrics_org(self.db, account.staff_id) or ""
        outcome = "sent"
        async with metrics.timed_step("reset_request") as timing:
            try:
                result: StepResult = await flows.update_with_start(
                    PasswordResetWorkflow.request_code,
                    CodeRequest(ip=ip, browser=browser, links_only=links_only),
                    run=PasswordResetWorkflow.run,
                    start_arg=self._input(account, org_id, org),
                    id=workflow_id,
                    search_attributes=flow_attributes(
                        SearchAttributePair(SSO_STEP, "code_requested"),
                        org_id=org_id,
                        staff_id=account.staff_id,
                    ),
                    static_summary=f"Password reset for staff {account.staff_id}",
                )
                if result.message == LINK_SENT:
                    outcome = "link_sent"
            except (StepRefused, StepFailed):
                timing.outcome = outcome = "refused"  # this browser's code still works
            except FlowEnded as exc:
                raise ServiceUnavailable(UNAVAILABLE) from exc
        self._audit_request("reset.requested", outcome, str(account.staff_id), ip)
        return outcome

    def audit_refused_request(self, ip: str | None) -> None:
        """Too many requests from this address: refused before any look-up."""
        self._audit_request("reset.requested", "rate_limited", None, ip)

    def _audit_request(self, action: str, outcome: str, target: str | None, ip: str | None) -> None:
        """Recorded for every address alike (the caller commits); nothing of it reaches the
        page."""
        audit.record(self.db, actor=f"ip:{ip}", action=action, outcome=outcome, target=target, ip=ip)

    async def _stand_in_request(self, email: str) -> None:
        """Comparable work to the real thing: one round trip to Temporal."""
        stand_in = uuid.uuid5(STAND_IN_NAMESPACE, email.strip().lower())
        await self._flows.round_trip(reset_workflow_id(stand_in))

    def stand_in_id(self, email: str) -> str:
        """What stands in for a flow id for an address without an account (keyed, so the
        table does not list the addresses people tried)."""
        return STAND_IN_PREFIX + code_digest(self._secret, "standin", "reset", email.strip().lower())[-40:]

    async def stand_in_state(self, stand_in_id: str, browser: str, links_only: bool) -> dict[str, Any]:
        """Like asking the open flow for a code again from this browser: this browser's clock
        and code, throttled exactly as a flow throttles a browser; the "flow" (what the
        per-flow cap counts) lasts while requests for the address keep coming."""
        rows = (
            await self.db.scalars(
                # Revoked ones count too: the clock belongs to the browser, not to a session.
                select(BrowserSession)
                .where(BrowserSession.workflow_id == stand_in_id, BrowserSession.expires_at > utcnow())
                .order_by(BrowserSession.created_at.desc())
            )
        ).all()
        now = utcnow()
        flow = (rows[0].data.get("flow") if rows else None) or f"{stand_in_id}-{uuid.uuid4()}"
        stopped = any(r.data.get("stopped") and r.data.get("flow") == flow for r in rows)
        mine = next((r for r in rows if r.data.get("browser") == browser), None)
        shared = {"browser": browser, "flow": flow, "stopped": stopped}
        if mine is None:
            return {"sends": 1, "last_request": now.isoformat(), "failures": 0, **shared}
        data = dict(mine.data)
        sends = int(data.get("sends", 1))
        last = datetime.fromisoformat(data["last_request"]) if data.get("last_request") else None
        throttled = sends - 1 >= self.settings.code_max_resends or (
            last is not None and now < last + self.settings.code_resend_interval
        )
        if throttled:
            return {**data, **shared}
        return {**data, "sends": sends + 1, "last_request": now.isoformat(), "failures": 0, **shared}

    async def resend(self, current: Current, ip: str | None) -> str:
        """The notice for the page (sent, or why not). Audited for every address alike."""
        links_only = await self.links_only(self._subject_of(current))
        if is_stand_in(current):
            await self._stand_in_round_trip(current)
            notice = await self._stand_in_resend(current, links_only)
            self._audit_request("reset.resend", "unknown_address", None, ip)
            return notice
        flow = await self._flow(current)
        target = str(current.row.staff_id)
        async with metrics.timed_step("reset_resend") as timing:
            try:
                result: StepResult = await flow.update(
                    PasswordResetWorkflow.request_code,
                    CodeRequest(ip=ip, browser=self._browser(current), links_only=links_only),
                )
            except StepRefused as refused:
                timing.outcome = "refused"
                self._audit_request("reset.resend", "refused", target, ip)
                return refused.message
            except FlowEnded:
                timing.outcome = "ended"
                self._audit_request("reset.resend", "ended", target, ip)
                return RESET_ENDED
        sent_link = result.message == LINK_SENT
        self._audit_request("reset.resend", "link_sent" if sent_link else "sent", target, ip)
        return LINK_SENT if sent_link else NEW_CODE_SENT

    async def reset(
        self,
        current: Current,
        code: str,
        password: str,
        totp: str,
        ip: str | None,
        submission: str,
        passkey_proof: str | None = None,
    ) -> StepResult:
        """Both kinds of session take the same steps up to the flow: the code's digest and the
        sealed password (and authenticator code), then one round trip to Temporal; a wrong
        code is then counted against the same caps."""
        assert current.row.workflow_id is not None
        workflow_id = current.row.workflow_id
        public = self.settings.seal_public_key
        request = ResetRequest(
            code_digest=code_digest(self._secret, RESET_PURPOSE, workflow_id, code),
            sealed_password=seal(public, password.encode(), password_context(workflow_id)),
            sealed_totp=seal(public, totp.encode(), totp_context(workflow_id)) if totp else None,
            ip=ip,
            browser=self._browser(current),
            passkey_proof=passkey_proof,
        )
        if is_stand_in(current):
            await self._stand_in_round_trip(current)
            return await self._stand_in_reset(current, submission)
        flow = await self._flow(current)
        async with metrics.timed_step("reset") as timing:
            result = await self._reset(flow, workflow_id, request, submission)
            timing.outcome = "ok" if result.ok else "rejected"
        return result

    async def link_usable(self, token: str) -> ResetLink | None:
        """The reset link behind this token, while it can still be used."""
        if not token or len(token) > 128:
            return None
        link = await self.db.scalar(
            select(ResetLink).where(ResetLink.token_hash == reset_link_hash(self._secret, token))
        )
        if link is None or link.consumed_at is not None or link.expires_at <= utcnow():
            return None
        return link

    async def reset_with_link(
        self, token: str, password: str, totp: str, ip: str | None, submission: str
    ) -> StepResult:
        """The flow changes the password; its activity consumes the link in the same
        transaction, so a link works once however often the form is sent."""
        link = await self.link_usable(token)
        if link is None:
            return StepResult(ok=False, step="", message=LINK_GONE)
        workflow_id = link.workflow_id
        public = self.settings.seal_public_key
        request = ResetRequest(
            code_digest="",
            link_digest=link.token_hash,
            sealed_password=seal(public, password.encode(), password_context(workflow_id)),
            sealed_totp=seal(public, totp.encode(), totp_context(workflow_id)) if totp else None,
            ip=ip,
        )
        flow = await self._flows.flow(PasswordResetWorkflow.run, workflow_id)
        async with metrics.timed_step("reset") as timing:
            result = await self._reset(flow, workflow_id, request, submission)
            timing.outcome = "ok" if result.ok else "rejected"
        return result

    async def _reset(
        self, flow: Flow, workflow_id: str, request: ResetRequest, submission: str
    ) -> StepResult:
        try:
            result: StepResult = await flow.update(
                PasswordResetWorkflow.reset_password, request, id=f"reset-{submission[:64]}"
            )
            return result
        except StepRefused as refused:
            return StepResult(ok=False, step="", message=refused.message)
        except FlowEnded:
            if await self._finished_with_reset(workflow_id):
                # This form already went through (a double submit): same answer.
                return StepResult(ok=True, step="completed")
            return StepResult(ok=False, step="", message=RESET_ENDED)

    async def progress(self, current: Current) -> ResetProgress | None:
        if is_stand_in(current):
            return None
        flow = await self._flow(current)
        try:
            progress: ResetProgress = await flow.query(PasswordResetWorkflow.progress, self._browser(current))
            return progress
        except (FlowEnded, ServiceUnavailable):
            return None

    async def _finished_with_reset(self, workflow_id: str) -> bool:
        finished = await self._flows.flow(PasswordResetWorkflow.run, workflow_id)
        try:
            outcome: ResetOutcome = await finished.result()
        except Exception:  # failed, terminated or unreachable: not a finished reset
            return False
        return bool(outcome.state == "reset")

    # -- the stand-in for unknown addresses answers as a flow would --------------------------

    async def _stand_in_round_trip(self, current: Current) -> None:
        """The one round trip to Temporal a flow's step takes (it finds no flow)."""
        await self._flows.round_trip(current.row.workflow_id or "")

    async def _stand_in_resend(self, current: Current, links_only: bool) -> str:
        data = dict(current.row.data)
        now = utcnow()
        last = datetime.fromisoformat(data["last_request"]) if data.get("last_request") else None
        sends = int(data.get("sends", 1))
        interval = self.settings.code_resend_interval
        if sends - 1 >= self.settings.code_max_resends:
            return "You've asked for the most new codes we can send."
        if last is not None and now < last + interval:
            seconds = max(1, int((last + interval - now).total_seconds() + 0.999))
            return f"You can ask for a new code in {seconds} second{'s' if seconds != 1 else ''}."
        stopped = links_only or await self._stand_in_stopped(current)
        current.row.data = {**data, "sends": sends + 1, "last_request": now.isoformat(), "failures": 0}
        return LINK_SENT if stopped else NEW_CODE_SENT

    async def _stand_in_stopped(self, current: Current) -> bool:
        """Whether any browser of this address's "flow" reached a cap (as a flow knows)."""
        data = current.row.data
        return bool(data.get("stopped")) or await codes_stopped(
            self.db, self._caps(self._subject_of(current), str(data.get("flow", ""))), utcnow()
        )

    async def _stand_in_reset(self, current: Current, submission: str) -> StepResult:
        data = dict(current.row.data)
        if submission and data.get("last_submission") == submission:
            # The same form again: a flow answers it from its record, without counting.
            return StepResult(ok=False, step="code_sent", message=data.get("last_answer"))
        failures = int(data.get("failures", 0))
        now = utcnow()
        last = datetime.fromisoformat(data["last_request"]) if data.get("last_request") else now
        if await self._stand_in_stopped(current):
            data["stopped"] = True
            message = CODES_STOPPED
        elif failures >= CODE_ATTEMPTS:
            message = "Too many incorrect codes. Click Send a new code."
        elif now >= last + self.settings.code_ttl:
            message = "This code has expired. Click Send a new code."
        else:
            failures += 1
            left = CODE_ATTEMPTS - failures
            counted = await count_wrong_code(
                self.db, self._caps(self._subject_of(current), str(data.get("flow", ""))), now
            )
            if counted.stopped:
                data["stopped"] = True
                message = CODES_STOPPED
            else:
                message = (
                    f"Incorrect code, {left} attempt{'s' if left != 1 else ''} left"
                    if left
                    else "Incorrect code. This code can no longer be used; click Send a new code."
                )
        current.row.data = {
            **data,
            "failures": failures,
            "last_submission": submission,
            "last_answer": message,
        }
        return StepResult(ok=False, step="code_sent", message=message)

    # -- plumbing -------------------------------------------------------------------------

    def _input(self, account: SsoAccount, org_id: uuid.UUID | None, org: str) -> PasswordResetInput:
        s = self.settings
        return PasswordResetInput(
            account_id=str(account.id),
            staff_id=str(account.staff_id),
            org_id=str(org_id or ""),
            org=org,
            email_retry=email_retry(s),
            code_ttl_seconds=int(s.code_ttl.total_seconds()),
            code_resend_interval_seconds=int(s.code_resend_interval.total_seconds()),
            code_max_resends=s.code_max_resends,
            ttl_seconds=int(s.reset_ttl.total_seconds()),
            wrong_code_flow_limit=s.reset_wrong_code_flow_limit,
            wrong_code_day_limit=s.reset_wrong_code_day_limit,
            link_ttl_seconds=int(s.reset_link_ttl.total_seconds()),
            per_browser=True,
        )

    def _caps(self, subject: str, flow: str) -> CodeCaps:
        return CodeCaps(
            subject, flow, self.settings.reset_wrong_code_flow_limit, self.settings.reset_wrong_code_day_limit
        )

    def _subject_of(self, current: Current) -> str:
        if is_stand_in(current):
            return current.row.workflow_id or ""
        return (current.row.workflow_id or "").removeprefix("password-reset-")

    @staticmethod
    def _browser(current: Current) -> str | None:
        """None for a session from before browsers had keys: the flow's shared code."""
        browser = current.row.data.get("browser")
        return browser if isinstance(browser, str) else None

    async def _flow(self, current: Current) -> Flow:
        assert current.row.workflow_id is not None
        return await self._flows.flow(PasswordResetWorkflow.run, current.row.workflow_id)
