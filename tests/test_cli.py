"""The `sso` console script, run as a user would, from a directory outside the repo."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, inspect, select

from core.admin_keys import authenticate
from core.db import create_engine as create_async_engine
from core.db import session_factory
from core.models import AdminApiKey
from tests.support.config import (
    TEST_ENCRYPTION_KEY,
    TEST_SEAL_PUBLIC_KEY,
    TEST_SECRET_KEY,
    binary,
    make_settings,
)
from tests.support.stack import (
    ROOT,
    DevStack,
    descendants,
    describe_pid,
    free_ports,
    running_sso_dev,
    smtp_sink,
    stack_env,
)


def run_sso(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SSO_")}
    return subprocess.run(
        [binary("sso"), *args],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = run_sso("--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in ("dev", "worker", "api", "migrate", "admin-key"):
        assert command in result.stdout


def test_migrate_and_admin_key_from_any_directory(tmp_path: Path) -> None:
    db = tmp_path / "data" / "sso.db"
    env = {
        "SSO_ENV": "test",
        "SSO_SECRET_KEY": TEST_SECRET_KEY,
        "SSO_ENCRYPTION_KEYS": TEST_ENCRYPTION_KEY,
        "SSO_DATABASE_URL": f"sqlite:///{db}",
        "SSO_SEAL_PUBLIC_KEY": TEST_SEAL_PUBLIC_KEY,
        "SSO_PUBLIC_URL": "https://sso.example.test",
    }
    migrated = run_sso("migrate", cwd=tmp_path, **env)
    assert migrated.returncode == 0, migrated.stderr
    engine = create_engine(f"sqlite:///{db}")
    assert {
        "staff",
        "sso_accounts",
        "sso_setups",
        "setup_links",
        "admin_api_keys",
        "audit_events",
        "outbox_emails",
    } <= set(inspect(engine).get_table_names())
    engine.dispose()

    created = run_sso("admin-key", "create", "--name", "ops", cwd=tmp_path, **env)
    assert created.returncode == 0, created.stderr
    [key] = [w for w in created.stdout.split() if w.startswith("ssoak_")]
    assert created.stdout.count(key) == 1

    async def check() -> None:
        settings = make_settings(database_url=f"sqlite+aiosqlite:///{db}")
        engine = create_async_engine(settings.async_database_url)
        async with session_factory(engine)() as session:
            assert await authenticate(session, settings, key) == "ops"
            assert await authenticate(session, settings, key + "x") is None
            stored = (await session.scalars(select(AdminApiKey.key_hash))).all()
        await engine.dispose()
        assert stored and key not in "".join(stored)

    asyncio.run(check())


@pytest.mark.parametrize("command", [("api",), ("worker",), ("migrate",)])
def test_refuses_to_start_without_secrets_in_production(tmp_path: Path, command: tuple[str, ...]) -> None:
    result = run_sso(
        *command, cwd=tmp_path, SSO_ENV="production", SSO_DATABASE_URL="postgresql+psycopg://x@127.0.0.1:1/x"
    )
    assert result.returncode == 2
    assert "SSO_SECRET_KEY" in result.stderr and "SSO_ENCRYPTION_KEYS" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [("api",), ("worker",), ("migrate",)])
def test_without_sso_env_the_commands_run_as_production(tmp_path: Path, command: tuple[str, ...]) -> None:
    """Development is asked for (`sso dev` does): without SSO_ENV, `sso api`, `sso worker`
    and `sso migrate` check their settings as production and refuse plain http."""
    result = run_sso(
        *command,
        cwd=tmp_path,
        SSO_SECRET_KEY=TEST_SECRET_KEY,
        SSO_ENCRYPTION_KEYS=TEST_ENCRYPTION_KEY,
        SSO_SEAL_PUBLIC_KEY=TEST_SEAL_PUBLIC_KEY,
        SSO_EMAIL_BACKEND="smtp",
        SSO_DATABASE_URL="postgresql+psycopg://x@127.0.0.1:1/x",
    )
    assert result.returncode == 2, result.stderr
    assert "refusing to start with SSO_ENV=production" in result.stderr
    assert "SSO_PUBLIC_URL must be an https:// address outside development" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / ".data").exists()  # no development secrets, no SQLite file


@pytest.mark.e2e
def test_sso_dev_works_from_any_directory(tmp_path: Path) -> None:
    """The console script, started where another project's `cli.py` and `api/` sit: the
    stack still runs this product (worker, web app, migrations), mails the link through
    SSO_EMAIL_BACKEND=smtp, and Ctrl-C stops every process (checked by running_sso_dev)."""
    elsewhere = tmp_path / "another-project"
    (elsewhere / "api").mkdir(parents=True)
    decoy = 'raise SystemExit("imported from the working directory")\n'
    (elsewhere / "cli.py").write_text(decoy)
    (elsewhere / "api" / "__init__.py").write_text(decoy)
    body = {"first_name": "Jo", "last_name": "Anywhere", "external_email_1": "jo.anywhere@example.com"}
    with (
        smtp_sink() as smtp,
        running_sso_dev(
            tmp_path / "data", smtp.port, {"PYTHONPATH": str(ROOT)}, sso=[binary("sso")], cwd=elsewhere
        ) as dev,
    ):
        with httpx.Client(
            base_url=dev.base_url, timeout=30, headers={"Authorization": f"Bearer {dev.admin_key}"}
        ) as api:
            assert api.get("/healthz").json()["checks"] == {"database": "ok", "temporal": "ok"}
            staff = api.post("/api/v1/staff", json=body)
            assert staff.status_code == 201, staff.text
            staff_id = staff.json()["id"]
            sent = api.post(f"/api/v1/staff/{staff_id}/sso-email")
            assert sent.status_code == 202, sent.text
            deadline = time.monotonic() + 60
            while not smtp.messages and time.monotonic() < deadline:
                time.sleep(0.2)
            [received] = smtp.messages
            assert received.message["Subject"] == "Welcome to agentOS Single Sign-On"
            link = re.search(
                rf"{re.escape(dev.base_url)}/sso/setup/[A-Za-z0-9_-]+",
                received.message.get_body(preferencelist=("plain",)).get_content(),
            )
            assert link is not None
            assert httpx.get(link.group(0), timeout=30).status_code == 200
        assert "imported from the working directory" not in dev.output()
    assert (tmp_path / "data" / "sso.db").exists() and (tmp_path / "data" / "temporal.db").exists()
    assert not (elsewhere / ".data").exists()


# --------------------------------------------------------------------------- sso dev's ports


def _dev_args(ports: dict[str, int], data_dir: Path) -> list[str]:
    return [
        "dev",
        *("--port", str(ports["web"]), "--temporal-port", str(ports["temporal"])),
        *("--ui-port", str(ports["ui"]), "--entra-port", str(ports["entra"])),
        *("--data-dir", str(data_dir)),
    ]


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in command:
                found.append(command)
    return found


HELD = {
    "entra": ("the Microsoft Entra stand-in", "ENTRA_PORT", "--entra-port"),
    "web": ("the web app", "PORT", "--port"),
    "temporal": ("Temporal's frontend", "TEMPORAL_PORT", "--temporal-port"),
    "ui": ("the Temporal UI", "UI_PORT", "--ui-port"),
}


@pytest.mark.parametrize("held", list(HELD))
def test_sso_dev_names_a_taken_port_before_starting_anything(tmp_path: Path, held: str) -> None:
    """Another program listens on one of the ports: one message names the port, what it is
    for and how to move it, and nothing is started or written."""
    ports = dict(zip(HELD, free_ports(4), strict=True))
    data_dir = tmp_path / "data"
    purpose, variable, flag = HELD[held]
    with socket.socket() as other_program:
        other_program.bind(("127.0.0.1", ports[held]))
        other_program.listen()
        result = run_sso(*_dev_args(ports, data_dir), cwd=tmp_path, **stack_env(ports["web"], None))
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        line for line in result.stderr.strip().splitlines() if line.startswith("sso dev: port")
    ], result.stderr
    assert f"sso dev: port {ports[held]} ({purpose}) is already in use by another program" in result.stderr
    assert f"`make dev {variable}=" in result.stderr and f"`sso dev {flag} " in result.stderr
    assert "Traceback" not in result.stderr and "Fatal Python error" not in result.stderr
    assert "is running" not in result.stdout
    assert not data_dir.exists()
    assert not _processes_mentioning(str(data_dir))


@pytest.mark.e2e
def test_sso_dev_starts_on_moved_ports_and_names_a_child_that_dies(tmp_path: Path) -> None:
    """Refused while the Entra stand-in's port is held, then started with it moved; when the
    stand-in dies, sso dev names it with the end of its log and stops the rest, cleanly."""
    ports = dict(zip(HELD, free_ports(4), strict=True))
    data_dir = tmp_path / "data"
    with socket.socket() as other_program:
        other_program.bind(("127.0.0.1", ports["entra"]))
        other_program.listen()
        refused = run_sso(*_dev_args(ports, data_dir), cwd=tmp_path, **stack_env(ports["web"], None))
        assert refused.returncode != 0 and f"port {ports['entra']}" in refused.stderr
        [moved] = free_ports(1)
        dev = DevStack.start(
            data_dir,
            stack_env(ports["web"], None),
            port=ports["web"],
            temporal_port=ports["temporal"],
            ui_port=ports["ui"],
            entra_port=moved,
        )
    try:
        assert httpx.get(f"{dev.base_url}/healthz", timeout=30).status_code == 200
        assert httpx.get(f"{dev.entra_url}/.well-known/openid-configuration", timeout=30).status_code == 200
        [stand_in] = [
            pid for pid in descendants(dev.process.pid) if "core.entra_stand_in" in describe_pid(pid)
        ]
        os.kill(stand_in, signal.SIGKILL)
        assert dev.process.wait(timeout=60) == 1
    finally:
        report = dev.stop()
    output = dev.output()
    assert "sso dev: the Microsoft Entra stand-in stopped (exit code -9)." in output, output[-3000:]
    assert f"The last lines of {data_dir / 'entra-dev.log'}:" in output
    assert "Fatal Python error" not in output and "Traceback" not in output, output[-3000:]
    assert not report.left_running and not report.open_ports, report


def test_commands_that_need_temporal_name_the_address_they_tried(tmp_path: Path) -> None:
    """Temporal not where the settings say: each command names the address it tried and the
    setting that moves it, and changes nothing (no person created without their email)."""
    [port] = free_ports(1)
    env = {
        "SSO_ENV": "development",
        "SSO_DATA_DIR": str(tmp_path / "data"),
        "SSO_TEMPORAL_ADDRESS": f"127.0.0.1:{port}",
    }
    assert run_sso("migrate", cwd=tmp_path, **env).returncode == 0
    for command in (
        ("staff", "create", "--first-name", "Jo", "--last-name", "Far", "--email", "jo.far@example.com"),
        ("staff", "send-email", "jo.far@example.com"),
        ("audit", "boundary"),
    ):
        result = run_sso(*command, cwd=tmp_path, **env)
        assert result.returncode == 1, (command, result.stderr)
        assert result.stderr.startswith(f"sso: could not reach Temporal at 127.0.0.1:{port}"), result.stderr
        assert "Set SSO_TEMPORAL_ADDRESS" in result.stderr and "make dev TEMPORAL_PORT=N" in result.stderr
        assert "We can't complete this right now" not in result.stderr and "Traceback" not in result.stderr
    engine = create_engine(f"sqlite:///{tmp_path / 'data' / 'sso.db'}")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("select count(*) from staff").scalar() == 0
    engine.dispose()
