"""The admin pages' words (api/admin_words.py): every state, delivery and audit event the code
can record has words for a branch manager, and actors are named, not numbered."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from api import admin_words as words
from core.models import DeliveryState, SetupState

ROOT = Path(__file__).resolve().parents[2]
# An audit action as the code writes it: "area.event" (or sign_out), passed where an action goes.
ACTION = re.compile(
    r'"((?:staff|sso_email|sso_setup|code|mfa|sign_in|sessions|account|reset|entra|oidc_client|oidc)\.[a-z_]+|sign_out)"'
)

NOT_ACTIONS = {"staff.id"}  # a foreign key's column, not an event


def recorded_actions() -> set[str]:
    found: set[str] = set()
    for folder in ("activities", "api", "core", "workflows"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name != "admin_words.py":
                found |= set(ACTION.findall(path.read_text()))
    return found - NOT_ACTIONS


def test_every_audit_event_the_code_records_has_words() -> None:
    actions = recorded_actions() | {f"sso_setup.{state}" for state in SetupState}
    assert len(actions) > 25, actions  # the scan still finds the code's events
    missing = sorted(actions - set(words.AUDIT_EVENTS))
    assert not missing, f"add these to api/admin_words.py AUDIT_EVENTS: {missing}"


def test_every_state_and_delivery_has_words() -> None:
    assert set(words.SETUP_STATES) == set(SetupState)
    assert set(words.DELIVERY) == set(DeliveryState)
    assert words.setup_state("superseded") == "Replaced by a newer email"
    assert words.delivery("sent") == "Delivered"
    assert words.event("sso_setup.link_opened") == "Opened the link"
    assert words.event("sso_email.sent") == "Single Sign-On email delivered"


def test_a_name_no_table_has_yet_is_still_readable() -> None:
    assert words.event("widget.polished") == "Widget: polished"
    assert words.outcome("half_done") == "Half done"
    assert words.setup_state("") == "Unknown"


PERSON = "7a1c4e0e-9d55-4d3e-a0c2-6b1b8b2f3c11"
OTHER = "0b0e7a52-27f6-4a0b-9a4c-2a3f5d2c9e10"


@pytest.mark.parametrize(
    ("recorded", "shown"),
    [
        (f"staff:{OTHER} (Ada Admin)", "Ada Admin"),
        (f"staff:{OTHER} (Ada (the boss) Admin)", "Ada (the boss) Admin"),
        (f"staff:{PERSON}", "Pat Person"),
        (f"staff:{OTHER}", "Another staff member"),
        ("system", "Single Sign-On (automatic)"),
        ("admin-key:payroll-sync", "Admin API key “payroll-sync”"),
        ("cli:root", "Command line (root)"),
        ("ip:192.0.2.7", "Someone on the sign-in pages"),
    ],
)
def test_actors_are_named(recorded: str, shown: str) -> None:
    assert words.actor(recorded, PERSON, "Pat Person") == shown
