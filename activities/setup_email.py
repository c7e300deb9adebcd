"""Activities of the SSO setup flow: issue the link and email it, close the flow in the DB."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.base import SecretActivities
from activities.email_delivery import PermanentEmailError, TransientEmailError, record_after_send
from activities.inputs import CloseSetupInput, SendSetupEmailInput, SendSetupEmailResult
from activities.send_requests import AttemptClock
from core import audit, flow_errors
from core.crypto import LINK_PURPOSE, new_token, token_hash
from core.models import (
    BrowserSession,
    DeliveryState,
    SetupLink,
    SetupState,
    SsoSetup,
    Staff,
    StaffBatchItem,
    utcnow,
)
from core.times import email_until

# The result stays in the flow's history, which outlives an erasure of the person: not even
# a masked address goes there (flows started before this still show theirs).
NO_ADDRESS_IN_HISTORY = ""


def ttl_words(seconds: int) -> str:
    minutes, rest = divmod(seconds, 60)
    if rest or not minutes:
        return f"{seconds} seconds"
    if minutes % 60 == 0:
        hours = minutes // 60
        return f"{hours} hour" + ("s" if hours != 1 else "")
    return f"{minutes} minute" + ("s" if minutes != 1 else "")


class SetupActivities(SecretActivities):
    @activity.defn(name="send_setup_email")
    async def send_setup_email(self, data: SendSetupEmailInput) -> SendSetupEmailResult:
        """Mint the link token once per send request, store only its HMAC (and the token
        sealed until the email is accepted), email the link.

        The token never leaves the worker but inside the email, so it never reaches workflow
        history. A retry of this send emails the same link (both copies work); a new send
        request (a new flow) revokes the person's earlier links.
        """
        info = activity.info()
        clock = AttemptClock()
        staff_id = uuid.UUID(data.staff_id)
        secret = self._settings.secret_key.get_secret_value()

        async with self._sessions() as session:
            staff = await session.get(Staff, staff_id)
            # Row lock (PostgreSQL) so a concurrent close cannot slip between check and insert.
            setup = await session.get(SsoSetup, uuid.UUID(data.setup_id), with_for_update=True)
            if staff is None or setup is None:
                raise ApplicationError(
                    "staff member no longer exists", non_retryable=True, type=flow_errors.STAFF_NOT_FOUND
                )
            if not SetupState(setup.state).is_open:
                # Cancelled or superseded while this attempt waited: mint no link at all.
                raise ApplicationError(
                    f"setup already {setup.state}", non_retryable=True, type=flow_errors.SETUP_ENDED
                )
            # A bulk send spent the budget for its setup's email before starting it.
            batched = await session.scalar(
                select(StaffBatchItem.id).where(StaffBatchItem.setup_id == setup.id)
            )
            claim = await self._requests.claim(
                session, "sso_welcome", staff_id, new_token, budgeted=batched is not None
            )
            if claim.accepted:
                # An earlier attempt's email was accepted and recorded; its answer was lost.
                assert claim.row.accepted_at is not None and claim.row.expires_at is not None
                return SendSetupEmailResult(
                    sent_at=claim.row.accepted_at,
                    link_expires_at=claim.row.expires_at,
                    masked_email=NO_ADDRESS_IN_HISTORY,
                    attempts=setup.email_attempts,
                )
            # The link's time starts when its email is handed to the mail server (this attempt).
            expires_at = clock.now() + timedelta(seconds=data.link_ttl_seconds)
            link_hash = token_hash(secret, LINK_PURPOSE, claim.secret)
            if claim.minted:
                await _revoke_links(session, staff_id, clock.now())
                session.add(
                    SetupLink(
                        staff_id=staff_id,
                        workflow_id=data.workflow_id,
                        run_id=data.run_id,
                        expires_at=expires_at,
                        token_hash=link_hash,
                    )
                )
            else:
                await session.execute(
                    update(SetupLink).where(SetupLink.token_hash == link_hash).values(expires_at=expires_at)
                )
            claim.row.expires_at = expires_at
            self._requests.hand_over(claim)
            setup.run_id = data.run_id
            setup.email_attempts = info.attempt
            await session.commit()

        email = await self._email_to(
            staff,
            "sso_welcome",
            link=f"{self._settings.public_url}/sso/setup/{claim.secret}",
            ttl_words=ttl_words(data.link_ttl_seconds),
            expires_at_text=email_until(expires_at, self._settings.zone),
        )
        claim.secret = ""
        try:
            await self._requests.send(self._sessions, self._sender, claim, email)
        except TransientEmailError as exc:
            await self._record_delivery(data, DeliveryState.retrying, str(exc), info.attempt)
            raise
        except PermanentEmailError as exc:
            await self._record_delivery(data, DeliveryState.failed, str(exc), info.attempt)
            raise ApplicationError(
                str(exc), non_retryable=True, type=flow_errors.PERMANENT_EMAIL_ERROR
            ) from exc

        sent_at = clock.now()

        async def record_sent() -> None:
            async with self._sessions() as session:
                result = await session.execute(
                    update(SsoSetup)
                    .where(
                        SsoSetup.id == uuid.UUID(data.setup_id),
                        # or already sent by an earlier attempt of this run, whose answer
                        # never reached Temporal (its worker died)
                        (SsoSetup.state == SetupState.sending_email.value)
                        | (
                            (SsoSetup.state == SetupState.email_sent.value) & (SsoSetup.run_id == data.run_id)
                        ),
                    )
                    .values(
                        state=SetupState.email_sent.value,
                        state_since=sent_at,
                        link_expires_at=expires_at,
                        email_delivery=DeliveryState.sent.value,
                        email_attempts=info.attempt,
                        email_last_error=None,
                    )
                )
                if result.rowcount == 0:  # type: ignore[attr-defined]
                    # Cancelled or superseded while the email was in flight: its link must
                    # not work.
                    await session.execute(
                        update(SetupLink).where(SetupLink.run_id == data.run_id).values(revoked_at=sent_at)
                    )
                    await session.commit()
                    raise ApplicationError(
                        "setup ended while its email was being sent",
                        non_retryable=True,
                        type=flow_errors.SETUP_ENDED,
                    )
                await self._requests.accepted(session, claim, sent_at)
                audit.record(
                    session,
                    actor="system",
                    action="sso_email.sent",
                    outcome="success",
                    target=data.staff_id,
                    backend=self._sender.name,
                    attempts=info.attempt,
                    workflow_id=data.workflow_id,
                )
                await session.commit()

        await record_after_send(record_sent)
        return SendSetupEmailResult(
            sent_at=sent_at,
            link_expires_at=expires_at,
            masked_email=NO_ADDRESS_IN_HISTORY,
            attempts=info.attempt,
        )

    async def _record_delivery(
        self, data: SendSetupEmailInput, state: DeliveryState, error: str, attempt: int
    ) -> None:
        async with self._sessions() as session:
            await session.execute(
                update(SsoSetup)
                .where(
                    SsoSetup.id == uuid.UUID(data.setup_id), SsoSetup.state == SetupState.sending_email.value
                )
                .values(email_delivery=state.value, email_last_error=error, email_attempts=attempt)
            )
            audit.record(
                session,
                actor="system",
                action="sso_email.attempt_failed",
                outcome="retrying" if state is DeliveryState.retrying else "failure",
                target=data.staff_id,
                error=error,
                attempt=attempt,
                backend=self._sender.name,
            )
            await session.commit()

    @activity.defn(name="close_setup")
    async def close_setup(self, data: CloseSetupInput) -> None:
        """Record how a flow ended and make sure none of its links work any more."""
        now = utcnow()
        async with self._sessions() as session:
            setup = await session.get(SsoSetup, uuid.UUID(data.setup_id))
            if setup is None:
                return
            # By the flow's own run id: the setup row may not have recorded it yet.
            await session.execute(
                update(SetupLink)
                .where(SetupLink.run_id == data.run_id, SetupLink.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            if data.state != SetupState.active.value:
                await session.execute(
                    update(BrowserSession)
                    .where(BrowserSession.run_id == data.run_id, BrowserSession.revoked_at.is_(None))
                    .values(revoked_at=now)
                )
            if setup.state != data.state:
                setup.state = data.state
                setup.state_since = now
            if data.state == SetupState.failed.value:
                setup.failure_reason = data.reason
                if setup.email_delivery != DeliveryState.sent.value:
                    setup.email_delivery = DeliveryState.failed.value
            audit.record(
                session,
                actor=data.actor,
                action=f"sso_setup.{data.state}",
                outcome=data.state,
                target=data.staff_id,
                reason=data.reason,
            )
            await session.commit()


async def _revoke_links(session: AsyncSession, staff_id: uuid.UUID, now: datetime) -> None:
    await session.execute(
        update(SetupLink)
        .where(
            SetupLink.staff_id == staff_id, SetupLink.revoked_at.is_(None), SetupLink.consumed_at.is_(None)
        )
        .values(revoked_at=now)
    )
