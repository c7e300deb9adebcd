"""Metrics: what the web app counts and times, what the worker's Temporal runtime serves for
flows and emails, and /metrics itself (access, the worker's text appended, nothing personal).

The worker side runs for real: a Temporal runtime serving Prometheus on a free local port (the
one `sso worker` builds), a worker with the real activities polling through a client on that
runtime, this module's own time-skipping server. Web metrics live in one process-wide
registry, so tests compare values before and after.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
import pytest_asyncio
from aiosmtpd.controller import Controller
from prometheus_client.parser import text_string_to_metric_families
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.runtime import MetricBuffer, Runtime, TelemetryConfig
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Replayer

from activities.email_delivery import (
    MeteredSender,
    OutboxSender,
    PermanentEmailError,
    SendgridSender,
    SmtpSender,
    TransientEmailError,
)
from core import metrics
from core.codec import data_converter, keyring_from_settings
from core.db import create_engine, session_factory
from core.search_attributes import SSO_STAFF_ID
from core.settings import InsecureSettingsError
from tests.support.accounts import sign_in
from tests.support.admin_pages import make_org
from tests.support.config import free_port, make_settings, time_skipping_server
from tests.support.email_servers import (
    FakeSendgrid,
    RecordingHandler,
    closed_port,
    sendgrid_settings,
    smtp_settings,
    welcome,
)
from tests.support.email_servers import SmtpServer as SmtpTestServer
from tests.support.harness import Stack, running_app, running_stack
from tests.support.metrics import assert_nothing_personal, value
from tests.support.setup_pages import Browser, another_code, at_code_step, redirected_to
from worker import metrics_runtime
from workflows.common import EmailRetry
from workflows.entra import EntraLinkInput
from workflows.reset import PasswordResetInput
from workflows.setup import SetupOutcome, SsoSetupWorkflow

# Async tests share the session loop, like the rest of the suite.
session_loop = pytest.mark.asyncio(loop_scope="session")

GUARD_SECONDS = 30  # real-time guard for polling; never an assertion about durations


# -- reading Prometheus text --------------------------------------------------------------


def grew(before: str, after: str, sample: str, **labels: str) -> float:
    return value(after, sample, **labels) - value(before, sample, **labels)


def web(sample: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(sample, labels) or 0.0


# -- the worker's runtime ------------------------------------------------------------------


@dataclass
class WorkerMetrics:
    runtime: Runtime
    url: str

    async def text(self) -> str:
        async with httpx.AsyncClient(trust_env=False) as http:
            response = await http.get(self.url)
        assert response.status_code == 200
        return response.text


@pytest.fixture(scope="module")
def worker_metrics() -> WorkerMetrics:
    address = f"127.0.0.1:{free_port()}"
    runtime = metrics_runtime(address)
    assert runtime is not None
    return WorkerMetrics(runtime, f"http://{address}/metrics")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    """This module's own server: its tests skip time, and flows of other modules must not
    hold it back (see tests/setup/test_workflow.py)."""
    async with time_skipping_server() as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def worker_client(env: WorkflowEnvironment, worker_metrics: WorkerMetrics) -> Client:
    """What `sso worker` connects with: our data converter, the metrics runtime."""
    return await Client.connect(
        env.client.service_client.config.target_host,
        namespace=env.client.namespace,
        data_converter=data_converter(make_settings()),
        runtime=worker_metrics.runtime,
    )


@pytest_asyncio.fixture(loop_scope="session")
async def stack(
    env: WorkflowEnvironment, worker_client: Client, worker_metrics: WorkerMetrics, sqlite_url: str
) -> AsyncIterator[Stack]:
    async with running_stack(
        env, sqlite_url, worker_client=worker_client, worker_metrics_url=worker_metrics.url
    ) as running:
        yield running


async def scrape(stack: Stack) -> str:
    response = await stack.http.get("/metrics", headers=stack.admin)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return response.text


# -- flows, steps and emails, through the pages to an active account -----------------------


@session_loop
async def test_setup_to_active_is_counted_on_both_sides(stack: Stack, worker_metrics: WorkerMetrics) -> None:
    before = await scrape(stack)
    steps_before = {
        (step, outcome): web("sso_step_duration_seconds_count", step=step, outcome=outcome)
        for step, outcome in (
            ("set_password", "ok"),
            ("confirm_code", "rejected"),
            ("confirm_code", "ok"),
            ("skip_mfa", "ok"),
        )
    }
    browser = Browser(stack)
    try:
        at = await at_code_step(stack, browser)
        wrong = await browser.submit(at.page, "/sso/setup/confirm", code=another_code(at.code))
        assert wrong.status_code == 400
        right = await browser.submit(wrong, "/sso/setup/confirm", code=at.code)
        assert redirected_to(right, "/sso/setup/mfa"), right.text
        mfa = await browser.get("/sso/setup/mfa")
        assert redirected_to(await browser.submit(mfa, "/sso/setup/mfa/skip"), "/sso/setup/done")
    finally:
        await browser.aclose()
    workflow_id = f"sso-setup-{at.staff['id']}"
    outcome = await stack.env.client.get_workflow_handle(workflow_id, result_type=SetupOutcome).result()
    assert outcome.state == "active"

    # Each page step the web app drove left one latency sample, labelled by its outcome.
    for (step, result), count in steps_before.items():
        assert web("sso_step_duration_seconds_count", step=step, outcome=result) == count + 1, (step, result)

    after = await scrape(stack)
    assert value(after, "sso_worker_metrics_up") == 1
    assert any(f.name.startswith("temporal_") for f in text_string_to_metric_families(after))

    assert grew(before, after, "sso_flows_started_total", kind="sso_setup", workflow_type="SsoSetup") == 1
    assert (
        grew(
            before, after, "sso_flows_ended_total", kind="sso_setup", outcome="completed", step="mfa_pending"
        )
        == 1
    )
    for step in ("email_sent", "link_opened", "password_set", "code_sent", "mfa_pending", "active"):
        assert grew(before, after, "sso_flow_steps_total", kind="sso_setup", step=step) == 1, step
    # The welcome email and the code, both delivered through the outbox by the activities.
    assert grew(before, after, "sso_emails_sent_total", backend="outbox") == 2
    assert grew(before, after, "sso_emails_sent_total", activity_type="send_setup_email") == 1
    assert grew(before, after, "sso_emails_sent_total", activity_type="send_code") == 1
    assert grew(before, after, "sso_step_duration_seconds_count", step="set_password", outcome="ok") == 1
    assert_nothing_personal(after, at.staff["id"], at.staff["external_email_1"])

    # The same counters, straight from the worker's own endpoint (what `sso worker` serves).
    own = await worker_metrics.text()
    assert value(own, "sso_flows_ended_total", kind="sso_setup", outcome="completed") >= 1
    assert "sso_step_duration_seconds" not in own  # the web app's, not the worker's

    # Replaying the finished flow records nothing: the workflow meter is replay-safe, and
    # the metric calls added no command (the history replays without a mismatch).
    history = await stack.env.client.get_workflow_handle(workflow_id).fetch_history()
    buffer = MetricBuffer(1000)
    replayer = Replayer(
        workflows=[SsoSetupWorkflow],
        runtime=Runtime(telemetry=TelemetryConfig(metrics=buffer)),
        data_converter=data_converter(stack.settings),
        namespace=stack.env.client.namespace,
    )
    await replayer.replay_workflow(history)
    assert [u.metric.name for u in buffer.retrieve_updates() if u.metric.name.startswith("sso_")] == []


@session_loop
async def test_expired_flows_are_counted_at_the_step_they_ended(
    stack: Stack, worker_metrics: WorkerMetrics
) -> None:
    before = await worker_metrics.text()
    staff = await stack.create_staff()
    sent = await stack.http.post(f"/api/v1/staff/{staff['id']}/sso-email", headers=stack.admin)
    assert sent.status_code == 202
    await stack.wait_for(staff["id"], lambda s: s["state"] == "email_sent")
    client, queue = stack.env.client, stack.settings.task_queue
    someone = str(uuid.uuid4())
    reset = await client.start_workflow(
        "PasswordReset",
        PasswordResetInput(
            account_id=str(uuid.uuid4()), staff_id=someone, email_retry=EmailRetry(), ttl_seconds=3600
        ),
        id=f"password-reset-{uuid.uuid4()}",
        task_queue=queue,
        search_attributes=TypedSearchAttributes([SearchAttributePair(SSO_STAFF_ID, someone)]),
    )
    link = await client.start_workflow(
        "EntraLink",
        EntraLinkInput(staff_id=someone, email_retry=EmailRetry()),
        id=f"entra-link-{someone}",
        task_queue=queue,
    )

    await stack.env.sleep(timedelta(minutes=61))
    async with asyncio.timeout(GUARD_SECONDS):
        setup = await client.get_workflow_handle(
            f"sso-setup-{staff['id']}", result_type=SetupOutcome
        ).result()
        assert setup.state == "expired"
        assert (await reset.result())["state"] == "expired"
        assert await link.result() == 0

    after = await worker_metrics.text()

    ended = "sso_flows_ended_total"
    assert grew(before, after, ended, kind="sso_setup", outcome="expired", step="email_sent") == 1
    assert grew(before, after, ended, kind="password_reset", outcome="expired", step="code_requested") == 1
    assert grew(before, after, ended, kind="entra_link", outcome="expired", step="waiting") == 1
    for kind in ("sso_setup", "password_reset", "entra_link"):
        assert grew(before, after, "sso_flows_started_total", kind=kind) == 1, kind
    assert_nothing_personal(after, staff["id"], staff["external_email_1"], someone)


# -- email deliveries, per backend, against real local servers ----------------------------


async def _deliver(meter: Runtime, sender: MeteredSender) -> Exception | None:
    """One send inside an activity context whose meter is the worker runtime's."""
    activity_env = ActivityEnvironment()
    activity_env.metric_meter = meter.metric_meter
    try:
        await activity_env.run(sender.send, welcome())
    except (TransientEmailError, PermanentEmailError) as exc:
        return exc
    return None


@pytest.fixture
def refusing_smtp() -> Iterator[int]:
    port = free_port()
    controller = Controller(
        RecordingHandler(rcpt_reply="550 5.1.1 no such mailbox"), hostname="127.0.0.1", port=port
    )
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


@session_loop
async def test_smtp_sends_and_failures_are_counted(
    worker_metrics: WorkerMetrics, smtp_server: SmtpTestServer, refusing_smtp: int
) -> None:
    runtime = worker_metrics.runtime
    before = await worker_metrics.text()
    assert await _deliver(runtime, MeteredSender(SmtpSender(smtp_settings(smtp_server.port)))) is None
    assert len(smtp_server.handler.envelopes) == 1
    assert isinstance(
        await _deliver(runtime, MeteredSender(SmtpSender(smtp_settings(closed_port())))), TransientEmailError
    )
    assert isinstance(
        await _deliver(runtime, MeteredSender(SmtpSender(smtp_settings(refusing_smtp)))), PermanentEmailError
    )
    after = await worker_metrics.text()
    assert grew(before, after, "sso_emails_sent_total", backend="smtp") == 1
    for failure in ("transient", "permanent"):
        assert grew(before, after, "sso_email_failures_total", backend="smtp", failure=failure) == 1, failure
    assert_nothing_personal(after, welcome().to)


@session_loop
async def test_sendgrid_and_outbox_sends_and_failures_are_counted(
    worker_metrics: WorkerMetrics, sendgrid_server: FakeSendgrid, sqlite_url: str
) -> None:
    runtime = worker_metrics.runtime
    before = await worker_metrics.text()
    sendgrid = MeteredSender(SendgridSender(sendgrid_settings(sendgrid_server.url)))
    assert await _deliver(runtime, sendgrid) is None
    sendgrid_server.status = 503
    assert isinstance(await _deliver(runtime, sendgrid), TransientEmailError)
    sendgrid_server.status = 400
    assert isinstance(await _deliver(runtime, sendgrid), PermanentEmailError)
    assert len(sendgrid_server.requests) == 3
    engine = create_engine(sqlite_url)
    try:
        outbox = MeteredSender(OutboxSender(session_factory(engine), keyring_from_settings(make_settings())))
        assert await _deliver(runtime, outbox) is None
    finally:
        await engine.dispose()
    after = await worker_metrics.text()

    assert grew(before, after, "sso_emails_sent_total", backend="sendgrid") == 1
    assert grew(before, after, "sso_email_failures_total", backend="sendgrid", failure="transient") == 1
    assert grew(before, after, "sso_email_failures_total", backend="sendgrid", failure="permanent") == 1
    assert grew(before, after, "sso_emails_sent_total", backend="outbox") == 1
    assert grew(before, after, "sso_email_failures_total", backend="outbox") == 0


# -- sign-in outcomes, counted in the web app ---------------------------------------------


@session_loop
async def test_sign_in_outcomes_are_counted(sqlite_url: str) -> None:
    def outcome(name: str, reason: str = "none") -> float:
        return web("sso_sign_ins_total", outcome=name, reason=reason)

    expected = {
        ("signed_in", "none"): 1,
        ("refused", "wrong_password"): 1,
        ("refused", "unknown_account"): 1,
        ("needs_totp", "none"): 1,
        ("totp_refused", "wrong"): 1,
        ("totp_signed_in", "none"): 1,
    }
    before = {key: outcome(*key) for key in expected}
    async with running_app(sqlite_url) as app:
        person = await app.person()
        with_mfa = await app.person(mfa=True)
        browser = app.browser()
        try:
            assert redirected_to(await sign_in(browser, person.email), "/sso/account")
            assert (await sign_in(browser, person.email, "Not-The-Password-At-All-1")).status_code == 401
            assert (await sign_in(browser, f"nobody.{uuid.uuid4().hex[:6]}@example.com")).status_code == 401
            assert redirected_to(await sign_in(browser, with_mfa.email), "/sso/login/mfa")
            page = await browser.get("/sso/login/mfa")
            wrong = await browser.submit(page, "/sso/login/mfa", code=with_mfa.wrong_totp())
            assert wrong.status_code == 401
            right = await browser.submit(wrong, "/sso/login/mfa", code=with_mfa.totp_now())
            assert redirected_to(right, "/sso/account"), right.text
        finally:
            await browser.aclose()
        text = (await app.http.get("/metrics", headers=app.admin)).text
    for key, count in expected.items():
        assert outcome(*key) == before[key] + count, key
    assert value(text, "sso_sign_ins_total", outcome="signed_in", reason="none") >= 1
    assert_nothing_personal(text, person.email, with_mfa.email, str(person.staff_id), str(with_mfa.staff_id))


@session_loop
async def test_throttled_sign_ins_are_counted(sqlite_url: str) -> None:
    before = web("sso_sign_ins_total", outcome="throttled", reason="none")
    async with running_app(sqlite_url, signin_ip_limit=1) as app:
        person = await app.person()
        browser = app.browser()
        try:
            assert (await sign_in(browser, person.email, "Not-The-Password-At-All-1")).status_code == 401
            assert (await sign_in(browser, person.email)).status_code == 429
        finally:
            await browser.aclose()
    assert web("sso_sign_ins_total", outcome="throttled", reason="none") == before + 1


def test_label_values_outside_the_vocabulary_become_other() -> None:
    assert metrics.label("wrong_password") == "wrong_password"
    assert metrics.label(None) == "none"
    for personal in ("jo.bloggs@example.com", str(uuid.uuid4()), "Jo Bloggs", "x" * 41):
        assert metrics.label(personal) == "other"


# -- /metrics: who may read it, and the worker's part -------------------------------------


@session_loop
async def test_metrics_need_a_token_or_an_admin_key_outside_development(sqlite_url: str) -> None:
    token = "metrics-token-" + "m" * 32
    async with running_app(sqlite_url, metrics_token=token, auth_failure_limit=3) as app:
        anonymous = await app.http.get("/metrics")
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"] == "Bearer"
        assert (await app.http.get("/metrics", headers={"Authorization": "Bearer nope"})).status_code == 401
        for headers in (app.admin, {"Authorization": f"Bearer {token}"}):
            answer = await app.http.get("/metrics", headers=headers)
            assert answer.status_code == 200, answer.text
            families = {f.name for f in text_string_to_metric_families(answer.text)}
            assert {"sso_sign_ins", "sso_step_duration_seconds"} <= families
            assert "sso_worker_metrics_up" not in answer.text  # no worker URL configured
        # Guessing tokens is limited like guessing admin keys: the fourth failure is refused.
        assert [(await app.http.get("/metrics")).status_code for _ in range(2)] == [401, 429]


@session_loop
async def test_an_organisations_admin_key_cannot_read_the_deployments_metrics(sqlite_url: str) -> None:
    """The counts cover every agency (and name them under SSO_METRICS_ORG_LABELS): an
    organisation's key is refused with a 403 that names no other organisation."""
    async with running_app(sqlite_url) as app:
        _org_id, org_key = await make_org(app, "harbour")
        refused = await app.http.get("/metrics", headers=org_key)
        assert refused.status_code == 403, refused.text
        assert "operator key" in refused.text
        assert "sso_sign_ins" not in refused.text
        assert (await app.http.get("/metrics", headers=app.admin)).status_code == 200


@session_loop
async def test_metrics_are_open_only_to_a_development_machine_itself(sqlite_url: str) -> None:
    async with running_app(sqlite_url, env="development") as app:
        local = await app.http.get("/metrics")  # the in-process client is 127.0.0.1
        assert local.status_code == 200
        app_asgi = app.transport.app  # type: ignore[attr-defined]
        remote = httpx.ASGITransport(app=app_asgi, client=("203.0.113.7", 40000))
        async with httpx.AsyncClient(transport=remote, base_url="https://sso.example.test") as http:
            assert (await http.get("/metrics")).status_code == 401
            assert (await http.get("/metrics", headers=app.admin)).status_code == 200


def test_metrics_token_is_refused_when_weak_outside_development() -> None:
    with pytest.raises(InsecureSettingsError, match="SSO_METRICS_TOKEN"):
        make_settings(metrics_token="short")
    make_settings(metrics_token="t" * 40)


@session_loop
async def test_metrics_answer_when_the_worker_cannot_be_read(sqlite_url: str) -> None:
    silent = socket.socket()  # accepts connections, never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    try:
        for url in (
            f"http://127.0.0.1:{closed_port()}/metrics",
            f"http://127.0.0.1:{silent.getsockname()[1]}/metrics",
        ):
            async with running_app(sqlite_url, worker_metrics_url=url) as app:
                answer = await app.http.get("/metrics", headers=app.admin)
            assert answer.status_code == 200
            assert value(answer.text, "sso_worker_metrics_up") == 0
            assert "temporal_" not in answer.text
            assert {"sso_sign_ins", "sso_worker_metrics_up"} <= {
                f.name for f in text_string_to_metric_families(answer.text)
            }
    finally:
        silent.close()


@session_loop
async def test_worker_runtime_metrics_are_appended(
    sqlite_url: str, worker_metrics: WorkerMetrics, stack: Stack
) -> None:
    """`stack` runs a worker on the metrics runtime, so the runtime has temporal_ series of
    its own whatever ran before."""
    async with running_app(sqlite_url, worker_metrics_url=worker_metrics.url) as app:
        answer = await app.http.get("/metrics", headers=app.admin)
    assert answer.status_code == 200
    names = [f.name for f in text_string_to_metric_families(answer.text)]
    assert len(names) == len(set(names)), "a family appears twice"
    assert value(answer.text, "sso_worker_metrics_up") == 1
    assert any(name.startswith("temporal_") for name in names)
    assert_nothing_personal(answer.text)


def test_a_worker_metrics_address_in_use_is_a_clear_configuration_error() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(InsecureSettingsError, match="SSO_WORKER_METRICS_ADDRESS"):
            metrics_runtime(address)
    finally:
        taken.close()
    assert metrics_runtime("") is None
