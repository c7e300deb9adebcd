"""Development only: a demo app that signs people in through the provider, so a newcomer sees
single sign-on end to end on `sso dev`. It is an ordinary relying party built on authlib's
client (code + PKCE, a public client), talking to the provider over HTTP like any other app;
it only happens to be served by the same process, under /demo."""

from __future__ import annotations

from typing import Any

from authlib.integrations.base_client import OAuthError
from authlib.integrations.starlette_client import OAuth
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.middleware.sessions import SessionMiddleware

from api.client_schemas import ClientCreate
from api.pages import render_page
from core.crypto import token_hash
from core.settings import Settings

PATH = "/demo"
CLIENT_ID = "sso-dev-demo-app"
SCOPE = "openid email profile"
SESSION_COOKIE = "sso_demo_app"
SHOWN_CLAIMS = ("name", "email", "amr", "acr")


def url(settings: Settings) -> str:
    return f"{settings.public_url}{PATH}"


def callback(settings: Settings) -> str:
    return f"{url(settings)}/callback"


def registration(settings: Settings) -> ClientCreate:
    return ClientCreate(
        client_name="Demo app",
        redirect_uris=[callback(settings)],
        token_endpoint_auth_method="none",  # noqa: S106 (a public client: no secret)
    )


def create_demo_app(settings: Settings) -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    # Its own signed cookie, as a separate app would have; the key is derived so that every
    # start of the same data directory keeps people signed in to it.
    app.add_middleware(
        SessionMiddleware,
        secret_key=token_hash(settings.secret_key.get_secret_value(), "dev-demo-app", "session"),
        session_cookie=SESSION_COOKIE,
        path=PATH,
        same_site="lax",
        https_only=settings.public_url.startswith("https://"),
    )
    oauth = OAuth()
    oauth.register(
        "agentos",
        server_metadata_url=f"{settings.public_url}/.well-known/openid-configuration",
        client_id=CLIENT_ID,
        client_kwargs={
            "scope": SCOPE,
            "code_challenge_method": "S256",
            "token_endpoint_auth_method": "none",
        },
    )
    client: Any = oauth.agentos

    def page(request: Request, status_code: int = 200, **context: Any) -> HTMLResponse:
        return render_page(request, "demo_app", status_code, **{"demo": PATH, "problem": None, **context})

    @app.get("/", response_class=HTMLResponse)
    async def home(request: Request) -> HTMLResponse:
        claims = request.session.get("claims")
        shown = {k: claims.get(k) for k in SHOWN_CLAIMS} if isinstance(claims, dict) else None
        return page(request, claims=shown)

    @app.get("/login")
    async def login(request: Request) -> Response:
        answer: Response = await client.authorize_redirect(request, callback(settings))
        return answer

    @app.get("/callback", response_class=HTMLResponse)
    async def signed_in(request: Request) -> Response:
        try:
            token = await client.authorize_access_token(request)  # checks the ID token
        except OAuthError as error:
            return page(request, 400, claims=None, problem=error.description or error.error)
        request.session["claims"] = dict(token["userinfo"])
        return RedirectResponse(f"{PATH}/", status_code=303)

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        request.session.clear()
        return RedirectResponse(f"{PATH}/", status_code=303)

    return app
