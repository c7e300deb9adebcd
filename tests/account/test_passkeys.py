"""Passkeys, driven like a browser against the app and a real worker, with a software
authenticator (tests/support/passkey_key.py): added on the account page, signing in without a
password and as the second factor, renamed and removed; and every way a passkey answer can be
wrong is refused, changes nothing and is audited.

docs/security.md §36 and §38 are what these prove.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select, update
from webauthn.helpers import bytes_to_base64url

from api.cookies import PASSKEY_CHALLENGE, cookie_name
from api.services.sessions import session_hash
from core.accounts import ACCOUNT_DISABLED as DISABLED
from core.models import AuditEvent, BrowserSession, Organisation, Passkey, RecoveryCode, SsoAccount
from tests.support.accounts import (
    Browser,
    Person,
    account_row,
    audit_events,
    browsing,
    emails_with_subject,
    hidden_fields,
    move_session,
    page_text,
    recovery_codes_in,
    redirected_to,
    sign_in,
)
from tests.support.harness import Stack, running_app
from tests.support.passkey_key import SoftKey, options, passwordless, soft_key

pytestmark = [pytest.mark.pages, pytest.mark.asyncio(loop_scope="session")]

NOTICE = "Your agentOS Multi-Factor Authentication was changed"
REFUSED = "That passkey didn't work."


def key_for(stack: Stack, person: Person) -> SoftKey:
    return soft_key(stack.settings, person.staff_id)


async def add_passkey(
    browser: Browser, key: SoftKey, name: str = "Office PC", **knobs: str
) -> httpx.Response:
    page = await browser.get("/sso/account")
    made = await options(browser, page, "/sso/account/passkeys", "register")
    return await browser.submit(
        page, "/sso/account/passkeys", credential=key.register(made, **knobs), name=name
    )


async def sign_out(browser: Browser) -> None:
    page = await browser.get("/sso/account")
    assert redirected_to(await browser.submit(page, "/sso/logout"), "/sso/login?notice=signed_out")


async def with_passkey(stack: Stack, browser: Browser) -> tuple[Person, SoftKey, list[str]]:
    """A person who signed in with their password and added a passkey (their first second
    factor, so recovery codes came with it), then signed out."""
    person = await stack.person()
    assert redirected_to(await sign_in(browser, person.email), "/sso/account")
    key = key_for(stack, person)
    added = await add_passkey(browser, key)
    assert added.status_code == 200, added.text
    codes = recovery_codes_in(added)
    assert len(codes) == 10
    await sign_out(browser)
    return person, key, codes


async def session_data(stack: Stack, browser: Browser) -> dict[str, Any]:
    """How the browser's session was signed in (its browser label, checked elsewhere, left out)."""
    cookie = browser.cookie(cookie_name(stack.settings, "sso_session"))
    assert cookie is not None
    async with stack.sessions() as session:
        row = await session.get(BrowserSession, session_hash(stack.settings, cookie))
        assert row is not None
        data = dict(row.data)
        assert isinstance(data.pop("browser"), str)
        return data


async def refusals(stack: Stack, person: Person) -> list[str]:
    return [
        str(e.details.get("reason"))
        for e in await audit_events(stack.sessions, person)
        if e.action == "passkey.failed"
    ]


async def test_add_a_passkey_then_sign_in_with_it_and_no_password(stack: Stack, browser: Browser) -> None:
    person, key, codes = await with_passkey(stack, browser)
    async with stack.sessions() as session:
        [row] = (await session.scalars(select(Passkey).where(Passkey.account_id == person.account_id))).all()
        stored = (
            await session.scalars(select(RecoveryCode).where(RecoveryCode.account_id == person.account_id))
        ).all()
        challenges = (
            await session.scalars(select(BrowserSession).where(BrowserSession.purpose == "passkey"))
        ).all()
    assert row.name == "Office PC" and row.transports == ["internal"] and not row.backup_eligible
    assert len(stored) == 10
    # Challenges are kept only as keyed digests, and were used up.
    assert challenges and all(c.revoked_at is not None for c in challenges)
    assert all(str(c.data["challenge"]).startswith("passkey-challenge_") for c in challenges)
    [body] = await emails_with_subject(stack.sessions, stack.settings, person.email, NOTICE)
    assert "a passkey was added" in body and not any(code in body for code in codes)

    signed = await passwordless(browser, key)
    assert redirected_to(signed, "/sso/account"), signed.text
    assert await session_data(stack, browser) == {"method": "passkey", "amr": ["hwk", "user", "mfa"]}
    account = await browser.get("/sso/account")
    assert "Office PC" in page_text(account)
    assert "you sign in with your password and a passkey" in page_text(account)
    async with stack.sessions() as session:
        used = await session.get(Passkey, row.id)
        assert used is not None and used.sign_count == 1 and used.last_used_at is not None
    actions = [e.action for e in await audit_events(stack.sessions, person)]
    assert "passkey.added" in actions and "sign_in.success" in actions


async def test_a_passkey_is_the_second_factor_after_the_password(stack: Stack, browser: Browser) -> None:
    person, key, _ = await with_passkey(stack, browser)
    assert redirected_to(await sign_in(browser, person.email), "/sso/login/mfa")
    page = await browser.get("/sso/login/mfa")
    assert "Use your passkey" in page_text(page) and "Authenticator code" not in page_text(page)
    asked = await options(browser, page, "/sso/login/mfa/passkey", "mfa")
    # The browser is told which passkeys to offer: this person's.
    assert [c["id"] for c in asked["allowCredentials"]] == [bytes_to_base64url(key.credential_id)]
    signed = await browser.submit(page, "/sso/login/mfa/passkey", credential=key.sign_in(asked))
    assert redirected_to(signed, "/sso/account"), signed.text
    assert await session_data(stack, browser) == {"method": "passkey", "amr": ["pwd", "hwk", "user", "mfa"]}


async def test_a_passkey_from_another_relying_party_or_origin_is_refused(
    stack: Stack, browser: Browser
) -> None:
    person, key, _ = await with_passkey(stack, browser)
    for knobs, reason in (
        ({"rp_id": "evil.example.test"}, "Unexpected RP ID hash"),
        ({"origin": "https://evil.example.test"}, "Unexpected client data origin"),
        ({"verified": False}, "User verification is required"),
    ):
        refused = await passwordless(browser, key, **knobs)
        assert refused.status_code == 401 and REFUSED in page_text(refused), knobs
        assert browser.cookie(cookie_name(stack.settings, "sso_session")) is None
        assert any(reason in r for r in await refusals(stack, person)), (
            reason,
            await refusals(stack, person),
        )
    # Adding one for another site is refused too.
    assert redirected_to(await sign_in(browser, person.email), "/sso/login/mfa")
    assert redirected_to(await passkey_mfa(browser, key), "/sso/account")
    other = key_for(stack, person)
    refused = await add_passkey(browser, other, rp_id="evil.example.test")
    assert refused.status_code == 400 and REFUSED in page_text(refused)
    async with stack.sessions() as session:
        keys = (await session.scalars(select(Passkey).where(Passkey.account_id == person.account_id))).all()
    assert len(keys) == 1


async def passkey_mfa(browser: Browser, key: SoftKey) -> httpx.Response:
    page = await browser.get("/sso/login/mfa")
    asked = await options(browser, page, "/sso/login/mfa/passkey", "mfa")
    return await browser.submit(page, "/sso/login/mfa/passkey", credential=key.sign_in(asked))


async def test_a_challenge_works_once_and_for_five_minutes(stack: Stack, browser: Browser) -> None:
    person, key, _ = await with_passkey(stack, browser)
    page = await browser.get("/sso/login")
    asked = await options(browser, page, "/sso/login/passkey", "signin")
    answer = key.sign_in(asked)
    challenge_cookie = cookie_name(stack.settings, PASSKEY_CHALLENGE)
    used = browser.cookie(challenge_cookie)
    assert used is not None
    assert redirected_to(await browser.submit(page, "/sso/login/passkey", credential=answer), "/sso/account")
    await sign_out(browser)
    browser.set_cookie(challenge_cookie, used)
    # The same answer again (its challenge cookie put back): used up.
    replayed = await browser.submit(page, "/sso/login/passkey", credential=answer)
    assert replayed.status_code == 401 and REFUSED in page_text(replayed)

    asked = await options(browser, page, "/sso/login/passkey", "signin")
    # Five minutes later.
    challenge = browser.cookie(challenge_cookie)
    assert challenge is not None
    back = timedelta(minutes=5, seconds=1)
    await move_session(
        stack.sessions, session_hash(stack.settings, challenge), back, "created_at", "expires_at"
    )
    expired = await browser.submit(page, "/sso/login/passkey", credential=key.sign_in(asked))
    assert expired.status_code == 401 and REFUSED in page_text(expired)
    # A challenge from another browser does not match this one's.
    async with browsing(stack.transport) as other:
        their_page = await other.get("/sso/login")
        theirs = await options(other, their_page, "/sso/login/passkey", "signin")
    await options(browser, page, "/sso/login/passkey", "signin")
    crossed = await browser.submit(page, "/sso/login/passkey", credential=key.sign_in(theirs))
    assert crossed.status_code == 401
    reasons = await refusals(stack, person)
    assert reasons.count("challenge used or expired") >= 2 and "challenge does not match" in reasons


async def test_a_counter_going_back_is_refused_and_audited(stack: Stack, browser: Browser) -> None:
    person, key, _ = await with_passkey(stack, browser)
    assert redirected_to(await passwordless(browser, key, count=7), "/sso/account")
    await sign_out(browser)
    cloned = await passwordless(browser, key, count=5)
    assert cloned.status_code == 401 and REFUSED in page_text(cloned)
    [event] = [
        e for e in await audit_events(stack.sessions, person) if e.action == "passkey.counter_regressed"
    ]
    assert event.outcome == "refused" and event.details["stored"] == 7 and event.details["presented"] == 5
    async with stack.sessions() as session:
        [row] = (await session.scalars(select(Passkey).where(Passkey.account_id == person.account_id))).all()
    assert row.sign_count == 7


async def test_a_removed_passkey_stops_working(stack: Stack, browser: Browser) -> None:
    person, key, _ = await with_passkey(stack, browser)
    assert redirected_to(await passwordless(browser, key), "/sso/account")
    account = await browser.get("/sso/account")
    async with stack.sessions() as session:
        [row] = (await session.scalars(select(Passkey).where(Passkey.account_id == person.account_id))).all()
    renamed = await browser.submit(account, f"/sso/account/passkeys/{row.id}/name", name="  Desk   PC ")
    assert redirected_to(renamed, "/sso/account?notice=passkey_renamed")
    blank = await browser.submit(account, f"/sso/account/passkeys/{row.id}/name", name=" ")
    assert blank.status_code == 400 and "Give the passkey a name" in page_text(blank)
    forged = await browser.post(f"/sso/account/passkeys/{row.id}/remove", {"csrf": "forged"})
    assert forged.status_code == 400
    account = await browser.get("/sso/account")
    assert "Desk PC" in page_text(account)
    removed = await browser.submit(account, f"/sso/account/passkeys/{row.id}/remove")
    assert redirected_to(removed, "/sso/account?notice=passkey_removed")
    await sign_out(browser)

    refused = await passwordless(browser, key)
    assert refused.status_code == 401 and REFUSED in page_text(refused)
    async with stack.sessions() as session:
        latest = await session.scalar(
            select(AuditEvent)
            .where(AuditEvent.action == "passkey.failed")
            .order_by(AuditEvent.occurred_at.desc())
        )
    assert latest is not None and latest.details["reason"] == "unknown passkey"
    # Nothing of the factor is left: the recovery codes went with the last passkey, and the
    # password alone signs in again.
    row_after = await account_row(stack.sessions, person)
    async with stack.sessions() as session:
        left = (
            await session.scalars(select(RecoveryCode).where(RecoveryCode.account_id == row_after.id))
        ).all()
    assert left == []
    assert redirected_to(await sign_in(browser, person.email), "/sso/account")
    bodies = await emails_with_subject(stack.sessions, stack.settings, person.email, NOTICE)
    assert any("a passkey was removed" in body for body in bodies)
    actions = [e.action for e in await audit_events(stack.sessions, person)]
    assert {"passkey.renamed", "passkey.removed"} <= set(actions)


async def test_another_persons_passkey_is_refused(stack: Stack, browser: Browser) -> None:
    owner, owners_key, _ = await with_passkey(stack, browser)
    other, _, _ = await with_passkey(stack, browser)
    # As the second factor of someone else's password.
    assert redirected_to(await sign_in(browser, other.email), "/sso/login/mfa")
    page = await browser.get("/sso/login/mfa")
    asked = await options(browser, page, "/sso/login/mfa/passkey", "mfa")
    refused = await browser.submit(page, "/sso/login/mfa/passkey", credential=owners_key.sign_in(asked))
    assert refused.status_code == 401 and REFUSED in page_text(refused)
    assert browser.cookie(cookie_name(stack.settings, "sso_session")) is None
    assert "another person's passkey" in await refusals(stack, other)
    # Its user handle swapped for the other person's: the owner's key still names its owner.
    owners_key.user_handle = other.staff_id.bytes
    swapped = await passwordless(browser, owners_key)
    assert swapped.status_code == 401
    assert "user handle does not match" in await refusals(stack, owner)


async def test_options_need_the_form_token_and_the_right_session(stack: Stack, browser: Browser) -> None:
    page = await browser.get("/sso/login")
    csrf = hidden_fields(page, "/sso/login/passkey")["csrf"]
    assert (
        await browser.post("/sso/passkeys/options", {"csrf": "x", "ceremony": "signin"})
    ).status_code == 400
    for ceremony in ("register", "mfa", "reset", "other"):
        answer = await browser.post("/sso/passkeys/options", {"csrf": csrf, "ceremony": ceremony})
        assert answer.status_code == 400, ceremony
    asked = await browser.post("/sso/passkeys/options", {"csrf": csrf, "ceremony": "signin"})
    options_json = json.loads(asked.text)
    assert options_json["rpId"] == urlsplit(stack.settings.public_url).hostname
    assert options_json["userVerification"] == "required"
    assert PASSKEY_CHALLENGE in "".join(asked.headers.get_list("set-cookie"))
    assert options_json["challenge"] not in asked.headers.get("set-cookie", "")


async def test_the_admin_mfa_reset_removes_passkeys(stack: Stack, browser: Browser) -> None:
    person, key, _ = await with_passkey(stack, browser)
    assert (await stack.status(person))["mfa_enabled"] is True  # a passkey is a second factor
    reset = await stack.http.delete(f"/api/v1/staff/{person.staff_id}/mfa", headers=stack.admin)
    assert reset.status_code == 200, reset.text
    async with stack.sessions() as session:
        keys = (await session.scalars(select(Passkey).where(Passkey.account_id == person.account_id))).all()
    assert keys == []
    refused = await passwordless(browser, key)
    assert refused.status_code == 401


async def test_an_administrator_keeps_a_second_factor(stack: Stack, browser: Browser) -> None:
    admin = await stack.person(is_admin=True)
    assert redirected_to(await sign_in(browser, admin.email), "/sso/account")
    assert (await add_passkey(browser, key_for(stack, admin))).status_code == 200
    account = await browser.get("/sso/account")
    async with stack.sessions() as session:
        [row] = (await session.scalars(select(Passkey).where(Passkey.account_id == admin.account_id))).all()
    refused = await browser.submit(account, f"/sso/account/passkeys/{row.id}/remove")
    assert refused.status_code == 400 and "you keep a second factor" in page_text(refused)
    async with stack.sessions() as session:
        assert await session.get(Passkey, row.id) is not None


async def test_a_malformed_answer_or_another_ceremonys_challenge_is_refused(
    stack: Stack, browser: Browser
) -> None:
    person, key, _ = await with_passkey(stack, browser)
    page = await browser.get("/sso/login")
    await options(browser, page, "/sso/login/passkey", "signin")
    for junk in ("", "not json", json.dumps({"id": "x"}), "[]"):
        refused = await browser.submit(page, "/sso/login/passkey", credential=junk)
        assert refused.status_code == 401 and REFUSED in page_text(refused), junk
    assert browser.cookie(cookie_name(stack.settings, "sso_session")) is None

    # A sign-in challenge answered on the second-factor step: not that step's challenge.
    assert redirected_to(await sign_in(browser, person.email), "/sso/login/mfa")
    mfa = await browser.get("/sso/login/mfa")
    asked = await options(browser, page, "/sso/login/passkey", "signin")
    crossed = await browser.submit(mfa, "/sso/login/mfa/passkey", credential=key.sign_in(asked))
    assert crossed.status_code == 401 and REFUSED in page_text(crossed)
    assert "challenge does not match" in await refusals(stack, person)
    # The step itself still works.
    assert redirected_to(await passkey_mfa(browser, key), "/sso/account")


async def test_passkey_ceremonies_are_limited_per_network(database_url: str) -> None:
    async with running_app(database_url, passkey_ip_limit=2) as app, browsing(app.transport) as browser:
        page = await browser.get("/sso/login")
        csrf = hidden_fields(page, "/sso/login/passkey")["csrf"]
        answers = [
            await browser.post("/sso/passkeys/options", {"csrf": csrf, "ceremony": "signin"})
            for _ in range(3)
        ]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert "Too many passkey attempts" in answers[2].json()["error"]


async def test_a_disabled_persons_passkey_gets_the_disabled_page_once_it_verified(
    stack: Stack, browser: Browser
) -> None:
    """A leaver's own passkey is told plainly, as their password is; a passkey whose signature
    fails learns nothing of the disable. Both are audited, neither signs in."""
    person, key, _ = await with_passkey(stack, browser)
    disabled = await stack.http.post(f"/api/v1/staff/{person.staff_id}/disable", headers=stack.admin)
    assert disabled.status_code == 200, disabled.text
    impostor = dataclasses.replace(key, private=ec.generate_private_key(ec.SECP256R1()))
    forged = await passwordless(browser, impostor)
    assert forged.status_code == 401 and REFUSED in page_text(forged)
    assert DISABLED not in page_text(forged)
    told = await passwordless(browser, key)
    assert told.status_code == 403 and DISABLED in page_text(told), told.text
    assert browser.cookie(cookie_name(stack.settings, "sso_session")) is None
    assert browser.cookie(cookie_name(stack.settings, PASSKEY_CHALLENGE)) is None
    events = await audit_events(stack.sessions, person)
    [failed] = [e for e in events if e.action == "sign_in.failed"]
    assert failed.outcome == "failure" and failed.actor.startswith("ip:")
    assert failed.details["reason"] == "account_disabled" and failed.details["method"] == "passkey"
    assert await refusals(stack, person) == ["Could not verify authentication signature"]
    assert not [e for e in events if e.action == "sign_in.success" and e.details.get("method") == "passkey"]
    # Enabled again: the same passkey signs in.
    enabled = await stack.http.post(f"/api/v1/staff/{person.staff_id}/enable", headers=stack.admin)
    assert enabled.status_code == 200, enabled.text
    assert redirected_to(await passwordless(browser, key), "/sso/account")


async def test_a_person_disabled_between_the_password_and_the_passkey_is_told_so(
    stack: Stack, browser: Browser
) -> None:
    person, key, _ = await with_passkey(stack, browser)
    assert redirected_to(await sign_in(browser, person.email), "/sso/login/mfa")
    page = await browser.get("/sso/login/mfa")
    asked = await options(browser, page, "/sso/login/mfa/passkey", "mfa")
    # The disable commits between the route reading the half-way sign-in and the passkey's
    # check (a disable through the API also ends the half-way sign-in: see tests/admin).
    async with stack.sessions() as session:
        await session.execute(
            update(SsoAccount).where(SsoAccount.staff_id == person.staff_id).values(status="disabled")
        )
        await session.commit()
    told = await browser.submit(page, "/sso/login/mfa/passkey", credential=key.sign_in(asked))
    assert told.status_code == 403 and DISABLED in page_text(told), told.text
    assert browser.cookie(cookie_name(stack.settings, "sso_session")) is None
    # The half-way sign-in is over: its page starts again from the password.
    assert redirected_to(await browser.get("/sso/login/mfa"), "/sso/login?notice=expired")
    [failed] = [e for e in await audit_events(stack.sessions, person) if e.action == "sign_in.failed"]
    assert failed.details["reason"] == "account_disabled" and failed.details["ceremony"] == "mfa"


async def test_a_suspended_organisations_passkey_gets_the_page_naming_it_once_it_verified(
    stack: Stack, browser: Browser
) -> None:
    """As for a disabled person: said only to the passkey's holder, audited, no sign-in."""
    person, key, _ = await with_passkey(stack, browser)
    made = await stack.http.post(
        "/api/v1/orgs", json={"name": "Harbour Lettings", "slug": "harbour-passkeys"}, headers=stack.admin
    )
    assert made.status_code == 201, made.text
    moved = await stack.http.post(
        f"/api/v1/staff/{person.staff_id}/move", json={"org_id": made.json()["id"]}, headers=stack.admin
    )
    assert moved.status_code == 200, moved.text
    async with stack.sessions() as session:
        await session.execute(
            update(Organisation).where(Organisation.slug == "harbour-passkeys").values(status="suspended")
        )
        await session.commit()
    impostor = dataclasses.replace(key, private=ec.generate_private_key(ec.SECP256R1()))
    forged = await passwordless(browser, impostor)
    assert forged.status_code == 401 and "Harbour Lettings" not in page_text(forged)
    told = await passwordless(browser, key)
    assert told.status_code == 403, told.text
    assert "Harbour Lettings can't use agentOS Single Sign-On at the moment" in page_text(told)
    assert browser.cookie(cookie_name(stack.settings, "sso_session")) is None
    failed = [e for e in await audit_events(stack.sessions, person) if e.action == "sign_in.failed"]
    assert [(e.details["reason"], e.details["method"]) for e in failed] == [("org_suspended", "passkey")]
