"""'Forgot your password?' → Reset my password → code and new password → Change Password."""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from api.cookies import (
    PASSKEY_CHALLENGE,
    RESET_BROWSER,
    RESET_SESSION,
    clear_cookie,
    csrf_ok,
    read_cookie,
    set_cookie,
)
from api.deps import (
    CounterDep,
    MfaNoticesDep,
    SessionDep,
    SettingsDep,
    TemporalDep,
    UnitOfWorkDep,
    client_ip,
)
from api.forms import (
    CsrfFormDep,
    ForgotFormDep,
    ResetCodeForm,
    ResetCodeFormDep,
    ResetLinkForm,
    ResetLinkFormDep,
)
from api.pages import redirect, render_page, second_factor, six_digits, unavailable
from api.services.passkeys import PasskeyRefused, PasskeySteps
from api.services.reset import NEW_CODE_SENT, ResetSteps, reset_workflow_id
from api.services.sessions import Current, Sessions
from core.addresses import rate_key
from core.errors import ServiceUnavailable
from core.models import SsoAccount
from core.passwords import PasswordPolicy, brand_words, check_password
from core.reset_caps import LINK_SENT, reset_link_hash
from core.throttle import Counter

router = APIRouter(prefix="/sso", tags=["pages"], include_in_schema=False)

SENT = (
    "If an account exists for that address, we've sent a code. It can take a minute to "
    "arrive; check your spam folder too."
)
# The notices a redirect back to the reset page names by `?sent=`: "Reset my password" (1)
# and "Send a new code" when it sent a code (new) or the reset link instead (link).
RESENT = {NEW_CODE_SENT: "new", LINK_SENT: "link"}
SENT_NOTICES = {"1": SENT} | {key: notice for notice, key in RESENT.items()}
FORM_PROBLEM = "This form has expired. Reload the page and try again."
ANSWER_FLOOR_SECONDS = 0.25


async def answer_no_sooner(started: float) -> None:
    """A real flow's answer takes longer than the stand-in's: both answer no sooner than the
    floor, so the timing does not tell which addresses have accounts."""
    await asyncio.sleep(max(0.0, ANSWER_FLOOR_SECONDS - (time.monotonic() - started)))


def browser_id(request: Request, settings: SettingsDep) -> str:
    """This browser's reset id (kept across requests, so asking again from it is throttled
    like Send a new code), or a new one."""
    existing = read_cookie(request, settings, RESET_BROWSER)
    if existing and 20 <= len(existing) <= 100:
        return existing
    return secrets.token_urlsafe(32)


async def too_many_posts(counter: Counter, settings: SettingsDep, keys: list[str]) -> str | None:
    """The message when this IP or session has sent the reset form too often."""
    limits = (settings.reset_submit_ip_limit, settings.reset_submit_session_limit)
    for key, limit in zip(keys, limits, strict=True):
        wait = await counter.hit(key, limit, settings.reset_ttl)
        if wait is not None:
            minutes = math.ceil(wait / 60)
            return f"Too many attempts. Try again in {minutes} minute{'s' if minutes != 1 else ''}."
    return None


def get_reset(db: SessionDep, settings: SettingsDep, temporal: TemporalDep) -> ResetSteps:
    return ResetSteps(settings=settings, db=db, temporal=temporal)


ResetDep = Annotated[ResetSteps, Depends(get_reset)]


@router.get("/forgot", response_class=HTMLResponse)
async def forgot_page(request: Request) -> HTMLResponse:
    return render_page(request, "forgot", email="", message=None)


@router.post("/forgot", response_class=HTMLResponse)
async def forgot_submit(
    request: Request, reset: ResetDep, counter: CounterDep, form: ForgotFormDep
) -> Response:
    settings, email = reset.settings, form.email
    if not csrf_ok(request, settings, form.csrf):
        return render_page(request, "forgot", status_code=400, email=email, message=FORM_PROBLEM)
    if "@" not in email or len(email.strip()) < 3:
        return render_page(
            request,
            "forgot",
            status_code=400,
            email=email,
            message="Enter the email address you sign in with.",
        )
    ip = client_ip(request)
    wait = await counter.hit(f"reset-ip:{rate_key(ip)}", settings.reset_request_ip_limit, settings.reset_ttl)
    if wait is not None:
        reset.audit_refused_request(ip)
        minutes = math.ceil(wait / 60)
        return render_page(
            request,
            "forgot",
            status_code=429,
            email=email,
            message=(
                f"Too many reset requests from your network. Try again in {minutes} minute"
                f"{'s' if minutes != 1 else ''}."
            ),
        )
    started = time.monotonic()
    browser = browser_id(request, settings)
    key = reset.browser_key(browser)
    account = await reset.account(email)
    links_only = await reset.links_only(reset.subject(account, email))
    try:
        await reset.request_code(account, email, ip, key, links_only)
    except ServiceUnavailable:
        return unavailable(request)
    await answer_no_sooner(started)
    sessions = Sessions(settings, reset.db)
    await sessions.revoke(read_cookie(request, settings, RESET_SESSION))
    if account is not None:
        session_id = await sessions.create(
            "reset",
            account.staff_id,
            settings.reset_ttl,
            workflow_id=reset_workflow_id(account.id),
            data={"browser": key},
        )
    else:
        stand_in = reset.stand_in_id(email)
        session_id = await sessions.create(
            "reset",
            None,
            settings.reset_ttl,
            workflow_id=stand_in,
            data=await reset.stand_in_state(stand_in, key, links_only),
        )
    response = redirect("/sso/reset?sent=1")
    set_cookie(response, settings, RESET_SESSION, session_id, max_age=settings.reset_ttl)
    set_cookie(response, settings, RESET_BROWSER, browser, max_age=timedelta(days=1))
    return response


@dataclass
class Said:
    """What a reset page says above its form, and with which status."""

    message: str | None = None
    problems: list[str] = field(default_factory=list)
    status: int = 400


async def new_password_refusal(password: str, confirm: str, totp: str, min_length: int) -> Said | None:
    """Why the form's new password or authenticator code is refused before any flow sees it:
    the same general rules for every address; the flow adds the personal ones."""
    if totp.strip() and second_factor(totp) is None:
        return Said(
            "Enter the 6-digit code from your authenticator app (or a recovery code), or leave it empty "
            "if you haven't set up MFA."
        )
    if password != confirm:
        return Said(problems=["The two passwords don't match."])
    problems = await check_password(password, PasswordPolicy(min_length=min_length), [])
    return Said(problems=problems) if problems else None


async def _form_refusal(
    request: Request, reset: ResetSteps, counter: Counter, form: ResetLinkForm, reset_key: str
) -> Said | None:
    """Both reset forms, before any flow sees them: a stale form; too many posts from this IP,
    or for this reset (`reset_key`); a code that is no code; a password the rules refuse."""
    settings = reset.settings
    if not csrf_ok(request, settings, form.csrf):
        return Said(FORM_PROBLEM)
    limited = await too_many_posts(
        counter, settings, [f"reset-submit-ip:{rate_key(client_ip(request))}", reset_key]
    )
    if limited is not None:
        return Said(limited, status=429)
    if isinstance(form, ResetCodeForm) and six_digits(form.code) is None:
        return Said("Enter the 6-digit code from the email.")
    return await new_password_refusal(form.password, form.confirm, form.totp, settings.password_min_length)


async def _changed(request: Request, reset: ResetSteps) -> Response:
    """The password was changed: this browser's reset session ends, and the person signs in."""
    await Sessions(reset.settings, reset.db).revoke(read_cookie(request, reset.settings, RESET_SESSION))
    response = redirect("/sso/login?notice=reset")
    clear_cookie(response, reset.settings, RESET_SESSION)
    return response


async def _current(request: Request, reset: ResetSteps) -> Current | None:
    """This browser's reset session. A step commits right after (its last-seen time): no
    write stays open while the counters (transactions of their own) and Temporal, whose
    worker writes to the same database, are asked."""
    return await Sessions(reset.settings, reset.db).get(
        read_cookie(request, reset.settings, RESET_SESSION), "reset"
    )


def _kept(reset: ResetSteps, form: ResetLinkForm | None, said: Said) -> dict[str, object]:
    """What a refused form shows again: the codes the person typed (never the passwords), and
    the authenticator field once it is asked for. That field is not on the first form: only
    a flow that took the emailed code (or link) asks for it, so a page shown to anyone who
    typed an address never tells whether that address has MFA."""
    asked = bool(said.message and "authenticator" in said.message)
    # Only the code form has the reset session a passkey ceremony is bound to; the link form
    # takes a recovery code in its place.
    passkey = bool(said.message and "passkey" in said.message) or (
        isinstance(form, ResetCodeForm) and form.passkey == "1"
    )
    return {
        "typed_code": form.code if isinstance(form, ResetCodeForm) else "",
        "typed_totp": form.totp if form is not None else "",
        "ask_totp": asked or passkey or (form is not None and (form.mfa == "1" or bool(form.totp.strip()))),
        "ask_passkey": passkey and (form is None or isinstance(form, ResetCodeForm)),
        # The live guidance takes out what the server will: here only the brand, as the page
        # does not know (and must not show) whose address it is.
        "personal": sorted(brand_words(reset.settings.brand_name)),
    }


def _page(
    request: Request,
    reset: ResetSteps,
    said: Said | None = None,
    notice: str | None = None,
    form: ResetCodeForm | None = None,
) -> HTMLResponse:
    said = said or Said(status=200)
    return render_page(
        request,
        "reset",
        status_code=said.status,
        message=said.message,
        notice=notice,
        problems=said.problems,
        min_length=reset.settings.password_min_length,
        **_kept(reset, form, said),
    )


@router.get("/reset", response_class=HTMLResponse)
async def reset_page(request: Request, reset: ResetDep, sent: str = "") -> Response:
    if await _current(request, reset) is None:
        return redirect("/sso/forgot")
    return _page(request, reset, notice=SENT_NOTICES.get(sent[:10]))


@router.post("/reset", response_class=HTMLResponse)
async def reset_submit(
    request: Request,
    uow: UnitOfWorkDep,
    reset: ResetDep,
    counter: CounterDep,
    notices: MfaNoticesDep,
    form: ResetCodeFormDep,
) -> Response:
    current = await _current(request, reset)
    if current is None:
        return redirect("/sso/forgot")
    await uow.commit_now()  # see _current
    refused = await _form_refusal(request, reset, counter, form, f"reset-submit:{current.row.id_hash[:64]}")
    if refused is not None:
        return _page(request, reset, refused, form=form)
    code = six_digits(form.code)
    assert code is not None  # see _form_refusal
    proof = None
    if form.credential and not form.totp.strip():
        try:
            proof = await passkey_proof(request, reset, current, form.credential)
        except PasskeyRefused as not_verified:
            return _page(request, reset, Said(not_verified.message), form=form)
        await uow.commit_now()  # the flow's activity reads the proof
    started = time.monotonic()
    try:
        result = await reset.reset(
            current,
            code,
            form.password,
            second_factor(form.totp) or "",
            client_ip(request),
            form.submission or "none",
            passkey_proof=proof,
        )
    except ServiceUnavailable:
        return unavailable(request)
    await answer_no_sooner(started)
    if not result.ok:  # committed all the same: a stand-in session keeps its attempt count
        return _page(request, reset, Said(result.message, result.problems), form=form)
    await notices.codes_low(reset.db, current.row.staff_id, form.totp)
    return await _changed(request, reset)


async def passkey_proof(request: Request, reset: ResetSteps, current: Current, credential: str) -> str:
    """The person's passkey, checked here in the web app; the flow is told only that it was,
    through a one-time proof its activity spends."""
    steps = PasskeySteps(settings=reset.settings, db=reset.db, temporal=reset.temporal)
    checked = await steps.check(
        read_cookie(request, reset.settings, PASSKEY_CHALLENGE),
        "reset",
        credential,
        client_ip(request),
        current.row.staff_id,
    )
    return await steps.reset_proof(checked, current.row.workflow_id or "")


@router.post("/reset/resend", response_class=HTMLResponse)
async def reset_resend(request: Request, uow: UnitOfWorkDep, reset: ResetDep, form: CsrfFormDep) -> Response:
    current = await _current(request, reset)
    if current is None:
        return redirect("/sso/forgot")
    await uow.commit_now()  # see _current
    if not csrf_ok(request, reset.settings, form.csrf):
        return _page(request, reset, Said(FORM_PROBLEM))
    try:
        notice = await reset.resend(current, client_ip(request))
    except ServiceUnavailable:
        return unavailable(request)
    # Sent: back to the page's own address, so a reload shows the page and asks for no
    # further code. A refusal (too soon, no more codes) is shown in place: nothing was sent.
    if notice in RESENT:
        return redirect(f"/sso/reset?sent={RESENT[notice]}")
    return _page(request, reset, notice=notice)


# -- the reset link (emailed once codes stop; a GET never consumes it) ----------------------


def _link_page(
    request: Request,
    reset: ResetSteps,
    token: str,
    said: Said | None = None,
    usable: bool = True,
    form: ResetLinkForm | None = None,
) -> HTMLResponse:
    said = said or Said(status=200 if usable else 410)
    return render_page(
        request,
        "reset_link",
        status_code=said.status,
        token=token,
        usable=usable,
        message=said.message,
        problems=said.problems,
        min_length=reset.settings.password_min_length,
        **_kept(reset, form, said),
    )


@router.get("/reset/link/{token}", response_class=HTMLResponse)
async def reset_link_page(token: str, request: Request, reset: ResetDep) -> HTMLResponse:
    return _link_page(request, reset, token, usable=await reset.link_usable(token) is not None)


@router.post("/reset/link/{token}", response_class=HTMLResponse)
async def reset_link_submit(
    token: str,
    request: Request,
    reset: ResetDep,
    counter: CounterDep,
    notices: MfaNoticesDep,
    form: ResetLinkFormDep,
) -> Response:
    # The key is stored (database or Redis): the link's hash, never the token itself.
    link_key = f"reset-link:{reset_link_hash(reset.settings.secret_key.get_secret_value(), token)[:64]}"
    refused = await _form_refusal(request, reset, counter, form, link_key)
    if refused is not None:
        return _link_page(request, reset, token, refused, form=form)
    link = await reset.link_usable(token)  # whose it is: the reset uses it up
    try:
        result = await reset.reset_with_link(
            token,
            form.password,
            second_factor(form.totp) or "",
            client_ip(request),
            form.submission or "none",
        )
    except ServiceUnavailable:
        return unavailable(request)
    if not result.ok:
        return _link_page(request, reset, token, Said(result.message, result.problems), form=form)
    account = await reset.db.get(SsoAccount, link.account_id) if link is not None else None
    await notices.codes_low(reset.db, account.staff_id if account else None, form.totp)
    return await _changed(request, reset)
