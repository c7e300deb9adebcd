"""Organisations keep apart: an admin of organisation A (an admin API key of A, or A's admin
signed in to the admin pages) never reaches a person, flow, key or audit trail of organisation
B; such an object answers exactly as one that does not exist (404), and deployment-wide
routes (apps, the codec, organisation management) answer 403.

The route test ENUMERATES the app's routes: a route under /api/v1, /admin or /codec that is
missing from ROUTES below fails it ("new route without a scope check"), so a later route
can't slip through unchecked.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import pytest_asyncio
from fastapi import FastAPI
from sqlalchemy import select

from activities.email_delivery import build_sender
from activities.entra import EntraActivities
from activities.inputs import LinkEntraInput, VerifiedEntra
from api.services.entra import Callback, EntraResult, EntraSignOn, EntraStart
from core.codec import keyring_from_settings
from core.entra import AuthorizationRequest, EntraIdentity, EntraProvider, Grant
from core.models import AuditEvent, EntraLink, Staff, StaffBatch, StaffBatchItem
from core.settings import Settings
from core.temporal_client import TemporalGateway
from tests.support.accounts import (
    Browser,
    Person,
    browsing,
    hidden_fields,
    make_person,
    page_text,
    redirected_to,
)
from tests.support.admin_pages import flash_of, known_hash, make_org, set_admin, sign_in_with_totp
from tests.support.harness import Stack, running_app

# How each route treats another organisation's objects:
#   person   its {staff_id} is B's person (their flows, audit trail, setup): as unknown (404)
#   org      its {org_id} is B's organisation (its keys, settings): as unknown (404)
#   batch    its {batch_id} is B's staff batch (its progress, pause, resume, cancel): as unknown
#   operator deployment-wide: 403 for an organisation's admin, whatever the object
#   own      no object in the path: acts on the caller's own organisation only (checked by
#            the tests below this one)
Kind = Literal["person", "org", "batch", "operator", "own"]
ROUTES: dict[tuple[str, str], Kind] = {
    ("POST", "/api/v1/staff"): "own",
    ("GET", "/api/v1/staff"): "own",
    ("GET", "/api/v1/staff/{staff_id}"): "person",
    ("POST", "/api/v1/staff/{staff_id}/move"): "operator",
    ("POST", "/api/v1/staff/{staff_id}/sso-email"): "person",
    ("DELETE", "/api/v1/staff/{staff_id}/sso-email"): "person",
    ("POST", "/api/v1/staff/{staff_id}/sessions/revoke"): "person",
    ("POST", "/api/v1/staff/{staff_id}/unlock"): "person",
    ("DELETE", "/api/v1/staff/{staff_id}/entra-link"): "person",
    ("DELETE", "/api/v1/staff/{staff_id}/mfa"): "person",
    ("POST", "/api/v1/staff/{staff_id}/disable"): "person",
    ("POST", "/api/v1/staff/{staff_id}/enable"): "person",
    ("POST", "/api/v1/staff/{staff_id}/mfa/extend"): "person",
    ("GET", "/api/v1/staff/{staff_id}/sso"): "person",
    ("PATCH", "/api/v1/staff/{staff_id}"): "person",
    ("DELETE", "/api/v1/staff/{staff_id}"): "person",
    ("POST", "/api/v1/staff/{staff_id}/email-change/confirm"): "person",
    ("POST", "/api/v1/staff/imports"): "own",
    ("POST", "/api/v1/staff/batches"): "own",
    ("GET", "/api/v1/staff/batches/{batch_id}"): "batch",
    ("POST", "/api/v1/staff/batches/{batch_id}/{control}"): "batch",
    ("POST", "/api/v1/clients"): "operator",
    ("GET", "/api/v1/clients"): "operator",
    ("GET", "/api/v1/clients/{client_id}"): "operator",
    ("PATCH", "/api/v1/clients/{client_id}"): "operator",
    ("DELETE", "/api/v1/clients/{client_id}"): "operator",
    ("POST", "/api/v1/clients/{client_id}/secret"): "operator",
    ("POST", "/api/v1/orgs"): "operator",
    ("GET", "/api/v1/orgs"): "operator",
    ("GET", "/api/v1/orgs/{org_id}"): "org",
    ("PATCH", "/api/v1/orgs/{org_id}"): "org",
    ("POST", "/api/v1/orgs/{org_id}/keys"): "org",
    ("POST", "/api/v1/orgs/{org_id}/suspend"): "operator",
    ("POST", "/api/v1/orgs/{org_id}/resume"): "operator",
    ("DELETE", "/api/v1/orgs/{org_id}"): "operator",
    ("POST", "/codec/decode"): "operator",
    ("POST", "/codec/encode"): "operator",
    ("GET", "/admin/staff"): "own",
    ("GET", "/admin/staff/new"): "own",
    ("POST", "/admin/staff/new"): "own",
    ("GET", "/admin/staff/{staff_id}"): "person",
    ("GET", "/admin/staff/{staff_id}/reset-mfa"): "person",
    ("GET", "/admin/staff/{staff_id}/disable"): "person",
    ("GET", "/admin/staff/{staff_id}/enable"): "person",
    ("POST", "/admin/staff/{staff_id}/{action}"): "person",
    ("GET", "/admin/staff/{staff_id}/edit"): "person",
    ("POST", "/admin/staff/{staff_id}/edit"): "person",
    ("GET", "/admin/staff/{staff_id}/erase"): "person",
    ("POST", "/admin/staff/{staff_id}/erase"): "person",
    ("POST", "/admin/staff/bulk"): "own",
    ("GET", "/admin/staff/import"): "own",
    ("POST", "/admin/staff/import"): "own",
    ("POST", "/admin/staff/import/confirm"): "own",
    ("GET", "/admin/staff/batches/{batch_id}"): "batch",
    ("POST", "/admin/staff/batches/{batch_id}/{control}"): "batch",
    ("GET", "/admin/apps"): "operator",
    ("GET", "/admin/apps/new"): "operator",
    ("POST", "/admin/apps/new"): "operator",
    ("GET", "/admin/apps/{client_id}"): "operator",
    ("POST", "/admin/apps/{client_id}"): "operator",
    ("GET", "/admin/apps/{client_id}/delete"): "operator",
    ("POST", "/admin/apps/{client_id}/{action}"): "operator",
    ("GET", "/admin/organisation"): "own",
    ("GET", "/admin/orgs"): "operator",
    ("GET", "/admin/orgs/new"): "operator",
    ("POST", "/admin/orgs/new"): "operator",
    ("GET", "/admin/orgs/{org_id}"): "org",
    ("POST", "/admin/orgs/{org_id}"): "org",
    ("GET", "/admin/orgs/{org_id}/{action}"): "operator",
    ("POST", "/admin/orgs/{org_id}/{action}"): "operator",
}
# A valid body where the route takes one: the refusal must be the scope's, not the body's.
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("PATCH", "/api/v1/orgs/{org_id}"): {"sender_name": "Taken over"},
    ("POST", "/api/v1/orgs/{org_id}/keys"): {"name": "stolen"},
    ("POST", "/api/v1/orgs"): {"name": "Sneaky", "slug": "sneaky"},
    ("POST", "/api/v1/clients"): {"client_name": "x", "redirect_uris": ["https://x.example/cb"]},
    ("PATCH", "/api/v1/clients/{client_id}"): {"client_name": "y"},
    ("PATCH", "/api/v1/staff/{staff_id}"): {"first_name": "Taken"},
    ("POST", "/api/v1/staff/{staff_id}/email-change/confirm"): {"code": "123456"},
}
# A valid form where the page takes one (besides the CSRF token).
FORMS: dict[tuple[str, str], dict[str, str]] = {
    ("POST", "/admin/staff/{staff_id}/edit"): {
        "first_name": "Taken",
        "last_name": "Over",
        "external_email_1": "taken.over@example.com",
        "leave_on": "",
    },
}
SCOPED_PREFIXES = ("/api/v1", "/admin", "/codec")


def app_routes(app: FastAPI) -> set[tuple[str, str]]:
    """Every (method, path) the app serves under the scoped prefixes, however included."""
    found: set[tuple[str, str]] = set()
    pending: list[Any] = list(app.routes)
    while pending:
        route = pending.pop()
        nested = getattr(getattr(route, "original_router", None), "routes", None)
        if nested is not None:
            pending.extend(nested)
            continue
        path = getattr(route, "path", "")
        if path.startswith(SCOPED_PREFIXES):
            found |= {(method, path) for method in getattr(route, "methods", set()) - {"HEAD"}}
    return found


@dataclass
class World:
    stack: Stack
    org_a: str
    org_b: str
    key_a: dict[str, str]
    key_b: dict[str, str]
    person_b: Person  # with an account, MFA, an audit trail
    admin_a: Person
    batch_b: uuid.UUID  # a staff batch of B's (its rows only: this stack runs no flows)

    @property
    def http(self) -> httpx.AsyncClient:
        return self.stack.http


@pytest_asyncio.fixture(loop_scope="session")
async def world(database_url: str) -> AsyncIterator[World]:
    async with running_app(database_url, signin_ip_limit=1000) as stack:
        org_a, key_a = await make_org(stack, "alpha")
        org_b, key_b = await make_org(stack, "bravo")
        person_b = await stack.person(mfa=True, org_id=uuid.UUID(org_b), first_name="Bea", last_name="Bravo")
        admin_a = await make_person(
            stack.sessions,
            stack.settings,
            mfa=True,
            password_hash=known_hash(stack.settings),
            org_id=uuid.UUID(org_a),
            first_name="Ann",
            last_name="Alpha",
        )
        await set_admin(stack.sessions, admin_a.staff_id)
        # B's person has an audit trail (their admin created a setup request, an unlock).
        unlocked = await stack.http.post(f"/api/v1/staff/{person_b.staff_id}/unlock", headers=key_b)
        assert unlocked.status_code == 200, unlocked.text
        yield World(stack, org_a, org_b, key_a, key_b, person_b, admin_a, await batch_of(stack, person_b))


async def batch_of(stack: Stack, person: Person) -> uuid.UUID:
    """A running staff batch sending to this person, as its rows (no flow behind it)."""
    async with stack.sessions() as session:
        org_id = (await session.get(Staff, person.staff_id)).org_id  # type: ignore[union-attr]
        batch = StaffBatch(
            id=uuid.uuid4(), org_id=org_id, action="send_email", state="running", requested_by="x", total=1
        )
        session.add(batch)
        session.add(StaffBatchItem(batch_id=batch.id, staff_id=person.staff_id, position=0, status="pending"))
        await session.commit()
    return batch.id


def filled(path: str, world: World, target: uuid.UUID | str, kind: Kind) -> str:
    """The path with B's object (or an unknown id) where the route names its kind's object."""
    return (
        path.replace("{staff_id}", str(target))
        .replace("{batch_id}", str(target if kind == "batch" else world.batch_b))
        .replace("{org_id}", world.org_b)
        .replace("{client_id}", "some-app")
        .replace("{action}", "revoke-sessions")
        .replace("{control}", "pause")
    )


async def call_api(
    world: World, method: str, path: str, target: uuid.UUID | str, kind: Kind
) -> httpx.Response:
    return await world.http.request(
        method,
        filled(path, world, target, kind),
        json=BODIES.get((method, path)) if method in ("POST", "PATCH") else None,
        headers=world.key_a,
        content=b'{"payloads": []}' if path.startswith("/codec") else None,
    )


async def call_page(
    browser: Browser, world: World, method: str, path: str, target: uuid.UUID | str, kind: Kind, csrf: str
) -> httpx.Response:
    url = filled(path, world, target, kind)
    if method == "GET":
        return await browser.get(url)
    return await browser.post(url, {"csrf": csrf, "back": "/admin/staff", **FORMS.get((method, path), {})})


async def test_every_route_keeps_another_organisations_objects_out_of_reach(world: World) -> None:
    app = world.stack.transport.app  # type: ignore[attr-defined]
    served = app_routes(app)
    unchecked = sorted(served - ROUTES.keys())
    assert not unchecked, f"new route without a scope check (add it to ROUTES): {unchecked}"
    stale = sorted(ROUTES.keys() - served)
    assert not stale, f"ROUTES names routes the app no longer serves: {stale}"

    person_b = world.person_b.staff_id
    async with browsing(world.stack.transport) as browser:
        assert redirected_to(await sign_in_with_totp(browser, world.admin_a), "/sso/account")
        staff_page = await browser.get("/admin/staff")
        assert staff_page.status_code == 200
        csrf = hidden_fields(staff_page, f"/admin/staff/{world.admin_a.staff_id}/revoke-sessions")["csrf"]
        for (method, path), kind in sorted(ROUTES.items()):
            if kind == "own":
                continue
            target = world.batch_b if kind == "batch" else person_b
            if path.startswith("/admin"):
                answer = await call_page(browser, world, method, path, target, kind, csrf)
                unknown = await call_page(browser, world, method, path, uuid.uuid4(), kind, csrf)
            else:
                answer = await call_api(world, method, path, target, kind)
                unknown = await call_api(world, method, path, uuid.uuid4(), kind)
            where = f"{method} {path}"
            if kind == "operator":
                assert answer.status_code == 403, f"{where}: {answer.status_code} {answer.text[:300]}"
                continue
            if method == "POST" and path == "/admin/staff/{staff_id}/{action}":
                # An action form comes back to the list, saying the person isn't there.
                assert answer.status_code == 303, where
                after = await browser.get(answer.headers["location"])
                assert flash_of(after) == ("error", "That person no longer exists."), where
                continue
            if method == "POST" and path == "/admin/staff/batches/{batch_id}/{control}":
                # A batch's button comes back to its page, which is not found, as for any id.
                assert answer.status_code == unknown.status_code == 303, where
                after = await browser.get(answer.headers["location"])
                assert after.status_code == 404, where
                assert "Bravo" not in after.text, where
                continue
            assert answer.status_code == 404, f"{where}: {answer.status_code} {answer.text[:300]}"
            # Exactly what an id that exists nowhere gets: nothing tells the two apart.
            assert unknown.status_code == 404, where
            if not path.startswith("/admin"):
                assert answer.json() == unknown.json() or kind == "org", where
            assert "Bravo" not in answer.text and "bravo" not in answer.text, where

    async with world.stack.sessions() as session:
        staff = await session.get(Staff, person_b)
        assert staff is not None and staff.disabled_at is None and staff.first_name == "Bea"
        batch = await session.get(StaffBatch, world.batch_b)
        assert batch is not None and batch.state == "running"
        touched = (
            await session.scalars(
                select(AuditEvent).where(
                    AuditEvent.target == str(person_b), AuditEvent.actor.notlike("%bravo-key%")
                )
            )
        ).all()
    assert [e.action for e in touched] == [], "A's requests changed something of B's"


async def test_each_organisation_key_creates_and_sees_only_its_own(world: World) -> None:
    made: dict[str, str] = {}
    for org, key in ((world.org_a, world.key_a), (world.org_b, world.key_b)):
        email = f"own.{uuid.uuid4().hex[:8]}@example.com"
        created = await world.http.post(
            "/api/v1/staff",
            json={"first_name": "Own", "last_name": "Person", "external_email_1": email},
            headers=key,
        )
        assert created.status_code == 201, created.text
        assert created.json()["org_id"] == org
        made[org] = created.json()["id"]
    for org, key in ((world.org_a, world.key_a), (world.org_b, world.key_b)):
        listed = await world.http.get("/api/v1/staff", params={"limit": 200}, headers=key)
        assert listed.status_code == 200
        assert {item["org_id"] for item in listed.json()["items"]} == {org}
        assert made[org] in {item["id"] for item in listed.json()["items"]}
    everyone = await world.http.get("/api/v1/staff", params={"limit": 200}, headers=world.stack.admin)
    ids = {item["id"] for item in everyone.json()["items"]}
    assert set(made.values()) <= ids
    only_b = await world.http.get(
        "/api/v1/staff", params={"limit": 200, "org_id": world.org_b}, headers=world.stack.admin
    )
    assert {item["org_id"] for item in only_b.json()["items"]} == {world.org_b}
    # An organisation's key naming another organisation, in a filter or a body: as unknown.
    peek = await world.http.get("/api/v1/staff", params={"org_id": world.org_b}, headers=world.key_a)
    assert peek.status_code == 404
    planted = await world.http.post(
        "/api/v1/staff",
        json={
            "first_name": "P",
            "last_name": "Q",
            "external_email_1": "p.q@example.com",
            "org_id": world.org_b,
        },
        headers=world.key_a,
    )
    assert planted.status_code == 404


async def test_an_address_of_another_organisation_is_refused_without_naming_it(world: World) -> None:
    email = f"shared.{uuid.uuid4().hex[:8]}@example.com"
    body = {"first_name": "Sam", "last_name": "Shared", "external_email_1": email}
    assert (await world.http.post("/api/v1/staff", json=body, headers=world.key_b)).status_code == 201
    neutral = await world.http.post("/api/v1/staff", json=body, headers=world.key_a)
    assert neutral.status_code == 409
    assert neutral.json()["message"] == "This address can't be added; contact agentOS support"
    own = await world.http.post("/api/v1/staff", json=body, headers=world.key_b)
    assert own.status_code == 409
    assert own.json()["message"] == "A staff member with that External Email 1 already exists"
    explicit = await world.http.post(
        "/api/v1/staff", json={**body, "org_id": world.org_a}, headers=world.stack.admin
    )
    assert explicit.status_code == 409
    assert explicit.json()["message"].endswith("in the organisation bravo")


async def test_an_operator_moves_a_person_and_it_is_audited(world: World) -> None:
    created = await world.http.post(
        "/api/v1/staff",
        json={
            "first_name": "Mo",
            "last_name": "Mover",
            "external_email_1": f"mo.{uuid.uuid4().hex[:8]}@example.com",
        },
        headers=world.key_a,
    )
    staff_id = created.json()["id"]
    moved = await world.http.post(
        f"/api/v1/staff/{staff_id}/move", json={"org_id": world.org_b}, headers=world.stack.admin
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["org_id"] == world.org_b
    assert (await world.http.get(f"/api/v1/staff/{staff_id}", headers=world.key_a)).status_code == 404
    assert (await world.http.get(f"/api/v1/staff/{staff_id}", headers=world.key_b)).status_code == 200
    nowhere = await world.http.post(
        f"/api/v1/staff/{staff_id}/move", json={"org_id": str(uuid.uuid4())}, headers=world.stack.admin
    )
    assert nowhere.status_code == 404
    async with world.stack.sessions() as session:
        event = await session.scalar(
            select(AuditEvent).where(AuditEvent.target == staff_id, AuditEvent.action == "staff.moved")
        )
    assert event is not None
    assert event.details == {"from_org": world.org_a, "to_org": world.org_b}
    assert event.actor == "admin-key:test-admin"


async def test_an_operator_must_name_the_organisation_once_there_are_several(world: World) -> None:
    body = {
        "first_name": "No",
        "last_name": "Org",
        "external_email_1": f"no.{uuid.uuid4().hex[:8]}@example.com",
    }
    refused = await world.http.post("/api/v1/staff", json=body, headers=world.stack.admin)
    assert refused.status_code == 422
    assert "org_id" in refused.json()["message"]
    named = await world.http.post(
        "/api/v1/staff", json={**body, "org_id": world.org_a}, headers=world.stack.admin
    )
    assert named.status_code == 201
    assert named.json()["org_id"] == world.org_a


async def test_the_admin_pages_show_an_agency_admin_only_their_agency(world: World) -> None:
    async with browsing(world.stack.transport) as browser:
        assert redirected_to(await sign_in_with_totp(browser, world.admin_a), "/sso/account")
        page = await browser.get("/admin/staff", org="bravo")
        assert page.status_code == 200
        assert "Bea Bravo" not in page.text
        assert "Ann Alpha" in page.text
        assert "Alpha Lettings" in page.text  # the agency in the header
        assert "Organisation</th>" not in page.text
        form = await browser.get("/admin/staff/new")
        csrf = hidden_fields(form, "/admin/staff/new")["csrf"]
        email = f"paged.{uuid.uuid4().hex[:8]}@example.com"
        added = await browser.post(
            "/admin/staff/new",
            {
                "csrf": csrf,
                "first_name": "Pat",
                "last_name": "Paged",
                "external_email_1": email,
                "is_admin": "no",
            },
        )
        assert added.status_code == 303, added.text
    async with world.stack.sessions() as session:
        staff = await session.scalar(select(Staff).where(Staff.external_email_1 == email))
    assert staff is not None and str(staff.org_id) == world.org_a


async def test_an_operator_sees_every_agency_with_a_column_and_a_filter(world: World) -> None:
    operator = await make_person(
        world.stack.sessions,
        world.stack.settings,
        mfa=True,
        password_hash=known_hash(world.stack.settings),
        org_id=uuid.UUID(world.org_a),
        first_name="Opal",
        last_name="Operator",
    )
    async with world.stack.sessions() as session:
        row = await session.get(Staff, operator.staff_id)
        assert row is not None
        row.is_admin = row.is_operator = True
        await session.commit()
    async with browsing(world.stack.transport) as browser:
        assert redirected_to(await sign_in_with_totp(browser, operator), "/sso/account")
        page = await browser.get("/admin/staff")
        assert "Organisation</th>" in page.text
        assert "Bea Bravo" in page.text and "Ann Alpha" in page.text
        only_b = await browser.get("/admin/staff", org="bravo")
        assert "Bea Bravo" in only_b.text and "Ann Alpha" not in only_b.text
        person = await browser.get(f"/admin/staff/{world.person_b.staff_id}")
        assert person.status_code == 200
        assert (await browser.get("/admin/apps")).status_code == 200


async def test_an_operator_chooses_the_organisation_of_a_person_added_on_the_page(world: World) -> None:
    operator = await make_person(
        world.stack.sessions,
        world.stack.settings,
        mfa=True,
        password_hash=known_hash(world.stack.settings),
        org_id=uuid.UUID(world.org_a),
        first_name="Ozzy",
        last_name="Operator",
    )
    async with world.stack.sessions() as session:
        row = await session.get(Staff, operator.staff_id)
        assert row is not None
        row.is_admin = row.is_operator = True
        await session.commit()
    email = f"chosen.{uuid.uuid4().hex[:8]}@example.com"
    async with browsing(world.stack.transport) as browser:
        assert redirected_to(await sign_in_with_totp(browser, operator), "/sso/account")
        form = await browser.get("/admin/staff/new")
        assert '<option value="alpha" selected>Alpha Lettings</option>' in form.text  # their own first
        fields = {"first_name": "Cho", "last_name": "Sen", "external_email_1": email, "is_admin": "no"}
        csrf = hidden_fields(form, "/admin/staff/new")["csrf"]
        nowhere = await browser.post("/admin/staff/new", {"csrf": csrf, **fields, "org": "nowhere"})
        assert nowhere.status_code == 400
        assert "Organisation: choose one from the list." in nowhere.text
        added = await browser.post("/admin/staff/new", {"csrf": csrf, **fields, "org": "bravo"})
        assert added.status_code == 303, added.text
    async with world.stack.sessions() as session:
        staff = await session.scalar(select(Staff).where(Staff.external_email_1 == email))
    assert staff is not None and str(staff.org_id) == world.org_b


async def test_bulk_actions_leave_out_another_organisations_people(world: World) -> None:
    """The staff list's bulk form with B's person ticked (a forged form): as an unknown id,
    nobody is selected, and nothing of B's changes."""
    async with browsing(world.stack.transport) as browser:
        assert redirected_to(await sign_in_with_totp(browser, world.admin_a), "/sso/account")
        page = await browser.get("/admin/staff")
        csrf = hidden_fields(page, "/admin/staff/bulk")["csrf"]
        for ids in (str(world.person_b.staff_id), str(uuid.uuid4())):
            sent = await browser.post(
                "/admin/staff/bulk",
                {"csrf": csrf, "back": "/admin/staff", "action": "disable", "ids": ids, "confirmed": "yes"},
            )
            assert sent.status_code == 303
            after = await browser.get(sent.headers["location"])
            assert flash_of(after) == (
                "error",
                "Select the people first: tick the box in front of each name.",
            )
    async with world.stack.sessions() as session:
        staff = await session.get(Staff, world.person_b.staff_id)
    assert staff is not None and staff.disabled_at is None


class VerifiedBy(EntraProvider):
    """Microsoft verifying this identity (the provider's own checks have tests in tests/entra)."""

    def __init__(self, settings: Settings, identity: EntraIdentity) -> None:
        super().__init__(settings)
        self.identity = identity

    async def authorization_request(self, login_hint: str | None = None) -> AuthorizationRequest:
        return AuthorizationRequest(
            "https://login.example.test/authorize", "state-1", "nonce-1", "verifier-1"
        )

    async def redeem(self, grant: Grant) -> EntraIdentity:
        return self.identity


async def test_a_tenant_signs_in_only_the_people_of_the_organisation_owning_it(world: World) -> None:
    stack = world.stack
    tenant = str(uuid.uuid4())
    owned = await stack.http.patch(
        f"/api/v1/orgs/{world.org_b}", json={"entra_tenant_ids": [tenant]}, headers=stack.admin
    )
    assert owned.status_code == 200, owned.text
    person_a = await stack.person(org_id=uuid.UUID(world.org_a), first_name="Ali", last_name="Alpha")
    identities = {}
    for person in (person_a, world.person_b):
        identity = EntraIdentity(tenant, str(uuid.uuid4()), "Someone", "someone@bravo.example")
        identities[person.staff_id] = identity
        async with stack.sessions() as session:
            session.add(
                EntraLink(
                    staff_id=person.staff_id,
                    tenant_id=tenant,
                    object_id=identity.object_id,
                    linked_via="session",
                )
            )
            await session.commit()

    async def microsoft_sign_in(identity: EntraIdentity) -> EntraResult:
        async with stack.sessions() as session:
            sign_on = EntraSignOn(
                stack.settings, session, TemporalGateway(stack.settings), VerifiedBy(stack.settings, identity)
            )
            _, waiting = await sign_on.begin(EntraStart("signin"))
            pending = await sign_on.claim(waiting)
            result = await sign_on.finish(pending, Callback("state-1", "code-1", ""), "127.0.0.1", None)
            await session.commit()
        return result

    assert (await microsoft_sign_in(identities[world.person_b.staff_id])).kind == "signed_in"
    refused = await microsoft_sign_in(identities[person_a.staff_id])
    assert (refused.kind, refused.reason) == ("refused", "wrong_tenant")
    assert refused.message is not None and "can't sign in here" in refused.message
    async with stack.sessions() as session:
        event = await session.scalar(
            select(AuditEvent).where(
                AuditEvent.target == str(person_a.staff_id), AuditEvent.action == "sign_in.failed"
            )
        )
    assert event is not None and event.details["reason"] == "wrong_tenant"


async def test_a_tenant_links_only_to_the_people_of_the_organisation_owning_it(world: World) -> None:
    stack = world.stack
    tenant = str(uuid.uuid4())
    owned = await stack.http.patch(
        f"/api/v1/orgs/{world.org_a}", json={"entra_tenant_ids": [tenant]}, headers=stack.admin
    )
    assert owned.status_code == 200, owned.text
    keyring = keyring_from_settings(stack.settings)
    activities = EntraActivities(
        stack.settings, stack.sessions, build_sender(stack.settings, stack.sessions, keyring), keyring
    )

    def link(person: Person) -> LinkEntraInput:
        identity = VerifiedEntra(tenant, str(uuid.uuid4()), "Someone", "someone@alpha.example")
        return LinkEntraInput(
            str(person.staff_id), f"entra-link-{person.staff_id}", identity, "session", "test"
        )

    refused = await activities.link_entra_identity(link(world.person_b))
    assert (refused.ok, refused.reason) == (False, "other_organisation")
    person_a = await stack.person(org_id=uuid.UUID(world.org_a), first_name="Lin", last_name="Alpha")
    linked = await activities.link_entra_identity(link(person_a))
    assert linked.ok and linked.newly_linked
    async with stack.sessions() as session:
        links = (await session.scalars(select(EntraLink.staff_id).where(EntraLink.tenant_id == tenant))).all()
    assert links == [person_a.staff_id]


async def imported_on_the_page(browser: Browser, rows: str, org: str | None = None) -> httpx.Response:
    """Settings > Staff > Import from CSV: the preview, then Import (no emails sent)."""
    form = await browser.get("/admin/staff/import")
    fields = {"csrf": hidden_fields(form, "/admin/staff/import")["csrf"], **({"org": org} if org else {})}
    content = f"first_name,last_name,external_email_1\r\n{rows}".encode()
    preview = await browser.http.post(
        "/admin/staff/import", data=fields, files={"file": ("staff.csv", content, "text/csv")}
    )
    assert preview.status_code == 200, preview.text
    confirm = hidden_fields(preview, "/admin/staff/import/confirm")
    done = await browser.http.post(
        "/admin/staff/import/confirm", files={k: (None, v) for k, v in confirm.items()}
    )
    assert done.status_code == 303, done.text
    return preview


async def test_the_import_page_adds_people_to_the_admins_organisation(world: World) -> None:
    """An organisation's admin imports into their own organisation, and another's address is
    refused without naming it; an operator chooses the organisation (their own first)."""
    new, other = f"imp.{uuid.uuid4().hex[:8]}@example.com", f"imp.{uuid.uuid4().hex[:8]}@example.com"
    async with browsing(world.stack.transport) as browser:
        assert redirected_to(await sign_in_with_totp(browser, world.admin_a), "/sso/account")
        form = await browser.get("/admin/staff/import")
        assert 'name="org"' not in form.text  # an agency's admin has nothing to choose
        preview = await imported_on_the_page(
            browser, f"Ima,Porter,{new}\r\nCopy,Cat,{world.person_b.email}\r\n"
        )
        assert "external_email_1: This address can't be added; contact agentOS support" in page_text(preview)
        assert "Bravo" not in preview.text
    operator = await make_person(
        world.stack.sessions,
        world.stack.settings,
        mfa=True,
        password_hash=known_hash(world.stack.settings),
        org_id=uuid.UUID(world.org_a),
        first_name="Ola",
        last_name="Operator",
    )
    async with world.stack.sessions() as session:
        row = await session.get(Staff, operator.staff_id)
        assert row is not None
        row.is_admin = row.is_operator = True
        await session.commit()
    async with browsing(world.stack.transport) as browser:
        assert redirected_to(await sign_in_with_totp(browser, operator), "/sso/account")
        form = await browser.get("/admin/staff/import")
        assert '<option value="alpha" selected>Alpha Lettings</option>' in form.text
        preview = await imported_on_the_page(browser, f"Oth,Er,{other}\r\n", org="bravo")
        assert "They join Bravo Lettings." in page_text(preview)
    async with world.stack.sessions() as session:
        imported = {
            s.external_email_1: str(s.org_id)
            for s in (
                await session.scalars(select(Staff).where(Staff.external_email_1.in_([new, other])))
            ).all()
        }
    assert imported == {new: world.org_a, other: world.org_b}
