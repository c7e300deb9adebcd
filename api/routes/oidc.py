"""The OpenID Connect provider: discovery, JWKS, authorization, token and userinfo."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode

from authlib.oauth2.rfc6749.util import extract_basic_authorization
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from api.cookies import SIGNIN_SESSION, clear_cookie, csrf_ok, read_cookie, set_cookie
from api.deps import SessionDep, SettingsDep, bearer, client_ip, get_temporal
from api.forms import ConsentFormDep
from api.pages import problem, redirect, render_page
from api.services.backchannel import queue_session_logouts
from api.services.oidc import (
    ConsentNeeded,
    Oidc,
    OidcState,
    PageProblem,
    SignInNeeded,
    asks_offline,
    enabled_client,
)
from api.services.oidc_logout import Logout, check_logout
from api.services.oidc_server import Answer
from api.services.oidc_server import Request as OAuthRequest
from api.services.oidc_tokens import Tokens
from api.services.sessions import Sessions
from core.addresses import rate_key
from core.oidc.clients import AUTH_METHODS, GRANT_TYPES, SCOPES
from core.oidc.keys import ALGORITHMS, jwks
from core.settings import Settings

router = APIRouter(tags=["openid-connect"])
# The authorization request waiting for the person to sign in, by browser.
PENDING = "sso_authorize"
RESUME = "/sso/authorize/resume"
CONSENT = "/sso/authorize/consent"
PROBLEM_TITLE = "We can't sign you in to this app"
MAX_FORM_FIELDS = 1000  # Starlette's own limit for a form
LOGOUT_TITLE = "We can't sign you out for this app"
CLAIMS = [
    "sub", "email", "email_verified", "name", "given_name", "family_name",
    "auth_time", "sid", "amr", "acr", "roles", "org_id", "org_name",
]  # fmt: skip


def get_oidc(request: Request, db: SessionDep, settings: SettingsDep) -> Oidc:
    state = getattr(request.app.state, "oidc", None)
    if state is None:
        state = request.app.state.oidc = OidcState(settings)
    return Oidc(settings, db, state, ip=client_ip(request))


OidcDep = Annotated[Oidc, Depends(get_oidc)]


def _oauth_request(request: Request, settings: Settings, items: list[tuple[str, str]]) -> OAuthRequest:
    return OAuthRequest(request.method, f"{settings.public_url}{request.url.path}", request.headers, items)


@router.get("/.well-known/openid-configuration")
async def discovery(settings: SettingsDep) -> dict[str, Any]:
    issuer = settings.public_url
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/oidc/authorize",
        "token_endpoint": f"{issuer}/oidc/token",
        "revocation_endpoint": f"{issuer}/oidc/revoke",
        "revocation_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "introspection_endpoint": f"{issuer}/oidc/introspect",
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "userinfo_endpoint": f"{issuer}/oidc/userinfo",
        "jwks_uri": f"{issuer}/oidc/jwks",
        "end_session_endpoint": f"{issuer}/oidc/logout",
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": list(GRANT_TYPES),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": list(ALGORITHMS),
        "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": list(SCOPES),
        "claims_supported": CLAIMS,
        "prompt_values_supported": ["none", "login", "consent"],
        "acr_values_supported": ["pwd", "mfa"],
        "authorization_response_iss_parameter_supported": True,
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
    }


@router.get("/oidc/jwks")
async def jwks_document(oidc: OidcDep) -> dict[str, Any]:
    return jwks(await oidc.state.keys.ensure(oidc.db, oidc.now))


@router.get("/oidc/authorize", response_class=HTMLResponse)
async def authorize(request: Request, oidc: OidcDep) -> Response:
    return await _authorize(request, oidc, list(request.query_params.multi_items()), fresh_since=None)


@router.get(RESUME, response_class=HTMLResponse, include_in_schema=False)
async def resume(request: Request, oidc: OidcDep) -> Response:
    """Back from the sign-in screen: the request it interrupted, answered now."""
    sessions = Sessions(oidc.settings, oidc.db)
    pending_id = read_cookie(request, oidc.settings, PENDING)
    pending = await sessions.get(pending_id, "authorize")
    if pending is None or pending.row.data.get("consent"):
        return _took_too_long(request)
    await sessions.revoke(pending_id)
    return await _finish(request, oidc, _items(pending.row.data), pending.row.created_at, None)


@router.get(CONSENT, response_class=HTMLResponse, include_in_schema=False)
async def consent_page(request: Request, oidc: OidcDep) -> Response:
    """ "<App> wants to sign you in": for an app that asks for consent, before its first code."""
    pending = await Sessions(oidc.settings, oidc.db).get(
        read_cookie(request, oidc.settings, PENDING), "authorize"
    )
    if pending is None or not pending.row.data.get("consent"):
        return _took_too_long(request)
    return await _consent_page(request, oidc, _items(pending.row.data))


async def _consent_page(
    request: Request,
    oidc: Oidc,
    items: list[tuple[str, str]],
    status_code: int = 200,
    error: str | None = None,
) -> Response:
    client = await enabled_client(oidc.db, oidc.settings, dict(items).get("client_id"))
    if client is None:
        return problem(request, 400, PROBLEM_TITLE, "The app that sent you here is no longer registered.")
    return render_page(
        request,
        "oidc_consent",
        status_code,
        app_name=client.row.client_name,
        offline=asks_offline(client, dict(items).get("scope")),
        action=CONSENT,
        error=error,
    )


@router.post(CONSENT, response_class=HTMLResponse, include_in_schema=False)
async def consent_answer(request: Request, oidc: OidcDep, form: ConsentFormDep) -> Response:
    """Allow: remembered for this person and app, and the app gets its code. Cancel: the app
    hears access_denied."""
    sessions = Sessions(oidc.settings, oidc.db)
    pending_id = read_cookie(request, oidc.settings, PENDING)
    pending = await sessions.get(pending_id, "authorize")
    if pending is None or not pending.row.data.get("consent"):
        return _took_too_long(request)
    items = _items(pending.row.data)
    if not csrf_ok(request, oidc.settings, form.csrf) or form.decision not in ("allow", "cancel"):
        return await _consent_page(
            request, oidc, items, 400, "That form had expired, so nothing was done. Please try again."
        )
    await sessions.revoke(pending_id)
    fresh_since = pending.row.data.get("fresh_since")
    since = datetime.fromisoformat(fresh_since) if isinstance(fresh_since, str) else None
    return await _finish(request, oidc, items, since, "allow" if form.decision == "allow" else "deny")


def _items(data: dict[str, Any]) -> list[tuple[str, str]]:
    return [(str(k), str(v)) for k, v in data.get("items", [])]


def _took_too_long(request: Request) -> Response:
    return problem(
        request,
        400,
        PROBLEM_TITLE,
        "This sign-in took too long or was already finished. Go back to the app and sign in again.",
    )


async def _finish(
    request: Request, oidc: Oidc, items: list[tuple[str, str]], fresh_since: Any, consent: str | None
) -> Response:
    """The pending request answered, after a form of ours (sign-in or consent)."""
    response = await _authorize(request, oidc, items, fresh_since, consent)
    location = response.headers.get("location")
    if response.status_code == 302 and location:
        # Reached from a form: see templates/pages/oidc_continue.html.
        response = render_page(request, "oidc_continue", location=location)
    if location != CONSENT:  # else a new pending request is in the cookie
        clear_cookie(response, oidc.settings, PENDING)
    return response


async def _authorize(
    request: Request,
    oidc: Oidc,
    items: list[tuple[str, str]],
    fresh_since: Any,
    consent: str | None = None,
) -> Response:
    settings = oidc.settings
    sessions = Sessions(settings, oidc.db)
    current = await sessions.signed_in(read_cookie(request, settings, SIGNIN_SESSION))
    try:
        answer = await oidc.authorize(_oauth_request(request, settings, items), current, fresh_since, consent)
    except PageProblem as exc:
        return problem(request, exc.status_code, PROBLEM_TITLE, str(exc))
    if isinstance(answer, ConsentNeeded):
        since = fresh_since.isoformat() if isinstance(fresh_since, datetime) else None
        pending_id = await sessions.create(
            "authorize",
            None,
            settings.session_idle_ttl,
            data={"items": items, "consent": True, "fresh_since": since},
        )
        response = redirect(CONSENT)
        set_cookie(response, settings, PENDING, pending_id, max_age=settings.session_idle_ttl)
        return response
    if isinstance(answer, SignInNeeded):
        if fresh_since is not None:  # signed in for this request, and still not enough
            return problem(
                request,
                400,
                PROBLEM_TITLE,
                "Your sign-in didn't meet what this app asks for. Go back to the app and try again.",
            )
        pending_id = await sessions.create(
            "authorize", None, settings.session_idle_ttl, data={"items": items}
        )
        params = {"return_to": RESUME, **({"login_hint": answer.login_hint} if answer.login_hint else {})}
        response = redirect(f"/sso/login?{urlencode(params)}")
        set_cookie(response, settings, PENDING, pending_id, max_age=settings.session_idle_ttl)
        return response
    return answer.response()


TokenCall = Callable[[OAuthRequest, str | None], Awaitable[Answer]]


async def _client_call(request: Request, oidc: Oidc, call: TokenCall) -> Response:
    """A client's POST to the token, revocation or introspection endpoint: rate limited per
    address here and per client once `call` has authenticated it, then answered by `call`."""
    items = await _form_items(request)
    basic_id, _ = extract_basic_authorization(request.headers)
    client_id = (basic_id or dict(items).get("client_id") or "")[:64]
    # Per address first; per app only once the app has authenticated (api/services/oidc_server.py).
    wait = oidc.state.per_ip.hit(rate_key(client_ip(request)))
    if wait is not None:
        return JSONResponse(
            {"error": "temporarily_unavailable", "error_description": "Too many token requests; slow down"},
            status_code=429,
            headers={"Retry-After": str(wait)},
        )
    answer = await call(_oauth_request(request, oidc.settings, items), client_id or None)
    return answer.response()


async def _form_items(request: Request) -> list[tuple[str, str]]:
    """The fields of a client's POST. RFC 6749 has clients send them form-urlencoded: read
    straight off the body, as Starlette's parser would (a few times faster for these few
    fields); anything else through Starlette's parser."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type == "application/x-www-form-urlencoded":
        body = (await request.body()).decode("latin-1")
        try:
            return parse_qsl(body, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
        except ValueError:  # as Starlette answers a form with too many fields
            too_many = f"Too many fields. Maximum number of fields is {MAX_FORM_FIELDS}."
            raise HTTPException(400, too_many) from None
    form = await request.form(max_fields=MAX_FORM_FIELDS)
    return [(k, v) for k, v in form.multi_items() if isinstance(v, str)]


@router.post("/oidc/token")
async def token(request: Request, oidc: OidcDep) -> Response:
    async def answer(oauth: OAuthRequest, client_id: str | None) -> Answer:
        if oauth.payload.data.get("grant_type") == "refresh_token":
            return await Tokens(oidc).refresh(oauth, client_id)
        return await oidc.token(oauth, client_id)

    return await _client_call(request, oidc, answer)


@router.post("/oidc/revoke")
async def revoke(request: Request, oidc: OidcDep) -> Response:
    """RFC 7009: an app gives up a token; a refresh token or access token ends its grant."""
    return await _client_call(request, oidc, Tokens(oidc).revocation)


@router.post("/oidc/introspect")
async def introspect(request: Request, oidc: OidcDep) -> Response:
    """RFC 7662, for confidential clients, about their own tokens."""
    return await _client_call(request, oidc, Tokens(oidc).introspection)


@router.api_route("/oidc/userinfo", methods=["GET", "POST"])
async def userinfo(request: Request, oidc: OidcDep) -> Response:
    claims = await oidc.userinfo(bearer(request))
    if claims is None:
        return JSONResponse(
            {
                "error": "invalid_token",
                "error_description": "The access token is invalid, expired or revoked",
            },
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return JSONResponse(claims)


@router.api_route("/oidc/logout", methods=["GET", "POST"], response_class=HTMLResponse)
async def end_session(request: Request, oidc: OidcDep) -> Response:
    """RP-initiated logout: at once when the ID token hint names this browser's session,
    else after the person confirms."""
    if request.method == "POST":
        data = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    else:
        data = dict(request.query_params)
    sessions = Sessions(oidc.settings, oidc.db)
    current = await sessions.signed_in(read_cookie(request, oidc.settings, SIGNIN_SESSION))
    try:
        logout = await check_logout(oidc, data, current)
    except PageProblem as exc:
        return problem(request, 400, LOGOUT_TITLE, str(exc))
    if not logout.confirmed:
        passed_on = {k: data[k] for k in ("post_logout_redirect_uri", "state") if data.get(k)}
        return render_page(request, "oidc_logout", fields={**logout.fields, **passed_on})
    return await _signed_out(request, oidc, logout, from_form=False)


@router.post("/oidc/logout/confirm", response_class=HTMLResponse, include_in_schema=False)
async def confirm_logout(request: Request, oidc: OidcDep) -> Response:
    data = {k: v for k, v in (await request.form()).items() if isinstance(v, str) and k != "id_token_hint"}
    if not csrf_ok(request, oidc.settings, data.get("csrf")):
        expired = "This form has expired. Go back to the app and sign out again."
        return problem(request, 400, LOGOUT_TITLE, expired)
    try:
        logout = await check_logout(oidc, data, None)
    except PageProblem as exc:
        return problem(request, 400, LOGOUT_TITLE, str(exc))
    return await _signed_out(request, oidc, logout, from_form=True)


async def _signed_out(request: Request, oidc: Oidc, logout: Logout, from_form: bool) -> Response:
    settings = oidc.settings
    details = {"client_id": logout.client.get_client_id()} if logout.client is not None else {}
    ended = await Sessions(settings, oidc.db).sign_out(
        read_cookie(request, settings, SIGNIN_SESSION), client_ip(request), **details
    )
    if ended is not None:
        await queue_session_logouts(get_temporal(request), settings, oidc.db, [ended])
    if logout.return_to is not None and not from_form:
        response: Response = redirect(logout.return_to)
    else:
        response = render_page(request, "oidc_signed_out", location=logout.return_to)
    clear_cookie(response, settings, SIGNIN_SESSION)
    return response
