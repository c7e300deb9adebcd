"""The fault-test harness: the real stack as separate processes a test can break and mend.

`sso dev` stops everything when any child dies, so these tests run the pieces themselves:
Temporal's dev server on a SQLite file (`core.devstack.temporal_cli()`), the worker (`python -m cli
worker`) and the web app (`python -m cli api`), each a subprocess that can be killed, stopped
and started again, plus an SMTP sink that can refuse connections or hold a message half
delivered, and TCP proxies that can pause or cut a connection (worker to Temporal, everything
to PostgreSQL).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import text
from sqlalchemy.engine import Engine
from temporalio.api.enums.v1 import PendingActivityState, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflow.v1 import PendingActivityInfo
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from core.codec import data_converter
from core.devstack import api_command, temporal_cli, temporal_command, worker_command
from core.settings import to_sync_url
from tests.support.config import TEST_SEAL_PRIVATE_KEY, TEST_SEAL_PUBLIC_KEY, _migrate, make_settings
from tests.support.stack import ROOT, RealStack, SmtpSink, free_ports, port_open, stack_env

ADMIN_KEY = "ssoak_faults_" + "k" * 40
NAMESPACE = "default"
TASK_QUEUE = "sso"
START_TIMEOUT = 90.0  # seconds for a process to come up on a busy 2-core machine


# --------------------------------------------------------------------------- TCP proxy


class TcpProxy:
    """A TCP forwarder on 127.0.0.1 run by an asyncio loop in a thread of its own.

    pause(): keep every connection open but pass no bytes (a stalled network);
    resume(): pass them again. cut(): drop every connection and refuse new ones (the far end
    is unreachable); restore(): accept again. reset(): drop every connection, keep listening.
    """

    def __init__(self, target_port: int, port: int | None = None, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = port or free_ports(1)[0]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._open: asyncio.Event | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections = 0

    # -- control, from any thread -------------------------------------------------------

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._init())
        self.restore()
        return self

    def pause(self) -> None:
        self._call(self._set_open(False))

    def resume(self) -> None:
        self._call(self._set_open(True))

    def reset(self) -> None:
        self._call(self._drop_all())

    def cut(self) -> None:
        self._call(self._cut())

    def restore(self) -> None:
        self._call(self._listen())
        self.resume()

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._call(self._cut())
            self._call(self._cancel_all())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    # -- on the proxy's loop -------------------------------------------------------------

    async def _init(self) -> None:
        self._open = asyncio.Event()
        self._open.set()

    async def _set_open(self, value: bool) -> None:
        assert self._open is not None
        if value:
            self._open.set()
        else:
            self._open.clear()

    async def _listen(self) -> None:
        if self._server is not None:
            return
        deadline = time.monotonic() + 15
        while True:
            try:
                self._server = await asyncio.start_server(
                    self._serve, "127.0.0.1", self.port, reuse_address=True
                )
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        await self._drop_all()

    async def _cancel_all(self) -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _drop_all(self) -> None:
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.transport.abort()  # an RST, as a lost network or a dead peer gives
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        self._writers |= {writer, up_writer}
        pumps = [
            asyncio.ensure_future(self._pump(reader, up_writer)),
            asyncio.ensure_future(self._pump(up_reader, writer)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            pass  # the proxy is closing
        finally:
            for pump in pumps:
                pump.cancel()
            for end in (writer, up_writer):
                self._writers.discard(end)
                with contextlib.suppress(Exception):
                    end.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._open is not None
        while True:
            data = await reader.read(65536)
            if not data:
                return
            await self._open.wait()
            if writer.transport.is_closing():
                return
            writer.write(data)
            await writer.drain()


# --------------------------------------------------------------------------- processes


@dataclass
class Proc:
    """One child process that can be started again after it was stopped or killed."""

    name: str
    command: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    _log: IO[bytes] | None = None

    def start(self) -> None:
        assert not self.running, f"{self.name} is already running"
        self.starts += 1
        self._log = self.log_path.open("ab")
        self._log.write(f"\n===== start #{self.starts} of {self.name} =====\n".encode())
        self._log.flush()
        self.process = subprocess.Popen(
            self.command,
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as a crash or an OOM kill."""
        assert self.process is not None and self.running, f"{self.name} is not running"
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self._close_log()

    def terminate(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, as a deploy or `systemctl stop` would; SIGKILL after `timeout`."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGCONT)  # in case a test paused it
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._close_log()
        return self.process.returncode

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""


def _run(make: Callable[[], Any]) -> Any:
    """A coroutine from sync code, on a loop of its own in a thread of its own (the calling
    thread may be running the test's loop); False when it raises."""

    def run() -> Any:
        try:
            return asyncio.run(make())
        except Exception:
            return False

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result(timeout=60)


@dataclass
class FaultStack(RealStack):
    """Temporal dev server, worker and web app as processes of their own, over one data dir.

    The app database is a SQLite file in the data dir, or (database_url) a PostgreSQL schema,
    possibly reached through a TcpProxy the test controls. With `worker_proxy` the worker
    reaches Temporal through a TcpProxy too, so a test can stall just that connection."""

    env: dict[str, str]
    database_url: str  # what the app uses (SQLAlchemy, async driver)
    direct_database_url: str  # what the test reads with (sync driver, no proxy)
    smtp: SmtpSink | None = None
    worker_proxy: TcpProxy | None = None
    # Temporal's SQLite pragmas: its defaults (an fsync per write) unless a test asks for more.
    temporal_pragmas: tuple[str, ...] = ()
    temporal: Proc = field(init=False)
    worker: Proc = field(init=False)
    api: Proc = field(init=False)
    _engine: Engine | None = None
    _clients: dict[int, Client] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # SQLite's defaults (an fsync per write), as these tests have always run it, unless the
        # test asks for other pragmas.
        temporal_cmd = temporal_command(
            self.data_dir,
            self.temporal_port,
            NAMESPACE,
            ui_port=self.ui_port,
            headless=True,
            pragmas=self.temporal_pragmas,
        )
        self.temporal = Proc("temporal", temporal_cmd, dict(self.env), self.data_dir / "temporal.log")
        worker_env = dict(self.env)
        if self.worker_proxy is not None:
            worker_env["SSO_TEMPORAL_ADDRESS"] = f"127.0.0.1:{self.worker_proxy.port}"
        self.worker = Proc(
            "worker", worker_command([sys.executable]), worker_env, self.data_dir / "worker.log"
        )
        self.api = Proc(
            "api",
            api_command("127.0.0.1", self.port, [sys.executable]),
            dict(self.env),
            self.data_dir / "api.log",
        )

    @classmethod
    def create(
        cls,
        data_dir: Path,
        smtp: SmtpSink | None,
        *,
        database_url: str | None = None,
        direct_database_url: str | None = None,
        worker_proxy: bool = False,
        temporal_pragmas: tuple[str, ...] = (),
        **settings: str,
    ) -> FaultStack:
        """A stack (not started yet) on free ports over `data_dir`, mailing to `smtp` (None:
        the default email backend); `settings` are SSO settings by their lower-case names."""
        port, temporal_port, ui_port = free_ports(3)
        url = database_url or f"sqlite+aiosqlite:///{data_dir / 'sso.db'}"
        env = fault_stack_env(
            data_dir,
            port,
            temporal_port,
            smtp.port if smtp is not None else None,
            url,
            **{f"SSO_{k.upper()}": v for k, v in settings.items()},
        )
        return cls(
            data_dir=data_dir,
            port=port,
            temporal_port=temporal_port,
            ui_port=ui_port,
            env=env,
            database_url=url,
            direct_database_url=to_sync_url(direct_database_url or url),
            smtp=smtp,
            worker_proxy=TcpProxy(temporal_port).start() if worker_proxy else None,
            temporal_pragmas=temporal_pragmas,
        )

    @property
    def admin_key(self) -> str:
        return ADMIN_KEY

    # -- the whole stack ------------------------------------------------------------------

    def start(self) -> None:
        _migrate(to_sync_url(self.database_url))
        self.start_temporal()
        self.start_worker()
        self.start_api()

    def stop(self) -> None:
        for proc in (self.api, self.worker, self.temporal):
            proc.terminate(timeout=20)
        if self.worker_proxy is not None:
            self.worker_proxy.close()
        if self._engine is not None:
            self._engine.dispose()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.tail()}" for p in (self.temporal, self.worker, self.api))

    # -- Temporal ---------------------------------------------------------------------------

    def start_temporal(self) -> None:
        self.temporal.start()
        self._wait(lambda: port_open(self.temporal_port), self.temporal, "Temporal's port")
        self._wait(self._temporal_ready, self.temporal, "Temporal to answer")

    def stop_temporal(self) -> None:
        """SIGTERM, and wait until it is gone and its port is closed."""
        code = self.temporal.terminate(timeout=30)
        assert code is not None
        deadline = time.monotonic() + 15
        while port_open(self.temporal_port):
            assert time.monotonic() < deadline, "Temporal's port still open after it stopped"
            time.sleep(0.1)

    def _temporal_ready(self) -> bool:
        command = [
            temporal_cli(),
            "operator",
            "namespace",
            "describe",
            "--address",
            self.temporal_address,
            "-n",
            NAMESPACE,
        ]
        done = subprocess.run(command, capture_output=True, timeout=30, check=False)
        return done.returncode == 0

    # -- worker ---------------------------------------------------------------------------

    def start_worker(self) -> None:
        self.worker.start()
        pid = self.worker.pid
        self._wait(lambda: _run(lambda: self._polling(pid)), self.worker, "the worker to poll its task queue")

    def kill_worker(self) -> None:
        self.worker.kill()

    async def _polling(self, pid: int) -> bool:
        """Whether worker `pid` polls both the workflow and the activity task queue."""
        client = await Client.connect(self.temporal_address, namespace=NAMESPACE)
        kinds = (TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY)
        for kind in kinds:
            answer = await client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=NAMESPACE, task_queue=TaskQueue(name=TASK_QUEUE), task_queue_type=kind
                )
            )
            if not any(p.identity.startswith(f"{pid}@") for p in answer.pollers):
                return False
        return True

    # -- web app --------------------------------------------------------------------------

    def start_api(self) -> None:
        self.api.start()
        self._wait(self._api_answers, self.api, "the web app to answer")

    def stop_api(self) -> None:
        self.api.terminate(timeout=30)
        deadline = time.monotonic() + 15
        while port_open(self.port):
            assert time.monotonic() < deadline, "the web app's port is still open"
            time.sleep(0.1)

    def _api_answers(self) -> bool:
        try:
            return httpx.get(f"{self.base_url}/healthz", timeout=5).status_code in (200, 503)
        except httpx.HTTPError:
            return False

    # -- reading what happened ------------------------------------------------------------

    async def client(self) -> Client:
        """A Temporal client for this test's event loop (straight to Temporal, no proxy)."""
        loop = id(asyncio.get_running_loop())
        if loop not in self._clients:
            self._clients[loop] = await Client.connect(
                self.temporal_address, namespace=NAMESPACE, data_converter=data_converter(make_settings())
            )
        return self._clients[loop]

    async def pending_activities(self, workflow_id: str) -> list[PendingActivityInfo]:
        client = await self.client()
        described = await client.get_workflow_handle(workflow_id).describe()
        return list(described.raw_description.pending_activities)

    async def started(self, workflow_id: str, activity: str) -> PendingActivityInfo | None:
        for pending in await self.pending_activities(workflow_id):
            if (
                pending.activity_type.name == activity
                and pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
            ):
                return pending
        return None

    def query(self, sql: str, **params: Any) -> list[Any]:
        if self._engine is None:
            self._engine = create_sync_engine(self.direct_database_url)
        with self._engine.connect() as conn:
            return list(conn.execute(text(sql), params).all())

    def audit(self, staff_id: str) -> dict[str, int]:
        """How many audit events of each action the staff member has."""
        rows = self.query(
            "SELECT action, count(*) FROM audit_events WHERE target = :t GROUP BY action", t=str(staff_id)
        )
        return {action: count for action, count in rows}

    # -- plumbing -------------------------------------------------------------------------

    # Async tests call these: the processes start in a thread, so the test's own requests
    # (a page waiting for its answer) keep going meanwhile.

    async def restart_worker(self) -> None:
        """Start the worker again (SIGKILL first, if it still runs)."""
        if self.worker.running:
            self.kill_worker()
        if self.worker_proxy is not None:
            self.worker_proxy.reset()
            self.worker_proxy.resume()
        await asyncio.to_thread(self.start_worker)

    async def restart_temporal(self) -> None:
        await asyncio.to_thread(self.start_temporal)

    async def halt_temporal(self) -> None:
        await asyncio.to_thread(self.stop_temporal)

    async def restart_api(self) -> None:
        await asyncio.to_thread(self.stop_api)
        await asyncio.to_thread(self.start_api)

    def _wait(self, ready: Callable[[], bool], proc: Proc, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not ready():
            if not proc.running:
                code = proc.process.returncode if proc.process else "?"
                raise RuntimeError(f"{proc.name} exited with {code} before {what}:\n{proc.tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {what} after {START_TIMEOUT:.0f} s:\n{proc.tail()}")
            time.sleep(0.2)


def fault_stack_env(
    data_dir: Path,
    api_port: int,
    temporal_port: int,
    smtp_port: int | None,
    database_url: str,
    **overrides: str,
) -> dict[str, str]:
    """What every real stack gets (tests/support/stack.py), with the pieces' addresses spelt
    out (no `sso dev` to pass them on), a fixed seal key pair (a restarted worker opens what
    the web app sealed before) and a bootstrap admin key."""
    env = stack_env(
        api_port,
        smtp_port,
        SSO_DATA_DIR=str(data_dir),
        SSO_DATABASE_URL=database_url,
        SSO_TEMPORAL_ADDRESS=f"127.0.0.1:{temporal_port}",
        SSO_SEAL_PUBLIC_KEY=TEST_SEAL_PUBLIC_KEY,
        SSO_SEAL_PRIVATE_KEY=TEST_SEAL_PRIVATE_KEY,
        SSO_BOOTSTRAP_ADMIN_KEY=ADMIN_KEY,
        SSO_LOG_LEVEL="INFO",
        # The worker's metrics default to a fixed port, which a dev run on this machine may hold.
        SSO_WORKER_METRICS_ADDRESS=f"127.0.0.1:{free_ports(1)[0]}",
        # Local servers only: never through a proxy from the environment.
        no_proxy="127.0.0.1,localhost",
        NO_PROXY="127.0.0.1,localhost",
    )
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        env.pop(name, None)
    env.update(overrides)
    return env


StackFactory = Callable[..., FaultStack]
