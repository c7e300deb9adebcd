"""What erasing an organisation deletes once its people are gone (workflows/org_erasure.py)."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from core import email_budget
from core.models import AdminApiKey, EmailBudgetHour, Organisation, OrganisationTenant


async def delete_org_rows(db: AsyncSession, org: Organisation) -> tuple[int, list[str]]:
    """Deletes an organisation whose people are gone: its admin keys, its Microsoft tenants
    (free for another organisation then), its email budget, its batches, then its row; the
    number of keys deleted and the tenants released."""
    tenants = list(
        (
            await db.scalars(select(OrganisationTenant.tenant_id).where(OrganisationTenant.org_id == org.id))
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
    await db.flush()
    return keys, tenants
