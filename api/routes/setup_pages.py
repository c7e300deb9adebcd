"""The pages a person reaches from the setup email."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from activities.sso_setup import LINK_PURPOSE
from api.deps import SessionDep, SettingsDep
from api.pages import render_page
from core.crypto import token_hash
from core.models import SetupLink, SetupState, SsoSetup, Staff, utcnow

router = APIRouter(prefix="/sso", tags=["pages"], include_in_schema=False)

MAX_TOKEN_LENGTH = 128


@router.get("/setup/{token}", response_class=HTMLResponse)
async def open_setup_link(
    token: str, request: Request, session: SessionDep, settings: SettingsDep
) -> HTMLResponse:
    """Show the setup screen. A GET never consumes the link: mail scanners open links too."""
    link = None
    if len(token) <= MAX_TOKEN_LENGTH:
        digest = token_hash(settings.secret_key.get_secret_value(), LINK_PURPOSE, token)
        link = await session.scalar(select(SetupLink).where(SetupLink.token_hash == digest))
    if link is None:
        return render_page(request, "link_invalid", status_code=404, reason="unknown")
    setup = await session.scalar(select(SsoSetup).where(SsoSetup.run_id == link.run_id))
    now = utcnow()
    if link.consumed_at is not None:
        reason = "used"
    elif link.revoked_at is not None or setup is None or not SetupState(setup.state).is_open:
        reason = "expired" if setup is not None and setup.state == "expired" else "replaced"
    elif link.expires_at <= now:
        reason = "expired"
    else:
        staff = await session.get(Staff, link.staff_id)
        assert staff is not None
        return render_page(request, "setup_start", staff=staff,
                           login_email=staff.external_email_1, expires_at=link.expires_at,
                           minutes_left=max(1, int((link.expires_at - now).total_seconds() // 60)))
    return render_page(request, "link_invalid", status_code=410, reason=reason)
