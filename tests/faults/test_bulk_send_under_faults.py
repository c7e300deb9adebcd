"""A bulk send to 1,000 people (a CSV import with send_email) while the worker is SIGKILLed
twice and Temporal's server restarts once, on PostgreSQL (issue 20).

The batch finishes with every person sent to, and every person holds exactly one distinct
working link: each person's copies of the setup email carry the same link (a retried chunk
finds the setup it started; a retried send repeats its link), links are distinct across
people, each is live in the database and a sample opens the setup page. The batch is paced
(SSO_BATCH_SEND_RATE) so that the faults strike while it runs. The seed is printed;
SSO_FAULT_SEED=<seed> replays a run.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid

import pytest

from core.crypto import LINK_PURPOSE, token_hash
from core.devstack import SQLITE_PRAGMAS
from tests.support.bulk import (
    batch_until_done,
    links_when_all_sent,
    one_distinct_link_each,
    opens_the_setup_page,
    people_csv,
)
from tests.support.config import TEST_SECRET_KEY
from tests.support.fault_people import admin_api
from tests.support.faults import StackFactory
from tests.support.onboarding_chaos import ChaosRun, seed_from_env, strike
from tests.support.stack import SmtpSink

pytestmark = [pytest.mark.faults, pytest.mark.postgres]

PEOPLE = 1000
RATE = "1500"  # a minute: 40 s of sending, long enough for every fault to strike during it
GUARD = 600.0  # seconds: a guard against a hang, not a measure


async def test_a_bulk_send_to_1000_through_worker_kills_and_a_temporal_restart(
    fault_stack: StackFactory, smtp: SmtpSink, postgres_schema: tuple[str, str]
) -> None:
    seed = seed_from_env()
    print(f"\n[faults] bulk send under faults: seed {seed}", flush=True)
    rng = random.Random(seed)
    # 1,000 setup flows: Temporal's SQLite as `sso dev` runs it (WAL), not an fsync per write.
    stack = fault_stack(
        database_url=postgres_schema[1], temporal_pragmas=SQLITE_PRAGMAS, batch_send_rate=RATE
    )
    people = people_csv(f"bulk{uuid.uuid4().hex[:6]}", PEOPLE)
    run = ChaosRun(seed=seed, people=PEOPLE)
    async with admin_api(stack) as api:
        imported = await api.post(
            "/api/v1/staff/imports",
            params={"send_email": "true"},
            content=people.text,
            headers={"Content-Type": "text/csv"},
        )
        assert imported.status_code == 201, imported.text
        batch_id = imported.json()["batch_id"]
        t0 = time.monotonic()
        chaos = asyncio.ensure_future(strike(stack, rng, t0, run))
        progress = await batch_until_done(api, batch_id, timeout=GUARD)
        await chaos
    done_at = time.monotonic() - t0
    faults = ", ".join(f"{f.kind} at {f.at:.1f} s" for f in run.faults)
    steps = {p["sent"] // 100: p["at"] - t0 for p in reversed(progress)}
    timeline = ", ".join(f"{n * 100} at {at:.0f} s" for n, at in sorted(steps.items()))
    print(f"[faults] seed {seed}: {faults}; sent {timeline}; batch done at {done_at:.1f} s", flush=True)

    assert [f.kind for f in run.faults].count("worker killed") == 2
    assert [f.kind for f in run.faults].count("temporal restarted") == 1
    assert max(f.at for f in run.faults) < done_at, "every fault struck while the batch ran"
    last = progress[-1]
    assert (last["state"], last["sent"], last["failed"], last["left"]) == ("done", PEOPLE, 0, 0), last

    links = one_distinct_link_each(
        await links_when_all_sent(smtp, people.good, stack.base_url, timeout=GUARD)
    )
    # No retry superseded a setup the batch had started: one setup (and one live link) each.
    assert stack.query("SELECT staff_id FROM sso_setups GROUP BY staff_id HAVING count(*) > 1") == []
    live = {
        row[0]
        for row in stack.query(
            "SELECT token_hash FROM setup_links WHERE consumed_at IS NULL AND revoked_at IS NULL"
        )
    }
    assert all(token_hash(TEST_SECRET_KEY, LINK_PURPOSE, token) in live for token in links.values())
    for address in rng.sample(people.good, 10):
        await opens_the_setup_page(stack.base_url, links[address])
