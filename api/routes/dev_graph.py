"""Development only: a Microsoft Graph stand-in over the local OIDC provider.

`GET /v1.0/me` answers for whoever holds the access token, as Graph does: the provider's
userinfo endpoint says who that is, and a user claim `accountEnabled: false` plays a
disabled account.
"""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse

from api.deps import SettingsDep
from core.entra import EntraProvider, EntraUnavailable

router = APIRouter(prefix="/dev/graph", tags=["development"], include_in_schema=False)


@router.get("/v1.0/me")
async def me(settings: SettingsDep, authorization: str = Header(default="")) -> JSONResponse:
    if not authorization.startswith("Bearer "):
        return _error(401, "InvalidAuthenticationToken", "Access token is empty.")
    try:
        userinfo_url = (await EntraProvider(settings).metadata())["userinfo_endpoint"]
        async with httpx.AsyncClient(timeout=10) as http:
            answer = await http.get(userinfo_url, headers={"Authorization": authorization})
    except (EntraUnavailable, httpx.HTTPError):
        return _error(503, "serviceNotAvailable", "The provider did not answer.")
    if answer.status_code != 200:
        return _error(401, "InvalidAuthenticationToken", "Access token validation failure.")
    claims: dict[str, Any] = answer.json()
    return JSONResponse(
        {
            "id": claims.get("oid", ""),
            "displayName": claims.get("name", ""),
            "mail": claims.get("email", ""),
            "accountEnabled": claims.get("accountEnabled", True) is not False,
        }
    )


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)
