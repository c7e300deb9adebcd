"""The OpenID Connect provider under load: authorization codes redeemed, and userinfo
requests, per second per core of the web app."""

from __future__ import annotations

import os
from typing import Any

import httpx

from bench.load import CLIENTS_PER_CORE, _loop
from bench.measure import CpuMeter, percentile
from bench.people import fields
from core.db import create_engine, session_factory
from tests.support.accounts import PASSWORD, Browser, make_person
from tests.support.config import make_settings
from tests.support.oidc import authorization, exchange, register_with, sent_back_to
from tests.support.stack import DevStack

CALLBACK = "http://127.0.0.1:9/callback"  # never fetched: the code is read off the redirect


async def oidc_rates(dev: DevStack, seconds: float) -> dict[str, Any]:
    """Each redemption follows its own authorization request (a code is single use), from a
    browser already signed in; userinfo is one access token asked about over and over."""
    cores = os.cpu_count() or 1
    clients = cores * CLIENTS_PER_CORE
    engine = create_engine(f"sqlite+aiosqlite:///{dev.data_dir / 'sso.db'}")
    try:
        person = await make_person(session_factory(engine), make_settings())
    finally:
        await engine.dispose()
    admin = {"Authorization": f"Bearer {dev.admin_key}"}
    async with httpx.AsyncClient(base_url=dev.base_url, timeout=120) as http:
        app = await register_with(http, admin, client_name="Bench", redirect_uris=[CALLBACK])
        browser = Browser(httpx.AsyncHTTPTransport(), dev.base_url)
        page = await browser.http.get("/sso/login")
        await browser.http.post(
            "/sso/login", data={**fields(page, "/sso/login"), "email": person.email, "password": PASSWORD}
        )

        async def redeem(_: int) -> None:
            request = authorization(app)
            sent = sent_back_to(await browser.http.get("/oidc/authorize", params=request.params))
            code = httpx.URL(sent).params["code"]
            token = await exchange(http, request, code)
            if not token.get("id_token"):
                raise RuntimeError("no ID token")

        cpu = CpuMeter(dev.process.pid)
        cpu.start()
        done, samples = await _loop(seconds, clients, redeem)
        redeem_cpu = cpu.used()
        request = authorization(app)
        code = httpx.URL(
            sent_back_to(await browser.http.get("/oidc/authorize", params=request.params))
        ).params["code"]
        access = (await exchange(http, request, code))["access_token"]

        async def userinfo(_: int) -> None:
            answer = await http.get("/oidc/userinfo", headers={"Authorization": f"Bearer {access}"})
            if answer.status_code != 200:
                raise RuntimeError(f"userinfo: {answer.status_code}")

        cpu = CpuMeter(dev.process.pid)
        cpu.start()
        info_done, info_samples = await _loop(seconds, clients, userinfo)
        info_cpu = cpu.used()
        await browser.aclose()
    return {
        "code_redemptions_per_second_per_core": done / seconds / cores,
        "code_flow_p50_ms": percentile(samples, 50) * 1000,
        "code_flow_p99_ms": percentile(samples, 99) * 1000,
        "cpu_seconds_per_code_flow": {k: v / max(done, 1) for k, v in sorted(redeem_cpu.items())},
        "userinfo_per_second_per_core": info_done / seconds / cores,
        "userinfo_p50_ms": percentile(info_samples, 50) * 1000,
        "userinfo_p99_ms": percentile(info_samples, 99) * 1000,
        "cpu_seconds_per_userinfo": {k: v / max(info_done, 1) for k, v in sorted(info_cpu.items())},
    }
