"""The admin API against its own OpenAPI document (schemathesis).

Every operation of the admin API, in-process with a real worker on a real Temporal dev server,
gets requests generated from the schema the app serves at /openapi.json: valid ones (for
unknown people and for people in every state: no account, a locked account with MFA and
sessions, a linked Microsoft account, a setup in progress) and invalid ones. Every answer must
be documented: never a 5xx, a documented status code and content type, a body that validates
against the documented schema, and invalid input refused with a 4xx. Without a valid admin key
every operation answers 401 with the documented error body.
"""

from __future__ import annotations

import gc
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
import schemathesis
import schemathesis.checks
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.core.parameters import ParameterLocation
from schemathesis.schemas import BaseSchema
from sqlalchemy import update
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from api.services.sessions import Sessions
from core.models import EntraLink, Organisation, utcnow
from core.orgs import DEFAULT_ORG_ID
from tests.support.accounts import code_in, emails_with_subject, make_person
from tests.support.config import _migrate, examples, make_settings
from tests.support.harness import Stack, running_stack
from tests.support.properties import check_examples

pytestmark = [pytest.mark.pages, pytest.mark.asyncio(loop_scope="session")]

# The operations as the app documents them, for the test ids; the test itself reads the
# schema the running app serves and checks it lists exactly these.
DOCUMENT = create_app(make_settings()).openapi()
ADMIN_API = "/api/v1/"
OPERATIONS = [
    (method.upper(), path)
    for path, item in DOCUMENT["paths"].items()
    if path.startswith(ADMIN_API) or path == "/healthz"
    for method in item
]
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.response_headers_conformance,
    schemathesis.checks.negative_data_rejection,
]
# Generous admin limits: the rate limits have their own test below (the per-person email
# limit stays at its default: the fuzzing may meet that 429 too). Batches send one email a
# minute, so the fixture's batch is still running when its pause, resume and cancel are tried.
LIMITS = {"admin_rate_limit": 1_000_000, "auth_failure_limit": 1_000_000, "batch_send_rate": 1}
CSV_FILE = "first_name,last_name,external_email_1,is_admin\r\n"


@dataclass
class Fuzz:
    stack: Stack
    schema: BaseSchema
    staff_ids: list[str]  # people in different states, for path parameters
    client_ids: list[str]  # registered apps: the first stays, the last is there to be deleted
    to_erase: list[str]  # people there to be erased (never those above)
    email_change: tuple[str, str]  # a person whose new address waits for this code
    batch_id: str  # a staff batch still running
    org_to_erase: str  # a suspended organisation, with a person, there to be erased


ERASE = ("DELETE", "/api/v1/staff/{staff_id}")
CONFIRM_EMAIL = ("POST", "/api/v1/staff/{staff_id}/email-change/confirm")
ERASE_ORG = ("DELETE", "/api/v1/orgs/{org_id}")


async def person_changing_email(stack: Stack) -> tuple[str, str]:
    """A person whose new External Email 1 waits for its code, and the code."""
    person = await stack.create_staff()
    new = f"moved.{uuid.uuid4().hex[:8]}@example.org"
    changed = await stack.http.patch(
        f"/api/v1/staff/{person['id']}", json={"external_email_1": new}, headers=stack.admin
    )
    assert changed.status_code == 200, changed.text
    (mail,) = await emails_with_subject(
        stack.sessions, stack.settings, new, "Confirm your new agentOS sign-in email"
    )
    return person["id"], code_in(mail)


def transport_kwargs(case: Case, headers: dict[str, str]) -> dict[str, Any]:
    """The request schemathesis built, for httpx (the requests-style keywords, translated)."""
    sent = case.as_transport_kwargs(base_url="http://testserver", headers=headers)
    kwargs: dict[str, Any] = {
        "method": sent["method"],
        "url": httpx.URL(sent["url"]).raw_path.decode(),
        "headers": sent["headers"],
        "params": sent.get("params") or None,
        "cookies": sent.get("cookies") or None,
    }
    if "json" in sent:
        kwargs["json"] = sent["json"]
    elif isinstance(sent.get("data"), bytes | str):
        kwargs["content"] = sent["data"]
    elif sent.get("data") is not None:
        kwargs["data"] = sent["data"]
    return kwargs


async def send(http: httpx.AsyncClient, case: Case, headers: dict[str, str]) -> httpx.Response:
    kwargs = transport_kwargs(case, headers)
    return await http.request(kwargs.pop("method"), kwargs.pop("url"), **kwargs)


def about_the_credential(case: Case) -> bool:
    """A negative case whose Authorization header is missing or mutated: it goes out as
    generated, without the admin key, and must be refused with 401."""
    if case.meta is None:  # chosen by hand, below
        return False
    if "Authorization" not in (case.headers or {}):
        return True
    return any(
        m.parameter_location == ParameterLocation.HEADER and (m.parameter or "").lower() == "authorization"
        for m in getattr(case.meta.phase.data, "mutations", ())
    )


async def people_in_every_state(stack: Stack) -> list[str]:
    plain = await stack.create_staff()
    admin = (
        await stack.http.post(
            "/api/v1/staff",
            headers=stack.admin,
            json={
                "first_name": "Ada",
                "last_name": "Admin",
                "external_email_1": f"ada.{uuid.uuid4().hex[:8]}@example.com",
                "is_admin": True,
            },
        )
    ).json()
    locked = await make_person(
        stack.sessions,
        stack.settings,
        mfa=True,
        failed_sign_ins=7,
        locked_until=utcnow() + timedelta(hours=1),
    )
    linked = await make_person(stack.sessions, stack.settings, first_name="Lin", last_name="Ked")
    async with stack.sessions() as session:
        await Sessions(stack.settings, session).create("signin", locked.staff_id, timedelta(hours=1))
        session.add(
            EntraLink(
                staff_id=linked.staff_id,
                tenant_id=str(uuid.uuid4()),
                object_id=str(uuid.uuid4()),
                display_name="Lin Ked",
                email=linked.email,
                linked_via="session",
            )
        )
        await session.commit()
    in_setup = await stack.create_staff()
    sent = await stack.http.post(f"/api/v1/staff/{in_setup['id']}/sso-email", headers=stack.admin)
    assert sent.status_code == 202, sent.text
    await stack.wait_for(in_setup["id"], lambda s: s["state"] == "email_sent")
    # An administrator whose MFA was reset: their obligation (always `required`) has a
    # deadline the extension can move, once.
    obliged = await make_person(stack.sessions, stack.settings, mfa=True, is_admin=True, first_name="Ob")
    reset = await stack.http.delete(f"/api/v1/staff/{obliged.staff_id}/mfa", headers=stack.admin)
    assert reset.status_code == 200, reset.text
    await stack.wait_for(str(obliged.staff_id), lambda s: s["mfa_obligation"] is not None)
    return [
        plain["id"],
        admin["id"],
        str(locked.staff_id),
        str(linked.staff_id),
        in_setup["id"],
        str(obliged.staff_id),
    ]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def fuzz(
    temporal_dev_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Fuzz]:
    """One stack for the whole module (SQLite: the schema, not the database, is under test), on
    a real Temporal server: the fuzzing sends, supersedes and cancels in quick succession."""
    path = tmp_path_factory.mktemp("schema") / "sso.db"
    _migrate(f"sqlite:///{path}")
    async with running_stack(temporal_dev_env, f"sqlite+aiosqlite:///{path}", **LIMITS) as stack:
        document = (await stack.http.get("/openapi.json")).json()
        schema = schemathesis.openapi.from_dict(document)
        yield Fuzz(
            stack,
            schema,
            await people_in_every_state(stack),
            [await app(stack), await app(stack)],
            [(await stack.create_staff())["id"] for _ in range(2)],
            await person_changing_email(stack),
            await running_batch(stack),
            # Last: with a second organisation, a create must name its organisation.
            await suspended_org(stack),
        )
    gc.collect()  # the worker's SQLite engine, now, not on a later flow's thread (tests/conftest.py stack)


async def running_batch(stack: Stack) -> str:
    """A batch of ten people, sending one a minute: running for the whole module."""
    people = [(await stack.create_staff())["id"] for _ in range(10)]
    started = await stack.http.post(
        "/api/v1/staff/batches", json={"staff_ids": people, "action": "send_email"}, headers=stack.admin
    )
    assert started.status_code == 202, started.text
    return str(started.json()["id"])


async def suspended_org(stack: Stack) -> str:
    """An organisation with a person, suspended (as an operator would, directly here)."""
    created = await stack.http.post(
        "/api/v1/orgs", json={"name": "Closing Lettings", "slug": "closing"}, headers=stack.admin
    )
    assert created.status_code == 201, created.text
    org_id = uuid.UUID(created.json()["id"])
    await stack.person(org_id=org_id)
    async with stack.sessions() as session:
        await session.execute(
            update(Organisation).where(Organisation.id == org_id).values(status="suspended")
        )
        await session.commit()
    return str(org_id)


async def app(stack: Stack) -> str:
    body = {"client_name": "Fuzzed app", "redirect_uris": ["https://app.example.test/cb"]}
    created = await stack.http.post("/api/v1/clients", json=body, headers=stack.admin)
    assert created.status_code == 201, created.text
    return str(created.json()["client_id"])


async def test_every_admin_operation_is_covered(fuzz: Fuzz) -> None:
    served = {(op.ok().method.upper(), op.ok().path) for op in fuzz.schema.get_all_operations()}
    admin = {(method, path) for method, path in served if path.startswith(ADMIN_API)}
    assert admin == {(m, p) for m, p in OPERATIONS if p.startswith(ADMIN_API)}
    # staff: create, list, get, patch, erase, move; sso-email: send, cancel; sso; revoke,
    # unlock, entra-link, mfa, mfa/extend, disable, enable, email-change/confirm; clients:
    # create, list, get, patch, delete, secret; imports; batches: start, progress,
    # pause/resume/cancel; orgs: create, list, get, patch, erase, keys, suspend, resume
    assert len(admin) == 35


def chosen_cases(fuzz: Fuzz, operation: Any) -> list[Case]:
    """Well-formed requests for each person (so every operation reaches its success answer,
    whatever the random draw)."""
    if operation.path == "/api/v1/staff" and operation.method.upper() == "POST":
        return [
            operation.Case(
                body={
                    "first_name": "Cy",
                    "last_name": "Chosen",
                    "external_email_1": f"cy.{uuid.uuid4().hex[:8]}@example.com",
                    # Named: the fuzzing of POST /api/v1/orgs may have added organisations.
                    "org_id": str(DEFAULT_ORG_ID),
                },
                media_type="application/json",
            )
        ]
    method = operation.method.upper()
    if (method, operation.path) == ERASE:
        return [operation.Case(path_parameters={"staff_id": staff_id}) for staff_id in fuzz.to_erase]
    if (method, operation.path) == CONFIRM_EMAIL:
        staff_id, code = fuzz.email_change
        body = {"code": code}
        return [
            operation.Case(path_parameters={"staff_id": staff_id}, body=body, media_type="application/json")
        ]
    if ("{staff_id}" in operation.path and method == "PATCH") or operation.path.endswith("/move"):
        body = {"first_name": "Chosen"} if method == "PATCH" else {"org_id": str(DEFAULT_ORG_ID)}
        return [
            operation.Case(path_parameters={"staff_id": staff_id}, body=body, media_type="application/json")
            for staff_id in fuzz.staff_ids
        ]
    if operation.path == "/api/v1/orgs" and operation.method.upper() == "POST":
        body = {"name": "Chosen Lettings", "slug": f"chosen-{uuid.uuid4().hex[:8]}"}
        return [operation.Case(body=body, media_type="application/json")]
    if (method, operation.path) == ERASE_ORG:
        return [operation.Case(path_parameters={"org_id": fuzz.org_to_erase})]
    if "{org_id}" in operation.path:
        body = {"name": "chosen"} if operation.path.endswith("/keys") else {}
        return [
            operation.Case(
                path_parameters={"org_id": str(DEFAULT_ORG_ID)},
                **({"body": body, "media_type": "application/json"} if method != "GET" else {}),
            )
        ]
    if "{staff_id}" in operation.path:
        return [operation.Case(path_parameters={"staff_id": staff_id}) for staff_id in fuzz.staff_ids]
    if operation.path == "/api/v1/staff/imports":
        row = f"Im,Ported,im.{uuid.uuid4().hex[:8]}@example.com,FALSE\r\n"
        return [
            operation.Case(body=CSV_FILE + row, media_type="text/csv", query=query)
            # Named: the fuzzing of POST /api/v1/orgs may have added organisations.
            for query in ({"dry_run": "true", "org_id": str(DEFAULT_ORG_ID)}, {"org_id": str(DEFAULT_ORG_ID)})
        ]
    if operation.path == "/api/v1/staff/batches":
        body = {"staff_ids": fuzz.staff_ids[:1], "action": "send_email"}
        return [operation.Case(body=body, media_type="application/json")]
    if "{control}" in operation.path:
        return [
            operation.Case(path_parameters={"batch_id": fuzz.batch_id, "control": control})
            for control in ("pause", "resume", "cancel")
        ]
    if "{batch_id}" in operation.path:
        return [operation.Case(path_parameters={"batch_id": fuzz.batch_id})]
    if operation.path == "/api/v1/clients" and operation.method.upper() == "POST":
        body = {"client_name": "Chosen app", "redirect_uris": ["https://chosen.example.test/cb"]}
        return [operation.Case(body=body, media_type="application/json")]
    if "{client_id}" in operation.path:
        client_id = fuzz.client_ids[-1 if operation.method.upper() == "DELETE" else 0]
        if operation.method.upper() == "PATCH":
            return [
                operation.Case(
                    path_parameters={"client_id": client_id}, body={}, media_type="application/json"
                )
            ]
        return [operation.Case(path_parameters={"client_id": client_id})]
    return [operation.Case(query={})]


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
async def test_operation_answers_as_documented(fuzz: Fuzz, method: str, path: str) -> None:
    operation = fuzz.schema[path][method]
    seen: Counter[int] = Counter()

    async def answers_as_documented(case: Case) -> None:
        keyless = about_the_credential(case) and path != "/healthz"
        response = await send(fuzz.stack.http, case, {} if keyless else fuzz.stack.admin)
        seen[response.status_code] += 1
        case.validate_response(response, checks=CHECKS)
        if keyless:
            # FastAPI decodes a JSON body before it runs dependencies: a body that isn't JSON
            # at all is refused as such (400/422) before the key is checked. Nothing is read.
            unreadable = response.status_code == 400 or (
                response.status_code == 422
                and {e["type"] for e in response.json()["detail"]} == {"json_invalid"}
            )
            assert response.status_code == 401 or unreadable, response.text

    for case in chosen_cases(fuzz, operation):
        await answers_as_documented(case)
    strategies = [
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    ]
    if "{staff_id}" in path:
        people = fuzz.to_erase if (method, path) == ERASE else fuzz.staff_ids
        strategies += [
            operation.as_strategy(GenerationMode.POSITIVE, path_parameters={"staff_id": staff_id})
            for staff_id in people
        ]
    if "{batch_id}" in path:
        strategies.append(
            operation.as_strategy(GenerationMode.POSITIVE, path_parameters={"batch_id": fuzz.batch_id})
        )
    await check_examples(st.one_of(strategies), answers_as_documented, examples(40))
    assert any(200 <= status < 300 for status in seen), seen  # not only refusals
    if operation.path_parameters or operation.query or operation.body:
        assert any(400 <= status < 500 for status in seen), seen


@pytest.mark.parametrize(
    ("method", "path"),
    [op for op in OPERATIONS if op[1].startswith(ADMIN_API)],
    ids=[f"{m} {p}" for m, p in OPERATIONS if p.startswith(ADMIN_API)],
)
async def test_without_a_valid_key_every_operation_answers_401(fuzz: Fuzz, method: str, path: str) -> None:
    operation = fuzz.schema[path][method]
    credentials = st.sampled_from(
        [
            {},
            {"Authorization": "Bearer ssoak_wrong"},
            {"Authorization": "Basic YWRtaW46YWRtaW4="},
            {"Authorization": "Bearer"},
            {"Authorization": ""},
        ]
    )

    async def refused(drawn: tuple[Case, dict[str, str]]) -> None:
        case, headers = drawn
        (case.headers or {}).pop("Authorization", None)
        response = await send(fuzz.stack.http, case, headers)
        assert response.status_code == 401, response.text
        assert response.json()["error"] == "not_authenticated"
        assert response.headers["www-authenticate"] == "Bearer"
        case.validate_response(response, checks=CHECKS)

    await check_examples(
        st.tuples(operation.as_strategy(GenerationMode.POSITIVE), credentials), refused, examples(5)
    )


async def test_an_organisation_key_never_gets_another_organisations_person(fuzz: Fuzz) -> None:
    """Two organisations' keys: whatever A's key asks about B's people (generated from the
    schema), the answer is never a 5xx and never carries B's person."""
    stack = fuzz.stack
    keys: dict[str, dict[str, str]] = {}
    for slug in ("fuzz-alpha", "fuzz-bravo"):
        org = await stack.http.post("/api/v1/orgs", json={"name": slug, "slug": slug}, headers=stack.admin)
        assert org.status_code == 201, org.text
        key = await stack.http.post(
            f"/api/v1/orgs/{org.json()['id']}/keys", json={"name": slug}, headers=stack.admin
        )
        keys[slug] = {"Authorization": f"Bearer {key.json()['key']}"}
    theirs = []
    for n in range(2):
        body = {
            "first_name": "Bee",
            "last_name": f"Bravo{n}",
            "external_email_1": f"bee{n}.{uuid.uuid4().hex[:8]}@bravo.example",
        }
        created = await stack.http.post("/api/v1/staff", json=body, headers=keys["fuzz-bravo"])
        assert created.status_code == 201, created.text
        theirs.append(created.json())
    mine = keys["fuzz-alpha"]

    async def never_theirs(case: Case) -> None:
        response = await send(stack.http, case, mine)
        case.validate_response(response, checks=CHECKS)
        for person in theirs:
            assert person["id"] not in response.text and person["external_email_1"] not in response.text
        if (
            "{staff_id}" in case.path
            and case.path_parameters
            and case.path_parameters.get("staff_id") in {p["id"] for p in theirs}
        ):
            assert response.status_code in (400, 403, 404, 422), response.text

    staff_operations = [(m, p) for m, p in OPERATIONS if p.startswith("/api/v1/staff")]
    for method, path in staff_operations:
        operation = fuzz.schema[path][method]
        strategies = [operation.as_strategy(GenerationMode.POSITIVE)]
        if "{staff_id}" in path:
            strategies += [
                operation.as_strategy(GenerationMode.POSITIVE, path_parameters={"staff_id": p["id"]})
                for p in theirs
            ]
        await check_examples(st.one_of(strategies), never_theirs, examples(10))


async def test_rate_limits_answer_as_documented(
    temporal_dev_env: WorkflowEnvironment, sqlite_url: str
) -> None:
    async with running_stack(
        temporal_dev_env, sqlite_url, admin_rate_limit=4, auth_failure_limit=1, setup_email_limit=1
    ) as stack:
        schema = schemathesis.openapi.from_dict((await stack.http.get("/openapi.json")).json())
        staff = await stack.create_staff()
        send_email = schema["/api/v1/staff/{staff_id}/sso-email"]["POST"].Case(
            path_parameters={"staff_id": staff["id"]}
        )
        listing = schema["/api/v1/staff"]["GET"].Case(query={})
        answers = [
            await send(stack.http, case, stack.admin) for case in (send_email, send_email, listing, listing)
        ]
        assert [a.status_code for a in answers] == [202, 429, 200, 429]  # per person, per key
        wrong = {"Authorization": "Bearer ssoak_guess"}
        answers += [await send(stack.http, listing, wrong) for _ in range(2)]
        assert [a.status_code for a in answers[-2:]] == [401, 429]  # failed key checks per IP
        for case, answer in zip([send_email] * 2 + [listing] * 4, answers, strict=True):
            case.validate_response(answer, checks=CHECKS)
            if answer.status_code == 429:
                assert int(answer.headers["retry-after"]) > 0
                assert answer.json()["error"] == "rate_limited"


async def test_health_answers_as_documented_when_temporal_is_down(sqlite_url: str) -> None:
    settings = make_settings(database_url=sqlite_url, temporal_address="127.0.0.1:1")
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        schema = schemathesis.openapi.from_dict((await http.get("/openapi.json")).json())
        case = schema["/healthz"]["GET"].Case()
        response = await send(http, case, {})
        assert response.status_code == 503  # a deliberate 5xx: documented, so it conforms
        case.validate_response(
            response,
            checks=[check for check in CHECKS if check is not schemathesis.checks.not_a_server_error],
        )
