"""The provider's audit rows (docs/security.md §28): each code issued, each token redemption
and each refused one (a reused code, a wrong PKCE verifier, a wrong secret) is recorded with
the app's client_id and the staff member, and never with the code, token or secret."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from sqlalchemy import select

from core.models import AuditEvent
from tests.support.harness import Stack, running_app
from tests.support.oidc import authorization, code_for, redeem, signed_in_with_app, token_error, token_form

pytestmark = [pytest.mark.pages, pytest.mark.asyncio(loop_scope="session")]


@pytest_asyncio.fixture(loop_scope="session")
async def app_stack(database_url: str) -> AsyncIterator[Stack]:
    async with running_app(database_url) as stack:
        yield stack


async def oidc_events(stack: Stack) -> list[AuditEvent]:
    async with stack.sessions() as db:
        rows = await db.scalars(
            select(AuditEvent).where(AuditEvent.action.like("oidc.%")).order_by(AuditEvent.occurred_at)
        )
        return list(rows.all())


async def test_codes_redemptions_and_refusals_are_audited_without_secrets(app_stack: Stack) -> None:
    person, app, browser = await signed_in_with_app(app_stack)
    assert app.client_secret is not None
    staff = str(person.staff_id)

    first = authorization(app)
    code = await code_for(browser, first)
    token = await redeem(app_stack, first, code)
    reused = await token_error(app_stack, token_form(first, code), auth=(app.client_id, app.client_secret))
    assert reused.status_code == 400

    second = authorization(app)
    code2 = await code_for(browser, second)
    wrong_pkce = await token_error(
        app_stack, token_form(second, code2, code_verifier="v" * 50), auth=(app.client_id, app.client_secret)
    )
    assert wrong_pkce.status_code == 400
    third = authorization(app)
    code3 = await code_for(browser, third)
    wrong_secret = await token_error(app_stack, token_form(third, code3), auth=(app.client_id, "ssocs_wrong"))
    assert wrong_secret.status_code == 401

    events = await oidc_events(app_stack)
    seen = [(e.action, e.outcome, e.details.get("reason")) for e in events]
    assert seen == [
        ("oidc.code_issued", "success", None),
        ("oidc.token_issued", "success", None),
        ("oidc.token_refused", "refused", "code_reused"),
        ("oidc.code_issued", "success", None),
        ("oidc.token_refused", "refused", "invalid_grant"),
        ("oidc.code_issued", "success", None),
        ("oidc.token_refused", "refused", "invalid_client"),
    ]
    assert all(e.target == staff and e.details["client_id"] == app.client_id for e in events)
    assert all(e.ip for e in events)
    assert events[0].actor == f"staff:{staff}" and events[0].details["scope"] == "openid email profile"
    assert events[1].actor == f"oidc-client:{app.client_id}"
    assert all(e.actor.startswith("ip:") for e in events if e.outcome == "refused")

    async with app_stack.sessions() as db:
        rows = (await db.execute(AuditEvent.__table__.select())).all()
    table = "\n".join(repr(tuple(row)) for row in rows)
    for secret in (
        code,
        code2,
        code3,
        token["access_token"],
        token["id_token"],
        app.client_secret,
        "ssocs_wrong",
    ):
        assert secret not in table
    for part in token["access_token"].split(".")[1:]:
        assert part not in table


async def test_a_refused_request_for_an_unknown_code_is_audited_by_its_address(app_stack: Stack) -> None:
    _person, app, _browser = await signed_in_with_app(app_stack)
    assert app.client_secret is not None
    answer = await token_error(
        app_stack,
        {"grant_type": "authorization_code", "code": "made-up-code", "redirect_uri": app.redirect_uri},
        auth=(app.client_id, app.client_secret),
    )
    assert answer.status_code == 400
    [event] = [e for e in await oidc_events(app_stack) if e.action == "oidc.token_refused"]
    assert event.target is None and event.details == {"client_id": app.client_id, "reason": "invalid_grant"}
    assert "made-up-code" not in repr(event.details)
