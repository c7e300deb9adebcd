"""Back-Channel Logout 1.0: the SessionLogout flow (time skipping, stand-in deliveries), the
logout token and the SSRF guard, and a sign-out reaching an app's receiver through the real
worker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import pytest
import pytest_asyncio
from joserfc import jwt
from sqlalchemy import select, update
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.inputs import LogoutFailedInput, SendLogoutInput
from core import flow_errors
from core.models import EntraLink, OidcClient
from core.oidc.backchannel import SessionLogoutInput
from core.oidc.logout import LOGOUT_EVENT, logout_token_claims, logout_uri_refusal
from tests.support.accounts import PUBLIC_URL, Person
from tests.support.harness import Stack, running_stack
from tests.support.oidc import (
    Received,
    authorization,
    code_for,
    keys,
    logout_receiver,
    redeem,
    refresh_refused,
    register,
    signed_in_browser,
    told_sids,
)
from workflows.logout import SessionLogoutWorkflow, logout_workflow_id

ASYNC = pytest.mark.asyncio(loop_scope="session")


@pytest.mark.parametrize(
    ("uri", "addresses", "internal", "development", "refused"),
    [
        ("https://crm.example.test/bcl", ["93.184.216.34"], False, False, False),
        ("http://crm.example.test/bcl", ["93.184.216.34"], False, False, True),  # https only
        ("http://crm.example.test/bcl", ["93.184.216.34"], False, True, False),
        ("https://crm.example.test/bcl", ["127.0.0.1"], False, False, True),
        ("https://crm.example.test/bcl", ["93.184.216.34", "10.0.0.7"], False, False, True),
        ("https://crm.example.test/bcl", ["169.254.169.254"], False, True, True),  # cloud metadata
        ("https://crm.example.test/bcl", ["fe80::1%eth0"], False, False, True),
        ("https://crm.example.test/bcl", ["::1"], False, False, True),
        ("https://crm.example.test/bcl", [], False, False, True),
        ("https://crm.internal/bcl", ["10.0.0.7"], True, False, False),
        ("http://crm.internal/bcl", ["10.0.0.7"], True, False, True),
    ],
)
def test_the_ssrf_guard(
    uri: str, addresses: list[str], internal: bool, development: bool, refused: bool
) -> None:
    assert (logout_uri_refusal(uri, addresses, internal, development) is not None) is refused


def test_a_logout_token_has_events_sid_and_sub_and_no_nonce() -> None:
    claims = logout_token_claims(PUBLIC_URL, "app", "person", "sid-1", "jti-1", 1000)
    assert claims["events"] == {LOGOUT_EVENT: {}} and "nonce" not in claims
    assert (claims["sid"], claims["sub"], claims["aud"], claims["jti"]) == ("sid-1", "person", "app", "jti-1")
    assert claims["exp"] - claims["iat"] == 120


@ASYNC
async def test_each_app_is_retried_with_back_off_and_keeps_its_jti(temporal_env: WorkflowEnvironment) -> None:
    attempts: dict[str, list[SendLogoutInput]] = {}

    @activity.defn(name="send_logout_token")
    async def stand_in(data: SendLogoutInput) -> str:
        attempts.setdefault(data.client_id, []).append(data)
        if data.client_id == "refused":
            raise ApplicationError("private address", non_retryable=True, type=flow_errors.LOGOUT_URI_REFUSED)
        if data.client_id == "down" or (data.client_id == "flaky" and len(attempts["flaky"]) < 3):
            raise ApplicationError("the app answered 503")
        return "delivered"

    reported: list[LogoutFailedInput] = []

    @activity.defn(name="record_logout_failure")
    async def report(data: LogoutFailedInput) -> None:
        reported.append(data)

    task_queue = f"tq-{uuid.uuid4()}"
    async with Worker(
        temporal_env.client,
        task_queue=task_queue,
        workflows=[SessionLogoutWorkflow],
        activities=[stand_in, report],
    ):
        sid = uuid.uuid4().hex
        result = await temporal_env.client.execute_workflow(
            SessionLogoutWorkflow.run,
            SessionLogoutInput(sid, str(uuid.uuid4()), ["ok", "flaky", "refused", "down"]),
            id=logout_workflow_id(sid),
            task_queue=task_queue,
        )
    assert result == {"ok": "delivered", "flaky": "delivered", "refused": "failed", "down": "failed"}
    assert len(attempts["flaky"]) == 3 and len({a.jti for a in attempts["flaky"]}) == 1
    assert len(attempts["refused"]) == 1
    # Back-off up to an hour apart, for a day: about 30 attempts, not thousands.
    assert 20 <= len(attempts["down"]) <= 40
    assert len({a.jti for app in attempts.values() for a in app}) == 4
    # The admin pages hear of the apps given up on, with when the trying began.
    assert sorted(r.client_id for r in reported) == ["down", "refused"]
    assert len({r.since for r in reported}) == 1


@pytest.fixture
def receiver() -> Iterator[tuple[str, Received]]:
    with logout_receiver() as listening:
        yield listening


@pytest_asyncio.fixture(loop_scope="session")
async def dev_stack(temporal_env: WorkflowEnvironment, database_url: str) -> AsyncIterator[Stack]:
    # Development: the receiver listens over plain http (an internal app on loopback).
    async with running_stack(temporal_env, database_url, env="development") as stack:
        yield stack


@pytest.mark.pages
@ASYNC
async def test_signing_out_sends_each_app_a_logout_token(
    dev_stack: Stack, receiver: tuple[str, Received]
) -> None:
    uri, received = receiver
    person = await dev_stack.person()
    app = await register(dev_stack, backchannel_logout_uri=uri, internal=True)
    quiet = await register(dev_stack)  # no back-channel URI: not told
    browser = await signed_in_browser(dev_stack, person.email)
    request = authorization(quiet)
    await redeem(dev_stack, request, await code_for(browser, request))
    request = authorization(app)
    token = await redeem(dev_stack, request, await code_for(browser, request))
    claims = jwt.decode(token["id_token"], await keys(dev_stack.http)).claims
    async with dev_stack.sessions() as session:  # given up on once: a delivery clears it
        await session.execute(
            update(OidcClient)
            .where(OidcClient.client_id == app.client_id)
            .values(backchannel_failing_since=datetime(2026, 12, 1, tzinfo=UTC))
        )
        await session.commit()
    page = await browser.get("/sso/account")
    assert (await browser.submit(page, "/sso/logout")).status_code == 303
    handle = dev_stack.env.client.get_workflow_handle(logout_workflow_id(claims["sid"]))
    assert await asyncio.wait_for(handle.result(), 30) == {app.client_id: "delivered"}
    async with dev_stack.sessions() as session:
        failing = await session.scalar(
            select(OidcClient.backchannel_failing_since).where(OidcClient.client_id == app.client_id)
        )
    assert failing is None
    [sent] = received
    decoded = jwt.decode(sent["logout_token"][0], await keys(dev_stack.http))
    assert decoded.header["typ"] == "logout+jwt"
    logout = decoded.claims
    assert logout["sid"] == claims["sid"] and logout["sub"] == claims["sub"] and "nonce" not in logout
    assert logout["aud"] == app.client_id and logout["iss"] == PUBLIC_URL and logout["jti"]
    assert logout["events"] == {LOGOUT_EVENT: {}}


async def staff_action(stack: Stack, person: Person, action: str) -> None:
    """An admin ending the person's sessions through the admin API."""
    if action == "unlink":
        async with stack.sessions() as session:
            session.add(
                EntraLink(
                    staff_id=person.staff_id,
                    tenant_id=str(uuid.uuid4()),
                    object_id=str(uuid.uuid4()),
                    email=person.email,
                    linked_via="setup_link",
                )
            )
            await session.commit()
        response = await stack.http.delete(f"/api/v1/staff/{person.staff_id}/entra-link", headers=stack.admin)
    else:
        response = await stack.http.post(
            f"/api/v1/staff/{person.staff_id}/sessions/revoke", headers=stack.admin
        )
    assert response.status_code == 200, response.text


@pytest.mark.pages
@pytest.mark.parametrize("action", ["sign-out-everywhere", "unlink"])
@ASYNC
async def test_an_admin_ending_the_sessions_tells_the_apps_and_ends_their_refresh_tokens(
    dev_stack: Stack, receiver: tuple[str, Received], action: str
) -> None:
    uri, received = receiver
    person = await dev_stack.person()
    app = await register(
        dev_stack,
        backchannel_logout_uri=uri,
        internal=True,
        grant_types=["authorization_code", "refresh_token"],
    )
    # Two browsers: two sessions, each its own logout.
    sids, refresh_tokens = [], []
    for _ in range(2):
        browser = await signed_in_browser(dev_stack, person.email)
        request = authorization(app, scope="openid offline_access")
        token = await redeem(dev_stack, request, await code_for(browser, request))
        sids.append(jwt.decode(token["id_token"], await keys(dev_stack.http)).claims["sid"])
        refresh_tokens.append(token["refresh_token"])
    await staff_action(dev_stack, person, action)
    for sid in sids:
        handle = dev_stack.env.client.get_workflow_handle(logout_workflow_id(sid))
        assert await asyncio.wait_for(handle.result(), 30) == {app.client_id: "delivered"}
    assert await told_sids(dev_stack, received) == sorted(sids)
    for refresh_token in refresh_tokens:
        assert await refresh_refused(dev_stack, app, refresh_token)
