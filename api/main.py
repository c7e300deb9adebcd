"""The web app: includes routers, nothing else."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from api import errors
from api.client_address import ClientAddressMiddleware
from api.deps import AdminLimits
from api.request_id import RequestIdMiddleware
from api.routes import (
    account,
    account_apps,
    account_passkeys,
    account_password,
    account_sessions,
    admin,
    admin_apps,
    admin_bulk_actions,
    admin_imports,
    admin_lifecycle,
    admin_orgs,
    api_docs,
    clients,
    codec,
    dev_demo,
    dev_graph,
    dev_mailbox,
    entra,
    health,
    metrics,
    oidc,
    orgs,
    passkeys,
    reset,
    setup,
    setup_new_link,
    signin,
    signin_mfa_setup,
    staff,
    staff_bulk,
)
from api.security_headers import SecurityHeadersMiddleware
from api.services.signin import Hashing
from core import metrics as core_metrics
from core.db import create_engine, session_factory
from core.orgs import adopt_configured_tenants
from core.passwords import Hasher, hashing_pool
from core.settings import Settings, get_settings
from core.templating import TEMPLATES_DIR
from core.temporal_client import TemporalGateway
from core.throttle import build_counter

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
# Two years, subdomains too: browsers then never try the public URL's host over plain http.
STRICT_TRANSPORT_SECURITY = "max-age=63072000; includeSubDomains"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action {form_action}"
)


def security_headers_for(settings: Settings) -> dict[str, str]:
    """The headers every page gets. Browsers apply form-action to the redirects that follow a
    form post too, so the Microsoft-Entra button (a form whose answer redirects to Microsoft)
    needs Microsoft's origin there."""
    form_action = "'self'"
    if settings.entra_enabled:
        parts = urlsplit(settings.entra_discovery_url)
        form_action += f" {parts.scheme}://{parts.netloc}"
    return {
        **SECURITY_HEADERS,
        "Content-Security-Policy": CONTENT_SECURITY_POLICY.format(form_action=form_action),
    }


def create_app(settings: Settings | None = None, temporal: TemporalGateway | None = None) -> FastAPI:
    settings = settings or get_settings()
    core_metrics.configure(settings.metrics_org_labels)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.async_database_url)
        app.state.sessions = session_factory(engine)
        app.state.temporal = temporal or TemporalGateway(settings)
        app.state.counter = build_counter(settings.redis_url, app.state.sessions)
        if settings.entra_tenants:
            async with app.state.sessions() as session:
                await adopt_configured_tenants(session, settings)
                await session.commit()
        hasher = Hasher(settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism)
        pool = hashing_pool()
        app.state.hashing = Hashing(
            hasher=hasher,
            pool=pool,
            # Unknown addresses are checked against this, so they cost what real ones do.
            stand_in=await asyncio.get_running_loop().run_in_executor(
                pool, hasher.hash, secrets.token_urlsafe(24)
            ),
        )
        yield
        await app.state.counter.close()
        await engine.dispose()
        pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title=f"{settings.brand_name} Single Sign-On",
        version="0.1.0",
        lifespan=lifespan,
        # Ours (api/routes/api_docs.py) serves its assets itself; ReDoc would need a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.admin_limits = AdminLimits(settings)
    errors.install(app)
    headers = security_headers_for(settings)
    if settings.public_url.startswith("https://"):
        headers["Strict-Transport-Security"] = STRICT_TRANSPORT_SECURITY
    # Added first, so innermost: what the routes and the error handlers answer gets them.
    app.add_middleware(SecurityHeadersMiddleware, headers=headers)

    origins = list(settings.codec_cors_origins)
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["POST", "OPTIONS"],
            allow_headers=["authorization", "content-type", "x-namespace"],
            allow_credentials=True,
        )
    # Before anything reads request.client: limits, audit, logs (uvicorn's access log too).
    app.add_middleware(ClientAddressMiddleware, proxies=settings.trusted_proxy_networks)
    # Added last, so outermost: every other middleware and route logs under the request id.
    app.add_middleware(RequestIdMiddleware)

    app.mount("/static", StaticFiles(directory=TEMPLATES_DIR / "static"), name="static")
    app.mount(api_docs.ASSETS_URL, api_docs.ASSETS, name="api-docs-assets")
    # In this order: the Entra routes come before the setup pages, because /sso/setup
    # (signed in) is not a setup link.
    routes = (
        api_docs,
        health,
        metrics,
        staff,
        staff_bulk,
        clients,
        orgs,
        oidc,
        codec,
        entra,
        setup_new_link,
        setup,
        signin,
        passkeys,
        signin_mfa_setup,
        account,
        account_apps,
        account_passkeys,
        account_password,
        account_sessions,
        reset,
        admin_lifecycle,
        # Before `admin`: its /admin/staff/{staff_id}/{action} would take /admin/staff/bulk and
        # /admin/staff/import/confirm.
        admin_bulk_actions,
        admin_imports,
        admin,
        admin_apps,
        admin_orgs,
    )
    for module in routes:
        app.include_router(module.router)
    if settings.is_development:
        app.include_router(dev_mailbox.router)
        app.mount(dev_demo.PATH, dev_demo.create_demo_app(settings))
    if settings.entra_dev_graph:  # never true in production: the settings refuse it
        app.include_router(dev_graph.router)
    return app
