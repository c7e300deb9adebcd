"""The MFA obligation end to end in-process: the web app and a real worker on the
time-skipping server. Under `required`, a skip in setup brings reminder emails and, once the
deadline has passed, a sign-in that completes only after MFA is set up (no skip, the return
address kept); under `optional`, one reminder and nothing forced. The admin API and the
admin's person page show the obligation, and an admin extends it once.

docs/security.md §14 and §38 are what these prove.
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

import pyotp
import pytest
from sqlalchemy import select

from core.models import AuditEvent, DeploymentFact, Passkey
from core.search_attributes import SSO_MFA_REMINDERS, SSO_MFA_STEP, SSO_STAFF_ID
from core.settings import MfaPolicy
from tests.support.accounts import (
    PASSWORD,
    Browser,
    account_row,
    browsing,
    emails_with_subject,
    hidden_fields,
    outbox,
    page_text,
    recovery_codes_in,
    redirected_to,
    sign_in,
    update_account,
)
from tests.support.harness import Stack
from tests.support.mfa import obligation
from tests.support.oidc import signed_in_admin
from tests.support.passkey_key import soft_key, store_passkey
from tests.support.setup_pages import at_code_step, manual_key
from worker import apply_policy
from workflows.mfa_enrollment import enrollment_workflow_id
from workflows.mfa_rollout import ROLLOUT_WORKFLOW_ID

pytestmark = [pytest.mark.pages, pytest.mark.asyncio(loop_scope="session")]

REMINDER = "Set up Multi-Factor Authentication for agentOS Single Sign-On"
SKIP = "No thanks, I'll set it up later"
DAY = timedelta(days=1)
MINUTE = timedelta(minutes=1)


async def skipped_in_setup(stack: Stack, browser: Browser) -> dict[str, Any]:
    """A new person through setup, choosing "No thanks, I'll set it up later"."""
    step = await at_code_step(stack, browser)
    confirmed = await browser.submit(step.page, "/sso/setup/confirm", code=step.code)
    assert redirected_to(confirmed, "/sso/setup/mfa"), confirmed.text
    mfa_page = await browser.get("/sso/setup/mfa")
    assert SKIP in page_text(mfa_page)
    assert redirected_to(await browser.submit(mfa_page, "/sso/setup/mfa/skip"), "/sso/setup/done")
    return step.staff


async def test_under_required_reminders_then_sign_in_sets_up_mfa_with_no_skip(required: Stack) -> None:
    stack = required
    async with browsing(stack.transport) as browser:
        staff = await skipped_in_setup(stack, browser)
    staff_id, email = staff["id"], staff["external_email_1"]
    started = await obligation(stack, staff_id, "waiting")
    assert (started["policy"], started["reminders_sent"], started["extended"]) == ("required", 0, False)
    # The test server's clock runs ahead of the web app's by the days earlier tests skipped.
    assert re.fullmatch(r"MFA due in \d+ days", started["due_text"]), started
    described = await stack.env.client.get_workflow_handle(enrollment_workflow_id(staff_id)).describe()
    assert described.workflow_type == "MfaEnrollment"
    assert described.typed_search_attributes.get(SSO_STAFF_ID) == staff_id
    assert described.typed_search_attributes.get(SSO_MFA_STEP) == "waiting"
    async with stack.sessions() as session:
        skipped = await session.scalar(
            select(AuditEvent).where(AuditEvent.target == staff_id, AuditEvent.action == "mfa.skipped")
        )
    assert skipped is not None  # §14

    # Before the deadline the password alone signs in.
    async with browsing(stack.transport) as browser:
        assert redirected_to(await sign_in(browser, email), "/sso/account")

    await stack.env.sleep(DAY + MINUTE)
    [body] = await emails_with_subject(stack.sessions, stack.settings, email, REMINDER)
    assert "https://sso.example.test/sso/account/mfa" in body
    assert "After that, signing in will ask you to set it up" in body
    await obligation(stack, staff_id, "reminded", reminders_sent=1)

    await stack.env.sleep(DAY)
    overdue = await obligation(stack, staff_id, "overdue")
    assert overdue["due_text"] == "MFA overdue"
    attributes = (
        await stack.env.client.get_workflow_handle(enrollment_workflow_id(staff_id)).describe()
    ).typed_search_attributes
    assert (attributes.get(SSO_MFA_STEP), attributes.get(SSO_MFA_REMINDERS)) == ("overdue", 1)

    # Past the deadline: the right password leads straight to MFA set-up, with no way out.
    back_to = "/sso/oidc/authorize?client_id=demo&state=s1"
    async with browsing(stack.transport) as browser:
        answer = await sign_in(browser, email, return_to=back_to)
        assert redirected_to(answer, "/sso/login/mfa-setup"), answer.text
        assert redirected_to(await browser.get("/sso/account"), "/sso/login")  # not signed in yet
        page = await browser.get("/sso/login/mfa-setup")
        assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
        text = page_text(page)
        assert "Set up Multi-Factor Authentication" in text and "set it up now to finish signing in" in text
        assert SKIP not in text and "/sso/setup/mfa/skip" not in page.text
        assert "Back to your account" not in text and "This step is optional." not in text
        secret = manual_key(page)
        wrong = await browser.submit(page, "/sso/login/mfa-setup", code="000000")
        assert wrong.status_code == 400 and "didn't match" in page_text(wrong)
        done = await browser.submit(wrong, "/sso/login/mfa-setup", code=pyotp.TOTP(secret).now())
        assert done.status_code == 200, done.text
        assert len(recovery_codes_in(done)) == 10
        # The authorize request the sign-in began with continues from here.
        assert re.search(r'href="/sso/oidc/authorize\?client_id=demo&amp;state=s1"', done.text), done.text
        assert (await browser.get("/sso/account")).status_code == 200
    await obligation(stack, staff_id, "done")
    async with stack.sessions() as session:
        actions = (
            await session.scalars(select(AuditEvent.action).where(AuditEvent.target == staff_id))
        ).all()
    assert "sign_in.mfa_setup_required" in actions and "mfa.enrolled" in actions
    assert len([s for s, _ in await outbox(stack.sessions, stack.settings, email) if s == REMINDER]) == 1


async def test_the_mfa_set_up_step_needs_a_right_password_first(required: Stack) -> None:
    async with browsing(required.transport) as browser:
        assert redirected_to(await browser.get("/sso/login/mfa-setup"), "/sso/login?notice=expired")
        refused = await browser.post("/sso/login/mfa-setup", {"csrf": "x", "code": "123456"})
        assert redirected_to(refused, "/sso/login?notice=expired")


async def test_an_admin_extends_the_deadline_once(required: Stack) -> None:
    """An admin's MFA reset restarts the obligation; past its deadline the admin extends it
    (audited with the admin's name), and a second extension is refused with a reason."""
    stack = required
    person = await stack.person(mfa=True)
    staff_id = str(person.staff_id)
    reset = await stack.http.delete(f"/api/v1/staff/{staff_id}/mfa", headers=stack.admin)
    assert reset.status_code == 200, reset.text
    await obligation(stack, staff_id, "waiting")
    await stack.env.sleep(2 * DAY + MINUTE)
    await obligation(stack, staff_id, "overdue")
    await emails_with_subject(stack.sessions, stack.settings, person.email, REMINDER)

    admin, browser = await signed_in_admin(stack, first_name="Morgan", last_name="Admin")
    page = await browser.get(f"/admin/staff/{staff_id}")
    assert page.status_code == 200 and "MFA overdue" in page_text(page)
    staff_list = await browser.get("/admin/staff")
    assert "MFA overdue" in page_text(staff_list)
    answer = await browser.submit(page, f"/admin/staff/{staff_id}/extend-mfa")
    assert answer.status_code == 303, answer.text
    shown = page_text(await browser.get(answer.headers["location"]))
    assert "The MFA deadline for Robin Ashcombe was extended once" in shown
    assert "MFA due in" in shown and "extended once by" in shown
    extended = await obligation(stack, staff_id, "reminded", extended=True)
    assert extended["extended_by"].startswith(f"staff:{admin.staff_id} (Morgan Admin)")

    again = await stack.http.post(f"/api/v1/staff/{staff_id}/mfa/extend", headers=stack.admin)
    assert again.status_code == 409, again.text
    assert "already extended once" in again.text
    async with stack.sessions() as session:
        events = (
            await session.scalars(
                select(AuditEvent).where(
                    AuditEvent.target == staff_id, AuditEvent.action == "mfa.deadline_extended"
                )
            )
        ).all()
    assert len(events) == 1 and "Morgan Admin" in events[0].actor

    # The deadline moved: the password signs in again.
    async with browsing(stack.transport) as person_browser:
        assert redirected_to(await sign_in(person_browser, person.email), "/sso/account")
    await browser.aclose()


async def test_the_api_extends_and_refuses_without_a_deadline(required: Stack) -> None:
    stack = required
    person = await stack.person()
    nothing = await stack.http.post(f"/api/v1/staff/{person.staff_id}/mfa/extend", headers=stack.admin)
    assert nothing.status_code == 409 and "no MFA deadline to extend" in nothing.text
    unknown = await stack.http.post(f"/api/v1/staff/{uuid.uuid4()}/mfa/extend", headers=stack.admin)
    assert unknown.status_code == 404
    unauthenticated = await stack.http.post(f"/api/v1/staff/{person.staff_id}/mfa/extend")
    assert unauthenticated.status_code == 401
    status = await stack.status(person)
    assert status["mfa_obligation"] is None


async def test_under_optional_one_reminder_and_nothing_is_forced(optional: Stack) -> None:
    stack = optional
    async with browsing(stack.transport) as browser:
        staff = await skipped_in_setup(stack, browser)
    staff_id, email = staff["id"], staff["external_email_1"]
    started = await obligation(stack, staff_id, "waiting")
    assert started["policy"] == "optional" and started["due_text"] is None
    await stack.env.sleep(14 * DAY + MINUTE)
    [body] = await emails_with_subject(stack.sessions, stack.settings, email, REMINDER)
    assert "You chose to set up Multi-Factor Authentication" in body
    assert "https://sso.example.test/sso/account/mfa" in body
    await obligation(stack, staff_id, "ended", reminders_sent=1)
    await stack.env.sleep(30 * DAY)
    async with browsing(stack.transport) as browser:
        assert redirected_to(await sign_in(browser, email), "/sso/account")
        assert "Turn off" not in page_text(await browser.get("/sso/account"))
    assert len([s for s, _ in await outbox(stack.sessions, stack.settings, email) if s == REMINDER]) == 1


async def test_a_change_to_required_starts_everyones_obligation_once(required: Stack) -> None:
    """What a worker does at start (worker.apply_mfa_policy): the rollout obliges each active
    password account without a second factor, once, and remembers the policy it applied."""
    stack = required
    without = [await stack.person(first_name=name) for name in ("Ann", "Ben")]
    with_mfa = await stack.person(mfa=True)
    microsoft_only = await stack.person(first_name="Eve")
    await update_account(stack.sessions, microsoft_only, password_hash=None)
    pending = await stack.person(first_name="Pat", status="pending")
    optional_settings = stack.settings.model_copy(update={"mfa_policy": MfaPolicy.optional})
    assert not await apply_policy(stack.env.client, optional_settings, stack.sessions)

    assert await apply_policy(stack.env.client, stack.settings, stack.sessions)
    rollout = stack.env.client.get_workflow_handle(ROLLOUT_WORKFLOW_ID)
    progress = await rollout.result()
    assert (progress["started"], progress["done"]) == (2, True)
    for person in without:
        assert (await obligation(stack, str(person.staff_id), "waiting"))["policy"] == "required"
    for person in (with_mfa, microsoft_only, pending):
        assert (await stack.status(person))["mfa_obligation"] is None
    # Applied once: the next worker start leaves it be.
    assert not await apply_policy(stack.env.client, stack.settings, stack.sessions)
    async with stack.sessions() as session:
        facts = (
            await session.scalars(select(DeploymentFact.name).where(DeploymentFact.name.like("mfa_policy:%")))
        ).all()
    assert sorted(facts) == ["mfa_policy:optional", "mfa_policy:required"]


async def test_under_required_mfa_cannot_be_turned_off(required: Stack) -> None:
    """§38: removing the last factor under `required` is refused."""
    stack = required
    person = await stack.person(mfa=True)
    async with browsing(stack.transport) as browser:
        assert redirected_to(await sign_in(browser, person.email), "/sso/login/mfa")
        page = await browser.get("/sso/login/mfa")
        signed = await browser.submit(page, "/sso/login/mfa", code=person.totp_now())
        assert redirected_to(signed, "/sso/account")
        account = await browser.get("/sso/account")
        assert "Turn off multi-factor authentication" not in page_text(account)
        assert "Your organisation requires Multi-Factor Authentication, so it stays on." in page_text(account)
        fields = hidden_fields(account, "/sso/logout")
        answer = await browser.post("/sso/account/mfa/off", {**fields, "password": PASSWORD})
        assert redirected_to(answer, "/sso/account")
    row = await account_row(stack.sessions, person)
    assert row.mfa_enabled_at is not None and row.totp_secret_encrypted is not None


async def test_under_required_the_last_passkey_cannot_be_removed(required: Stack) -> None:
    """§38 for passkeys: someone who is not an administrator, whose only second factor is a
    passkey, keeps it under `required`; the page says why and nothing is removed."""
    stack = required
    person = await stack.person()
    async with browsing(stack.transport) as browser:
        # Signed in before the passkey is added (no deadline has passed, nothing is forced).
        assert redirected_to(await sign_in(browser, person.email), "/sso/account")
        await store_passkey(stack.sessions, person.account_id, soft_key(stack.settings, person.staff_id))
        async with stack.sessions() as session:
            [row] = (
                await session.scalars(select(Passkey).where(Passkey.account_id == person.account_id))
            ).all()
        account = await browser.get("/sso/account")
        refused = await browser.submit(account, f"/sso/account/passkeys/{row.id}/remove")
        assert refused.status_code == 400 and "you keep a second factor" in page_text(refused)
    async with stack.sessions() as session:
        assert await session.get(Passkey, row.id) is not None
