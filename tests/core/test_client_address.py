"""docs/security.md §33: forwarded client addresses are believed only from SSO_TRUSTED_PROXIES, and
every address is parsed before it is counted or stored (IPv6 limits count the /64).

In-process: the web app behind httpx's ASGI transport, whose `client` is the connection's
peer. Out of process: `sso api` itself, so uvicorn's own proxy-header handling is tested
too (it believed any X-Forwarded-For from loopback)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import select

from core import audit
from core.addresses import canonical, client_address, parse_address, parse_networks, rate_key
from core.models import AuditEvent, RateCounter
from tests.support.accounts import browsing, sign_in
from tests.support.config import make_settings
from tests.support.harness import Stack, running_app
from tests.support.stack import running_sso_api

PROXIES = parse_networks(["10.0.0.0/8", "127.0.0.1"])
GARBAGE = [
    "not-an-ip<script>",
    "1" * 200,
    "203.0.113.9" + "0" * 60,
    "fe80::1%eth0",
    "::ffff:999.1.1.1",
    "[2001:db8::1",
    "203.0.113.9 x",
    "999.1.1.1",
    "[2001:db8::1]<b>",
    "203.0.113.9:http",
    "203.0.113.9:",
]


# -- the rule ----------------------------------------------------------------------------


def test_a_header_from_an_untrusted_peer_is_ignored() -> None:
    for peer in ("198.51.100.20", "2001:db8::20"):
        assert client_address(peer, ["203.0.113.9"], PROXIES) == ip_address(peer)
        assert client_address(peer, ["203.0.113.9"], ()) == ip_address(peer)


def test_from_a_trusted_proxy_the_right_most_untrusted_address_is_the_client() -> None:
    assert client_address("127.0.0.1", ["203.0.113.9"], PROXIES) == ip_address("203.0.113.9")
    # The client wrote 192.0.2.1 itself; 203.0.113.9 is what our first proxy saw.
    assert client_address("10.0.0.2", ["192.0.2.1, 203.0.113.9, 10.1.1.1"], PROXIES) == ip_address(
        "203.0.113.9"
    )
    # Several headers read as one list, in order.
    assert client_address("10.0.0.2", ["192.0.2.1", "203.0.113.9, 10.1.1.1"], PROXIES) == ip_address(
        "203.0.113.9"
    )
    assert client_address("10.0.0.2", ["[2001:db8::7]:443"], PROXIES) == ip_address("2001:db8::7")
    assert client_address("10.0.0.2", ["203.0.113.9:5555"], PROXIES) == ip_address("203.0.113.9")
    assert client_address("10.0.0.2", ["::ffff:203.0.113.9"], PROXIES) == ip_address("203.0.113.9")
    # Only proxies of ours on the way: the first of them. No header: the proxy itself.
    assert client_address("10.0.0.2", ["10.3.3.3, 10.1.1.1"], PROXIES) == ip_address("10.3.3.3")
    assert client_address("10.0.0.2", [], PROXIES) == ip_address("10.0.0.2")


@pytest.mark.parametrize("value", GARBAGE)
def test_what_is_not_an_address_is_never_the_client(value: str) -> None:
    assert canonical(value) is None and parse_address(value) is None
    assert client_address(value, [], PROXIES) is None  # as the connection's peer
    assert client_address("10.0.0.2", [value], PROXIES) is None  # passed on by our proxy
    # Garbage written by the client left of what our proxy saw is never read.
    assert client_address("10.0.0.2", [f"{value}, 203.0.113.9"], PROXIES) == ip_address("203.0.113.9")


def test_rate_keys_group_ipv6_by_its_64() -> None:
    assert rate_key("2001:db8:1:2::1") == rate_key("2001:db8:1:2:ffff:ffff:ffff:ffff") == "2001:db8:1:2::/64"
    assert rate_key("2001:db8:1:3::1") != rate_key("2001:db8:1:2::1")
    assert rate_key("203.0.113.9") == "203.0.113.9"
    assert rate_key("::ffff:203.0.113.9") == "203.0.113.9"
    for value in [*GARBAGE, None, ""]:
        assert rate_key(value) == "unknown"
    assert parse_address("2001:DB8::1") == ip_address("2001:db8::1")


def test_the_setting_takes_addresses_and_ranges_and_refuses_anything_else() -> None:
    settings = make_settings(trusted_proxies="10.0.0.0/8, 127.0.0.1,::1, 2001:db8::/32")
    assert settings.trusted_proxy_networks == (
        ip_network("10.0.0.0/8"),
        ip_network("127.0.0.1/32"),
        ip_network("::1/128"),
        ip_network("2001:db8::/32"),
    )
    assert make_settings().trusted_proxy_networks == ()  # empty by default: no proxy
    with pytest.raises(ValidationError, match=r"'proxy\.internal' is not an IP address"):
        make_settings(trusted_proxies="10.0.0.0/8,proxy.internal")


# -- the web app -------------------------------------------------------------------------


@asynccontextmanager
async def from_peer(app: Stack, peer: str) -> AsyncIterator[Any]:
    """A browser whose connection comes from `peer`."""
    transport = httpx.ASGITransport(app=app.transport.app, client=(peer, 50000))  # type: ignore[attr-defined]
    async with browsing(transport) as browser:
        yield browser


async def failed_ips(app: Stack) -> list[str | None]:
    """The IPs of the failed sign-ins in the audit, sorted (None first)."""
    async with app.sessions() as session:
        ips = (
            await session.scalars(select(AuditEvent.ip).where(AuditEvent.action == "sign_in.failed"))
        ).all()
    return sorted(ips, key=lambda ip: ip or "")


async def rate_keys(app: Stack) -> set[str]:
    async with app.sessions() as session:
        return set((await session.scalars(select(RateCounter.key))).all())


async def test_spoofed_headers_from_an_untrusted_peer_reset_no_limit(sqlite_url: str) -> None:
    async with (
        running_app(sqlite_url, signin_ip_limit=2, trusted_proxies=["10.0.0.0/8"]) as app,
        from_peer(app, "198.51.100.20") as browser,
    ):
        answers = []
        for n in range(3):
            browser.http.headers["X-Forwarded-For"] = f"203.0.113.{n}"
            answers.append((await sign_in(browser, f"nobody{n}@example.com")).status_code)
        assert answers == [401, 401, 429]
        assert await failed_ips(app) == ["198.51.100.20", "198.51.100.20"]
        assert await rate_keys(app) == {"signin-ip:198.51.100.20"}


async def test_a_trusted_proxy_names_the_client(sqlite_url: str) -> None:
    async with running_app(sqlite_url, signin_ip_limit=2, trusted_proxies=["10.0.0.0/8"]) as app:
        async with from_peer(app, "10.0.0.2") as browser:
            # Each client behind the proxy has limits of its own.
            for client in ("203.0.113.7", "203.0.113.8"):
                browser.http.headers["X-Forwarded-For"] = f"192.0.2.66, {client}, 10.9.9.9"
                for _ in range(2):
                    assert (await sign_in(browser, "nobody@example.com")).status_code == 401
                assert (await sign_in(browser, "nobody@example.com")).status_code == 429
        assert await failed_ips(app) == ["203.0.113.7"] * 2 + ["203.0.113.8"] * 2
        assert await rate_keys(app) == {"signin-ip:203.0.113.7", "signin-ip:203.0.113.8"}


@pytest.mark.parametrize("value", GARBAGE[:4])
async def test_garbage_never_reaches_the_audit_or_the_limits(database_url: str, value: str) -> None:
    """On SQLite and PostgreSQL, where audit_events.ip holds at most 64 characters."""
    async with (
        running_app(database_url, trusted_proxies=["10.0.0.0/8"]) as app,
        from_peer(app, "10.0.0.2") as browser,
    ):
        browser.http.headers["X-Forwarded-For"] = value
        assert (await sign_in(browser, "nobody@example.com")).status_code == 401
        assert await failed_ips(app) == [None]
        assert await rate_keys(app) == {"signin-ip:unknown"}
        async with app.sessions() as session:
            actors = (await session.scalars(select(AuditEvent.actor))).all()
        assert all(value not in actor for actor in actors if value), actors


async def test_ipv6_clients_in_one_64_share_a_limit(sqlite_url: str) -> None:
    async with running_app(sqlite_url, signin_ip_limit=2) as app:
        answers = []
        for peer in ("2001:db8:1:2::1", "2001:db8:1:2:ffff::9", "2001:db8:1:2::abcd"):
            async with from_peer(app, peer) as browser:
                answers.append((await sign_in(browser, "nobody@example.com")).status_code)
        assert answers == [401, 401, 429]
        async with from_peer(app, "2001:db8:1:3::1") as browser:  # the next /64
            assert (await sign_in(browser, "nobody@example.com")).status_code == 401
        # The audit keeps each real address; the limits count the network.
        assert await failed_ips(app) == ["2001:db8:1:2::1", "2001:db8:1:2:ffff::9", "2001:db8:1:3::1"]
        assert await rate_keys(app) == {"signin-ip:2001:db8:1:2::/64", "signin-ip:2001:db8:1:3::/64"}


async def test_the_audit_stores_only_addresses(sqlite_url: str) -> None:
    async with running_app(sqlite_url) as app:
        async with app.sessions() as session:
            for ip in ["not-an-ip<script>", "x" * 100, "::ffff:192.0.2.1", "2001:DB8::1"]:
                audit.record(session, actor="system", action="test.ip", outcome="ok", ip=ip)
            await session.commit()
            stored = (
                await session.scalars(select(AuditEvent.ip).where(AuditEvent.action == "test.ip"))
            ).all()
    assert sorted(stored, key=lambda ip: ip or "") == [None, None, "192.0.2.1", "2001:db8::1"]


# -- `sso api`: uvicorn's own handling is off, the access log names the same client ----------


@contextmanager
def sso_api(tmp_path: Path, database_url: str, **env: str) -> Iterator[tuple[str, list[str]]]:
    with running_sso_api(
        {"SSO_ENV": "development", "SSO_DATABASE_URL": database_url, "SSO_DATA_DIR": str(tmp_path), **env}
    ) as running:
        yield running


def access_log(lines: list[str]) -> dict[str, str]:
    found = {}
    for line in lines:
        if line.startswith("{"):
            event = json.loads(line)
            if event["logger"] == "uvicorn.access":
                found[event.get("request_id")] = event["message"]
    return found


def sign_in_from(base: str, forwarded: str, request_id: str) -> int:
    with httpx.Client(base_url=base, trust_env=False, timeout=30) as http:
        page = http.get("/sso/login")
        csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        return http.post(
            "/sso/login",
            data={"csrf": csrf, "email": "nobody@example.com", "password": "Not-The-Right-Password-1"},
            headers={"X-Forwarded-For": forwarded, "X-Request-ID": request_id},
        ).status_code


def audit_ips(database_url: str) -> list[str | None]:
    import sqlite3

    path = database_url.split("///", 1)[1]
    with sqlite3.connect(path) as db:
        return [
            row[0]
            for row in db.execute(
                "SELECT ip FROM audit_events WHERE action = 'sign_in.failed' ORDER BY occurred_at"
            )
        ]


def test_sso_api_ignores_forwarded_headers_by_default(tmp_path: Path, sqlite_url: str) -> None:
    with sso_api(tmp_path, sqlite_url, SSO_SIGNIN_IP_LIMIT="2") as (base, lines):
        answers = [
            sign_in_from(base, forwarded, f"spoof-{n}")
            for n, forwarded in enumerate(["203.0.113.1", "not-an-ip<script>", "203.0.113.3"])
        ]
    assert answers == [401, 401, 429]
    assert audit_ips(sqlite_url) == ["127.0.0.1", "127.0.0.1"]
    log = access_log(lines)
    assert all(log[f"spoof-{n}"].startswith("127.0.0.1:") for n in range(3)), log


def test_sso_api_believes_a_listed_proxy(tmp_path: Path, sqlite_url: str) -> None:
    with sso_api(tmp_path, sqlite_url, SSO_TRUSTED_PROXIES="127.0.0.1") as (base, lines):
        assert sign_in_from(base, "192.0.2.66, 203.0.113.9", "proxied") == 401
        assert sign_in_from(base, "not-an-ip<script>", "garbage") == 401
    assert audit_ips(sqlite_url) == ["203.0.113.9", None]
    log = access_log(lines)
    assert log["proxied"].startswith("203.0.113.9:"), log
    assert "not-an-ip" not in log["garbage"] and "<script>" not in "\n".join(lines)
