"""'Send me a new link' from an expired or used setup link: a new setup email, the same one an
administrator's 'Send Single Sign-On Email' sends, to the person's own address.

The person is found from the old link's token digest, never from anything typed in, and the
email goes to External Email 1 only. Every refusal (unknown link, active account, too soon)
gets the answer a success gets, so the page tells nobody anything about the link's person.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from api.services.setup import SetupSteps
from api.services.setup_admin import Onboarding
from core import audit
from core.accounts import account_for
from core.addresses import rate_key
from core.errors import Conflict, TooManyRequests
from core.models import AccountStatus
from core.orgs import operator
from core.throttle import Counter

NEUTRAL = "If this link was yours, we've sent a new one to your email."
# One new link per person per quarter hour, and a few per network per hour: each is an email.
PERSON_WINDOW = timedelta(minutes=15)
IP_LIMIT = 10
IP_WINDOW = timedelta(hours=1)
ACTION = "sso_email.new_link_asked"


@dataclass
class NewLinks:
    links: SetupSteps
    onboarding: Onboarding
    counter: Counter

    async def ask(self, token: str, ip: str | None) -> int | None:
        """Sends a new link when the old one was this person's and they are not active yet;
        the seconds to wait when this network asked too often, else None (whatever happened)."""
        ip_key = f"new-link-ip:{rate_key(ip)}"
        wait = await self.counter.hit(ip_key, IP_LIMIT, IP_WINDOW)
        if wait is not None:
            return wait
        view = await self.links.open_link(token)
        staff, db = view.staff, self.links.db
        if view.link is None or staff is None:
            audit.record(db, actor=f"ip:{ip}", action=ACTION, outcome="refused", ip=ip, reason="unknown link")
            return None
        actor = f"staff:{staff.id}"
        account = await account_for(db, staff.id)
        refusal = None
        if account is not None and account.status == AccountStatus.active.value:
            refusal = "already active"
        elif view.reason is None:
            refusal = "the link still works"
        elif await self.counter.hit(f"new-link-staff:{staff.id}", 1, PERSON_WINDOW) is not None:
            refusal = "asked again too soon"
        if refusal is not None:
            audit.by_staff(db, str(staff.id), ACTION, outcome="refused", ip=ip, reason=refusal)
            return None
        # Nothing written before the old flow is ended: its last activity writes too.
        try:
            await self.onboarding.send_email(staff.id, operator(actor), ip)
        except (Conflict, TooManyRequests) as refused:
            audit.by_staff(db, str(staff.id), ACTION, outcome="refused", ip=ip, reason=str(refused))
            return None
        audit.by_staff(db, str(staff.id), ACTION, outcome="accepted", ip=ip, old_link=view.reason)
        return None
