"""Admin API: staff records and their Single Sign-On setup."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, status

from api.deps import (
    AccountAdminDep,
    AdminDep,
    EmailChangesDep,
    MfaNoticesDep,
    MfaObligationsDep,
    OnboardingDep,
    OperatorDep,
    SessionDep,
    StaffLifecycleDep,
    StaffStatusDep,
    client_ip,
)
from api.schemas import (
    NO_CONTROL_CHARACTERS,
    EmailChangeCode,
    EntraUnlinked,
    ErrorBody,
    MfaExtended,
    MfaReset,
    SessionsRevoked,
    SsoCancelled,
    SsoEmailSent,
    SsoStatus,
    StaffCreate,
    StaffErased,
    StaffListItem,
    StaffMove,
    StaffPage,
    StaffPublic,
    StaffUpdate,
    Unlocked,
)
from api.services import staff as staff_service
from api.services.setup_admin import obligation_info

ERRORS: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorBody, "description": "The request body could not be parsed"},
    401: {"model": ErrorBody},
    404: {"model": ErrorBody},
    409: {"model": ErrorBody},
    429: {
        "model": ErrorBody,
        "description": "Rate limited: too many requests with this key, "
        "failed key checks from this address, or emails to this person",
        "headers": {
            "Retry-After": {
                "description": "Seconds to wait before trying again",
                "schema": {"type": "integer", "minimum": 1},
            }
        },
    },
    503: {"model": ErrorBody},
}

MAX_OFFSET = 2**31 - 1

router = APIRouter(prefix="/api/v1/staff", tags=["staff"], responses=ERRORS)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=StaffPublic)
async def create_staff(
    data: StaffCreate, request: Request, session: SessionDep, scope: AdminDep
) -> StaffPublic:
    """Add a person to the key's organisation (an operator key names `org_id` once the
    deployment has more than one)."""
    org_id = await staff_service.creation_org(session, scope, data.org_id)
    staff = await staff_service.create_staff(session, data, scope, client_ip(request), org_id)
    return StaffPublic.model_validate(staff)


@router.get("", response_model=StaffPage)
async def list_staff(
    session: SessionDep,
    scope: AdminDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    # Bounded: an offset past what the database's integers hold would be a 500, not a page.
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    q: Annotated[
        str | None, Query(max_length=100, pattern=NO_CONTROL_CHARACTERS, description="Name or email contains")
    ] = None,
    org_id: Annotated[
        uuid.UUID | None, Query(description="Only this organisation's people (operator keys)")
    ] = None,
) -> StaffPage:
    """The key's organisation's people; an operator key sees every organisation's."""
    rows, total = await staff_service.list_staff(session, limit, offset, q, scope, org_id)
    items = [
        StaffListItem(
            **StaffPublic.model_validate(v.staff).model_dump(),
            sso_state=v.state,  # type: ignore[arg-type]
            link_expires_at=v.link_expires_at,
            mfa_enabled=v.mfa_enabled,
            entra_linked=v.entra_linked,
            locked=v.locked,
            has_password=v.has_password,
            mfa_obligation=obligation_info(v.mfa_obligation, v.mfa_enabled),
        )
        for v in rows
    ]
    return StaffPage(items=items, total=total, limit=limit, offset=offset)


@router.get("/{staff_id}", response_model=StaffPublic)
async def get_staff(staff_id: uuid.UUID, session: SessionDep, scope: AdminDep) -> StaffPublic:
    return StaffPublic.model_validate(await staff_service.get_staff(session, staff_id, scope))


@router.post("/{staff_id}/move", response_model=StaffPublic, responses={403: {"model": ErrorBody}})
async def move_staff(
    staff_id: uuid.UUID, data: StaffMove, request: Request, session: SessionDep, scope: OperatorDep
) -> StaffPublic:
    """Move a person to another organisation (operators only; audited)."""
    staff = await staff_service.move_staff(session, staff_id, data.org_id, scope, client_ip(request))
    return StaffPublic.model_validate(staff)


@router.patch("/{staff_id}", response_model=StaffPublic, responses={422: {"model": ErrorBody}})
async def update_staff(
    staff_id: uuid.UUID, data: StaffUpdate, request: Request, lifecycle: StaffLifecycleDep, scope: AdminDep
) -> StaffPublic:
    """Change the name at once; set (a day after today, in SSO_TIME_ZONE) or clear (`null`)
    the leave date, on whose start the person is disabled; a new External Email 1 is emailed a
    code and shown as `pending_external_email_1` until the code is entered (the person on
    their account page, or `POST .../email-change/confirm`). 409 when another person uses the
    address; nothing changes on any refusal."""
    staff = await lifecycle.update(staff_id, data, scope, client_ip(request))
    return StaffPublic.model_validate(staff)


@router.delete("/{staff_id}", response_model=StaffErased)
async def erase_staff(
    staff_id: uuid.UUID, request: Request, lifecycle: StaffLifecycleDep, scope: AdminDep
) -> StaffErased:
    """Erase the person (UK GDPR right to erasure): disabled first (sessions ended, apps told,
    tokens revoked), their flows deleted from Temporal, every row holding their personal data
    deleted, and their audit events kept under a pseudonym. The id answers 404 afterwards."""
    pseudonym = await lifecycle.erase(staff_id, scope, client_ip(request))
    return StaffErased(pseudonym=pseudonym)


@router.post(
    "/{staff_id}/email-change/confirm", response_model=StaffPublic, responses={422: {"model": ErrorBody}}
)
async def confirm_email_change(
    staff_id: uuid.UUID, data: EmailChangeCode, request: Request, changes: EmailChangesDep, scope: AdminDep
) -> StaffPublic:
    """Enter the code the person read from the email to their new address: the new address
    becomes the External Email 1 and the sign-in email, and the old one is told. 422 for a
    wrong code (attempts left in the message), 409 when no change waits."""
    staff = await changes.confirm(staff_id, data.code, scope, client_ip(request))
    return StaffPublic.model_validate(staff)


@router.post("/{staff_id}/sso-email", status_code=status.HTTP_202_ACCEPTED, response_model=SsoEmailSent)
async def send_sso_email(
    staff_id: uuid.UUID, request: Request, onboarding: OnboardingDep, scope: AdminDep
) -> SsoEmailSent:
    """Send Single Sign-On Email. A new send supersedes any setup still in progress."""
    return await onboarding.send_email(staff_id, scope, client_ip(request))


@router.delete("/{staff_id}/sso-email", response_model=SsoCancelled)
async def cancel_sso_email(
    staff_id: uuid.UUID, request: Request, onboarding: OnboardingDep, scope: AdminDep
) -> SsoCancelled:
    outcome = await onboarding.cancel(staff_id, scope, client_ip(request))
    return SsoCancelled(workflow_id=f"sso-setup-{staff_id}", state=outcome.state)  # type: ignore[arg-type]


@router.post("/{staff_id}/sessions/revoke", response_model=SessionsRevoked)
async def revoke_sessions(
    staff_id: uuid.UUID, request: Request, accounts: AccountAdminDep, scope: AdminDep
) -> SessionsRevoked:
    """Sign this person out everywhere (and out of every app told by back-channel logout)."""
    count = await accounts.revoke_sessions(staff_id, scope, client_ip(request))
    return SessionsRevoked(sessions_revoked=count)


@router.post("/{staff_id}/unlock", response_model=Unlocked)
async def unlock(
    staff_id: uuid.UUID, request: Request, accounts: AccountAdminDep, scope: AdminDep
) -> Unlocked:
    """Lift a sign-in lock and clear the failure count."""
    await accounts.unlock(staff_id, scope, client_ip(request))
    return Unlocked(failed_sign_ins=0, locked_until=None)


@router.delete("/{staff_id}/entra-link", response_model=EntraUnlinked)
async def unlink_entra(
    staff_id: uuid.UUID, request: Request, accounts: AccountAdminDep, scope: AdminDep
) -> EntraUnlinked:
    """Unlink the person's Microsoft Entra account and end their sessions."""
    link = await accounts.unlink_entra(staff_id, scope, client_ip(request))
    return EntraUnlinked(tenant_id=link.tenant_id, object_id=link.object_id)


@router.delete("/{staff_id}/mfa", response_model=MfaReset)
async def reset_mfa(
    staff_id: uuid.UUID,
    request: Request,
    accounts: AccountAdminDep,
    notices: MfaNoticesDep,
    scope: AdminDep,
) -> MfaReset:
    """Reset MFA for a lost phone: remove the authenticator and the recovery codes, end every
    session and email the person. 409 when the person has no MFA set up."""
    count = await accounts.reset_mfa(staff_id, scope, client_ip(request), notices)
    return MfaReset(mfa_enabled=False, sessions_revoked=count)


@router.post("/{staff_id}/disable", response_model=StaffPublic)
async def disable(
    staff_id: uuid.UUID, request: Request, staff_status: StaffStatusDep, scope: AdminDep
) -> StaffPublic:
    """Disable a leaver: sign-in refused everywhere, every session ended (apps told by
    back-channel logout), every app token revoked, open setup, reset and Microsoft-link flows
    ended. Disabling a disabled person changes nothing and answers the same."""
    staff = await staff_status.disable(staff_id, scope, client_ip(request))
    return StaffPublic.model_validate(staff)


@router.post("/{staff_id}/enable", response_model=StaffPublic)
async def enable(
    staff_id: uuid.UUID, request: Request, staff_status: StaffStatusDep, scope: AdminDep
) -> StaffPublic:
    """Give a disabled person sign-in back (their sessions stay ended). Enabling an enabled
    person changes nothing and answers the same."""
    staff = await staff_status.enable(staff_id, scope, client_ip(request))
    return StaffPublic.model_validate(staff)


@router.post("/{staff_id}/mfa/extend", response_model=MfaExtended)
async def extend_mfa_deadline(
    staff_id: uuid.UUID, request: Request, obligations: MfaObligationsDep, scope: AdminDep
) -> MfaExtended:
    """Extend the person's MFA deadline once, by another SSO_MFA_GRACE (from the deadline,
    or from now when it has passed). 409 when there is no deadline to extend or it was
    extended already."""
    staff = await staff_service.get_staff(obligations.db, staff_id, scope)
    obligation = await obligations.extend(staff, scope.actor, client_ip(request))
    return MfaExtended(due_at=obligation.due_at, extended_by=scope.actor)


@router.get("/{staff_id}/sso", response_model=SsoStatus)
async def sso_status(staff_id: uuid.UUID, onboarding: OnboardingDep, scope: AdminDep) -> SsoStatus:
    return await onboarding.status(staff_id, scope)
