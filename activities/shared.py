"""Activities every flow uses: the emailed six-digit code and the audit record."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity

from activities.base import SecretActivities
from activities.inputs import AuditInput, SendCodeInput, SendCodeResult
from activities.send_requests import AttemptClock
from activities.setup import move_setup
from activities.setup_email import ttl_words
from core import audit
from core.crypto import code_digest, new_email_code
from core.models import SetupState, utcnow

ACCOUNT_PAGE = "/sso/account"
CODE_TEMPLATES = {
    "setup": "verification_code",
    "reset": "password_reset_code",
    "email_change": "email_change_code",
}


class SharedActivities(SecretActivities):
    @activity.defn(name="send_code")
    async def send_code(self, data: SendCodeInput) -> SendCodeResult:
        """A six-digit code, emailed; only its keyed digest is returned. Minted once per send
        request: a retry emails the same code (both copies work), "Send a new code" is a new
        request and a new code."""
        clock = AttemptClock()
        staff_id = uuid.UUID(data.staff_id)
        async with self._sessions() as session:
            staff = await self._staff(session, staff_id)
            claim = await self._requests.claim(
                session, CODE_TEMPLATES[data.purpose], staff_id, new_email_code
            )
            if claim.accepted:
                # An earlier attempt's email was accepted and recorded; its answer was lost.
                assert claim.row.digest is not None and claim.row.accepted_at is not None
                return SendCodeResult(code_digest=claim.row.digest, sent_at=claim.row.accepted_at)
            if data.purpose == "email_change":
                # The web app starts this flow while it holds the person's row, and commits the
                # new address after: read it under the lock (SQLite: the claim's write waited).
                await session.refresh(staff, with_for_update=True)
            digest = code_digest(
                self._settings.secret_key.get_secret_value(), data.purpose, data.workflow_id, claim.secret
            )
            claim.row.digest = digest
            self._requests.hand_over(claim)
            email = await self._email_to(
                staff,
                CODE_TEMPLATES[data.purpose],
                to=self._code_address(staff, data.purpose),
                code=claim.secret,
                ttl_words=ttl_words(data.code_ttl_seconds),
                account_url=f"{self._settings.public_url}{ACCOUNT_PAGE}",
            )
            await session.commit()

        async def record(session: AsyncSession, sent_at: datetime) -> None:
            if data.setup_id:  # "" in inputs scheduled before setup_id was optional
                await move_setup(
                    session,
                    data.setup_id,
                    SetupState.code_sent,
                    utcnow(),
                    only_from={SetupState.password_set, SetupState.code_sent},
                )
            audit.by_system(
                session, data.staff_id, "code.issued", purpose=data.purpose, workflow_id=data.workflow_id
            )

        # Server clock, like the workflow's: the code's lifetime counts from the hand-over.
        sent_at = await self._deliver(claim, email, clock, record)
        return SendCodeResult(code_digest=digest, sent_at=sent_at)

    @activity.defn(name="record_audit")
    async def record_audit(self, data: AuditInput) -> None:
        await self._audit(data)
