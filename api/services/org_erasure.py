"""Erase a suspended organisation (operators): each of its people erased as one person is
(api/services/staff_lifecycle.py: flows deleted, rows deleted, audit kept under a pseudonym),
its admin keys deleted, its Microsoft tenants released, its batches and email budget gone,
then the organisation itself; audited as `org.erased`."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import delete, select

from api.org_schemas import OrgErased
from api.services.staff_lifecycle import StaffLifecycle
from core import audit, email_budget
from core.errors import Conflict
from core.models import AdminApiKey, EmailBudgetHour, OrganisationTenant, OrgStatus, Staff
from core.orgs import AdminScope, get_org

NOT_SUSPENDED = (
    "Only a suspended organisation can be erased: suspend it first (its people can't sign in "
    "then), and erase it once you are sure"
)


@dataclass
class OrgErasure:
    lifecycle: StaffLifecycle

    async def erase(self, org_id: uuid.UUID, scope: AdminScope, ip: str | None) -> OrgErased:
        """Erase the organisation. A failure part-way (Temporal away) leaves it suspended with
        the people not yet erased: erasing it again carries on."""
        scope.require_operator()
        db = self.lifecycle.db
        org = await get_org(db, org_id, scope)
        if org.status != OrgStatus.suspended.value:
            raise Conflict(NOT_SUSPENDED)
        people = (await db.scalars(select(Staff.id).where(Staff.org_id == org.id).order_by(Staff.id))).all()
        for staff_id in people:
            await self.lifecycle.erase(staff_id, scope, ip)
        tenants = list(
            (
                await db.scalars(
                    select(OrganisationTenant.tenant_id).where(OrganisationTenant.org_id == org.id)
                )
            ).all()
        )
        await db.execute(delete(OrganisationTenant).where(OrganisationTenant.org_id == org.id))
        keys = len((await db.scalars(select(AdminApiKey.id).where(AdminApiKey.org_id == org.id))).all())
        await db.execute(delete(AdminApiKey).where(AdminApiKey.org_id == org.id))
        await db.execute(
            delete(EmailBudgetHour).where(EmailBudgetHour.budget_key == email_budget.org_budget_key(org.id))
        )
        # Its staff batches go with it (their foreign key cascades).
        await db.delete(org)
        audit.record(
            db,
            actor=scope.actor,
            action="org.erased",
            outcome="success",
            target=str(org.id),
            ip=ip,
            people_erased=len(people),
            keys_deleted=keys,
            tenants_released=tenants,
        )
        await db.flush()
        return OrgErased(people_erased=len(people), keys_deleted=keys, tenants_released=tenants)
