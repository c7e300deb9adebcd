"""Where you're signed in: a person's own live sessions, each signed out on its own or all
but this browser's at once. Every ending tells the apps signed in through it (back-channel
logout) and is audited."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from api.services.account import AccountSteps
from api.services.backchannel import end_sessions, queue_session_logouts
from api.services.sessions import Current, Sessions
from core import audit
from core.user_agents import UNKNOWN

# How a session was signed in, in the words the page uses.
HOW = {
    "password": "Password",
    "totp": "Password and Multi-Factor Authentication",
    "entra": "Microsoft",
    "passkey": "Passkey",
    "passkey+pwd": "Password and passkey",
}


def how_signed_in(data: dict[str, object]) -> str:
    """In words: a passkey after the password says so (its `amr` has `pwd`)."""
    method = str(data.get("method") or "password")
    amr = data.get("amr")
    if method == "passkey" and isinstance(amr, list) and "pwd" in amr:
        method = "passkey+pwd"
    return HOW.get(method, HOW["password"])


@dataclass(frozen=True)
class SignedIn:
    """One session as the page shows it: named by its handle, never by its id."""

    handle: str
    browser: str
    how: str
    signed_in_at: datetime
    last_active_at: datetime
    this_browser: bool


@dataclass
class SessionSteps:
    steps: AccountSteps

    @property
    def _sessions(self) -> Sessions:
        return Sessions(self.steps.settings, self.steps.db)

    async def listed(self, current: Current) -> list[SignedIn]:
        """This browser's session first, then the others, the most recently used first."""
        assert current.staff is not None
        sessions = self._sessions
        shown = [
            SignedIn(
                handle=sessions.handle(row),
                browser=str(row.data.get("browser") or UNKNOWN),
                how=how_signed_in(row.data),
                signed_in_at=row.created_at,
                last_active_at=row.last_seen_at or row.created_at,
                this_browser=row.id_hash == current.row.id_hash,
            )
            for row in await sessions.live(current.staff.id)
        ]
        return sorted(shown, key=lambda item: not item.this_browser)

    async def sign_out_one(self, current: Current, handle: str, ip: str | None) -> bool:
        """Ends one of the person's other sessions; False when they have no such session
        (signed out already, this browser's, or not theirs: all alike)."""
        assert current.staff is not None
        sessions = self._sessions
        found = [
            row
            for row in await sessions.live(current.staff.id)
            if row.id_hash != current.row.id_hash and sessions.handle(row) == handle
        ]
        if not found:
            return False
        [row] = found
        await sessions.end(row)
        await queue_session_logouts(self.steps.temporal, self.steps.settings, self.steps.db, found)
        audit.by_staff(self.steps.db, str(current.staff.id), "sessions.signed_out_one", ip=ip, sid=handle)
        return True

    async def sign_out_others(self, current: Current, ip: str | None) -> int:
        """Ends every session of the person's but this browser's; how many it ended."""
        assert current.staff is not None
        steps = self.steps
        ended = await end_sessions(
            steps.temporal, steps.settings, steps.db, current.staff.id, keep=current.row.id_hash
        )
        audit.by_staff(
            steps.db, str(current.staff.id), "sessions.signed_out_others", ip=ip, sessions_revoked=len(ended)
        )
        return len(ended)
