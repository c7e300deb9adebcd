"""Admin API: the organisations (agencies) on the deployment, and their admin keys."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request, status

from api.deps import (
    AdminDep,
    OperatorDep,
    SessionDep,
    SettingsDep,
    TemporalDep,
    UnitOfWorkDep,
    client_ip,
)
from api.org_schemas import OrgCreate, OrgErasing, OrgKeyCreate, OrgKeyCreated, OrgPage, OrgPublic, OrgUpdate
from api.routes.staff import ERRORS
from api.schemas import ErrorBody
from api.services.org_erasure import OrgErasure
from api.services.org_mfa import OrgMfaRollout, update_org
from api.services.org_suspension import OrgSuspension
from api.services.orgs import Orgs

router = APIRouter(
    prefix="/api/v1/orgs",
    tags=["organisations"],
    responses={**ERRORS, 403: {"model": ErrorBody, "description": "Only an operator key may do this"}},
)


def get_orgs(request: Request, session: SessionDep, settings: SettingsDep, scope: AdminDep) -> Orgs:
    return Orgs(db=session, settings=settings, scope=scope, ip=client_ip(request))


OrgsDep = Annotated[Orgs, Depends(get_orgs)]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=OrgPublic)
async def create_org(data: OrgCreate, orgs: OrgsDep) -> OrgPublic:
    """Add an organisation (operators only). A tenant another organisation owns is a 409."""
    return await orgs.create(data)


@router.get("", response_model=OrgPage)
async def list_orgs(orgs: OrgsDep) -> OrgPage:
    """Every organisation (operators only)."""
    return OrgPage(items=await orgs.all())


@router.get("/{org_id}", response_model=OrgPublic)
async def get_org(org_id: uuid.UUID, orgs: OrgsDep) -> OrgPublic:
    """An organisation: an operator's any; an organisation's key its own (another's is a 404)."""
    return await orgs.one(org_id)


@router.patch("/{org_id}", response_model=OrgPublic)
async def change_org(
    org_id: uuid.UUID, data: OrgUpdate, orgs: OrgsDep, rollout: OrgMfaRolloutDep
) -> OrgPublic:
    """Change what the body names. An organisation's key may change only its own
    `mfa_policy` and `sender_name`. A change that puts its people under `required` starts
    their MFA obligations (paced, once), as a change of SSO_MFA_POLICY does."""
    return await update_org(orgs, rollout, org_id, data)


@router.post("/{org_id}/keys", status_code=status.HTTP_201_CREATED, response_model=OrgKeyCreated)
async def create_org_key(org_id: uuid.UUID, data: OrgKeyCreate, orgs: OrgsDep) -> OrgKeyCreated:
    """A new admin key for the organisation, shown once: by an operator, or by that
    organisation's own key."""
    return await orgs.create_key(org_id, data.name)


def get_org_mfa_rollout(uow: UnitOfWorkDep, settings: SettingsDep, temporal: TemporalDep) -> OrgMfaRollout:
    return OrgMfaRollout(uow, settings, temporal)


OrgMfaRolloutDep = Annotated[OrgMfaRollout, Depends(get_org_mfa_rollout)]


def get_suspension(
    request: Request, uow: UnitOfWorkDep, settings: SettingsDep, temporal: TemporalDep, scope: AdminDep
) -> OrgSuspension:
    return OrgSuspension(uow, settings, temporal, scope, client_ip(request))


SuspensionDep = Annotated[OrgSuspension, Depends(get_suspension)]


@router.post("/{org_id}/suspend", response_model=OrgPublic)
async def suspend_org(org_id: uuid.UUID, suspension: SuspensionDep) -> OrgPublic:
    """Operators only. Refuses its people's sign-in of every kind and the organisation's admin
    keys (403) at once, until it is resumed; then a durable flow (`org-suspend-<id>`) ends
    every session of its people (apps are told by back-channel logout), revokes their apps'
    tokens and ends their open setup and reset flows: `suspension` is `under_way`, then
    `done`. Nothing is deleted. Idempotent; 409 while it is being erased."""
    return await suspension.suspend(org_id)


@router.post("/{org_id}/resume", response_model=OrgPublic)
async def resume_org(org_id: uuid.UUID, suspension: SuspensionDep) -> OrgPublic:
    """Operators only. Sign-in and admin keys work again; ended sessions stay ended. Idempotent."""
    return await suspension.resume(org_id)


@router.delete("/{org_id}", status_code=status.HTTP_202_ACCEPTED, response_model=OrgErasing)
async def erase_org(
    org_id: uuid.UUID,
    request: Request,
    uow: UnitOfWorkDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    scope: OperatorDep,
) -> OrgErasing:
    """Erase a suspended organisation (operators only), in a durable flow (`org-erase-<id>`):
    each of its people erased as `DELETE /api/v1/staff/{id}` erases one, its admin keys
    deleted, its Microsoft tenants released, then the organisation; the audit trail stays,
    its people under pseudonyms. 202 at once: `GET /api/v1/orgs/{id}` shows `erasing` and
    `people_left`, then 404 once it is gone. Idempotent; 409 while it is not suspended."""
    return await OrgErasure(uow, settings, temporal).erase(org_id, scope, client_ip(request))
