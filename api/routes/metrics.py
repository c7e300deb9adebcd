"""Prometheus scrape endpoint: the web app's metrics, then the worker's (when
SSO_WORKER_METRICS_URL is set), in the text exposition format.

Open without credentials only to a development stack's own machine; anywhere else a scraper
presents SSO_METRICS_TOKEN or an operator admin API key as a Bearer token.
"""

from __future__ import annotations

import hmac
import ipaddress

import httpx
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from api.deps import SettingsDep, UnitOfWorkDep, bearer, client_ip, refuse
from core.admin_keys import key_scope
from core.errors import Forbidden
from core.metrics import REGISTRY, worker_scrape_text
from core.settings import Settings

router = APIRouter(tags=["ops"])

# A scrape must answer even when the worker hangs; Prometheus' own timeout is 10 s.
WORKER_SCRAPE_TIMEOUT = 2.0
WORKER_SCRAPE_MAX_BYTES = 8 * 1024 * 1024


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, uow: UnitOfWorkDep, settings: SettingsDep) -> Response:
    await _authorise(request, uow, settings)
    body = generate_latest(REGISTRY).decode()
    if settings.worker_metrics_url:
        worker = await worker_metrics(settings.worker_metrics_url)
        body += worker_scrape_text(up=worker is not None)
        if worker:
            body += worker if worker.endswith("\n") else worker + "\n"
    return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4)


async def worker_metrics(url: str) -> str | None:
    """The worker's scrape text, or None when it cannot be read right now."""
    try:
        # No proxy from the environment: the worker is a neighbour, not the internet.
        async with httpx.AsyncClient(timeout=WORKER_SCRAPE_TIMEOUT, trust_env=False) as http:
            response = await http.get(url)
    except httpx.HTTPError:
        return None
    if response.status_code != 200 or len(response.content) > WORKER_SCRAPE_MAX_BYTES:
        return None
    return response.text


def _loopback(request: Request) -> bool:
    try:
        return ipaddress.ip_address(client_ip(request) or "").is_loopback
    except ValueError:
        return False


async def _authorise(request: Request, uow: UnitOfWorkDep, settings: Settings) -> None:
    if settings.is_development and _loopback(request):
        return
    presented = bearer(request)
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else ""
    if presented and token and hmac.compare_digest(presented.encode(), token.encode()):
        return
    scope = await key_scope(uow.session, settings, presented) if presented else None
    if scope is not None:
        await uow.commit_now()  # the key's last use, before the worker's metrics are read
        # The counts span every organisation (and name them with SSO_METRICS_ORG_LABELS).
        if not scope.is_operator:
            raise Forbidden("Metrics cover every organisation: use an operator key or SSO_METRICS_TOKEN")
        return
    refuse(request, "Metrics need SSO_METRICS_TOKEN or an admin API key (Authorization: Bearer <token>)")
