"""Thirty people onboard at once over HTTP while the worker is SIGKILLed twice at random moments
(restarted 3 s after each kill) and Temporal's server restarts once, on PostgreSQL (issue 12).

Every person ends active, and every email a person received worked until their own next
request replaced it: nobody asks for a new email or code here, so each person's copies of the
setup email carry one link and their code emails one code (a retried send repeats its
secret). The time from the last fault to the last person done is printed (and reported by
`make bench`), never asserted. The seed is printed; SSO_FAULT_SEED=<seed> replays a run.
"""

from __future__ import annotations

import pytest

from tests.support.faults import StackFactory
from tests.support.onboarding_chaos import onboard_under_faults, seed_from_env
from tests.support.stack import SmtpSink

pytestmark = [pytest.mark.faults, pytest.mark.postgres]

PEOPLE = 30


async def test_thirty_people_onboard_through_worker_kills_and_a_temporal_restart(
    fault_stack: StackFactory, smtp: SmtpSink, postgres_schema: tuple[str, str]
) -> None:
    seed = seed_from_env()
    print(f"\n[faults] onboarding under faults: seed {seed}", flush=True)
    stack = fault_stack(database_url=postgres_schema[1])
    run = await onboard_under_faults(stack, smtp, PEOPLE, seed)
    print(f"[faults] {run.describe()}", flush=True)

    assert not run.failures, (run.describe(), run.failures, stack.logs())
    assert [f.kind for f in run.faults].count("worker killed") == 2
    assert [f.kind for f in run.faults].count("temporal restarted") == 1
    assert set(run.states.values()) == {"active"}, (run.describe(), run.states)
    assert len(run.done_at) == PEOPLE
    for address, tokens in run.setup_emails.items():
        token, code = run.used[address]
        # Every copy carries the link the person used, so every copy worked.
        assert tokens and set(tokens) == {token}, (run.describe(), address, len(tokens))
        codes = run.code_emails[address]
        assert codes and set(codes) == {code}, (run.describe(), address, len(codes))
