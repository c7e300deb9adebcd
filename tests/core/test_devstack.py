"""The local stack's launcher (core/devstack.py): one set of commands for `sso dev`, the fault
tests and the benchmark. `sso dev` itself runs in tests/test_cli.py and the end-to-end tests."""

from __future__ import annotations

import os
from pathlib import Path

from core import devstack
from core.search_attributes import ALL as SEARCH_ATTRIBUTES

ROOT = Path(__file__).resolve().parents[2]


def _flags(command: list[str], flag: str) -> list[str]:
    return [command[i + 1] for i, part in enumerate(command) if part == flag]


def test_temporal_runs_with_our_search_attributes_and_sso_devs_pragmas(tmp_path: Path) -> None:
    command = devstack.temporal_command(
        tmp_path, 7233, "default", ui_port=8233, codec_endpoint="http://localhost:8000/codec"
    )
    assert command[1:3] == ["server", "start-dev"]
    assert _flags(command, "--db-filename") == [str(tmp_path / "temporal.db")]
    assert _flags(command, "--ui-codec-endpoint") == ["http://localhost:8000/codec"]
    assert _flags(command, "--sqlite-pragma") == list(devstack.SQLITE_PRAGMAS)
    assert _flags(command, "--search-attribute") == [
        "SsoStep=Keyword",
        "SsoStaffId=Keyword",
        "SsoOrgId=Keyword",
        "SsoMfaStep=Keyword",
        "SsoMfaDue=Datetime",
        "SsoMfaReminders=Int",
        "SsoBatchState=Keyword",
    ]
    assert len(SEARCH_ATTRIBUTES) == 7
    assert "--headless" not in command


def test_the_fault_tests_server_is_headless_with_sqlites_defaults(tmp_path: Path) -> None:
    command = devstack.temporal_command(tmp_path, 7233, "default", ui_port=8233, headless=True, pragmas=())
    assert "--headless" in command and "--sqlite-pragma" not in command
    assert "--ui-codec-endpoint" not in command


def test_children_import_this_product_first() -> None:
    assert (devstack.PRODUCT_ROOT / "cli.py").is_file()
    path = devstack.child_python_path(os.pathsep.join(["/elsewhere", "/more"]))
    assert path.split(os.pathsep) == [str(ROOT), "/elsewhere", "/more"]
    assert devstack.worker_command()[:2] == list(devstack.PYTHON)
    assert "-P" in devstack.api_command("127.0.0.1", 8000)


def test_one_launcher_for_cli_tests_and_bench() -> None:
    """cli.py, the fault tests and the test stacks start no copy of the stack's processes."""
    for name in (
        "cli.py",
        "tests/faults/conftest.py",
        "tests/support/faults.py",
        "tests/support/stack.py",
        "bench/faults.py",
        "bench/__main__.py",
        "bench/load.py",
    ):
        text = (ROOT / name).read_text()
        assert '"start-dev"' not in text, name
        assert '"-m", "cli", "worker"' not in text, name
    assert "Popen" not in (ROOT / "cli.py").read_text()
