"""Staff records: create, find, list with each person's SSO state."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.schemas import StaffCreate
from core import audit
from core.accounts import MAX_FAILURES
from core.errors import Conflict, NotFound, Unprocessable
from core.mfa_policy import due_text
from core.models import (
    OPEN_SETUP_STATES,
    AccountStatus,
    AuditEvent,
    EntraLink,
    MfaObligation,
    Organisation,
    Passkey,
    SetupState,
    SsoAccount,
    SsoSetup,
    Staff,
    utcnow,
)
from core.orgs import AdminScope, get_org

ADDRESS_TAKEN = "A staff member with that External Email 1 already exists"
# To an organisation's admin, an address another organisation has says nothing about it.
ADDRESS_ELSEWHERE = "This address can't be added; contact agentOS support"


async def create_staff(
    session: AsyncSession, data: StaffCreate, scope: AdminScope, ip: str | None, org_id: uuid.UUID
) -> Staff:
    """A new person in `org_id` (see `creation_org`)."""
    email = data.external_email_1.lower()
    await _check_address_free(session, email, scope, org_id)
    staff = Staff(
        first_name=data.first_name,
        last_name=data.last_name,
        external_email_1=email,
        is_admin=data.is_admin,
        org_id=org_id,
    )
    session.add(staff)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Conflict(ADDRESS_TAKEN if scope.is_operator else ADDRESS_ELSEWHERE) from exc
    audit.record(
        session,
        actor=scope.actor,
        action="staff.create",
        outcome="success",
        target=str(staff.id),
        ip=ip,
        is_admin=staff.is_admin,
    )
    return staff


async def _check_address_free(
    session: AsyncSession, email: str, scope: AdminScope, org_id: uuid.UUID
) -> None:
    """An address is one person's on the whole deployment. Held in another organisation, an
    operator learns which; the organisation's admin only that it can't be added."""
    holder = await session.scalar(select(Staff.org_id).where(Staff.external_email_1 == email))
    if holder is not None:
        raise Conflict(await address_refusal(session, holder, scope, org_id))


async def creation_org(session: AsyncSession, scope: AdminScope, requested: uuid.UUID | None) -> uuid.UUID:
    """The organisation a new person joins: an organisation's admin's own; an operator names
    one, or leaves it out on a deployment of one organisation."""
    if scope.org_id is not None:
        if requested is not None and requested != scope.org_id:
            raise NotFound("No organisation with that id")
        return scope.org_id
    if requested is not None:
        return (await get_org(session, requested, scope)).id
    only = (await session.scalars(select(Organisation.id).limit(2))).all()
    if len(only) != 1:
        raise Unprocessable("org_id", "required: this deployment has more than one organisation")
    return only[0]


async def get_staff(session: AsyncSession, staff_id: uuid.UUID, scope: AdminScope) -> Staff:
    """The person, if the scope may see them: another organisation's is a 404, as if they
    did not exist."""
    staff = await session.get(Staff, staff_id)
    if staff is None or not scope.sees(staff.org_id):
        raise NotFound("No staff member with that id")
    return staff


async def move_staff(
    session: AsyncSession, staff_id: uuid.UUID, org_id: uuid.UUID, scope: AdminScope, ip: str | None
) -> Staff:
    """An operator moves a person to another organisation (audited)."""
    scope.require_operator()
    staff = await get_staff(session, staff_id, scope)
    org = await get_org(session, org_id, scope)
    was = staff.org_id
    staff.org_id = org.id
    audit.record(
        session,
        actor=scope.actor,
        action="staff.moved",
        outcome="success",
        target=str(staff.id),
        ip=ip,
        from_org=str(was),
        to_org=str(org.id),
    )
    await session.flush()
    return staff


@dataclass
class StaffOverview:
    """One person's Single Sign-On at a glance, for the staff list (API and admin page)."""

    staff: Staff
    state: str
    state_since: datetime | None = None
    link_expires_at: datetime | None = None
    mfa_enabled: bool = False
    entra_linked: bool = False
    locked_until: datetime | None = None
    needs_reset: bool = False
    has_password: bool = False
    # "MFA due in 5 days" / "MFA overdue", and whether an admin may still extend it.
    mfa_due: str | None = None
    mfa_extendable: bool = False
    mfa_obligation: MfaObligation | None = None

    @property
    def setup_open(self) -> bool:
        return self.state in {s.value for s in OPEN_SETUP_STATES}

    @property
    def locked(self) -> bool:
        return self.needs_reset or (self.locked_until is not None and self.locked_until > utcnow())


def shown_state(setup: SsoSetup, now: datetime) -> tuple[str, datetime | None]:
    """A setup's state and since when, as the admin should see it now."""
    if (
        setup.state == SetupState.email_sent.value
        and setup.link_expires_at is not None
        and setup.link_expires_at <= now
    ):
        # The flow's timer records this within moments; don't show a dead link as live.
        return SetupState.expired.value, setup.link_expires_at
    return setup.state, setup.state_since


async def list_staff(
    session: AsyncSession,
    limit: int,
    offset: int,
    query: str | None,
    scope: AdminScope,
    org_id: uuid.UUID | None = None,
) -> tuple[list[StaffOverview], int]:
    """A page of the people the scope sees; an operator may narrow it to one organisation
    (an organisation's admin naming another gets a 404)."""
    if org_id is not None:
        await get_org(session, org_id, scope)
    shown = scope.org_id or org_id
    filters = [Staff.org_id == shown] if shown is not None else []
    if query:
        # % and _ are what people type, not wildcards.
        escaped = query.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{escaped}%"
        filters.append(
            or_(
                func.lower(Staff.first_name).like(pattern, escape="\\"),
                func.lower(Staff.last_name).like(pattern, escape="\\"),
                Staff.external_email_1.like(pattern, escape="\\"),
            )
        )
    total = await session.scalar(select(func.count()).select_from(Staff).where(*filters)) or 0
    rows = (
        await session.scalars(
            select(Staff)
            .where(*filters)
            .order_by(Staff.last_name, Staff.first_name, Staff.id)
            .limit(limit)
            .offset(offset)
        )
    ).all()
    return await overviews(session, list(rows)), total


async def overviews(session: AsyncSession, people: list[Staff]) -> list[StaffOverview]:
    """The overview of each person: one query per table, however many people are listed."""
    ids = [s.id for s in people]
    if not ids:
        return []
    accounts = {
        a.staff_id: a
        for a in (await session.scalars(select(SsoAccount).where(SsoAccount.staff_id.in_(ids)))).all()
    }
    linked = set((await session.scalars(select(EntraLink.staff_id).where(EntraLink.staff_id.in_(ids)))).all())
    with_passkeys = set(
        (
            await session.scalars(
                select(Passkey.account_id).where(Passkey.account_id.in_([a.id for a in accounts.values()]))
            )
        ).all()
    )
    latest = (
        select(SsoSetup.staff_id, func.max(SsoSetup.created_at).label("newest"))
        .where(SsoSetup.staff_id.in_(ids))
        .group_by(SsoSetup.staff_id)
        .subquery()
    )
    setups = {
        row.staff_id: row
        for row in (
            await session.scalars(
                select(SsoSetup).join(
                    latest,
                    (SsoSetup.staff_id == latest.c.staff_id) & (SsoSetup.created_at == latest.c.newest),
                )
            )
        ).all()
    }
    obligations = {
        o.staff_id: o
        for o in (await session.scalars(select(MfaObligation).where(MfaObligation.staff_id.in_(ids)))).all()
    }
    now = utcnow()
    result = []
    for person in people:
        account, setup = accounts.get(person.id), setups.get(person.id)
        view = StaffOverview(
            staff=person, state=SetupState.not_started.value, entra_linked=person.id in linked
        )
        if setup is not None:
            view.state, view.state_since = shown_state(setup, now)
            view.link_expires_at = setup.link_expires_at
        if account is not None:
            if account.status == AccountStatus.active.value:
                view.state = SetupState.active.value
            view.mfa_enabled = account.mfa_enabled_at is not None or account.id in with_passkeys
            view.has_password = account.password_hash is not None
            view.locked_until = account.locked_until
            view.needs_reset = account.failed_sign_ins >= MAX_FAILURES
        elif view.entra_linked and not view.setup_open:
            view.state = SetupState.active.value
        obligation = view.mfa_obligation = obligations.get(person.id)
        if obligation is not None and not view.mfa_enabled:
            view.mfa_due = due_text(obligation, now)
            view.mfa_extendable = view.mfa_due is not None and obligation.extended_by is None
        result.append(view)
    return result


@dataclass
class History:
    """A person's Single Sign-On emails, newest first, their audit trail and their Microsoft
    link: what the admin's page for the person shows below the overview."""

    setups: Sequence[SsoSetup]
    events: Sequence[AuditEvent]
    link: EntraLink | None


async def history(session: AsyncSession, staff_id: uuid.UUID) -> History:
    setups = await session.scalars(
        select(SsoSetup).where(SsoSetup.staff_id == staff_id).order_by(SsoSetup.created_at.desc()).limit(50)
    )
    events = await session.scalars(
        select(AuditEvent)
        .where(AuditEvent.target == str(staff_id))
        .order_by(AuditEvent.occurred_at.desc())
        .limit(200)
    )
    link = await session.scalar(select(EntraLink).where(EntraLink.staff_id == staff_id))
    return History(setups=setups.all(), events=events.all(), link=link)


async def _holders(session: AsyncSession, column: Any, values: Sequence[Any]) -> dict[Any, uuid.UUID]:
    """Which of these values the staff table holds in `column`, each with the organisation of
    the person holding it (a query per thousand)."""
    found: dict[Any, uuid.UUID] = {}
    for start in range(0, len(values), 1000):
        chunk = values[start : start + 1000]
        rows = await session.execute(select(column, Staff.org_id).where(column.in_(chunk)))
        found.update((value, org_id) for value, org_id in rows)
    return found


async def staff_orgs(session: AsyncSession, staff_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
    """Which of these ids are staff members, and each one's organisation."""
    return await _holders(session, Staff.id, staff_ids)


async def email_holders(session: AsyncSession, emails: Sequence[str]) -> dict[str, uuid.UUID]:
    """Which of these (lower-cased) External Email 1 addresses a staff member already has (on
    the whole deployment: an address is one person's), and the holder's organisation."""
    return await _holders(session, Staff.external_email_1, emails)


async def address_refusal(
    session: AsyncSession, holder: uuid.UUID, scope: AdminScope, org_id: uuid.UUID
) -> str:
    """Why an address held by a person of `holder` can't be added to `org_id`: as
    `create_staff` says it (another organisation is named to an operator only)."""
    if holder == org_id:
        return ADDRESS_TAKEN
    if not scope.is_operator:
        return ADDRESS_ELSEWHERE
    org = await session.get(Organisation, holder)
    return f"{ADDRESS_TAKEN}, in the organisation {org.slug if org else holder}"
