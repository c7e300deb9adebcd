"""Microsoft Entra as an OpenID Connect provider: discovery, the authorization request, and
turning an authorization code into a verified identity.

The web app (sign-in) and the link workflow's activity both use it. Tokens live only inside
`EntraProvider.redeem`: what comes out is the identity (tid, oid, name, email), nothing a
caller could replay.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

import httpx
from authlib.common.security import generate_token
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri, prepare_token_request
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.errors import ExpiredTokenError, JoseError
from joserfc.jwk import KeySet

from core.settings import Settings

log = logging.getLogger(__name__)

ALGORITHMS = ["RS256"]
# Clock difference tolerated between us and Microsoft.
LEEWAY_SECONDS = 60
METADATA_TTL_SECONDS = 3600
HTTP_TIMEOUT = 10.0
GRAPH_ATTEMPTS = 3
TOKEN_HEADERS = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}

MESSAGES = {
    "wrong_tenant": "This Microsoft account's organisation isn't linked to agentOS Single Sign-On, "
    "so it can't sign in here. Sign in with the work account your organisation gave you.",
    "not_work_account": "This isn't a Microsoft work account. Sign in with the work account "
    "your organisation gave you.",
    "invalid_token": "We couldn't verify your sign-in with Microsoft. Please start again.",
    "expired_token": "Your sign-in with Microsoft took too long and has expired. Please start again.",
    "code_rejected": "Microsoft didn't accept this sign-in; it may have expired or been used "
    "already. Please start again.",
    "disabled": "This Microsoft account is disabled in your organisation, so it can't be used "
    "here. Ask your administrator.",
    "graph_refused": "We couldn't check your Microsoft account with your organisation. Ask "
    "your administrator.",
}


class EntraRefused(Exception):
    """Microsoft's answer does not let this person in; `reason` is one of MESSAGES."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.message = MESSAGES[reason]


class EntraUnavailable(Exception):
    """Microsoft (or the network to it) failed in a way that may pass."""


@dataclass(frozen=True)
class EntraIdentity:
    """All that leaves the provider: no token, no code."""

    tenant_id: str
    object_id: str
    name: str
    email: str


@dataclass(frozen=True)
class Grant:
    """What the callback hands on to redeem: single use, and sealed whenever it is stored."""

    code: str
    code_verifier: str
    nonce: str

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Grant:
        data = json.loads(raw)
        return cls(code=str(data["code"]), code_verifier=str(data["code_verifier"]), nonce=str(data["nonce"]))


@dataclass(frozen=True)
class AuthorizationRequest:
    url: str
    state: str
    nonce: str
    code_verifier: str


class _Cache:
    """Discovery documents and key sets, shared by every provider in the process."""

    documents: dict[str, tuple[float, dict[str, Any]]] = {}


# Whether a Microsoft tenant may sign in here: in the app and the worker, whether an
# organisation owns it (core/orgs.py); without one, the settings' tenants.
TenantCheck = Callable[[str], Awaitable[bool]]


class EntraProvider:
    def __init__(
        self, settings: Settings, http: httpx.AsyncClient | None = None, tenants: TenantCheck | None = None
    ) -> None:
        self.settings = settings
        self._http = http
        self._tenants = tenants

    async def tenant_allowed(self, tenant: str) -> bool:
        if self._tenants is not None:
            return await self._tenants(tenant.lower())
        return tenant.lower() in self.settings.entra_tenants

    # -- discovery ------------------------------------------------------------------------

    async def metadata(self) -> dict[str, Any]:
        return await self._document(self.settings.entra_discovery_url)

    async def _keys(self, refresh: bool = False) -> KeySet:
        jwks_uri = (await self.metadata())["jwks_uri"]
        return KeySet.import_key_set(await self._document(jwks_uri, refresh))  # type: ignore[arg-type]

    async def _document(self, url: str, refresh: bool = False) -> dict[str, Any]:
        cached = _Cache.documents.get(url)
        if cached is not None and not refresh and time.monotonic() - cached[0] < METADATA_TTL_SECONDS:
            return cached[1]
        try:
            async with self._client() as http:
                response = await http.get(url)
        except httpx.HTTPError as exc:
            raise EntraUnavailable(f"could not fetch {url}: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise EntraUnavailable(f"{url} answered {response.status_code}")
        try:
            document: dict[str, Any] = response.json()
        except ValueError as exc:  # a proxy's error page, say: may pass
            raise EntraUnavailable(f"{url} answered something that is not JSON") from exc
        if not isinstance(document, dict):
            raise EntraUnavailable(f"{url} answered something that is not a JSON object")
        _Cache.documents[url] = (time.monotonic(), document)
        return document

    # -- the authorization request --------------------------------------------------------

    async def authorization_request(self, login_hint: str | None = None) -> AuthorizationRequest:
        endpoint = (await self.metadata())["authorization_endpoint"]
        state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        verifier = generate_token(64)
        extra: dict[str, str] = {"nonce": nonce, "response_mode": "query", "prompt": "select_account"}
        if login_hint:
            extra["login_hint"] = login_hint
        url = prepare_grant_uri(
            endpoint,
            client_id=self.settings.entra_client_id,
            response_type="code",
            redirect_uri=self.settings.entra_redirect_uri,
            scope=self.settings.entra_scopes,
            state=state,
            code_challenge=create_s256_code_challenge(verifier),
            code_challenge_method="S256",
            **extra,
        )
        return AuthorizationRequest(url=url, state=state, nonce=nonce, code_verifier=verifier)

    # -- redeeming the code ---------------------------------------------------------------

    async def redeem(self, grant: Grant) -> EntraIdentity:
        """Exchange the code, check the ID token and ask Graph whether the account is enabled."""
        tokens = await self._exchange(grant)
        id_token, access_token = tokens.get("id_token"), tokens.get("access_token")
        if not isinstance(id_token, str) or not isinstance(access_token, str):
            raise EntraRefused("invalid_token", "token response without id_token or access_token")
        claims = await self.validate_id_token(id_token, grant.nonce)
        identity = EntraIdentity(
            tenant_id=str(claims["tid"]).lower(),
            object_id=str(claims["oid"]).lower(),
            name=str(claims.get("name") or "")[:200],
            email=str(claims.get("email") or claims.get("preferred_username") or "")[:320],
        )
        await self._check_enabled(access_token, identity)
        return identity

    async def _exchange(self, grant: Grant) -> dict[str, Any]:
        response = await self._token_request(
            "authorization_code",
            code=grant.code,
            code_verifier=grant.code_verifier,
            redirect_uri=self.settings.entra_redirect_uri,
        )
        if response.status_code >= 500 or response.status_code == 429:
            raise EntraUnavailable(f"token endpoint answered {response.status_code}")
        try:
            tokens = response.json()
        except ValueError as exc:
            raise EntraUnavailable("token endpoint answered something that is not JSON") from exc
        if response.status_code != 200 or not isinstance(tokens, dict) or "error" in tokens:
            error = tokens.get("error", "") if isinstance(tokens, dict) else ""
            raise EntraRefused("code_rejected", str(error)[:100])
        return tokens

    async def validate_id_token(self, id_token: str, nonce: str) -> dict[str, Any]:
        # Fetched outside the decoding: a key set we can't get is "try again", not "refused".
        keys = await self._keys()
        try:
            token = jwt.decode(id_token, keys, algorithms=ALGORITHMS)
        except JoseError:
            # An unknown key id may mean Microsoft rotated its keys: fetch them once more.
            keys = await self._keys(refresh=True)
            try:
                token = jwt.decode(id_token, keys, algorithms=ALGORITHMS)
            except (JoseError, ValueError) as exc:
                raise EntraRefused("invalid_token", f"signature: {type(exc).__name__}") from exc
        except ValueError as exc:
            raise EntraRefused("invalid_token", f"malformed: {type(exc).__name__}") from exc
        claims = token.claims
        tenant, object_id = claims.get("tid"), claims.get("oid")
        if not isinstance(tenant, str) or not isinstance(object_id, str) or not tenant or not object_id:
            raise EntraRefused("not_work_account", "no tid or oid")
        issuer = str((await self.metadata())["issuer"]).replace("{tenantid}", tenant)
        registry = jwt.JWTClaimsRegistry(
            leeway=LEEWAY_SECONDS,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": self.settings.entra_client_id},
            exp={"essential": True},
            iat={"essential": True},
            nonce={"essential": True, "value": nonce},
        )
        try:
            registry.validate(claims)
        except ExpiredTokenError as exc:
            raise EntraRefused("expired_token") from exc
        except JoseError as exc:
            raise EntraRefused("invalid_token", str(exc)) from exc
        if not await self.tenant_allowed(tenant):
            raise EntraRefused("wrong_tenant", "tenant not allowed")
        return claims

    async def _check_enabled(self, access_token: str, identity: EntraIdentity) -> None:
        url = f"{self.settings.graph_url}/v1.0/me"
        headers = {"Authorization": f"Bearer {access_token}"}
        for attempt in range(GRAPH_ATTEMPTS):
            try:
                async with self._client() as http:
                    response = await http.get(url, params={"$select": "id,accountEnabled"}, headers=headers)
            except httpx.HTTPError as exc:
                problem = f"graph: {type(exc).__name__}"
            else:
                body = _json_object(response) if response.status_code == 200 else None
                if body is not None:
                    if str(body.get("id", "")).lower() != identity.object_id:
                        raise EntraRefused("invalid_token", "graph answered for someone else")
                    if body.get("accountEnabled") is False:
                        raise EntraRefused("disabled")
                    return
                if response.status_code in (401, 403, 404):
                    log.warning("graph refused the account check", extra={"status": response.status_code})
                    raise EntraRefused("graph_refused", str(response.status_code))
                problem = f"graph answered {response.status_code}" + (
                    " with something that is not JSON" if response.status_code == 200 else ""
                )
            # The code is spent by now: a retry of the whole redeem could not succeed, so
            # Graph's transient failures are retried here.
            if attempt + 1 < GRAPH_ATTEMPTS:
                await asyncio.sleep(0.5 * 2**attempt)
        raise EntraUnavailable(problem)

    # -- the account's state, asked by the app itself -------------------------------------

    async def account_state(self, object_id: str) -> str:
        """Whether Microsoft still has the linked account enabled: "enabled", "disabled" or
        "deleted". Asked with the app's own token (client credentials; the app registration
        needs Graph's User.Read.All application permission), since no user token is at hand
        at a password sign-in. One try: the caller keeps the last answer when this fails."""
        token = await self._app_token()
        url = f"{self.settings.graph_url}/v1.0/users/{object_id}"
        try:
            async with self._client() as http:
                response = await http.get(
                    url, params={"$select": "id,accountEnabled"}, headers={"Authorization": f"Bearer {token}"}
                )
        except httpx.HTTPError as exc:
            raise EntraUnavailable(f"graph users: {type(exc).__name__}") from exc
        if response.status_code == 404:
            return "deleted"
        body = _json_object(response) if response.status_code == 200 else None
        if body is None:
            raise EntraUnavailable(f"graph users answered {response.status_code}")
        return "disabled" if body.get("accountEnabled") is False else "enabled"

    async def _app_token(self) -> str:
        graph = f"{self.settings.graph_url}/.default"
        response = await self._token_request("client_credentials", scope=graph)
        tokens = _json_object(response) if response.status_code == 200 else None
        token = tokens.get("access_token") if tokens else None
        if not isinstance(token, str) or not token:
            raise EntraUnavailable(f"no app token: the token endpoint answered {response.status_code}")
        return token

    async def _token_request(self, grant_type: str, **params: str) -> httpx.Response:
        """A POST to the token endpoint as this app registration; a network failure is
        EntraUnavailable (retried), the answer is the caller's to judge."""
        token_endpoint = (await self.metadata())["token_endpoint"]
        secret = self.settings.entra_client_secret
        body = prepare_token_request(
            grant_type,
            client_id=self.settings.entra_client_id,
            client_secret=secret.get_secret_value() if secret else "",
            **params,
        )
        try:
            async with self._client() as http:
                return await http.post(token_endpoint, content=body, headers=TOKEN_HEADERS)
        except httpx.HTTPError as exc:
            raise EntraUnavailable(f"token endpoint: {type(exc).__name__}") from exc

    # -- clients --------------------------------------------------------------------------

    def _client(self) -> httpx.AsyncClient:
        if self._http is not None:
            return _Borrowed(self._http)  # type: ignore[return-value]
        return httpx.AsyncClient(timeout=HTTP_TIMEOUT)


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


class _Borrowed:
    """Use a caller's client in `async with` without closing it."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def __aenter__(self) -> httpx.AsyncClient:
        return self._client

    async def __aexit__(self, *exc: object) -> None:
        return None


def forget_cached_documents() -> None:
    _Cache.documents.clear()
