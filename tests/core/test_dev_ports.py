"""`sso dev`'s ports: a taken one is named with what it is for and the option that moves it,
and a child counts as ready only when it is the child that listens."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from core.dev_ports import DevPort, check_ports, listener_is, port_free
from core.devstack import Child, wait_until_listening
from tests.support.stack import free_ports


@contextmanager
def listening(port: int) -> Iterator[socket.socket]:
    """Another program's listener: a plain socket, nothing answering behind it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        yield sock


@contextmanager
def child(code: str, log: Path | None = None) -> Iterator[Child]:
    out = log.open("ab") if log else subprocess.DEVNULL
    process = subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=out)
    try:
        yield Child("the test's child", process, log)
    finally:
        process.kill()
        process.wait()


def test_a_taken_port_is_named_with_its_purpose_and_how_to_move_it() -> None:
    web, entra = free_ports(2)
    ports = [
        DevPort(web, "the web app", "--port", "PORT"),
        DevPort(entra, "the Microsoft Entra stand-in", "--entra-port", "ENTRA_PORT"),
    ]
    assert check_ports(ports) == []
    with listening(entra):
        assert not port_free("127.0.0.1", entra)
        [message] = check_ports(ports)
    assert f"port {entra} (the Microsoft Entra stand-in) is already in use" in message
    assert "nothing was started" in message
    assert "`make dev ENTRA_PORT=" in message and "`sso dev --entra-port " in message
    suggested = int(message.split("ENTRA_PORT=")[1].split("`")[0])
    assert suggested not in (web, entra)


def test_one_port_given_twice_is_refused() -> None:
    [port] = free_ports(1)
    [message] = check_ports(
        [
            DevPort(port, "the web app", "--port", "PORT"),
            DevPort(port, "the Temporal UI", "--ui-port", "UI_PORT"),
        ]
    )
    assert "given both to the web app (--port) and to the Temporal UI (--ui-port)" in message


def test_another_programs_listener_does_not_make_a_child_ready() -> None:
    """The child is alive, something answers on its port, but not the child: not ready."""
    [port] = free_ports(1)
    with listening(port), child("import time; time.sleep(60)") as idle:
        assert listener_is(idle.process.pid, port) is False
        with pytest.raises(SystemExit, match=f"the test's child did not listen on 127.0.0.1:{port}"):
            wait_until_listening(idle, "127.0.0.1", port, timeout=1)


def test_a_child_that_listens_is_ready() -> None:
    [port] = free_ports(1)
    code = (
        "import socket, time\n"
        f"s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen()\n"
        "time.sleep(60)\n"
    )
    with child(code) as server:
        wait_until_listening(server, "127.0.0.1", port, timeout=30)
        assert listener_is(server.process.pid, port) is True


def test_a_child_that_dies_is_named_with_the_end_of_its_log(tmp_path: Path) -> None:
    [port] = free_ports(1)
    log = tmp_path / "child.log"
    code = "import sys; print('starting'); print('address already in use', file=sys.stderr); sys.exit(3)"
    with child(code, log) as dying:
        with pytest.raises(SystemExit) as stopped:
            wait_until_listening(dying, "127.0.0.1", port, timeout=30)
    message = str(stopped.value)
    assert message.startswith("sso dev: the test's child stopped (exit code 3).")
    assert f"The last lines of {log}:" in message
    assert "  address already in use" in message
