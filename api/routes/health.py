"""Liveness of the parts the app depends on."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy import text

from api.deps import SessionDep, TemporalDep

router = APIRouter(tags=["health"])


@router.get("/favicon.ico", include_in_schema=False)
async def favicon() -> Response:
    return Response(status_code=204)


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str]  # part -> "ok" or "failed: <error type>"
    failed: list[str]


@router.get(
    "/healthz",
    response_model=Health,
    responses={503: {"model": Health, "description": "The database or Temporal is down"}},
)
async def healthz(session: SessionDep, temporal: TemporalDep) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(3):
            await session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any failure means "not healthy"; the type says enough
        checks["database"] = f"failed: {type(exc).__name__}"
        # Left to the request's commit, a connection lost mid-check would turn this answer
        # into an error: the failed transaction ends here.
        with contextlib.suppress(Exception):
            await session.rollback()
    try:
        client = await temporal.client(connect_timeout=3)
        async with asyncio.timeout(3):
            await client.service_client.check_health()
        checks["temporal"] = "ok"
    except Exception as exc:
        checks["temporal"] = f"failed: {type(exc).__name__}"
    healthy = all(v == "ok" for v in checks.values())
    failed = [name for name, v in checks.items() if v != "ok"]
    body = {"status": "ok" if healthy else "unavailable", "checks": checks, "failed": failed}
    return JSONResponse(body, status_code=200 if healthy else 503)
