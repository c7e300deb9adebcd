"""Admin API: the apps that sign people in through the OpenID Connect provider."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response, status

from api.client_schemas import (
    ClientCreate,
    ClientCreated,
    ClientPage,
    ClientPublic,
    ClientSecret,
    ClientUpdate,
)
from api.deps import OperatorDep, SessionDep, SettingsDep, client_ip
from api.routes.staff import ERRORS
from api.services.oidc_clients import Clients, public_view

router = APIRouter(prefix="/api/v1/clients", tags=["clients"], responses=ERRORS)
ClientId = Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


def get_clients(request: Request, session: SessionDep, settings: SettingsDep, scope: OperatorDep) -> Clients:
    return Clients(settings=settings, db=session, actor=scope.actor, ip=client_ip(request))


ClientsDep = Annotated[Clients, Depends(get_clients)]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ClientCreated)
async def create_client(data: ClientCreate, clients: ClientsDep) -> ClientCreated:
    """Register an app. A confidential client's `client_secret` is in this answer only."""
    return await clients.create(data)


@router.get("", response_model=ClientPage)
async def list_clients(clients: ClientsDep) -> ClientPage:
    return ClientPage(items=await clients.all())


@router.get("/{client_id}", response_model=ClientPublic)
async def get_client(client_id: ClientId, clients: ClientsDep) -> ClientPublic:
    return public_view(await clients.get(client_id))


@router.patch("/{client_id}", response_model=ClientPublic)
async def update_client(client_id: ClientId, data: ClientUpdate, clients: ClientsDep) -> ClientPublic:
    return await clients.update(client_id, data)


@router.delete("/{client_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def delete_client(client_id: ClientId, clients: ClientsDep) -> Response:
    await clients.delete(client_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{client_id}/secret", response_model=ClientSecret)
async def rotate_client_secret(client_id: ClientId, clients: ClientsDep) -> ClientSecret:
    """A new secret, shown once; the old one stops working at once."""
    return await clients.rotate_secret(client_id)
