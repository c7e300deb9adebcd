"""Server-side browser sessions: opaque 256-bit ids in cookies, only their HMAC stored."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core import audit
from core.accounts import end_session_grants
from core.crypto import token_hash
from core.models import SIGN_IN_PAUSED, BrowserSession, OidcGrant, Organisation, Staff, utcnow
from core.oidc.claims import session_claims
from core.settings import Settings
from core.user_agents import browser_label

SESSION_PURPOSE = "session"
# Writing last_seen_at on every request would turn each page view into a write.
TOUCH_EVERY = timedelta(seconds=60)


def session_hash(settings: Settings, session_id: str) -> str:
    return token_hash(settings.secret_key.get_secret_value(), SESSION_PURPOSE, session_id)


@dataclass
class Current:
    row: BrowserSession
    staff: Staff | None

    @property
    def strong(self) -> bool:
        """Signed in with a second factor: the authenticator, a passkey, or Microsoft (whose
        sign-in policies, number matching included, apply)."""
        return self.row.data.get("method") in ("totp", "passkey", "entra")


@dataclass
class Sessions:
    settings: Settings
    db: AsyncSession

    async def create(
        self,
        purpose: str,
        staff_id: uuid.UUID | None,
        ttl: timedelta,
        workflow_id: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> str:
        session_id = secrets.token_urlsafe(32)
        now = utcnow()
        self.db.add(
            BrowserSession(
                id_hash=session_hash(self.settings, session_id),
                staff_id=staff_id,
                purpose=purpose,
                workflow_id=workflow_id,
                created_at=now,
                last_seen_at=now,
                expires_at=now + ttl,
                data=data or {},
            )
        )
        await self.db.flush()
        return session_id

    async def sign_in(
        self, staff_id: uuid.UUID, method: str, user_agent: str | None, amr: list[str] | None = None
    ) -> str:
        """A signed-in session (a brand-new id: nothing set before it can be fixed on the
        person), saying how it was signed in and, in a few words, from which browser."""
        return await self.create(
            "signin",
            staff_id,
            self.settings.session_max_ttl,
            data={"method": method, "browser": browser_label(user_agent), **({"amr": amr} if amr else {})},
        )

    async def live(self, staff_id: uuid.UUID) -> list[BrowserSession]:
        """The person's signed-in sessions that still work, the most recently used first."""
        now = utcnow()
        rows = await self.db.scalars(
            select(BrowserSession).where(
                BrowserSession.staff_id == staff_id,
                BrowserSession.purpose == "signin",
                BrowserSession.revoked_at.is_(None),
                BrowserSession.expires_at > now,
            )
        )
        idle = self.settings.session_idle_ttl
        alive = [row for row in rows if (row.last_seen_at or row.created_at) + idle > now]
        return sorted(alive, key=lambda row: row.last_seen_at or row.created_at, reverse=True)

    def handle(self, row: BrowserSession) -> str:
        """How a page names a session: its `sid` (what apps know it by), never its id."""
        return str(session_claims(self.settings, row)["sid"])

    async def get(
        self, session_id: str | None, purpose: str, idle: timedelta | None = None
    ) -> Current | None:
        """The live session of that purpose, or None: revoked, expired, idle too long."""
        if not session_id or len(session_id) > 128:
            return None
        row = await self.db.get(BrowserSession, session_hash(self.settings, session_id))
        now = utcnow()
        if row is None or row.purpose != purpose or row.revoked_at is not None or row.expires_at <= now:
            return None
        seen = row.last_seen_at or row.created_at
        if idle is not None and seen + idle <= now:
            row.revoked_at = now
            await self.db.flush()
            return None
        if now - seen >= TOUCH_EVERY:
            row.last_seen_at = now
            await self.db.flush()
        staff = await self.db.get(Staff, row.staff_id) if row.staff_id else None
        return Current(row, staff)

    async def signed_in(self, session_id: str | None) -> Current | None:
        """The signed-in session behind this cookie value, with its staff member, or None
        (none, revoked, expired, idle too long)."""
        current = await self.get(session_id, "signin", idle=self.settings.session_idle_ttl)
        # Disabling (and suspending an organisation) ends the sessions too; this holds even
        # for one it missed, such as one begun in the instant of the suspension.
        if current is None or current.staff is None or current.staff.disabled_at is not None:
            return None
        org = await self.db.get(Organisation, current.staff.org_id)
        return None if org is not None and org.status in SIGN_IN_PAUSED else current

    async def revoke(self, session_id: str | None) -> None:
        if not session_id or len(session_id) > 128:
            return
        row = await self.db.get(BrowserSession, session_hash(self.settings, session_id))
        if row is not None:
            await self.end(row)

    async def end(self, row: BrowserSession) -> None:
        """Ends this session, and the refresh tokens apps got in it."""
        if row.revoked_at is None:
            row.revoked_at = utcnow()
            await end_session_grants(self.db, row.revoked_at, OidcGrant.session_hash == row.id_hash)
            await self.db.flush()

    async def sign_out(self, session_id: str | None, ip: str | None, **details: Any) -> BrowserSession | None:
        """Ends the signed-in session behind this cookie value (and with it the refresh
        tokens apps got in it), recorded once; the session it ended, if any."""
        current = await self.get(session_id, "signin")
        await self.revoke(session_id)
        if current is not None and current.row.staff_id is not None:
            audit.record(
                self.db,
                actor=f"staff:{current.row.staff_id}",
                action="sign_out",
                outcome="success",
                target=str(current.row.staff_id),
                ip=ip,
                **details,
            )
        return current.row if current is not None else None
