"""The real stack as processes, and a local SMTP sink: `RealStack` (where a running stack
answers), `DevStack` (`python -m cli dev`, as a developer runs it; the end-to-end and browser
tests) and the environment every real stack gets. tests/support/faults.py runs the same
stack one process per piece, so a test can break and mend each.

Nothing here is pytest-specific; the fixtures live in the conftests.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from core.devstack import port_open
from tests.support.config import TEST_ENCRYPTION_KEY, TEST_SECRET_KEY, free_port, free_ports

ROOT = Path(__file__).resolve().parents[2]
ADMIN_KEY = re.compile(r"\bssoak_[A-Za-z0-9_\-]+")


# --------------------------------------------------------------------------- SMTP sink


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        self._sink._arriving(list(envelope.rcpt_tos))
        while self._sink._holding(envelope.rcpt_tos):  # a slow server: the sender waits
            await asyncio.sleep(0.05)
        self._sink._received(bytes(envelope.content), list(envelope.rcpt_tos))
        return "250 Message accepted for delivery"


@dataclass
class ReceivedEmail:
    rcpt_tos: list[str]
    raw: bytes
    message: EmailMessage


class SmtpSink:
    """An aiosmtpd server on 127.0.0.1 that keeps every message; can be stopped and restarted
    on the same port to simulate an SMTP outage."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or free_port(host)
        self._lock = threading.Lock()
        self._messages: list[ReceivedEmail] = []
        self._arrivals: list[list[str]] = []
        self._held = threading.Event()
        self._held_for: set[str] | None = None  # None: every recipient
        self._controller: Controller | None = None

    def hold(self, only: Iterable[str] | None = None) -> None:
        """Keep every message's DATA unanswered (the sender blocks) until release(); with
        `only`, just the messages to those addresses."""
        with self._lock:
            self._held_for = set(only) if only is not None else None
        self._held.set()

    def release(self, only: Iterable[str] | None = None) -> None:
        """Answer the held messages: all of them, or (`only`) those to these addresses."""
        with self._lock:
            if only is not None and self._held_for is not None:
                self._held_for -= set(only)
                if self._held_for:
                    return
            self._held_for = None
        self._held.clear()

    def _holding(self, rcpt_tos: list[str]) -> bool:
        with self._lock:
            return self._held.is_set() and (self._held_for is None or bool(self._held_for & set(rcpt_tos)))

    def _arriving(self, rcpt_tos: list[str]) -> None:
        with self._lock:
            self._arrivals.append(rcpt_tos)

    @property
    def arrivals(self) -> list[list[str]]:
        """Recipients of every DATA started, answered or still held."""
        with self._lock:
            return list(self._arrivals)

    def _received(self, raw: bytes, rcpt_tos: list[str]) -> None:
        message = email.message_from_bytes(raw, policy=email.policy.default)
        with self._lock:
            self._messages.append(ReceivedEmail(rcpt_tos, raw, message))  # type: ignore[arg-type]

    @property
    def messages(self) -> list[ReceivedEmail]:
        with self._lock:
            return list(self._messages)

    @property
    def running(self) -> bool:
        return self._controller is not None

    def start(self, timeout: float = 15.0) -> None:
        if self._controller is not None:
            return
        deadline = time.monotonic() + timeout
        while True:
            controller = Controller(_Handler(self), hostname=self.host, port=self.port, ready_timeout=10)
            try:
                controller.start()
            except (OSError, RuntimeError):
                # The port can take a moment to be free again after a stop.
                with contextlib.suppress(Exception):
                    controller.stop()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
                continue
            self._controller = controller
            return

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
        # Make sure nothing answers any more: the next delivery attempt must be refused.
        deadline = time.monotonic() + 10
        while port_open(self.port, self.host):
            if time.monotonic() > deadline:
                raise RuntimeError(f"SMTP port {self.port} still answers after stop")
            time.sleep(0.1)


@contextlib.contextmanager
def smtp_sink() -> Iterator[SmtpSink]:
    """A started SmtpSink, stopped on the way out (whatever the test left it holding, and
    unless the test left it stopped)."""
    sink = SmtpSink()
    sink.start()
    try:
        yield sink
    finally:
        sink.release()
        if sink.running:
            sink.stop()


# --------------------------------------------------------------------------- processes


def _proc_stat(pid: int) -> tuple[int, str, int] | None:
    """(ppid, state, start time) of a process, from /proc; None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    rest = text[text.rindex(")") + 2 :].split()
    return int(rest[1]), rest[0], int(rest[19])


def descendants(pid: int) -> dict[int, int]:
    """All live descendants of pid, as {pid: start time} (start time guards against reuse)."""
    try:
        import psutil  # type: ignore[import-not-found]
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            return {p.pid: int(p.create_time() * 100) for p in psutil.Process(pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            return {}
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _proc_stat(int(entry))
        if stat is None:
            continue
        children.setdefault(stat[0], []).append(int(entry))
        starts[int(entry)] = stat[2]
    found: dict[int, int] = {}
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found[child] = starts[child]
                todo.append(child)
    return found


def alive(pid: int, start: int) -> bool:
    try:
        import psutil  # type: ignore[import-not-found]
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            proc = psutil.Process(pid)
            return int(proc.create_time() * 100) == start and proc.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False
    stat = _proc_stat(pid)
    return stat is not None and stat[2] == start and stat[1] != "Z"


def describe_pid(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return "?"


def stack_env(port: int, smtp_port: int | None, **settings: str) -> dict[str, str]:
    """The environment of a real stack whose web app listens on `port`: this process's
    environment without its SSO_* settings, development mode with the test keys, and mail to
    the test's SMTP sink (`smtp_port`; None: the backend's default) retried after 1 s then
    every 2 s; `settings` (SSO_* names) add to it or override it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSO_")}
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "SSO_ENV": "development",
            "SSO_EMAIL_RETRY_INITIAL_INTERVAL": "1",
            "SSO_EMAIL_RETRY_MAX_INTERVAL": "2",
            "SSO_SECRET_KEY": TEST_SECRET_KEY,
            "SSO_ENCRYPTION_KEYS": TEST_ENCRYPTION_KEY,
            "SSO_PUBLIC_URL": f"http://127.0.0.1:{port}",
        }
    )
    if smtp_port is not None:
        env.update(
            {"SSO_EMAIL_BACKEND": "smtp", "SSO_SMTP_HOST": "127.0.0.1", "SSO_SMTP_PORT": str(smtp_port)}
        )
    env.update(settings)
    return env


@dataclass
class RealStack:
    """Where a running real stack answers: its web app (`port`), Temporal and its UI, and
    the directory holding its data and logs."""

    data_dir: Path
    port: int
    temporal_port: int
    ui_port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def temporal_address(self) -> str:
        return f"127.0.0.1:{self.temporal_port}"


@dataclass
class DevStack(RealStack):
    """`python -m cli dev` in a subprocess, its output drained into memory by a thread."""

    process: subprocess.Popen[bytes]
    entra_port: int = 0
    admin_key: str = ""
    host: str = "127.0.0.1"
    _lines: list[str] = field(default_factory=list)
    # Reentrant: _wait_for_key holds it while it reports output() in its error messages.
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _changed: threading.Condition = field(init=False)
    _reader: threading.Thread | None = None

    def __post_init__(self) -> None:
        self._changed = threading.Condition(self._lock)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def entra_url(self) -> str:
        """The local Microsoft Entra stand-in (oidc-provider-mock) that `sso dev` runs."""
        return f"http://127.0.0.1:{self.entra_port}"

    @classmethod
    def start(
        cls,
        data_dir: Path,
        env: Mapping[str, str],
        *,
        port: int,
        temporal_port: int,
        ui_port: int,
        entra_port: int,
        worker_metrics_port: int | None = None,
        timeout: float = 90.0,
        sso: Sequence[str] = (sys.executable, "-m", "cli"),
        cwd: Path = ROOT,
    ) -> DevStack:
        """`sso` is how the command is run (default `python -m cli` in the repo: this
        checkout's code), `cwd` where. The worker's metrics port comes from this test process's
        block too: left to `sso dev`, an ephemeral port it found free could be taken by another
        process before the worker binds it (seen on a second `sso dev` run)."""
        command = [
            *sso,
            "dev",
            "--port",
            str(port),
            "--temporal-port",
            str(temporal_port),
            "--ui-port",
            str(ui_port),
            "--entra-port",
            str(entra_port),
            "--worker-metrics-port",
            str(worker_metrics_port or free_port()),
            "--data-dir",
            str(data_dir),
        ]
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        stack = cls(
            process=process,
            port=port,
            temporal_port=temporal_port,
            ui_port=ui_port,
            data_dir=data_dir,
            entra_port=entra_port,
        )
        stack._reader = threading.Thread(target=stack._drain, name="sso-dev-output", daemon=True)
        stack._reader.start()
        try:
            stack.admin_key = stack._wait_for_key(timeout)
        except BaseException:
            stack.stop(timeout=20)
            raise
        return stack

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for raw in iter(self.process.stdout.readline, b""):
            with self._changed:
                self._lines.append(raw.decode("utf-8", "replace"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def _wait_for_key(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in self._lines[seen:]:
                    match = ADMIN_KEY.search(line)
                    if match:
                        return match.group(0)
                seen = len(self._lines)
                if self.process.poll() is not None and not (self._reader and self._reader.is_alive()):
                    raise RuntimeError(
                        f"sso dev exited with {self.process.returncode} before printing the "
                        f"admin key; output:\n{self.output()}"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"no admin key from sso dev after {timeout:.0f} s; output:\n{self.output()}"
                    )
                self._changed.wait(min(left, 0.5))

    def output(self) -> str:
        with self._lock:
            return "".join(self._lines)

    def wait_for_output(self, predicate: Callable[[str], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.output()):
                return True
            time.sleep(0.2)
        return predicate(self.output())

    def stop(self, timeout: float = 20.0) -> StopReport:
        """Ctrl-C, as a user would; kill after `timeout`. Reports what was left running."""
        children = descendants(self.process.pid) if self.process.poll() is None else {}
        report = StopReport(children={pid: describe_pid(pid) for pid in children})
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                report.needed_kill = True
                self.process.kill()
                self.process.wait(timeout=10)
        report.returncode = self.process.returncode
        # Children have a moment to finish dying; after that, whatever lives is a leak.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            left = {pid for pid, start in children.items() if alive(pid, start)}
            if not left:
                break
            time.sleep(0.2)
        for pid, start in children.items():
            if alive(pid, start):
                report.left_running[pid] = report.children.get(pid, "?")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        report.open_ports = [
            p for p in (self.port, self.temporal_port, self.ui_port, self.entra_port) if p and port_open(p)
        ]
        if self._reader is not None:
            self._reader.join(timeout=5)
        return report


@dataclass
class StopReport:
    children: dict[int, str]
    returncode: int | None = None
    needed_kill: bool = False
    left_running: dict[int, str] = field(default_factory=dict)
    open_ports: list[int] = field(default_factory=list)


@contextlib.contextmanager
def running_sso_api(env: Mapping[str, str], port: int | None = None) -> Iterator[tuple[str, list[str]]]:
    """`sso api` in a process of its own, with these SSO_* settings and no others from
    outside (Temporal: a port nobody answers on, unless given), on `port` (default: a free
    one); yields its base URL and a list that holds its output lines once it has stopped."""
    port = port or free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SSO_")}
    environment.update({"SSO_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}", "SSO_LOG_LEVEL": "INFO", **env})
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", "api", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while not port_open(port):
            assert process.poll() is None, process.stdout.read().decode()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "sso api did not start"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", lines
    finally:
        process.send_signal(signal.SIGINT)
        try:
            output = process.communicate(timeout=20)[0].decode()
        except subprocess.TimeoutExpired:
            process.kill()
            output = process.communicate()[0].decode()
        lines.extend(output.splitlines())


@contextlib.contextmanager
def running_sso_dev(
    data_dir: Path,
    smtp_port: int,
    extra_env: Mapping[str, str] | None = None,
    public_host: str = "127.0.0.1",
    **start: Any,
) -> Iterator[DevStack]:
    """`sso dev` as a user runs it, mailing through the test's SMTP server; on the way out,
    proves that Ctrl-C stopped it and every process it started. `extra_env` adds or overrides
    settings (for example a short `SSO_SETUP_LINK_TTL`); `public_host` is the host of its public
    URL (passkeys need a name: WebAuthn refuses an IP address as relying party id)."""
    port, temporal_port, ui_port, entra_port = free_ports(4)
    env = stack_env(port, smtp_port, SSO_PUBLIC_URL=f"http://{public_host}:{port}", **(extra_env or {}))
    dev = DevStack.start(
        data_dir,
        env,
        port=port,
        temporal_port=temporal_port,
        ui_port=ui_port,
        entra_port=entra_port,
        timeout=90,
        **start,
    )
    dev.host = public_host
    try:
        yield dev
    finally:
        report = dev.stop(timeout=20)
        # Kept with pytest's temporary directories for whoever debugs a failure.
        (data_dir / "sso-dev-output.log").write_text(dev.output())
        (data_dir / "stop-report.txt").write_text(repr(report))
        problems = []
        if report.needed_kill:
            problems.append("sso dev did not stop within 20 s of Ctrl-C and was killed")
        if report.left_running:
            problems.append(f"processes left running after sso dev stopped: {report.left_running}")
        if report.returncode != 0 and not report.needed_kill:
            problems.append(f"sso dev exited with {report.returncode} after Ctrl-C")
        if report.open_ports:
            problems.append(f"ports still answering after sso dev stopped: {report.open_ports}")
        if len(report.children) < 4:
            problems.append(
                f"expected temporal, the Entra stand-in, worker and api as children "
                f"of sso dev, saw {report.children}"
            )
        assert not problems, "; ".join(problems) + "\n--- output ---\n" + dev.output()[-5000:]
