"""The MFA obligation on a real stack of its own (`sso dev` with SSO_MFA_POLICY=required and
durations of seconds, real SMTP): a person who skips MFA in setup is reminded by email and,
past the deadline, a sign-in with the right password completes only once MFA is set up."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pyotp
import pytest
from temporalio.client import Client

from tests.support.e2e import (
    World,
    check_done,
    eventually,
    new_browser,
    open_page,
    press,
    setup_to_mfa,
    sign_in,
    status,
    text_of,
    wait_for_subject,
)
from tests.support.stack import DevStack, SmtpSink, running_sso_dev

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

REMINDER = "Set up Multi-Factor Authentication for agentOS Single Sign-On"
POLICY = {"SSO_MFA_POLICY": "required", "SSO_MFA_REMINDERS": "PT3S", "SSO_MFA_GRACE": "PT8S"}


@pytest.fixture(scope="module")
def stack(smtp: SmtpSink, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    """Not the shared stack: this one runs under `required`, with deadlines in seconds."""
    with running_sso_dev(tmp_path_factory.mktemp("sso-dev-mfa"), smtp.port, extra_env=POLICY) as dev:
        yield dev


async def obligation_step(api: httpx.AsyncClient, staff_id: str) -> str | None:
    obligation = (await status(api, staff_id))["mfa_obligation"]
    return None if obligation is None else str(obligation["step"])


async def test_reminded_then_sign_in_sets_up_mfa_before_it_completes(
    api: httpx.AsyncClient, world: World, temporal: Client
) -> None:
    async with new_browser() as person:
        staff, mfa = await setup_to_mfa(api, world, person, "mia", first="Mia")
        await check_done(person, await press(person, mfa, "No thanks, I'll set it up later"), staff)
    staff_id, to = staff["id"], staff["external_email_1"]
    [password] = [
        typed
        for typed, why in world.secrets.items()
        if why == "a password typed for mia (password)" and " lantern " in typed
    ]

    received = await wait_for_subject(world, to, REMINDER)
    text = received.message.get_body(preferencelist=("plain",))
    assert text is not None and f"{world.stack.base_url}/sso/account/mfa" in text.get_content()

    async def overdue() -> bool:
        return await obligation_step(api, staff_id) == "overdue"

    await eventually(overdue, 60, what="the MFA deadline to pass")
    async with new_browser() as person:
        answer = await sign_in(person, world, to, password)
        assert answer.status_code == 303 and answer.headers["location"] == "/sso/login/mfa-setup", answer.text
        page = await open_page(person, f"{world.stack.base_url}/sso/login/mfa-setup")
        assert "No thanks" not in text_of(page) and "set it up now to finish signing in" in text_of(page)
        key = re.findall(r'<code id="manual-key" class="key">([^<]*)</code>', page.text)[0]
        code = pyotp.TOTP(key.replace(" ", "")).now()
        world.codes[code] = "the TOTP code typed for mia at the forced MFA set-up"
        done = await press(person, page, "Complete Setup", code=code)
        assert done.status_code == 200 and "Save your recovery codes" in text_of(done), done.text
        account = await person.get(f"{world.stack.base_url}/sso/account")
        assert account.status_code == 200 and "Mia" in text_of(account)

    async def ended() -> bool:
        return await obligation_step(api, staff_id) == "done"

    await eventually(ended, 30, what="the obligation to end")
    assert (await status(api, staff_id))["mfa_enabled"] is True
    # The worker applied the policy at its start: the rollout ran (nobody was due then).
    rollout = await temporal.get_workflow_handle("mfa-policy-rollout").describe()
    assert rollout.workflow_type == "MfaPolicyRollout"
