"""Development only: the outbox, so a new user sees the email without a mail server."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
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
    response = render_page(request, "dev_email", email=email, text=text, html=html)
    # Emails carry inline styles; this development-only page shows them in a sandboxed frame.
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "frame-src 'self'; frame-ancestors 'none'"
    )
    return response
