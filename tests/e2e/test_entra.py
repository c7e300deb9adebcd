"""End to end: Method 1, Microsoft Entra, on the real stack (`sso dev`) with its local stand-in
for Microsoft (oidc-provider-mock, a real OIDC provider) and real SMTP.

A person links their Microsoft account from the setup email's link and from a fresh signed-in
session, then signs in with it. The negative cases come from the provider itself: people whose
ID tokens carry another tenant, another audience, a wrong nonce or a past expiry (the provider
signs whatever claims a person has), a disabled account (the Graph stand-in reads
`accountEnabled`), a replayed or foreign `state`, an identity already linked elsewhere and an
unlinked one. Finally the histories, the database and the logs hold none of the codes, states,
nonces or tokens.
"""

from __future__ import annotations

import html
import re
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import delete, update
from temporalio.client import Client, WorkflowExecutionStatus

from core.codec import EncryptionCodec, keyring_from_settings
from core.devstack import DEV_OTHER_TENANT_ID, DEV_TENANT_ID
from core.models import BrowserSession, Organisation, OrganisationTenant, utcnow
from core.orgs import DEFAULT_ORG_ID
from tests.support.accounts import PASSWORD, Person, make_person, page_text
from tests.support.config import make_settings
from tests.support.e2e import (
    World,
    _Forms,
    _payloads,
    check_setup_email,
    create_staff,
    eventually,
    send_email,
    stack_database,
    status,
    submit,
    text_of,
    wait_for_email,
)
from tests.support.stack import DevStack

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

LINKED_SUBJECT = "A Microsoft account was linked to your agentOS sign-in"
CLIENT_ID = "agentos-sso-dev"
# A compact JWT: base64url JSON header, a dot, base64url JSON claims.
JWT = re.compile(rb"eyJ[A-Za-z0-9_-]*\.eyJ")
UNLINKED = "This Microsoft account isn't linked to an agentOS staff login; ask your administrator."
NO_ORGANISATION = "This Microsoft account's organisation isn't linked to agentOS Single Sign-On"
UNVERIFIED = "We couldn't verify your sign-in with Microsoft. Please start again."


# --------------------------------------------------------------------------- fixtures


class Seen:
    """Every secret of the OAuth exchange the tests saw go by, to look for afterwards."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def add(self, value: str, what: str) -> None:
        assert value, what
        self.values[value] = what


@pytest.fixture(scope="module")
def seen() -> Seen:
    return Seen()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def provider(stack: DevStack) -> AsyncIterator[httpx.AsyncClient]:
    """The person's browser at Microsoft (the stand-in)."""
    async with httpx.AsyncClient(base_url=stack.entra_url, timeout=30) as client:
        yield client


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def database(stack: DevStack) -> AsyncIterator[Any]:
    """The stack's own SQLite database, for people who already have a password."""
    async with stack_database(stack) as sessions:
        yield sessions


# --------------------------------------------------------------------------- helpers


def new_browser(stack: DevStack) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.base_url, timeout=30, follow_redirects=False)


async def microsoft_user(provider: httpx.AsyncClient, **claims: Any) -> tuple[str, dict[str, Any]]:
    """A person at the provider with these ID-token claims (defaults: our tenant, a new oid)."""
    sub = f"user-{uuid.uuid4().hex[:10]}"
    values = {
        "tid": DEV_TENANT_ID,
        "oid": str(uuid.uuid4()),
        "name": "Alex Entra",
        "email": f"{sub}@agency.example",
        **claims,
    }
    values = {k: v for k, v in values.items() if v is not None}
    answer = await provider.put(f"/users/{sub}", json=values)
    assert answer.status_code == 204, answer.text
    return sub, values


def entra_form(page: httpx.Response) -> dict[str, Any]:
    parser = _Forms()
    parser.feed(page.text)
    forms = [f for f in parser.forms if "Microsoft-Entra" in f["buttons"]]
    assert len(forms) == 1, f"one Microsoft-Entra button expected: {parser.forms}"
    assert forms[0]["method"] == "post" and forms[0]["fields"].get("csrf"), forms[0]
    return forms[0]  # type: ignore[no-any-return]


async def to_microsoft(stack: DevStack, person: httpx.AsyncClient, page: httpx.Response, seen: Seen) -> str:
    """Press Microsoft-Entra on `page`: the authorization URL the browser is sent to."""
    form = entra_form(page)
    start = await person.post(urljoin(str(page.url), form["action"]), data=form["fields"])
    assert start.status_code == 303, (start.status_code, text_of(start)[:2000])
    location = start.headers["location"]
    assert location.startswith(f"{stack.entra_url}/oauth2/authorize?"), location
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    # docs/security.md §22/§23: code flow with PKCE S256, state and nonce, the exact redirect URI.
    assert query["response_type"] == "code" and query["client_id"] == CLIENT_ID, query
    assert query["redirect_uri"] == f"{stack.base_url}/sso/entra/callback", query
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert len(query["state"]) >= 43 and len(query["nonce"]) >= 43, query
    assert "openid" in query["scope"].split(), query
    seen.add(query["state"], "an OAuth state")
    seen.add(query["nonce"], "an OIDC nonce")
    return location


async def at_microsoft(provider: httpx.AsyncClient, authorize_url: str, sub: str, seen: Seen) -> str:
    """The person confirms at Microsoft: the callback URL Microsoft sends them back to."""
    answer = await provider.post(authorize_url, data={"sub": sub})
    assert answer.status_code == 302, (answer.status_code, answer.text[:2000])
    callback = answer.headers["location"]
    seen.add(parse_qs(urlsplit(callback).query)["code"][0], "an authorization code")
    return callback


async def entra_round(
    stack: DevStack,
    provider: httpx.AsyncClient,
    person: httpx.AsyncClient,
    page: httpx.Response,
    sub: str,
    seen: Seen,
) -> tuple[httpx.Response, str]:
    """Microsoft-Entra on `page`, confirm as `sub`, come back: the callback's answer."""
    authorize = await to_microsoft(stack, person, page, seen)
    callback = await at_microsoft(provider, authorize, sub, seen)
    answer = await person.get(callback)
    assert answer.status_code != 500, text_of(answer)
    return answer, callback


async def press_link(person: httpx.AsyncClient, answer: httpx.Response, account: str) -> httpx.Response:
    """A link's callback shows `account` and asks first; Link answers."""
    assert answer.status_code == 303 and answer.headers["location"] == "/sso/entra/confirm", text_of(answer)
    page = await person.get("/sso/entra/confirm")
    assert page.status_code == 200, text_of(page)
    assert f"Link {account} to your agentOS sign-in?" in page_text(page)
    return await submit(person, page, "Link")


async def setup_link_page(
    api: httpx.AsyncClient, world: World, person: httpx.AsyncClient, label: str
) -> tuple[dict[str, Any], str, httpx.Response]:
    staff = await create_staff(api, world, label)
    to = staff["external_email_1"]
    await send_email(api, world, staff["id"])
    token = check_setup_email(world, await wait_for_email(world, to), to)
    page = await person.get(f"/sso/setup/{token}")
    assert page.status_code == 200, text_of(page)
    return staff, token, page


async def sign_in_page(person: httpx.AsyncClient) -> httpx.Response:
    page = await person.get("/sso/login")
    assert page.status_code == 200
    return page


async def password_sign_in(stack: DevStack, person: httpx.AsyncClient, who: Person) -> str:
    page = await sign_in_page(person)
    parser = _Forms()
    parser.feed(page.text)
    form = next(f for f in parser.forms if f["action"] == "/sso/login")
    answer = await person.post(
        "/sso/login", data={**form["fields"], "email": who.email, "password": PASSWORD}
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/sso/account", text_of(answer)
    session = person.cookies.get("sso_session")
    assert session
    return session


def audit_actions(stack: DevStack, staff_id: str) -> list[tuple[str, str, str]]:
    with sqlite3.connect(stack.data_dir / "sso.db") as db:
        rows = db.execute(
            "SELECT action, outcome, details FROM audit_events WHERE target = ? ORDER BY occurred_at",
            (staff_id,),
        ).fetchall()
    return [(a, o, d) for a, o, d in rows]


# --------------------------------------------------------------------------- the happy paths


async def test_sign_in_and_setup_screens_offer_microsoft_entra(
    stack: DevStack, api: httpx.AsyncClient, world: World
) -> None:
    async with new_browser(stack) as person:
        login = await sign_in_page(person)
        assert entra_form(login)["fields"]["intent"] == "signin"
        _staff, token, page = await setup_link_page(api, world, person, "offered")
        form = entra_form(page)
        assert form["fields"]["intent"] == "link" and form["fields"]["token"] == token
        # Without a session the signed-in setup screen sends the person to sign in first.
        answer = await person.get("/sso/setup")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/sso/login?return_to=/sso/setup"


async def test_link_from_the_setup_email_then_sign_in_with_it(
    stack: DevStack,
    api: httpx.AsyncClient,
    provider: httpx.AsyncClient,
    world: World,
    seen: Seen,
    temporal: Client,
) -> None:
    sub, claims = await microsoft_user(provider, name="Jo Linked")
    async with new_browser(stack) as person:
        staff, token, page = await setup_link_page(api, world, person, "linker")
        answer, callback = await entra_round(stack, provider, person, page, sub, seen)
        answer = await press_link(person, answer, claims["email"])
        assert answer.status_code == 200, text_of(answer)
        assert "Your Microsoft account is linked" in text_of(answer)
        assert claims["email"] in text_of(answer)
        assert "Single Sign-On is now active" in text_of(answer)
        first_session = person.cookies.get("sso_session")
        assert first_session, "linking signs the person in"
        assert (await person.get("/sso/account")).status_code == 200

        # The link is spent: it can't link or set a password any more.
        used = await person.get(f"/sso/setup/{token}")
        assert used.status_code == 410, text_of(used)

        # Replaying Microsoft's answer finds nothing to finish.
        replay = await person.get(callback)
        assert replay.status_code == 403
        assert "expired or was already used" in text_of(replay)

    body = await eventually(
        lambda: _state_is(api, staff["id"], "active"), 30, what="the setup to become active"
    )
    entra = body["entra"]
    assert entra["tenant_id"] == DEV_TENANT_ID and entra["object_id"] == claims["oid"]
    assert entra["display_name"] == "Jo Linked" and entra["email"] == claims["email"]
    assert entra["linked_via"] == "setup_link"
    world.staff["linker"]["entra_sub"] = sub
    world.staff["linker"]["entra_email"] = claims["email"]

    # The person is told by email.
    notice = await eventually(
        lambda: _email(world, staff["external_email_1"], LINKED_SUBJECT), 60, what="the link notice"
    )
    text = notice.message.get_body(preferencelist=("plain",)).get_content()
    assert claims["email"] in text and "If you did not" in text

    # The link flow finished, its step searchable; the setup flow ended active.
    link_flow = await eventually(
        lambda: _finished(temporal, f"entra-link-{staff['id']}"), 60, what="the link flow to finish"
    )
    attributes = {p.key.name: p.value for p in link_flow.typed_search_attributes}
    assert attributes["SsoStep"] == "linked" and attributes["SsoStaffId"] == staff["id"], attributes
    setup = await temporal.get_workflow_handle(f"sso-setup-{staff['id']}").describe()
    assert setup.status == WorkflowExecutionStatus.COMPLETED

    # From now on Microsoft-Entra signs the person straight in, with a new session id.
    async with new_browser(stack) as person:
        # An id planted before sign-in (here, the linking session's) is not kept.
        person.cookies.set("sso_session", first_session, domain="127.0.0.1")
        answer, _ = await entra_round(stack, provider, person, await sign_in_page(person), sub, seen)
        assert answer.status_code == 303 and answer.headers["location"] == "/sso/account"
        session = person.cookies.get("sso_session", domain="127.0.0.1")
        assert session and session != first_session
        account = await person.get("/sso/account")
        assert account.status_code == 200 and staff["external_email_1"] in text_of(account)
        seen.add(session, "a session id")
    actions = [a for a, _o, _d in audit_actions(stack, staff["id"])]
    assert "entra.linked" in actions and "sign_in.success" in actions, actions


async def test_link_from_a_fresh_signed_in_session(
    stack: DevStack,
    api: httpx.AsyncClient,
    provider: httpx.AsyncClient,
    world: World,
    seen: Seen,
    database: Any,
) -> None:
    who = await make_person(database, make_settings(), first_name="Sasha")
    sub, claims = await microsoft_user(provider, name="Sasha Session")
    async with new_browser(stack) as person:
        before = await password_sign_in(stack, person, who)
        page = await person.get("/sso/setup")
        assert page.status_code == 200 and "Setup agentOS Single Sign-on" in text_of(page)
        answer, _ = await entra_round(stack, provider, person, page, sub, seen)
        answer = await press_link(person, answer, claims["email"])
        assert answer.status_code == 200, text_of(answer)
        assert "Your Microsoft account is linked" in text_of(answer)
        after = person.cookies.get("sso_session")
        assert after and after != before, "a new session id after the Entra callback"
        page = await person.get("/sso/setup")
        assert "is linked" in text_of(page) and claims["email"] in text_of(page)
    body = await status(api, str(who.staff_id))
    assert body["entra"]["linked_via"] == "session"
    assert body["entra"]["object_id"] == claims["oid"]
    await eventually(lambda: _email(world, who.email, LINKED_SUBJECT), 60, what="the link notice")


async def test_nothing_is_linked_until_link_is_pressed_in_the_same_browser(
    stack: DevStack,
    api: httpx.AsyncClient,
    provider: httpx.AsyncClient,
    seen: Seen,
    database: Any,
) -> None:
    who = await make_person(database, make_settings(), first_name="Morgan")
    wrong, wrong_claims = await microsoft_user(provider, name="Morgan Elsewhere")
    right, right_claims = await microsoft_user(provider, name="Morgan Right")
    async with new_browser(stack) as person, new_browser(stack) as stranger:
        await password_sign_in(stack, person, who)
        answer, _ = await entra_round(stack, provider, person, await person.get("/sso/setup"), wrong, seen)
        assert answer.status_code == 303 and answer.headers["location"] == "/sso/entra/confirm"
        page = await person.get("/sso/entra/confirm")
        assert f"Link {wrong_claims['email']} to your agentOS sign-in?" in page_text(page)
        assert (await status(api, str(who.staff_id)))["entra"] is None

        # Another browser has nothing to confirm, even with this page's form.
        stranger_csrf = entra_form(await sign_in_page(stranger))["fields"]["csrf"]
        foreign = await stranger.post("/sso/entra/confirm", data={"csrf": stranger_csrf})
        assert foreign.status_code == 403 and "expired or was already used" in text_of(foreign)
        # A forged form is refused and spends nothing.
        forged = await person.post("/sso/entra/confirm", data={"csrf": "forged"})
        assert forged.status_code == 400
        assert (await status(api, str(who.staff_id)))["entra"] is None

        # Use another account: back to Microsoft's account chooser, the first account dropped.
        another = await submit(person, page, "Use another account")
        assert another.status_code == 303, text_of(another)
        authorize = another.headers["location"]
        query = parse_qs(urlsplit(authorize).query)
        assert authorize.startswith(f"{stack.entra_url}/oauth2/authorize?") and query["prompt"] == [
            "select_account"
        ]
        assert (await person.get("/sso/entra/confirm")).status_code == 403
        callback = await at_microsoft(provider, authorize, right, seen)
        linked = await press_link(person, await person.get(callback), right_claims["email"])
        assert linked.status_code == 200 and "Your Microsoft account is linked" in text_of(linked)

        # Single use: the same Link again finds nothing.
        again = await submit(person, page, "Link")
        assert again.status_code == 403 and "expired or was already used" in text_of(again)
    entra = (await status(api, str(who.staff_id)))["entra"]
    assert entra["object_id"] == right_claims["oid"], entra


async def test_an_old_session_must_sign_in_again_before_linking(
    stack: DevStack, provider: httpx.AsyncClient, seen: Seen, database: Any
) -> None:
    who = await make_person(database, make_settings(), first_name="Olde")
    async with new_browser(stack) as person:
        await password_sign_in(stack, person, who)
        page = await person.get("/sso/setup")
        async with database() as session:
            await session.execute(
                update(BrowserSession)
                .where(BrowserSession.staff_id == who.staff_id)
                .values(created_at=utcnow() - timedelta(hours=1))
            )
            await session.commit()
        form = entra_form(page)
        answer = await person.post("/sso/entra/start", data=form["fields"])
        assert answer.status_code == 303
        assert answer.headers["location"] == "/sso/login?return_to=/sso/setup&notice=reauth"
        login = await person.get(answer.headers["location"])
        assert "sign in again to link a Microsoft account" in text_of(login)


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"tid": DEV_OTHER_TENANT_ID}, NO_ORGANISATION),
        ({"aud": "someone-elses-app"}, UNVERIFIED),
        ({"nonce": "not-the-nonce-we-sent"}, UNVERIFIED),
        ({"iss": "https://login.microsoftonline.com/elsewhere/v2.0"}, UNVERIFIED),
        ({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}, "has expired"),
        ({"tid": None, "oid": None}, "isn't a Microsoft work account"),
    ],
    ids=["another-tenant", "another-audience", "bad-nonce", "another-issuer", "expired", "personal-account"],
)
async def test_sign_in_refuses_a_token_it_must_not_trust(
    stack: DevStack, provider: httpx.AsyncClient, seen: Seen, claims: dict[str, Any], message: str
) -> None:
    sub, _ = await microsoft_user(provider, **claims)
    async with new_browser(stack) as person:
        answer, _ = await entra_round(stack, provider, person, await sign_in_page(person), sub, seen)
        assert answer.status_code == 403, text_of(answer)
        assert message in text_of(answer), text_of(answer)
        assert 'role="alert"' in answer.text
        assert "sso_session" not in person.cookies


async def test_an_unlinked_identity_gets_a_clear_page_and_no_session(
    stack: DevStack, provider: httpx.AsyncClient, seen: Seen
) -> None:
    sub, _ = await microsoft_user(provider)
    async with new_browser(stack) as person:
        answer, _ = await entra_round(stack, provider, person, await sign_in_page(person), sub, seen)
        assert answer.status_code == 403 and UNLINKED in text_of(answer)
        assert "sso_session" not in person.cookies
        assert (await person.get("/sso/account")).status_code == 303


async def test_state_is_single_use_and_bound_to_the_browser(
    stack: DevStack, provider: httpx.AsyncClient, seen: Seen
) -> None:
    sub, _ = await microsoft_user(provider)
    async with new_browser(stack) as person, new_browser(stack) as stranger:
        authorize = await to_microsoft(stack, person, await sign_in_page(person), seen)
        callback = await at_microsoft(provider, authorize, sub, seen)
        # Another browser (an attacker's link) has no pending sign-in to finish.
        foreign = await stranger.get(callback)
        assert foreign.status_code == 403 and "expired or was already used" in text_of(foreign)
        # A state that isn't the one this browser sent is refused, and uses the attempt up.
        parts = urlsplit(callback)
        query = parse_qs(parts.query)
        forged = f"{parts.path}?code={query['code'][0]}&state=forged{query['state'][0][6:]}"
        refused = await person.get(forged)
        assert refused.status_code == 403 and "didn't start in this browser" in text_of(refused)
        again = await person.get(callback)
        assert again.status_code == 403 and "expired or was already used" in text_of(again)


async def test_microsoft_cancelled(stack: DevStack, provider: httpx.AsyncClient, seen: Seen) -> None:
    async with new_browser(stack) as person:
        authorize = await to_microsoft(stack, person, await sign_in_page(person), seen)
        denied = await provider.post(authorize, data={"action": "deny"})
        assert denied.status_code == 302, denied.text
        answer = await person.get(denied.headers["location"])
        assert answer.status_code == 403 and "was cancelled" in text_of(answer)


async def test_a_disabled_account_is_not_linked(
    stack: DevStack, api: httpx.AsyncClient, provider: httpx.AsyncClient, world: World, seen: Seen
) -> None:
    sub, _ = await microsoft_user(provider, accountEnabled=False)
    async with new_browser(stack) as person:
        staff, token, page = await setup_link_page(api, world, person, "disabled")
        answer, _ = await entra_round(stack, provider, person, page, sub, seen)
        assert answer.status_code == 403, text_of(answer)
        assert "disabled in your organisation" in text_of(answer)
        assert "sso_session" not in person.cookies
        # Nothing changed: no link, the setup still waits, the link still works.
        body = await status(api, staff["id"])
        assert body["entra"] is None and body["state"] == "email_sent", body
        assert (await person.get(f"/sso/setup/{token}")).status_code == 200
    refusals = [d for a, _o, d in audit_actions(stack, staff["id"]) if a == "entra.link_refused"]
    assert refusals and "disabled" in refusals[0], refusals


async def test_an_identity_linked_elsewhere_is_refused(
    stack: DevStack, api: httpx.AsyncClient, provider: httpx.AsyncClient, world: World, seen: Seen
) -> None:
    taken = world.staff["linker"]["entra_sub"]
    async with new_browser(stack) as person:
        staff, _token, page = await setup_link_page(api, world, person, "second")
        answer, _ = await entra_round(stack, provider, person, page, taken, seen)
        answer = await press_link(person, answer, world.staff["linker"]["entra_email"])
        assert answer.status_code == 403, text_of(answer)
        assert "already linked to another staff login" in text_of(answer)
    assert (await status(api, staff["id"]))["entra"] is None
    assert (await status(api, world.staff["linker"]["id"]))["entra"] is not None


async def test_one_microsoft_account_per_staff_login(
    stack: DevStack, provider: httpx.AsyncClient, seen: Seen, database: Any
) -> None:
    who = await make_person(database, make_settings(), first_name="Uno")
    first, first_claims = await microsoft_user(provider)
    second, second_claims = await microsoft_user(provider)
    async with new_browser(stack) as person:
        await password_sign_in(stack, person, who)
        answer, _ = await entra_round(stack, provider, person, await person.get("/sso/setup"), first, seen)
        answer = await press_link(person, answer, first_claims["email"])
        assert answer.status_code == 200, text_of(answer)
        # The linked page no longer offers the button; a crafted start is refused anyway.
        page = await person.get("/sso/setup")
        parser = _Forms()
        parser.feed(page.text)
        assert not [f for f in parser.forms if "Microsoft-Entra" in f["buttons"]]
        login = await sign_in_page(person)
        form = entra_form(login)
        crafted = await person.post("/sso/entra/start", data={**form["fields"], "intent": "link"})
        authorize = crafted.headers["location"]
        callback = await at_microsoft(provider, authorize, second, seen)
        answer = await press_link(person, await person.get(callback), second_claims["email"])
        assert answer.status_code == 403
        assert "already linked to a different Microsoft account" in text_of(answer)


async def test_a_tenant_links_and_signs_in_only_the_people_of_the_organisation_owning_it(
    stack: DevStack,
    api: httpx.AsyncClient,
    provider: httpx.AsyncClient,
    world: World,
    seen: Seen,
    database: Any,
) -> None:
    """Method 1 with two organisations: Bravo's tenant links and signs in Bravo's people only;
    from another organisation's setup link it is refused and links nobody; once the tenant
    is Bravo's no more, it gets the "isn't linked" page; moved to a third organisation, it no
    longer signs in the Bravo person it was linked for."""
    tenant = str(uuid.uuid4())
    # The default organisation's person, asked to set up before there is a second one.
    async with new_browser(stack) as person:
        staff, token, page = await setup_link_page(api, world, person, "other-organisation")
    made: list[str] = []
    who: Person | None = None
    try:
        bravo = await _organisation(api, "Bravo Lettings", tenant)
        made.append(bravo)
        sub, claims = await microsoft_user(provider, tid=tenant, name="Bea Bravo")

        # From the default organisation's setup link: refused, nothing linked.
        async with new_browser(stack) as person:
            page = await person.get(f"/sso/setup/{token}")
            answer, _ = await entra_round(stack, provider, person, page, sub, seen)
            answer = await press_link(person, answer, claims["email"])
            assert answer.status_code == 403, text_of(answer)
            assert "belongs to another organisation than your staff login" in text_of(answer)
            assert "sso_session" not in person.cookies
            assert (await person.get(f"/sso/setup/{token}")).status_code == 200
        assert (await status(api, staff["id"]))["entra"] is None

        # Bravo's own person links the same account, then signs in with it.
        who = await make_person(database, make_settings(), first_name="Bea", org_id=uuid.UUID(bravo))
        async with new_browser(stack) as person:
            await password_sign_in(stack, person, who)
            answer, _ = await entra_round(stack, provider, person, await person.get("/sso/setup"), sub, seen)
            assert (await press_link(person, answer, claims["email"])).status_code == 200
        async with new_browser(stack) as person:
            answer, _ = await entra_round(stack, provider, person, await sign_in_page(person), sub, seen)
            assert answer.status_code == 303 and answer.headers["location"] == "/sso/account", text_of(answer)

        # Owned by no organisation: the clear page, nobody signed in.
        dropped = await api.patch(f"/api/v1/orgs/{bravo}", json={"entra_tenant_ids": []})
        assert dropped.status_code == 200, dropped.text
        async with new_browser(stack) as person:
            answer, _ = await entra_round(stack, provider, person, await sign_in_page(person), sub, seen)
            assert answer.status_code == 403 and NO_ORGANISATION in text_of(answer), text_of(answer)
            assert "sso_session" not in person.cookies

        # Owned by a third organisation: it signs in only that one's people, not Bravo's person.
        made.append(await _organisation(api, "Charlie Homes", tenant))
        async with new_browser(stack) as person:
            answer, _ = await entra_round(stack, provider, person, await sign_in_page(person), sub, seen)
            assert answer.status_code == 403 and NO_ORGANISATION in text_of(answer), text_of(answer)
            assert "sso_session" not in person.cookies
        refusals = [d for a, _o, d in audit_actions(stack, str(who.staff_id)) if a == "sign_in.failed"]
        assert refusals and "wrong_tenant" in refusals[-1], refusals
    finally:
        # The later modules share this stack as a one-organisation deployment (their staff
        # are created without org_id): Bea goes back to the default organisation and the two
        # organisations, which hold nobody else, are removed.
        if who is not None:
            moved = await api.post(f"/api/v1/staff/{who.staff_id}/move", json={"org_id": str(DEFAULT_ORG_ID)})
            assert moved.status_code == 200, moved.text
        async with database() as session:
            ids = [uuid.UUID(org_id) for org_id in made]
            await session.execute(delete(OrganisationTenant).where(OrganisationTenant.org_id.in_(ids)))
            await session.execute(delete(Organisation).where(Organisation.id.in_(ids)))
            await session.commit()


async def _organisation(api: httpx.AsyncClient, name: str, tenant: str) -> str:
    slug = f"{name.split()[0].lower()}-{uuid.uuid4().hex[:8]}"
    made = await api.post("/api/v1/orgs", json={"name": name, "slug": slug, "entra_tenant_ids": [tenant]})
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


# --------------------------------------------------------------------------- admin


async def test_admin_unlinks(
    stack: DevStack, api: httpx.AsyncClient, provider: httpx.AsyncClient, world: World, seen: Seen
) -> None:
    staff = world.staff["linker"]
    gone = await api.delete(f"/api/v1/staff/{staff['id']}/entra-link")
    assert gone.status_code == 200, gone.text
    assert gone.json()["tenant_id"] == DEV_TENANT_ID
    assert (await status(api, staff["id"]))["entra"] is None
    again = await api.delete(f"/api/v1/staff/{staff['id']}/entra-link")
    assert again.status_code == 404
    missing = await api.delete(f"/api/v1/staff/{uuid.uuid4()}/entra-link")
    assert missing.status_code == 404
    async with new_browser(stack) as person:
        answer, _ = await entra_round(
            stack, provider, person, await sign_in_page(person), staff["entra_sub"], seen
        )
        assert answer.status_code == 403 and UNLINKED in text_of(answer)
    unlinked = [d for a, _o, d in audit_actions(stack, staff["id"]) if a == "entra.unlinked"]
    assert len(unlinked) == 1 and DEV_TENANT_ID in unlinked[0], unlinked
    with sqlite3.connect(stack.data_dir / "sso.db") as db:
        actors = [r[0] for r in db.execute("SELECT actor FROM audit_events WHERE action = 'entra.unlinked'")]
    assert actors == ["admin-key:sso-dev"], actors


# --------------------------------------------------------------------------- secrets


async def test_no_code_state_nonce_or_token_is_kept(stack: DevStack, temporal: Client, seen: Seen) -> None:
    """docs/security.md §26/§27: the link flows' histories (raw and decoded with the codec), the
    database, Temporal's own database and the logs hold none of the OAuth values."""
    kinds = " ".join(seen.values.values())
    for kind in ("an OAuth state", "an OIDC nonce", "an authorization code"):
        assert kind in kinds
    assert JWT.search(b'{"id_token": "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJqbyJ9.c2ln"}')
    codec = EncryptionCodec(keyring_from_settings(make_settings()))
    flows = [wf async for wf in temporal.list_workflows("WorkflowType = 'EntraLink'")]
    assert len(flows) >= 4, flows
    for wf in flows:
        history = await temporal.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
        payloads = [p for event in history.events for p in _payloads(event)]
        decoded = await codec.decode(payloads)
        raw = history.to_json().encode()
        plain = b"\n".join(p.data for p in decoded)
        assert b"sealed1." not in raw, "the codec hides the sealed grant too"
        assert b"sealed_grant" in plain and b"sealed1." in plain, "the grant is sealed"
        # No JWT (ID or access token) anywhere, decoded or not: a JWT's header and claims
        # are both base64url JSON ("eyJ…") joined by a dot. A bare "eyJ" also turns up by
        # chance in random ciphertext, about once in 260,000 characters.
        assert not JWT.search(raw + plain), wf.id
        leaks = [
            what for value, what in seen.values.items() if value.encode() in raw or value.encode() in plain
        ]
        assert not leaks, (wf.id, leaks)
    stores = [stack.data_dir / "sso.db", stack.data_dir / "temporal.db"]
    stores += [p for p in stack.data_dir.glob("*.db-wal")]
    for path in stores:
        data = path.read_bytes()
        leaks = [
            what for value, what in seen.values.items() if value.encode() in data and what != "a session id"
        ]
        assert not leaks, (path.name, leaks)
    # The app's own logs (the stand-in for Microsoft keeps its own, as Microsoft would).
    output = stack.output()
    leaks = [what for value, what in seen.values.items() if value in output]
    assert not leaks, leaks
    assert "/sso/entra/callback?[redacted]" in output, "the access log is on and redacted"


# --------------------------------------------------------------------------- small helpers


async def _state_is(api: httpx.AsyncClient, staff_id: str, state: str) -> dict[str, Any] | None:
    body = await status(api, staff_id)
    return body if body["state"] == state else None


def _email(world: World, to: str, subject: str) -> Any:
    for message in world.smtp.messages:
        if to in message.rcpt_tos and html.unescape(message.message["Subject"]) == subject:
            return message
    return None


async def _finished(temporal: Client, workflow_id: str) -> Any:
    described = await temporal.get_workflow_handle(workflow_id).describe()
    return described if described.status == WorkflowExecutionStatus.COMPLETED else None
