"""Properties of every form a person (or an admin script) fills in, with hypothesis.

In-process against real flows on a real Temporal dev server (no time needs to pass), on SQLite
and PostgreSQL: the sign-in form and its authenticator step, the setup link's password form,
the setup code forms, the forgot and reset forms, and the admin API's StaffCreate body. Typed
values are any valid Unicode (NUL included; surrogates can't be sent in an HTTP form), of any
length up to and beyond each field's limit, with and without the CSRF token.

What must hold for every input:
- never a 5xx;
- a refusal says why on the page (role="alert"), or is a 4xx/422 with an error body;
- a refusal changes nothing: no session cookie, no new session, no password set, no flow
  step taken, no attempt counted for input that isn't a code at all, no staff row;
- what was typed into a password field is never sent back in the page;
- codes: spaces are ignored and any Unicode decimal digit (Arabic-Indic, fullwidth...) counts
  as its ASCII digit (deliberately: the person types what the email shows, on whatever
  keyboard they have); anything else is not a code.

Also the password policy (core/passwords.py) and log redaction (core/logging.redact).
"""

from __future__ import annotations

import gc
import html
import re
import unicodedata
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pyotp
import pytest
import pytest_asyncio
from hypothesis import assume, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from markupsafe import escape
from sqlalchemy import func, select
from temporalio.testing import WorkflowEnvironment
from zxcvbn import zxcvbn

from core import recovery
from core.logging import redact
from core.models import BrowserSession, Staff
from core.passwords import ZXCVBN_MAX, PasswordPolicy, normalise, password_problems, personal_words
from tests.support.accounts import (
    PASSWORD,
    PENDING_COOKIE,
    RESET_COOKIE,
    SESSION_COOKIE,
    Person,
    account_row,
    browsing,
    emails_with_subject,
    hidden_fields,
    make_person,
    session_rows,
    set_cookies,
    sign_in,
    update_account,
)
from tests.support.config import examples
from tests.support.harness import Stack, running_stack
from tests.support.properties import check_examples
from tests.support.setup_pages import SESSION_COOKIE as SETUP_COOKIE
from tests.support.setup_pages import Browser as SetupBrowser
from tests.support.setup_pages import (
    another_code,
    at_code_step,
    db_state,
    manual_key,
    redirected_to,
    send_setup_email,
)

ON_THE_APP = pytest.mark.asyncio(loop_scope="session")  # the async tests; the rest are pure
pytestmark = pytest.mark.pages

ALERT = 'role="alert"'
RESET_CODE_SUBJECT = "Your agentOS password reset code"
MESSAGES = (
    "Enter the 6-digit code from the email.",
    "from your authenticator app (or a recovery code), or leave it",
    "The two passwords don&#39;t match.",
    "Incorrect code",
)
ARABIC_INDIC = str.maketrans("0123456789", "".join(chr(0x0660 + d) for d in range(10)))
FULLWIDTH = str.maketrans("0123456789", "".join(chr(0xFF10 + d) for d in range(10)))

# -- what a person may type --------------------------------------------------------------

# Any valid Unicode, NUL and controls included (surrogates can't be sent in an HTTP form).
ANY_CHAR = st.characters(codec="utf-8")
TEXT = st.text(ANY_CHAR, max_size=40)
SPACES = st.text(st.sampled_from(" \t\n\r\x0b\x0c\u00a0\u2003\u3000"), min_size=1, max_size=300)
DIGITS_ANY_SCRIPT = st.characters(categories=["Nd"])


def huge(low: int, high: int) -> st.SearchStrategy[str]:
    """Long text around a limit: one character repeated, or a short pattern repeated."""
    return st.builds(
        lambda unit, n: (unit * n)[:n], st.text(ANY_CHAR, min_size=1, max_size=3), st.integers(low, high)
    )


PASSWORDS = st.one_of(
    TEXT,
    st.text(ANY_CHAR, min_size=12, max_size=80),  # around the minimum length
    SPACES,
    huge(200, 1100),  # around the policy's 256 and the form's 1024
    st.sampled_from(
        [
            "password",
            "passwordpassword",
            "Password123456789",
            "aaaaaaaaaaaaaaaaaaaa",
            "qwertyuiopasdfghjkl",
            "agentOS agentOS agentOS",
            "\x00" * 20,
        ]
    ),
)
# Six digits of one script or several, spaced or not: taken as a code (a wrong one, here).
WELL_FORMED_CODES = st.one_of(
    st.from_regex(r"\A[0-9]{3} ?[0-9]{3}\Z"), st.text(DIGITS_ANY_SCRIPT, min_size=6, max_size=6)
)
CODES = st.one_of(
    WELL_FORMED_CODES,
    TEXT,
    st.text(st.sampled_from("0123456789 "), max_size=12),  # ASCII digits and spaces
    st.text(DIGITS_ANY_SCRIPT, min_size=5, max_size=7),  # "٣٣٣٣٣٣", fullwidth, other scripts
    # ASCII digits beside look-alikes that are not decimal digits (superscripts, circled,
    # a fraction) and decimal digits of other scripts (Arabic-Indic, Devanagari, fullwidth).
    st.text(
        st.sampled_from(
            "0123456789abcOoIl-\u00b2\u00b3\u00b9\u2460\u2465\u00bd"
            "\u0663\u06f4\u096b\u09e6\u0e53\uff10\uff19\u3000"
        ),
        max_size=10,
    ),
    huge(21, 60),  # longer than the field allows
)
EMAILS = st.one_of(
    TEXT,
    st.emails(),
    st.builds(lambda local, domain: f"{local}@{domain}", TEXT, TEXT),
    st.sampled_from(
        [
            "@",
            "a@",
            "@b",
            "a@b",
            "a b@example.com",
            "jo\x00@example.com",
            "j\u00f6@b\u00fccher.example",
            "\u03a9@\u03a9.\u03a9",
            " ",
            "",
        ]
    ),
    huge(300, 400),  # around the field's 320
)
CSRF = st.sampled_from(["valid", "missing", "forged"])
STRONG = "Velvet-Orbit-Lantern-Pixel-42"  # passes the policy for the people made here
OTHER_STRONG = "Quartz-Meadow-Harbor-Tulip-97"


def code_as_typed(typed: str) -> str | None:
    """What the product must take as a code: six decimal digits of any script, spaces
    anywhere ignored; None when the input isn't a code."""
    kept = [ch for ch in typed if not ch.isspace()]
    if len(kept) != 6 or not all(unicodedata.category(ch) == "Nd" for ch in kept):
        return None
    return "".join(str(unicodedata.decimal(ch)) for ch in kept)


def with_csrf(fields: dict[str, str], csrf: str) -> dict[str, str]:
    fields = dict(fields)
    if csrf == "missing":
        fields.pop("csrf", None)
    elif csrf == "forged":
        fields["csrf"] = "forged-" + fields.get("csrf", "")[:20]
    return fields


def assert_refused_on_page(
    response: httpx.Response,
    *,
    statuses: tuple[int, ...] = (400, 401, 422),
    typed_secrets: tuple[str, ...] = (),
    echoed: tuple[str, ...] = (),
    kept: dict[str, str] | None = None,
) -> None:
    """A clear refusal on the page, and no typed secret in it."""
    assert response.status_code in statuses, (response.status_code, response.text[:2000])
    assert response.headers["content-type"].startswith("text/html"), response.text[:500]
    assert ALERT in response.text, response.text
    assert_not_echoed(response, *typed_secrets, echoed=echoed, kept=kept)


SECRET_INPUTS = re.compile(r'<input\b[^>]*\bname="(password|confirm|code|totp)"[^>]*>')
FIELD_VALUE = re.compile(r'\bvalue="([^"]*)"')


def assert_not_echoed(
    response: httpx.Response, *secrets: str, echoed: tuple[str, ...] = (), kept: dict[str, str] | None = None
) -> None:
    """No password field comes back filled in, and no typed secret is anywhere in the page.
    `echoed` are the fields the page does show again (the email address); `kept`, the code
    fields a refused reset form may fill again with what was typed (and nothing else)."""
    body = response.text
    for match in SECRET_INPUTS.finditer(response.text):
        field, value = match.group(0), FIELD_VALUE.search(match.group(0))
        if value is not None and kept is not None and match.group(1) in kept:
            assert html.unescape(value.group(1)) == kept[match.group(1)], field
            # A password typed the same as a kept code must still be nowhere else.
            body = body.replace(field, "")
        else:
            assert value is None, field
    for shown in echoed:
        if shown:
            body = body.replace(str(escape(shown)), "")  # as the templates escape it
    for secret in secrets:
        escaped = str(escape(secret))
        assert not secret or f'value="{escaped}"' not in body
        # Long and varied enough, and not plain words, so it can't be a piece of the page
        # ("Password", "your email") by chance.
        if (
            len(secret.strip()) >= 8
            and len(set(secret)) >= 4
            and not all(ch.isascii() and (ch.isalpha() or ch == " ") for ch in secret)
        ):
            assert escaped not in body and secret not in body


def setup_cookies(response: httpx.Response) -> set[str]:
    return set(set_cookies(response))


async def count(stack: Stack, model: Any) -> int:
    async with stack.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


# -- the stack ---------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="session")
async def stack(temporal_dev_env: WorkflowEnvironment, database_url: str) -> AsyncIterator[Stack]:
    # The per-IP and per-person limits are not what these tests are about.
    async with running_stack(
        temporal_dev_env,
        database_url,
        signin_ip_limit=1_000_000,
        reset_request_ip_limit=1_000_000,
        setup_email_limit=1_000_000,
        admin_rate_limit=1_000_000,
    ) as running:
        yield running
    gc.collect()  # the worker's SQLite engine, now, not on a later flow's thread (tests/conftest.py stack)


# -- sign in -----------------------------------------------------------------------------


@ON_THE_APP
async def test_sign_in_form_refuses_cleanly(stack: Stack) -> None:
    person = await make_person(stack.sessions, stack.settings)
    emails = st.one_of(EMAILS, st.just(person.email), st.just(f"  {person.email.upper()} "))
    attempts = st.tuples(emails, st.one_of(PASSWORDS, st.just(PASSWORD)), CSRF).filter(
        lambda a: not (a[0].strip().lower() == person.email and a[1:] == (PASSWORD, "valid"))
    )
    # (the one left out signs in)

    async def refused(attempt: tuple[str, str, str]) -> None:
        email, password, csrf = attempt
        theirs = email.strip().lower() == person.email
        before = await account_row(stack.sessions, person)
        async with browsing(stack.http._transport) as browser:
            page = await browser.get("/sso/login")
            fields = with_csrf(hidden_fields(page, "/sso/login"), csrf)
            response = await browser.post("/sso/login", {**fields, "email": email, "password": password})
        assert_refused_on_page(response, typed_secrets=(password,), echoed=(email,))
        assert not setup_cookies(response) & {SESSION_COOKIE, PENDING_COOKIE}
        after = await account_row(stack.sessions, person)
        assert (after.password_hash, after.last_sign_in_at) == (before.password_hash, before.last_sign_in_at)
        if not theirs or csrf != "valid" or response.status_code == 422:
            assert after.failed_sign_ins == before.failed_sign_ins  # nothing counted
        assert await session_rows(stack.sessions, person) == []
        seen.add(response.status_code)

    seen: set[int] = set()
    await check_examples(
        attempts,
        refused,
        examples(40),
        first=[
            (person.email, OTHER_STRONG, "valid"),
            ("nobody@example.com", PASSWORD, "valid"),
            (person.email, PASSWORD, "missing"),
            (person.email, PASSWORD, "forged"),
            ("x" * 321, PASSWORD, "valid"),
            (person.email, "p" * 1025, "valid"),
            ("jo\x00@example.com", "\x00" * 20, "valid"),
        ],
    )
    assert seen == {400, 401, 422}


async def mfa_step(stack: Stack, person: Person, browser: Any) -> httpx.Response:
    await update_account(stack.sessions, person, failed_sign_ins=0, locked_until=None)
    assert redirected_to(await sign_in(browser, person.email), "/sso/login/mfa")
    return await browser.get("/sso/login/mfa")


def window_codes(secret: str) -> set[str]:
    totp = pyotp.TOTP(secret)
    step = totp.timecode(datetime.now(UTC))
    return {totp.generate_otp(s) for s in range(step - 2, step + 3)}


@ON_THE_APP
async def test_sign_in_authenticator_code_form(stack: Stack) -> None:
    person = await make_person(stack.sessions, stack.settings, mfa=True)
    assert person.totp_secret is not None

    async def refused(typed: str) -> None:
        # A recovery code is a second factor too: one of that shape counts as an attempt.
        code = code_as_typed(typed) or recovery.normalise(typed)
        async with browsing(stack.http._transport) as browser:
            page = await mfa_step(stack, person, browser)
            response = await browser.post(
                "/sso/login/mfa", {**hidden_fields(page, "/sso/login/mfa"), "code": typed}
            )
            pending = (await session_rows(stack.sessions, person, "mfa"))[-1]
        assert_refused_on_page(response)
        assert SESSION_COOKIE not in set_cookies(response)
        row = await account_row(stack.sessions, person)
        if code is None:  # not a code: said so, and not an attempt
            assert "Enter the 6-digit code" in response.text or response.status_code == 422
            assert (pending.data.get("attempts", 0), row.failed_sign_ins) == (0, 0)
        else:
            assert response.status_code == 401
            assert (pending.data["attempts"], row.failed_sign_ins) == (1, 1)
        assert await session_rows(stack.sessions, person, "signin") == []
        seen.add(code is None)

    seen: set[bool] = set()
    wrong = CODES.filter(lambda typed: code_as_typed(typed) not in window_codes(person.totp_secret or ""))
    mistyped = person.wrong_totp()
    await check_examples(
        wrong,
        refused,
        examples(30),
        first=[
            "",
            "12 34 5",
            "abcdef",
            "\u00b2\u00b3\u00b9\u2460\u2465\u00bd",
            "9" * 21,
            mistyped,
            mistyped.translate(ARABIC_INDIC),
        ],
    )
    assert seen == {True, False}

    # The right code typed on an Arabic-Indic keyboard, with a space: signed in.
    async with browsing(stack.http._transport) as browser:
        page = await mfa_step(stack, person, browser)
        code = person.totp_now().translate(ARABIC_INDIC)
        response = await browser.submit(page, "/sso/login/mfa", code=f"{code[:3]} {code[3:]}")
        assert redirected_to(response, "/sso/account"), response.text


# -- the setup link's password form ------------------------------------------------------


@ON_THE_APP
async def test_setup_password_form(stack: Stack) -> None:
    link: dict[str, Any] = {}

    async def new_link() -> None:
        staff, token = await send_setup_email(stack)
        # Opening the form moves the setup to link_opened (asynchronously): let that happen
        # first, so each example's before/after compares what its post alone changed.
        assert (await stack.http.get(f"/sso/setup/{token}/password")).status_code == 200
        await stack.wait_for(staff["id"], lambda s: s["state"] == "link_opened")
        link.update(staff=staff, token=token)

    await new_link()
    choices = st.tuples(PASSWORDS, st.booleans(), PASSWORDS, CSRF)

    async def answered(choice: tuple[str, bool, str, str]) -> None:
        password, same, other, csrf = choice
        confirm = password if same else other
        staff, token = link["staff"], link["token"]
        before = await db_state(stack, staff["id"])
        browser = SetupBrowser(stack)
        try:
            form = await browser.get(f"/sso/setup/{token}/password")
            assert form.status_code == 200, form.text
            fields = with_csrf(hidden_fields(form, f"/sso/setup/{token}/password"), csrf)
            response = await browser.post(
                f"/sso/setup/{token}/password", {**fields, "password": password, "confirm": confirm}
            )
        finally:
            await browser.aclose()
        policy = PasswordPolicy(min_length=stack.settings.password_min_length)
        personal = personal_words(
            staff["first_name"], staff["last_name"], staff["external_email_1"], stack.settings.brand_name
        )
        acceptable = (
            csrf == "valid"
            and password == confirm
            and len(password) <= 1024
            and not password_problems(password, policy, personal)
        )
        assert response.status_code < 500, response.text
        if acceptable:
            assert redirected_to(response, "/sso/setup/confirm"), response.text
            assert SETUP_COOKIE in set_cookies(response)
            assert_not_echoed(response, password)
            await new_link()  # this one is used now
            seen.add(acceptable)
            return
        assert_refused_on_page(response, typed_secrets=(password, confirm))
        assert SETUP_COOKIE not in set_cookies(response)
        assert await db_state(stack, staff["id"]) == before  # link unused, no account, no session
        assert (await stack.http.get(f"/sso/setup/{token}")).status_code == 200  # still usable

        seen.add(acceptable)

    seen: set[bool] = set()
    await check_examples(
        choices,
        answered,
        examples(40),
        first=[
            (STRONG, True, "", "valid"),
            ("short", True, "", "valid"),
            (STRONG, False, OTHER_STRONG, "valid"),
            (STRONG, True, "", "missing"),
            ("Robin Ashcombe Robin Ashcombe", True, "", "valid"),
            ("\x00" * 20, True, "", "valid"),
            (" " * 40, True, "", "valid"),
            ("p" * 300, True, "", "valid"),
            ("p" * 1025, True, "", "valid"),
        ],
    )
    assert seen == {True, False}


# -- the setup code forms ----------------------------------------------------------------


@ON_THE_APP
async def test_setup_confirm_code_form(stack: Stack) -> None:
    browser = SetupBrowser(stack)
    try:
        step = await at_code_step(stack, browser)

        async def answered(typed: str) -> None:
            code = code_as_typed(typed)
            before = await stack.status(step.staff["id"])
            page = await browser.get("/sso/setup/confirm")
            response = await browser.submit(page, "/sso/setup/confirm", code=typed)
            assert_refused_on_page(response)
            after = await stack.status(step.staff["id"])
            assert after["state"] == "code_sent"
            if code is None:  # not a code: said so, nothing counted
                assert "Enter the 6-digit code" in response.text or response.status_code == 422
                assert after["code"] == before["code"]
            else:
                assert after["code"]["wrong_codes_total"] - before["code"]["wrong_codes_total"] in (
                    0,
                    1,
                )  # counted, unless the code was already dead
            seen.add(code is None)

        seen: set[bool] = set()
        wrong = another_code(step.code)
        await check_examples(
            CODES.filter(lambda typed: code_as_typed(typed) != step.code),
            answered,
            examples(30),
            first=[
                "abcdef",
                "12345",
                "1234567",
                "\u2460" * 6,
                "9" * 21,
                wrong,
                wrong.translate(ARABIC_INDIC),
                wrong.translate(FULLWIDTH),
            ],
        )
        assert seen == {True, False}
    finally:
        await browser.aclose()


@ON_THE_APP
async def test_setup_authenticator_code_form(stack: Stack) -> None:
    browser = SetupBrowser(stack)
    try:
        step = await at_code_step(stack, browser)
        confirmed = await browser.submit(step.page, "/sso/setup/confirm", code=step.code)
        assert redirected_to(confirmed, "/sso/setup/mfa"), confirmed.text
        secret = manual_key(await browser.get("/sso/setup/mfa"))

        async def answered(typed: str) -> None:
            page = await browser.get("/sso/setup/mfa")
            response = await browser.submit(page, "/sso/setup/mfa", code=typed)
            assert_refused_on_page(response, statuses=(400, 409, 422))
            assert (await stack.status(step.staff["id"]))["state"] == "mfa_pending"

        wrong = CODES.filter(lambda typed: code_as_typed(typed) not in window_codes(secret))
        mistyped = next(f"{n:06d}" for n in range(1_000_000) if f"{n:06d}" not in window_codes(secret))
        await check_examples(
            wrong,
            answered,
            examples(25),
            first=["abcdef", "\u00b2" * 6, mistyped, mistyped.translate(FULLWIDTH)],
        )
    finally:
        await browser.aclose()


@ON_THE_APP
async def test_codes_typed_in_other_scripts_are_accepted(stack: Stack) -> None:
    """The deliberate normalisation: the emailed code in Arabic-Indic digits, then the
    authenticator's code in fullwidth digits with an ideographic space."""
    browser = SetupBrowser(stack)
    try:
        step = await at_code_step(stack, browser)
        wrong = await browser.submit(step.page, "/sso/setup/confirm", code="①②③④⑤⑥")
        assert wrong.status_code == 400 and "Enter the 6-digit code" in wrong.text
        confirmed = await browser.submit(wrong, "/sso/setup/confirm", code=step.code.translate(ARABIC_INDIC))
        assert redirected_to(confirmed, "/sso/setup/mfa"), confirmed.text
        page = await browser.get("/sso/setup/mfa")
        code = pyotp.TOTP(manual_key(page)).now().translate(FULLWIDTH)
        done = await browser.submit(page, "/sso/setup/mfa", code=f"{code[:3]}\u3000{code[3:]}")
        assert redirected_to(done, "/sso/setup/done"), done.text
    finally:
        await browser.aclose()


# -- forgot and reset --------------------------------------------------------------------


@ON_THE_APP
async def test_forgot_form(stack: Stack) -> None:
    person = await make_person(stack.sessions, stack.settings)
    asks = st.tuples(st.one_of(EMAILS, st.just(person.email), st.just(person.email.upper())), CSRF)

    async def answered(ask: tuple[str, str]) -> None:
        email, csrf = ask
        before = await count(stack, BrowserSession)
        async with browsing(stack.http._transport) as browser:
            page = await browser.get("/sso/forgot")
            fields = with_csrf(hidden_fields(page, "/sso/forgot"), csrf)
            response = await browser.post("/sso/forgot", {**fields, "email": email})
        plausible = "@" in email and len(email.strip()) >= 3 and len(email) <= 320
        if csrf == "valid" and plausible:  # the same answer for every address
            assert redirected_to(response, "/sso/reset?sent=1"), response.text
            assert RESET_COOKIE in set_cookies(response)
            assert await count(stack, BrowserSession) == before + 1
            seen.add(response.status_code)
            return
        assert_refused_on_page(response)
        assert RESET_COOKIE not in set_cookies(response)
        assert await count(stack, BrowserSession) == before

        seen.add(response.status_code)

    seen: set[int] = set()
    await check_examples(
        asks,
        answered,
        examples(25),
        first=[
            (person.email, "valid"),
            ("nobody@example.com", "valid"),
            ("no-at-sign", "valid"),
            (person.email, "missing"),
            (person.email, "forged"),
            ("x" * 321, "valid"),
            ("a\x00@example.com", "valid"),
            ("@", "valid"),
        ],
    )
    assert seen == {303, 400, 422}


@ON_THE_APP
async def test_reset_form(stack: Stack) -> None:
    person = await make_person(stack.sessions, stack.settings)
    async with browsing(stack.http._transport) as browser:
        page = await browser.get("/sso/forgot")
        asked = await browser.submit(page, "/sso/forgot", email=person.email)
        assert redirected_to(asked, "/sso/reset?sent=1")
        [body] = await emails_with_subject(stack.sessions, stack.settings, person.email, RESET_CODE_SUBJECT)
        real_code = re.search(r"^\s+(\d{6})\s*$", body, re.M).group(1)  # type: ignore[union-attr]
        before = await account_row(stack.sessions, person)
        policy = PasswordPolicy(min_length=stack.settings.password_min_length)
        choices = st.tuples(
            CODES.filter(lambda typed: code_as_typed(typed) != real_code),
            PASSWORDS,
            st.booleans(),
            PASSWORDS,
            st.one_of(st.just(""), CODES),
            CSRF,
        )

        async def refused(choice: tuple[str, str, bool, str, str, str]) -> None:
            code, password, same, other, totp, csrf = choice
            confirm = password if same else other
            page = await browser.get("/sso/reset")
            assert page.status_code == 200, page.text
            fields = with_csrf(hidden_fields(page, "/sso/reset"), csrf)
            response = await browser.post(
                "/sso/reset", {**fields, "code": code, "totp": totp, "password": password, "confirm": confirm}
            )
            kept = {"code": code, "totp": totp}  # the codes, kept when the refusal isn't about them
            assert_refused_on_page(response, typed_secrets=(password, confirm), kept=kept)
            if response.status_code == 400 and csrf == "valid":
                if code_as_typed(code) is None:
                    assert MESSAGES[0] in response.text
                elif totp.strip() and code_as_typed(totp) is None and recovery.normalise(totp) is None:
                    assert MESSAGES[1] in response.text
                elif password != confirm:
                    assert MESSAGES[2] in response.text
                elif password_problems(password, policy, []):
                    assert MESSAGES[3] not in response.text  # refused before the flow
                else:
                    assert (
                        MESSAGES[3] in response.text or "Too many incorrect codes" in response.text
                    )  # the flow's answer to a wrong code
            assert not set_cookies(response).keys() & {SESSION_COOKIE, RESET_COOKIE}
            after = await account_row(stack.sessions, person)
            assert after.password_hash == before.password_hash
            assert await session_rows(stack.sessions, person, "signin") == []
            seen.update(m for m in MESSAGES if m in response.text)

        seen: set[str] = set()
        wrong = another_code(real_code)
        await check_examples(
            choices,
            refused,
            examples(30),
            first=[
                (wrong, STRONG, True, "", "", "valid"),
                (wrong, STRONG, False, OTHER_STRONG, "", "valid"),
                (wrong, "short", True, "", "", "valid"),
                ("abc", STRONG, True, "", "", "valid"),
                (wrong, STRONG, True, "", "abc", "valid"),
                (wrong, STRONG, True, "", "", "missing"),
                (wrong.translate(ARABIC_INDIC), STRONG, True, "", wrong, "valid"),
            ],
        )
        assert seen == set(MESSAGES)


# -- the admin API's StaffCreate body -----------------------------------------------------

FIELDS = {"first_name", "last_name", "external_email_1", "is_admin"}
PLAIN_NAMES = st.text(st.characters(categories=["L", "M", "Zs", "Pd", "Po"]), min_size=1, max_size=30)
PLAUSIBLE_EMAILS = st.one_of(
    st.builds(
        "{}@{}.{}".format,
        st.from_regex(r"\A[A-Za-z0-9._%+-]{1,20}\Z"),
        st.from_regex(r"\A[a-z0-9-]{1,20}\Z"),
        st.sampled_from(["com", "org", "co.uk"]),
    ),
    st.sampled_from(["dup@example.com", "DUP@Example.COM", " dup@example.com "]),
)
NAMES = st.one_of(
    PLAIN_NAMES,
    TEXT,
    SPACES,
    st.just("Jo"),
    huge(95, 110),
    st.builds(lambda a, c, b: a + c + b, TEXT, st.characters(categories=["Cc", "Zl", "Zp"]), TEXT),
)
BODIES = st.one_of(
    st.fixed_dictionaries(
        {"first_name": PLAIN_NAMES, "last_name": PLAIN_NAMES, "external_email_1": PLAUSIBLE_EMAILS}
    ),
    st.fixed_dictionaries(
        {"first_name": NAMES, "last_name": NAMES, "external_email_1": EMAILS},
        optional={"is_admin": st.one_of(st.booleans(), TEXT, st.integers(), st.none())},
    ),
    st.builds(
        lambda body, extra: {**body, **extra},
        st.fixed_dictionaries({"first_name": NAMES, "last_name": NAMES, "external_email_1": st.emails()}),
        st.dictionaries(
            st.text(min_size=1, max_size=12).filter(lambda k: k not in FIELDS),
            st.one_of(st.none(), st.booleans(), TEXT),
            min_size=1,
            max_size=2,
        ),
    ),
    st.dictionaries(st.sampled_from(sorted(FIELDS)), st.one_of(TEXT, st.emails()), max_size=3),
)
# JSON a client library can produce but Python can't encode: lone surrogates.
RAW_BODIES = st.sampled_from(
    [
        '{"first_name": "\\ud800", "last_name": "B", "external_email_1": "a@example.com"}',
        '{"first_name": "A", "last_name": "B", "external_email_1": "\\udfff@example.com"}',
        '{"first_name": "A", "last_name": "B\\u0000", "external_email_1": "b@example.com"}',
        '{"first_name": "A", "last_name": "B", "external_email_1": "b@example.com", "x": 1',
        "[]",
        "null",
        '"text"',
    ]
)


def controls(value: object) -> bool:
    return isinstance(value, str) and any(
        unicodedata.category(ch) in ("Cc", "Zl", "Zp", "Cs") for ch in value
    )


@ON_THE_APP
async def test_staff_create_body(stack: Stack) -> None:
    async def answered(body: dict[str, Any] | str) -> None:
        before = await count(stack, Staff)
        if isinstance(body, str):
            response = await stack.http.post(
                "/api/v1/staff",
                headers={**stack.admin, "Content-Type": "application/json"},
                content=body.encode(),
            )
        else:
            response = await stack.http.post("/api/v1/staff", headers=stack.admin, json=body)
        assert response.status_code in (201, 409, 422), response.text
        seen.add(response.status_code)
        answer = response.json()
        if response.status_code != 201:
            assert await count(stack, Staff) == before
            if response.status_code == 422:
                assert answer["detail"] and all({"loc", "msg", "type"} <= set(e) for e in answer["detail"])
            else:
                assert answer["error"] == "conflict" and answer["message"]
            return
        # Created: then the body was one the documented rules allow, stored as documented.
        assert isinstance(body, dict) and set(body) <= FIELDS
        assert not any(controls(body[k]) for k in ("first_name", "last_name"))
        assert await count(stack, Staff) == before + 1
        for name in ("first_name", "last_name"):
            assert 1 <= len(answer[name]) <= 100 and answer[name] == answer[name].strip()
            assert not controls(answer[name])
        email = answer["external_email_1"]
        assert email == email.lower() and "@" in email and not controls(email)
        assert not any(ch.isspace() for ch in email)
        got = await stack.http.get(f"/api/v1/staff/{answer['id']}", headers=stack.admin)
        assert got.json() == answer

    seen: set[int] = set()
    plain = {"first_name": "Jo", "last_name": "Bloggs", "external_email_1": "jo.b@example.com"}
    await check_examples(
        st.one_of(BODIES, RAW_BODIES),
        answered,
        examples(60),
        first=[
            plain,
            {**plain, "external_email_1": " JO.B@Example.com "},
            {**plain, "external_email_1": "jo.c@example.com", "admin": True},
            {**plain, "first_name": "Jo\x7f"},
            {**plain, "last_name": "\u2028"},
            {**plain, "first_name": " \u3000 "},
            {**plain, "external_email_1": "jo@b\x00.com"},
            '{"first_name": "\\ud800", "last_name": "B", "external_email_1": "a@example.com"}',
        ],
    )
    assert seen == {201, 409, 422}


# -- the password policy (no app) ----------------------------------------------------------

MIN_LENGTHS = st.integers(min_value=8, max_value=64)
WORDS = st.lists(st.text(st.characters(categories=["Ll", "Lu", "Nd"]), min_size=3, max_size=12), max_size=4)


@hypothesis_settings(max_examples=examples(200))
@given(password=st.one_of(TEXT, st.text(ANY_CHAR, max_size=70)), min_length=MIN_LENGTHS, words=WORDS)
def test_policy_names_the_length_of_a_short_password(
    password: str, min_length: int, words: list[str]
) -> None:
    length = len(password)  # as typed, not after NFKC
    assume(length < min_length)
    problems = password_problems(password, PasswordPolicy(min_length=min_length), words)
    assert problems == [f"Use at least {min_length} characters (this has {length})."]


@hypothesis_settings(max_examples=examples(200))
@given(
    password=st.one_of(
        st.text(ANY_CHAR, min_size=8, max_size=90),
        huge(250, 300),
        st.builds(
            " ".join,
            st.lists(
                st.sampled_from(
                    [
                        "velvet",
                        "orbit",
                        "lantern",
                        "pixel",
                        "quartz",
                        "meadow",
                        "42",
                        "harbor",
                        "tulip",
                        "robin",
                        "ashcombe",
                        "agentos",
                    ]
                ),
                min_size=2,
                max_size=6,
            ),
        ),
    ),
    min_length=MIN_LENGTHS,
    words=WORDS,
)
def test_policy_accepts_only_what_its_rules_allow(password: str, min_length: int, words: list[str]) -> None:
    policy = PasswordPolicy(min_length=min_length)
    personal = [w.lower() for w in words]
    problems = password_problems(password, policy, personal)
    assert all(isinstance(p, str) and p.strip() for p in problems)
    if problems:
        return
    # Accepted: long enough and short enough in code points as typed, hard to guess by
    # zxcvbn's estimate, and, without the person's own words, still a good password.
    normalised = normalise(password)
    assert policy.min_length <= len(password) <= policy.max_length
    assert zxcvbn(normalised[:ZXCVBN_MAX], user_inputs=personal)["score"] >= 3
    remainder = normalised.lower()
    for word in sorted(set(personal), key=len, reverse=True):
        remainder = remainder.replace(word, "")
    if remainder != normalised.lower():
        assert len(remainder) >= policy.min_length
        assert zxcvbn(remainder[:ZXCVBN_MAX], user_inputs=personal)["score"] >= 3


@hypothesis_settings(max_examples=examples(100))
@given(password=st.one_of(TEXT, st.text(ANY_CHAR, min_size=250, max_size=400)), min_length=MIN_LENGTHS)
def test_policy_refuses_every_password_over_the_maximum(password: str, min_length: int) -> None:
    length = len(password)
    assume(length > 256)
    problems = password_problems(password, PasswordPolicy(min_length=min_length), [])
    assert problems == [f"Use at most 256 characters (this has {length})."]


# -- log redaction (no app) ----------------------------------------------------------------

TOKEN = st.text(
    st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
    min_size=16,
    max_size=64,
)
QUERY_VALUE = st.text(
    st.sampled_from("ABCDEFGHIJKLMNOPabcdefghijklmnop0123456789-_.~%"), min_size=8, max_size=80
)
AROUND = st.text(ANY_CHAR, max_size=60)


@hypothesis_settings(max_examples=examples(300))
@given(
    before=AROUND, token=TOKEN, rest=st.sampled_from(["", "/password", "/", "?x=1", " ", '"']), after=AROUND
)
def test_redact_removes_every_link_token(before: str, token: str, rest: str, after: str) -> None:
    assume(token not in before + after)
    text = f"{before}/sso/setup/{token}{rest}{after}"
    assert token not in redact(text)


@hypothesis_settings(max_examples=examples(300))
@given(
    before=AROUND,
    code=QUERY_VALUE,
    state=QUERY_VALUE,
    slash=st.sampled_from(["", "/"]),
    after=st.one_of(
        st.just(""),
        st.just(" HTTP/1.1"),
        st.just('" 302'),
        st.text(ANY_CHAR, max_size=30).map(lambda t: " " + t),
    ),
)
def test_redact_removes_every_callback_query(
    before: str, code: str, state: str, slash: str, after: str
) -> None:
    assume(code not in before + after and state not in before + after)
    text = f"{before}/sso/entra/callback{slash}?code={code}&state={state}{after}"
    redacted = redact(text)
    assert code not in redacted and state not in redacted


def test_redact_removes_a_callback_query_whose_path_follows_a_setup_path() -> None:
    """Found by the property above: redacting the setup token first ate `/sso` of the callback."""
    redacted = redact("/sso/setup/sso/entra/callback?code=00000000&state=11111111")
    assert "00000000" not in redacted and "11111111" not in redacted


def test_redact_removes_a_token_after_a_setup_path_inside_the_path() -> None:
    """Found by the property above: the second `/sso/setup/` starts inside the first match."""
    assert redact("/sso/setup/sso/setup/0000000000000000") == "/sso/setup/[redacted]/setup/[redacted]"
    assert "0123456789abcdef" not in redact("/sso/reset/link/sso/reset/link/0123456789abcdef")


def test_redact_keeps_what_is_not_secret() -> None:
    kept = (
        "GET /sso/setup/confirm HTTP/1.1",
        "/sso/setup/mfa",
        "/sso/setup/done?x",
        "/sso/setup/resend",
        "/sso/login?return_to=/sso/account",
        "/api/v1/staff/abc/sso",
    )
    for text in kept:
        assert redact(text) == text
    assert redact("/sso/setup/abcdefghijklmnop") == "/sso/setup/[redacted]"
