"""The ports `sso dev` listens on: checked before anything starts, and a child counted as
ready only when the listener on its port is the child's own.

A port another program holds would otherwise be found out only after the banner, in a
child's log; and a readiness check that only connects is satisfied by whoever answers.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DevPort:
    """A port of the local stack, what it is for and how a developer moves it."""

    port: int
    purpose: str
    flag: str  # `sso dev`'s option
    make_variable: str  # `make dev`'s variable
    host: str = "127.0.0.1"


def port_free(host: str, port: int) -> bool:
    """Whether a server could listen on host:port now. SO_REUSEADDR as servers set it, so a
    port left in TIME_WAIT by the last run counts as free, as it is for them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
        return True


def suggest_free(port: int, host: str, avoid: Iterable[int] = ()) -> int | None:
    """A nearby port that is free now, to put in the message."""
    avoided = set(avoid)
    for candidate in range(port + 1, min(port + 200, 65536)):
        if candidate not in avoided and port_free(host, candidate):
            return candidate
    return None


def taken_message(taken: DevPort, all_ports: Sequence[DevPort]) -> str:
    other = suggest_free(taken.port, taken.host, avoid=[p.port for p in all_ports])
    new = str(other) if other is not None else "<another port>"
    return (
        f"sso dev: port {taken.port} ({taken.purpose}) is already in use by another program; "
        f"nothing was started. Stop that program, or move {taken.purpose} with "
        f"`make dev {taken.make_variable}={new}` (or `sso dev {taken.flag} {new}`)."
    )


def check_ports(ports: Sequence[DevPort]) -> list[str]:
    """One message per port that is taken (or given twice), empty when all are free."""
    problems = []
    seen: dict[int, DevPort] = {}
    for port in ports:
        if port.port in seen:
            first = seen[port.port]
            problems.append(
                f"sso dev: port {port.port} is given both to {first.purpose} ({first.flag}) and to "
                f"{port.purpose} ({port.flag}); give each its own."
            )
            continue
        seen[port.port] = port
        if not port_free(port.host, port.port):
            problems.append(taken_message(port, ports))
    return problems


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on `port`, any address, from the kernel's tables."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(inode)
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    found: set[str] = set()
    try:
        entries = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return found
    for entry in entries:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{entry}")
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[len("socket:[") : -1])
    return found


def listener_is(pid: int, port: int) -> bool | None:
    """Whether the process `pid` itself holds the listener on `port`; None where the system
    cannot tell (no /proc), so the caller falls back to the child being alive."""
    if not Path("/proc/net/tcp").exists():
        return None
    return bool(_listening_inodes(port) & _socket_inodes(pid))
