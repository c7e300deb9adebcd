"""Many people onboarding at once over HTTP, as browsers do, while the worker is SIGKILLed at
random moments and Temporal's server restarts: the scenario of issue 12, shared by
tests/faults/test_onboarding_under_faults.py and `make bench`.

Each person reads the first email that arrives, opens its link, sets a password, types the
first code that arrives, then skips MFA or enrols an authenticator. A step that answers
"please try again in a minute" (or "still working on your last step") is pressed again, as a
person would, for up to two minutes. The random seed (SSO_FAULT_SEED to replay one) decides
the people's MFA choices and the faults' order and moments.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import httpx
import pyotp

from tests.support.e2e import CODE_SUBJECT, SUBJECT, World, send_email
from tests.support.fault_people import (
    UNAVAILABLE,
    Person,
    admin_api,
    get_page,
    link_token,
    press,
    text_of,
    words,
)
from tests.support.faults import FaultStack
from tests.support.stack import SmtpSink

SEED_ENV = "SSO_FAULT_SEED"
PATIENCE = 120.0  # seconds a person keeps pressing again on one step
EMAIL_WAIT = 180.0  # seconds a person waits for an email before giving up
RESTART_AFTER = 3.0  # seconds between a worker's kill and its restart
CODE_LINE = re.compile(r"^\s+(\d{6})\s*$", re.MULTILINE)
DONE = "Your Single Sign-On is now active"


def seed_from_env() -> int:
    value = os.environ.get(SEED_ENV, "").strip()
    return int(value) if value else random.SystemRandom().randrange(1, 10**9)


@dataclass
class Fault:
    kind: str  # "worker killed" or "temporal restarted"
    at: float  # seconds since the start, when it struck
    back: float  # seconds since the start, when the process was up again


@dataclass
class ChaosRun:
    seed: int
    people: int
    faults: list[Fault] = field(default_factory=list)
    done_at: dict[str, float] = field(default_factory=dict)  # address -> seconds since start
    failures: dict[str, str] = field(default_factory=dict)
    setup_emails: dict[str, list[str]] = field(default_factory=dict)  # address -> link tokens
    code_emails: dict[str, list[str]] = field(default_factory=dict)  # address -> codes
    used: dict[str, tuple[str, str]] = field(default_factory=dict)  # address -> (token, code)
    states: dict[str, str] = field(default_factory=dict)

    @property
    def last_fault_back(self) -> float:
        return max(f.back for f in self.faults)

    @property
    def last_done(self) -> float:
        return max(self.done_at.values())

    @property
    def recovery_seconds(self) -> float:
        """From the last fault over (the last restarted process up) to the last person done."""
        return self.last_done - self.last_fault_back

    def summary(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "people": self.people,
            "active": sum(1 for s in self.states.values() if s == "active"),
            "faults": [
                {"kind": f.kind, "at_s": round(f.at, 1), "back_s": round(f.back, 1)} for f in self.faults
            ],
            "last_fault_back_s": round(self.last_fault_back, 1),
            "last_person_done_s": round(self.last_done, 1) if self.done_at else None,
            "recovery_s": round(self.recovery_seconds, 1) if self.done_at else None,
            "people_with_duplicate_setup_emails": sum(1 for v in self.setup_emails.values() if len(v) > 1),
            "people_with_duplicate_code_emails": sum(1 for v in self.code_emails.values() if len(v) > 1),
            "failures": dict(self.failures),
        }

    def describe(self) -> str:
        s = self.summary()
        faults = ", ".join(f"{f['kind']} at {f['at_s']} s (back at {f['back_s']} s)" for f in s["faults"])
        return (
            f"seed {self.seed} ({SEED_ENV}={self.seed} replays it): {s['active']}/"
            f"{self.people} active; faults: {faults}; last person done at "
            f"{s['last_person_done_s']} s, {s['recovery_s']} s after the last fault was "
            f"over; duplicate emails: {s['people_with_duplicate_setup_emails']} setup, "
            f"{s['people_with_duplicate_code_emails']} code"
        )


class Refused(AssertionError):
    """A step answered with a message on its page (not "try again")."""

    def __init__(self, response: httpx.Response, what: str) -> None:
        super().__init__(f"{what}: {response.status_code} {words(response)[:300]}")
        self.response = response


async def _again(person: Person, response: httpx.Response) -> httpx.Response:
    """The same form again: same fields, same submission id (the browser's button)."""
    request = response.request
    answer = await person.browser.post(
        str(request.url), content=request.content, headers={"Content-Type": request.headers["Content-Type"]}
    )
    assert answer.status_code != 500, answer.text
    return answer


async def _until_moved(person: Person, response: httpx.Response, to: str) -> httpx.Response:
    """Press again while the step says try again (503) or wait (409 busy); the page `to`."""
    deadline = time.monotonic() + PATIENCE
    what = f"{person.to} {response.request.url.path}"
    while response.status_code != 303:
        if response.status_code == 503:
            assert UNAVAILABLE in text_of(response), words(response)[:300]
        elif response.status_code == 409:
            # Answered on the page for where the flow is: it may be past this step already.
            page = await person.browser.get(urljoin(str(response.url), to))
            if page.status_code == 200:
                return page
        else:
            raise Refused(response, what)
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{what}: still {response.status_code} after {PATIENCE:.0f} s: {words(response)[:300]}"
            )
        await asyncio.sleep(2)
        response = await _again(person, response)
    assert response.headers["location"] == to, (what, response.headers["location"])
    page = await get_page(person.browser, urljoin(str(response.url), to), timeout=PATIENCE)
    assert page.status_code == 200, (what, to, page.status_code, words(page)[:300])
    return page


async def _first(person: Person, subject: str) -> str:
    """The text of the first email with `subject` that reached the person."""
    deadline = time.monotonic() + EMAIL_WAIT
    while True:
        mine = person.setup_emails() if subject == SUBJECT else person.code_emails()
        if mine:
            part = mine[0].message.get_body(preferencelist=("plain",))
            assert part is not None
            return str(part.get_content())
        assert time.monotonic() < deadline, f"no '{subject}' email to {person.to}"
        await asyncio.sleep(0.25)


async def _link_pages(person: Person) -> httpx.Response:
    """The link, then "Forgot your password?": the password form (the database only)."""
    assert person.token is not None
    start = await get_page(person.browser, f"{person.base}/sso/setup/{person.token}", timeout=PATIENCE)
    assert start.status_code == 200, words(start)[:300]
    return await get_page(
        person.browser, f"{person.base}/sso/setup/{person.token}/password", timeout=PATIENCE
    )


async def _confirm_page(person: Person) -> httpx.Response:
    deadline = time.monotonic() + PATIENCE
    while True:
        page = await get_page(person.browser, f"{person.base}/sso/setup/confirm", timeout=PATIENCE)
        assert page.status_code == 200, words(page)[:300]
        if "We've sent a 6-digit verification code" in text_of(page):
            return page
        assert time.monotonic() < deadline, f"{person.to}: the code never showed as sent"
        await asyncio.sleep(1)


async def _authenticator(person: Person, page: httpx.Response) -> httpx.Response:
    keys = re.findall(r'<code id="manual-key" class="key">([^<]*)</code>', page.text)
    assert len(keys) == 1, words(page)[:300]
    totp = pyotp.TOTP(keys[0].replace(" ", ""))
    tried: set[str] = set()
    for _ in range(5):
        while totp.now() in tried:  # a person waits for the app's next code
            await asyncio.sleep(1)
        code = totp.now()
        tried.add(code)
        try:
            return await _until_moved(
                person, await press(person.browser, page, "Complete Setup", code=code), "/sso/setup/done"
            )
        except Refused as refused:
            page = refused.response  # "didn't match" / "already used": the newest code again
    raise AssertionError(f"{person.to}: no authenticator code accepted")


async def _onboard(person: Person, mfa: bool, t0: float, run: ChaosRun) -> None:
    text = await _first(person, SUBJECT)
    found = re.findall(re.escape(f"{person.base}/sso/setup/") + r"([A-Za-z0-9_\-]{32,128})", text)
    person.token = found[0]
    form = await _link_pages(person)
    await _until_moved(person, await person.set_password(form), "/sso/setup/confirm")
    code = CODE_LINE.findall(await _first(person, CODE_SUBJECT))[0]
    page = await _confirm_page(person)
    mfa_page = await _until_moved(person, await person.confirm(page, code), "/sso/setup/mfa")
    if mfa:
        done = await _authenticator(person, mfa_page)
    else:
        done = await _until_moved(person, await person.skip_mfa(mfa_page), "/sso/setup/done")
    assert DONE in text_of(done), words(done)[:300]
    run.done_at[person.to] = time.monotonic() - t0
    run.used[person.to] = (person.token, code)


async def strike(stack: FaultStack, rng: random.Random, t0: float, run: ChaosRun) -> None:
    """The worker SIGKILLed twice (restarted RESTART_AFTER later) and Temporal's server
    restarted once, in a random order at random moments, recorded in `run.faults`."""
    kinds = ["worker killed", "worker killed", "temporal restarted"]
    rng.shuffle(kinds)
    await asyncio.sleep(rng.uniform(1.0, 5.0))
    for kind in kinds:
        at = time.monotonic() - t0
        if kind == "worker killed":
            stack.kill_worker()
            await asyncio.sleep(RESTART_AFTER)
            await stack.restart_worker()
        else:
            await stack.halt_temporal()
            await stack.restart_temporal()
        run.faults.append(Fault(kind, at, time.monotonic() - t0))
        await asyncio.sleep(rng.uniform(2.0, 7.0))


async def onboard_under_faults(stack: FaultStack, smtp: SmtpSink, people: int, seed: int) -> ChaosRun:
    """Run the scenario; the returned run says what happened (the caller asserts)."""
    rng = random.Random(seed)
    run = ChaosRun(seed=seed, people=people)
    world = World(stack, smtp)  # type: ignore[arg-type]
    async with admin_api(stack) as api:
        crowd = [await Person.create(world, api, f"crowd{i}", first=f"P{i}") for i in range(people)]
        choices = [rng.random() < 0.5 for _ in crowd]
        try:
            await asyncio.gather(*(send_email(api, world, p.id) for p in crowd))
            t0 = time.monotonic()
            chaos = asyncio.ensure_future(strike(stack, rng, t0, run))
            results = await asyncio.gather(
                *(_onboard(p, mfa, t0, run) for p, mfa in zip(crowd, choices, strict=True)),
                return_exceptions=True,
            )
            await chaos
            for person, result in zip(crowd, results, strict=True):
                if isinstance(result, BaseException):
                    run.failures[person.to] = f"{type(result).__name__}: {result}"[:600]
            await asyncio.sleep(2)  # a late duplicate would have arrived by now
            for person in crowd:
                run.states[person.to] = (await person.status())["state"]
                run.setup_emails[person.to] = [link_token(m, person.base) for m in person.setup_emails()]
                run.code_emails[person.to] = [
                    CODE_LINE.findall(str(part.get_content()))[0]
                    for m in person.code_emails()
                    if (part := m.message.get_body(preferencelist=("plain",))) is not None
                ]
        finally:
            for person in crowd:
                await person.close()
    return run
