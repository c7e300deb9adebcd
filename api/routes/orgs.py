"""Admin API: the organisations (agencies) on the deployment, and their admin keys."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request, status

from api.deps import AdminDep, OperatorDep, SessionDep, SettingsDep, StaffLifecycleDep, client_ip
from api.org_schemas import OrgCreate, OrgErased, OrgKeyCreate, OrgKeyCreated, OrgPage, OrgPublic, OrgUpdate
from api.routes.staff import ERRORS
from api.schemas import ErrorBody
from api.services.org_erasure import OrgErasure
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
async def update_org(org_id: uuid.UUID, data: OrgUpdate, orgs: OrgsDep) -> OrgPublic:
    """Change what the body names. An organisation's key may change only its own
    `mfa_policy` and `sender_name`."""
    return await orgs.update(org_id, data)


@router.post("/{org_id}/keys", status_code=status.HTTP_201_CREATED, response_model=OrgKeyCreated)
async def create_org_key(org_id: uuid.UUID, data: OrgKeyCreate, orgs: OrgsDep) -> OrgKeyCreated:
    """A new admin key for the organisation, shown once: by an operator, or by that
    organisation's own key."""
    return await orgs.create_key(org_id, data.name)


@router.delete("/{org_id}", response_model=OrgErased)
async def erase_org(
    org_id: uuid.UUID, request: Request, lifecycle: StaffLifecycleDep, scope: OperatorDep
) -> OrgErased:
    """Erase a suspended organisation (operators only): each of its people erased as `DELETE
    /api/v1/staff/{id}` erases one, its admin keys deleted, its Microsoft tenants released,
    then the organisation; the audit trail stays, its people under pseudonyms. 409 while it is
    not suspended."""
    return await OrgErasure(lifecycle).erase(org_id, scope, client_ip(request))
