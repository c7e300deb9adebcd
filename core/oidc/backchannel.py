"""Which apps the back-channel logout of ended sign-in sessions tells: the web app starts
those flows, and so does the password reset (from its worker). Removing an app's access tells
that app alone of the sessions it signed in to, which go on for the others."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.models import BrowserSession, OidcClient, OidcGrant, Staff
from core.oidc.claims import session_claims
from core.settings import Settings


@dataclass
class SessionLogoutInput:
    """The ended session (`sid`, as the apps know it), its person, and the apps told."""

    sid: str
    staff_id: str
    client_ids: list[str] = field(default_factory=list)
    # The person's organisation, for the flow's SsoOrgId ("" if unknown).
    org_id: str = ""
    # An app's access removed (one id per removal), "" for the session's own end: the session
    # goes on, so its end later must find its own key (the sid alone) free.
    removal: str = ""

    @property
    def key(self) -> str:
        """What its outbox row and its flow's id are named by: the sid, or "<sid>.<removal>"
        (a sid is hex, so the two never meet)."""
        return f"{self.sid}.{self.removal}" if self.removal else self.sid

    @classmethod
    def of_key(cls, key: str, staff_id: str, client_ids: list[str], org_id: str) -> SessionLogoutInput:
        sid, _, removal = key.partition(".")
        return cls(sid, staff_id, client_ids, org_id, removal)


async def orgs_of(db: AsyncSession, staff_ids: Iterable[uuid.UUID]) -> dict[str, str]:
    """Each person's organisation id, by staff id (both as text); the removed are left out."""
    ids = list(staff_ids)
    if not ids:
        return {}
    rows = await db.execute(select(Staff.id, Staff.org_id).where(Staff.id.in_(ids)))
    return {str(staff_id): str(org_id) for staff_id, org_id in rows}


async def logouts_due(
    settings: Settings,
    db: AsyncSession,
    ended: Iterable[BrowserSession],
    client_id: str | None = None,
    removal: str = "",
) -> list[SessionLogoutInput]:
    """One logout per ended session in which an app with a back-channel logout URI redeemed
    a code, naming those apps; `client_id` (with its `removal`'s id): that app alone, its
    access removed."""
    by_hash = {row.id_hash: row for row in ended if row.staff_id is not None}
    if not by_hash:
        return []
    which: list[ColumnElement[bool]] = [
        OidcGrant.session_hash.in_(list(by_hash)),
        OidcGrant.redeemed_at.is_not(None),
    ]
    if client_id is not None:
        which.append(OidcGrant.client_id == client_id)
    rows = await db.execute(
        select(OidcGrant.session_hash, OidcClient.client_id, OidcClient.registration)
        .join(OidcGrant, OidcGrant.client_id == OidcClient.client_id)
        .where(*which)
    )
    orgs = await orgs_of(db, {row.staff_id for row in by_hash.values() if row.staff_id is not None})
    told: dict[str, set[str]] = {}
    for session_hash, client_id, metadata in rows:
        if metadata.get("backchannel_logout_uri"):
            told.setdefault(session_hash, set()).add(client_id)
    return [
        SessionLogoutInput(
            session_claims(settings, by_hash[session_hash])["sid"],
            str(by_hash[session_hash].staff_id),
            sorted(client_ids),
            orgs.get(str(by_hash[session_hash].staff_id), ""),
            removal,
        )
        for session_hash, client_ids in sorted(told.items())
    ]
