"""The OpenID Connect provider under load: authorization codes redeemed, userinfo requests
and refresh grants, per second per core of the web app.

Per core means per CPU-second of the web app process: requests answered divided by the CPU
time (user + system) the web app used meanwhile, as Keycloak's sizing guide counts per vCPU.
The load generator, the Temporal server and the worker share the machine, so requests per
wall-clock second (also reported, with the web app's cores used) understate what one
dedicated core does."""

from __future__ import annotations

import math
import os
from typing import Any

import httpx

from bench.load import CLIENTS_PER_CORE, _loop
from bench.measure import CpuMeter, percentile
from bench.people import fields
from core.db import create_engine, session_factory
from core.settings import to_async_url
from tests.support.accounts import PASSWORD, Browser, make_person
from tests.support.config import make_settings
from tests.support.oidc import authorization, exchange, register_with, sent_back_to
from tests.support.stack import DevStack

CALLBACK = "http://127.0.0.1:9/callback"  # never fetched: the code is read off the redirect
OFFLINE = "openid email profile offline_access"


async def oidc_rates(dev: DevStack, seconds: float, database_url: str | None = None) -> dict[str, Any]:
    """Each redemption follows its own authorization request (a code is single use), from a
    browser already signed in; userinfo is one access token asked about over and over.
    `database_url` is the stack's database when it is not its SQLite file."""
    cores = os.cpu_count() or 1
    clients = cores * CLIENTS_PER_CORE
    engine = create_engine(to_async_url(database_url or f"sqlite:///{dev.data_dir / 'sso.db'}"))
    try:
        person = await make_person(session_factory(engine), make_settings())
    finally:
        await engine.dispose()
    admin = {"Authorization": f"Bearer {dev.admin_key}"}
    async with httpx.AsyncClient(base_url=dev.base_url, timeout=120) as http:
        app = await register_with(
            http,
            admin,
            client_name="Bench",
            redirect_uris=[CALLBACK],
            grant_types=["authorization_code", "refresh_token"],
        )
        browser = Browser(httpx.AsyncHTTPTransport(), dev.base_url)
        page = await browser.http.get("/sso/login")
        await browser.http.post(
            "/sso/login", data={**fields(page, "/sso/login"), "email": person.email, "password": PASSWORD}
        )

        async def tokens(**extra: str) -> dict[str, Any]:
            request = authorization(app, **extra)
            sent = sent_back_to(await browser.http.get("/oidc/authorize", params=request.params))
            return await exchange(http, request, httpx.URL(sent).params["code"])

        async def redeem(_: int) -> None:
            if not (await tokens()).get("id_token"):
                raise RuntimeError("no ID token")

        cpu = CpuMeter(dev.process.pid)
        cpu.start()
        done, samples = await _loop(seconds, clients, redeem)
        redeem_cpu = cpu.used()
        access = (await tokens())["access_token"]

        async def userinfo(_: int) -> None:
            answer = await http.get("/oidc/userinfo", headers={"Authorization": f"Bearer {access}"})
            if answer.status_code != 200:
                raise RuntimeError(f"userinfo: {answer.status_code}")

        cpu = CpuMeter(dev.process.pid)
        cpu.start()
        info_done, info_samples = await _loop(seconds, clients, userinfo)
        info_cpu = cpu.used()
        # Each client its own token family: every refresh rotates the token it presents.
        chains = [(await tokens(scope=OFFLINE))["refresh_token"] for _ in range(clients)]
        assert app.client_secret is not None
        secret = (app.client_id, app.client_secret)

        async def refresh(i: int) -> None:
            answer = await http.post(
                "/oidc/token", data={"grant_type": "refresh_token", "refresh_token": chains[i]}, auth=secret
            )
            if answer.status_code != 200:
                raise RuntimeError(f"refresh: {answer.status_code} {answer.text}")
            chains[i] = answer.json()["refresh_token"]

        cpu = CpuMeter(dev.process.pid)
        cpu.start()
        refresh_done, refresh_samples = await _loop(seconds, clients, refresh)
        refresh_cpu = cpu.used()
        await browser.aclose()
    return {
        **_rates("code_redemptions", done, seconds, redeem_cpu),
        "code_flow_p50_ms": percentile(samples, 50) * 1000,
        "code_flow_p99_ms": percentile(samples, 99) * 1000,
        "cpu_seconds_per_code_flow": {k: v / max(done, 1) for k, v in sorted(redeem_cpu.items())},
        **_rates("userinfo", info_done, seconds, info_cpu),
        "userinfo_p50_ms": percentile(info_samples, 50) * 1000,
        "userinfo_p99_ms": percentile(info_samples, 99) * 1000,
        "cpu_seconds_per_userinfo": {k: v / max(info_done, 1) for k, v in sorted(info_cpu.items())},
        **_rates("refresh_grants", refresh_done, seconds, refresh_cpu),
        "refresh_p50_ms": percentile(refresh_samples, 50) * 1000,
        "refresh_p99_ms": percentile(refresh_samples, 99) * 1000,
        "cpu_seconds_per_refresh": {k: v / max(refresh_done, 1) for k, v in sorted(refresh_cpu.items())},
    }


def _rates(name: str, done: int, seconds: float, cpu: dict[str, float]) -> dict[str, float]:
    """Per web app core (done / the web app's CPU-seconds), per wall-clock second, and how
    many cores the web app kept busy meanwhile."""
    web = cpu.get("web", 0.0)
    return {
        f"{name}_per_second_per_core": done / web if web > 0 else math.nan,
        f"{name}_per_second": done / seconds,
        f"{name}_web_cores_used": web / seconds,
    }
