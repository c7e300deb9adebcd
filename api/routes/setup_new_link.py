"""'Send me a new link', offered on the page of an expired or used setup link."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from api.cookies import csrf_ok
from api.deps import CounterDep, OnboardingDep, client_ip
from api.forms import NewLinkFormDep
from api.pages import problem, unavailable
from api.routes.setup import FORM_PROBLEM, StepsDep
from api.services.new_link import NEUTRAL, NewLinks
from core.errors import ServiceUnavailable

router = APIRouter(prefix="/sso/setup", tags=["pages"], include_in_schema=False)


def get_new_links(steps: StepsDep, onboarding: OnboardingDep, counter: CounterDep) -> NewLinks:
    return NewLinks(steps, onboarding, counter)


NewLinksDep = Annotated[NewLinks, Depends(get_new_links)]


@router.post("/new-link", response_class=HTMLResponse)
async def send_new_link(request: Request, links: NewLinksDep, form: NewLinkFormDep) -> Response:
    # The old link's token comes in the form, not the address: it stays out of access logs.
    if not csrf_ok(request, links.links.settings, form.csrf):
        return problem(request, 400, "This form has expired", FORM_PROBLEM)
    try:
        wait = await links.ask(form.token, client_ip(request))
    except ServiceUnavailable:
        return unavailable(request)
    if wait is not None:
        minutes = math.ceil(wait / 60)
        refused = problem(
            request,
            429,
            "Too many requests",
            f"Too many new links were asked for from your network. Try again in {minutes} "
            f"minute{'s' if minutes != 1 else ''}.",
        )
        refused.headers["Retry-After"] = str(wait)
        return refused
    return problem(request, 200, "Check your email", NEUTRAL)
