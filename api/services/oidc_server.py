"""authlib's authorization server adapted to FastAPI: its grants (authorization code, OpenID
Connect, PKCE) and RFC 9207's `iss` parameter do the protocol; this module gives them the
request, the client, the code and the keys, all loaded before (authlib's hooks are
synchronous, the database is not), and turns their answers into responses."""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from authlib.oauth2 import AuthorizationServer, OAuth2Error, OAuth2Request
from authlib.oauth2.rfc6749 import InvalidRequestError, OAuth2Payload, grants
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc9207 import IssuerParameter
from authlib.oidc.core import OpenIDCode
from fastapi.responses import JSONResponse, RedirectResponse, Response
from joserfc import jwt
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.crypto import token_hash
from core.models import OidcGrant, OidcRefreshToken
from core.oidc.claims import Subject, org_claims, user_claims
from core.oidc.clients import OFFLINE, RegisteredClient
from core.oidc.keys import AnyKey
from core.oidc.refresh import new_refresh_token, refresh_hash
from core.rate_limit import SlidingWindowLimiter
from core.settings import Settings

# authlib logs issued tokens and codes at DEBUG ("Issue token %r"): never, whatever the log level.
logging.getLogger("authlib").setLevel(logging.INFO)

CODE_PURPOSE = "oidc-code"
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 (RFC 9068 typ)
# Access tokens are for this provider's own userinfo and introspection, which check ES256 as
# readily as RS256; an ES256 signature costs a sixth of an RSA-2048 one (a large part of a
# refresh grant), and its key is in the JWKS like the RSA key. ID tokens keep the client's
# registered algorithm (RS256 unless it asked for ES256).
ACCESS_TOKEN_ALGORITHM = "ES256"  # noqa: S105 (an algorithm name)


def code_hash(settings: Settings, code: str) -> str:
    return token_hash(settings.secret_key.get_secret_value(), CODE_PURPOSE, code)


def access_token_audience(settings: Settings) -> str:
    """The resource the access tokens are for: this provider's userinfo endpoint."""
    return f"{settings.public_url}/oidc/userinfo"


@dataclass
class Loaded:
    """What one request's grants may read and write: loaded before authlib runs."""

    settings: Settings
    db: AsyncSession
    now: datetime
    keys: dict[str, tuple[str, AnyKey]]
    client: RegisteredClient | None = None
    grant: OidcGrant | None = None
    subject: Subject | None = None
    code_issued: bool = False
    # Counts an app's token requests once it has authenticated: an unauthenticated caller
    # naming the app must not spend its budget.
    per_client: SlidingWindowLimiter | None = None
    # The browser session an authorization request is answered from (its id's HMAC).
    session_hash: str | None = None
    # The refresh token presented, and whether it may be used (checked before authlib runs).
    refresh: OidcRefreshToken | None = None
    refresh_usable: bool = False
    # The refresh token issued by the answer, written by save_issued once the code or the
    # presented refresh token is known to be spent (authlib's hooks can't await).
    issued_refresh: dict[str, Any] | None = None

    async def save_issued(self) -> None:
        """The refresh token the answer carries, as one INSERT (no unit of work to flush)."""
        if self.issued_refresh is not None:
            await self.db.execute(insert(OidcRefreshToken).values(**self.issued_refresh))
            self.issued_refresh = None


class Payload(OAuth2Payload):
    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._datalist: defaultdict[str, list[str]] = defaultdict(list)
        for key, value in items:
            self._datalist[key].append(value)
        self._data = {key: values[0] for key, values in self._datalist.items()}

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return self._datalist


class Request(OAuth2Request):
    def __init__(
        self, method: str, uri: str, headers: Mapping[str, str], items: list[tuple[str, str]]
    ) -> None:
        super().__init__(method=method, uri=uri, headers=headers)
        self.payload = Payload(items)
        self._items = self.payload.data

    @property
    def args(self) -> dict[str, str]:
        return self._items

    @property
    def form(self) -> dict[str, str]:
        return self._items


@dataclass
class Answer:
    """What authlib answers, before it becomes a response; RFC 9207's hook edits `location`."""

    status: int
    body: Any
    headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def location(self) -> str | None:
        return next((value for name, value in self.headers if name.lower() == "location"), None)

    @location.setter
    def location(self, value: str) -> None:
        self.headers = [(n, v) for n, v in self.headers if n.lower() != "location"] + [("Location", value)]

    @property
    def error(self) -> str:
        """The OAuth error code of a refusal (its status when the body names none)."""
        error = self.body.get("error") if isinstance(self.body, dict) else None
        return str(error or self.status)

    def response(self) -> Response:
        headers = {name: value for name, value in self.headers if name.lower() != "location"}
        if self.location is not None:
            return RedirectResponse(self.location, status_code=self.status, headers=headers)
        return JSONResponse(self.body, status_code=self.status, headers=headers)


class IssuedCode:
    """authlib's AuthorizationCodeMixin over a grant row."""

    def __init__(self, row: OidcGrant) -> None:
        self.row = row
        self.code_challenge = row.code_challenge
        self.code_challenge_method = "S256" if row.code_challenge else None

    def get_redirect_uri(self) -> str:
        return self.row.redirect_uri

    def get_scope(self) -> str:
        return self.row.scope

    def get_nonce(self) -> str | None:
        return self.row.claims.get("nonce")

    def get_auth_time(self) -> int | None:
        return self.row.claims.get("auth_time")

    def get_acr(self) -> str | None:
        return self.row.claims.get("acr")

    def get_amr(self) -> list[str] | None:
        return self.row.claims.get("amr")


class S256Only(CodeChallenge):
    """PKCE with S256 only (plain gives nothing over no PKCE), and required of public clients
    at the authorization endpoint already, where the error can still go back to the app."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if data.get("code_challenge") and data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("PKCE requires code_challenge_method=S256")
        if not data.get("code_challenge") and grant.request.client.public:
            raise InvalidRequestError("A public client must use PKCE (code_challenge with S256)")
        super().validate_code_challenge(grant, redirect_uri)


class CodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
    server: Provider

    def save_authorization_code(self, code: str, request: Request) -> None:
        loaded = self.server.loaded
        subject: Subject = request.user
        claims = dict(subject.session)
        if nonce := request.payload.data.get("nonce"):
            claims["nonce"] = nonce
        loaded.db.add(
            OidcGrant(
                code_hash=code_hash(loaded.settings, code),
                client_id=request.client.get_client_id(),
                staff_id=subject.staff.id,
                redirect_uri=request.payload.redirect_uri,
                scope=request.scope,
                claims=claims,
                code_challenge=request.payload.data.get("code_challenge"),
                expires_at=loaded.now + loaded.settings.oidc_code_ttl,
                created_at=loaded.now,
                session_hash=loaded.session_hash,
            )
        )
        loaded.code_issued = True

    def query_authorization_code(self, code: str, client: RegisteredClient) -> IssuedCode | None:
        row = self.server.loaded.grant
        if (
            row is None
            or row.code_hash != code_hash(self.server.loaded.settings, code)
            or row.client_id != client.get_client_id()
            or row.expires_at <= self.server.loaded.now
            or row.revoked_at is not None
            or row.redeemed_at is not None
        ):
            return None
        return IssuedCode(row)

    def delete_authorization_code(self, authorization_code: IssuedCode) -> None:
        pass  # redeemed (atomically) once the answer is ready: see api/services/oidc.py

    def authenticate_user(self, authorization_code: IssuedCode) -> Subject | None:
        subject = self.server.loaded.subject
        return subject if self.server.signs_in(subject) else None


class IdToken(OpenIDCode):  # type: ignore[misc]
    def __init__(self, server: Provider) -> None:
        super().__init__(require_nonce=False)
        self.server = server

    def exists_nonce(self, nonce: str, request: Request) -> bool:
        return False  # the nonce binds the ID token to the app's own request; the app checks it

    def get_client_algorithm(self, client: RegisteredClient) -> str:
        return client.id_token_signed_response_alg

    def resolve_client_private_key(self, client: RegisteredClient) -> AnyKey:
        return self.server.loaded.keys[self.get_client_algorithm(client)][1]

    def get_encode_header(self, client: RegisteredClient) -> dict[str, str]:
        alg = self.get_client_algorithm(client)
        return {"alg": alg, "kid": self.server.loaded.keys[alg][0], "typ": "JWT"}

    def get_client_claims(self, client: RegisteredClient) -> dict[str, Any]:
        loaded = self.server.loaded
        now = int(loaded.now.timestamp())
        return {
            "iss": loaded.settings.public_url,
            "aud": [client.get_client_id()],
            "iat": now,
            "exp": now + int(loaded.settings.oidc_id_token_ttl.total_seconds()),
        }

    def generate_user_info(self, user: Subject, scope: str) -> dict[str, Any]:
        return {**user_claims(user, scope), "sid": user.session.get("sid")}


class Issuer(IssuerParameter):  # type: ignore[misc]
    def __init__(self, issuer: str) -> None:
        self.issuer = issuer

    def get_issuer(self) -> str:
        return self.issuer


class SlowDown(OAuth2Error):  # type: ignore[misc]
    error = "temporarily_unavailable"
    description = "Too many token requests; slow down"
    status_code = 429

    def __init__(self, wait: int) -> None:
        super().__init__()
        self.wait = wait

    def get_headers(self) -> list[tuple[str, str]]:
        return [*super().get_headers(), ("Retry-After", str(self.wait))]


class Provider(AuthorizationServer):  # type: ignore[misc]
    """One request's authorization server: built per request around what it loaded."""

    def __init__(self, loaded: Loaded) -> None:
        super().__init__(scopes_supported=None)
        self.loaded = loaded
        self.issuer = Issuer(loaded.settings.public_url)
        self.register_grant(CodeGrant, [IdToken(self), S256Only(required=True)])
        self.register_extension(self.issuer)
        self.register_token_generator("default", self.access_token)

    def authenticate_client(self, request: Request, methods: list[str], endpoint: str = "token") -> Any:
        client = super().authenticate_client(request, methods, endpoint)
        limiter = self.loaded.per_client
        if limiter is not None and (wait := limiter.hit(client.get_client_id())) is not None:
            raise SlowDown(wait)
        return client

    def signs_in(self, subject: Subject | None) -> bool:
        """The person may still get tokens for this request's app: their account is active and
        the app is open to their organisation (it may have been limited since the code or
        refresh token was issued)."""
        client = self.loaded.client
        return subject is not None and subject.usable and client is not None and client.admits(subject.org.id)

    def query_client(self, client_id: str) -> RegisteredClient | None:
        client = self.loaded.client
        return client if client is not None and client.get_client_id() == client_id else None

    def save_token(self, token: dict[str, Any], request: Request) -> None:
        pass  # access tokens are signed JWTs; their grant row is what can revoke them

    def create_oauth2_request(self, request: Any) -> Request:
        assert isinstance(request, Request)
        return request

    def handle_response(self, status: int, body: Any, headers: list[tuple[str, str]]) -> Answer:
        return Answer(status, body, list(headers))

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass

    def error_with_issuer(self, answer: Answer) -> Answer:
        """RFC 9207: the `iss` parameter on errors sent back to the app as well."""
        self.issuer.add_issuer_parameter(self, answer)
        return answer

    def access_token(
        self,
        grant_type: str,
        client: RegisteredClient,
        user: Subject | None = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        """An RFC 9068 access token: a JWT whose `jti` starts with its grant's id; and with
        offline_access, for a client allowed the refresh_token grant, a refresh token."""
        loaded = self.loaded
        assert user is not None and loaded.grant is not None
        jti = str(loaded.grant.id)
        if loaded.refresh is not None:  # a refresh: the token's own id after its grant's
            jti = f"{jti}.{uuid.uuid4().hex}"
        lifetime = int(loaded.settings.oidc_access_token_ttl.total_seconds())
        kid, key = loaded.keys[ACCESS_TOKEN_ALGORITHM]
        now = int(loaded.now.timestamp())
        claims: dict[str, Any] = {
            "iss": loaded.settings.public_url,
            "sub": str(user.staff.id),
            "aud": access_token_audience(loaded.settings),
            "client_id": client.get_client_id(),
            "iat": now,
            "exp": now + lifetime,
            "jti": jti,
            "scope": scope or "",
            **org_claims(user.org),
            **{k: user.session[k] for k in ("auth_time", "acr", "amr", "sid") if k in user.session},
        }
        token = jwt.encode({"alg": ACCESS_TOKEN_ALGORITHM, "kid": kid, "typ": ACCESS_TOKEN_TYPE}, claims, key)
        answer = {"token_type": "Bearer", "access_token": token, "expires_in": lifetime, "scope": scope or ""}
        # A refreshed token keeps the scope it was granted, whatever the refresh narrowed.
        granted = loaded.refresh.scope if loaded.refresh is not None else scope or ""
        if include_refresh_token and OFFLINE in granted.split():
            answer["refresh_token"] = self.refresh_token(granted)
        return answer

    def refresh_token(self, scope: str) -> str:
        loaded = self.loaded
        assert loaded.grant is not None
        token = new_refresh_token()
        loaded.issued_refresh = {
            "id": uuid.uuid4(),
            "token_hash": refresh_hash(loaded.settings, token),
            "grant_id": loaded.grant.id,
            "scope": scope,
            "created_at": loaded.now,
        }
        return token


def grant_id_of(jti: object) -> uuid.UUID | None:
    """The grant an access token was issued for: its `jti`, or what comes before its dot."""
    try:
        return uuid.UUID(str(jti).split(".", 1)[0])
    except ValueError:
        return None
