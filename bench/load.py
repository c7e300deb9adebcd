"""Closed-loop load: sign-ins, cheap page views and code checks per second per core."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import httpx

from bench.measure import CpuMeter, Latencies, percentile
from bench.people import Stackside, email_to, fields
from core.db import create_engine, session_factory
from tests.support.accounts import PASSWORD, make_person
from tests.support.config import make_settings
from tests.support.stack import DevStack, SmtpSink

CLIENTS_PER_CORE = 4  # enough concurrent browsers to keep every core busy


async def _loop(seconds: float, clients: int, one: Any) -> tuple[int, list[float]]:
    """`clients` loops calling `one(i)` until the time is up: (completed, latencies)."""
    deadline = time.perf_counter() + seconds
    samples: list[float] = []
    done = 0

    async def client(i: int) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await one(i)
            samples.append(time.perf_counter() - started)
            done += 1

    await asyncio.gather(*(client(i) for i in range(clients)))
    return done, samples


async def cheap_page_rates(dev: DevStack, seconds: float) -> dict[str, Any]:
    """GET /sso/login (a page render, a CSRF cookie): rate per core and latency, idle."""
    cores = os.cpu_count() or 1
    async with httpx.AsyncClient(base_url=dev.base_url, timeout=60) as http:

        async def view(_: int) -> None:
            answer = await http.get("/sso/login")
            assert answer.status_code == 200

        done, samples = await _loop(seconds, cores * CLIENTS_PER_CORE, view)
        idle = await _probe(http, seconds)
    return {
        "page_views_per_second_per_core": done / seconds / cores,
        "p50_ms": percentile(samples, 50) * 1000,
        "p99_ms": percentile(samples, 99) * 1000,
        "probe_idle_p99_ms": percentile(idle, 99) * 1000,
    }


async def _probe(http: httpx.AsyncClient, seconds: float) -> list[float]:
    """One person loading the sign-in page twenty times a second."""
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        answer = await http.get("/sso/login")
        assert answer.status_code == 200
        samples.append(time.perf_counter() - started)
        await asyncio.sleep(0.05)
    return samples


async def sign_in_rate(
    dev: DevStack, argon2: dict[str, int], seconds: float, probe_cheap_page: bool = False
) -> dict[str, Any]:
    """Correct email and password, over and over, from enough browsers to saturate."""
    cores = os.cpu_count() or 1
    settings = make_settings(
        argon2_time_cost=argon2["time_cost"],
        argon2_memory_kib=argon2["memory_kib"],
        argon2_parallelism=argon2["parallelism"],
    )
    engine = create_engine(f"sqlite+aiosqlite:///{dev.data_dir / 'sso.db'}")
    clients = cores * CLIENTS_PER_CORE
    try:
        people = [await make_person(session_factory(engine), settings) for _ in range(clients)]
    finally:
        await engine.dispose()
    cpu = CpuMeter(dev.process.pid)
    browsers = [httpx.AsyncClient(base_url=dev.base_url, timeout=120) for _ in people]
    forms = [fields(await b.get("/sso/login"), "/sso/login") for b in browsers]

    async def sign_in(i: int) -> None:
        answer = await browsers[i].post(
            "/sso/login", data={**forms[i], "email": people[i].email, "password": PASSWORD}
        )
        if answer.status_code != 303 or answer.headers["location"] != "/sso/account":
            raise RuntimeError(f"sign-in refused: {answer.status_code}")

    cpu.start()
    probe: list[float] = []
    async with httpx.AsyncClient(base_url=dev.base_url, timeout=60) as http:
        if probe_cheap_page:
            (done, samples), probe = await asyncio.gather(
                _loop(seconds, clients, sign_in), _probe(http, seconds)
            )
        else:
            done, samples = await _loop(seconds, clients, sign_in)
    used = cpu.used()
    for browser in browsers:
        await browser.aclose()
    result = {
        "argon2": argon2,
        "sign_ins_per_second_per_core": done / seconds / cores,
        "p50_ms": percentile(samples, 50) * 1000,
        "p99_ms": percentile(samples, 99) * 1000,
        "cpu_seconds_per_sign_in": {k: v / max(done, 1) for k, v in sorted(used.items())},
    }
    if probe_cheap_page:
        result["probe_saturated_p99_ms"] = percentile(probe, 99) * 1000
    return result


async def code_check_rate(dev: DevStack, smtp: SmtpSink, seconds: float) -> dict[str, Any]:
    """Wrong codes posted to flows at the code step: each is an Update answered by the flow
    ("Incorrect code, N attempts left", then "no longer works" from the validator)."""
    cores = os.cpu_count() or 1
    clients = cores * CLIENTS_PER_CORE
    async with httpx.AsyncClient(
        base_url=dev.base_url, timeout=120, headers={"Authorization": f"Bearer {dev.admin_key}"}
    ) as admin:
        side = Stackside(dev.base_url, admin, smtp, Latencies())
        browsers = [httpx.AsyncClient(base_url=dev.base_url, timeout=120) for _ in range(clients)]
        forms = []
        for browser in browsers:
            staff = await side.new_person("codes")
            await side.send_email(staff["id"])
            await side.to_code_step(browser, staff["external_email_1"])
            await email_to(smtp, staff["external_email_1"], "Your agentOS verification code")
            forms.append(fields(await browser.get("/sso/setup/confirm"), "/sso/setup/confirm"))
        cpu = CpuMeter(dev.process.pid)
        cpu.start()

        async def check(i: int) -> None:
            answer = await browsers[i].post(
                "/sso/setup/confirm", data={**forms[i], "code": "000000", "submission": os.urandom(8).hex()}
            )
            if answer.status_code >= 500:
                raise RuntimeError(f"code check failed: {answer.status_code}")

        done, samples = await _loop(seconds, clients, check)
        used = cpu.used()
        for browser in browsers:
            await browser.aclose()
    return {
        "code_checks_per_second_per_core": done / seconds / cores,
        "p50_ms": percentile(samples, 50) * 1000,
        "p99_ms": percentile(samples, 99) * 1000,
        "cpu_seconds_per_check": {k: v / max(done, 1) for k, v in sorted(used.items())},
    }


async def reset_wrong_code_times(
    dev: DevStack, addresses: list[str], browsers: int = 2, per_browser: int = 4
) -> dict[str, Any]:
    """A wrong code on the reset page, for a real account and for an unknown address in
    turn (docs/security.md §15: same words, comparable time). Each browser asks for a code first;
    `browsers` times `per_browser` stays under the flow's cap on wrong codes."""
    samples: dict[str, list[float]] = {"known": [], "unknown": []}
    password = PASSWORD
    for n, address in enumerate(addresses):
        unknown = f"nobody-{n}-{os.urandom(4).hex()}@example.com"
        for _ in range(browsers):
            for kind, email in (("known", address), ("unknown", unknown)):
                async with httpx.AsyncClient(base_url=dev.base_url, timeout=60) as browser:
                    page = await browser.get("/sso/forgot")
                    await browser.post("/sso/forgot", data={**fields(page, "/sso/forgot"), "email": email})
                    page = await browser.get("/sso/reset")
                    for _ in range(per_browser):
                        form = {
                            **fields(page, "/sso/reset"),
                            "code": "000000",
                            "password": password,
                            "confirm": password,
                        }
                        started = time.perf_counter()
                        page = await browser.post("/sso/reset", data=form)
                        samples[kind].append(time.perf_counter() - started)
                        if page.status_code != 400:
                            raise RuntimeError(f"wrong reset code: {page.status_code}")
    return {
        kind: {
            "n": len(values),
            "p50_ms": percentile(values, 50) * 1000,
            "p90_ms": percentile(values, 90) * 1000,
        }
        for kind, values in samples.items()
    }
