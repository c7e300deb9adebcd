"""Dependency aliases used by the routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, NoReturn

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from api.services.onboarding import Onboarding
from api.services.signin import SignIn
from core.addresses import canonical, rate_key
from core.admin_keys import authenticate
from core.errors import NotAuthenticated, TooManyRequests
from core.rate_limit import SlidingWindowLimiter
from core.settings import Settings
from core.temporal_client import TemporalGateway
from core.throttle import Counter


def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions() as session:
        yield session


def get_temporal(request: Request) -> TemporalGateway:
    return request.app.state.temporal  # type: ignore[no-any-return]


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
TemporalDep = Annotated[TemporalGateway, Depends(get_temporal)]


def bearer(request: Request) -> str:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""


# Documents the scheme in OpenAPI (and the Authorize button of /docs); `bearer` reads it.
ADMIN_KEY = HTTPBearer(auto_error=False, scheme_name="AdminKey",
                       description="An admin API key: `sso admin-key create --name NAME`")


async def require_admin(
    request: Request, session: SessionDep, settings: SettingsDep,
    _documented: Annotated[HTTPAuthorizationCredentials | None, Security(ADMIN_KEY)],
) -> str:
    limits: AdminLimits = request.app.state.admin_limits
    name = await authenticate(session, settings, bearer(request))
    if name is None:
        refuse(request, "A valid admin API key is required (Authorization: Bearer <key>)")
    await session.commit()
    wait = limits.requests.hit(name)
    if wait is not None:
        raise TooManyRequests("Too many requests with this admin key; slow down", wait)
    return f"admin-key:{name}"


class AdminLimits:
    def __init__(self, settings: Settings) -> None:
        self.requests = SlidingWindowLimiter(settings.admin_rate_limit, 60)
        self.auth_failures = SlidingWindowLimiter(settings.auth_failure_limit, 60)


AdminDep = Annotated[str, Depends(require_admin)]


def refuse(request: Request, message: str) -> NoReturn:
    """A failed authentication (admin API, /metrics, /codec): counted against the client's
    address, so guessing keys is slowed to the same pace everywhere; 429 past the limit."""
    limits: AdminLimits = request.app.state.admin_limits
    wait = limits.auth_failures.hit(rate_key(client_ip(request)))
    if wait is not None:
        raise TooManyRequests("Too many failed attempts; try again later", wait)
    raise NotAuthenticated(message)


def client_ip(request: Request) -> str | None:
    """Who the request is from, as ClientAddressMiddleware decided: an address or None."""
    return canonical(request.client.host) if request.client else None


def get_onboarding(
    session: SessionDep, settings: SettingsDep, temporal: TemporalDep
) -> Onboarding:
    return Onboarding(settings=settings, session=session, temporal=temporal)


OnboardingDep = Annotated[Onboarding, Depends(get_onboarding)]


def get_signin(request: Request, session: SessionDep, settings: SettingsDep) -> SignIn:
    return SignIn(settings=settings, db=session, hashing=request.app.state.hashing,
                  counter=request.app.state.counter)


SignInDep = Annotated[SignIn, Depends(get_signin)]


def get_counter(request: Request) -> Counter:
    return request.app.state.counter  # type: ignore[no-any-return]


CounterDep = Annotated[Counter, Depends(get_counter)]
