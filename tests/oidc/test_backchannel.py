"""Back-Channel Logout 1.0: the SessionLogout flow (time skipping, stand-in deliveries), the
logout token and the SSRF guard, a sign-out reaching an app's receiver through the real
worker, Remove access on the account page telling that app alone, and the logout outbox: a
failed commit tells no app, a logout left behind after the commit is started by the worker's
sweeper, and a logout started twice is delivered once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
from joserfc import jwt
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

import api.deps
from activities.inputs import LogoutFailedInput, SendLogoutInput
from core import flow_errors
from core.models import EntraLink, LogoutOutbox, OidcClient, utcnow
from core.oidc import logout_outbox
from core.oidc.backchannel import SessionLogoutInput
from core.oidc.logout import LOGOUT_EVENT, logout_token_claims, logout_uri_refusal
from tests.support.accounts import PUBLIC_URL, Browser, Person, page_text
from tests.support.harness import Stack, running_stack
from tests.support.oidc import (
    App,
    Received,
    authorization,
    code_for,
    database_text,
    keys,
    logout_receiver,
    redeem,
    refresh_refused,
    register,
    remove_action,
    signed_in_browser,
    told_sids,
)
from worker import LogoutSweeper
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


OFFLINE = {"grant_types": ["authorization_code", "refresh_token"]}


async def offline_sid(stack: Stack, browser: Browser, app: App) -> tuple[str, str]:
    """The app signs the browser's person in (offline_access): the session's sid, and the
    app's refresh token."""
    request = authorization(app, scope="openid offline_access")
    token = await redeem(stack, request, await code_for(browser, request))
    return jwt.decode(token["id_token"], await keys(stack.http)).claims["sid"], token["refresh_token"]


async def remove_access(browser: Browser, name: str) -> None:
    page = await browser.get("/sso/account")
    done = await browser.submit(page, remove_action(page, name))
    assert done.status_code == 200 and f"{name} no longer has access" in page_text(done), done.text


async def logouts_received(stack: Stack, received: Received, count: int) -> list[tuple[str, str]]:
    """Each logout token's (app, sid), once `count` have come."""
    async with asyncio.timeout(30):
        while len(received) < count:
            await asyncio.sleep(0.1)
    await told_sids(stack, received)  # each token checked
    claims = [jwt.decode(sent["logout_token"][0], await keys(stack.http)).claims for sent in received]
    return sorted((str(c["aud"]), str(c["sid"])) for c in claims)


@pytest.mark.pages
@ASYNC
async def test_removing_an_apps_access_signs_the_person_out_of_that_app_alone(
    dev_stack: Stack, receiver: tuple[str, Received]
) -> None:
    uri, received = receiver
    person = await dev_stack.person()
    told = {"backchannel_logout_uri": uri, "internal": True, **OFFLINE}
    wiki = await register(dev_stack, client_name="Team Wiki", **told)
    rota = await register(dev_stack, client_name="Rota Planner", **told)
    # Two sessions signed in to the wiki; the first to the rota too.
    browsers = [await signed_in_browser(dev_stack, person.email) for _ in range(2)]
    sids = [(await offline_sid(dev_stack, browser, wiki))[0] for browser in browsers]
    rota_sid, rota_refresh = await offline_sid(dev_stack, browsers[0], rota)
    assert rota_sid == sids[0]

    await remove_access(browsers[0], "Team Wiki")
    assert await logouts_received(dev_stack, received, 2) == sorted((wiki.client_id, sid) for sid in sids)
    # That app alone: the rota keeps its tokens and both sessions go on.
    assert not await refresh_refused(dev_stack, rota, rota_refresh)
    for browser in browsers:
        assert (await browser.get("/sso/account")).status_code == 200
    assert len(received) == 2
    # The session's own end, later, is its own logout: every app that signed in to it is told.
    assert await sign_out(browsers[0]) == 303
    assert await delivered(dev_stack, sids[0]) == {rota.client_id: "delivered", wiki.client_id: "delivered"}


# -- the logout outbox -------------------------------------------------------------------------


async def signed_in_to_an_app(stack: Stack, uri: str) -> tuple[Browser, App, str, str]:
    """A browser signed in to an app with a back-channel logout URI: the browser, the app, the
    session's sid and the app's refresh token."""
    person = await stack.person()
    app = await register(
        stack, backchannel_logout_uri=uri, internal=True, grant_types=["authorization_code", "refresh_token"]
    )
    browser = await signed_in_browser(stack, person.email)
    request = authorization(app, scope="openid offline_access")
    token = await redeem(stack, request, await code_for(browser, request))
    sid = jwt.decode(token["id_token"], await keys(stack.http)).claims["sid"]
    return browser, app, sid, token["refresh_token"]


async def sign_out(browser: Browser) -> int:
    page = await browser.get("/sso/account")
    return (await browser.submit(page, "/sso/logout")).status_code


async def owed(stack: Stack) -> list[LogoutOutbox]:
    async with stack.sessions() as session:
        return list(await session.scalars(select(LogoutOutbox)))


async def started(stack: Stack, sid: str) -> bool:
    try:
        await stack.env.client.get_workflow_handle(logout_workflow_id(sid)).describe()
    except RPCError as exc:
        assert exc.status == RPCStatusCode.NOT_FOUND
        return False
    return True


async def delivered(stack: Stack, sid: str) -> dict[str, str]:
    handle = stack.env.client.get_workflow_handle(logout_workflow_id(sid))
    return await asyncio.wait_for(handle.result(), 30)  # type: ignore[no-any-return]


async def left_since_a_minute(stack: Stack) -> None:
    """The sweeper leaves a fresh row to the web app: this one has waited long enough."""
    async with stack.sessions() as session:
        await session.execute(update(LogoutOutbox).values(created_at=utcnow() - timedelta(minutes=1)))
        await session.commit()


def sweeper(stack: Stack) -> LogoutSweeper:
    return LogoutSweeper(stack.env.client, stack.settings, stack.sessions)


async def web_app_dies(_session: AsyncSession) -> None:
    """In place of what runs after the request's commit: the web app died right then."""


class CommitFails(AsyncSession):
    async def commit(self) -> None:
        raise OperationalError("COMMIT", {}, ConnectionError("the database went away"))


@pytest.mark.pages
@ASYNC
async def test_a_sign_out_whose_commit_fails_tells_no_app(
    dev_stack: Stack, receiver: tuple[str, Received]
) -> None:
    uri, received = receiver
    browser, app, sid, refresh_token = await signed_in_to_an_app(dev_stack, uri)
    page = await browser.get("/sso/account")
    state = dev_stack.transport.app.state  # type: ignore[attr-defined]
    sessions = state.sessions
    state.sessions = async_sessionmaker(sessions.kw["bind"], class_=CommitFails, expire_on_commit=False)
    try:
        assert (await browser.submit(page, "/sso/logout")).status_code == 503
    finally:
        state.sessions = sessions
    # The session lives on, so no app is told it ended, now or by the sweeper.
    assert (await browser.get("/sso/account")).status_code == 200
    assert not await refresh_refused(dev_stack, app, refresh_token)
    assert await owed(dev_stack) == [] and not await started(dev_stack, sid)
    await left_since_a_minute(dev_stack)
    assert await sweeper(dev_stack).sweep() == 0
    assert not await started(dev_stack, sid) and received == []


@pytest.mark.pages
@pytest.mark.parametrize("ending", ["sign out", "remove access"])
@ASYNC
async def test_a_logout_left_behind_after_the_commit_is_started_by_the_sweeper(
    dev_stack: Stack, receiver: tuple[str, Received], monkeypatch: pytest.MonkeyPatch, ending: str
) -> None:
    """Whether the session ended or the person removed the app's access (the session going
    on, its logout keyed by the removal, not the sid its own end will use)."""
    uri, received = receiver
    browser, app, sid, refresh_token = await signed_in_to_an_app(dev_stack, uri)

    monkeypatch.setattr(api.deps, "run_after_commit", web_app_dies)
    if ending == "sign out":
        assert await sign_out(browser) == 303
    else:
        await remove_access(browser, app.registration["client_name"])
    monkeypatch.undo()
    [row] = await owed(dev_stack)
    assert (row.sid.partition(".")[0], row.client_ids) == (sid, [app.client_id])
    assert (row.sid == sid) is (ending == "sign out")
    assert refresh_token not in await database_text(dev_stack)
    assert not await started(dev_stack, row.sid)
    assert await refresh_refused(dev_stack, app, refresh_token)  # ended with the session or the app's access

    assert await sweeper(dev_stack).sweep() == 0  # a fresh row is the web app's to start
    await left_since_a_minute(dev_stack)
    assert await sweeper(dev_stack).sweep() == 1
    assert await delivered(dev_stack, row.sid) == {app.client_id: "delivered"}
    assert await owed(dev_stack) == []
    assert await told_sids(dev_stack, received) == [sid]


@pytest.mark.pages
@ASYNC
async def test_the_worker_sweeps_on_its_own_until_stopped(
    dev_stack: Stack, receiver: tuple[str, Received], monkeypatch: pytest.MonkeyPatch
) -> None:
    uri, received = receiver
    browser, app, sid, _refresh_token = await signed_in_to_an_app(dev_stack, uri)

    monkeypatch.setattr(api.deps, "run_after_commit", web_app_dies)
    assert await sign_out(browser) == 303
    monkeypatch.undo()
    await left_since_a_minute(dev_stack)
    stop = asyncio.Event()
    sweeping = asyncio.create_task(sweeper(dev_stack).run(stop))
    try:
        async with asyncio.timeout(30):
            while await owed(dev_stack):
                await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(sweeping, 30)
    assert await delivered(dev_stack, sid) == {app.client_id: "delivered"}
    assert await told_sids(dev_stack, received) == [sid]


@pytest.mark.pages
@ASYNC
async def test_a_logout_started_twice_is_delivered_once(
    dev_stack: Stack, receiver: tuple[str, Received]
) -> None:
    uri, received = receiver
    browser, app, sid, _refresh_token = await signed_in_to_an_app(dev_stack, uri)
    assert await sign_out(browser) == 303
    # The web app started it after its commit and took its row out.
    assert await delivered(dev_stack, sid) == {app.client_id: "delivered"}
    assert await told_sids(dev_stack, received) == [sid] and await owed(dev_stack) == []

    # Its delete lost (say), the row is swept again, after the flow has finished: refused.
    staff_id = str(jwt.decode(received[0]["logout_token"][0], await keys(dev_stack.http)).claims["sub"])
    async with dev_stack.sessions() as session:
        await logout_outbox.queue(session, [SessionLogoutInput(sid, staff_id, [app.client_id])])
        await session.commit()
    await left_since_a_minute(dev_stack)
    assert await sweeper(dev_stack).sweep() == 0
    assert await owed(dev_stack) == []
    assert len(received) == 1
