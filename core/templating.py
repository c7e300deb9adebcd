"""One Jinja environment for emails and pages, loaded from the top-level templates/ folder."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, pass_context, select_autoescape
from jinja2.runtime import Context
from markupsafe import Markup

from core.times import time_element

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"

EMAIL_SUBJECTS = {
    "sso_welcome": "Welcome to {brand} Single Sign-On",
    "verification_code": "Your {brand} verification code",
    "password_reset_code": "Your {brand} password reset code",
    "password_reset_link": "Your {brand} password reset link",
    "password_changed": "Your {brand} password was changed",
    "entra_linked": "A Microsoft account was linked to your {brand} sign-in",
    "mfa_changed": "Your {brand} Multi-Factor Authentication was changed",
    "mfa_reminder": "Set up Multi-Factor Authentication for {brand} Single Sign-On",
    "email_change_code": "Confirm your new {brand} sign-in email",
    "email_changed": "Your {brand} sign-in email was changed",
}


@dataclass(frozen=True)
class Agency:
    """The organisation an email is sent for. `name` is said in the email only where it helps
    (the caller leaves it None on a one-organisation deployment without a sender name, which
    then reads as it always did); `sender_name` is the From display name; `slug` labels the
    email counters when SSO_METRICS_ORG_LABELS is on."""

    slug: str
    name: str | None = None
    sender_name: str | None = None


@dataclass(frozen=True)
class RenderedEmail:
    to: str
    subject: str
    html: str
    text: str
    # The From display name (the organisation's sender name), e.g. "Harbour Lettings via agentOS".
    sender_name: str | None = None
    # The organisation's slug, for the email metrics' `org` label.
    org: str | None = None


@pass_context
def _when(context: Context, moment: datetime, style: str = "day") -> Markup:
    """`{{ moment | when("clock") }}` on a page: a <time> in the page's `time_zone`."""
    return time_element(moment, context["time_zone"], style)


@lru_cache
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        enable_async=False,
    )
    env.filters["when"] = _when
    return env


def render_email(
    name: str, to: str, brand: str, agency: Agency | None = None, **context: Any
) -> RenderedEmail:
    env = environment()
    subject = EMAIL_SUBJECTS[name].format(brand=brand)
    # The layout titles the HTML part with the subject, so the two cannot drift apart.
    context = {"brand": brand, "agency_name": agency.name if agency else None, **context, "subject": subject}
    return RenderedEmail(
        to=to,
        subject=subject,
        html=env.get_template(f"email/{name}.html").render(**context),
        text=env.get_template(f"email/{name}.txt").render(**context),
        sender_name=agency.sender_name if agency else None,
        org=agency.slug if agency else None,
    )
