"""The MFA obligation in the browser, on a stack of its own under SSO_MFA_POLICY=required with
a five-day grace: past the deadline a right password leads to the MFA set-up, with no way to
skip it or round it, and then to the recovery codes and the account page; and the admin's
person page shows "MFA due in 5 days" and extends the deadline once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pyotp
import pytest

from core.db import SessionFactory
from core.models import MfaObligation, utcnow
from tests.support.accounts import PASSWORD, make_person
from tests.support.browser_steps import fits_the_width, new_admin, shown_key, sign_in_with_mfa
from tests.support.config import make_settings
from tests.support.e2e import eventually, status
from tests.support.screens import MARKS, Screen
from tests.support.stack import DevStack, SmtpSink, running_sso_dev

pytestmark = MARKS

POLICY = {"SSO_MFA_POLICY": "required", "SSO_MFA_REMINDERS": "P3D", "SSO_MFA_GRACE": "P5D"}
WRONG_CODE = "That code didn't match, or it was already used."


@pytest.fixture(scope="module")
def stack(smtp: SmtpSink, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    """Not the shared stack: this one runs under `required`, with a deadline in days."""
    with running_sso_dev(tmp_path_factory.mktemp("sso-dev-mfa-browser"), smtp.port, extra_env=POLICY) as dev:
        yield dev


async def overdue_person(database: SessionFactory, last_name: str) -> str:
    """A person with a password and no second factor, a day past a `required` deadline, as
    the obligation's flow leaves the row (the flow's own timers are proved in tests/mfa)."""
    person = await make_person(database, make_settings(), first_name="Noor", last_name=last_name)
    now = utcnow()
    async with database() as session:
        session.add(
            MfaObligation(
                staff_id=person.staff_id,
                run_id="browser-test",
                policy="required",
                step="overdue",
                started_at=now - timedelta(days=6),
                due_at=now - timedelta(days=1),
                reminders_sent=1,
            )
        )
        await session.commit()
    return person.email


async def test_past_the_deadline_sign_in_sets_up_mfa_first(screen: Screen, database: SessionFactory) -> None:
    email = await overdue_person(database, "Overdue")
    await screen.goto("/sso/login")
    await screen.check("login", screenshot=False)
    await screen.field("Email address").fill(email)
    await screen.field("Password").fill(PASSWORD)
    await screen.press("Sign in")
    assert screen.page.url.endswith("/sso/login/mfa-setup"), screen.page.url
    await screen.check("login-mfa-setup")
    assert await screen.heading() == "Set up Multi-Factor Authentication"
    # Why this page came instead of the account: said first, before the steps.
    first = " ".join((await screen.page.locator("main h1 + p").inner_text()).split())
    assert first.endswith("has passed: set it up now to finish signing in."), first
    text = await screen.text()
    assert "No thanks" not in text and "later" not in text.lower()
    assert await screen.page.get_by_role("button").count() == 1, "Complete Setup only"
    # The only link (on a phone) opens the key in the authenticator app: no way out.
    hrefs = await screen.page.locator("main a").evaluate_all("links => links.map(a => a.href)")
    assert all(href.startswith("otpauth://") for href in hrefs), hrefs
    await fits_the_width(screen)

    # The account page is not reachable yet: the sign-in has not completed.
    await screen.goto("/sso/account")
    assert "/sso/login" in screen.page.url and not screen.page.url.endswith("/sso/account"), screen.page.url
    await screen.check("login", screenshot=False)
    assert await screen.heading() != "Your account"

    # Back to the set-up (the sign-in waiting for it was kept); a wrong code is said, then
    # the right one.
    await screen.goto("/sso/login/mfa-setup")
    await screen.check("login-mfa-setup", screenshot=False)
    key = await shown_key(screen)
    right = pyotp.TOTP(key).now()
    await screen.field("Code from the app").fill("000000" if right != "000000" else "111111")
    await screen.press("Complete Setup")
    await screen.check("login-mfa-setup-error", alert=WRONG_CODE, invalid="code", screenshot=False)
    await screen.field("Code from the app").fill(pyotp.TOTP(key).now())
    await screen.press("Complete Setup")

    await screen.check("login-mfa-setup-recovery-codes", screenshot=False)
    assert await screen.heading() == "Save your recovery codes"
    codes = await screen.page.locator(".recovery-codes code").all_inner_texts()
    assert len(codes) == 10 and len(set(codes)) == 10
    await screen.follow("I've saved my recovery codes")
    assert screen.page.url.endswith("/sso/account"), screen.page.url
    await screen.check("account-with-mfa", screenshot=False)
    text = await screen.text()
    assert "Recovery codes left: 10 of 10." in text and "Set up Multi-Factor Authentication" not in text


async def test_the_admin_sees_the_deadline_and_extends_it_once(
    screen: Screen, database: SessionFactory, api: httpx.AsyncClient
) -> None:
    admin = await new_admin(database, "Deadline")
    person = await make_person(database, make_settings(), mfa=True, first_name="Remy", last_name="Lostphone")
    staff_id = str(person.staff_id)
    # The admin's MFA reset (lost phone) restarts the obligation: due in SSO_MFA_GRACE.
    reset = await api.delete(f"/api/v1/staff/{staff_id}/mfa")
    assert reset.status_code == 200, reset.text

    async def started() -> dict[str, Any] | None:
        obligation = (await status(api, staff_id))["mfa_obligation"]
        return obligation if obligation is not None and obligation["step"] == "waiting" else None

    await eventually(started, 60, what="the obligation to start")

    await screen.goto(f"/admin/staff/{staff_id}")
    await sign_in_with_mfa(screen, admin)
    assert screen.page.url.endswith(f"/admin/staff/{staff_id}"), screen.page.url
    await screen.check("admin-person-mfa-due")
    deadline = " ".join((await screen.page.locator("#mfa-deadline").inner_text()).split())
    assert deadline.startswith("MFA due in 5 days: must be set up by"), deadline
    assert "extended" not in deadline

    await screen.page.locator("main details.actions summary").first.click()
    await screen.check("admin-person-mfa-actions", screenshot=False)
    await screen.press("Extend the MFA deadline")
    await screen.check("admin-person-mfa-extended")
    text = await screen.text()
    assert "The MFA deadline for Remy Lostphone was extended once" in text, text
    deadline = " ".join((await screen.page.locator("#mfa-deadline").inner_text()).split())
    assert deadline.startswith("MFA due in 10 days"), deadline
    assert deadline.endswith("extended once by Ada Deadline"), deadline

    # Once only: the action is gone, and the API says why.
    await screen.page.locator("main details.actions summary").first.click()
    assert await screen.button("Extend the MFA deadline").count() == 0
    again = await api.post(f"/api/v1/staff/{staff_id}/mfa/extend")
    assert again.status_code == 409 and "already extended once" in again.text, again.text
