"""Method 1, Microsoft Entra, piece by piece and without Temporal.

ID tokens are checked against a real OIDC provider (oidc-provider-mock on a background thread:
its own keys, its own code flow) and against a Microsoft stand-in served through
`httpx.MockTransport` where the test must control the discovery document, the key set, the
token endpoint or Graph. Then the settings, where a sign-in may send a person back to, the
pages of the web app in-process, and the log redaction of Microsoft's callback.

The end-to-end tests (tests/e2e/test_entra.py) drive the whole stack; these pin each rule down.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import pytest_asyncio
from joserfc import jwt
from joserfc.jwk import RSAKey
from oidc_provider_mock import run_server_in_thread

import core.entra
from api.services.entra import CONFIRM_PURPOSE
from api.services.sessions import Sessions
from api.services.signin import safe_return_to
from core.entra import (
    EntraIdentity,
    EntraProvider,
    EntraRefused,
    EntraUnavailable,
    Grant,
    forget_cached_documents,
)
from core.logging import JsonFormatter, RedactingFilter, redact
from core.settings import InsecureSettingsError, Settings
from tests.support.accounts import (
    PUBLIC_URL,
    Browser,
    browsing,
    cookie_attributes,
    hidden_fields,
    make_person,
    page_text,
)
from tests.support.config import (
    TEST_ENCRYPTION_KEY,
    TEST_SEAL_PUBLIC_KEY,
    TEST_SECRET_KEY,
    make_settings,
)
from tests.support.harness import Stack, running_app

TENANT = "0b1c2d3e-0000-4000-8000-00000000a9e7"
OTHER_TENANT = "0b1c2d3e-0000-4000-8000-0000000f0e16"
CLIENT_ID = "agentos-sso-unit"
CLIENT_SECRET = "unit-test-entra-client-secret"
OID = "7d4c9a52-9a3f-4c56-8f7b-4c1a2b3c4d5e"

# The Microsoft stand-in behind httpx.MockTransport.
LOGIN = "https://login.example.test"
META_URL = f"{LOGIN}/organizations/v2.0/.well-known/openid-configuration"
AUTHORIZE_URL = f"{LOGIN}/organizations/oauth2/v2.0/authorize"
TOKEN_URL = f"{LOGIN}/organizations/oauth2/v2.0/token"
JWKS_URL = f"{LOGIN}/organizations/discovery/v2.0/keys"
GRAPH_URL = "https://graph.example.test"
# What Microsoft's multi-tenant metadata says its issuer is.
ISSUER_TEMPLATE = "https://login.microsoftonline.com/{tenantid}/v2.0"

EXPIRED_PAGE = "This sign-in has expired or was already used. Please start again."
PENDING_COOKIE = "__Host-sso_entra"
CONFIRM_COOKIE = "__Host-sso_entra_confirm"
MORGAN = "morgan@example.com"
B64URL = re.compile(r"^[A-Za-z0-9_-]+$")


@pytest.fixture(autouse=True)
def _fresh_documents(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Discovery documents and key sets are cached per process: every test starts empty, and
    no SSO_* variable of the shell running the tests leaks into the settings."""
    import os

    for name in list(os.environ):
        if name.startswith("SSO_"):
            monkeypatch.delenv(name)
    forget_cached_documents()
    yield
    forget_cached_documents()


# --------------------------------------------------------------------------- helpers


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def payload_of(token: str) -> dict[str, Any]:
    return json.loads(unb64url(token.split(".")[1]))  # type: ignore[no-any-return]


def compact(header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    """A JWS in compact form, built by hand so that any header (alg none, HS256) is possible."""
    signing_input = (b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())).encode()
    return f"{signing_input.decode()}.{b64url(sign(signing_input))}"


@cache
def rsa_key(kid: str) -> RSAKey:
    """One 2048-bit key per kid for the whole run: generating them is the slow part."""
    return RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig"}, private=True)


def sign(claims: dict[str, Any], key: RSAKey, **header: Any) -> str:
    return jwt.encode({"alg": "RS256", "kid": key.kid, **header}, claims, key)


def microsoft_claims(nonce: str, tid: str = TENANT, **overrides: Any) -> dict[str, Any]:
    """An ID token's claims as Microsoft's v2.0 endpoint issues them."""
    now = int(time.time())
    claims = {
        "iss": f"https://login.microsoftonline.com/{tid}/v2.0",
        "aud": CLIENT_ID,
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "nonce": nonce,
        "tid": tid,
        "oid": OID,
        "sub": "pairwise-subject",
        "name": "Alex Entra",
        "preferred_username": "alex@agency.example",
        "ver": "2.0",
    }
    claims.update(overrides)
    return claims


def entra_settings(metadata_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "entra_tenant_id": TENANT,
        "entra_client_id": CLIENT_ID,
        "entra_client_secret": CLIENT_SECRET,
        "entra_metadata_url": metadata_url,
        "graph_url": GRAPH_URL,
    }
    values.update(overrides)
    return make_settings(**values)


def query_of(url: str) -> dict[str, str]:
    parsed = parse_qs(urlsplit(url).query, keep_blank_values=True)
    assert all(len(values) == 1 for values in parsed.values()), parsed
    return {name: values[0] for name, values in parsed.items()}


class FakeMicrosoft:
    """Microsoft for httpx.MockTransport: discovery, a key set whose successive answers the
    test chooses, a token endpoint and Graph's /me answering from queues."""

    def __init__(self, issuer: str = ISSUER_TEMPLATE) -> None:
        self.issuer = issuer
        self.key_sets: list[list[RSAKey]] = [[rsa_key("key-1")]]  # the last one repeats
        self.token_answers: list[httpx.Response] = []
        self.graph_answers: list[httpx.Response | str] = []
        self.user_answers: list[httpx.Response | str] = []  # Graph's /v1.0/users/{id}
        self.requests: list[httpx.Request] = []
        self.not_json: set[str] = set()  # URLs answered 200 with an HTML page instead
        self.client = httpx.AsyncClient(transport=httpx.MockTransport(self.handle))

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        url = str(request.url.copy_with(query=None))
        if url in self.not_json:
            return httpx.Response(
                200, text="<html>Proxy sign-in</html>", headers={"content-type": "text/html"}
            )
        if url == META_URL:
            return httpx.Response(
                200,
                json={
                    "issuer": self.issuer,
                    "authorization_endpoint": AUTHORIZE_URL,
                    "token_endpoint": TOKEN_URL,
                    "jwks_uri": JWKS_URL,
                    "id_token_signing_alg_values_supported": ["RS256"],
                },
            )
        if url == JWKS_URL:
            keys = self.key_sets.pop(0) if len(self.key_sets) > 1 else self.key_sets[0]
            return httpx.Response(200, json={"keys": [k.as_dict(private=False) for k in keys]})
        if url == TOKEN_URL and request.method == "POST":
            return self.token_answers.pop(0)
        if url == f"{GRAPH_URL}/v1.0/me":
            answer = self.graph_answers.pop(0)
            if answer == "connect-error":
                raise httpx.ConnectError("connection refused", request=request)
            assert isinstance(answer, httpx.Response)
            return answer
        if url.startswith(f"{GRAPH_URL}/v1.0/users/"):
            user = self.user_answers.pop(0)
            if user == "connect-error":
                raise httpx.ConnectError("connection refused", request=request)
            assert isinstance(user, httpx.Response)
            return user
        return httpx.Response(404, json={"error": "not_found"})

    def hits(self, url: str) -> int:
        return sum(1 for r in self.requests if str(r.url.copy_with(query=None)) == url)

    def provider(self, **overrides: Any) -> EntraProvider:
        return EntraProvider(entra_settings(META_URL, **overrides), http=self.client)


@pytest_asyncio.fixture
async def microsoft() -> AsyncIterator[FakeMicrosoft]:
    fake = FakeMicrosoft()
    try:
        yield fake
    finally:
        await fake.client.aclose()


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Graph retries without waiting: core.entra's asyncio.sleep records the delay instead."""
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)

    monkeypatch.setattr(core.entra, "asyncio", SimpleNamespace(sleep=sleep))
    return delays


# --------------------------------------------------------------------------- the real provider


@pytest.fixture(scope="module")
def mock_idp() -> Iterator[str]:
    """oidc-provider-mock on a background thread, always addressed as localhost (its issuer is
    the host it is reached at; authlib accepts http for localhost without
    AUTHLIB_INSECURE_TRANSPORT)."""
    with run_server_in_thread(port=0, require_nonce=True) as server:
        yield f"http://localhost:{server.server_port}"


@pytest.fixture
def idp_provider(mock_idp: str) -> EntraProvider:
    return EntraProvider(entra_settings(f"{mock_idp}/.well-known/openid-configuration"))


@dataclass
class Issued:
    id_token: str
    access_token: str
    nonce: str
    claims: dict[str, Any]


async def issued_by(mock_idp: str, provider: EntraProvider, **claims: Any) -> Issued:
    """The code flow against the real provider for a new person with these claims: the
    authorization request, the person confirming, and the code exchanged for tokens."""
    sub = f"user-{uuid.uuid4().hex[:10]}"
    values = {
        "tid": TENANT,
        "oid": str(uuid.uuid4()),
        "name": "Alex Entra",
        "email": f"{sub}@agency.example",
        **claims,
    }
    async with httpx.AsyncClient(timeout=10) as http:
        created = await http.put(f"{mock_idp}/users/{sub}", json=values)
        assert created.status_code == 204, created.text
        request = await provider.authorization_request()
        confirmed = await http.post(request.url, data={"sub": sub})
    assert confirmed.status_code == 302, confirmed.text
    callback = query_of(confirmed.headers["location"])
    assert callback["state"] == request.state
    tokens = await provider._exchange(Grant(callback["code"], request.code_verifier, request.nonce))
    return Issued(tokens["id_token"], tokens["access_token"], request.nonce, payload_of(tokens["id_token"]))


async def provider_jwks(mock_idp: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.get(f"{mock_idp}/jwks")
    assert answer.status_code == 200
    return answer


async def refused_reason(provider: EntraProvider, token: str, nonce: str) -> str:
    with pytest.raises(EntraRefused) as refused:
        await provider.validate_id_token(token, nonce)
    return refused.value.reason


async def test_a_real_token_from_the_provider_is_accepted(mock_idp: str, idp_provider: EntraProvider) -> None:
    issued = await issued_by(mock_idp, idp_provider)
    claims = await idp_provider.validate_id_token(issued.id_token, issued.nonce)
    assert claims["tid"] == TENANT and claims["oid"] == issued.claims["oid"]
    assert claims["iss"] == mock_idp and claims["nonce"] == issued.nonce
    # The same token with another browser's nonce is someone else's sign-in.
    assert await refused_reason(idp_provider, issued.id_token, "another-nonce") == "invalid_token"


async def test_redeem_with_the_real_provider_and_a_graph_stand_in(mock_idp: str) -> None:
    """The whole of redeem: the provider's token endpoint and keys over the network, Graph
    answered here; identifiers come out lower-cased and the email falls back to
    preferred_username."""
    upper_oid = str(uuid.uuid4()).upper()
    graph_calls: list[httpx.Request] = []
    network = httpx.AsyncHTTPTransport()

    class Routed(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.host == "graph.example.test":
                graph_calls.append(request)
                return httpx.Response(200, json={"id": upper_oid, "accountEnabled": True})
            return await network.handle_async_request(request)

        async def aclose(self) -> None:
            await network.aclose()

    async with httpx.AsyncClient(transport=Routed(), timeout=10) as http:
        provider = EntraProvider(
            entra_settings(f"{mock_idp}/.well-known/openid-configuration", entra_tenant_id=TENANT.upper()),
            http=http,
        )
        sub = f"user-{uuid.uuid4().hex[:10]}"
        created = await http.put(
            f"{mock_idp}/users/{sub}",
            json={
                "tid": TENANT.upper(),
                "oid": upper_oid,
                "name": "Alex Entra",
                "preferred_username": "Alex@Agency.example",
            },
        )
        assert created.status_code == 204
        request = await provider.authorization_request()
        confirmed = await http.post(request.url, data={"sub": sub})
        code = query_of(confirmed.headers["location"])["code"]
        identity = await provider.redeem(Grant(code, request.code_verifier, request.nonce))
    assert identity == EntraIdentity(
        tenant_id=TENANT, object_id=upper_oid.lower(), name="Alex Entra", email="Alex@Agency.example"
    )
    assert len(graph_calls) == 1
    assert graph_calls[0].url.params["$select"] == "id,accountEnabled"
    bearer = graph_calls[0].headers["authorization"]
    assert bearer.startswith("Bearer ") and len(bearer) > len("Bearer ") + 20


@pytest.mark.parametrize(
    "header",
    [
        {},  # no kid, as the provider's own tokens: its only key is tried
        {"kid": "PROVIDER"},  # the provider's kid
        {"kid": "PROVIDER", "jwk": "ATTACKER", "jku": "https://evil.example/jwks"},
        {"kid": "attacker-key"},  # a kid the provider never published
    ],
    ids=["no-kid", "provider-kid", "embedded-jwk-and-jku", "unknown-kid"],
)
async def test_a_token_signed_by_another_key_is_refused(
    mock_idp: str, idp_provider: EntraProvider, header: dict[str, Any]
) -> None:
    issued = await issued_by(mock_idp, idp_provider)
    await idp_provider.validate_id_token(issued.id_token, issued.nonce)  # the claims are perfect
    provider_kid = (await provider_jwks(mock_idp)).json()["keys"][0]["kid"]
    attacker = rsa_key("attacker-key")
    stand_ins = {"PROVIDER": provider_kid, "ATTACKER": attacker.as_dict(private=False)}
    values = {name: stand_ins.get(value, value) for name, value in header.items()}
    forged = jwt.encode({"alg": "RS256", "typ": "JWT", **values}, issued.claims, attacker)
    assert payload_of(forged) == issued.claims
    assert await refused_reason(idp_provider, forged, issued.nonce) == "invalid_token"


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
async def test_an_unsigned_token_is_refused(mock_idp: str, idp_provider: EntraProvider, alg: str) -> None:
    issued = await issued_by(mock_idp, idp_provider)
    unsigned = compact({"alg": alg, "typ": "JWT"}, issued.claims, lambda _: b"")
    assert await refused_reason(idp_provider, unsigned, issued.nonce) == "invalid_token"
    # alg none in front of the provider's real signature is no better.
    grafted = unsigned.rsplit(".", 1)[0] + "." + issued.id_token.rsplit(".", 1)[1]
    assert await refused_reason(idp_provider, grafted, issued.nonce) == "invalid_token"


@pytest.mark.parametrize("secret_from", ["jwk-json", "jwks-body", "pem"])
async def test_hs256_keyed_with_the_public_key_is_refused(
    mock_idp: str, idp_provider: EntraProvider, secret_from: str
) -> None:
    """Key confusion: an HMAC whose secret is the provider's public key, which anyone has."""
    issued = await issued_by(mock_idp, idp_provider)
    jwks = await provider_jwks(mock_idp)
    public = jwks.json()["keys"][0]
    secret = {
        "jwk-json": json.dumps(public).encode(),
        "jwks-body": jwks.content,
        "pem": RSAKey.import_key(public).as_pem(private=False),
    }[secret_from]
    forged = compact(
        {"alg": "HS256", "typ": "JWT", "kid": public["kid"]},
        issued.claims,
        lambda data: hmac.new(secret, data, hashlib.sha256).digest(),
    )
    assert await refused_reason(idp_provider, forged, issued.nonce) == "invalid_token"


async def test_a_changed_claim_breaks_the_signature(mock_idp: str, idp_provider: EntraProvider) -> None:
    issued = await issued_by(mock_idp, idp_provider)
    header, _, signature = issued.id_token.split(".")
    other = {**issued.claims, "oid": str(uuid.uuid4())}
    tampered = f"{header}.{b64url(json.dumps(other).encode())}.{signature}"
    assert await refused_reason(idp_provider, tampered, issued.nonce) == "invalid_token"


async def test_only_allowed_tenants_get_in(mock_idp: str, idp_provider: EntraProvider) -> None:
    issued = await issued_by(mock_idp, idp_provider, tid=OTHER_TENANT)
    assert await refused_reason(idp_provider, issued.id_token, issued.nonce) == "wrong_tenant"
    # Listed (in any case) among the allowed tenants, the same token is accepted.
    both = EntraProvider(
        entra_settings(
            f"{mock_idp}/.well-known/openid-configuration",
            entra_allowed_tenants=f"{TENANT}, {OTHER_TENANT.upper()}",
        )
    )
    claims = await both.validate_id_token(issued.id_token, issued.nonce)
    assert claims["tid"] == OTHER_TENANT


# --------------------------------------------------------------------------- issuer and keys


@pytest.mark.parametrize(
    ("tid", "iss_tenant", "allowed", "outcome"),
    [
        (TENANT, TENANT, None, "accepted"),
        # The template is filled with the token's own tid: another tenant's issuer is refused.
        (TENANT, OTHER_TENANT, None, "invalid_token"),
        (OTHER_TENANT, OTHER_TENANT, None, "wrong_tenant"),
        (OTHER_TENANT, OTHER_TENANT, f"{TENANT},{OTHER_TENANT}", "accepted"),
    ],
    ids=["own-tenant", "issuer-of-another-tenant", "other-tenant", "other-tenant-allowed"],
)
async def test_the_issuer_template_is_filled_with_the_tokens_tenant(
    microsoft: FakeMicrosoft, tid: str, iss_tenant: str, allowed: str | None, outcome: str
) -> None:
    provider = microsoft.provider(**({"entra_allowed_tenants": allowed} if allowed else {}))
    assert "{tenantid}" in (await provider.metadata())["issuer"]
    token = sign(
        microsoft_claims("n-1", tid=tid, iss=f"https://login.microsoftonline.com/{iss_tenant}/v2.0"),
        rsa_key("key-1"),
    )
    if outcome == "accepted":
        assert (await provider.validate_id_token(token, "n-1"))["tid"] == tid
    else:
        assert await refused_reason(provider, token, "n-1") == outcome


async def test_the_literal_template_is_not_an_issuer(microsoft: FakeMicrosoft) -> None:
    provider = microsoft.provider()
    token = sign(microsoft_claims("n-1", iss=ISSUER_TEMPLATE), rsa_key("key-1"))
    assert await refused_reason(provider, token, "n-1") == "invalid_token"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"aud": "someone-elses-app"}, "invalid_token"),
        ({"exp": int(time.time()) - 600}, "expired_token"),
        ({"iat": None}, "invalid_token"),
        ({"tid": None}, "not_work_account"),
        ({"oid": ""}, "not_work_account"),
    ],
    ids=["audience", "expired", "no-iat", "no-tid", "empty-oid"],
)
async def test_claims_microsoft_signed_but_we_must_refuse(
    microsoft: FakeMicrosoft, overrides: dict[str, Any], reason: str
) -> None:
    claims = {k: v for k, v in microsoft_claims("n-1", **overrides).items() if v is not None}
    token = sign(claims, rsa_key("key-1"))
    assert await refused_reason(microsoft.provider(), token, "n-1") == reason


async def test_a_new_key_id_fetches_the_key_set_once_more(microsoft: FakeMicrosoft) -> None:
    """Microsoft rotated its keys: the cached set lacks the token's kid, one refetch has it."""
    old, new = rsa_key("key-1"), rsa_key("key-2")
    microsoft.key_sets = [[old], [old, new]]
    provider = microsoft.provider()
    first = sign(microsoft_claims("n-1"), old)
    await provider.validate_id_token(first, "n-1")
    assert microsoft.hits(JWKS_URL) == 1
    rotated = sign(microsoft_claims("n-2"), new)
    assert (await provider.validate_id_token(rotated, "n-2"))["oid"] == OID
    assert microsoft.hits(JWKS_URL) == 2
    # The refreshed set is what is cached now, for every provider in the process.
    again = EntraProvider(provider.settings, http=microsoft.client)
    await again.validate_id_token(sign(microsoft_claims("n-3"), new), "n-3")
    assert microsoft.hits(JWKS_URL) == 2 and microsoft.hits(META_URL) == 1


async def test_an_unknown_key_id_is_refetched_once_then_refused(microsoft: FakeMicrosoft) -> None:
    provider = microsoft.provider()
    stranger = sign(microsoft_claims("n-1"), rsa_key("never-published"))
    assert await refused_reason(provider, stranger, "n-1") == "invalid_token"
    assert microsoft.hits(JWKS_URL) == 2


# --------------------------------------------------------------------------- Graph


IDENTITY = EntraIdentity(tenant_id=TENANT, object_id=OID, name="Alex", email="alex@x.example")


def graph(status: int, body: Any = None) -> httpx.Response:
    return httpx.Response(status, json=body if body is not None else {"error": {"code": "x"}})


async def test_graph_is_retried_through_passing_failures(
    microsoft: FakeMicrosoft, sleeps: list[float]
) -> None:
    microsoft.graph_answers = [
        graph(503),
        graph(503),
        graph(200, {"id": OID.upper(), "accountEnabled": True}),
    ]
    await microsoft.provider()._check_enabled("the-access-token", IDENTITY)
    assert microsoft.hits(f"{GRAPH_URL}/v1.0/me") == 3
    assert sleeps == [0.5, 1.0]
    call = microsoft.requests[-1]
    assert call.headers["authorization"] == "Bearer the-access-token"
    assert call.url.params["$select"] == "id,accountEnabled"


async def test_a_network_failure_is_retried_too(microsoft: FakeMicrosoft, sleeps: list[float]) -> None:
    microsoft.graph_answers = ["connect-error", graph(429), graph(200, {"id": OID, "accountEnabled": True})]
    await microsoft.provider()._check_enabled("token", IDENTITY)
    assert microsoft.hits(f"{GRAPH_URL}/v1.0/me") == 3 and sleeps == [0.5, 1.0]


async def test_graph_down_for_every_attempt_is_unavailable(
    microsoft: FakeMicrosoft, sleeps: list[float]
) -> None:
    microsoft.graph_answers = [graph(503), graph(503), graph(503), graph(200, {"id": OID})]
    with pytest.raises(EntraUnavailable, match="503"):
        await microsoft.provider()._check_enabled("token", IDENTITY)
    assert microsoft.hits(f"{GRAPH_URL}/v1.0/me") == 3  # not a fourth
    assert sleeps == [0.5, 1.0]  # and no wait after the last one


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (graph(200, {"id": OID, "accountEnabled": False}), "disabled"),
        (graph(200, {"id": str(uuid.uuid4()), "accountEnabled": True}), "invalid_token"),
        (graph(200, {"accountEnabled": True}), "invalid_token"),
        (graph(401), "graph_refused"),
        (graph(403), "graph_refused"),
        (graph(404), "graph_refused"),
    ],
    ids=["disabled", "someone-else", "no-id", "401", "403", "404"],
)
async def test_graph_answers_that_refuse_at_once(
    microsoft: FakeMicrosoft, sleeps: list[float], answer: httpx.Response, reason: str
) -> None:
    microsoft.graph_answers = [answer]
    with pytest.raises(EntraRefused) as refused:
        await microsoft.provider()._check_enabled("token", IDENTITY)
    assert refused.value.reason == reason
    assert microsoft.hits(f"{GRAPH_URL}/v1.0/me") == 1 and sleeps == []


# ------------------------------------------------- the account's state, with the app's token


APP_TOKEN = httpx.Response(200, json={"access_token": "the-app-token", "token_type": "Bearer"})


@pytest.mark.parametrize(
    ("answer", "state"),
    [
        (graph(200, {"id": OID, "accountEnabled": True}), "enabled"),
        (graph(200, {"id": OID, "accountEnabled": False}), "disabled"),
        (graph(404), "deleted"),
    ],
    ids=["enabled", "disabled", "deleted"],
)
async def test_the_account_state_is_asked_with_the_apps_own_token(
    microsoft: FakeMicrosoft, answer: httpx.Response, state: str
) -> None:
    microsoft.token_answers, microsoft.user_answers = [APP_TOKEN], [answer]
    assert await microsoft.provider().account_state(OID) == state
    token_request, graph_request = [r for r in microsoft.requests if r.url != httpx.URL(META_URL)]
    body = parse_qs(token_request.content.decode())
    assert body == {
        "grant_type": ["client_credentials"],
        "scope": [f"{GRAPH_URL}/.default"],
        "client_id": [CLIENT_ID],
        "client_secret": [CLIENT_SECRET],
    }
    assert str(graph_request.url.copy_with(query=None)) == f"{GRAPH_URL}/v1.0/users/{OID}"
    assert graph_request.headers["authorization"] == "Bearer the-app-token"
    assert graph_request.url.params["$select"] == "id,accountEnabled"


@pytest.mark.parametrize(
    ("token", "user"),
    [
        (httpx.Response(401, json={"error": "invalid_client"}), None),
        (APP_TOKEN, graph(503)),
        (APP_TOKEN, graph(403)),
        (APP_TOKEN, "connect-error"),
    ],
    ids=["no-app-token", "graph-down", "no-permission", "network"],
)
async def test_an_account_state_graph_cannot_give_is_unavailable(
    microsoft: FakeMicrosoft, token: httpx.Response, user: httpx.Response | str | None
) -> None:
    microsoft.token_answers = [token]
    microsoft.user_answers = [user] if user is not None else []
    with pytest.raises(EntraUnavailable):
        await microsoft.provider().account_state(OID)


# --------------------------------------------------------------------------- the token endpoint


GRANT = Grant(code="the-authorization-code", code_verifier="v" * 64, nonce="n-1")


async def test_the_code_is_exchanged_with_pkce_and_client_secret_post(microsoft: FakeMicrosoft) -> None:
    microsoft.token_answers = [httpx.Response(200, json={"token_type": "Bearer"})]
    provider = microsoft.provider(public_url="https://sso.example.test/")
    await provider._exchange(GRANT)
    (request,) = [r for r in microsoft.requests if r.method == "POST"]
    assert str(request.url) == TOKEN_URL
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert "authorization" not in request.headers  # client_secret_post, not basic
    body = parse_qs(request.content.decode(), keep_blank_values=True)
    assert body == {
        "grant_type": ["authorization_code"],
        "code": ["the-authorization-code"],
        "code_verifier": ["v" * 64],
        "redirect_uri": [provider.settings.entra_redirect_uri],
        "client_id": [CLIENT_ID],
        "client_secret": [CLIENT_SECRET],
    }
    assert body["redirect_uri"] == ["https://sso.example.test/sso/entra/callback"]


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        (httpx.Response(500, text="oops"), "unavailable"),
        (httpx.Response(503, json={"error": "temporarily_unavailable"}), "unavailable"),
        (httpx.Response(429, json={"error": "throttled"}), "unavailable"),
        (httpx.Response(200, text="<html>not json</html>"), "unavailable"),
        (httpx.Response(400, json={"error": "invalid_grant"}), "code_rejected"),
        (httpx.Response(401, json={"error": "invalid_client"}), "code_rejected"),
        (httpx.Response(200, json={"error": "invalid_grant"}), "code_rejected"),
        (httpx.Response(200, json=["not", "an", "object"]), "code_rejected"),
    ],
    ids=["500", "503", "429", "200-html", "400-invalid-grant", "401", "200-error", "200-list"],
)
async def test_token_endpoint_failures(
    microsoft: FakeMicrosoft, answer: httpx.Response, outcome: str
) -> None:
    microsoft.token_answers = [answer]
    provider = microsoft.provider()
    if outcome == "unavailable":
        with pytest.raises(EntraUnavailable):
            await provider._exchange(GRANT)
    else:
        with pytest.raises(EntraRefused) as refused:
            await provider._exchange(GRANT)
        assert refused.value.reason == outcome


async def test_a_token_response_without_an_id_token_is_refused(microsoft: FakeMicrosoft) -> None:
    microsoft.token_answers = [httpx.Response(200, json={"access_token": "a", "token_type": "Bearer"})]
    with pytest.raises(EntraRefused) as refused:
        await microsoft.provider().redeem(GRANT)
    assert refused.value.reason == "invalid_token"
    assert microsoft.hits(f"{GRAPH_URL}/v1.0/me") == 0


@pytest.mark.parametrize("where", ["discovery", "graph", "jwks"])
async def test_a_200_that_is_not_json_is_unavailable(
    microsoft: FakeMicrosoft, sleeps: list[float], where: str
) -> None:
    """A proxy's HTML page instead of Microsoft's JSON may pass: "try again in a minute", as
    the token endpoint already does (test_token_endpoint_failures[200-html])."""
    microsoft.not_json = {{"discovery": META_URL, "jwks": JWKS_URL, "graph": f"{GRAPH_URL}/v1.0/me"}[where]}
    provider = microsoft.provider()
    with pytest.raises(EntraUnavailable):
        if where == "discovery":
            await provider.authorization_request()
        elif where == "jwks":
            await provider.validate_id_token(sign(microsoft_claims("n"), rsa_key("key-1")), "n")
        else:
            await provider._check_enabled("token", IDENTITY)


# --------------------------------------------------------------------------- the authorization request


async def test_the_authorization_request(microsoft: FakeMicrosoft) -> None:
    provider = microsoft.provider(entra_scopes="openid profile email User.Read offline_access")
    first = await provider.authorization_request()
    second = await provider.authorization_request()
    assert first.url.startswith(f"{AUTHORIZE_URL}?")
    query = query_of(first.url)
    assert query == {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": provider.settings.entra_redirect_uri,
        "scope": "openid profile email User.Read offline_access",
        "state": first.state,
        "nonce": first.nonce,
        "code_challenge": b64url(hashlib.sha256(first.code_verifier.encode()).digest()),
        "code_challenge_method": "S256",
        "response_mode": "query",
        "prompt": "select_account",
    }
    assert query["redirect_uri"] == "https://sso.example.test/sso/entra/callback"
    assert "=" not in query["code_challenge"] and len(query["code_challenge"]) == 43
    # RFC 7636: 43 to 128 unreserved characters.
    assert 43 <= len(first.code_verifier) <= 128
    assert re.fullmatch(r"[A-Za-z0-9._~-]+", first.code_verifier)
    for value in (first.state, first.nonce):
        assert len(value) >= 43 and B64URL.match(value)
    assert len({first.state, first.nonce, second.state, second.nonce}) == 4
    assert first.code_verifier != second.code_verifier
    assert "login_hint" not in query
    hinted = query_of((await provider.authorization_request("alex@agency.example")).url)
    assert hinted["login_hint"] == "alex@agency.example"
    assert microsoft.hits(META_URL) == 1  # discovery is cached


# --------------------------------------------------------------------------- settings


def production(**entra: Any) -> Settings:
    """As tests/core/test_settings.py builds production settings with real secrets."""
    values: dict[str, Any] = {
        "env": "production",
        "secret_key": TEST_SECRET_KEY,
        "public_url": "https://sso.example.test",
        "encryption_keys": [TEST_ENCRYPTION_KEY],
        "email_backend": "smtp",
        "database_url": "postgresql+psycopg://db/sso",
        "seal_public_key": TEST_SEAL_PUBLIC_KEY,
        **entra,
    }
    return Settings(**values)


def development(**entra: Any) -> Settings:
    values: dict[str, Any] = {"env": "development", "database_url": "sqlite+aiosqlite:///:memory:", **entra}
    return Settings(**values)


@pytest.mark.parametrize(
    ("values", "enabled"),
    [
        ({}, False),
        ({"entra_tenant_id": TENANT}, False),
        ({"entra_tenant_id": TENANT, "entra_client_id": CLIENT_ID}, False),
        ({"entra_tenant_id": TENANT, "entra_client_id": CLIENT_ID, "entra_client_secret": ""}, False),
        ({"entra_tenant_id": TENANT, "entra_client_secret": CLIENT_SECRET}, False),
        ({"entra_client_id": CLIENT_ID, "entra_client_secret": CLIENT_SECRET}, False),
        (
            {"entra_tenant_id": TENANT, "entra_client_id": CLIENT_ID, "entra_client_secret": CLIENT_SECRET},
            True,
        ),
        (
            {
                "entra_metadata_url": META_URL,
                "entra_client_id": CLIENT_ID,
                "entra_client_secret": CLIENT_SECRET,
            },
            True,
        ),
    ],
    ids=[
        "nothing",
        "tenant",
        "no-secret",
        "empty-secret",
        "no-client-id",
        "no-tenant",
        "configured",
        "metadata-url",
    ],
)
def test_entra_is_enabled_only_when_configured(values: dict[str, Any], enabled: bool) -> None:
    assert development(**values).entra_enabled is enabled


def test_allowed_tenants() -> None:
    assert make_settings().entra_tenants == frozenset()
    assert make_settings(entra_tenant_id=TENANT.upper()).entra_tenants == frozenset({TENANT})
    listed = make_settings(entra_tenant_id=TENANT, entra_allowed_tenants=f" {OTHER_TENANT.upper()} , ,Third ")
    assert listed.entra_tenants == frozenset({OTHER_TENANT, "third"})  # the list replaces it


def test_tenants_and_urls_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSO_ENTRA_ALLOWED_TENANTS", f"{TENANT.upper()},{OTHER_TENANT}")
    monkeypatch.setenv("SSO_ENTRA_TENANT_ID", "contoso-tenant")
    settings = make_settings()
    assert settings.entra_tenants == frozenset({TENANT, OTHER_TENANT})
    assert settings.entra_discovery_url == (
        "https://login.microsoftonline.com/contoso-tenant/v2.0/.well-known/openid-configuration"
    )
    assert make_settings(entra_metadata_url=META_URL).entra_discovery_url == META_URL
    assert make_settings(public_url="https://sso.example.com/").entra_redirect_uri == (
        "https://sso.example.com/sso/entra/callback"
    )


def test_production_refuses_the_dev_graph() -> None:
    with pytest.raises(InsecureSettingsError, match="SSO_ENTRA_DEV_GRAPH"):
        production(entra_dev_graph=True)
    assert make_settings(entra_dev_graph=True).entra_dev_graph  # tests may use it


@pytest.mark.parametrize("secret", [None, "", "changeme", "secret", "dev"])
def test_production_refuses_a_client_id_without_a_real_secret(secret: str | None) -> None:
    with pytest.raises(InsecureSettingsError, match="SSO_ENTRA_CLIENT_SECRET is missing or a placeholder"):
        production(entra_tenant_id=TENANT, entra_client_id=CLIENT_ID, entra_client_secret=secret)


def test_production_accepts_a_real_entra_configuration() -> None:
    settings = production(
        entra_tenant_id=TENANT, entra_client_id=CLIENT_ID, entra_client_secret=CLIENT_SECRET
    )
    assert settings.entra_enabled and not settings.entra_dev_graph
    assert production().entra_enabled is False  # and Entra stays optional


# --------------------------------------------------------------------------- return_to


@pytest.mark.parametrize("value", ["/sso/setup", "/sso/account?x=1", "/sso/account"])
def test_internal_return_to_is_kept(value: str) -> None:
    assert safe_return_to(make_settings(), value) == value


@pytest.mark.parametrize(
    "value",
    [
        "//evil.example",
        "/sso//evil",
        "/sso/../admin",
        "/sso/\\evil",
        "/sso/a b",
        "/ssoevil",
        "https://evil.example/sso/",
        "/sso/\tevil",
        "/sso/\nLocation: x",
        "/sso/\x00",
        "",
        "/sso/" + "a" * 2000,
        "/\\evil.example",
        "sso/setup",
    ],
    ids=[
        "protocol-relative",
        "double-slash",
        "dot-dot",
        "backslash",
        "space",
        "prefix-only",
        "absolute",
        "tab",
        "newline",
        "nul",
        "empty",
        "too-long",
        "slash-backslash",
        "relative",
    ],
)
def test_other_return_to_is_refused(value: str) -> None:
    assert safe_return_to(make_settings(), value) is None


# --------------------------------------------------------------------------- the web app in-process


@pytest_asyncio.fixture
async def plain_app(sqlite_url: str) -> AsyncIterator[Stack]:
    async with running_app(sqlite_url) as app:
        yield app


@pytest_asyncio.fixture
async def entra_app(sqlite_url: str, mock_idp: str) -> AsyncIterator[Stack]:
    async with running_app(
        sqlite_url,
        entra_tenant_id=TENANT,
        entra_client_id=CLIENT_ID,
        entra_client_secret=CLIENT_SECRET,
        entra_metadata_url=f"{mock_idp}/.well-known/openid-configuration",
        graph_url=GRAPH_URL,
    ) as app:
        yield app


async def test_without_entra_there_is_no_button_and_no_start(plain_app: Stack) -> None:
    assert not plain_app.settings.entra_enabled
    async with browsing(plain_app.transport) as browser:
        login = await browser.get("/sso/login")
        assert login.status_code == 200
        assert "Microsoft-Entra" not in login.text and "/sso/entra/start" not in login.text
        start = await browser.post(
            "/sso/entra/start", {**hidden_fields(login, "/sso/login"), "intent": "signin"}
        )
    assert start.status_code == 404, start.text
    assert "Microsoft Entra sign-in isn't set up here." in page_text(start)
    assert "Microsoft-Entra isn't available" in page_text(start)
    assert PENDING_COOKIE not in start.headers.get("set-cookie", "")


async def test_with_entra_the_button_starts_at_the_provider(entra_app: Stack, mock_idp: str) -> None:
    async with browsing(entra_app.transport) as browser:
        login = await browser.get("/sso/login")
        assert login.status_code == 200 and "Microsoft-Entra" in page_text(login)
        fields = hidden_fields(login, "/sso/entra/start")
        assert fields["intent"] == "signin" and fields["csrf"]
        start = await browser.submit(login, "/sso/entra/start")
        assert start.status_code == 303, page_text(start)
        location = start.headers["location"]
        assert location.startswith(f"{mock_idp}/oauth2/authorize?")
        assert query_of(location)["redirect_uri"] == f"{PUBLIC_URL}/sso/entra/callback"
        assert {"httponly", "secure", "samesite=lax", "path=/", "max-age=600"} <= cookie_attributes(
            start, PENDING_COOKIE
        )
        # Without the form's CSRF token nothing starts.
        forged = await browser.post("/sso/entra/start", {"intent": "signin", "csrf": "x"})
        assert forged.status_code == 400 and PENDING_COOKIE not in forged.headers.get("set-cookie", "")


async def test_the_page_with_the_button_lets_its_form_reach_microsoft(entra_app: Stack) -> None:
    """Whatever the fix (Microsoft's origin in form-action, or a same-origin page that then
    navigates), a form submission must not end in a redirect its page's CSP forbids."""
    async with browsing(entra_app.transport) as browser:
        login = await browser.get("/sso/login")
        start = await browser.submit(login, "/sso/entra/start")
    assert start.status_code in (200, 303), page_text(start)
    if start.status_code != 303:
        return
    target = urlsplit(start.headers["location"])
    origin = f"{target.scheme}://{target.netloc}"
    if not target.netloc or origin == PUBLIC_URL:
        return
    policy = login.headers["content-security-policy"]
    directives = {part.split()[0]: part.split()[1:] for part in policy.split(";") if part.strip()}
    sources = directives.get("form-action", ["*"])
    assert "*" in sources or origin in sources or f"{target.scheme}:" in sources, policy


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"code": "a-code", "state": "a-state"},
        {"error": "access_denied", "state": "a-state"},
        {"code": "c" * 5000, "state": "s" * 5000},
        {"code": "a-code", "state": "a-state", "error": "x" * 500},
    ],
    ids=["bare", "code-and-state", "error", "huge", "huge-error"],
)
@pytest.mark.parametrize("cookie", [None, "not-a-session-id", "x" * 300])
async def test_a_callback_without_a_pending_sign_in_is_refused(
    entra_app: Stack, query: dict[str, str], cookie: str | None
) -> None:
    async with browsing(entra_app.transport) as browser:
        if cookie is not None:
            browser.set_cookie(PENDING_COOKIE, cookie)
        answer = await browser.get("/sso/entra/callback", **query)
    assert answer.status_code == 403, answer.text
    assert EXPIRED_PAGE in page_text(answer)
    assert 'role="alert"' in answer.text
    assert "__Host-sso_session" not in answer.headers.get("set-cookie", "")


async def waiting_account(stack: Stack, browser: Browser) -> None:
    """What a held link's callback leaves this browser: a Microsoft account it may link."""
    someone = await make_person(stack.sessions, stack.settings)
    async with stack.sessions() as db:
        session_id = await Sessions(stack.settings, db).create(
            CONFIRM_PURPOSE,
            someone.staff_id,
            timedelta(minutes=10),
            data={"pending_id": "p-1", "account": MORGAN, "via": "session"},
        )
        await db.commit()
    browser.set_cookie(CONFIRM_COOKIE, session_id)


async def test_the_confirm_page_names_the_account_and_links_nothing_yet(entra_app: Stack) -> None:
    async with browsing(entra_app.transport) as browser:
        await waiting_account(entra_app, browser)
        page = await browser.get("/sso/entra/confirm")
        assert page.status_code == 200, page.text
        assert f"Link {MORGAN} to your agentOS sign-in?" in page_text(page)
        assert hidden_fields(page, "/sso/entra/confirm")["csrf"]
        assert hidden_fields(page, "/sso/entra/another")["csrf"]
        # Showing it twice spends nothing: a reload shows the same question.
        assert f"Link {MORGAN}" in page_text(await browser.get("/sso/entra/confirm"))


@pytest.mark.parametrize("action", ["/sso/entra/confirm", "/sso/entra/another"])
async def test_confirm_forms_need_csrf_this_browser_and_are_single_use(entra_app: Stack, action: str) -> None:
    async with browsing(entra_app.transport) as browser, browsing(entra_app.transport) as stranger:
        await waiting_account(entra_app, browser)
        page = await browser.get("/sso/entra/confirm")
        forged = await browser.post(action, {"csrf": "forged"})
        assert forged.status_code == 400, forged.text
        # Another browser, with a valid form of its own, has no account waiting.
        login = await stranger.get("/sso/login")
        foreign = await stranger.post(action, {"csrf": hidden_fields(login, "/sso/entra/start")["csrf"]})
        assert foreign.status_code == 403 and EXPIRED_PAGE in page_text(foreign)
        assert (await browser.get("/sso/entra/confirm")).status_code == 200, "still waiting for its owner"

        first = await browser.submit(page, action)
        assert first.status_code != 500, first.text
        again = await browser.submit(page, action)
        assert again.status_code == 403 and EXPIRED_PAGE in page_text(again)
        assert (await browser.get("/sso/entra/confirm")).status_code == 403


async def test_use_another_account_asks_microsoft_to_choose(entra_app: Stack, mock_idp: str) -> None:
    async with browsing(entra_app.transport) as browser:
        await waiting_account(entra_app, browser)
        page = await browser.get("/sso/entra/confirm")
        another = await browser.submit(page, "/sso/entra/another")
        assert another.status_code == 303, page_text(another)
        location = another.headers["location"]
        assert location.startswith(f"{mock_idp}/oauth2/authorize?")
        assert query_of(location)["prompt"] == "select_account"
        assert "max-age=600" in cookie_attributes(another, PENDING_COOKIE)
        assert "max-age=0" in cookie_attributes(another, CONFIRM_COOKIE)


async def test_no_confirm_page_without_an_account_waiting(entra_app: Stack) -> None:
    async with browsing(entra_app.transport) as browser:
        answer = await browser.get("/sso/entra/confirm")
    assert answer.status_code == 403 and EXPIRED_PAGE in page_text(answer)


async def test_the_callback_without_entra_configured_is_refused_too(plain_app: Stack) -> None:
    async with browsing(plain_app.transport) as browser:
        answer = await browser.get("/sso/entra/callback", code="a-code", state="a-state")
    assert answer.status_code == 403 and EXPIRED_PAGE in page_text(answer)


# --------------------------------------------------------------------------- logs


@pytest.mark.parametrize(
    "path",
    [
        "/sso/entra/callback?code=SECRET-CODE&state=SECRET-STATE",
        "/sso/entra/callback?state=SECRET-STATE&session_state=x&code=SECRET-CODE",
        "/sso/entra/callback?error=access_denied&state=SECRET-STATE&error_description=SECRET-CODE",
    ],
)
def test_the_callback_query_is_redacted_in_logs(path: str) -> None:
    line = redact(f'127.0.0.1:50000 - "GET {path} HTTP/1.1" 303')
    assert line == '127.0.0.1:50000 - "GET /sso/entra/callback?[redacted] HTTP/1.1" 303'
    # As uvicorn logs a request: the path is an argument, and the filter and formatter run.
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:50000", "GET", path, "1.1", 303),
        None,
    )
    assert RedactingFilter().filter(record)
    event = json.loads(JsonFormatter().format(record))
    assert "SECRET" not in event["message"]
    assert event["message"].endswith('"GET /sso/entra/callback?[redacted] HTTP/1.1" 303')
    # Other paths are left alone.
    assert redact("GET /sso/login?return_to=/sso/setup") == "GET /sso/login?return_to=/sso/setup"
