"""Staff records: create, find, list with each person's SSO state."""

from __future__ import annotations

import uuid

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.errors import Conflict, NotFound
from api.schemas import StaffCreate
from core import audit
from core.models import AccountStatus, SsoAccount, SsoSetup, Staff


async def create_staff(
    session: AsyncSession, data: StaffCreate, actor: str, ip: str | None
) -> Staff:
    email = data.external_email_1.lower()
    if await session.scalar(select(Staff.id).where(Staff.external_email_1 == email)):
        raise Conflict("A staff member with that External Email 1 already exists")
    staff = Staff(first_name=data.first_name, last_name=data.last_name, external_email_1=email)
    session.add(staff)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Conflict("A staff member with that External Email 1 already exists") from exc
    audit.record(session, actor=actor, action="staff.create", outcome="success",
                 target=str(staff.id), ip=ip)
    return staff


async def get_staff(session: AsyncSession, staff_id: uuid.UUID) -> Staff:
    staff = await session.get(Staff, staff_id)
    if staff is None:
        raise NotFound("No staff member with that id")
    return staff


async def list_staff(
    session: AsyncSession, limit: int, offset: int, query: str | None
) -> tuple[list[tuple[Staff, str]], int]:
    filters = []
    if query:
        pattern = f"%{query.lower()}%"
        filters.append(or_(func.lower(Staff.first_name).like(pattern),
                           func.lower(Staff.last_name).like(pattern),
                           Staff.external_email_1.like(pattern)))
    total = await session.scalar(select(func.count()).select_from(Staff).where(*filters)) or 0
    rows = (await session.scalars(
        select(Staff).where(*filters).order_by(Staff.last_name, Staff.first_name, Staff.id)
        .limit(limit).offset(offset)
    )).all()
    states = await sso_states(session, [s.id for s in rows])
    return [(s, states.get(s.id, "not_started")) for s in rows], total


async def sso_states(session: AsyncSession, staff_ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
    if not staff_ids:
        return {}
    active = set((await session.scalars(
        select(SsoAccount.staff_id).where(SsoAccount.staff_id.in_(staff_ids),
                                          SsoAccount.status == AccountStatus.active.value)
    )).all())
    latest = (
        select(SsoSetup.staff_id, func.max(SsoSetup.created_at).label("newest"))
        .where(SsoSetup.staff_id.in_(staff_ids)).group_by(SsoSetup.staff_id).subquery()
    )
    rows = await session.execute(
        select(SsoSetup.staff_id, SsoSetup.state).join(
            latest, (SsoSetup.staff_id == latest.c.staff_id)
            & (SsoSetup.created_at == latest.c.newest)
        )
    )
    states = {staff_id: state for staff_id, state in rows}
    states.update({staff_id: "active" for staff_id in active})
    return states
