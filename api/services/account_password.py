"""Changing one's password from the account page: the current password first (counted like a
sign-in attempt), the new one under the same rules as setup, then every other session ends,
this browser gets a new session id, and the person is emailed."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from api.services.account import AccountSteps
from api.services.backchannel import end_sessions
from api.services.sessions import Current, Sessions
from api.services.setup import SetupSteps
from api.services.temporal import email_retry
from core import audit
from core.models import SsoAccount, Staff, utcnow
from core.orgs import org_of
from core.search_attributes import flow_attributes
from workflows.notices import NoticeInput, PasswordChangedNoticeWorkflow

MISMATCH = "The two new passwords don't match. Type the same new password in both boxes."
WRONG_CURRENT = (
    "That isn't your current password. After several wrong tries you have to wait a few minutes "
    "before the next one."
)
SAME = "That is your current password. Choose a new one."


@dataclass
class PasswordChange:
    """What became of a change: the problems to show, or the browser's new session id."""

    problems: list[str] = field(default_factory=list)
    wrong_current: bool = False
    session_id: str | None = None
    sessions_ended: int = 0


@dataclass
class PasswordSteps:
    steps: AccountSteps

    def personal_words(self, staff: Staff) -> list[str]:
        """What the page's guidance takes out of a password, as the server's check does."""
        return SetupSteps.personal_words(staff, self.steps.settings.brand_name)

    async def change(
        self,
        current: Current,
        account: SsoAccount,
        passwords: tuple[str, str, str],
        ip: str | None,
        user_agent: str | None,
    ) -> PasswordChange:
        """`passwords`: the current one, the new one and the new one again. Nothing changes
        unless all three are right."""
        old, new, again = passwords
        steps, staff = self.steps, current.staff
        assert staff is not None
        if new != again:
            return PasswordChange([MISMATCH])
        if not await steps.password_again(account, old, ip, "password.change_failed"):
            return PasswordChange([WRONG_CURRENT], wrong_current=True)
        if new == old:
            return PasswordChange([SAME])
        checker = SetupSteps(steps.settings, steps.db, steps.temporal)
        problems = await checker.password_problems(staff, new)
        if problems:
            audit.by_staff(steps.db, str(staff.id), "password.change_failed", outcome="failure", ip=ip)
            return PasswordChange(problems)
        new_hash = await steps.hashing.hash(new)
        # The email first: when Temporal can't take it, the password is not changed either.
        await self._notify(staff.id)
        account.password_hash = new_hash
        account.failed_sign_ins = 0
        account.locked_until = None
        # Every session ends, this one too: its id is replaced below (a new id after a change
        # of credentials), and the apps signed in through any of them are told.
        ended = await end_sessions(steps.temporal, steps.settings, steps.db, staff.id)
        method = str(current.row.data.get("method") or "password")
        session_id = await Sessions(steps.settings, steps.db).sign_in(staff.id, method, user_agent)
        others = sum(1 for row in ended if row.id_hash != current.row.id_hash)
        audit.by_staff(
            steps.db, str(staff.id), "password.changed", ip=ip, via="account", sessions_revoked=others
        )
        return PasswordChange(session_id=session_id, sessions_ended=others)

    async def _notify(self, staff_id: uuid.UUID) -> None:
        settings = self.steps.settings
        await self.steps._flows.start(
            PasswordChangedNoticeWorkflow.run,
            NoticeInput(staff_id=str(staff_id), changed_at=utcnow(), kept_this_browser=True),
            email_retry(settings),
            id=f"password-changed-{staff_id}-{uuid.uuid4()}",
            search_attributes=flow_attributes(
                org_id=await org_of(self.steps.db, staff_id), staff_id=staff_id
            ),
            static_summary="Email: your password was changed",
        )
