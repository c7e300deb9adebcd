"""End to end: an admin imports 200 people from a CSV with problems in some rows, on the real
stack (`sso dev`, real SMTP). The dry run names every bad row and its column and creates
nobody; the import creates the rest and its batch sends each new person one distinct working
link, with its progress in the API and its state in the Temporal UI's search attribute."""

from __future__ import annotations

import uuid

import httpx
import pytest
from temporalio.client import Client

from core.search_attributes import SSO_BATCH_STATE
from tests.support.bulk import (
    batch_until_done,
    links_when_all_sent,
    one_distinct_link_each,
    opens_the_setup_page,
    people_csv,
)
from tests.support.stack import DevStack, SmtpSink

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

CSV = {"Content-Type": "text/csv"}


async def test_an_import_of_200_with_bad_rows(
    api: httpx.AsyncClient, stack: DevStack, smtp: SmtpSink, temporal: Client
) -> None:
    label = f"imp{uuid.uuid4().hex[:8]}"
    people = people_csv(label, 200, bad_every=10)
    assert len(people.bad) == 20

    dry = await api.post(
        "/api/v1/staff/imports", params={"dry_run": "true"}, content=people.text, headers=CSV
    )
    assert dry.status_code == 200, dry.text
    preview = dry.json()
    assert {e["row"]: e["column"] for e in preview["errors"]} == people.bad
    assert preview["would_create"] == 180
    assert (await api.get("/api/v1/staff", params={"q": label})).json()["total"] == 0

    done = await api.post(
        "/api/v1/staff/imports", params={"send_email": "true"}, content=people.text, headers=CSV
    )
    assert done.status_code == 201, done.text
    result = done.json()
    assert sorted(p["external_email_1"] for p in result["created"]) == sorted(people.good)
    assert {e["row"] for e in result["skipped"]} == set(people.bad)
    assert (await api.get("/api/v1/staff", params={"q": label})).json()["total"] == 180

    progress = await batch_until_done(api, result["batch_id"], timeout=180)
    last = progress[-1]
    assert (last["state"], last["total"], last["sent"], last["failed"], last["left"]) == (
        "done",
        180,
        180,
        0,
        0,
    )
    assert all(p["sent"] + p["failed"] + p["left"] == 180 for p in progress)
    described = await temporal.get_workflow_handle(last["workflow_id"]).describe()
    assert described.typed_search_attributes.get(SSO_BATCH_STATE) == "done"

    links = one_distinct_link_each(await links_when_all_sent(smtp, people.good, stack.base_url, timeout=180))
    for address in people.good[:: len(people.good) // 10]:
        await opens_the_setup_page(stack.base_url, links[address])
