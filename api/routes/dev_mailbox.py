"""Development only: the outbox, so a new user sees the email without a mail server."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup
from sqlalchemy import select

from api.deps import SessionDep, SettingsDep
from api.pages import render_page
from core.codec import keyring_from_settings
from core.errors import NotFound
from core.models import OutboxEmail

router = APIRouter(prefix="/dev/mailbox", tags=["development"], include_in_schema=False)


@router.get("", response_class=HTMLResponse)
async def mailbox(request: Request, session: SessionDep) -> HTMLResponse:
    emails = (
        await session.scalars(select(OutboxEmail).order_by(OutboxEmail.created_at.desc()).limit(100))
    ).all()
    return render_page(request, "dev_mailbox", emails=emails)


@router.get("/{email_id}", response_class=HTMLResponse)
async def show_email(
    email_id: uuid.UUID, request: Request, session: SessionDep, settings: SettingsDep
) -> HTMLResponse:
    email = await session.get(OutboxEmail, email_id)
    if email is None:
        raise NotFound("No such email")
    body = keyring_from_settings(settings).unseal(email.body_encrypted, b"outbox").decode()
    text, _, html = body.partition("\0")
    shown = email_body(html)
    response = render_page(request, "dev_email", email=email, text=text, body=shown)
    # Emails keep their styles inline (mail clients drop <style>): this development-only page
    # allows style attributes, and nothing else inline. No frame: the links open the page
    # itself, as from a mail client, where a frame would hold pages that refuse framing.
    response.headers["Content-Security-Policy"] = EMAIL_PAGE_POLICY
    return response


EMAIL_PAGE_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; style-src-attr 'unsafe-inline'; "
    "script-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
_BODY = re.compile(r"<body(?P<attributes>[^>]*)>(?P<content>.*)</body>", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True)
class EmailBody:
    """An HTML email's body, to show inside the page: the body element's attributes (its
    inline style) and what it holds. The email is our own template's, its values escaped."""

    attributes: Markup
    content: Markup


def email_body(html: str) -> EmailBody:
    # Markup: the HTML is the email as sent, rendered by render_email with every value escaped.
    found = _BODY.search(html)
    if found is None:
        return EmailBody(Markup(""), Markup(html))  # noqa: S704
    return EmailBody(Markup(found["attributes"]), Markup(found["content"]))  # noqa: S704
