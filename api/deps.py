"""Dependency aliases used by the routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, NoReturn

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from api.services.account import MfaNotices
from api.services.accounts import AccountAdmin
from api.services.email_change import EmailChanges
from api.services.flows import FlowClient
from api.services.mfa_obligation import MfaObligations
from api.services.setup_admin import Onboarding
from api.services.signin import SignIn
from api.services.staff_batches import StaffBatches
from api.services.staff_import import StaffImports
from api.services.staff_lifecycle import StaffLifecycle
from api.services.staff_status import StaffStatus
from core.addresses import canonical, rate_key
from core.admin_keys import key_scope
from core.db import UnitOfWork, run_after_commit
from core.errors import Forbidden, NotAuthenticated, TooManyRequests
from core.org_suspension import keys_suspended_message, suspended_org
from core.orgs import AdminScope
from core.rate_limit import SlidingWindowLimiter
from core.settings import Settings
from core.temporal_client import TemporalGateway
from core.throttle import Counter


def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's transaction: committed when the route returns, rolled back (by closing)
    when it raises, so a failed request leaves nothing half-written. A page answered with an
    error status (a 400 or 429 form) is a normal return: what it recorded is committed.

    Scope "function" (see SessionDep) runs this before the response is sent; the default
    scope would commit after it, and a client could see a success whose write is then lost.
    What the request asked to do once committed (core/db.py after_commit) runs then."""
    async with request.app.state.sessions() as session:
        yield session
        await session.commit()
        await run_after_commit(session)


def get_temporal(request: Request) -> TemporalGateway:
    return request.app.state.temporal  # type: ignore[no-any-return]


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
TemporalDep = Annotated[TemporalGateway, Depends(get_temporal)]


def get_unit_of_work(session: SessionDep) -> UnitOfWork:
    return UnitOfWork(session)


UnitOfWorkDep = Annotated[UnitOfWork, Depends(get_unit_of_work)]


def bearer(request: Request) -> str:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""


# Documents the scheme in OpenAPI (and the Authorize button of /docs); `bearer` reads it.
ADMIN_KEY = HTTPBearer(
    auto_error=False,
    scheme_name="AdminKey",
    description="An admin API key: `sso admin-key create --name NAME`",
)


async def require_admin(
    request: Request,
    uow: UnitOfWorkDep,
    settings: SettingsDep,
    _documented: Annotated[HTTPAuthorizationCredentials | None, Security(ADMIN_KEY)],
) -> AdminScope:
    """The key's scope: its organisation, or every organisation for an operator key."""
    limits: AdminLimits = request.app.state.admin_limits
    scope = await key_scope(uow.session, settings, bearer(request))
    if scope is None:
        refuse(request, "A valid admin API key is required (Authorization: Bearer <key>)")
    suspended = await suspended_org(uow.session, scope.org_id)
    # The key's last use is kept even when the answer is a 429 or an error, and no write
    # stays open while the route waits on Temporal.
    await uow.commit_now()
    if suspended is not None:
        raise Forbidden(keys_suspended_message(suspended))
    wait = limits.requests.hit(scope.actor)
    if wait is not None:
        raise TooManyRequests("Too many requests with this admin key; slow down", wait)
    if scope.org_id is not None and (wait := limits.per_org.hit(str(scope.org_id))) is not None:
        raise TooManyRequests(
            "Too many requests for this organisation (its admin keys together); slow down", wait
        )
    return scope


class AdminLimits:
    def __init__(self, settings: Settings) -> None:
        self.requests = SlidingWindowLimiter(settings.admin_rate_limit, 60)
        self.per_org = SlidingWindowLimiter(settings.org_admin_rate_limit, 60)
        self.auth_failures = SlidingWindowLimiter(settings.auth_failure_limit, 60)


AdminDep = Annotated[AdminScope, Depends(require_admin)]


def require_operator(scope: AdminDep) -> AdminScope:
    """Deployment-wide things (apps, organisations): an organisation's key gets a 403 that
    says only that."""
    scope.require_operator()
    return scope


OperatorDep = Annotated[AdminScope, Depends(require_operator)]


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


def get_onboarding(uow: UnitOfWorkDep, settings: SettingsDep, temporal: TemporalDep) -> Onboarding:
    return Onboarding(settings=settings, session=uow.session, temporal=temporal, uow=uow)


OnboardingDep = Annotated[Onboarding, Depends(get_onboarding)]


def get_mfa_notices(settings: SettingsDep, temporal: TemporalDep) -> MfaNotices:
    # Connecting may take the usual 5 s: an admin action, not a page step.
    return MfaNotices(settings, FlowClient(temporal, 10.0, settings.task_queue, connect_timeout=5.0))


MfaNoticesDep = Annotated[MfaNotices, Depends(get_mfa_notices)]


def get_mfa_obligations(session: SessionDep, settings: SettingsDep, temporal: TemporalDep) -> MfaObligations:
    # Connecting may take the usual 5 s: an admin action, not a page step.
    return MfaObligations(
        settings, session, FlowClient(temporal, 10.0, settings.task_queue, connect_timeout=5.0)
    )


MfaObligationsDep = Annotated[MfaObligations, Depends(get_mfa_obligations)]


def get_account_admin(session: SessionDep, settings: SettingsDep, temporal: TemporalDep) -> AccountAdmin:
    return AccountAdmin(session, settings, temporal)


AccountAdminDep = Annotated[AccountAdmin, Depends(get_account_admin)]


def get_staff_status(uow: UnitOfWorkDep, settings: SettingsDep, temporal: TemporalDep) -> StaffStatus:
    return StaffStatus(uow, settings, temporal)


StaffStatusDep = Annotated[StaffStatus, Depends(get_staff_status)]


def get_staff_lifecycle(uow: UnitOfWorkDep, settings: SettingsDep, temporal: TemporalDep) -> StaffLifecycle:
    return StaffLifecycle(uow, settings, temporal)


StaffLifecycleDep = Annotated[StaffLifecycle, Depends(get_staff_lifecycle)]


def get_email_changes(uow: UnitOfWorkDep, settings: SettingsDep, temporal: TemporalDep) -> EmailChanges:
    return EmailChanges(uow, settings, temporal)


EmailChangesDep = Annotated[EmailChanges, Depends(get_email_changes)]


def get_staff_batches(uow: UnitOfWorkDep, settings: SettingsDep, temporal: TemporalDep) -> StaffBatches:
    return StaffBatches(settings, uow, temporal)


StaffBatchesDep = Annotated[StaffBatches, Depends(get_staff_batches)]


def get_staff_imports(batches: StaffBatchesDep) -> StaffImports:
    return StaffImports(batches)


StaffImportsDep = Annotated[StaffImports, Depends(get_staff_imports)]


def get_signin(request: Request, session: SessionDep, settings: SettingsDep) -> SignIn:
    return SignIn(
        settings=settings, db=session, hashing=request.app.state.hashing, counter=request.app.state.counter
    )


SignInDep = Annotated[SignIn, Depends(get_signin)]


def get_counter(request: Request) -> Counter:
    return request.app.state.counter  # type: ignore[no-any-return]


CounterDep = Annotated[Counter, Depends(get_counter)]
