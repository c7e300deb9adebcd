"""Email backends. Each send either succeeds, raises Transient (retry) or Permanent (give up)."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
import urllib.error
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import formataddr, parseaddr
from typing import Protocol, TypeVar

from python_http_client.exceptions import HTTPError as SendgridHTTPError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import Content, From, Mail, To
from temporalio import activity

from core import metrics
from core.crypto import Keyring
from core.db import SessionFactory, database_unreachable
from core.models import OutboxEmail
from core.settings import EmailBackend, Settings
from core.templating import RenderedEmail


class EmailError(Exception):
    pass


class TransientEmailError(EmailError):
    """Worth retrying: the server was down, busy or rate limiting."""

    def __init__(self, message: str, maybe_delivered: bool = False) -> None:
        super().__init__(message)
        # The connection failed while the message was being handed over (no answer, dropped):
        # the server may have taken it, so a retry may deliver a second copy.
        self.maybe_delivered = maybe_delivered


class PermanentEmailError(EmailError):
    """Retrying cannot help: the recipient or the request was refused."""


class EmailSender(Protocol):
    name: str

    async def send(self, email: RenderedEmail) -> None: ...


class _Progress:
    handing_over = False  # the message itself is on its way: the server may take it


async def _within(
    seconds: float, send: Callable[[RenderedEmail, _Progress], None], email: RenderedEmail, what: str
) -> None:
    """One send in a thread, over in `seconds` at most. The client's own timeout bounds each
    socket operation, not the whole exchange; this bounds the whole, so an attempt always ends
    well inside its activity's timeout (a thread left behind ends at its socket timeout)."""
    progress = _Progress()
    try:
        await asyncio.wait_for(asyncio.to_thread(send, email, progress), timeout=seconds)
    except TimeoutError:
        raise TransientEmailError(
            f"{what} did not finish within {seconds:g} s", maybe_delivered=progress.handing_over
        ) from None


def from_header(email_from: str, sender_name: str | None) -> str:
    """SSO_EMAIL_FROM, with the organisation's sender name as its display name when it has one
    (the address stays the deployment's: its SPF and DKIM are the ones that pass)."""
    if not sender_name:
        return email_from
    return formataddr((sender_name, parseaddr(email_from)[1]))


class OutboxSender:
    name = "outbox"

    def __init__(self, sessions: SessionFactory, keyring: Keyring) -> None:
        self._sessions = sessions
        self._keyring = keyring

    async def send(self, email: RenderedEmail) -> None:
        sealed = self._keyring.seal(f"{email.text}\0{email.html}".encode(), associated_data=b"outbox")
        async with self._sessions() as session:
            session.add(OutboxEmail(to_address=email.to, subject=email.subject, body_encrypted=sealed))
            await session.commit()


class SmtpSender:
    name = "smtp"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    async def send(self, email: RenderedEmail) -> None:
        await _within(self._settings.email_timeout, self._send_sync, email, "the SMTP server")

    def _message(self, email: RenderedEmail) -> EmailMessage:
        message = EmailMessage()
        message["From"] = from_header(self._settings.email_from, email.sender_name)
        message["To"] = email.to
        message["Subject"] = email.subject
        message.set_content(email.text)
        message.add_alternative(email.html, subtype="html")
        return message

    def _send_sync(self, email: RenderedEmail, progress: _Progress) -> None:
        s = self._settings
        accepted = False
        try:
            with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.email_timeout) as client:
                if s.smtp_starttls:
                    client.starttls(context=ssl.create_default_context())
                if s.smtp_username and s.smtp_password:
                    client.login(s.smtp_username, s.smtp_password.get_secret_value())
                progress.handing_over = True
                client.send_message(self._message(email))
                accepted = True
        except Exception as exc:
            if accepted:  # only the goodbye (QUIT) failed: the server has the message
                return
            classified = self._classify(exc, progress.handing_over)
            if classified is None:
                raise
            raise classified from exc

    def _classify(self, exc: Exception, handing_over: bool) -> EmailError | None:
        s = self._settings
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            codes = [code for code, _ in exc.recipients.values()]
            if all(code >= 500 for code in codes):
                return PermanentEmailError(f"recipient refused by SMTP server ({codes[0]})")
            return TransientEmailError(f"recipient deferred by SMTP server ({codes[0]})")
        if isinstance(exc, smtplib.SMTPResponseException):
            text = f"SMTP server answered {exc.smtp_code}"
            if exc.smtp_code >= 500 and not isinstance(exc, smtplib.SMTPAuthenticationError):
                return PermanentEmailError(text)
            return TransientEmailError(text)
        if isinstance(exc, OSError | smtplib.SMTPException):
            return TransientEmailError(
                f"cannot reach SMTP server {s.smtp_host}:{s.smtp_port}: {type(exc).__name__}",
                maybe_delivered=handing_over,
            )
        return None


class SendgridSender:
    name = "sendgrid"

    def __init__(self, settings: Settings) -> None:
        if settings.sendgrid_api_key is None or not settings.sendgrid_api_key.get_secret_value().strip():
            raise ValueError("SSO_SENDGRID_API_KEY is required for the sendgrid backend")
        self._settings = settings
        self._client = SendGridAPIClient(
            api_key=settings.sendgrid_api_key.get_secret_value(),
            host=settings.sendgrid_api_host,
        )
        # Without a timeout urllib can wait forever and pin a worker thread.
        self._client.client.timeout = settings.email_timeout

    async def send(self, email: RenderedEmail) -> None:
        await _within(self._settings.email_timeout, self._send_sync, email, "SendGrid")

    def _send_sync(self, email: RenderedEmail, progress: _Progress) -> None:
        email_from = self._settings.email_from
        sender = From(parseaddr(email_from)[1], email.sender_name) if email.sender_name else From(email_from)
        mail = Mail(from_email=sender, to_emails=To(email.to), subject=email.subject)
        mail.add_content(Content("text/plain", email.text))
        mail.add_content(Content("text/html", email.html))
        try:
            progress.handing_over = True
            self._client.send(mail)
        except SendgridHTTPError as exc:
            status = int(getattr(exc, "status_code", 0) or 0)
            text = f"SendGrid answered {status}"
            if status == 429 or status >= 500:
                raise TransientEmailError(text) from exc
            raise PermanentEmailError(text) from exc
        except (urllib.error.URLError, OSError) as exc:
            refused = isinstance(getattr(exc, "reason", exc), ConnectionRefusedError)
            raise TransientEmailError(
                f"cannot reach SendGrid: {type(exc).__name__}", maybe_delivered=not refused
            ) from exc


class MeteredSender:
    """Counts every delivery attempt on the activity's meter: sent, or how it failed."""

    def __init__(self, sender: EmailSender) -> None:
        self._sender = sender
        self.name = sender.name

    async def send(self, email: RenderedEmail) -> None:
        try:
            await self._sender.send(email)
        except TransientEmailError:
            metrics.email_failed(self.name, "transient", email.org)
            raise
        except PermanentEmailError:
            metrics.email_failed(self.name, "permanent", email.org)
            raise
        except Exception:
            metrics.email_failed(self.name, "error", email.org)
            raise
        metrics.email_sent(self.name, email.org)


T = TypeVar("T")


async def record_after_send(write: Callable[[], Awaitable[T]]) -> T:
    """Record an email that is already out. Failing the attempt now would make Temporal run
    it again and send a second email with a new link or code (the first one dead), so while
    the database is unreachable the write is retried here, until shortly before the
    attempt's own timeout."""
    info = activity.info()
    budget = info.start_to_close_timeout or timedelta(seconds=30)
    give_up = info.started_time + budget - min(timedelta(seconds=5), budget / 4)
    delay = 0.25
    while True:
        try:
            return await write()
        except Exception as exc:
            if not database_unreachable(exc) or datetime.now(UTC) + timedelta(seconds=delay) >= give_up:
                raise
            activity.logger.warning(
                "email sent but the database is unreachable (%s); recording it again in %.2f s",
                type(exc).__name__,
                delay,
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)


def build_sender(settings: Settings, sessions: SessionFactory, keyring: Keyring) -> EmailSender:
    if settings.email_backend is EmailBackend.smtp:
        return SmtpSender(settings)
    if settings.email_backend is EmailBackend.sendgrid:
        return SendgridSender(settings)
    return OutboxSender(sessions, keyring)
