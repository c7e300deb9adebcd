"""What the setup pages ask of a flow: find it from a link or a browser session, read its
progress, and run each step as a Temporal Update."""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from api.services import authenticator
from api.services.account import MfaNotices
from api.services.flows import Flow, Update, update_name
from api.services.mfa_obligation import MfaObligations
from api.services.page_steps import PageSteps
from api.services.sessions import session_hash
from api.services.temporal import UNAVAILABLE
from core import audit, metrics, recovery
from core.crypto import LINK_PURPOSE, code_digest, token_hash
from core.errors import ServiceUnavailable
from core.models import BrowserSession, SetupLink, SetupState, SsoAccount, SsoSetup, Staff, utcnow
from core.org_suspension import suspended_org_name
from core.passwords import PasswordPolicy, check_password, personal_words
from core.sealing import password_context, seal, totp_context
from workflows.setup import (
    CODE_PURPOSE,
    ConfirmCodeRequest,
    SetPasswordRequest,
    SetupProgress,
    SsoSetupWorkflow,
    StepRequest,
    StepResult,
    TotpRequest,
)

MAX_TOKEN_LENGTH = 128
# Why a link that was never used stopped working, by where its setup ended (a link revoked
# while its setup is open was replaced by a newer email of the same setup).
CLOSED_LINK_REASONS = {
    SetupState.expired.value: "expired",
    SetupState.active.value: "used",  # finished another way (Microsoft-Entra)
    SetupState.cancelled.value: "ended",
    SetupState.failed.value: "ended",
}
log = logging.getLogger(__name__)


@dataclass
class LinkView:
    link: SetupLink | None
    staff: Staff | None
    reason: str | None  # None when the link is usable
    setup_state: str | None = None
    org_name: str | None = None  # "suspended": whose sign-in is paused

    @property
    def usable(self) -> bool:
        return self.reason is None


@dataclass
class BoundSetup:
    """A browser session bound to one setup flow (set when the password was chosen)."""

    session: BrowserSession
    staff: Staff


@dataclass
class SetupSteps(PageSteps):
    # -- finding the flow -----------------------------------------------------------------

    async def open_link(self, token: str) -> LinkView:
        if len(token) > MAX_TOKEN_LENGTH:
            return LinkView(None, None, "unknown")
        digest = token_hash(self._secret, LINK_PURPOSE, token)
        link = await self.db.scalar(select(SetupLink).where(SetupLink.token_hash == digest))
        if link is None:
            return LinkView(None, None, "unknown")
        setup = await self.db.scalar(select(SsoSetup).where(SsoSetup.run_id == link.run_id))
        staff = await self.db.get(Staff, link.staff_id)
        state = setup.state if setup is not None else None
        if staff is not None and staff.disabled_at is not None:
            return LinkView(link, staff, "disabled", state)
        if staff is not None and (org_name := await suspended_org_name(self.db, staff.id)) is not None:
            return LinkView(link, staff, "suspended", state, org_name=org_name)
        if link.consumed_at is not None:
            return LinkView(link, staff, "used", state)
        if link.revoked_at is not None or setup is None or not SetupState(setup.state).is_open:
            return LinkView(link, staff, CLOSED_LINK_REASONS.get(state or "", "replaced"), state)
        if link.expires_at <= utcnow():
            return LinkView(link, staff, "expired")
        return LinkView(link, staff, None, setup.state)

    async def bound(self, session_id: str | None) -> BoundSetup | None:
        if not session_id or len(session_id) > MAX_TOKEN_LENGTH:
            return None
        row = await self.db.get(BrowserSession, self.session_hash(session_id))
        if row is None or row.purpose != "setup" or row.revoked_at is not None or row.expires_at <= utcnow():
            return None
        staff = await self.db.get(Staff, row.staff_id)
        return BoundSetup(row, staff) if staff is not None else None

    async def bound_here(self, view: LinkView, token: str, browser_seed: str) -> bool:
        """Whether a form this browser posted for this link already went through and bound
        the session it derives (see `session_id_for`)."""
        return await self._binds(view, self.session_id_for(token, browser_seed))

    async def continues_here(self, view: LinkView, session_id: str | None) -> bool:
        """Whether this browser's setup session is the one that used this (spent) link, and
        its setup is still open: the person opened the link from their email again to carry
        on. (A finished setup's link stays "no longer valid".)"""
        if view.reason != "used" or view.setup_state is None or not SetupState(view.setup_state).is_open:
            return False
        return await self._binds(view, session_id)

    async def _binds(self, view: LinkView, session_id: str | None) -> bool:
        """Whether `session_id` is a live setup session bound by this link's flow."""
        bound = await self.bound(session_id)
        return view.link is not None and bound is not None and bound.session.run_id == view.link.run_id

    async def note_link_opened(self, view: LinkView, ip: str | None = None) -> None:
        """Tell the flow the link's password form was opened, so the setup shows
        `link_opened`. Best effort: the page never waits for it or fails because of it."""
        if view.link is None or not view.usable or view.setup_state != SetupState.email_sent.value:
            return
        try:
            async with asyncio.timeout(self._timeout):
                flow = await self._flows.flow(
                    SsoSetupWorkflow.run, view.link.workflow_id, run_id=view.link.run_id
                )
                await flow.signal(SsoSetupWorkflow.link_opened, StepRequest(ip=ip))
        except Exception as exc:  # the step itself says so when Temporal is down
            log.warning(
                "could not tell flow %s its link was opened: %s", view.link.workflow_id, type(exc).__name__
            )

    def session_hash(self, session_id: str) -> str:
        return session_hash(self.settings, session_id)

    def session_id_for(self, link_token: str, browser_seed: str) -> str:
        """Derived from the link and this browser's CSRF seed, not random: every password form
        this browser posts for the link (a double submit, a reload, another try while the
        worker is down) names the one session whichever of them goes through binds."""
        digest = hmac.new(
            self._secret.encode(), f"setup-session:{link_token}:{browser_seed}".encode(), "sha256"
        ).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    # -- steps ----------------------------------------------------------------------------

    @staticmethod
    def personal_words(staff: Staff, brand: str) -> list[str]:
        """What a password may not be built from: the server's check and the page's guidance."""
        return personal_words(staff.first_name, staff.last_name, staff.external_email_1, brand)

    async def password_problems(self, staff: Staff, password: str) -> list[str]:
        policy = PasswordPolicy(min_length=self.settings.password_min_length)
        return await check_password(password, policy, self.personal_words(staff, self.settings.brand_name))

    async def set_password(
        self,
        view: LinkView,
        token: str,
        password: str,
        submission: str,
        browser_seed: str,
        ip: str | None = None,
    ) -> tuple[StepResult, str]:
        assert view.link is not None
        link = view.link
        session_id = self.session_id_for(token, browser_seed)
        request = SetPasswordRequest(
            sealed_password=seal(
                self.settings.seal_public_key, password.encode(), password_context(link.workflow_id)
            ),
            link_id=str(link.id),
            session_hash=self.session_hash(session_id),
            ip=ip,
        )
        flow = await self._flows.flow(SsoSetupWorkflow.run, link.workflow_id, run_id=link.run_id)
        result = await self._update(flow, SsoSetupWorkflow.set_password, request, submission)
        return result, session_id

    async def progress(self, bound: BoundSetup) -> SetupProgress:
        ended = await self._ended(bound)
        if ended is not None:
            return ended
        progress: SetupProgress = await (await self._flow(bound)).query(SsoSetupWorkflow.progress)
        return progress

    async def _ended(self, bound: BoundSetup) -> SetupProgress | None:
        """A setup that has ended, as its activities recorded it. A query on a closed flow
        replays its whole history on a worker: slow on every page, and no answer at all for
        a history the SDK cannot replay (docs/temporal.md §24)."""
        if bound.session.run_id is None:
            return None
        setup = await self.db.scalar(select(SsoSetup).where(SsoSetup.run_id == bound.session.run_id))
        if setup is None or SetupState(setup.state).is_open:
            return None
        return SetupProgress(
            step=setup.state,
            step_since=setup.state_since,
            link_expires_at=setup.link_expires_at,
            setup_expires_at=None,
            code_delivery="none",
            code_sent_at=None,
            code_expires_at=None,
            code_attempts_left=0,
            resends_left=0,
            next_resend_at=None,
            wrong_codes_total=0,
        )

    async def confirm_code(
        self, bound: BoundSetup, code: str, submission: str, ip: str | None = None
    ) -> StepResult:
        assert bound.session.workflow_id is not None
        digest = code_digest(self._secret, CODE_PURPOSE, bound.session.workflow_id, code)
        return await self._step(
            bound, SsoSetupWorkflow.confirm_code, ConfirmCodeRequest(code_digest=digest, ip=ip), submission
        )

    async def resend_code(self, bound: BoundSetup, submission: str, ip: str | None = None) -> StepResult:
        return await self._step(bound, SsoSetupWorkflow.resend_code, StepRequest(ip=ip), submission)

    async def complete_mfa(
        self, bound: BoundSetup, code: str, submission: str, ip: str | None = None
    ) -> StepResult:
        assert bound.session.workflow_id is not None
        sealed = seal(self.settings.seal_public_key, code.encode(), totp_context(bound.session.workflow_id))
        result = await self._step(
            bound, SsoSetupWorkflow.complete_mfa, TotpRequest(sealed_code=sealed, ip=ip), submission
        )
        if result.ok:
            # Every new factor is emailed, this first one too; from here rather than the flow,
            # whose recorded steps must not change. Once per setup run: a form sent twice (or
            # sent again after Temporal was away) sends one email.
            once = f"setup-{bound.session.workflow_id}-{bound.session.run_id or ''}"
            await MfaNotices(self.settings, self._flows).changed(
                bound.staff.id, "enrolled", once, org_id=bound.staff.org_id
            )
        return result

    async def skip_mfa(self, bound: BoundSetup, submission: str, ip: str | None = None) -> StepResult:
        result = await self._step(bound, SsoSetupWorkflow.skip_mfa, StepRequest(ip=ip), submission)
        if result.ok:
            # Started here, not by the setup flow, whose recorded histories must replay as
            # they are; idempotent, so a repeated submission starts it once.
            await MfaObligations(self.settings, self.db, self._flows).start_after_skip(bound.staff, ip)
        return result

    async def authenticator(self, bound: BoundSetup) -> dict[str, Any]:
        """The setup_mfa page's QR code and key (the flow sealed the secret when it got here)."""
        account = await self.db.scalar(select(SsoAccount).where(SsoAccount.staff_id == bound.staff.id))
        if account is None or account.totp_secret_encrypted is None:
            raise ServiceUnavailable(UNAVAILABLE)
        return authenticator.page_values(self.settings, account)

    async def _enrolled_without_codes(self, bound: BoundSetup) -> SsoAccount | None:
        """The account, when its setup turned MFA on and no recovery codes were made yet."""
        account = await self.db.scalar(select(SsoAccount).where(SsoAccount.staff_id == bound.staff.id))
        if account is None or account.mfa_enabled_at is None or await recovery.made(self.db, account.id):
            return None
        return account

    async def recovery_codes_due(self, bound: BoundSetup) -> bool:
        return await self._enrolled_without_codes(bound) is not None

    async def recovery_codes(self, bound: BoundSetup, ip: str | None) -> list[str] | None:
        """The first set, shown once; None once it was made (a new set is the account page's)."""
        account = await self._enrolled_without_codes(bound)
        if account is None:
            return None
        codes = await recovery.issue(self.db, self._secret, account.id, utcnow())
        audit.by_staff(self.db, str(bound.staff.id), "mfa.recovery_codes_issued", ip=ip, via="setup")
        return codes

    async def login_email(self, bound: BoundSetup) -> str:
        account = await self.db.scalar(select(SsoAccount).where(SsoAccount.staff_id == bound.staff.id))
        return account.login_email if account else bound.staff.external_email_1

    # -- plumbing -------------------------------------------------------------------------

    async def _flow(self, bound: BoundSetup) -> Flow:
        assert bound.session.workflow_id is not None
        return await self._flows.flow(
            SsoSetupWorkflow.run, bound.session.workflow_id, run_id=bound.session.run_id
        )

    async def _step(self, bound: BoundSetup, update: Update, arg: object, submission: str) -> StepResult:
        return await self._update(await self._flow(bound), update, arg, submission)

    async def _update(self, flow: Flow, update: Update, arg: object, submission: str) -> StepResult:
        name = update_name(update)
        async with metrics.timed_step(name) as timing:
            # The submission names the update: a form sent twice is one step, run once.
            result: StepResult = await flow.update(update, arg, id=f"{name}-{submission[:64]}")
            timing.outcome = "ok" if result.ok else "rejected"
        return result
