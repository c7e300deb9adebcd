"""A Microsoft sign-in in-process, without Microsoft: the provider verifies whoever comes back
as a given identity (the real provider's checks have tests of their own in tests/entra), and
a linked person signs in through the web app's own EntraSignOn."""

from __future__ import annotations

import uuid
from datetime import timedelta

from api.services.entra import CONFIRM_PURPOSE, Callback, EntraResult, EntraSignOn, EntraStart
from api.services.sessions import Sessions
from core.entra import AuthorizationRequest, EntraIdentity, EntraProvider, EntraUnavailable, Grant
from core.models import EntraLink, OrganisationTenant
from core.settings import Settings
from core.temporal_client import TemporalGateway
from tests.support.harness import Stack


class MicrosoftSaysYes(EntraProvider):
    """Microsoft verifying whoever comes back as this identity."""

    def __init__(self, settings: Settings, identity: EntraIdentity) -> None:
        super().__init__(settings)
        self.identity = identity

    async def authorization_request(self, login_hint: str | None = None) -> AuthorizationRequest:
        return AuthorizationRequest(
            "https://login.example.test/authorize", "state-1", "nonce-1", "verifier-1"
        )

    async def redeem(self, grant: Grant) -> EntraIdentity:
        return self.identity


class MicrosoftIsDown(MicrosoftSaysYes):
    """Microsoft failing to redeem any code (the page says to try again)."""

    async def redeem(self, grant: Grant) -> EntraIdentity:
        raise EntraUnavailable("Microsoft is down")


async def linked_identity(stack: Stack, staff_id: uuid.UUID, org_id: uuid.UUID, name: str) -> EntraIdentity:
    """A Microsoft account of a new tenant the person's organisation owns, linked to them."""
    identity = EntraIdentity(str(uuid.uuid4()), str(uuid.uuid4()), name, "someone@agency.example")
    async with stack.sessions() as session:
        # The tenant is the person's organisation's: it signs in only that one's people.
        session.add(OrganisationTenant(tenant_id=identity.tenant_id, org_id=org_id))
        session.add(
            EntraLink(
                staff_id=staff_id,
                tenant_id=identity.tenant_id,
                object_id=identity.object_id,
                linked_via="setup_link",
            )
        )
        await session.commit()
    return identity


async def microsoft_sign_in(stack: Stack, identity: EntraIdentity) -> EntraResult:
    """The Microsoft-Entra button on the sign-in screen, Microsoft answering as `identity`."""
    return await microsoft_callback(stack, MicrosoftSaysYes(stack.settings, identity))


async def microsoft_callback(
    stack: Stack, microsoft: EntraProvider, start: EntraStart | None = None
) -> EntraResult:
    """Microsoft's callback of what `start` began (a sign-in by default), `microsoft` answering."""
    async with stack.sessions() as session:
        sign_on = EntraSignOn(stack.settings, session, TemporalGateway(stack.settings), microsoft)
        _, waiting = await sign_on.begin(start or EntraStart("signin"))
        pending = await sign_on.claim(waiting)
        result = await sign_on.finish(pending, Callback("state-1", "code-1", ""), "127.0.0.1", None)
        await session.commit()
    return result


async def microsoft_confirm(stack: Stack, staff_id: uuid.UUID) -> EntraResult:
    """Link pressed for a Microsoft account a setup link's link flow holds for the person (that
    flow is the caller's to stand in for: no Temporal here)."""
    async with stack.sessions() as session:
        provider = EntraProvider(stack.settings)
        sign_on = EntraSignOn(stack.settings, session, TemporalGateway(stack.settings), provider)
        waiting = await Sessions(stack.settings, session).create(
            CONFIRM_PURPOSE,
            staff_id,
            timedelta(minutes=10),
            data={"pending_id": "pending-1", "account": "someone@agency.example", "via": "setup_link"},
        )
        pending = await sign_on.claim_confirmation(waiting)
        result = await sign_on.confirm(pending, "127.0.0.1", None)
        await session.commit()
    return result
