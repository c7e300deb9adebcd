"""The worker is killed (SIGKILL) with a person in the middle of every step at once, and
started again: each step completes exactly once, no email or code is sent twice (but in the
one window SMTP itself cannot close, below) and nothing is lost.

Seven people, each caught in one step when the worker dies:

- Ava: her setup email is being sent (the SMTP server holds the message unanswered);
- Cai: his verification code is being sent (held the same way);
- Gus: his setup email was taken by the SMTP server and recorded, and Temporal never heard.
  The retry finds the email accepted and recorded, and sends nothing more: his one link works
  and his flow goes on (it used to end as failed, then to email a second link that killed
  the first). The narrower window, accepted but not yet recorded, gives a second copy with
  the same link (tests/core/test_email_sends.py, tests/faults/test_onboarding_under_faults.py);
- Ben: his password is being stored; Dee: her code is being confirmed; Eli: his
  authenticator code is being checked; Fay: she is skipping MFA (activation). Each of these
  activities is held at its database write (the test holds SQLite's write lock), then the
  worker's connection to Temporal is stalled and the lock let go: the step commits, but
  Temporal never hears of it. That is the worst moment to die: Temporal runs the activity
  again (after its start-to-close timeout), and it must not do the step twice.

Deterministic: every window is held open by the test, nothing depends on sleeping and hoping.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyotp
import pytest

from tests.support.e2e import World
from tests.support.fault_people import (
    RECOVERY,
    UNAVAILABLE,
    Person,
    admin_api,
    eventually,
    follow,
    press,
    repost,
    settled,
    text_of,
)
from tests.support.faults import FaultStack, StackFactory
from tests.support.stack import SmtpSink

pytestmark = [pytest.mark.faults]


@contextlib.contextmanager
def sqlite_write_lock(path: Path) -> Iterator[sqlite3.Connection]:
    """Hold the database's write lock: readers go on (WAL), every writer waits (busy
    timeout 30 s) until the lock is let go."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield conn
    finally:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        conn.close()


def totp_of(mfa: httpx.Response) -> pyotp.TOTP:
    keys = re.findall(r'<code id="manual-key" class="key">([^<]*)</code>', mfa.text)
    assert len(keys) == 1, mfa.text
    return pyotp.TOTP(keys[0].replace(" ", ""))


async def wait_started(stack: FaultStack, running: list[tuple[str, Person]]) -> None:
    """Until each (activity, person's flow) runs on the worker."""

    async def all_started() -> bool:
        for activity, person in running:
            if await stack.started(person.workflow_id, activity) is None:
                return False
        return True

    await eventually(all_started, 60, what=f"{running} to be running on the worker")


async def test_worker_killed_mid_step_at_every_step(fault_stack: StackFactory, smtp: SmtpSink) -> None:
    # The SMTP client must not give up on a held message by itself before the worker dies.
    stack = fault_stack(worker_proxy=True, email_timeout="45")
    assert stack.worker_proxy is not None
    world = World(stack, smtp)  # type: ignore[arg-type]
    database = stack.data_dir / "sso.db"
    async with admin_api(stack) as api:
        names = ("Ava", "Ben", "Cai", "Dee", "Eli", "Fay")
        people = [await Person.create(world, api, n.lower(), first=n) for n in names]
        ava, ben, cai, dee, eli, fay = people
        gus = await Person.create(world, api, "gus", first="Gus")
        try:
            # Everyone but Ava gets to the page before their step.
            for person in people[1:]:
                await person.send()
            ben_page, cai_page, dee_page, eli_page, fay_page = await asyncio.gather(
                _read_and_open(ben),
                _read_and_open(cai),
                dee.to_confirm_page(),
                eli.to_mfa_page(),
                fay.to_mfa_page(),
            )
            totp = totp_of(eli_page)

            # Ava's and Gus's setup emails and Cai's code reach the SMTP server, which holds
            # them.
            smtp.hold(only=[ava.to, cai.to, gus.to])
            await ava.send()
            await gus.send()
            cai_sent = await cai.set_password(cai_page)
            await follow(cai.browser, cai_sent, "/sso/setup/confirm")
            await eventually(
                lambda: {ava.to, cai.to, gus.to} <= {r[0] for r in smtp.arrivals},
                60,
                what="the three emails to reach the SMTP server",
            )

            with sqlite_write_lock(database):
                # The four page steps start; each activity stops at its database write.
                steps = [
                    asyncio.ensure_future(coro)
                    for coro in (
                        ben.set_password(ben_page),
                        dee.confirm(dee_page, dee.codes[-1]),
                        press(eli.browser, eli_page, "Complete Setup", code=totp.now()),
                        fay.skip_mfa(fay_page),
                    )
                ]
                await wait_started(
                    stack,
                    [
                        ("send_setup_email", ava),
                        ("send_setup_email", gus),
                        ("send_code", cai),
                        ("store_password", ben),
                        ("confirm_email", dee),
                        ("verify_totp", eli),
                        ("activate_account", fay),
                    ],
                )
                # Temporal stops hearing from the worker; then the steps may commit. Gus's
                # email is taken by the SMTP server too, and recorded.
                stack.worker_proxy.pause()
                smtp.release(only=[gus.to])
                await eventually(lambda: gus.setup_emails(), 30, what="Gus's email taken")
            await eventually(
                lambda: _committed(stack, ben, dee, eli, fay, gus), 30, what="the five steps to commit"
            )

            stack.kill_worker()
            smtp.release()  # the held messages' connections died with the worker: not taken

            # The pages answered meanwhile: clearly, within the step timeout.
            answers = await asyncio.gather(*steps)
            for answer in answers:
                assert answer.status_code == 503, (
                    answer.request.url,
                    answer.status_code,
                    text_of(answer)[:2000],
                )
                assert UNAVAILABLE in text_of(answer)
            assert not ava.setup_emails() and not cai.code_emails()

            await stack.restart_worker()

            # Pressing the same button again gets the step's own answer once it is done
            # (Temporal retries each lost activity when its start-to-close timeout runs out).
            # Ben's link is spent already, so his browser gets its session back at once; the
            # confirm page then says to try again until his flow has taken the step in.
            ben_again = await repost(ben, answers[0])
            ben_confirm = asyncio.ensure_future(follow(ben.browser, ben_again, "/sso/setup/confirm"))
            dee_again, eli_again, fay_again = await asyncio.gather(
                *(repost(person, answer) for person, answer in zip((dee, eli, fay), answers[1:], strict=True))
            )
            await ben_confirm
            dee_mfa = await follow(dee.browser, dee_again, "/sso/setup/mfa")
            for person, again in ((eli, eli_again), (fay, fay_again)):
                done = await follow(person.browser, again, "/sso/setup/done")
                assert "Your Single Sign-On is now active" in text_of(done)
            await ava.read_setup_email()
            await asyncio.gather(ben.read_code(), cai.read_code())

            # Gus: his email went out and was recorded, but Temporal never heard, so it ran
            # again: that retry found it accepted and sent nothing more. His flow goes on.
            await gus.read_setup_email()
            assert (await gus.wait_for_state("email_sent"))["email_delivery"]["state"] == "sent"

            # Right after a step was accepted: the worker dies again with nothing in flight.
            await _quiet(stack, [*people, gus])
            assert len(gus.setup_emails()) == 1
            assert (await gus.password_page()).status_code == 200
            assert stack.audit(gus.id).get("sso_email.sent") == 1
            skipped = await dee.skip_mfa(dee_mfa)
            stack.kill_worker()
            await stack.restart_worker()
            done = await follow(dee.browser, skipped, "/sso/setup/done")
            assert "Your Single Sign-On is now active" in text_of(done)

            # Everyone finishes.
            await asyncio.gather(_finish_from_email(ava), _finish_from_code(ben), _finish_from_code(cai))
        finally:
            for person in (*people, gus):
                await person.close()

        await asyncio.sleep(2)  # anything sent twice would have arrived by now
        for person in people:
            name = person.staff["first_name"]
            assert len(person.setup_emails()) == 1, f"{name}: setup emails"
            assert len(person.code_emails()) == 1, f"{name}: code emails"
            body = await person.status()
            assert body["state"] == "active", (name, body)
            assert body["mfa_enabled"] is (person is eli), (name, body)
            audit = stack.audit(person.id)
            once = [
                "sso_email.sent",
                "sso_setup.password_set",
                "code.issued",
                "sso_setup.email_confirmed",
                "sso_setup.active",
                "mfa.enrolled" if person is eli else "mfa.skipped",
            ]
            for action in once:
                assert audit.get(action) == 1, (name, action, audit)
            assert "mfa.code_failed" not in audit, (name, audit)
            assert "sso_email.attempt_failed" not in audit, (name, audit)


async def _read_and_open(person: Person) -> httpx.Response:
    await person.read_setup_email()
    return await person.password_page()


def _committed(stack: FaultStack, ben: Person, dee: Person, eli: Person, fay: Person, gus: Person) -> bool:
    if stack.audit(gus.id).get("sso_email.sent") != 1:
        return False
    ben_done = stack.audit(ben.id).get("sso_setup.password_set") == 1
    dee_done = stack.audit(dee.id).get("sso_setup.email_confirmed") == 1
    fay_done = stack.audit(fay.id).get("sso_setup.active") == 1
    eli_done = stack.query(
        "SELECT totp_last_step FROM sso_accounts WHERE staff_id = :s", s=eli.id.replace("-", "")
    )
    return ben_done and dee_done and fay_done and bool(eli_done) and eli_done[0][0] is not None


async def _quiet(stack: FaultStack, people: list[Person]) -> None:
    """Until no activity of anyone's flow is scheduled or running."""

    async def quiet() -> bool:
        for person in people:
            with contextlib.suppress(Exception):
                if await stack.pending_activities(person.workflow_id):
                    return False
        return True

    await eventually(quiet, RECOVERY, what="every flow to be between steps")


# The worker was just restarted: a step can still meet "please try again in a minute" for a
# few seconds, until Temporal gives up on the dead worker's queue; the person presses again.


async def _finish_from_email(person: Person) -> None:
    response = await settled(person, await person.set_password(await person.password_page()))
    await follow(person.browser, response, "/sso/setup/confirm")
    await person.read_code()
    await _finish_from_code(person)


async def _finish_from_code(person: Person) -> None:
    confirm = await person.confirm_page()
    response = await settled(person, await person.confirm(confirm, person.codes[-1]))
    mfa = await follow(person.browser, response, "/sso/setup/mfa")
    done = await follow(person.browser, await settled(person, await person.skip_mfa(mfa)), "/sso/setup/done")
    assert "Your Single Sign-On is now active" in text_of(done)
