"""The pages a person walks through from the setup email to an active account.

The link pages carry the token in the URL until the password is chosen; from then on a
server-side session bound to the flow carries the person, and no token is in any URL.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response
from starlette.background import BackgroundTask

from api.cookies import CSRF, SETUP_SESSION, csrf_ok, read_cookie, set_cookie
from api.deps import SessionDep, SettingsDep, TemporalDep, client_ip
from api.pages import redirect, render_page, six_digits
from api.services.flows import FlowEnded, StepInDoubt, StepRefused
from api.services.setup import BoundSetup, LinkView, SetupSteps
from core import flow_errors
from core.errors import ServiceUnavailable
from core.steps import SetupState
from workflows.setup import CODE_STEPS, PASSWORD_STEPS, SetupProgress

router = APIRouter(prefix="/sso/setup", tags=["pages"], include_in_schema=False)

STEP_PAGES: dict[str, str] = {
    SetupState.password_set: "/sso/setup/confirm",
    SetupState.code_sent: "/sso/setup/confirm",
    SetupState.mfa_pending: "/sso/setup/mfa",
    SetupState.active: "/sso/setup/done",
}
FORM_PROBLEM = "This form has expired. Reload the page and try again."


def get_steps(db: SessionDep, settings: SettingsDep, temporal: TemporalDep) -> SetupSteps:
    return SetupSteps(settings=settings, db=db, temporal=temporal)


StepsDep = Annotated[SetupSteps, Depends(get_steps)]


def unavailable(request: Request) -> HTMLResponse:
    return render_page(
        request,
        "setup_problem",
        status_code=503,
        title="We can't complete this right now",
        message="We can't complete this right now, please try again in a minute.",
    )


def ended(request: Request) -> HTMLResponse:
    return render_page(request, "link_invalid", status_code=410, reason="ended")


def no_session(request: Request) -> HTMLResponse:
    return render_page(
        request,
        "setup_problem",
        status_code=401,
        title="Open the link from your email",
        message="This page continues a Single Sign-On setup started in this "
        "browser. Open the Set Up Single Sign-On link from your email again, or "
        "ask your administrator for a new email.",
    )


async def _bound(request: Request, steps: SetupSteps) -> BoundSetup | None:
    return await steps.bound(read_cookie(request, steps.settings, SETUP_SESSION))


async def _run_step(
    request: Request, steps: SetupSteps, step: Callable[[BoundSetup], Awaitable[Response]]
) -> Response:
    """Every session page: find this browser's flow, run the step, and turn what can go wrong
    into the page a person should see (never a 500)."""
    bound = await _bound(request, steps)
    if bound is None:
        return no_session(request)
    try:
        return await step(bound)
    except StepRefused as refused:
        return await _refused(request, steps, bound, refused)
    except FlowEnded:
        return ended(request)
    except ServiceUnavailable:
        return unavailable(request)


# Fixed paths first: /sso/setup/{token} would otherwise swallow them.


@router.get("/confirm", response_class=HTMLResponse)
async def confirm_page(request: Request, steps: StepsDep) -> Response:
    async def step(bound: BoundSetup) -> Response:
        progress = await steps.progress(bound)
        if progress.step not in CODE_STEPS:
            return _elsewhere(request, progress)
        return _confirm(request, bound, progress)

    return await _run_step(request, steps, step)


def _confirm(
    request: Request,
    bound: BoundSetup,
    progress: SetupProgress,
    message: str | None = None,
    notice: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    return render_page(
        request,
        "setup_confirm",
        status_code=status_code,
        progress=progress,
        email=bound.staff.external_email_1,
        message=message,
        notice=notice,
    )


@router.post("/confirm", response_class=HTMLResponse)
async def confirm_submit(
    request: Request,
    steps: StepsDep,
    code: Annotated[str, Form(max_length=20)] = "",
    csrf: Annotated[str, Form(max_length=200)] = "",
    submission: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    async def step(bound: BoundSetup) -> Response:
        if not csrf_ok(request, steps.settings, csrf):
            return await _form_problem(request, steps, bound, FORM_PROBLEM)
        digits = six_digits(code)
        if digits is None:
            return await _form_problem(request, steps, bound, "Enter the 6-digit code from the email.")
        result = await steps.confirm_code(bound, digits, submission, client_ip(request))
        if result.ok:
            return redirect("/sso/setup/mfa")
        return _confirm(request, bound, await steps.progress(bound), message=result.message, status_code=400)

    return await _run_step(request, steps, step)


@router.post("/resend", response_class=HTMLResponse)
async def resend_submit(
    request: Request,
    steps: StepsDep,
    csrf: Annotated[str, Form(max_length=200)] = "",
    submission: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    async def step(bound: BoundSetup) -> Response:
        if not csrf_ok(request, steps.settings, csrf):
            return await _form_problem(request, steps, bound, FORM_PROBLEM)
        result = await steps.resend_code(bound, submission, client_ip(request))
        return _confirm(request, bound, await steps.progress(bound), notice=result.message)

    return await _run_step(request, steps, step)


@router.get("/mfa", response_class=HTMLResponse)
async def mfa_page(request: Request, steps: StepsDep) -> Response:
    async def step(bound: BoundSetup) -> Response:
        progress = await steps.progress(bound)
        if progress.step != SetupState.mfa_pending:
            return _elsewhere(request, progress)
        return await _mfa(request, steps, bound, progress=progress)

    return await _run_step(request, steps, step)


async def _mfa(
    request: Request,
    steps: SetupSteps,
    bound: BoundSetup,
    message: str | None = None,
    status_code: int = 200,
    progress: SetupProgress | None = None,
) -> HTMLResponse:
    """The MFA page. `progress`: the flow's, when the caller has just asked for it (each
    query is a round trip to the worker, and billed by Temporal Cloud)."""
    secret, uri, qr = await steps.authenticator(bound)
    grouped = " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))
    progress = progress or await steps.progress(bound)
    return render_page(
        request,
        "setup_mfa",
        status_code=status_code,
        secret=grouped,
        qr=qr,
        otpauth_uri=uri,
        email=await steps.login_email(bound),
        message=message,
        mfa_required=progress.mfa_required,
    )


@router.post("/mfa", response_class=HTMLResponse)
async def mfa_submit(
    request: Request,
    steps: StepsDep,
    code: Annotated[str, Form(max_length=20)] = "",
    csrf: Annotated[str, Form(max_length=200)] = "",
    submission: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    async def step(bound: BoundSetup) -> Response:
        if not csrf_ok(request, steps.settings, csrf):
            return await _form_problem(request, steps, bound, FORM_PROBLEM)
        digits = six_digits(code)
        if digits is None:
            return await _form_problem(
                request, steps, bound, "Enter the 6-digit code from your authenticator app."
            )
        result = await steps.complete_mfa(bound, digits, submission, client_ip(request))
        if result.ok:
            return redirect("/sso/setup/done")
        return await _mfa(request, steps, bound, result.message, 400)

    return await _run_step(request, steps, step)


@router.post("/mfa/skip", response_class=HTMLResponse)
async def mfa_skip(
    request: Request,
    steps: StepsDep,
    csrf: Annotated[str, Form(max_length=200)] = "",
    submission: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    async def step(bound: BoundSetup) -> Response:
        if not csrf_ok(request, steps.settings, csrf):
            return await _form_problem(request, steps, bound, FORM_PROBLEM)
        await steps.skip_mfa(bound, submission, client_ip(request))
        return redirect("/sso/setup/done")

    return await _run_step(request, steps, step)


@router.get("/done", response_class=HTMLResponse)
async def done_page(request: Request, steps: StepsDep) -> Response:
    async def step(bound: BoundSetup) -> Response:
        progress = await steps.progress(bound)
        if progress.step != SetupState.active:
            return _elsewhere(request, progress)
        return render_page(request, "setup_done", email=await steps.login_email(bound))

    return await _run_step(request, steps, step)


def _elsewhere(request: Request, progress: SetupProgress) -> Response:
    if progress.step in PASSWORD_STEPS:
        # This browser's session exists, so its password was stored; the flow has not taken
        # that in yet (its worker died mid-step and the step is being retried): not ended.
        return unavailable(request)
    target = STEP_PAGES.get(progress.step)
    if target is None or target == request.url.path:
        return ended(request)
    return redirect(target)


async def _refused(request: Request, steps: SetupSteps, bound: BoundSetup, refused: StepRefused) -> Response:
    """A step posted out of order, too soon, or to an ending flow: say so on the right page."""
    if refused.kind == flow_errors.SETUP_ENDED:
        return ended(request)
    return await _on_current_page(request, steps, bound, refused.message, 409)


async def _form_problem(request: Request, steps: SetupSteps, bound: BoundSetup, message: str) -> Response:
    """A stale or malformed form: answer on the page for where the flow is now."""
    return await _on_current_page(request, steps, bound, message, 400)


async def _on_current_page(
    request: Request, steps: SetupSteps, bound: BoundSetup, message: str, status_code: int
) -> Response:
    progress = await steps.progress(bound)
    if progress.step in CODE_STEPS:
        return _confirm(request, bound, progress, message=message, status_code=status_code)
    if progress.step == SetupState.mfa_pending:
        return await _mfa(request, steps, bound, message, status_code, progress)
    if progress.step == SetupState.active:
        return ended(request)
    return _elsewhere(request, progress)


# -- link pages (token in the URL; a GET never consumes it) -----------------------------


def _invalid(request: Request, view: LinkView) -> HTMLResponse:
    return render_page(
        request, "link_invalid", status_code=404 if view.link is None else 410, reason=view.reason
    )


async def _carry_on(request: Request, steps: SetupSteps, view: LinkView) -> Response | None:
    """The link was spent by this very browser (the person opened their email's link again
    to finish, or pressed Back): take them to where their setup stands."""
    if await steps.continues_here(view, read_cookie(request, steps.settings, SETUP_SESSION)):
        return redirect("/sso/setup/confirm")
    return None


@router.get("/{token}", response_class=HTMLResponse)
async def open_setup_link(token: str, request: Request, steps: StepsDep) -> Response:
    """Show the setup screen. A GET never consumes the link: mail scanners open links too."""
    view = await steps.open_link(token)
    if not view.usable:
        return await _carry_on(request, steps, view) or _invalid(request, view)
    assert view.link is not None and view.staff is not None
    return render_page(
        request,
        "setup_start",
        staff=view.staff,
        token=token,
        login_email=view.staff.external_email_1,
        expires_at=view.link.expires_at,
    )


@router.get("/{token}/password", response_class=HTMLResponse)
async def password_page(token: str, request: Request, steps: StepsDep) -> Response:
    view = await steps.open_link(token)
    if not view.usable:
        return await _carry_on(request, steps, view) or _invalid(request, view)
    page = _password(request, steps.settings.password_min_length, view, token)
    # The person followed Forgot your password? / Set your password: the setup shows
    # link_opened. Told after the page is sent; the link stays unconsumed.
    page.background = BackgroundTask(steps.note_link_opened, view, client_ip(request))
    return page


def _password(
    request: Request,
    min_length: int,
    view: LinkView,
    token: str,
    problems: list[str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    assert view.staff is not None
    return render_page(
        request,
        "setup_password",
        status_code=status_code,
        token=token,
        login_email=view.staff.external_email_1,
        min_length=min_length,
        problems=problems or [],
    )


@router.post("/{token}/password", response_class=HTMLResponse)
async def password_submit(
    token: str,
    request: Request,
    steps: StepsDep,
    password: Annotated[str, Form(max_length=1024)] = "",
    confirm: Annotated[str, Form(max_length=1024)] = "",
    csrf: Annotated[str, Form(max_length=200)] = "",
    submission: Annotated[str, Form(min_length=8, max_length=100)] = "",
) -> Response:
    view = await steps.open_link(token)
    seed = read_cookie(request, steps.settings, CSRF)
    if view.reason == "used" and seed:
        # A form again after an earlier submit from this browser went through (its answer
        # was lost, or it came once the worker was back): the same session, so it carries on.
        if await steps.bound_here(view, token, seed):
            response = redirect("/sso/setup/confirm")
            set_cookie(
                response,
                steps.settings,
                SETUP_SESSION,
                steps.session_id_for(token, seed),
                max_age=steps.settings.setup_ttl,
            )
            return response
    if not view.usable:
        return await _carry_on(request, steps, view) or _invalid(request, view)
    assert view.staff is not None
    min_length = steps.settings.password_min_length
    if not csrf_ok(request, steps.settings, csrf) or seed is None:
        return _password(request, min_length, view, token, [FORM_PROBLEM], 400)
    if password != confirm:
        return _password(request, min_length, view, token, ["The two passwords don't match."], 400)
    problems = await steps.password_problems(view.staff, password)
    if problems:
        return _password(request, min_length, view, token, problems, 400)
    try:
        result, session_id = await steps.set_password(
            view, token, password, submission, seed, client_ip(request)
        )
    except StepRefused as refused:
        return _password(request, min_length, view, token, [refused.message], 409)
    except FlowEnded:
        return ended(request)
    except StepInDoubt:
        # The step may still go through once the worker is back: this browser then holds
        # the session it binds, so opening the link again (or Back) carries on from there.
        unanswered = unavailable(request)
        set_cookie(
            unanswered,
            steps.settings,
            SETUP_SESSION,
            steps.session_id_for(token, seed),
            max_age=steps.settings.setup_ttl,
        )
        return unanswered
    except ServiceUnavailable:
        return unavailable(request)
    if not result.ok:
        return _password(
            request, min_length, view, token, result.problems or [result.message or "Please try again."], 400
        )
    response = redirect("/sso/setup/confirm")
    set_cookie(response, steps.settings, SETUP_SESSION, session_id, max_age=steps.settings.setup_ttl)
    return response
