"""Activities of the Microsoft Entra link flow: redeem the code, record the link, tell the
person. The access and ID tokens exist only inside `verify_entra_grant`."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.base import SecretActivities
from activities.inputs import (
    EntraLinkedNoticeInput,
    LinkEntraInput,
    LinkEntraResult,
    VerifiedEntra,
    VerifyEntraInput,
)
from core import audit, flow_errors
from core.entra import EntraProvider, EntraRefused, EntraUnavailable, Grant
from core.models import EntraLink, SetupLink, Staff, utcnow
from core.orgs import owned_tenants, tenant_owner
from core.sealing import entra_context
from core.times import email_at

# Inside the flow's 30 s attempt timeout (workflows.common.ENTRA_TIMEOUT), so a slow
# Microsoft ends the attempt here, with a clear reason, rather than by Temporal's timeout.
ENTRA_BUDGET_SECONDS = 25.0

LINK_REFUSALS = {
    "linked_elsewhere": "This Microsoft account is already linked to another staff login. "
    "Ask your administrator.",
    "has_other_link": "Your staff login is already linked to a different Microsoft account. "
    "Ask your administrator to unlink it first.",
    "link_unusable": "This setup link has expired or was already used. Ask your administrator "
    "to send you a new Single Sign-On email.",
    "staff_missing": "This staff login no longer exists. Ask your administrator.",
    "other_organisation": "This Microsoft account belongs to another organisation than your staff "
    "login. Sign in with the work account your organisation gave you.",
}


class EntraActivities(SecretActivities):
    @activity.defn(name="verify_entra_grant")
    async def verify_entra_grant(self, data: VerifyEntraInput) -> VerifiedEntra:
        grant = Grant.from_json(self._unseal(data.sealed_grant, entra_context(data.workflow_id)).encode())
        try:
            async with asyncio.timeout(ENTRA_BUDGET_SECONDS):
                provider = EntraProvider(self._settings, tenants=owned_tenants(self._sessions))
                identity = await provider.redeem(grant)
        except TimeoutError:
            raise ApplicationError(
                "Microsoft did not answer in time", type=flow_errors.ENTRA_UNAVAILABLE
            ) from None
        except EntraRefused as refused:
            raise ApplicationError(
                refused.message, refused.reason, non_retryable=True, type=flow_errors.ENTRA_REFUSED
            ) from None
        except EntraUnavailable as exc:
            # Retried by the flow's policy; the message carries no token.
            raise ApplicationError(
                f"Microsoft did not answer: {exc}", type=flow_errors.ENTRA_UNAVAILABLE
            ) from None
        # The same four claims: the provider's type stays out of workflow payloads.
        return VerifiedEntra(**dataclasses.asdict(identity))

    @activity.defn(name="link_entra_identity")
    async def link_entra_identity(self, data: LinkEntraInput) -> LinkEntraResult:
        staff_id = uuid.UUID(data.staff_id)
        who = data.identity
        now = utcnow()
        async with self._sessions() as session:
            refusal: str | None = None
            newly = False
            staff = await session.get(Staff, staff_id)
            if staff is None:
                refusal = "staff_missing"
            elif (owner := await tenant_owner(session, who.tenant_id)) is not None and owner != staff.org_id:
                # One tenant, one organisation: its accounts link only to that one's people.
                # (A tenant nobody owns never gets here: verifying the grant refuses it.)
                refusal = "other_organisation"
            elif data.via == "setup_link" and not await _link_usable(session, data, now):
                refusal = "link_unusable"
            if refusal is None:
                holder = await session.scalar(
                    select(EntraLink).where(
                        EntraLink.tenant_id == who.tenant_id, EntraLink.object_id == who.object_id
                    )
                )
                own = await session.scalar(select(EntraLink).where(EntraLink.staff_id == staff_id))
                if holder is not None and holder.staff_id != staff_id:
                    refusal = "linked_elsewhere"
                elif own is not None and holder is None:
                    refusal = "has_other_link"
                elif own is None:
                    session.add(
                        EntraLink(
                            staff_id=staff_id,
                            tenant_id=who.tenant_id,
                            object_id=who.object_id,
                            display_name=who.name,
                            email=who.email,
                            linked_via=data.via,
                            linked_at=now,
                        )
                    )
                    newly = True
            if refusal is not None:
                _record(session, data, "entra.link_refused", "failure", reason=refusal)
                await session.commit()
                return LinkEntraResult(ok=False, reason=refusal, message=LINK_REFUSALS[refusal])
            if data.via == "setup_link" and data.link_id:
                link = await session.get(SetupLink, uuid.UUID(data.link_id))
                if link is not None and link.consumed_at is None:
                    link.consumed_at = now
            if newly:
                _record(
                    session,
                    data,
                    "entra.linked",
                    "success",
                    object_id=who.object_id,
                    workflow_id=data.workflow_id,
                )
            try:
                await session.commit()
            except IntegrityError:
                # Another staff login took this identity at the same moment.
                await session.rollback()
                return LinkEntraResult(
                    ok=False, reason="linked_elsewhere", message=LINK_REFUSALS["linked_elsewhere"]
                )
        return LinkEntraResult(ok=True, newly_linked=newly)

    @activity.defn(name="send_entra_linked")
    async def send_entra_linked(self, data: EntraLinkedNoticeInput) -> None:
        async with self._sessions() as session:
            staff = await session.get(Staff, uuid.UUID(data.staff_id))
        if staff is None:
            return
        email = self._email_to(
            staff,
            "entra_linked",
            account=data.account,
            linked_at=email_at(data.linked_at, self._settings.zone),
        )
        await self._notify("entra_linked", staff.id, email)


async def _link_usable(session: AsyncSession, data: LinkEntraInput, now: datetime) -> bool:
    if not data.link_id:
        return False
    link = await session.get(SetupLink, uuid.UUID(data.link_id))
    return (
        link is not None
        and str(link.staff_id) == data.staff_id
        and link.revoked_at is None
        and link.consumed_at is None
        and link.expires_at > now
    )


def _record(session: AsyncSession, data: LinkEntraInput, action: str, outcome: str, **details: Any) -> None:
    """A link event, with who asked, from where, by which way and for which tenant."""
    audit.record(
        session,
        actor=data.actor,
        action=action,
        outcome=outcome,
        target=data.staff_id,
        ip=data.ip,
        tenant_id=data.identity.tenant_id,
        via=data.via,
        **details,
    )
