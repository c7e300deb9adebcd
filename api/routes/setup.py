"""The pages a person walks through from the setup email to an active account.

The link pages carry the token in the URL until the password is chosen; from then on a
server-side session bound to the flow carries the person, and no token is in any URL.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from starlette.background import BackgroundTask

from api.cookies import CSRF, SETUP_SESSION, csrf_ok, read_cookie, set_cookie
from api.deps import SessionDep, SettingsDep, TemporalDep, client_ip
from api.forms import CodeForm, CodeFormDep, SetupPasswordFormDep, StepForm, StepFormDep
from api.pages import problem, redirect, render_page, six_digits, unavailable
from api.services.code_standing import RESENT, CodeStanding
from api.services.flows import FlowEnded, StepInDoubt, StepRefused
from api.services.setup import BoundSetup, LinkView, SetupSteps
from core import flow_errors
from core.errors import ServiceUnavailable
from core.models import utcnow
from core.org_suspension import suspended_message
from core.steps import SetupState
from workflows.setup import CODE_STEPS, PASSWORD_STEPS, SetupProgress, StepResult

router = APIRouter(prefix="/sso/setup", tags=["pages"], include_in_schema=False)

STEP_PAGES: dict[str, str] = {
    SetupState.password_set: "/sso/setup/confirm",
    SetupState.code_sent: "/sso/setup/confirm",
    SetupState.mfa_pending: "/sso/setup/mfa",
    SetupState.active: "/sso/setup/done",
}
FORM_PROBLEM = "This form has expired. Reload the page and try again."
ResponseT = TypeVar("ResponseT", bound=Response)


def get_steps(db: SessionDep, settings: SettingsDep, temporal: TemporalDep) -> SetupSteps:
    return SetupSteps(settings=settings, db=db, temporal=temporal)


StepsDep = Annotated[SetupSteps, Depends(get_steps)]


def ended(request: Request) -> HTMLResponse:
    return render_page(request, "link_invalid", status_code=410, reason="ended")


def no_session(request: Request) -> HTMLResponse:
    return problem(
        request,
        401,
        "Open the link from your email",
        "This page continues a Single Sign-On setup started in this "
        "browser. Open the Set Up Single Sign-On link from your email again, or "
        "ask your administrator for a new email.",
    )


@dataclass
class Visit:
    """A request to a session page: this browser's setup, and the service that steps it."""

    request: Request
    steps: SetupSteps
    bound: BoundSetup

    async def progress(self) -> SetupProgress:
        """The flow's step now (each query is a round trip to the worker, and billed by
        Temporal Cloud: a page asks once and passes it on)."""
        return await self.steps.progress(self.bound)


Step = Callable[[Visit], Awaitable[Response]]
Show = Callable[[Visit, SetupProgress], Awaitable[Response]]


async def _run_step(request: Request, steps: SetupSteps, step: Step) -> Response:
    """Every session page: find this browser's flow, run the step, and turn what can go wrong
    into the page a person should see (never a 500)."""
    bound = await steps.bound(read_cookie(request, steps.settings, SETUP_SESSION))
    if bound is None:
        return no_session(request)
    visit = Visit(request, steps, bound)
    try:
        return await step(visit)
    except StepRefused as refused:
        if refused.kind == flow_errors.SETUP_ENDED:
            return ended(request)
        # Posted out of order or too soon: said on the page for where the flow is now. A code
        # typed before its email is out is answered as the flow itself once answered it.
        status = 400 if refused.kind == flow_errors.CODE_SENDING else 409
        return await _on_current_page(visit, refused.message, status)
    except FlowEnded:
        return ended(request)
    except ServiceUnavailable:
        return unavailable(request)


async def _posted(request: Request, steps: SetupSteps, form: StepForm, step: Step) -> Response:
    """A session page's form: a stale or forged one is answered on the page for where the
    flow is now, and steps nothing."""

    async def checked(visit: Visit) -> Response:
        if not csrf_ok(request, steps.settings, form.csrf):
            return await _on_current_page(visit, FORM_PROBLEM, 400)
        return await step(visit)

    return await _run_step(request, steps, checked)


# The pages of the steps after the password. Fixed paths first: /sso/setup/{token} would
# otherwise swallow them.


async def _confirm(
    visit: Visit,
    progress: SetupProgress,
    message: str | None = None,
    status: int = 200,
    notice: str | None = None,
) -> HTMLResponse:
    return render_page(
        visit.request,
        "setup_confirm",
        status_code=status,
        progress=progress,
        code=CodeStanding.of(progress, utcnow(), message),
        email=visit.bound.staff.external_email_1,
        notice=notice or (RESENT if visit.request.query_params.get("sent") == "new" else None),
    )


async def _mfa(
    visit: Visit, progress: SetupProgress, message: str | None = None, status: int = 200
) -> HTMLResponse:
    return render_page(
        visit.request,
        "setup_mfa",
        status_code=status,
        message=message,
        mfa_required=progress.mfa_required,
        **await visit.steps.authenticator(visit.bound),
    )


async def _done(visit: Visit, _progress: SetupProgress) -> HTMLResponse:
    return render_page(
        visit.request,
        "setup_done",
        email=await visit.steps.login_email(visit.bound),
        recovery_codes_due=await visit.steps.recovery_codes_due(visit.bound),
    )


def _step_page(show: Show) -> Callable[[Request, SetupSteps], Awaitable[Response]]:
    """A step's page: shown while the flow is at that step, else the page for where it is."""

    async def page(request: Request, steps: StepsDep) -> Response:
        async def step(visit: Visit) -> Response:
            progress = await visit.progress()
            if STEP_PAGES.get(progress.step) != request.url.path:
                return _elsewhere(request, progress)
            return await show(visit, progress)

        return await _run_step(request, steps, step)

    return page


STEP_SHOWS: dict[str, Show] = {"/confirm": _confirm, "/mfa": _mfa, "/done": _done}
for _path, _show in STEP_SHOWS.items():
    router.add_api_route(
        _path, _step_page(_show), methods=["GET"], response_class=HTMLResponse, name=f"{_path[1:]}_page"
    )


@router.post("/resend", response_class=HTMLResponse)
async def resend_submit(request: Request, steps: StepsDep, form: StepFormDep) -> Response:
    async def step(visit: Visit) -> Response:
        await steps.resend_code(visit.bound, form.submission, client_ip(request))
        # Back to the step's own address: a reload then shows the page, not a resubmit.
        return redirect("/sso/setup/confirm?sent=new")

    return await _posted(request, steps, form, step)


@router.post("/recovery-codes", response_class=HTMLResponse)
async def recovery_codes_submit(request: Request, steps: StepsDep, form: StepFormDep) -> Response:
    """The recovery codes of the MFA just set up, shown once: made here, never in the flow."""

    async def step(visit: Visit) -> Response:
        codes = await steps.recovery_codes(visit.bound, client_ip(request))
        if codes is None:
            return redirect("/sso/setup/done")
        return render_page(request, "recovery_codes", codes=codes, next_page="/sso/setup/done")

    return await _posted(request, steps, form, step)


@router.post("/mfa/skip", response_class=HTMLResponse)
async def mfa_skip(request: Request, steps: StepsDep, form: StepFormDep) -> Response:
    async def step(visit: Visit) -> Response:
        await steps.skip_mfa(visit.bound, form.submission, client_ip(request))
        return redirect("/sso/setup/done")

    return await _posted(request, steps, form, step)


@dataclass(frozen=True)
class CodeStep:
    """A step taken with a 6-digit code: the emailed one, then the authenticator's."""

    submit: Callable[[SetupSteps, BoundSetup, str, str, str | None], Awaitable[StepResult]]
    not_a_code: str  # said when what was typed is no 6-digit code (and no attempt is counted)
    then: str  # where the person goes once the code is taken
    again: Callable[[Visit, SetupProgress, str | None, int], Awaitable[Response]]  # when it is not


def _code_form(code_step: CodeStep) -> Callable[[Request, SetupSteps, CodeForm], Awaitable[Response]]:
    async def submit(request: Request, steps: StepsDep, form: CodeFormDep) -> Response:
        async def step(visit: Visit) -> Response:
            digits = six_digits(form.code)
            if digits is None:
                return await _on_current_page(visit, code_step.not_a_code, 400)
            result = await code_step.submit(steps, visit.bound, digits, form.submission, client_ip(request))
            if result.ok:
                return redirect(code_step.then)
            return await code_step.again(visit, await visit.progress(), result.message, 400)

        return await _posted(request, steps, form, step)

    return submit


CODE_STEP_FORMS = {
    "/confirm": CodeStep(
        SetupSteps.confirm_code, "Enter the 6-digit code from the email.", "/sso/setup/mfa", _confirm
    ),
    "/mfa": CodeStep(
        SetupSteps.complete_mfa,
        "Enter the 6-digit code from your authenticator app.",
        "/sso/setup/done",
        _mfa,
    ),
}
for _path, _code_step in CODE_STEP_FORMS.items():
    router.add_api_route(
        _path,
        _code_form(_code_step),
        methods=["POST"],
        response_class=HTMLResponse,
        name=f"{_path[1:]}_submit",
    )


def _elsewhere(request: Request, progress: SetupProgress) -> Response:
    if progress.step in PASSWORD_STEPS:
        # This browser's session exists, so its password was stored; the flow has not taken
        # that in yet (its worker died mid-step and the step is being retried): not ended.
        return unavailable(request)
    target = STEP_PAGES.get(progress.step)
    if target is None or target == request.url.path:
        return ended(request)
    return redirect(target)


async def _on_current_page(visit: Visit, message: str, status: int) -> Response:
    progress = await visit.progress()
    if progress.step in CODE_STEPS:
        return await _confirm(visit, progress, message, status)
    if progress.step == SetupState.mfa_pending:
        return await _mfa(visit, progress, message, status)
    if progress.step == SetupState.active:
        return ended(visit.request)
    return _elsewhere(visit.request, progress)


# -- link pages (token in the URL; a GET never consumes it) -----------------------------


def invalid_link(request: Request, view: LinkView, token: str) -> HTMLResponse:
    """Why this setup link no longer works, and what to do next (the Microsoft-Entra button's
    too): for a link of a setup not finished, Send me a new link (which posts the token)."""
    finished = view.setup_state == SetupState.active.value
    return render_page(
        request,
        "link_invalid",
        status_code=404 if view.link is None else 410,
        reason=view.reason,
        suspended=suspended_message(view.org_name, request.app.state.settings.brand_name)
        if view.org_name
        else None,
        finished=finished,
        token=token if view.link is not None and not finished else None,
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
        return await _carry_on(request, steps, view) or invalid_link(request, view, token)
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
        return await _carry_on(request, steps, view) or invalid_link(request, view, token)
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
        personal=SetupSteps.personal_words(view.staff, request.app.state.settings.brand_name),
    )


@router.post("/{token}/password", response_class=HTMLResponse)
async def password_submit(
    token: str, request: Request, steps: StepsDep, form: SetupPasswordFormDep
) -> Response:
    view = await steps.open_link(token)
    seed = read_cookie(request, steps.settings, CSRF)
    if view.reason == "used" and seed:
        # A form again after an earlier submit from this browser went through (its answer
        # was lost, or it came once the worker was back): the same session, so it carries on.
        if await steps.bound_here(view, token, seed):
            return _with_session(redirect("/sso/setup/confirm"), steps, steps.session_id_for(token, seed))
    if not view.usable:
        return await _carry_on(request, steps, view) or invalid_link(request, view, token)
    assert view.staff is not None
    min_length = steps.settings.password_min_length
    if not csrf_ok(request, steps.settings, form.csrf) or seed is None:
        return _password(request, min_length, view, token, [FORM_PROBLEM], 400)
    if form.password != form.confirm:
        return _password(request, min_length, view, token, ["The two passwords don't match."], 400)
    problems = await steps.password_problems(view.staff, form.password)
    if problems:
        return _password(request, min_length, view, token, problems, 400)
    try:
        result, session_id = await steps.set_password(
            view, token, form.password, form.submission, seed, client_ip(request)
        )
    except StepRefused as refused:
        return _password(request, min_length, view, token, [refused.message], 409)
    except FlowEnded:
        return ended(request)
    except StepInDoubt:
        # The step may still go through once the worker is back: this browser then holds
        # the session it binds, so opening the link again (or Back) carries on from there.
        return _with_session(unavailable(request), steps, steps.session_id_for(token, seed))
    except ServiceUnavailable:
        return unavailable(request)
    if not result.ok:
        return _password(
            request, min_length, view, token, result.problems or [result.message or "Please try again."], 400
        )
    return _with_session(redirect("/sso/setup/confirm"), steps, session_id)


def _with_session(response: ResponseT, steps: SetupSteps, session_id: str) -> ResponseT:
    set_cookie(response, steps.settings, SETUP_SESSION, session_id, max_age=steps.settings.setup_ttl)
    return response
