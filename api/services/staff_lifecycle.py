"""A person's lifecycle after they were added: edit their name and External Email 1, set the
day they leave, and erase them (the right to erasure under UK GDPR).

A new External Email 1 is confirmed by a code emailed to it (workflows/email_change.py)
before it replaces the old one. The leave date is a durable timer (workflows/leave.py) that
disables the person at the start of that day. Erasing first disables the person (their
sessions end and the apps are told), then deletes their flows from Temporal, pseudonymises
their audit trail and deletes every row that holds their personal data.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from api.schemas import StaffUpdate
from api.services.email_change import EmailChanges, refuse_if_suspended
from api.services.flow_erasure import delete_runs, person_runs
from api.services.staff import address_refusal, get_staff
from api.services.staff_status import StaffStatus
from api.services.temporal import UNAVAILABLE, WORKFLOW_TASK_TIMEOUT, connected
from core import audit
from core.accounts import account_for, email_holder_org
from core.db import UnitOfWork
from core.errors import Conflict, InvalidInput, ServiceUnavailable
from core.models import (
    AuditEvent,
    EntraLink,
    MfaObligation,
    OutboxEmail,
    SsoAccount,
    SsoSetup,
    Staff,
)
from core.orgs import AdminScope
from core.search_attributes import SSO_STEP, flow_attributes
from core.settings import Settings
from core.temporal_client import TemporalGateway
from workflows.leave import LeaveInput, LeaveMove, StaffLeaveWorkflow, leave_workflow_id

logger = logging.getLogger(__name__)

SELF_ERASE = "You can't erase your own staff login. Ask another administrator."
LEAVE_NOT_AFTER_TODAY = (
    "The leave date must be after today. To stop someone signing in today, disable them instead."
)
EMAIL_TAKEN = "Another staff member already uses that email address"
ERASED = "[erased]"
FLOW_TIMEOUT = 10.0


def leave_moment(day: date, settings: Settings) -> datetime:
    """The start of `day` in SSO_TIME_ZONE, in UTC: when a person leaving that day is disabled."""
    return datetime.combine(day, time.min, tzinfo=settings.zone).astimezone(UTC)


@dataclass
class StaffLifecycle:
    uow: UnitOfWork
    settings: Settings
    temporal: TemporalGateway

    @property
    def db(self) -> AsyncSession:
        return self.uow.session

    async def update(
        self, staff_id: uuid.UUID, data: StaffUpdate, scope: AdminScope, ip: str | None
    ) -> Staff:
        """Changes only the fields sent, all or nothing. Every field is checked before anything
        changes; a new External Email 1 starts its confirmation (the returned person shows it
        pending) and a leave date moves its timer. Those flows start before the database takes
        any of it, so Temporal being away is a ServiceUnavailable with nothing changed."""
        staff = await get_staff(self.db, staff_id, scope)
        actor = scope.actor
        sent = data.model_fields_set
        for name in ("first_name", "last_name", "external_email_1"):
            if name in sent and getattr(data, name) is None:
                raise InvalidInput(f"{name} can't be empty")
        new_email = data.external_email_1.lower() if data.external_email_1 is not None else None
        if new_email == staff.external_email_1:
            new_email = None
        if new_email is not None:
            holder = await email_holder_org(self.db, new_email, staff.id)
            if holder == staff.org_id:
                raise Conflict(EMAIL_TAKEN)
            if holder is not None:
                # As for a new person: another organisation's holder is named to operators only.
                raise Conflict(await address_refusal(self.db, holder, scope, staff.org_id))
        if new_email is not None:
            await refuse_if_suspended(self.db, staff)
        leave_changed = "leave_on" in sent and data.leave_on != staff.leave_on
        if leave_changed and data.leave_on is not None:
            self._check_leave_day(data.leave_on)
        changes = EmailChanges(self.uow, self.settings, self.temporal)
        leave_was, person, org_id = staff.leave_on, staff.id, staff.org_id
        flows = new_email is not None or leave_changed
        if flows:
            await self._start_flows(staff, changes, new_email, data.leave_on if leave_changed else leave_was)
        changed: dict[str, Any] = {}
        for name in ("first_name", "last_name"):
            value = getattr(data, name)
            if name in sent and value != getattr(staff, name):
                setattr(staff, name, value)
                changed[name] = True
        if leave_changed:
            staff.leave_on = data.leave_on
            changed["leave_on"] = data.leave_on.isoformat() if data.leave_on else None
        if changed:
            # Which names changed, never what they were or became: the trail outlives an erasure.
            audit.record(
                self.db,
                actor=actor,
                action="staff.updated",
                outcome="success",
                target=str(staff.id),
                ip=ip,
                **changed,
            )
        if new_email is not None:
            changes.record_request(staff, new_email, actor, ip)
        if not flows:
            await self.db.flush()
            return staff
        try:
            await self.uow.commit_now()  # ends the hold the flows' first steps wait on
        except SQLAlchemyError:
            if leave_changed:
                await self._put_leave_back(person, org_id, leave_was)
            raise
        return staff

    async def _start_flows(
        self, staff: Staff, changes: EmailChanges, new_email: str | None, leave_on: date | None
    ) -> None:
        """The flows the change needs, started (or moved) while the person's row is held, so
        that none of their steps reads it before the commit. The leave move goes last: the
        email change's flow is harmless should the commit never come (see EmailChanges.start),
        while a moved timer must be put back."""
        await connected(self.temporal, 5.0)  # unreachable: refused before anything is held
        # Should a start fail, the hold alone is in the transaction: it changes nothing.
        await self._hold(staff.id)
        if new_email is not None:
            await changes.start(staff)
        if leave_on != staff.leave_on:
            await self._move_leave(staff.id, staff.org_id, leave_on)

    async def _hold(self, staff_id: uuid.UUID) -> None:
        """Holds the person's row until the commit: PostgreSQL locks it, SQLite every write.
        An update that changes nothing, so that it holds on both and leaves no trace."""
        await self.db.execute(
            update(Staff)
            .where(Staff.id == staff_id)
            .values(updated_at=Staff.updated_at)
            .execution_options(synchronize_session=False)
        )

    async def _put_leave_back(self, staff_id: uuid.UUID, org_id: uuid.UUID, day: date | None) -> None:
        """After a failed commit, the leave flow waits again for the day the database holds: a
        flow left on the new day would disable late, or end and never disable on the old one."""
        try:
            await self._move_leave(staff_id, org_id, day)
        except ServiceUnavailable:
            logger.warning("leave flow of %s not put back to its day after a failed commit", staff_id)

    def _check_leave_day(self, day: date) -> None:
        today = datetime.now(self.settings.zone).date()
        if day <= today:
            raise InvalidInput(LEAVE_NOT_AFTER_TODAY)

    async def _move_leave(self, staff_id: uuid.UUID, org_id: uuid.UUID, day: date | None) -> None:
        move = LeaveMove(
            leave_at=leave_moment(day, self.settings) if day else None,
            leave_on=day.isoformat() if day else None,
        )
        client = await connected(self.temporal, 5.0)
        workflow_id = leave_workflow_id(str(staff_id))
        try:
            async with asyncio.timeout(FLOW_TIMEOUT):
                if day is None:
                    await self._clear_leave(workflow_id, move)
                    return
                await client.start_workflow(
                    StaffLeaveWorkflow.run,
                    LeaveInput(staff_id=str(staff_id)),
                    id=workflow_id,
                    task_queue=self.settings.task_queue,
                    id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                    start_signal="move",
                    start_signal_args=[move],
                    task_timeout=WORKFLOW_TASK_TIMEOUT,
                    search_attributes=TypedSearchAttributes(
                        flow_attributes(
                            SearchAttributePair(SSO_STEP, "waiting"), org_id=org_id, staff_id=staff_id
                        )
                    ),
                    static_summary=f"Leave date {move.leave_on}: disable the person at its start",
                )
        except (RPCError, TimeoutError) as exc:
            raise ServiceUnavailable(UNAVAILABLE) from exc

    async def _clear_leave(self, workflow_id: str, move: LeaveMove) -> None:
        client = await connected(self.temporal, 5.0)
        try:
            await client.get_workflow_handle_for(StaffLeaveWorkflow.run, workflow_id).signal(
                StaffLeaveWorkflow.move, move
            )
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:  # no flow waiting: nothing to clear
                raise

    async def erase(
        self, staff_id: uuid.UUID, scope: AdminScope, ip: str | None, by: uuid.UUID | None = None
    ) -> str:
        """Erases the person; returns the pseudonym their audit trail now carries."""
        staff = await get_staff(self.db, staff_id, scope)
        actor = scope.actor
        if by == staff.id:
            raise Conflict(SELF_ERASE)
        # Sessions ended and apps told, tokens revoked, flows ended: as a leaver (committed).
        await StaffStatus(self.uow, self.settings, self.temporal).disable(staff.id, scope, ip, by)
        account = await account_for(self.db, staff.id)
        client = await connected(self.temporal, 5.0)
        try:
            async with asyncio.timeout(FLOW_TIMEOUT * 3):
                deleted = await delete_runs(
                    client, await person_runs(client, staff.id, account.id if account else None)
                )
        except (RPCError, TimeoutError) as exc:
            # Nothing of the database erased yet: trying again later erases everything.
            raise ServiceUnavailable(UNAVAILABLE) from exc
        pseudonym = f"erased-{secrets.token_hex(8)}"
        personal = await self._personal_values(staff, account)
        await self._pseudonymise(staff.id, pseudonym, personal)
        await self.db.execute(delete(OutboxEmail).where(OutboxEmail.to_address.in_(personal)))
        # Rows, passkeys, recovery codes, sessions, Microsoft links, app grants, consents and
        # refresh tokens, setups and their links, email sends: all go with the staff row.
        await self.db.delete(staff)
        audit.record(
            self.db,
            actor=actor,
            action="staff.erased",
            outcome="success",
            target=pseudonym,
            ip=ip,
            workflows_deleted=deleted,
        )
        await self.db.flush()
        logger.info("staff member erased as %s", pseudonym)
        return pseudonym

    async def _personal_values(self, staff: Staff, account: SsoAccount | None) -> list[str]:
        """Every name and address of the person's the database holds."""
        values = [
            staff.first_name,
            staff.last_name,
            f"{staff.first_name} {staff.last_name}",
            staff.external_email_1,
        ]
        values += [v for v in (staff.pending_external_email_1, staff.previous_external_email_1) if v]
        if account is not None:
            values.append(account.login_email)
        link = await self.db.scalar(select(EntraLink).where(EntraLink.staff_id == staff.id))
        if link is not None:
            values += [v for v in (link.display_name, link.email) if v]
        return sorted({v for v in values if v})

    async def _pseudonymise(self, staff_id: uuid.UUID, pseudonym: str, personal: list[str]) -> None:
        """The audit trail about and by the person keeps its events under the pseudonym, with
        every value naming them scrubbed; what other rows say an admin did, likewise."""
        as_actor = [f"staff:{staff_id}", f"staff:{staff_id} (%"]
        by_person = or_(AuditEvent.actor == as_actor[0], AuditEvent.actor.like(as_actor[1]))
        events = (
            await self.db.scalars(
                select(AuditEvent).where(or_(AuditEvent.target == str(staff_id), by_person))
            )
        ).all()
        for event in events:
            if event.target == str(staff_id):
                event.target = pseudonym
            if event.actor == as_actor[0] or event.actor.startswith(as_actor[0] + " ("):
                event.actor = pseudonym
            event.details = scrubbed(event.details, personal)
        await self.db.execute(
            update(SsoSetup)
            .where(or_(SsoSetup.requested_by == as_actor[0], SsoSetup.requested_by.like(as_actor[1])))
            .values(requested_by=pseudonym)
        )
        await self.db.execute(
            update(MfaObligation)
            .where(or_(MfaObligation.extended_by == as_actor[0], MfaObligation.extended_by.like(as_actor[1])))
            .values(extended_by=pseudonym)
        )


def scrubbed(details: dict[str, Any], personal: list[str]) -> dict[str, Any]:
    """`details` with every value that names the person replaced."""
    lowered = [value.lower() for value in personal]

    def clean(value: Any) -> Any:
        if isinstance(value, str) and any(p in value.lower() for p in lowered):
            return ERASED
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return {key: clean(value) for key, value in details.items()}
