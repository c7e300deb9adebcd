"""Email backends against real local servers: SendGrid over HTTP, SMTP via aiosmtpd, outbox DB."""

from __future__ import annotations

import email
import email.policy
import ipaddress
import json
import socket
import ssl
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from jinja2 import UndefinedError
from sqlalchemy import text

from activities.email_delivery import (
    OutboxSender,
    PermanentEmailError,
    SendgridSender,
    SmtpSender,
    TransientEmailError,
    build_sender,
    from_header,
)
from core.codec import keyring_from_settings
from core.crypto import DecryptionError
from core.db import create_engine, session_factory
from core.settings import InsecureSettingsError, Settings
from core.templating import Agency, RenderedEmail, render_email
from tests.support.config import make_settings
from tests.support.email_servers import (
    API_KEY,
    LINK,
    SMTP_PASSWORD,
    SMTP_USER,
    TO,
    TOKEN,
    FakeSendgrid,
    RecordingHandler,
    SmtpServer,
    _authenticator,
    closed_port,
    free_port,
    sendgrid_settings,
    smtp_settings,
    welcome,
)

# Async tests share the session loop, like the rest of the suite.
session_loop = pytest.mark.asyncio(loop_scope="session")


def full_chain(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # urllib (used by the SendGrid client) honours proxy variables; keep requests local.
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


# --------------------------------------------------------------------------- SendGrid


@session_loop
async def test_sendgrid_posts_the_welcome_email(sendgrid_server: FakeSendgrid) -> None:
    settings = sendgrid_settings(sendgrid_server.url, email_from="sso@agentos.example")
    message = welcome()

    await SendgridSender(settings).send(message)

    assert len(sendgrid_server.requests) == 1
    request = sendgrid_server.requests[0]
    assert request.method == "POST"
    assert request.path == "/v3/mail/send"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.headers["content-type"].startswith("application/json")

    payload = json.loads(request.body)
    assert payload["personalizations"] == [{"to": [{"email": TO}]}]
    assert payload["from"] == {"email": "sso@agentos.example"}
    assert payload["subject"] == "Welcome to agentOS Single Sign-On"
    contents = payload["content"]
    assert [c["type"] for c in contents] == ["text/plain", "text/html"]
    assert contents[0]["value"] == message.text
    assert contents[1]["value"] == message.html
    assert LINK in contents[0]["value"]
    assert f'href="{LINK}"' in contents[1]["value"]


@session_loop
async def test_sendgrid_sends_in_the_organisations_sender_name(sendgrid_server: FakeSendgrid) -> None:
    settings = sendgrid_settings(sendgrid_server.url, email_from="sso@agentos.example")
    harbour = Agency(slug="harbour", name="Harbour Lettings", sender_name="Harbour Lettings via agentOS")
    await SendgridSender(settings).send(welcome(agency=harbour))
    payload = json.loads(sendgrid_server.requests[0].body)
    assert payload["from"] == {"email": "sso@agentos.example", "name": "Harbour Lettings via agentOS"}


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (429, TransientEmailError),
        (500, TransientEmailError),
        (502, TransientEmailError),
        (503, TransientEmailError),
        (504, TransientEmailError),
        (400, PermanentEmailError),
        (401, PermanentEmailError),
        (403, PermanentEmailError),
        (404, PermanentEmailError),
        (413, PermanentEmailError),
    ],
)
@session_loop
async def test_sendgrid_classifies_http_errors(
    sendgrid_server: FakeSendgrid, status: int, expected: type[Exception]
) -> None:
    sendgrid_server.status = status
    sendgrid_server.response_body = json.dumps(
        {"errors": [{"message": "nope", "field": None, "help": None}]}
    ).encode()

    with pytest.raises(expected) as caught:
        await SendgridSender(sendgrid_settings(sendgrid_server.url)).send(welcome())

    assert len(sendgrid_server.requests) == 1
    assert str(status) in str(caught.value)
    assert API_KEY not in str(caught.value)
    assert API_KEY not in repr(caught.value)
    assert API_KEY not in full_chain(caught.value)
    # Neither the link nor the recipient belongs in an error that ends up in history and logs.
    assert TOKEN not in str(caught.value)


@session_loop
async def test_sendgrid_connection_refused_is_transient() -> None:
    settings = sendgrid_settings(f"http://127.0.0.1:{closed_port()}")

    with pytest.raises(TransientEmailError) as caught:
        await SendgridSender(settings).send(welcome())

    assert API_KEY not in str(caught.value)
    assert API_KEY not in full_chain(caught.value)


@session_loop
async def test_sendgrid_that_never_answers_times_out_as_transient() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()  # accepts connections, never answers
    try:
        settings = sendgrid_settings(f"http://127.0.0.1:{listener.getsockname()[1]}", email_timeout=0.5)
        with pytest.raises(TransientEmailError):
            await SendgridSender(settings).send(welcome())
    finally:
        listener.close()


# --------------------------------------------------------------------------- SMTP


def _assert_delivered(server: SmtpServer, message: RenderedEmail) -> None:
    assert len(server.handler.envelopes) == 1
    envelope = server.handler.envelopes[0]
    assert envelope.mail_from == "no-reply@agentos.example"
    assert envelope.rcpt_tos == [TO]

    parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert parsed["From"] == "no-reply@agentos.example"
    assert parsed["To"] == TO
    assert parsed["Subject"] == "Welcome to agentOS Single Sign-On"
    assert parsed.get_content_type() == "multipart/alternative"
    parts = list(parsed.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    # SMTP carries CRLF line endings; compare the text itself.
    plain, html = (p.get_content().replace("\r\n", "\n").rstrip("\n") for p in parts)
    assert plain == message.text.rstrip("\n")
    assert html == message.html.rstrip("\n")
    assert LINK in plain
    assert f'href="{LINK}"' in html
    assert parsed.get_body(preferencelist=("html",)) is parts[1]


@session_loop
async def test_smtp_delivers_text_and_html_alternatives(smtp_server: SmtpServer) -> None:
    message = welcome()
    await SmtpSender(smtp_settings(smtp_server.port)).send(message)
    _assert_delivered(smtp_server, message)


@session_loop
async def test_smtp_sends_in_the_organisations_sender_name(smtp_server: SmtpServer) -> None:
    harbour = Agency(slug="harbour", name="Harbour Lettings", sender_name="Harbour Lettings via agentOS")
    await SmtpSender(smtp_settings(smtp_server.port)).send(welcome(agency=harbour))
    [envelope] = smtp_server.handler.envelopes
    assert envelope.mail_from == "no-reply@agentos.example"  # the deployment's own address
    parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert parsed["From"] == "Harbour Lettings via agentOS <no-reply@agentos.example>"
    assert parsed["Subject"] == "Welcome to agentOS Single Sign-On"


def test_the_from_header_keeps_the_address_and_takes_the_sender_name() -> None:
    assert from_header("agentOS <sso@agentos.example>", None) == "agentOS <sso@agentos.example>"
    assert from_header("agentOS <sso@agentos.example>", "Quay Homes") == "Quay Homes <sso@agentos.example>"


@pytest.mark.parametrize("smtp_server", [{"auth": True}], indirect=True)
@session_loop
async def test_smtp_logs_in_when_credentials_are_set(smtp_server: SmtpServer) -> None:
    message = welcome()
    settings = smtp_settings(smtp_server.port, smtp_username=SMTP_USER, smtp_password=SMTP_PASSWORD)
    await SmtpSender(settings).send(message)
    assert smtp_server.logins == [(SMTP_USER.encode(), SMTP_PASSWORD.encode())]
    _assert_delivered(smtp_server, message)


@pytest.mark.parametrize("smtp_server", [{"auth": True}], indirect=True)
@session_loop
async def test_smtp_rejected_login_does_not_leak_password(smtp_server: SmtpServer) -> None:
    settings = smtp_settings(
        smtp_server.port, smtp_username=SMTP_USER, smtp_password="wrong-" + SMTP_PASSWORD
    )
    # Deliberately transient in the product: an operator can fix credentials within the window.
    with pytest.raises(TransientEmailError) as caught:
        await SmtpSender(settings).send(welcome())
    assert smtp_server.logins, "the client never tried to log in"
    assert smtp_server.handler.envelopes == []
    assert "535" in str(caught.value)
    assert SMTP_PASSWORD not in str(caught.value)
    assert SMTP_PASSWORD not in repr(caught.value)


@session_loop
async def test_smtp_connection_refused_is_transient() -> None:
    port = closed_port()
    settings = smtp_settings(port, smtp_username=SMTP_USER, smtp_password=SMTP_PASSWORD)
    with pytest.raises(TransientEmailError) as caught:
        await SmtpSender(settings).send(welcome())
    assert str(port) in str(caught.value)
    assert SMTP_PASSWORD not in str(caught.value)
    assert SMTP_PASSWORD not in full_chain(caught.value)


SMTP_REFUSALS = [
    pytest.param({"rcpt": "550 5.1.1 no such user"}, PermanentEmailError, "550", id="rcpt-550"),
    pytest.param({"rcpt": "451 4.3.0 try later"}, TransientEmailError, "451", id="rcpt-451"),
    pytest.param({"data": "554 rejected"}, PermanentEmailError, "554", id="data-554"),
    pytest.param({"data": "452 too busy"}, TransientEmailError, "452", id="data-452"),
    pytest.param({"mail": "553 5.7.1 sender not allowed"}, PermanentEmailError, "553", id="mail-553"),
    pytest.param({"mail": "421 4.3.2 shutting down"}, TransientEmailError, "421", id="mail-421"),
]


@pytest.mark.parametrize(("smtp_server", "expected", "code"), SMTP_REFUSALS, indirect=["smtp_server"])
@session_loop
async def test_smtp_classifies_refusals(
    smtp_server: SmtpServer, expected: type[Exception], code: str
) -> None:
    with pytest.raises(expected) as caught:
        await SmtpSender(smtp_settings(smtp_server.port)).send(welcome())
    assert code in str(caught.value)
    assert TO not in str(caught.value)
    assert smtp_server.handler.envelopes == []


@pytest.mark.parametrize(
    ("smtp_server", "expected", "code"),
    [
        pytest.param(
            {"auth": True, "rcpt": "550 5.1.1 no such user"}, PermanentEmailError, "550", id="rcpt-550"
        ),
        pytest.param({"auth": True, "data": "452 too busy"}, TransientEmailError, "452", id="data-452"),
    ],
    indirect=["smtp_server"],
)
@session_loop
async def test_smtp_refusal_after_login_does_not_leak_password(
    smtp_server: SmtpServer, expected: type[Exception], code: str
) -> None:
    settings = smtp_settings(smtp_server.port, smtp_username=SMTP_USER, smtp_password=SMTP_PASSWORD)
    with pytest.raises(expected) as caught:
        await SmtpSender(settings).send(welcome())
    assert smtp_server.logins == [(SMTP_USER.encode(), SMTP_PASSWORD.encode())]
    assert code in str(caught.value)
    assert SMTP_PASSWORD not in str(caught.value)
    assert SMTP_PASSWORD not in repr(caught.value)


def _tls_context(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context for 127.0.0.1 signed by a throwaway CA; the CA's file for clients."""
    now = datetime.now(UTC)

    def build(
        subject: str,
        issuer: x509.Name | None,
        key: ec.EllipticCurvePrivateKey,
        signer: ec.EllipticCurvePrivateKey,
        ca: bool,
    ) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer or name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = build("test CA", None, ca_key, ca_key, ca=True)
    leaf = build("127.0.0.1", ca.subject, leaf_key, ca_key, ca=False)
    ca_file, cert_file, key_file = (tmp_path / n for n in ("ca.pem", "cert.pem", "key.pem"))
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context, ca_file


class TlsRecordingHandler(RecordingHandler):
    def __init__(self) -> None:
        super().__init__()
        self.encrypted: list[bool] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.encrypted.append(session.ssl is not None)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def starttls_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SmtpServer]:
    """A server that insists on STARTTLS before MAIL and AUTH; clients trust its CA."""
    context, ca_file = _tls_context(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # what ssl.create_default_context reads
    handler = TlsRecordingHandler()
    logins: list[tuple[bytes, bytes]] = []
    port = free_port()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        authenticator=_authenticator(logins),
        auth_require_tls=True,
    )
    controller.start()
    try:
        yield SmtpServer(handler=handler, port=port, logins=logins)
    finally:
        controller.stop()


@session_loop
async def test_smtp_starttls_upgrades_before_login_and_mail(starttls_server: SmtpServer) -> None:
    message = welcome()
    settings = smtp_settings(
        starttls_server.port, smtp_starttls=True, smtp_username=SMTP_USER, smtp_password=SMTP_PASSWORD
    )
    await SmtpSender(settings).send(message)
    # The server refuses AUTH and MAIL before STARTTLS: the login and the message went
    # over TLS, verified against the CA.
    assert starttls_server.logins == [(SMTP_USER.encode(), SMTP_PASSWORD.encode())]
    _assert_delivered(starttls_server, message)
    handler = starttls_server.handler
    assert isinstance(handler, TlsRecordingHandler) and handler.encrypted == [True]


@session_loop
async def test_smtp_without_starttls_is_refused_by_a_server_that_requires_it(
    starttls_server: SmtpServer,
) -> None:
    with pytest.raises(PermanentEmailError) as caught:
        await SmtpSender(smtp_settings(starttls_server.port)).send(welcome())
    assert "530" in str(caught.value)
    assert starttls_server.handler.envelopes == []


@session_loop
async def test_smtp_starttls_refuses_an_untrusted_certificate(
    starttls_server: SmtpServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    _, other_ca = _tls_context(other)
    monkeypatch.setenv("SSL_CERT_FILE", str(other_ca))
    settings = smtp_settings(
        starttls_server.port, smtp_starttls=True, smtp_username=SMTP_USER, smtp_password=SMTP_PASSWORD
    )
    with pytest.raises(TransientEmailError) as caught:
        await SmtpSender(settings).send(welcome())
    assert "SSLCertVerificationError" in str(caught.value)
    assert SMTP_PASSWORD not in full_chain(caught.value)
    assert starttls_server.logins == []
    assert starttls_server.handler.envelopes == []


# --------------------------------------------------------------------------- Outbox


@session_loop
async def test_outbox_stores_sealed_body(sqlite_url: str) -> None:
    settings = make_settings(database_url=sqlite_url)
    keyring = keyring_from_settings(settings)
    engine = create_engine(sqlite_url)
    message = welcome()
    try:
        sessions = session_factory(engine)
        await OutboxSender(sessions, keyring).send(message)
        async with engine.connect() as conn:
            rows = (
                await conn.execute(text("SELECT to_address, subject, body_encrypted FROM outbox_emails"))
            ).all()
    finally:
        await engine.dispose()

    assert len(rows) == 1
    to_address, subject, sealed = rows[0]
    assert to_address == TO
    assert subject == "Welcome to agentOS Single Sign-On"
    assert isinstance(sealed, str)
    for plaintext in (
        LINK,
        TOKEN,
        "Hello Jane",
        "Set Up Single Sign-On",
        "help@example.org",
        "15 minutes",
        "<html",
    ):
        assert plaintext not in sealed

    body = keyring.unseal(sealed, b"outbox").decode()
    text_part, _, html_part = body.partition("\0")
    assert text_part == message.text
    assert html_part == message.html
    with pytest.raises(DecryptionError):
        keyring.unseal(sealed, b"something-else")

    # Nothing of the link anywhere on disk (database file, WAL, journal).
    db_path = Path(sqlite_url.removeprefix("sqlite+aiosqlite:///"))
    files = [p for p in db_path.parent.iterdir() if p.name.startswith(db_path.name)]
    assert files
    for path in files:
        raw = path.read_bytes()
        assert TOKEN.encode() not in raw, path.name
        assert b"Hello Jane" not in raw, path.name


# --------------------------------------------------------------------------- Templates


def test_render_email_uses_brand_in_subject_and_body() -> None:
    message = welcome(brand="Acme")
    assert message.to == TO
    assert message.subject == "Welcome to Acme Single Sign-On"
    assert "<title>Welcome to Acme Single Sign-On</title>" in message.html
    assert "Welcome to Acme Single Sign-On" in message.text
    assert "all Acme apps" in message.html
    assert "agentOS" not in message.subject + message.html + message.text


def test_render_email_escapes_html_but_not_text() -> None:
    message = welcome(brand="R&D <Corp>", first_name="<script>alert(1)</script>")
    assert "<script>" not in message.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in message.html
    assert "R&amp;D &lt;Corp&gt;" in message.html
    # The subject is a header, not HTML: it keeps the brand as written.
    assert message.subject == "Welcome to R&D <Corp> Single Sign-On"
    # Plain text is not HTML: nothing to escape there.
    assert "Hello <script>alert(1)</script>," in message.text


def test_render_email_text_part_has_link_ttl_and_support() -> None:
    message = welcome()
    assert LINK in message.text
    assert "15 minutes" in message.text
    assert "10:15 UTC on 01 March 2030" in message.text
    assert "help@example.org" in message.text
    assert "Hello Jane," in message.text
    assert f'href="{LINK}"' in message.html
    assert "<strong>15 minutes</strong>" in message.html
    assert 'href="mailto:help@example.org"' in message.html


def test_render_email_refuses_missing_context() -> None:
    with pytest.raises(UndefinedError):
        render_email("sso_welcome", to=TO, brand="agentOS", first_name="Jane")


def test_render_email_with_settings_brand() -> None:
    settings = make_settings(brand_name="Acme", support_email="it@acme.example")
    message = welcome(brand=settings.brand_name, support_email=settings.support_email)
    assert message.subject == "Welcome to Acme Single Sign-On"
    assert "it@acme.example" in message.text


# --------------------------------------------------------------------------- build_sender


def _keyring_and_sessions() -> tuple[Any, Any]:
    settings = make_settings()
    engine = create_engine(settings.database_url)
    return keyring_from_settings(settings), session_factory(engine)


@pytest.mark.parametrize(
    ("overrides", "expected", "name"),
    [
        ({"email_backend": "outbox"}, OutboxSender, "outbox"),
        ({"email_backend": "smtp"}, SmtpSender, "smtp"),
        ({"email_backend": "sendgrid", "sendgrid_api_key": API_KEY}, SendgridSender, "sendgrid"),
    ],
)
def test_build_sender_picks_backend(overrides: dict[str, Any], expected: type, name: str) -> None:
    keyring, sessions = _keyring_and_sessions()
    sender = build_sender(make_settings(**overrides), sessions, keyring)
    assert type(sender) is expected
    assert sender.name == name


@pytest.mark.parametrize("key", [None, "", "   "])
def test_sendgrid_without_key_is_a_clear_error(key: str | None, tmp_path: Any) -> None:
    # Outside development the settings refuse to load at all...
    with pytest.raises(InsecureSettingsError, match="SSO_SENDGRID_API_KEY"):
        make_settings(email_backend="sendgrid", sendgrid_api_key=key)
    # ...and in development the worker refuses to build the sender.
    keyring, sessions = _keyring_and_sessions()
    dev = Settings(env="development", data_dir=tmp_path, email_backend="sendgrid", sendgrid_api_key=key)
    with pytest.raises(ValueError, match="SSO_SENDGRID_API_KEY"):
        build_sender(dev, sessions, keyring)
