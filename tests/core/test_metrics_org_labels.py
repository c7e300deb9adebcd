"""SSO_METRICS_ORG_LABELS: off (the default), no counter has an `org` label; on, the sign-in
counter (web app: password, passkey and Microsoft sign-ins and their refusals), and the flow and
email counters (worker) carry the organisation's slug."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client import generate_latest
from sqlalchemy import update
from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.email_delivery import MeteredSender, SmtpSender
from api.services.entra import EntraStart
from api.services.flows import FlowClient
from core import metrics
from core.codec import data_converter
from core.db import SessionFactory
from core.entra import EntraProvider
from core.errors import ServiceUnavailable
from core.models import Organisation, SsoAccount, Staff, utcnow
from core.templating import Agency
from tests.support.accounts import sign_in
from tests.support.config import free_port, make_settings
from tests.support.email_servers import SmtpServer, smtp_settings, welcome
from tests.support.entra_stub import (
    MicrosoftIsDown,
    MicrosoftSaysYes,
    linked_identity,
    microsoft_callback,
    microsoft_confirm,
)
from tests.support.harness import Stack, running_app, running_stack
from tests.support.metrics import value
from tests.support.orgs import add_org
from tests.support.passkey_key import passwordless, soft_key, store_passkey
from worker import metrics_runtime
from workflows.entra import LinkOutcome

session_loop = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
def labels_restored() -> Iterator[None]:
    """The process's metrics back to the default (off) whatever the test left."""
    yield
    metrics.configure(False)


def _sign_in_labels() -> list[set[str]]:
    """The label names of every sign-in sample the web app's registry holds."""
    return [
        set(sample.labels)
        for family in metrics.REGISTRY.collect()
        if family.name == "sso_sign_ins"
        for sample in family.samples
    ]


async def _harbour(sessions: SessionFactory) -> tuple[uuid.UUID, str]:
    """A new organisation: its id and the slug its label carries."""
    org_id = await add_org(sessions, "Harbour Lettings")
    async with sessions() as db:
        org = await db.get(Organisation, org_id)
        assert org is not None
        return org_id, org.slug


@session_loop
async def test_sign_ins_are_labelled_by_organisation_only_when_asked(
    sqlite_url: str, labels_restored: None
) -> None:
    async with running_app(sqlite_url, metrics_org_labels=True) as stack:
        org_id, slug = await _harbour(stack.sessions)
        person = await stack.person(org_id=org_id)
        assert (await sign_in(stack.browser(), person.email)).status_code == 303
        assert (await sign_in(stack.browser(), "nobody@example.com")).status_code != 303
        text = generate_latest(metrics.REGISTRY).decode()
        assert value(text, "sso_sign_ins_total", outcome="signed_in", org=slug) == 1
        assert value(text, "sso_sign_ins_total", outcome="refused", org="none") == 1
    async with running_app(sqlite_url) as stack:
        person = await stack.person(org_id=org_id)
        assert (await sign_in(stack.browser(), person.email)).status_code == 303
        labels = _sign_in_labels()
        assert labels and all(names == {"outcome", "reason"} for names in labels), labels
        text = generate_latest(metrics.REGISTRY).decode()
        assert value(text, "sso_sign_ins_total", outcome="signed_in") == 1


async def _passkey_refusals(stack: Stack, org_id: object) -> None:
    """A person of `org_id` whose passkey is refused twice: a forged signature for it, then
    the person disabled (the disabled page, once the passkey verified)."""
    person = await stack.person(org_id=org_id)
    key = soft_key(stack.settings, person.staff_id)
    await store_passkey(stack.sessions, person.account_id, key)
    forged = dataclasses.replace(key, private=ec.generate_private_key(ec.SECP256R1()))
    assert (await passwordless(stack.browser(), forged)).status_code == 401
    async with stack.sessions() as db:
        await db.execute(
            update(SsoAccount).where(SsoAccount.id == person.account_id).values(status="disabled")
        )
        await db.commit()
    assert (await passwordless(stack.browser(), key)).status_code == 403


@session_loop
async def test_passkey_refusals_are_labelled_by_organisation_only_when_asked(
    sqlite_url: str, labels_restored: None
) -> None:
    async with running_app(sqlite_url, metrics_org_labels=True) as stack:
        org_id, slug = await _harbour(stack.sessions)
        await _passkey_refusals(stack, org_id)
        text = generate_latest(metrics.REGISTRY).decode()
        assert value(text, "sso_sign_ins_total", outcome="passkey_refused", reason="signin", org=slug) == 1
        assert value(text, "sso_sign_ins_total", outcome="refused", reason="account_disabled", org=slug) == 1
    async with running_app(sqlite_url) as stack:
        await _passkey_refusals(stack, org_id)
        labels = _sign_in_labels()
        assert labels and all(names == {"outcome", "reason"} for names in labels), labels
        text = generate_latest(metrics.REGISTRY).decode()
        assert value(text, "sso_sign_ins_total", outcome="passkey_refused", reason="signin") == 1
        assert value(text, "sso_sign_ins_total", outcome="refused", reason="account_disabled") == 1


class _LinkFlowRefuses:
    """The link flow answering Link: the account is linked to someone else."""

    async def update(self, update: object, request: object) -> LinkOutcome:
        return LinkOutcome(ok=False, reason="linked_elsewhere", message="Linked to someone else.")


async def _microsoft_refusals(stack: Stack, org_id: uuid.UUID, monkeypatch: pytest.MonkeyPatch) -> None:
    """Microsoft refusals around a person of `org_id`: Microsoft down before anyone is known,
    then down during a link started for the person (Temporal down), the link flow refusing
    the person's Link, and the person disabled when their linked account signs in."""
    person = await stack.person(org_id=org_id)
    identity = await linked_identity(stack, person.staff_id, org_id, "Harbour account")
    with pytest.raises(ServiceUnavailable):
        await microsoft_callback(stack, MicrosoftIsDown(stack.settings, identity))

    async def down(*args: object, **kwargs: object) -> None:
        raise ServiceUnavailable("Temporal is down")

    async def refusing(*args: object, **kwargs: object) -> _LinkFlowRefuses:
        return _LinkFlowRefuses()

    monkeypatch.setattr(FlowClient, "update_with_start", down)
    link = EntraStart("link", staff_id=person.staff_id, via="setup_link", link_id="link-1")
    with pytest.raises(ServiceUnavailable):
        await microsoft_callback(stack, MicrosoftSaysYes(stack.settings, identity), link)
    monkeypatch.setattr(FlowClient, "flow", refusing)
    assert (await microsoft_confirm(stack, person.staff_id)).reason == "linked_elsewhere"
    async with stack.sessions() as db:
        await db.execute(update(Staff).where(Staff.id == person.staff_id).values(disabled_at=utcnow()))
        await db.commit()
    assert (await microsoft_callback(stack, MicrosoftSaysYes(stack.settings, identity))).reason == (
        "account_disabled"
    )


@session_loop
async def test_microsoft_refusals_are_labelled_by_organisation_only_when_asked(
    sqlite_url: str, labels_restored: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    refusals = ("unavailable", "linked_elsewhere", "account_disabled")
    async with running_app(sqlite_url, metrics_org_labels=True) as stack:
        org_id, slug = await _harbour(stack.sessions)
        await _microsoft_refusals(stack, org_id, monkeypatch)
        text = generate_latest(metrics.REGISTRY).decode()
        refused = {"outcome": "entra_refused"}
        assert value(text, "sso_sign_ins_total", **refused, reason="unavailable", org="none") == 1
        for reason in refusals:
            assert value(text, "sso_sign_ins_total", **refused, reason=reason, org=slug) == 1, reason
    monkeypatch.undo()
    async with running_app(sqlite_url) as stack:
        await _microsoft_refusals(stack, org_id, monkeypatch)
        labels = _sign_in_labels()
        assert labels and all(names == {"outcome", "reason"} for names in labels), labels
        text = generate_latest(metrics.REGISTRY).decode()
        assert value(text, "sso_sign_ins_total", outcome="entra_refused", reason="unavailable") == 2
        for reason in refusals[1:]:
            assert value(text, "sso_sign_ins_total", outcome="entra_refused", reason=reason) == 1, reason


ENTRA = {
    "entra_tenant_id": "0b1c2d3e-0000-4000-8000-00000000a9e8",
    "entra_client_id": "agentos-sso-labels",
    "entra_client_secret": "a-test-entra-client-secret-that-is-long",
}


async def _password_refused_for_microsoft(
    stack: Stack, org_id: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A person of `org_id` whose linked Microsoft account Graph says is disabled: the right
    password is refused."""
    person = await stack.person(org_id=org_id)
    await linked_identity(stack, person.staff_id, org_id, "Harbour account")

    async def disabled(provider: EntraProvider, object_id: str) -> str:
        return "disabled"

    monkeypatch.setattr(EntraProvider, "account_state", disabled)
    assert (await sign_in(stack.browser(), person.email)).status_code == 403


@session_loop
async def test_a_password_refused_for_a_disabled_microsoft_account_is_labelled_by_organisation(
    sqlite_url: str, labels_restored: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused = {"outcome": "refused", "reason": "entra_account_disabled"}
    async with running_app(sqlite_url, metrics_org_labels=True, **ENTRA) as stack:
        org_id, slug = await _harbour(stack.sessions)
        await _password_refused_for_microsoft(stack, org_id, monkeypatch)
        text = generate_latest(metrics.REGISTRY).decode()
        assert value(text, "sso_sign_ins_total", **refused, org=slug) == 1
        assert value(text, "sso_sign_ins_total", **refused, org="none") == 0
    async with running_app(sqlite_url, **ENTRA) as stack:
        await _password_refused_for_microsoft(stack, org_id, monkeypatch)
        labels = _sign_in_labels()
        assert labels and all(names == {"outcome", "reason"} for names in labels), labels
        assert value(generate_latest(metrics.REGISTRY).decode(), "sso_sign_ins_total", **refused) == 1


async def _scrape(url: str) -> str:
    async with httpx.AsyncClient(trust_env=False) as http:
        return (await http.get(url)).text


@session_loop
async def test_emails_are_labelled_by_organisation_only_when_asked(
    smtp_server: SmtpServer, labels_restored: None
) -> None:
    address = f"127.0.0.1:{free_port()}"
    runtime = metrics_runtime(address)
    assert isinstance(runtime, Runtime)
    activity_env = ActivityEnvironment()
    activity_env.metric_meter = runtime.metric_meter
    sender = MeteredSender(SmtpSender(smtp_settings(smtp_server.port)))
    harbour = welcome(agency=Agency(slug="harbour", name="Harbour Lettings"))
    await activity_env.run(sender.send, harbour)
    text = await _scrape(f"http://{address}/metrics")
    assert 'org="' not in text and value(text, "sso_emails_sent_total", backend="smtp") == 1
    metrics.configure(True)
    await activity_env.run(sender.send, harbour)
    text = await _scrape(f"http://{address}/metrics")
    assert value(text, "sso_emails_sent_total", backend="smtp", org="harbour") == 1


@session_loop
async def test_flows_are_labelled_by_organisation_when_asked(
    temporal_env: WorkflowEnvironment, sqlite_url: str, labels_restored: None
) -> None:
    address = f"127.0.0.1:{free_port()}"
    runtime = metrics_runtime(address)
    assert isinstance(runtime, Runtime)
    worker_client = await Client.connect(
        temporal_env.client.service_client.config.target_host,
        namespace=temporal_env.client.namespace,
        data_converter=data_converter(make_settings()),
        runtime=runtime,
    )
    labelled = {"worker_client": worker_client, "metrics_org_labels": True}
    async with running_stack(temporal_env, sqlite_url, **labelled) as s:
        org_id, slug = await _harbour(s.sessions)
        staff = await s.create_staff(org_id=str(org_id))
        sent = await s.http.post(f"/api/v1/staff/{staff['id']}/sso-email", headers=s.admin)
        assert sent.status_code == 202, sent.text
        await s.wait_for(staff["id"], lambda st: st["state"] == "email_sent")
        text = await _scrape(f"http://{address}/metrics")
        assert value(text, "sso_flows_started_total", kind="sso_setup", org=slug) >= 1, text
        assert value(text, "sso_flow_steps_total", kind="sso_setup", step="email_sent", org=slug) >= 1
        assert value(text, "sso_emails_sent_total", org=slug) >= 1
