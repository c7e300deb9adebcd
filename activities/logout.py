"""Back-channel logout delivery: sign an app's logout token and POST it to the app."""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import urlsplit

import httpx
from joserfc import jwt
from sqlalchemy import select, update
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.inputs import LogoutFailedInput, SendLogoutInput
from core import flow_errors
from core.db import SessionFactory
from core.models import OidcClient, utcnow
from core.oidc.keys import KeyStore
from core.oidc.logout import LOGOUT_TOKEN_TYPE, logout_token_claims, logout_uri_refusal
from core.settings import Settings

# One attempt: resolving the app's host and its answer; the workflow retries with back-off.
HTTP_TIMEOUT = 10.0


class LogoutActivities:
    def __init__(self, settings: Settings, sessions: SessionFactory) -> None:
        self._settings = settings
        self._sessions = sessions
        self._keys = KeyStore(settings)

    @activity.defn(name="send_logout_token")
    async def send_logout_token(self, data: SendLogoutInput) -> str:
        """'delivered', or 'skipped' when the app is gone, switched off or no longer has a
        back-channel logout URI; an app that doesn't answer 200 is tried again."""
        now = utcnow()
        async with self._sessions() as session:
            client = await session.scalar(select(OidcClient).where(OidcClient.client_id == data.client_id))
            uri = client.registration.get("backchannel_logout_uri") if client is not None else None
            if client is None or client.disabled_at is not None or not uri:
                return "skipped"
            internal = bool(client.registration.get("internal"))
            alg = str(client.registration.get("id_token_signed_response_alg") or "RS256")
            kid, key = (await self._keys.signing(session, now))[alg]
            await session.commit()  # the first key, if this made it
        refusal = logout_uri_refusal(uri, await _addresses(uri), internal, self._settings.is_development)
        if refusal is not None:
            raise ApplicationError(refusal, non_retryable=True, type=flow_errors.LOGOUT_URI_REFUSED)
        claims = logout_token_claims(
            self._settings.public_url, data.client_id, data.staff_id, data.sid, data.jti, int(now.timestamp())
        )
        token = jwt.encode({"alg": alg, "kid": kid, "typ": LOGOUT_TOKEN_TYPE}, claims, key)
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, follow_redirects=False) as http:
            try:
                answer = await http.post(
                    uri, data={"logout_token": token}, headers={"Cache-Control": "no-store"}
                )
            except httpx.HTTPError as exc:
                raise ApplicationError(f"the app could not be reached: {type(exc).__name__}") from None
        if answer.status_code not in (200, 204):
            raise ApplicationError(f"the app answered {answer.status_code}")
        async with self._sessions() as session:
            await session.execute(
                update(OidcClient)
                .where(
                    OidcClient.client_id == data.client_id, OidcClient.backchannel_failing_since.is_not(None)
                )
                .values(backchannel_failing_since=None)
            )
            await session.commit()
        return "delivered"

    @activity.defn(name="record_logout_failure")
    async def record_logout_failure(self, data: LogoutFailedInput) -> None:
        """Keeps the earliest failure still unresolved: "failing since" is when it began."""
        async with self._sessions() as session:
            await session.execute(
                update(OidcClient)
                .where(OidcClient.client_id == data.client_id, OidcClient.backchannel_failing_since.is_(None))
                .values(backchannel_failing_since=data.since)
            )
            await session.commit()


async def _addresses(uri: str) -> list[str]:
    host = urlsplit(uri).hostname or ""
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return []
    return [str(info[4][0]) for info in found]
