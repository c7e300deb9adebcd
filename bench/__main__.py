"""`python -m bench`: measure the real stack and print a table (also written as JSON).

Runs `sso dev` (Temporal dev server, worker, web app) with a local SMTP sink, drives it over
HTTP, and reads CPU and memory of each process. Not part of the test run; see bench/README.md
for what each figure means and the targets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench import report
from bench.actions import billable_actions
from bench.faults import onboarding_under_faults
from bench.hashing import verifications_per_second_per_core
from bench.load import cheap_page_rates, code_check_rate, reset_wrong_code_times, sign_in_rate
from bench.measure import CpuMeter, Latencies
from bench.oidc import oidc_rates
from bench.people import Stackside, email_to, expect, fields
from core.codec import data_converter
from tests.support.config import (
    POSTGRES_URL,
    TEST_ENCRYPTION_KEY,
    TEST_SECRET_KEY,
    make_settings,
    postgres_schema,
)
from tests.support.stack import DevStack, SmtpSink, free_ports

OURS = {"time_cost": 2, "memory_kib": 19456, "parallelism": 1}
KEYCLOAK = {"time_cost": 5, "memory_kib": 7168, "parallelism": 1}
RESET_SUBJECT = "Your agentOS password reset code"


@contextmanager
def stack(
    data_dir: Path, smtp: SmtpSink, argon2: dict[str, int], database_url: str | None = None
) -> Iterator[DevStack]:
    """`sso dev` on its SQLite file, or on `database_url`."""
    port, temporal_port, ui_port, entra_port = free_ports(4)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSO_")}
    if database_url:
        env["SSO_DATABASE_URL"] = database_url
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "SSO_ENV": "development",
            "SSO_EMAIL_BACKEND": "smtp",
            "SSO_SMTP_HOST": "127.0.0.1",
            "SSO_SMTP_PORT": str(smtp.port),
            "SSO_SECRET_KEY": TEST_SECRET_KEY,
            "SSO_ENCRYPTION_KEYS": TEST_ENCRYPTION_KEY,
            "SSO_PUBLIC_URL": f"http://127.0.0.1:{port}",
            # A benchmark is one admin key and one IP sending thousands of requests.
            "SSO_ADMIN_RATE_LIMIT": "100000000",
            "SSO_SIGNIN_IP_LIMIT": "100000000",
            "SSO_RESET_REQUEST_IP_LIMIT": "100000000",
            "SSO_RESET_SUBMIT_IP_LIMIT": "100000000",
            "SSO_OIDC_TOKEN_IP_LIMIT": "100000000",
            "SSO_OIDC_TOKEN_CLIENT_LIMIT": "100000000",
            # The pages wait longer than a person would before "try again": we measure, not shed.
            "SSO_STEP_TIMEOUT": "60",
            "SSO_ARGON2_TIME_COST": str(argon2["time_cost"]),
            "SSO_ARGON2_MEMORY_KIB": str(argon2["memory_kib"]),
            "SSO_ARGON2_PARALLELISM": str(argon2["parallelism"]),
        }
    )
    dev = DevStack.start(
        data_dir,
        env,
        port=port,
        temporal_port=temporal_port,
        ui_port=ui_port,
        entra_port=entra_port,
        timeout=120,
    )
    try:
        yield dev
    finally:
        dev.stop(timeout=30)


async def onboarding(dev: DevStack, smtp: SmtpSink, people: int) -> dict[str, Any]:
    """`people` complete the setup at once, half with MFA, half skipping it."""
    latencies = Latencies()
    cpu = CpuMeter(dev.process.pid)
    limits = httpx.Limits(max_connections=people * 2, max_keepalive_connections=people * 2)
    async with httpx.AsyncClient(
        base_url=dev.base_url,
        timeout=120,
        limits=limits,
        headers={"Authorization": f"Bearer {dev.admin_key}"},
    ) as admin:
        side = Stackside(dev.base_url, admin, smtp, latencies)
        await side.onboard(mfa=False)  # warm the worker's caches and the JIT-less paths
        latencies.samples.clear()
        cpu.start()
        started = time.perf_counter()
        await asyncio.gather(*(side.onboard(mfa=i % 2 == 0) for i in range(people)))
        elapsed = time.perf_counter() - started
    used = cpu.used()
    return {
        "people": people,
        "seconds": elapsed,
        "flows_per_second": people / elapsed,
        "steps": latencies.summary(),
        "cpu_seconds_per_flow": {k: v / people for k, v in sorted(used.items())},
    }


async def resets(dev: DevStack, smtp: SmtpSink, count: int) -> list[str]:
    """`count` people who are set up reset their password (for the action count); their
    addresses."""
    addresses = []
    async with httpx.AsyncClient(
        base_url=dev.base_url, timeout=120, headers={"Authorization": f"Bearer {dev.admin_key}"}
    ) as admin:
        side = Stackside(dev.base_url, admin, smtp, Latencies())
        for _ in range(count):
            staff = await side.new_person("reset")
            address = staff["external_email_1"]
            addresses.append(address)
            await side.send_email(staff["id"])
            async with httpx.AsyncClient(base_url=dev.base_url, timeout=60) as browser:
                await side.to_code_step(browser, address)
                await side.confirm(browser, address)
                page = await browser.get("/sso/setup/mfa")
                expect(
                    await browser.post("/sso/setup/mfa/skip", data=fields(page, "/sso/setup/mfa/skip")),
                    "/sso/setup/done",
                )
            async with httpx.AsyncClient(base_url=dev.base_url, timeout=60) as browser:
                page = await browser.get("/sso/forgot")
                expect(
                    await browser.post("/sso/forgot", data={**fields(page, "/sso/forgot"), "email": address}),
                    "/sso/reset?sent=1",
                )
                text = await email_to(smtp, address, RESET_SUBJECT)
                code = next(
                    line.strip()
                    for line in text.splitlines()
                    if line.strip().isdigit() and len(line.strip()) == 6
                )
                page = await browser.get("/sso/reset")
                password = f"Reset {time.time_ns()} meadow harbour"
                answer = await browser.post(
                    "/sso/reset",
                    data={
                        **fields(page, "/sso/reset"),
                        "code": code,
                        "password": password,
                        "confirm": password,
                    },
                )
                expect(answer, "/sso/login?notice=reset")
    return addresses


async def actions(dev: DevStack) -> dict[str, Any]:
    """Billable actions of every finished onboarding (with and without MFA) and reset."""
    from temporalio.client import Client

    client = await Client.connect(dev.temporal_address, data_converter=data_converter(make_settings()))
    found: dict[str, list[dict[str, int]]] = {
        "onboarding without MFA": [],
        "onboarding with MFA": [],
        "password reset": [],
    }
    await asyncio.sleep(2)  # the last flows close a moment after their final page
    async for wf in client.list_workflows("WorkflowType = 'SsoSetup' AND ExecutionStatus = 'Completed'"):
        history = await client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
        counted = billable_actions(history)
        mfa = any(
            e.activity_task_scheduled_event_attributes.activity_type.name == "verify_totp"
            for e in history.events
            if e.HasField("activity_task_scheduled_event_attributes")
        )
        found["onboarding with MFA" if mfa else "onboarding without MFA"].append(dict(counted))
    async for wf in client.list_workflows("WorkflowType = 'PasswordReset' AND ExecutionStatus = 'Completed'"):
        history = await client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
        counted = billable_actions(history)
        # The "password was changed" notice runs as its own (child) flow: part of the cost.
        for event in history.events:
            if event.HasField("start_child_workflow_execution_initiated_event_attributes"):
                child = event.start_child_workflow_execution_initiated_event_attributes
                counted += billable_actions(
                    await client.get_workflow_handle(child.workflow_id).fetch_history()
                )
        found["password reset"].append(dict(counted))
    return {kind: report.typical(rows) for kind, rows in found.items() if rows}


async def scale(dev: DevStack, smtp: SmtpSink, waiting: int) -> dict[str, Any]:
    """`waiting` setups wait on their link at once; one more person goes through meanwhile."""
    cpu = CpuMeter(dev.process.pid)
    before = cpu.memory_mib()
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    started = time.perf_counter()
    async with httpx.AsyncClient(
        base_url=dev.base_url,
        timeout=300,
        limits=limits,
        headers={"Authorization": f"Bearer {dev.admin_key}"},
    ) as admin:
        side = Stackside(dev.base_url, admin, smtp, Latencies())
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(waiting):
            queue.put_nowait(i)

        async def sender() -> None:
            while not queue.empty():
                queue.get_nowait()
                staff = await side.new_person("waiting")
                await side.send_email(staff["id"])

        await asyncio.gather(*(sender() for _ in range(32)))
        sent_in = time.perf_counter() - started
        # Every one of them has its email out (so its link timer runs) before we measure.
        deadline = time.monotonic() + 1800
        while (  # noqa: ASYNC110
            sum(1 for m in smtp.messages if "waiting." in m.rcpt_tos[0]) < waiting
            and time.monotonic() < deadline
        ):
            await asyncio.sleep(1)
        delivered = sum(1 for m in smtp.messages if "waiting." in m.rcpt_tos[0])
        memory = cpu.memory_mib()
        one_more = Latencies()
        side.latencies = one_more
        await side.onboard(mfa=False)
    return {
        "waiting": waiting,
        "emails_delivered": delivered,
        "start_seconds": sent_in,
        "memory_mib_before": before,
        "memory_mib_waiting": memory,
        "one_more_person_steps": one_more.summary(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--people", type=int, default=50, help="concurrent onboardings")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each load run")
    parser.add_argument("--resets", type=int, default=3)
    parser.add_argument(
        "--waiting",
        type=int,
        default=10_000,
        help="setups waiting on their link for the scale run (0 skips it)",
    )
    parser.add_argument(
        "--fault-people",
        type=int,
        default=30,
        help="people onboarding while the worker is killed twice and Temporal restarts once (0 skips it)",
    )
    parser.add_argument(
        "--only",
        choices=["oidc"],
        help="run one part alone on its own stack: oidc (code redemptions, userinfo, refresh grants)",
    )
    parser.add_argument("--out", default="bench/results/latest.json")
    args = parser.parse_args(argv)
    results = asyncio.run(run(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print(report.table(results))
    print(f"\n(JSON: {out})")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {
            "cores": cores,
            "cpu": report.cpu_model(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
        },
        "config": vars(args),
    }
    if args.only == "oidc":
        return await run_oidc(args, results)
    say("pure argon2id ceiling (nothing else running)")
    results["hash_ceiling"] = {
        "ours": verifications_per_second_per_core(**OURS),
        "keycloak": verifications_per_second_per_core(**KEYCLOAK),
    }
    smtp = SmtpSink()
    smtp.start()
    try:
        with tempfile.TemporaryDirectory(prefix="sso-bench-") as tmp:
            with stack(Path(tmp) / "ours", smtp, OURS) as dev:
                say(f"onboarding: {args.people} people at once")
                results["onboarding"] = await onboarding(dev, smtp, args.people)
                say("cheap paths, idle")
                results["cheap_idle"] = await cheap_page_rates(dev, args.seconds)
                say("code checks")
                results["code_checks"] = await code_check_rate(dev, smtp, args.seconds)
                say("sign-in at our argon2id settings, and a cheap page meanwhile")
                results["signin_ours"] = await sign_in_rate(dev, OURS, args.seconds, probe_cheap_page=True)
                say("OpenID Connect: code redemptions, userinfo and refresh grants")
                results["oidc"] = await oidc_rates(dev, args.seconds)
                say(f"{args.resets} password resets")
                addresses = await resets(dev, smtp, args.resets)
                say("billable actions from the finished histories")
                results["actions"] = await actions(dev)
                say("wrong reset codes: real accounts and unknown addresses in turn")
                results["reset_wrong_code"] = await reset_wrong_code_times(dev, addresses)
                if args.waiting:
                    say(f"scale: {args.waiting} setups waiting on their link")
                    results["scale"] = await scale(dev, smtp, args.waiting)
            with stack(Path(tmp) / "keycloak", smtp, KEYCLOAK) as dev:
                say("sign-in at Keycloak's argon2id settings")
                results["signin_keycloak"] = await sign_in_rate(dev, KEYCLOAK, args.seconds)
            if args.fault_people:
                say(
                    f"onboarding under faults: {args.fault_people} people, worker killed "
                    "twice, Temporal restarted once"
                )
                results["faults"] = await onboarding_under_faults(Path(tmp) / "faults", args.fault_people)
    finally:
        smtp.stop()
    results["targets"] = report.targets(results)
    return results


async def run_oidc(args: argparse.Namespace, results: dict[str, Any]) -> dict[str, Any]:
    """The OpenID Connect part alone: one stack, nothing else measured before or beside it;
    on SQLite as `sso dev` runs, then, when SSO_TEST_DATABASE_URL is set, on PostgreSQL (a
    schema of its own), the production database."""
    smtp = SmtpSink()
    smtp.start()
    try:
        with tempfile.TemporaryDirectory(prefix="sso-bench-") as tmp:
            with stack(Path(tmp) / "ours", smtp, OURS) as dev:
                say("OpenID Connect on SQLite: code redemptions, userinfo and refresh grants")
                results["oidc"] = await oidc_rates(dev, args.seconds)
            if POSTGRES_URL:
                with postgres_schema("bench_oidc") as (_schema, url):
                    with stack(Path(tmp) / "postgresql", smtp, OURS, database_url=url) as dev:
                        say("OpenID Connect on PostgreSQL: code redemptions, userinfo and refresh grants")
                        results["oidc_postgresql"] = await oidc_rates(dev, args.seconds, url)
    finally:
        smtp.stop()
    results["targets"] = report.targets(results)
    return results


def say(what: str) -> None:
    print(f"[bench] {time.strftime('%H:%M:%S')} {what}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
