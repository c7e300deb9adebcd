"""The organisations API and the `sso orgs` / `sso admin-key` / `sso staff create` commands:
operators create and list organisations, an organisation's own key changes only its MFA
policy and sender name and makes keys for itself, bad input is refused clearly, and every
change is audited."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import select
from sqlalchemy.orm import Session

import cli
from core.admin_keys import key_scope
from core.db import create_engine, session_factory
from core.models import AuditEvent, Organisation, OrganisationTenant, Staff
from core.orgs import DEFAULT_ORG_ID
from core.settings import get_settings, to_sync_url
from tests.support.harness import Stack, running_app

TENANT = "5d3e2773-e07f-4432-a630-1a0f68a28a05"
OTHER_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"


@pytest_asyncio.fixture(loop_scope="session")
async def app(database_url: str) -> AsyncIterator[Stack]:
    async with running_app(database_url) as running:
        yield running


async def create_org(app: Stack, **body: object) -> dict[str, object]:
    response = await app.http.post("/api/v1/orgs", json=body, headers=app.admin)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def org_key(app: Stack, org_id: object) -> dict[str, str]:
    made = await app.http.post(f"/api/v1/orgs/{org_id}/keys", json={"name": "their key"}, headers=app.admin)
    assert made.status_code == 201, made.text
    return {"Authorization": f"Bearer {made.json()['key']}"}


async def events(app: Stack, action: str) -> list[AuditEvent]:
    async with app.sessions() as session:
        return list((await session.scalars(select(AuditEvent).where(AuditEvent.action == action))).all())


async def test_an_operator_creates_lists_and_changes_organisations(app: Stack) -> None:
    harbour = await create_org(
        app,
        name="Harbour Lettings",
        slug="harbour",
        entra_tenant_ids=[TENANT.upper()],
        mfa_policy="required",
        sender_name="Harbour Lettings via agentOS",
    )
    assert harbour["slug"] == "harbour" and harbour["status"] == "active"
    assert harbour["entra_tenant_ids"] == [TENANT]  # stored lower-cased
    assert harbour["mfa_policy"] == "required" and harbour["suspended_at"] is None
    listed = await app.http.get("/api/v1/orgs", headers=app.admin)
    assert [o["slug"] for o in listed.json()["items"]] == ["default", "harbour"]
    one = await app.http.get(f"/api/v1/orgs/{harbour['id']}", headers=app.admin)
    assert one.json() == harbour

    changed = await app.http.patch(
        f"/api/v1/orgs/{harbour['id']}",
        json={"name": "Harbour Homes", "mfa_policy": None, "entra_tenant_ids": [OTHER_TENANT]},
        headers=app.admin,
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["name"] == "Harbour Homes"
    assert changed.json()["mfa_policy"] is None  # back to the deployment's policy
    assert changed.json()["entra_tenant_ids"] == [OTHER_TENANT]
    assert changed.json()["sender_name"] == "Harbour Lettings via agentOS"  # not sent: kept

    [created] = await events(app, "org.create")
    assert created.target == harbour["id"] and created.actor == "admin-key:test-admin"
    [updated] = await events(app, "org.update")
    assert updated.details["name"] == {"from": "Harbour Lettings", "to": "Harbour Homes"}
    assert updated.details["entra_tenant_ids"] == {"from": [TENANT], "to": [OTHER_TENANT]}


async def test_bad_organisations_are_refused_with_clear_messages(app: Stack) -> None:
    await create_org(app, name="First", slug="first", entra_tenant_ids=[TENANT])
    cases = [
        ({"name": "Again", "slug": "first"}, 409, "slug: another organisation already uses this slug"),
        (
            {"name": "Theirs", "slug": "theirs", "entra_tenant_ids": [TENANT]},
            409,
            "already belongs to another",
        ),
        ({"name": "Bad", "slug": "bad", "entra_tenant_ids": ["not-a-guid"]}, 422, "entra_tenant_ids"),
        ({"name": "Bad", "slug": "Bad_Slug"}, 422, "slug"),
        ({"name": "Bad", "slug": "x"}, 422, "slug"),
        ({"name": "Bad", "slug": "bad", "mfa_policy": "sometimes"}, 422, "mfa_policy"),
        ({"name": "Twice", "slug": "twice", "entra_tenant_ids": [OTHER_TENANT, OTHER_TENANT]}, 422, "twice"),
    ]
    for body, status, words in cases:
        response = await app.http.post("/api/v1/orgs", json=body, headers=app.admin)
        assert response.status_code == status, (body, response.text)
        assert words in response.json()["message"], (body, response.text)
    async with app.sessions() as session:
        slugs = set((await session.scalars(select(Organisation.slug))).all())
        tenants = set((await session.scalars(select(OrganisationTenant.tenant_id))).all())
    assert slugs == {"default", "first"}
    assert tenants == {TENANT}


async def test_an_organisation_key_manages_only_its_own_mfa_policy_sender_name_and_keys(app: Stack) -> None:
    mine = await create_org(app, name="Mine", slug="mine")
    theirs = await create_org(app, name="Theirs", slug="theirs")
    key = await org_key(app, mine["id"])

    own = await app.http.patch(
        f"/api/v1/orgs/{mine['id']}",
        json={"mfa_policy": "required", "sender_name": "Mine via agentOS"},
        headers=key,
    )
    assert own.status_code == 200, own.text
    assert own.json()["mfa_policy"] == "required"
    renamed = await app.http.patch(f"/api/v1/orgs/{mine['id']}", json={"name": "Ours now"}, headers=key)
    assert renamed.status_code == 403
    assert "only mfa_policy and sender_name" in renamed.json()["message"]
    tenants = await app.http.patch(
        f"/api/v1/orgs/{mine['id']}", json={"entra_tenant_ids": [TENANT]}, headers=key
    )
    assert tenants.status_code == 403
    assert (await app.http.get(f"/api/v1/orgs/{mine['id']}", headers=key)).json()["name"] == "Mine"

    for method, path, body in [
        ("GET", f"/api/v1/orgs/{theirs['id']}", None),
        ("PATCH", f"/api/v1/orgs/{theirs['id']}", {"sender_name": "x"}),
        ("POST", f"/api/v1/orgs/{theirs['id']}/keys", {"name": "x"}),
    ]:
        refused = await app.http.request(method, path, json=body, headers=key)
        assert refused.status_code == 404, (path, refused.text)
        assert refused.json()["message"] == "No organisation with that id"
    for method, path in [("GET", "/api/v1/orgs"), ("POST", "/api/v1/orgs"), ("GET", "/api/v1/clients")]:
        body = {"name": "N", "slug": "new-one"} if method == "POST" else None
        refused = await app.http.request(method, path, json=body, headers=key)
        assert refused.status_code == 403, (path, refused.text)
        assert refused.json()["error"] == "forbidden"

    second = await app.http.post(f"/api/v1/orgs/{mine['id']}/keys", json={"name": "second"}, headers=key)
    assert second.status_code == 201
    async with app.sessions() as session:
        scope = await key_scope(session, app.settings, second.json()["key"])
    assert scope is not None and str(scope.org_id) == mine["id"] and scope.actor == "admin-key:second"
    made = await events(app, "admin_key.create")
    assert [(e.target, e.details["name"]) for e in made] == [
        (mine["id"], "their key"),
        (mine["id"], "second"),
    ]
    assert all(second.json()["key"] not in str(e.details) for e in made)


async def test_the_codec_is_for_operators(app: Stack) -> None:
    mine = await create_org(app, name="Codec", slug="codec")
    key = await org_key(app, mine["id"])
    refused = await app.http.post("/codec/decode", content=b'{"payloads": []}', headers=key)
    assert refused.status_code == 403
    allowed = await app.http.post("/codec/decode", content=b'{"payloads": []}', headers=app.admin)
    assert allowed.status_code == 200


# -- the command line ------------------------------------------------------------------


def sso(*args: str) -> None:
    cli.main(list(args))


def rows(database_url: str) -> tuple[list[Organisation], list[Staff]]:
    engine = create_sync_engine(to_sync_url(database_url))
    try:
        with Session(engine) as session:
            return (
                list(session.scalars(select(Organisation).order_by(Organisation.slug)).all()),
                list(session.scalars(select(Staff).order_by(Staff.created_at)).all()),
            )
    finally:
        engine.dispose()


def test_sso_orgs_create_and_list(cli_database: str, capsys: pytest.CaptureFixture[str]) -> None:
    sso(
        "orgs",
        "create",
        "--name",
        "Harbour Lettings",
        "--slug",
        "harbour",
        "--tenant",
        TENANT,
        "--mfa-policy",
        "required",
        "--sender-name",
        "Harbour Lettings via agentOS",
    )
    assert re.fullmatch(
        r"Created the organisation harbour \(Harbour Lettings\): [0-9a-f-]{36}\n", capsys.readouterr().out
    )
    sso("orgs", "list")
    listed = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[:4] for line in listed] == [
        ["default", "Default organisation", "active", "no Entra tenant"],
        ["harbour", "Harbour Lettings", "active", TENANT],
    ]
    with pytest.raises(SystemExit, match="slug: another organisation already uses this slug"):
        sso("orgs", "create", "--name", "Again", "--slug", "harbour")
    with pytest.raises(SystemExit, match="entra_tenant_ids"):
        sso("orgs", "create", "--name", "Bad", "--slug", "bad", "--tenant", "nope")
    orgs, _ = rows(cli_database)
    assert [o.slug for o in orgs] == ["default", "harbour"]


async def key_org(key: str) -> uuid.UUID | None:
    settings = get_settings()
    engine = create_engine(settings.async_database_url)
    try:
        async with session_factory(engine)() as session:
            scope = await key_scope(session, settings, key)
    finally:
        await engine.dispose()
    assert scope is not None
    return scope.org_id


def test_sso_admin_key_create_for_an_organisation(
    cli_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    sso("orgs", "create", "--name", "Keyed", "--slug", "keyed")
    capsys.readouterr()
    sso("admin-key", "create", "--name", "keyed-ops", "--org", "keyed")
    out = capsys.readouterr().out
    assert "for the organisation keyed" in out
    [key] = [w for w in out.split() if w.startswith("ssoak_")]
    orgs, _ = rows(cli_database)
    assert asyncio.run(key_org(key)) == next(o.id for o in orgs if o.slug == "keyed")
    sso("admin-key", "create", "--name", "ops")
    [operator_key] = [w for w in capsys.readouterr().out.split() if w.startswith("ssoak_")]
    assert asyncio.run(key_org(operator_key)) is None
    with pytest.raises(SystemExit, match="No organisation with the slug 'nowhere'"):
        sso("admin-key", "create", "--name", "lost", "--org", "nowhere")


def test_sso_staff_create_in_an_organisation_and_an_operator(
    cli_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["staff", "create", "--last-name", "Person", "--no-email"]
    sso(*base, "--first-name", "Dee", "--email", "dee@example.com")  # one organisation: no --org needed
    sso("orgs", "create", "--name", "Second", "--slug", "second")
    capsys.readouterr()
    with pytest.raises(SystemExit, match="org_id: required"):
        sso(*base, "--first-name", "Nobody", "--email", "nobody@example.com")
    sso(*base, "--first-name", "Sec", "--email", "sec@example.com", "--org", "second")
    sso(*base, "--first-name", "Op", "--email", "op@example.com", "--org", "default", "--operator")
    out = capsys.readouterr().out
    assert re.search(r"Created Op Person \(operator\): ", out), out
    orgs, people = rows(cli_database)
    second = next(o.id for o in orgs if o.slug == "second")
    assert [(p.first_name, p.org_id, p.is_admin, p.is_operator) for p in people] == [
        ("Dee", DEFAULT_ORG_ID, False, False),
        ("Sec", second, False, False),
        ("Op", DEFAULT_ORG_ID, True, True),
    ]
