"""Local stand-ins for the email providers: a SendGrid HTTP server and an SMTP server
(aiosmtpd), with the settings that point at them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import AuthResult, LoginPassword

from activities.setup_email import ttl_words
from core.settings import Settings
from core.templating import RenderedEmail, render_email
from tests.support.config import free_port, make_settings

API_KEY = "SG.test-key"

TO = "jane.doe@example.org"

TOKEN = "tok_" + "A1b2C3d4" * 5

LINK = f"https://sso.example.test/sso/setup/{TOKEN}"


def welcome(
    brand: str = "agentOS", first_name: str = "Jane", to: str = TO, **overrides: Any
) -> RenderedEmail:
    context: dict[str, Any] = {
        "first_name": first_name,
        "link": LINK,
        "ttl_words": ttl_words(15 * 60),
        "expires_at_text": "10:15 UTC on 01 March 2030",
        "support_email": "help@example.org",
    }
    context.update(overrides)
    return render_email("sso_welcome", to=to, brand=brand, **context)


def closed_port() -> int:
    """A port nothing listens on: connecting to it is refused."""
    return free_port()


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeSendgrid:
    url: str
    requests: list[RecordedRequest] = field(default_factory=list)
    status: int = 202
    response_body: bytes = b""


def sendgrid_settings(host: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "email_backend": "sendgrid",
        "sendgrid_api_key": API_KEY,
        "sendgrid_api_host": host,
    }
    values.update(overrides)
    return make_settings(**values)


class RecordingHandler:
    def __init__(
        self, mail_reply: str | None = None, rcpt_reply: str | None = None, data_reply: str | None = None
    ) -> None:
        self.mail_reply = mail_reply
        self.rcpt_reply = rcpt_reply
        self.data_reply = data_reply
        self.envelopes: list[Any] = []

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        if self.mail_reply is not None:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if self.rcpt_reply is not None:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_reply is not None:
            return self.data_reply
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"


@dataclass
class SmtpServer:
    handler: RecordingHandler
    port: int
    logins: list[tuple[bytes, bytes]]


def smtp_settings(port: int, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "email_backend": "smtp",
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_starttls": False,
        "email_timeout": 5.0,
        "email_from": "no-reply@agentos.example",
    }
    values.update(overrides)
    return make_settings(**values)


SMTP_USER = "mailer"

SMTP_PASSWORD = "smtp-pass-Zq81-do-not-leak"


def _authenticator(logins: list[tuple[bytes, bytes]]) -> Any:
    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            logins.append((auth_data.login, auth_data.password))
            ok = auth_data.login == SMTP_USER.encode() and auth_data.password == SMTP_PASSWORD.encode()
            return AuthResult(success=ok, handled=False)
        return AuthResult(success=False, handled=False)

    return authenticate
